"""Generating equations: the syntax constraint for a model, θ rows -> equations, and equations for topics.

* `sample_equations(lm, theta, n=...)`  n equations from the one sampler (θ [K] for all, or one row each),
  batched, a fresh syntax constraint per batch.
* `generate_for_topics(lm, thetas, per_topic)`  THE function that writes equations for a set of topics: the
  `equations` flow, `topiceq quiz`, `topiceq generate --topic`, the topic-awareness probe and the benches all
  call it, so a seed means the same equations everywhere.
* `quiz_fakes(...)`  the quiz's candidate fakes (`topiceq quiz`, bench/quiz_bench.py), with compile verdicts.
* `generate(lm, topic_model, words=... | topic=...)`  what `topiceq generate` prints: θ from context words or
  a topic, n equations, each with its compile verdict (real pdflatex). A context-lstm with its own context
  encoder reads `words` with it; `topic` reaches it as the topic's LDA θ (topicrnn.context_lm).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from pipeline import compile_check
from pipeline.ingest import read_records
from pipeline.quiz import FakeEquation

from .conditioning import (check_topic_dims, default_data_dir, theta_for_request, topic_labels, topic_theta,
                           training_prototypes)
from .context_lm import context_theta_rows, reads_contexts
from .interface import LoadedModel
from .latex_syntax import LatexConstraint, LengthPrior, SyntaxConfig, SyntaxVocabulary

# Decoding defaults of every generating command and the flow (issue 20, measured in docs/results.md: at
# T = 1 with the topic's real lengths as a cap, equations are hardest to tell from real ones).
DEFAULT_TEMPERATURE = 1.0
# Length control: target lengths drawn from the topic's real training equations; the value is the share of
# the target before which the equation may not end (the target caps the length in both).
LENGTH_CONTROL = {"off": None, "cap": 0.0, "target": 1.0}
DEFAULT_LENGTH_CONTROL = "cap"
TOPIC_SEED_STRIDE = 7919  # topic t samples with seed + 7919 t (its equations do not depend on the other topics)
BATCH_SEED_STRIDE = 1000003  # sampler call b of one request uses seed + 1000003 b


# ---------------------------------------------------------------------------------------- constraint
def allowed_control_sequences(lm: LoadedModel, data_dir: str | Path | None = None) -> SyntaxVocabulary:
    """The `SyntaxVocabulary` (control words, control symbols, environments) the syntax constraint may offer:
    those of the compiling training equations — every ingested equation compiles alone under the compile
    rule (the extractor keeps only those) — read from the training split of the ingest dir the model was
    trained on. Without that dir, from the model's own LaTeX-token vocabulary, which the tokenizer fitted on
    the same training equations. Cached on `lm` (the constraint's automaton caches its masks)."""
    source = default_data_dir(lm, None, data_dir)
    key = ("syntax", str(source))
    cached = lm.cache.get(key)
    if cached is not None:
        return cached
    if source is not None:
        syntax = SyntaxVocabulary.from_equations(r["equation"] for r in read_records(source, "train"))
    elif getattr(lm.tokenizer, "kind", "") == "latex":
        syntax = SyntaxVocabulary.from_equations(t for t in lm.tokenizer.tokens if t.startswith("\\"))
    else:
        raise FileNotFoundError(f"the control sequences of {lm.path}'s training equations are unknown: pass "
                                "--data INGESTDIR (the ingest dir it was trained on)")
    lm.cache[key] = syntax
    return syntax


def make_constraint(lm: LoadedModel, syntax: SyntaxVocabulary, config: SyntaxConfig | None = None,
                    targets: Sequence[int] | None = None, length_floor: float = 1.0) -> LatexConstraint:
    """A fresh `LatexConstraint` for one sampler call (`config`: its rules, default all; `targets`: target
    lengths in tokens, one per sequence, or None; `length_floor`: no end before that fraction of the target).
    The automaton (and its mask cache) is shared per model and config. A prefix the automaton cannot close
    gets an empty closing, counted in the constraint's `closing_failures`, instead of losing the batch."""
    key = ("constraint", id(syntax), repr(config))
    proto = lm.cache.get(key)
    if proto is None:
        proto = LatexConstraint.for_tokenizer(lm.tokenizer, syntax, config)
        lm.cache[key] = proto
    return proto.fresh(targets, length_floor)


def length_settings(lm: LoadedModel, mode: str, data_dir: str | Path | None, topic_model: Any = None,
                    constrained: bool = True) -> dict[str, Any]:
    """`lengths` and `length_floor` for `generate_for_topics` under a LENGTH_CONTROL mode (none without the
    constraint or without the training equations of `data_dir`)."""
    if mode not in LENGTH_CONTROL:
        raise ValueError(f"unknown length control {mode!r}: use one of {', '.join(LENGTH_CONTROL)}")
    floor = LENGTH_CONTROL[mode]
    if floor is None or not constrained or data_dir is None:
        return {"lengths": None, "length_floor": 1.0}
    return {"lengths": length_prior(lm, data_dir, topic_model), "length_floor": floor}


def length_prior(lm: LoadedModel, data_dir: str | Path, topic_model: Any = None) -> LengthPrior:
    """`LengthPrior` of the training equations of `data_dir` in `lm`'s tokens, per dominant topic of their
    context (with `topic_model`), cached on `lm`: the length control's targets."""
    key = ("lengths", str(data_dir), id(topic_model))
    prior = lm.cache.get(key)
    if prior is None:
        train = list(read_records(data_dir, "train"))
        topics = None
        if topic_model is not None:
            table = topic_model.theta_by_id()
            topics = [int(np.argmax(table[r["id"]])) if r["id"] in table else None for r in train]
        prior = LengthPrior.from_equations(lm.tokenizer, [r["equation"] for r in train], topics)
        lm.cache[key] = prior
    return prior


# ---------------------------------------------------------------------------------------- generation
def sample_equations(lm: LoadedModel, theta: np.ndarray | None, *, n: int, temperature: float, seed: int,
                     max_len: int = 300, top_k: int | None = None, top_p: float | None = None,
                     syntax: SyntaxVocabulary | None = None, constrained: bool = True, batch_size: int = 250,
                     progress: bool = False, syntax_config: SyntaxConfig | None = None,
                     target_lengths: Sequence[int] | None = None, length_floor: float = 1.0) -> list[str]:
    """n equations from the one sampler, θ [K] repeated for each (or θ [n, K], one row per equation); with
    `constrained`, a fresh syntax constraint per batch over `syntax` (default: `allowed_control_sequences`)
    with the rules of `syntax_config` (default: all) and, given `target_lengths` (one per equation, e.g. from
    `length_prior(...).targets`), length control (`make_constraint`)."""
    if constrained and syntax is None:
        syntax = allowed_control_sequences(lm)
    out: list[str] = []
    starts = range(0, n, batch_size)
    bar = tqdm(total=n, desc="generating", unit="eq", disable=not progress)
    for b, start in enumerate(starts):
        m = min(batch_size, n - start)
        th = None
        if lm.conditioned and theta is not None:
            arr = np.asarray(theta, dtype=np.float32)
            th = torch.as_tensor(arr[start:start + m] if arr.ndim == 2 else np.tile(arr, (m, 1)))
        targets = None if target_lengths is None else list(target_lengths[start:start + m])
        constraint = make_constraint(lm, syntax, syntax_config, targets, length_floor) if constrained else None
        texts = lm.sample(m, max_len, temperature=temperature, top_k=top_k, top_p=top_p, theta=th,
                          seed=seed + BATCH_SEED_STRIDE * b, constraint=constraint, stop_at_eos=True)
        out.extend(t.strip() for t in texts)
        bar.update(m)
    bar.close()
    return out


@dataclass(frozen=True)
class TopicEquation:
    topic: int
    equation: str


def generate_for_topics(lm: LoadedModel, thetas: Mapping[int, np.ndarray], per_topic: int | Mapping[int, int], *,
                        temperature: float, seed: int, constrained: bool = True,
                        syntax: SyntaxVocabulary | None = None, max_len: int = 300, batch_size: int = 250,
                        mix_topics: bool = False, progress: bool = False, top_p: float | None = None,
                        syntax_config: SyntaxConfig | None = None, lengths: LengthPrior | None = None,
                        length_floor: float = 1.0) -> list[TopicEquation]:
    """Equations for each topic of `thetas` (topic -> its θ [K], e.g. `topic_theta`; ignored by an
    unconditioned model), `per_topic` of them (one count for all, or per topic), in topic order.

    By default each topic samples on its own with seed + 7919 t, so its equations do not depend on which other
    topics were asked for. `mix_topics` puts the rows of all topics into shared sampler calls instead (one θ row
    per sequence, seed + 1000003 b per batch): a sampler call has a large fixed cost (the syntax constraint), so
    this is K times fewer calls when each topic asks for a few equations (the quiz).

    Decoding: `top_p` (nucleus), `syntax_config` (the constraint's rules, default all) and `lengths` (a
    `length_prior`: each equation gets a target length drawn from its topic's real training equations, seed
    + 7919 t; `length_floor` 1: no end before the target, 0: the target only caps)."""
    counts = {t: int(per_topic[t] if isinstance(per_topic, Mapping) else per_topic) for t in thetas}
    kwargs = dict(temperature=temperature, max_len=max_len, syntax=syntax, constrained=constrained,
                  batch_size=batch_size, top_p=top_p, syntax_config=syntax_config, length_floor=length_floor)
    targets = {t: lengths.targets(t, counts[t], seed + TOPIC_SEED_STRIDE * t) if lengths is not None and constrained
               else None for t in thetas}
    if constrained and syntax is None:
        kwargs["syntax"] = allowed_control_sequences(lm)
    if mix_topics:
        owners = [t for t in thetas for _ in range(counts[t])]
        rows = np.stack([np.asarray(thetas[t], dtype=np.float32) for t in owners]) if owners else None
        mixed_targets = None if lengths is None or not constrained else [x for t in thetas for x in targets[t]]
        equations = sample_equations(lm, rows, n=len(owners), seed=seed, progress=progress,
                                     target_lengths=mixed_targets, **kwargs)
        return [TopicEquation(t, e) for t, e in zip(owners, equations)]
    out: list[TopicEquation] = []
    for t in tqdm(list(thetas), desc="generating", unit="topic", disable=not progress):
        if counts[t] > 0:
            equations = sample_equations(lm, thetas[t], n=counts[t], seed=seed + TOPIC_SEED_STRIDE * t,
                                         target_lengths=targets[t], **kwargs)
            out.extend(TopicEquation(t, e) for e in equations)
    return out


def compile_verdicts(equations: Sequence[str], *, progress: bool = False) -> list[tuple[bool, str | None]]:
    """(compiles, first error) of each equation under the compile rule (real pdflatex)."""
    return [(bool(v.ok), v.error) for v in compile_check.check(list(equations), progress=progress)]


def quiz_fakes(lm: LoadedModel, topic_model: Any, topics: Sequence[int], per_topic: int, *, data_dir: str | Path,
               seed: int, temperature: float = DEFAULT_TEMPERATURE, constrained: bool = True,
               length_control: str = DEFAULT_LENGTH_CONTROL) -> list[FakeEquation]:
    """The quiz's candidates: `per_topic` equations for each topic (θ = its prototype over the training split
    of data_dir), all topics' rows sharing the sampler calls, each with its compile verdict."""
    prototypes = training_prototypes(topic_model, data_dir)
    generated = generate_for_topics(
        lm, {t: topic_theta(topic_model, t, prototypes=prototypes) for t in topics}, per_topic,
        temperature=temperature, seed=seed, constrained=constrained, mix_topics=True, progress=True,
        syntax=allowed_control_sequences(lm, data_dir) if constrained else None,
        **length_settings(lm, length_control, data_dir, topic_model, constrained))
    verdicts = compile_verdicts([g.equation for g in generated], progress=True)
    return [FakeEquation(g.equation, g.topic, ok, err) for g, (ok, err) in zip(generated, verdicts)]


# -------------------------------------------------------------------------------- topiceq generate
@dataclass
class TopicWeight:
    id: int
    label: str
    weight: float


@dataclass
class GeneratedEquation:
    equation: str
    compiles: bool | None
    error: str | None


@dataclass
class GenerationResult:
    topics: list[TopicWeight]
    theta: list[float]
    equations: list[GeneratedEquation]
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {"topics": [asdict(t) for t in self.topics],
                "equations": [asdict(e) for e in self.equations]}


def top_topics(theta: np.ndarray, labels: Sequence[str], n: int = 3) -> list[TopicWeight]:
    order = np.argsort(-np.asarray(theta))[:n]
    return [TopicWeight(id=int(i), label=str(labels[i]), weight=float(theta[i])) for i in order]


def generate(lm: LoadedModel, topic_model: Any, *, words: str | Sequence[str] | None = None,
             topic: str | int | None = None, n: int = 5, temperature: float = DEFAULT_TEMPERATURE, seed: int = 0,
             constrained: bool = True, max_len: int = 300, theta_mode: str = "prototype",
             data_dir: str | Path | None = None, check: bool = True,
             length_control: str = DEFAULT_LENGTH_CONTROL) -> GenerationResult:
    """Equations for a topic mixture inferred from `words` (the lengths of its dominant topic), or for one
    topic (`topic` = id or label; the same equations the flow writes for it with this seed and decoding)."""
    t0 = time.perf_counter()
    check_topic_dims(lm, topic_model)
    data_dir = default_data_dir(lm, topic_model, data_dir)
    theta = theta_for_request(topic_model, words=words, topic=topic, mode=theta_mode, data_dir=data_dir)
    syntax = allowed_control_sequences(lm, data_dir) if constrained else None
    lengths = length_settings(lm, length_control, data_dir, topic_model, constrained)
    if topic is None:
        prior = lengths["lengths"]
        target, rows = lm, theta
        if reads_contexts(lm.model):  # the model's own context encoder reads the words (the LDA θ is shown)
            target = replace(lm, model=lm.model.with_context_theta())
            rows = context_theta_rows(lm.model, [words])[0]
        eqs = sample_equations(target, rows, n=n, temperature=temperature, seed=seed, max_len=max_len, syntax=syntax,
                               constrained=constrained, length_floor=lengths["length_floor"],
                               target_lengths=None if prior is None else prior.targets(int(np.argmax(theta)), n, seed))
    else:
        index = topic if isinstance(topic, int) else int(topic_model.resolve_topic(str(topic)))
        eqs = [g.equation for g in generate_for_topics(lm, {index: theta}, n, temperature=temperature, seed=seed,
                                                       constrained=constrained, syntax=syntax, max_len=max_len,
                                                       **lengths)]
    verdicts = compile_verdicts(eqs) if check else [(None, None)] * len(eqs)
    return GenerationResult(
        topics=top_topics(theta, topic_labels(topic_model), 3),
        theta=[float(x) for x in theta],
        equations=[GeneratedEquation(e, ok, err) for e, (ok, err) in zip(eqs, verdicts)],
        seconds=time.perf_counter() - t0,
    )
