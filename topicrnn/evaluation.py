"""Evaluation tables: test-split bits per character and per token of equation models, overall and per group.

Scoring convention (the same as `bits per character` everywhere in topiceq): an equation is scored as
`<bos> tokens <eos>`; the log-probability includes predicting the end, and the end counts as one character
and one token, as the newline does in a character LM. θ for a test equation is the topic model's θ of its own
context words (`conditioning.thetas_for`, the θ the model was trained with); a context-lstm with its own
context encoder gets the θ its encoder infers from those words. Every model is scored with its own
tokenizer through the one scoring path (`topicrnn.scoring`); the first unconditioned model is the baseline.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline.ingest import read_records
from pipeline.topics import TopicModel, coarse_area, source_group

from .checkpoint import load_model
from .conditioning import check_topic_dims, thetas_for
from .context_lm import context_theta_rows, reads_contexts
from .interface import LN2, LoadedModel
from .scoring import sequence_logprobs
from .tokenizers import Tokenizer


def encode_equation(tokenizer: Tokenizer, equation: str) -> list[int]:
    """Ids of `<bos> equation <eos>` (the framing of equation records in training and scoring)."""
    return list(tokenizer.encode(equation, bos=True, eos=True))


@dataclass
class EvalRow:
    name: str
    path: str
    topic_mode: str
    parameters: int
    equations: int
    chars: int
    tokens: int
    nats: float
    bits_per_char: float
    bits_per_token: float
    # parameters that reach p(equation | θ) (a context model's topic decoder only trains its encoder)
    scoring_parameters: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class GroupRow:
    """One group of the split (an area, a source) and every model's bits per character on it."""
    group: str
    equations: int
    chars: int
    bits_per_char: dict[str, float]  # model name -> bits/char on this group


@dataclass
class EvalTable:
    split: str
    rows: list[EvalRow]
    baseline: str | None = None
    by: str | None = None  # what `groups` splits the equations by (see GROUPINGS)
    groups: list[GroupRow] = field(default_factory=list)

    def relative_to_baseline(self, row: EvalRow) -> float | None:
        base = next((r for r in self.rows if r.name == self.baseline), None)
        if base is None or base is row:
            return None
        return row.bits_per_char / base.bits_per_char - 1.0

    def to_markdown(self) -> str:
        lines = [f"| model | topic mode | parameters | {self.split} bits/char | bits/token | vs baseline |",
                 "|---|---|---|---|---|---|"]
        for r in self.rows:
            rel = self.relative_to_baseline(r)
            rel_s = "baseline" if r.name == self.baseline else ("—" if rel is None else f"{rel * 100:+.1f}%")
            params = f"{r.parameters:,}" + (f" ({r.scoring_parameters:,} scoring)"
                                            if r.scoring_parameters not in (None, r.parameters) else "")
            lines.append(f"| {r.name} | {r.topic_mode} | {params} | {r.bits_per_char:.4f} | "
                         f"{r.bits_per_token:.4f} | {rel_s} |")
        if self.rows:
            r0 = self.rows[0]
            lines.append(f"\n{r0.equations:,} {self.split} equations, {r0.chars:,} characters")
        if self.groups:
            lines.append("\n" + self.groups_markdown())
        return "\n".join(lines)

    def groups_markdown(self) -> str:
        names = [r.name for r in self.rows]
        lines = [f"| {self.by} | equations | " + " | ".join(f"{n} bits/char" for n in names) + " |",
                 "|---|---|" + "---|" * len(names)]
        for g in self.groups:
            cells = []
            for n in names:
                v, b = g.bits_per_char[n], g.bits_per_char.get(self.baseline or "")
                gain = "" if b is None or n == self.baseline else f" ({(v / b - 1) * 100:+.1f}%)"
                cells.append(f"{v:.4f}{gain}")
            lines.append(f"| {g.group} | {g.equations:,} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"split": self.split, "baseline": self.baseline, "rows": [r.as_dict() for r in self.rows],
                "by": self.by, "groups": [asdict(g) for g in self.groups]}


def _coarse_area_group(record: dict) -> str:
    return coarse_area(record.get("area") or "") or "other"


# How `evaluate(by=...)` groups equations: where the topic helps is rarely uniform (a book of one field
# next to papers of many), so a single average can hide both a large and a null gain.
GROUPINGS = {"area": _coarse_area_group, "source": source_group}


def equation_chars(records: Sequence[dict]) -> np.ndarray:
    """Characters each equation counts for in bits per character: its text plus one for the end (a newline)."""
    return np.array([len(r["equation"]) + 1 for r in records], dtype=np.int64)


def score_records(lm: LoadedModel, records: Sequence[dict], thetas: np.ndarray | None, *,
                  progress: bool = False) -> tuple[EvalRow, np.ndarray]:
    """The row, and each equation's log-probability (nats) for per-group figures."""
    seqs = [encode_equation(lm.tokenizer, r["equation"]) for r in records]
    model = lm.model
    if reads_contexts(model):  # θ of each equation's own context words, from the model's own encoder
        model, thetas = model.with_context_theta(), context_theta_rows(model, [r.get("context") or ""
                                                                               for r in records])
    nats = sequence_logprobs(model, seqs, thetas, pad_id=lm.tokenizer.pad_id, progress=progress,
                             desc=f"scoring {lm.name}")
    total = -float(nats.sum())
    chars = int(equation_chars(records).sum())
    tokens = sum(len(s) - 1 for s in seqs)                 # predicted positions (tokens + end)
    row = EvalRow(name=lm.name, path=str(lm.path), topic_mode=lm.topic_mode, parameters=lm.n_parameters(),
                  scoring_parameters=int(lm.model.scoring_parameters())
                  if hasattr(lm.model, "scoring_parameters") else None, equations=len(records), chars=chars, tokens=tokens, nats=total,
                  bits_per_char=total / LN2 / max(chars, 1), bits_per_token=total / LN2 / max(tokens, 1))
    return row, nats


def evaluate(data_dir: str | Path, topic_dir: str | Path | Any, checkpoints: Sequence[str | Path | LoadedModel], *,
             split: str = "test", max_equations: int | None = None, seed: int = 0,
             by: str | None = None, progress: bool = False) -> EvalTable:
    """Bits per character and per token of `split` for every checkpoint, each with its own tokenizer; the
    first unconditioned model is the baseline. `by` ("area" | "source", see GROUPINGS) adds the same figure
    per group, largest group first."""
    if by is not None and by not in GROUPINGS:
        raise ValueError(f"by must be one of {sorted(GROUPINGS)}, not {by!r}")
    topic_model = TopicModel.load(topic_dir) if isinstance(topic_dir, (str, Path)) else topic_dir
    records = list(read_records(data_dir, split))
    if not records:
        raise ValueError(f"{data_dir} has no {split!r} equations")
    if max_equations and len(records) > max_equations:
        rng = np.random.default_rng(seed)
        keep = sorted(rng.choice(len(records), size=max_equations, replace=False))
        records = [records[i] for i in keep]
    thetas = thetas_for(records, topic_model)
    rows, per_equation = [], []
    baseline = None
    for ck in checkpoints:
        lm = ck if isinstance(ck, LoadedModel) else load_model(ck)
        check_topic_dims(lm, topic_model)
        row, nats = score_records(lm, records, thetas, progress=progress)
        rows.append(row)
        per_equation.append(nats)
        if baseline is None and not lm.conditioned and not reads_contexts(lm.model):
            baseline = row
    _dedupe_names(rows)
    table = EvalTable(split=split, rows=rows, baseline=None if baseline is None else baseline.name, by=by)
    if by is not None:
        chars = equation_chars(records)
        members: dict[str, list[int]] = {}
        for i, r in enumerate(records):
            members.setdefault(GROUPINGS[by](r), []).append(i)
        for group, idx in sorted(members.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            n_chars = float(chars[idx].sum())
            bpc = {row.name: -float(nats[idx].sum()) / LN2 / n_chars for row, nats in zip(rows, per_equation)}
            table.groups.append(GroupRow(group, len(idx), int(n_chars), bpc))
    return table


def _dedupe_names(rows: list[EvalRow]) -> None:
    seen: dict[str, int] = {}
    for r in rows:
        if r.name in seen:
            seen[r.name] += 1
            r.name = f"{r.name}-{seen[r.name]}"
        else:
            seen[r.name] = 0
