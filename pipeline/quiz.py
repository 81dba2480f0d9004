"""Real-vs-fake quizzes: pair a real test-split equation with a generated one that compiles.

`build_quiz` pairs, per topic, one generated equation that compiles with the unused real test-split equation
whose length is closest to it (within `QuizConfig.max_length_ratio`, so length never gives the answer away),
puts the fake at A or B and shuffles the questions, all with one seed. Every equation that enters a question
is re-checked with `pipeline.compile_check.check` (the project's compile rule), so no question ever holds an
equation that does not compile. Writing the files is `pipeline.quiz_export`.

Generating the fakes needs the model: `topiceq quiz` and the `equations` flow generate them (topicrnn) and
hand them to `pipeline.quiz_export.assemble_quiz`; this package never imports the model layer.
"""
from __future__ import annotations

import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from pipeline import compile_check
from pipeline.ingest import read_records



@dataclass
class QuizConfig:
    """How a quiz is put together and rendered."""

    max_length_ratio: float = 1.3  # longer/shorter equation (characters) allowed within one question
    title: str = "Which is fake?"
    tex_timeout: float = 10.0  # seconds per pdflatex run, as in the compile rule
    render_workers: int = 2  # pdflatex runs at once while rendering


@dataclass(frozen=True)
class FakeEquation:
    """A generated equation, the topic it was generated for and its compile verdict."""

    equation: str
    topic: int
    compiles: bool
    error: str | None = None


@dataclass
class Question:
    number: int  # 1-based, in quiz order
    topic: int
    topic_label: str
    options: dict[str, str]  # "A"/"B" -> LaTeX of the equation
    fake: str  # "A" or "B"
    real_id: str
    real_paper: str | None = None

    @property
    def real(self) -> str:
        return "B" if self.fake == "A" else "A"


@dataclass
class Quiz:
    questions: list[Question]
    requested: int
    seed: int
    title: str = "Which is fake?"
    # Why the quiz is smaller than requested (empty when it is not); printed to stderr by build_quiz.
    shortfall: str | None = None
    counts: dict[str, int] = field(default_factory=dict)

    def questions_json(self) -> dict:
        """`quiz.json`: what a student sees, with nothing that tells which equation is fake."""
        return {
            "title": self.title,
            "n": len(self.questions),
            "questions": [
                {"number": q.number, "topic": q.topic, "topic_label": q.topic_label,
                 "options": {"A": q.options["A"], "B": q.options["B"]}}
                for q in self.questions
            ],
        }

    def answers_json(self) -> dict:
        """`answers.json`: the key, with where each real equation came from."""
        return {
            "title": self.title,
            "seed": self.seed,
            "requested": self.requested,
            "n": len(self.questions),
            "shortfall": self.shortfall,
            "counts": self.counts,
            "answers": [
                {"number": q.number, "fake": q.fake, "real": q.real, "topic": q.topic,
                 "topic_label": q.topic_label, "real_id": q.real_id, "real_paper": q.real_paper}
                for q in self.questions
            ],
        }


# ----------------------------------------------------------------------------------------------- pairing

def equation_length(equation: str) -> int:
    """Characters with runs of white space counted once: what a reader perceives as length."""
    return len(" ".join(equation.split()))


def equation_rows(equation: str) -> int:
    """Rows the equation is typeset in: line breaks (`\\\\`, in aligned, cases, matrices) + 1."""
    return equation.count("\\\\") + 1


def _normalised(equation: str) -> str:
    return "".join(equation.split())


def attach_dominant_topics(records: Iterable[Mapping], theta_by_id: Mapping[str, np.ndarray],
                           split: str | None = "test") -> list[dict]:
    """Records of `split` (all when None) that have a θ, each copied with `topic` = argmax θ."""
    out = []
    for record in records:
        if split is not None and record.get("split") != split:
            continue
        theta = theta_by_id.get(record["id"])
        if theta is None:
            continue
        out.append({**record, "topic": int(np.argmax(theta))})
    return out


def as_fake_equation(item) -> FakeEquation:
    """A FakeEquation from itself or a mapping with equation, topic, compiles (and error)."""
    if isinstance(item, FakeEquation):
        return item
    if isinstance(item, Mapping):
        return FakeEquation(equation=item["equation"], topic=int(item["topic"]),
                            compiles=bool(item["compiles"]), error=item.get("error"))
    raise TypeError(f"a fake equation must be a FakeEquation or a mapping, not {type(item).__name__}")


def _length_ratio(a: int, b: int) -> float:
    return max(a, b) / max(1, min(a, b))


def build_quiz(real_records: Iterable[Mapping], fake_equations: Iterable, n: int, seed: int, *,
               topic_labels: Sequence[str] | Mapping[int, str] | None = None,
               config: QuizConfig | None = None,
               check: Callable[[list[str]], list] | None = None,
               known_equations: Iterable[str] = ()) -> Quiz:
    """Pair real test-split equations with generated ones that compile; at most `n` questions.

    real_records: ingest records with `id`, `equation` and `topic` (their dominant topic, see
      `attach_dominant_topics`); records whose `split` is present and not "test" are ignored.
    fake_equations: `FakeEquation`s (or mappings with `equation`, `topic`, `compiles`).
    check: the compile check (default `pipeline.compile_check.check`); every equation that enters a
      question is checked with it, whatever verdict the fake came with.
    known_equations: other real equations (e.g. the training split); a fake that repeats one verbatim is
      a memorised real equation, not a fake, and is dropped like a copy of a test equation.
    Fewer than `n` possible questions: the quiz is smaller and `quiz.shortfall` (also printed to stderr)
    says why. None possible: ValueError.
    """
    if n < 1:
        raise ValueError(f"-n must be at least 1, got {n}")
    config = config or QuizConfig()
    check = check or compile_check.check

    def label(topic: int) -> str:
        if topic_labels is None:
            return f"topic {topic}"
        try:
            return str(topic_labels[topic])
        except (IndexError, KeyError):
            return f"topic {topic}"

    counts = {"fakes_given": 0, "fakes_not_compiling": 0, "fakes_duplicate": 0, "fakes_copy_of_real": 0,
              "fakes_failed_recheck": 0, "fakes_without_real_match": 0, "fakes_unused": 0,
              "reals_given": 0, "reals_failed_recheck": 0}

    reals_by_topic: dict[int, list[dict]] = {}
    real_texts: set[str] = set()
    for record in real_records:
        if record.get("split", "test") != "test" or not str(record.get("equation", "")).strip():
            continue
        counts["reals_given"] += 1
        reals_by_topic.setdefault(int(record["topic"]), []).append(dict(record))
        real_texts.add(_normalised(record["equation"]))
    real_texts.update(_normalised(eq) for eq in known_equations)

    # Fakes: claimed to compile, distinct, not a verbatim copy of a real equation, and compiling on re-check.
    fakes: list[FakeEquation] = []
    seen: set[str] = set()
    for item in fake_equations:
        fake = as_fake_equation(item)
        counts["fakes_given"] += 1
        key = _normalised(fake.equation)
        if not fake.compiles or not key:
            counts["fakes_not_compiling"] += 1
        elif key in seen:
            counts["fakes_duplicate"] += 1
        elif key in real_texts:
            counts["fakes_copy_of_real"] += 1
        else:
            seen.add(key)
            fakes.append(fake)
    if fakes:
        verdicts = check([f.equation for f in fakes])
        kept = [f for f, v in zip(fakes, verdicts) if v.ok]
        counts["fakes_failed_recheck"] = len(fakes) - len(kept)
        fakes = kept

    # Pair, re-check the reals chosen, and pair again without the ones that fail (rare: ingest drops
    # equations with undefined commands, not every fault). Each attempt restarts from the seed, so the
    # result depends only on it.
    bad_reals: set[str] = set()
    good_reals: set[str] = set()
    while True:
        pairs, unmatched, unused = _pair(reals_by_topic, fakes, n, seed, config.max_length_ratio, bad_reals)
        unchecked = [real for _, real in pairs if real["id"] not in good_reals]
        if not unchecked:
            break
        verdicts = check([r["equation"] for r in unchecked])
        for real, verdict in zip(unchecked, verdicts):
            (good_reals if verdict.ok else bad_reals).add(real["id"])
        if all(v.ok for v in verdicts):
            break
    counts["reals_failed_recheck"] = len(bad_reals)
    counts["fakes_without_real_match"] = unmatched
    counts["fakes_unused"] = unused

    if not pairs:
        raise ValueError(
            f"no quiz question could be made: {_shortfall_reasons(counts, len(fakes), config)}; "
            "generate more candidates (--candidates), keep syntax-aware decoding on (--constrained), train "
            "the model longer, or use a topic model whose topics have test-split equations")

    rng = random.Random(seed)
    order = list(range(len(pairs)))
    rng.shuffle(order)
    questions = []
    for number, index in enumerate(order, start=1):
        fake, real = pairs[index]
        fake_slot = rng.choice("AB")
        real_slot = "B" if fake_slot == "A" else "A"
        questions.append(Question(
            number=number, topic=fake.topic, topic_label=label(fake.topic),
            options={fake_slot: fake.equation, real_slot: real["equation"]}, fake=fake_slot,
            real_id=str(real["id"]), real_paper=real.get("paper")))

    shortfall = None
    if len(questions) < n:
        shortfall = (f"quiz has {len(questions)} of the {n} questions asked for: "
                     f"{_shortfall_reasons(counts, len(fakes), config)}")
        print(f"topiceq quiz: {shortfall}", file=sys.stderr)
    return Quiz(questions=questions, requested=n, seed=seed, title=config.title, shortfall=shortfall,
                counts=counts)


def _shortfall_reasons(counts: dict[str, int], usable_fakes: int, config: QuizConfig) -> str:
    parts = [f"{usable_fakes} usable generated equations of {counts['fakes_given']}"]
    for key, text in [("fakes_not_compiling", "did not compile"),
                      ("fakes_failed_recheck", "failed the compile re-check"),
                      ("fakes_duplicate", "were duplicates"),
                      ("fakes_copy_of_real", "repeated a real equation verbatim"),
                      ("fakes_without_real_match",
                       f"had no real test equation of their topic within a length ratio of "
                       f"{config.max_length_ratio:g}")]:
        if counts.get(key):
            parts.append(f"{counts[key]} {text}")
    if counts.get("reals_failed_recheck"):
        parts.append(f"{counts['reals_failed_recheck']} real equations failed the compile re-check")
    if not counts.get("reals_given"):
        parts.append("no real test-split equation was given")
    return ", ".join(parts)


def _pair(reals_by_topic: dict[int, list[dict]], fakes: list[FakeEquation], n: int, seed: int,
          max_ratio: float, bad_reals: set[str]) -> tuple[list[tuple[FakeEquation, dict]], int, int]:
    """Round-robin over topics (so topics share the quiz), each fake with an unused real of its topic within
    the length ratio bound: on the longer or shorter side by a seeded coin, then the same number of rows,
    then the closest length."""
    rng = random.Random(seed)
    fakes_by_topic: dict[int, list[FakeEquation]] = {}
    for fake in fakes:
        fakes_by_topic.setdefault(fake.topic, []).append(fake)
    topics = sorted(fakes_by_topic)
    rng.shuffle(topics)
    pools: dict[int, list[tuple[int, int, dict]]] = {}
    for topic in topics:
        fakes_by_topic[topic] = sorted(fakes_by_topic[topic], key=lambda f: f.equation)
        rng.shuffle(fakes_by_topic[topic])
        pool = sorted((r for r in reals_by_topic.get(topic, []) if r["id"] not in bad_reals),
                      key=lambda r: str(r["id"]))
        rng.shuffle(pool)  # ties in length go to a seeded random real, not the first in the file
        pools[topic] = [(equation_length(r["equation"]), equation_rows(r["equation"]), r) for r in pool]

    pairs: list[tuple[FakeEquation, dict]] = []
    unmatched = 0
    active = list(topics)
    while len(pairs) < n and active:
        for topic in list(active):
            if len(pairs) >= n:
                break
            if not fakes_by_topic[topic]:
                active.remove(topic)
                continue
            fake = fakes_by_topic[topic].pop()
            length, rows = equation_length(fake.equation), equation_rows(fake.equation)
            pool = pools[topic]
            # Within the length bound, the same number of rows first (a one-line fake next to a four-line
            # real would look different at a glance), then the closest length.
            fitting = [i for i in range(len(pool)) if _length_ratio(pool[i][0], length) <= max_ratio]
            if not fitting:
                unmatched += 1
                continue
            # A seeded coin says whether the real should be the longer or the shorter one, so that "the
            # longer one is fake" stays a coin toss even when the model writes longer equations than papers.
            real_longer = rng.random() < 0.5
            side = [i for i in fitting if (pool[i][0] >= length) == real_longer] or fitting
            best = min(side, key=lambda i: (abs(pool[i][1] - rows), _length_ratio(pool[i][0], length)))
            pairs.append((fake, pool.pop(best)[2]))
    unused = sum(len(v) for v in fakes_by_topic.values())
    return pairs, unmatched, unused


# ------------------------------------------------------------------------------------- the quiz stage

def choose_topics(available: Iterable[int], n: int, seed: int) -> list[int]:
    """The topics a quiz of n questions draws from: all of them, or a seeded sample of n when more exist."""
    topics = sorted(set(available))
    if len(topics) <= n:
        return topics
    return sorted(random.Random(seed).sample(topics, n))


def quiz_reals(data_dir: str | Path, theta_by_id: Mapping[str, np.ndarray]) -> tuple[list[dict], list[dict]]:
    """(every record of the ingest dir, its test-split records with their dominant topic `topic`)."""
    records = list(read_records(data_dir))
    reals = attach_dominant_topics(records, theta_by_id, split="test")
    if not reals:
        raise ValueError(f"no test-split equation of {data_dir} has a topic: pass the ingest dir the topic model "
                         "was fitted on, with a corpus large enough to hold test-split equations")
    return records, reals


def quiz_summary(quiz: Quiz) -> dict:
    """A small machine-readable summary (for --json and flows)."""
    topics: dict[str, int] = {}
    for q in quiz.questions:
        topics[q.topic_label] = topics.get(q.topic_label, 0) + 1
    return {"requested": quiz.requested, "questions": len(quiz.questions), "topics": topics,
            "fake_is_A": sum(q.fake == "A" for q in quiz.questions), "shortfall": quiz.shortfall,
            "counts": dict(quiz.counts)}


__all__ = ["QuizConfig", "FakeEquation", "as_fake_equation", "Question", "Quiz", "attach_dominant_topics",
           "build_quiz", "equation_length", "equation_rows", "quiz_summary", "choose_topics", "quiz_reals"]
