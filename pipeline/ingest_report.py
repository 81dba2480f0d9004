"""What `report.json` of an ingest says, counted one paper at a time in walk order.

`ReportTally` is fed by the finishing pass of `pipeline.ingest` (an unsharded run and `merge_shards` use the
same pass, so they write the same report). `InputLedger` collects the walk's account of every input (read,
partly read or skipped, with reasons) and every skipped file or member.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

MAX_LISTED = 1000   # papers listed per list in the report (counts are never capped)


class InputLedger:
    """The walk's events: `skip(label, reason)` for what was not read, `account(input, status, reasons)` once
    per input. Lists are capped at `max_listed`; counts are exact."""

    def __init__(self, max_listed: int) -> None:
        self.max_listed = max_listed
        self.skipped: list[dict] = []
        self.skipped_by_reason: Counter = Counter()
        self.inputs: Counter = Counter()
        self.inputs_listed: list[dict] = []

    def skip(self, label: str, reason: str) -> None:
        self.skipped_by_reason[re.sub(r"'[^']*'|\d+", "N", reason)] += 1
        if len(self.skipped) < self.max_listed:
            self.skipped.append({"input": label, "reason": reason})

    def account(self, label: str, status: str, reasons: list[str]) -> None:
        self.inputs[status] += 1
        if len(self.inputs_listed) < self.max_listed:
            entry = {"input": label, "status": status}
            if reasons:
                entry["reasons"] = reasons[:20]
            self.inputs_listed.append(entry)

    def as_report(self) -> dict:
        return {"skipped_count": sum(self.skipped_by_reason.values()),
                "skipped_by_reason": dict(self.skipped_by_reason.most_common()),
                "skipped": self.skipped,
                "inputs": {"read": self.inputs["read"], "partly_read": self.inputs["partly_read"],
                           "skipped": self.inputs["skipped"], "listed": self.inputs_listed}}


class ReportTally:
    """The counts and capped lists of a report, fed one paper at a time in walk order."""

    def __init__(self) -> None:
        self.per_area: Counter = Counter()
        self.papers_per_area: Counter = Counter()
        self.per_env: Counter = Counter()
        self.per_split: Counter = Counter()
        self.papers_per_split: Counter = Counter()
        self.dropped: Counter = Counter()
        self.undefined: Counter = Counter()
        self.guessed: Counter = Counter()
        self.partly: list[dict] = []
        self.partly_count = 0
        self.papers_read = 0
        self.papers_with_eq = 0
        self.papers_without: list[str] = []
        self.duplicates: list[dict] = []
        self.duplicates_count = 0
        self.cross_paper_records = 0
        self.n_records = 0
        self.displays_found = 0

    def add(self, paper: dict, records: list[dict], same_as: str | None = None) -> None:
        """`paper`: the entry of `paper_entry`; `records`: what is written of it; `same_as`: the paper read
        instead of this copy."""
        self.papers_read += 1
        self.papers_per_area[paper["area"]] += 1
        if same_as is not None:  # a copy: only its being a copy counts (its equations are the paper's)
            self.duplicates_count += 1
            if len(self.duplicates) < MAX_LISTED:
                self.duplicates.append({"paper": paper["paper"], "source": paper["source"], "same_as": same_as})
            return
        self.displays_found += paper["displays_found"]
        self.dropped.update(paper["dropped"])
        self.undefined.update(paper["undefined"])
        self.guessed.update(paper["guessed"])
        if paper["problems"]:
            self.partly_count += 1
            if len(self.partly) < MAX_LISTED:
                self.partly.append({"paper": paper["paper"], "source": paper["source"],
                                    "problems": paper["problems"][:20]})
        if records:
            self.papers_with_eq += 1
            self.papers_per_split[records[0]["split"]] += 1
        elif len(self.papers_without) < MAX_LISTED:
            self.papers_without.append(paper["paper"])
        for r in records:
            self.per_area[r["area"]] += 1
            self.per_env[r["env"]] += 1
            self.per_split[r["split"]] += 1
        self.n_records += len(records)

    def report(self, sources: list, out: Path, config: dict, ledger: dict, seconds: float, workers: int,
               identities: int | None = None) -> dict:
        return {
            "sources": [str(s) for s in sources],
            "out": str(out),
            "config": config,
            "papers_read": self.papers_read,
            "papers_with_equations": self.papers_with_eq,
            "papers_without_equations": self.papers_without,
            "displays_found": self.displays_found,
            "equations": self.n_records,
            "equations_per_area": dict(sorted(self.per_area.items())),
            "papers_per_area": dict(sorted(self.papers_per_area.items())),
            "equations_per_env": dict(self.per_env.most_common()),
            "equations_per_split": dict(sorted(self.per_split.items())),
            "papers_with_equations_per_split": dict(sorted(self.papers_per_split.items())),
            "dropped": dict(self.dropped.most_common()),
            "undefined_commands": dict(self.undefined.most_common(100)),
            "guessed_commands": dict(self.guessed.most_common(100)),
            "duplicate_papers": self.duplicates,
            "duplicate_papers_count": self.duplicates_count,
            "cross_paper_duplicate_equations": self.cross_paper_records,
            **({"paper_identities": identities} if identities is not None else {}),
            **ledger,
            "partly_read": self.partly,
            "partly_read_count": self.partly_count,
            "seconds": round(seconds, 3),
            "workers": workers,
        }
