"""Observability helpers: Prefect artifacts (markdown, tables, links) plus the same content on disk.

Artifacts are created in the flow body from the (small) results of the tasks, so a run whose tasks all came
from the cache still shows every table in the Prefect UI. Each artifact is also appended to
`RUNDIR/report.md`, so the figures survive without the UI.
"""
from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any, Sequence

from flows.caching import write_atomic


def artifact_key(text: str) -> str:
    """Prefect artifact keys: lower-case letters, digits and dashes."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:100] or "artifact"


class RunReport:
    """Collects the sections of one flow run: Prefect artifacts and `report.md`."""

    def __init__(self, run_dir: Path, flow_name: str, *, prefect_artifacts: bool = True):
        self.run_dir = Path(run_dir)
        self.flow_name = flow_name
        self.prefect_artifacts = prefect_artifacts
        self.sections: list[str] = [f"# topiceq {flow_name} run\n"]

    def markdown(self, key: str, title: str, body: str) -> None:
        self.sections.append(f"## {title}\n\n{body.rstrip()}\n")
        if self.prefect_artifacts:
            from prefect.artifacts import create_markdown_artifact

            create_markdown_artifact(markdown=f"## {title}\n\n{body}", key=artifact_key(f"{self.flow_name}-{key}"),
                                     description=title)

    def table(self, key: str, title: str, rows: Sequence[dict[str, Any]]) -> None:
        self.sections.append(f"## {title}\n\n{markdown_table(rows)}\n")
        if self.prefect_artifacts and rows:
            from prefect.artifacts import create_table_artifact

            create_table_artifact(table=[{k: _cell(v) for k, v in r.items()} for r in rows],
                                  key=artifact_key(f"{self.flow_name}-{key}"), description=title)

    def figure(self, key: str, title: str, path: Path) -> None:
        """A PNG: an image in report.md (path relative to the run folder) and, in Prefect, a markdown artifact
        holding the image itself (a data URI, so the UI shows it without access to this machine's disk)."""
        path = Path(path)
        try:
            shown = path.resolve().relative_to(self.run_dir.resolve())
        except ValueError:
            shown = path
        self.sections.append(f"## {title}\n\n![{title}]({shown})\n")
        if self.prefect_artifacts:
            from prefect.artifacts import create_markdown_artifact

            data = base64.b64encode(path.read_bytes()).decode("ascii")
            create_markdown_artifact(markdown=f"## {title}\n\n![{title}](data:image/png;base64,{data})\n\n`{path}`",
                                     key=artifact_key(f"{self.flow_name}-{key}"), description=title)

    def link(self, key: str, title: str, path: Path) -> None:
        self.sections.append(f"## {title}\n\n`{path}`\n")
        if self.prefect_artifacts:
            from prefect.artifacts import create_link_artifact

            create_link_artifact(link=Path(path).resolve().as_uri(), link_text=str(path),
                                 key=artifact_key(f"{self.flow_name}-{key}"), description=title)

    def warnings(self, warnings: Sequence[str]) -> None:
        """A section for the caches that were in trouble (the run went on without them), when there were any."""
        if warnings:
            self.markdown("warnings", "Warnings (caches in trouble: the run went on without them)",
                          "\n".join(f"- {w}" for w in warnings))

    def write(self, summary: dict[str, Any]) -> dict[str, str]:
        """Write report.md and summary.json into the run folder; returns their paths."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        report = self.run_dir / "report.md"
        write_atomic(report, "\n".join(self.sections))  # a run killed here leaves the old report whole
        summary_path = self.run_dir / "summary.json"
        write_atomic(summary_path, json.dumps(summary, indent=2, default=str) + "\n")
        return {"report": str(report), "summary": str(summary_path)}


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=str)
    return value


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return "(none)"
    columns: list[str] = []
    for r in rows:
        columns += [c for c in r if c not in columns]

    def fmt(v: Any) -> str:
        v = _cell(v)
        text = "" if v is None else str(v)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def format_summary(title: str, summary: dict[str, Any], outputs: dict[str, str]) -> str:
    """The final terminal summary: headline figures, then every output path."""
    lines = [f"{title}"]
    for name, value in summary.items():
        if isinstance(value, (dict, list)):
            continue
        lines.append(f"  {name}: {_cell(value)}")
    lines.append("outputs:")
    width = max((len(k) for k in outputs), default=0)
    lines += [f"  {name.ljust(width)}  {path}" for name, path in outputs.items()]
    return "\n".join(lines)
