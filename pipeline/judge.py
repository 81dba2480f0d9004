"""Judge a set of generated equations against the real test equations: balanced share and the real-vs-fake
detectors, pooled and per area of the topics, with the papers held out; and the control that says what real
equations reach under the same protocol.

Why papers are held out (`pipeline.detector`): the test equations come from a few papers. Under plain
stratified folds the detector learns those papers' own notation and tells even real *training* equations of
the same topics from them (0.77 on the default run). `judge` reports that old figure beside the held-out one
(`detector_char_any_fold`), and `control_equations` draws the real training equations that measure it: the
control row of the flow's report.

    from pipeline.judge import JudgeConfig, judge
    out = judge(generated, test_records, table, seed=0)   # generated: [{"topic", "equation"}, ...]
    out["detector_char"], out["detector_char_any_fold"], out["detector_char_by_area"]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .detector import FEATURES, DetectorConfig, detect
from .wellformed import balanced_share


@dataclass
class JudgeConfig:
    repeats: int = 3     # detector matchings averaged per set (one moves it by ±0.01-0.02)
    min_pairs: int = 20  # an area's own detector figure needs this many matched pairs (and 2 test papers)


def paper_groups(records: Sequence[Mapping]) -> list[str] | None:
    """The group each real equation is held out with: its paper (its id where a record names none); None
    when a record has neither (the folds cannot hold papers out)."""
    groups = [record.get("paper") or record.get("id") for record in records]
    return None if any(g is None for g in groups) else [str(g) for g in groups]


def judge(generated: Sequence[Mapping], test: Sequence[Mapping], table, seed: int = 0,
          config: JudgeConfig | None = None) -> dict[str, Any]:
    """Figures of `generated` ({"topic", "equation"} each) against `test` (test-split records with their
    dominant `topic` and `paper`): balanced share (`pipeline.wellformed`), both detectors with papers held out
    (`detector_char`, `detector_tokens`, with the spread of the repeats), the char detector under stratified
    folds (`detector_char_any_fold`: the protocol before papers were held out), and the char detector per area
    of the topics (`table.areas`) for areas with `min_pairs` pairs from at least 2 test papers."""
    config = config or JudgeConfig()
    out: dict[str, Any] = {"repeats": config.repeats, "balanced": balanced_share([g["equation"] for g in generated]),
                           "real_balanced": balanced_share([r["equation"] for r in test])}
    detector = DetectorConfig(seed=seed, repeats=config.repeats)
    area_of = {t: next(iter(table.areas(t)), "") for t in range(int(table.k))}
    groups = {"": (list(generated), list(test))}
    for area in sorted({a for a in area_of.values() if a}):
        fakes = [g for g in generated if area_of[int(g["topic"])] == area]
        reals = [r for r in test if area_of[int(r["topic"])] == area]
        if min(len(fakes), len(reals)) >= config.min_pairs and len(set(paper_groups(reals) or [])) >= 2:
            groups[area] = (fakes, reals)
    for area, (fakes, reals) in groups.items():
        args = dict(seed=seed, config=detector, fake_topics=[int(g["topic"]) for g in fakes],
                    real_topics=[int(r["topic"]) for r in reals])
        fake_texts, real_texts = [g["equation"] for g in fakes], [r["equation"] for r in reals]
        try:
            held_out = detect(fake_texts, real_texts, real_groups=paper_groups(reals),
                              features=FEATURES if not area else ("char",), **args)  # an area: char only
        except ValueError:  # fewer than 2 topic-matched pairs, or one test paper (a tiny corpus)
            continue
        char = held_out["char"]
        if not area:
            any_fold = detect(fake_texts, real_texts, features=("char",), **args)["char"]
            out.update(detector_char=char.accuracy, detector_char_spread=char.spread,
                       detector_tokens=held_out["tokens"].accuracy, detector_pairs=char.n_fake,
                       detector_papers=char.groups, detector_char_any_fold=any_fold.accuracy,
                       detector_char_any_fold_spread=any_fold.spread)
        elif char.n_fake >= config.min_pairs:
            out.setdefault("detector_char_by_area", {})[area] = {"accuracy": char.accuracy, "pairs": char.n_fake,
                                                                  "papers": char.groups}
    return out


def control_equations(train: Sequence[Mapping], topics: Sequence[int | None], seed: int = 0) -> list[dict]:
    """Real training equations standing in for a generated set: for each entry of `topics`, an unused
    training record (with its dominant `topic`) of that topic, drawn with the seed, labelled with that topic
    (so that it is paired as the generated equation would be), also where the topic has none left and one of
    any topic stands in; for None, one of any topic with its own. Judged like a generated set, they are what a
    model that wrote exactly like the training papers would reach: the control of the detector's figure."""
    rng = np.random.default_rng(seed)
    by_topic: dict[int, list[int]] = {}
    for i, r in enumerate(train):
        by_topic.setdefault(int(r["topic"]), []).append(i)
    pools = {t: list(rng.permutation(ids)) for t, ids in by_topic.items()}
    anywhere = list(rng.permutation(len(train)))
    used: set[int] = set()
    out = []
    for t in topics:
        for pool in (pools.get(int(t), []) if t is not None else [], anywhere):
            while pool and pool[-1] in used:
                pool.pop()
            if pool:
                break
        else:
            break  # every training record is used
        i = int(pool.pop())
        used.add(i)
        out.append({**train[i], "topic": int(t)} if t is not None else dict(train[i]))
    return out


__all__ = ["JudgeConfig", "control_equations", "judge", "paper_groups"]
