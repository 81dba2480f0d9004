"""Compile rate of generated equations per topic, with and without the syntax constraint (bench only:
bench/equation_bench.py prints it; `topiceq run` reports the same figure from its own generated sets).

n equations spread evenly over the topics (`topicrnn.generation.generate_for_topics`, θ = each topic's
prototype), every one compile-checked with real pdflatex.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from topicrnn.conditioning import default_data_dir, topic_labels, topic_theta, training_prototypes
from topicrnn.generation import allowed_control_sequences, compile_verdicts, generate_for_topics
from topicrnn.interface import LoadedModel


@dataclass
class CompileRateReport:
    constrained: bool
    temperature: float
    n: int
    compiled: int
    per_topic: list[dict]
    top_errors: list[tuple[str, int]]
    sample_seconds: float
    check_seconds: float
    examples: list[dict] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.compiled / max(self.n, 1)


def _error_kind(error: str | None) -> str:
    if not error:
        return "unknown"
    first = error.strip().splitlines()[0]
    return first[:80]


def compile_rate_by_topic(lm: LoadedModel, topic_model: Any, *, n: int = 1000, temperature: float = 0.8,
                          seed: int = 0, constrained: bool = True, data_dir: str | Path | None = None,
                          max_len: int = 300, theta_mode: str = "prototype", progress: bool = False,
                          keep_examples: int = 0) -> CompileRateReport:
    """n equations spread evenly over the topics (θ = each topic's prototype; an unconditioned model gets
    the same split with θ ignored), all compile-checked with real pdflatex, rate per topic and overall."""
    k = int(topic_model.k)
    data_dir = default_data_dir(lm, topic_model, data_dir)
    protos = training_prototypes(topic_model, data_dir)
    counts = {t: n // k + (1 if t < n % k else 0) for t in range(k)}
    labels = topic_labels(topic_model)
    t0 = time.perf_counter()
    generated = generate_for_topics(
        lm, {t: topic_theta(topic_model, t, mode=theta_mode, prototypes=protos) for t in range(k)}, counts,
        temperature=temperature, seed=seed, constrained=constrained, max_len=max_len, progress=progress,
        syntax=allowed_control_sequences(lm, data_dir) if constrained else None)
    eqs = [g.equation for g in generated]
    owner = [g.topic for g in generated]
    t1 = time.perf_counter()
    verdicts = compile_verdicts(eqs, progress=progress)
    t2 = time.perf_counter()
    per_topic = []
    owner_a = np.asarray(owner)
    ok_a = np.asarray([v[0] for v in verdicts], dtype=bool)
    for t in range(k):
        sel = owner_a == t
        per_topic.append({"id": t, "label": labels[t], "n": int(sel.sum()),
                          "compiled": int(ok_a[sel].sum()),
                          "rate": float(ok_a[sel].mean()) if sel.any() else None})
    errors = Counter(_error_kind(err) for ok, err in verdicts if not ok)
    examples = [{"topic": int(owner[i]), "equation": eqs[i], "compiles": bool(verdicts[i][0]),
                 "error": verdicts[i][1]} for i in range(min(keep_examples, len(eqs)))]
    return CompileRateReport(constrained=constrained, temperature=temperature, n=len(eqs),
                             compiled=int(ok_a.sum()), per_topic=per_topic, top_errors=errors.most_common(5),
                             sample_seconds=t1 - t0, check_seconds=t2 - t1, examples=examples)


def compile_rates_markdown(reports: Sequence[CompileRateReport]) -> str:
    """Per-topic table, one column per report (e.g. constrained vs unconstrained)."""
    head = "| topic | " + " | ".join(f"{'with' if r.constrained else 'without'} constraint (T = {r.temperature})"
                                      for r in reports) + " |"
    lines = [head, "|---|" + "---|" * len(reports)]
    for t in range(len(reports[0].per_topic)):
        row = reports[0].per_topic[t]
        cells = []
        for r in reports:
            p = r.per_topic[t]
            cells.append("—" if p["rate"] is None else f"{p['compiled']}/{p['n']} ({p['rate'] * 100:.1f}%)")
        lines.append(f"| {row['id']} {row['label']} | " + " | ".join(cells) + " |")
    lines.append("| **all** | " + " | ".join(f"**{r.compiled}/{r.n} ({r.rate * 100:.1f}%)**" for r in reports) + " |")
    return "\n".join(lines)
