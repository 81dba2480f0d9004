"""Everything equation-specific on top of the sequence-model core (issue 6).

The core (`topicrnn.models.RecurrentLM`, `topicrnn.checkpoint`, `topicrnn.sampling`) knows nothing about
topics beyond a θ vector per sequence; this module joins it with the topic model (`pipeline.topics`), the
syntax constraint (`topicrnn.latex_syntax`) and the compile rule (`pipeline.compile_check`):

* `generate(...)`            θ from context words or a topic, n equations, each with its compile verdict.
* `evaluate(...)`            test-split bits per character / per token for every checkpoint.
* `infer_equation_topics(...)`  p(k | eq) ∝ p(eq | θ = e_k) p(k), scored against the context's dominant topic,
                             next to chance and a bag-of-tokens classifier (scikit-learn).
* `topic_awareness(...)`     equations generated for topic k, classified back.
* `symbol_word_alignment(...)`  per topic, the LaTeX tokens whose probability rises most under it.

Scoring convention (the same as `bits per character` everywhere in topiceq): an equation is scored as
`<bos> tokens <eos>`; the log-probability includes predicting the end, and the end counts as one character
and one token, as the newline does in a character LM. θ for a test equation is the topic model's θ of its own
context words (`TopicModel.theta_by_id()`, the θ the model was trained with; a context without a known word has
the LDA prior there).

`--topic K` (generation for a named topic): θ is the topic's *prototype* — the mean θ of the training
equations whose context's dominant topic is K. The model was trained on θ inferred from ~100 context words,
which are never one-hot; a one-hot θ is out of the training distribution, while the prototype is a θ the
model has seen many of. One-hot θ (`theta_mode="onehot"`) is kept for the likelihood-based classifier, whose
definition (p(eq | θ = e_k)) asks for it, and as an option.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

LN2 = math.log(2.0)


# --------------------------------------------------------------------------------------------- loading
@dataclass
class LoadedModel:
    """A checkpoint in memory: the core's model + tokenizer + metadata, plus what this module reads from them."""

    model: Any
    tokenizer: Any
    metadata: dict
    path: Path
    name: str
    cache: dict = field(default_factory=dict)  # per-model syntax vocabulary and constraint automaton

    @property
    def n_topics(self) -> int:
        return _model_n_topics(self.model)

    @property
    def topic_mode(self) -> str:
        return _model_topic_mode(self.model)

    @property
    def conditioned(self) -> bool:
        return self.topic_mode not in ("none", "", None) and self.n_topics > 0

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def resolve_checkpoint(path: str | Path) -> Path:
    """CKPT is a checkpoint file or a folder holding `best.pt` (cli.md)."""
    from topicrnn.checkpoint import resolve_checkpoint as _resolve

    return _resolve(path)


def load_model(path: str | Path, device: str = "cpu", name: str | None = None) -> LoadedModel:
    from topicrnn.checkpoint import load_checkpoint

    file = resolve_checkpoint(path)
    loaded = load_checkpoint(file, device=device)
    model, tokenizer, metadata = _unpack_checkpoint(loaded)
    model.eval()
    if name is None:
        name = file.parent.name if file.name in ("best.pt", "last.pt") else file.stem
    return LoadedModel(model=model, tokenizer=tokenizer, metadata=dict(metadata or {}), path=file, name=name)


def _unpack_checkpoint(loaded: Any) -> tuple[Any, Any, dict]:
    model, tokenizer, metadata = loaded  # topicrnn.checkpoint.LoadedCheckpoint
    return model, tokenizer, metadata


def _model_n_topics(model: Any) -> int:
    return int(model.config.topic_dim)


def _model_topic_mode(model: Any) -> str:
    """`none` for a plain LM (topic_dim 0), else input | init | bias."""
    return str(model.config.topic_mode) if model.config.topic_dim else "none"


# ---------------------------------------------------------------------------------------- tokenizing
def encode_equation(tokenizer: Any, equation: str) -> list[int]:
    """Ids of `<bos> equation <eos>` (the framing of equation records in training and scoring)."""
    return list(tokenizer.encode(equation, bos=True, eos=True))


def token_strings(tokenizer: Any, equation: str) -> list[str]:
    if hasattr(tokenizer, "tokenize"):
        return list(tokenizer.tokenize(equation))
    return list(equation)


# ------------------------------------------------------------------------------------------- scoring
@torch.no_grad()
def sequence_logprobs(lm: LoadedModel, sequences: Sequence[Sequence[int]], thetas: np.ndarray | None,
                      *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """Natural-log probability of each framed id sequence (first id is given, the rest are predicted).

    `thetas` is [n, K] (one θ per sequence) or None for an unconditioned model (θ is ignored when the model
    takes none). Sequences are batched by length so padding costs little; state starts fresh for each.
    """
    n = len(sequences)
    out = np.zeros(n, dtype=np.float64)
    if n == 0:
        return out
    device = lm.device
    pad = getattr(lm.tokenizer, "pad_id", 0) or 0
    order = sorted(range(n), key=lambda i: len(sequences[i]))
    batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    it: Iterable = batches
    if progress:
        from tqdm import tqdm

        it = tqdm(batches, desc=f"scoring {lm.name}", unit="batch", leave=False)
    use_theta = lm.conditioned and thetas is not None
    for batch in it:
        longest = max(len(sequences[i]) for i in batch)
        if longest < 2:
            continue
        ids = torch.full((len(batch), longest), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), longest - 1), dtype=torch.bool)
        for row, i in enumerate(batch):
            s = sequences[i]
            ids[row, :len(s)] = torch.as_tensor(s, dtype=torch.long)
            mask[row, :len(s) - 1] = True
        ids = ids.to(device)
        theta = None
        if use_theta:
            theta = torch.as_tensor(np.asarray(thetas)[batch], dtype=torch.float32, device=device)
        logits = _forward_logits(lm.model, ids[:, :-1], theta)
        logp = F.log_softmax(logits.float(), dim=-1)
        tgt = ids[:, 1:]
        picked = logp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
        picked = picked.masked_fill(~mask.to(device), 0.0)
        out[batch] = picked.sum(dim=1).double().cpu().numpy()
    return out


def _forward_logits(model: Any, tokens: torch.Tensor, theta: torch.Tensor | None) -> torch.Tensor:
    result = model(tokens, theta, None)
    logits = result[0] if isinstance(result, tuple) else result
    return logits


@torch.no_grad()
def mean_next_token_probs(lm: LoadedModel, sequences: Sequence[Sequence[int]], theta: np.ndarray | None,
                          *, batch_size: int = 64) -> np.ndarray:
    """Average next-token distribution [V] over every predicted position of `sequences`, with one θ [K]
    shared by all of them (teacher forcing: the prefixes are the real equations)."""
    device = lm.device
    pad = getattr(lm.tokenizer, "pad_id", 0) or 0
    vocab = None
    total = None
    count = 0
    for start in range(0, len(sequences), batch_size):
        batch = sequences[start:start + batch_size]
        longest = max(len(s) for s in batch)
        ids = torch.full((len(batch), longest), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), longest - 1), dtype=torch.bool)
        for row, s in enumerate(batch):
            ids[row, :len(s)] = torch.as_tensor(s, dtype=torch.long)
            mask[row, :len(s) - 1] = True
        ids = ids.to(device)
        th = None
        if lm.conditioned and theta is not None:
            th = torch.as_tensor(np.asarray(theta, dtype=np.float32), device=device).expand(len(batch), -1)
        probs = F.softmax(_forward_logits(lm.model, ids[:, :-1], th).float(), dim=-1)
        probs = probs * mask.to(device).unsqueeze(-1)
        summed = probs.sum(dim=(0, 1)).double().cpu().numpy()
        total = summed if total is None else total + summed
        count += int(mask.sum())
        vocab = probs.shape[-1]
    if total is None:
        return np.zeros(vocab or 0)
    return total / max(count, 1)


# ---------------------------------------------------------------------------------------------- data
def read_split(data_dir: str | Path, split: str) -> list[dict]:
    """Records of INGESTDIR/equations.jsonl in one split (train | val | test)."""
    from topicrnn.data import read_equations

    return read_equations(data_dir, split)


def load_topic_model(topic_dir: str | Path) -> Any:
    from pipeline.topics import TopicModel

    d = Path(topic_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"topic model folder {d} does not exist: run `topiceq topics fit --out {d}`")
    return TopicModel.load(d)


class ThetaTable:
    """The part of a topic model that scoring and prototypes read (k, labels, theta_by_id), from
    TOPICDIR/theta.npz (+ topics.json for labels) with numpy alone: for machines without gensim (the GPU
    check) and for planted θ in tests. Words cannot be turned into θ with it."""

    def __init__(self, topic_dir: str | Path):
        from topicrnn.data import load_theta

        self.directory = Path(topic_dir)
        self._theta, self.k = load_theta(self.directory)
        self.labels = [f"topic {i}" for i in range(self.k)]
        topics_file = self.directory / "topics.json"
        if topics_file.is_file():
            topics = json.loads(topics_file.read_text())["topics"]
            self.labels = [t.get("human_label") or t.get("auto_label") or f"topic {i}" for i, t in enumerate(topics)]
            self._top = [[w["word"] for w in t.get("top_words", [])] for t in topics]
        else:
            self._top = [[] for _ in range(self.k)]
        self.metrics: dict = {}

    def theta_by_id(self) -> dict:
        return self._theta

    def top_words(self, topic: int, n: int = 10) -> list[str]:
        return self._top[topic][:n]

    def resolve_topic(self, key: str | int) -> int:
        text = str(key).strip()
        if text.isdigit() and int(text) < self.k:
            return int(text)
        low = [lab.lower() for lab in self.labels]
        if text.lower() in low:
            return low.index(text.lower())
        raise ValueError(f"no topic {text!r}: give an id 0..{self.k - 1} or one of {', '.join(self.labels)}")

    def infer_many(self, texts):
        raise ValueError("a theta.npz table cannot infer θ from words: load the topic model with gensim")


def thetas_for(records: Sequence[dict], topic_model: Any, theta_by_id: dict | None = None) -> np.ndarray:
    """θ [n, K] of each record from its own context (TopicModel.theta_by_id, else inferred from its words)."""
    k = int(topic_model.k)
    table = theta_by_id if theta_by_id is not None else topic_model.theta_by_id()
    out = np.full((len(records), k), 1.0 / k, dtype=np.float32)
    missing = []
    for i, r in enumerate(records):
        th = table.get(r["id"])
        if th is None:
            missing.append(i)
        else:
            out[i] = np.asarray(th, dtype=np.float32)
    if missing:
        # Records the topic model was not fitted on (another ingest dir): infer from their context words
        # (a context without a known word gets the LDA prior, as in the topic model's own theta.npz).
        theta, _ = topic_model.infer_many([records[i].get("context", "") for i in missing])
        out[missing] = theta
    return out


def topic_labels(topic_model: Any) -> list[str]:
    labels = list(getattr(topic_model, "labels", []) or [])
    return labels if len(labels) == int(topic_model.k) else [f"topic {i}" for i in range(int(topic_model.k))]


def topic_top_words(topic_model: Any, topic: int, n: int = 8) -> list[str]:
    words = topic_model.top_words(topic, n=n)
    return [w[0] if isinstance(w, (tuple, list)) else str(w) for w in words]


def topic_prototypes(topic_model: Any, records: Sequence[dict] | None = None,
                     theta_by_id: dict | None = None) -> np.ndarray:
    """[K, K]: row k = mean θ of the equations (training split when `records` is given) whose dominant topic
    is k; a topic that dominates no equation falls back to one-hot."""
    k = int(topic_model.k)
    table = theta_by_id if theta_by_id is not None else topic_model.theta_by_id()
    if records is not None:
        thetas = np.stack([np.asarray(table[r["id"]], dtype=np.float64) for r in records if r["id"] in table]) \
            if any(r["id"] in table for r in records) else np.zeros((0, k))
    else:
        thetas = np.stack([np.asarray(v, dtype=np.float64) for v in table.values()]) if table else np.zeros((0, k))
    proto = np.eye(k, dtype=np.float64)
    if len(thetas):
        dom = thetas.argmax(axis=1)
        for t in range(k):
            sel = thetas[dom == t]
            if len(sel):
                proto[t] = sel.mean(axis=0)
    return (proto / proto.sum(axis=1, keepdims=True)).astype(np.float32)


def topic_theta(topic_model: Any, topic: int, *, mode: str = "prototype",
                prototypes: np.ndarray | None = None) -> np.ndarray:
    k = int(topic_model.k)
    if not 0 <= topic < k:
        raise ValueError(f"topic {topic} is out of range: the topic model has topics 0..{k - 1}")
    if mode == "onehot":
        th = np.zeros(k, dtype=np.float32)
        th[topic] = 1.0
        return th
    if mode != "prototype":
        raise ValueError(f"unknown theta mode {mode!r}: use 'prototype' or 'onehot'")
    protos = prototypes if prototypes is not None else topic_prototypes(topic_model)
    return np.asarray(protos[topic], dtype=np.float32)


# ---------------------------------------------------------------------------------------- constraint
def allowed_control_sequences(lm: LoadedModel, data_dir: str | Path | None = None) -> Any:
    """The `SyntaxVocabulary` (control words, control symbols, environments) the syntax constraint may offer:
    those of the compiling training equations — every ingested equation compiles alone under the compile
    rule (the extractor keeps only those) — read from the training split of the ingest dir the model was
    trained on. Without that dir, from the model's own LaTeX-token vocabulary, which the tokenizer fitted on
    the same training equations. Cached on `lm` (the constraint's automaton caches its masks)."""
    from topicrnn.latex_syntax import SyntaxVocabulary

    source = default_data_dir(lm, None, data_dir)
    key = ("syntax", str(source))
    cached = lm.cache.get(key)
    if cached is not None:
        return cached
    if source is not None:
        syntax = SyntaxVocabulary.from_equations(r["equation"] for r in read_split(source, "train"))
    elif getattr(lm.tokenizer, "kind", "") == "latex":
        syntax = SyntaxVocabulary.from_equations(t for t in lm.tokenizer.tokens if t.startswith("\\"))
    else:
        raise FileNotFoundError(f"the control sequences of {lm.path}'s training equations are unknown: pass "
                                "--data INGESTDIR (the ingest dir it was trained on)")
    lm.cache[key] = syntax
    return syntax


syntax_vocabulary = allowed_control_sequences


def make_constraint(lm: LoadedModel, syntax: Any, config: Any = None, targets: Sequence[int] | None = None,
                    length_floor: float = 1.0) -> Any:
    """A fresh `LatexConstraint` for one sampler call (`config`: a SyntaxConfig, default all rules; `targets`:
    target lengths, one per sequence, or None; `length_floor`: no end before that fraction of the target); the
    automaton (and its mask cache) is shared per model."""
    from topicrnn.latex_syntax import LatexConstraint

    key = ("constraint", id(syntax), repr(config))
    proto = lm.cache.get(key)
    if proto is None:
        proto = LatexConstraint.for_tokenizer(lm.tokenizer, syntax, config)
        lm.cache[key] = proto
    return proto.fresh(targets, length_floor)


def length_prior(lm: LoadedModel, data_dir: str | Path, topic_model: Any = None) -> Any:
    """`LengthPrior` of the training equations of `data_dir` in `lm`'s tokens, per dominant topic of their
    context (with `topic_model`), cached on `lm`."""
    from topicrnn.latex_syntax import LengthPrior

    key = ("lengths", str(data_dir), id(topic_model))
    prior = lm.cache.get(key)
    if prior is None:
        train = read_split(data_dir, "train")
        topics = None
        if topic_model is not None:
            table = topic_model.theta_by_id()
            topics = [int(np.argmax(table[r["id"]])) if r["id"] in table else None for r in train]
        prior = LengthPrior.from_equations(lm.tokenizer, [r["equation"] for r in train], topics)
        lm.cache[key] = prior
    return prior


# ---------------------------------------------------------------------------------------- generation
@dataclass
class GenerateConfig:
    n: int = 5
    temperature: float = 0.8
    max_len: int = 300
    top_k: int | None = None
    seed: int = 0
    constrained: bool = True
    theta_mode: str = "prototype"     # for --topic: "prototype" (mean training θ of the topic) or "onehot"
    check: bool = True                # compile-check the equations (real pdflatex)


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

    @property
    def compile_rate(self) -> float:
        checked = [e.compiles for e in self.equations if e.compiles is not None]
        return sum(checked) / len(checked) if checked else float("nan")


def top_topics(theta: np.ndarray, labels: Sequence[str], n: int = 3) -> list[TopicWeight]:
    order = np.argsort(-np.asarray(theta))[:n]
    return [TopicWeight(id=int(i), label=str(labels[i]), weight=float(theta[i])) for i in order]


def theta_from_request(topic_model: Any, *, words: str | Sequence[str] | None = None, topic: str | int | None = None,
                       theta_mode: str = "prototype", prototypes: np.ndarray | None = None) -> np.ndarray:
    if (words is None) == (topic is None):
        raise ValueError("give exactly one of --words WORDS or --topic ID|LABEL")
    if words is not None:
        text = words if isinstance(words, str) else " ".join(words)
        try:
            return np.asarray(topic_model.infer([text])[0], dtype=np.float32)
        except ValueError as exc:
            raise ValueError(f"none of the words {text!r} is in the topic model's vocabulary: "
                             f"try words from `topiceq topics show` ({exc})") from None
    index = topic if isinstance(topic, int) else int(topic_model.resolve_topic(str(topic)))
    return topic_theta(topic_model, index, mode=theta_mode, prototypes=prototypes)


def sample_equations(lm: LoadedModel, theta: np.ndarray | None, *, n: int, temperature: float, seed: int,
                     max_len: int = 300, top_k: int | None = None,
                     control_sequences: Iterable[str] | None = None, constrained: bool = True,
                     batch_size: int = 250, top_p: float | None = None, syntax_config: Any = None,
                     target_lengths: Sequence[int] | None = None, length_floor: float = 1.0) -> list[str]:
    """n equations from the core sampler, θ [K] repeated for each (or θ [n, K], one row per equation); with
    `constrained`, a fresh syntax constraint per batch over `control_sequences` (a SyntaxVocabulary; default:
    `allowed_control_sequences`) with the rules of `syntax_config` (default: all) and, given
    `target_lengths` (one per equation, e.g. from `length_prior(...).targets`), length control."""
    from topicrnn.sampling import sample

    if constrained and control_sequences is None:
        control_sequences = allowed_control_sequences(lm)
    out: list[str] = []
    for b, start in enumerate(range(0, n, batch_size)):
        m = min(batch_size, n - start)
        th = None
        if lm.conditioned and theta is not None:
            arr = np.asarray(theta, dtype=np.float32)
            th = torch.as_tensor(arr[start:start + m] if arr.ndim == 2 else np.tile(arr, (m, 1)))
        targets = None if target_lengths is None else list(target_lengths[start:start + m])
        constraint = make_constraint(lm, control_sequences, syntax_config, targets, length_floor) if constrained \
            else None
        texts = sample(lm.model, lm.tokenizer, n=m, max_len=max_len, temperature=temperature, top_k=top_k,
                       top_p=top_p, theta=th, seed=seed + 1000003 * b, constraint=constraint, device=lm.device)
        out.extend(t.strip() for t in texts)
    return out


def compile_verdicts(equations: Sequence[str], *, progress: bool = False) -> list[tuple[bool, str | None]]:
    from pipeline.compile_check import check

    verdicts = check(list(equations), progress=progress)
    return [(bool(v.ok), v.error) for v in verdicts]


def generate(checkpoint: str | Path | LoadedModel, topic_model: Any, *, words: str | Sequence[str] | None = None,
             topic: str | int | None = None, n: int = 5, temperature: float = 0.8, seed: int = 0,
             constrained: bool = True, max_len: int = 300, theta_mode: str = "prototype",
             data_dir: str | Path | None = None, check: bool = True) -> GenerationResult:
    """Equations for a topic mixture inferred from `words`, or for one topic (`topic` = id or label)."""
    t0 = time.perf_counter()
    lm = checkpoint if isinstance(checkpoint, LoadedModel) else load_model(checkpoint)
    if isinstance(topic_model, (str, Path)):
        topic_model = load_topic_model(topic_model)
    _check_topic_dims(lm, topic_model)
    data_dir = default_data_dir(lm, topic_model, data_dir)
    prototypes = None
    if topic is not None and theta_mode == "prototype":
        train = read_split(data_dir, "train") if data_dir else None
        prototypes = topic_prototypes(topic_model, train)
    theta = theta_from_request(topic_model, words=words, topic=topic, theta_mode=theta_mode, prototypes=prototypes)
    controls = allowed_control_sequences(lm, data_dir) if constrained else None
    eqs = sample_equations(lm, theta, n=n, temperature=temperature, seed=seed, max_len=max_len,
                           control_sequences=controls, constrained=constrained)
    verdicts = compile_verdicts(eqs) if check else [(None, None)] * len(eqs)
    return GenerationResult(
        topics=top_topics(theta, topic_labels(topic_model), 3),
        theta=[float(x) for x in theta],
        equations=[GeneratedEquation(e, ok, err) for e, (ok, err) in zip(eqs, verdicts)],
        seconds=time.perf_counter() - t0,
    )


def default_data_dir(lm: LoadedModel | None, topic_model: Any = None,
                     data_dir: str | Path | None = None) -> Path | None:
    """The ingest dir behind a model: the one given, else the one its training run or topic model names
    (when it is still there)."""
    candidates = [data_dir]
    if lm is not None:
        candidates.append(lm.metadata.get("data_path"))  # stored by topicrnn.train
    candidates.append((getattr(topic_model, "metrics", None) or {}).get("data_dir"))
    for c in candidates:
        if c and Path(c, "equations.jsonl").is_file():
            return Path(c)
    if data_dir:
        raise FileNotFoundError(f"{data_dir}/equations.jsonl is missing: pass the ingest dir the model was trained on")
    return None


def _check_topic_dims(lm: LoadedModel, topic_model: Any) -> None:
    if lm.conditioned and lm.n_topics != int(topic_model.k):
        raise ValueError(f"{lm.path} was trained with {lm.n_topics} topics but the topic model has "
                         f"{topic_model.k}: pass the --topics folder the model was trained with")


# ---------------------------------------------------------------------------------------- evaluation
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
            lines.append(f"| {r.name} | {r.topic_mode} | {r.parameters:,} | {r.bits_per_char:.4f} | "
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
    from pipeline.topics import coarse_area
    return coarse_area(record.get("area") or "") or "other"


def _source_group(record: dict) -> str:
    from pipeline.topics import source_group
    return source_group(record)


# How `evaluate(by=...)` groups equations: where the topic helps is rarely uniform (a book of one field
# next to papers of many), so a single average can hide both a large and a null gain.
GROUPINGS = {"area": _coarse_area_group, "source": _source_group}


def equation_chars(records: Sequence[dict]) -> np.ndarray:
    """Characters each equation counts for in bits per character: its text plus one for the end (a newline)."""
    return np.array([len(r["equation"]) + 1 for r in records], dtype=np.int64)


def score_records(lm: LoadedModel, records: Sequence[dict], thetas: np.ndarray | None, *,
                  progress: bool = False) -> tuple[EvalRow, np.ndarray]:
    """The row, and each equation's log-probability (nats) for per-group figures."""
    seqs = [encode_equation(lm.tokenizer, r["equation"]) for r in records]
    nats = sequence_logprobs(lm, seqs, thetas, progress=progress)
    total = -float(nats.sum())
    chars = int(equation_chars(records).sum())
    tokens = sum(len(s) - 1 for s in seqs)                 # predicted positions (tokens + end)
    row = EvalRow(name=lm.name, path=str(lm.path), topic_mode=lm.topic_mode, parameters=lm.n_parameters(),
                  equations=len(records), chars=chars, tokens=tokens, nats=total,
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
    topic_model = load_topic_model(topic_dir) if isinstance(topic_dir, (str, Path)) else topic_dir
    records = read_split(data_dir, split)
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
        _check_topic_dims(lm, topic_model)
        row, nats = score_records(lm, records, thetas, progress=progress)
        rows.append(row)
        per_equation.append(nats)
        if baseline is None and not lm.conditioned:
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


# ----------------------------------------------------------------------------- equation -> topic
def topic_log_likelihoods(lm: LoadedModel, equations: Sequence[str], k: int, *, batch_size: int = 64) -> np.ndarray:
    """[n, K]: log p(eq | θ = e_k) for every equation and topic."""
    if not lm.conditioned:
        raise ValueError(f"{lm.path} takes no topic vector: equation→topic inference needs a topic-conditioned model")
    seqs = [encode_equation(lm.tokenizer, e) for e in equations]
    eye = np.eye(k, dtype=np.float32)
    all_seqs = [s for s in seqs for _ in range(k)]
    all_theta = np.tile(eye, (len(seqs), 1))
    ll = sequence_logprobs(lm, all_seqs, all_theta, batch_size=batch_size * k // max(1, min(k, 8)))
    return ll.reshape(len(seqs), k)


def topic_posterior(log_lik: np.ndarray, prior: np.ndarray) -> np.ndarray:
    logpost = log_lik + np.log(np.clip(prior, 1e-12, None))[None, :]
    logpost -= logpost.max(axis=1, keepdims=True)
    post = np.exp(logpost)
    return post / post.sum(axis=1, keepdims=True)


class BagOfTokensClassifier:
    """Logistic regression on LaTeX-token counts (scikit-learn): the plain baseline for eq→topic."""

    def __init__(self, tokenize, seed: int = 0, c: float = 1.0):
        from sklearn.feature_extraction.text import CountVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.feature_extraction.text import TfidfTransformer

        self.pipeline = make_pipeline(
            CountVectorizer(analyzer=lambda s: [t for t in tokenize(s) if not t.isspace()], min_df=2),
            TfidfTransformer(sublinear_tf=True),
            LogisticRegression(C=c, max_iter=2000, random_state=seed),
        )

    def fit(self, equations: Sequence[str], labels: Sequence[int]) -> "BagOfTokensClassifier":
        self.pipeline.fit(list(equations), list(labels))
        return self

    def predict(self, equations: Sequence[str]) -> np.ndarray:
        return np.asarray(self.pipeline.predict(list(equations)))


@dataclass
class InferenceReport:
    equations: int
    k: int
    accuracy: float                 # p(k|eq) argmax == context's dominant topic
    top3_accuracy: float
    chance_uniform: float           # 1/K
    chance_majority: float          # always the most frequent training topic
    prior_only: float               # argmax of the prior alone
    bag_of_tokens: float            # scikit-learn classifier on the same test equations
    per_topic: list[dict] = field(default_factory=list)

    def to_markdown(self) -> str:
        return ("| classifier | accuracy on test equations |\n|---|---|\n"
                f"| p(k\\|eq) ∝ p(eq\\|θ=e_k) p(k), LSTM | **{self.accuracy:.3f}** (top-3 {self.top3_accuracy:.3f}) |\n"
                f"| bag of LaTeX tokens (tf-idf + logistic regression) | {self.bag_of_tokens:.3f} |\n"
                f"| majority topic | {self.chance_majority:.3f} |\n"
                f"| uniform chance 1/K | {self.chance_uniform:.3f} |\n"
                f"\n{self.equations} test equations, K = {self.k}")


def infer_equation_topics(lm: LoadedModel, topic_model: Any, data_dir: str | Path, *, max_equations: int = 400,
                          seed: int = 0, split: str = "test") -> InferenceReport:
    k = int(topic_model.k)
    table = topic_model.theta_by_id()
    train = read_split(data_dir, "train")
    test = read_split(data_dir, split)
    train_theta = thetas_for(train, topic_model, table)
    prior = train_theta.mean(axis=0)
    prior = prior / prior.sum()
    rng = np.random.default_rng(seed)
    if len(test) > max_equations:
        test = [test[i] for i in sorted(rng.choice(len(test), size=max_equations, replace=False))]
    test_theta = thetas_for(test, topic_model, table)
    truth = test_theta.argmax(axis=1)
    eqs = [r["equation"] for r in test]
    ll = topic_log_likelihoods(lm, eqs, k)
    post = topic_posterior(ll, prior)
    pred = post.argmax(axis=1)
    top3 = np.argsort(-post, axis=1)[:, :3]
    train_labels = train_theta.argmax(axis=1)
    majority = np.bincount(train_labels, minlength=k).argmax()
    bot = BagOfTokensClassifier(lambda s: token_strings(lm.tokenizer, s), seed=seed)
    bot.fit([r["equation"] for r in train], train_labels)
    bot_pred = bot.predict(eqs)
    per_topic = []
    labels = topic_labels(topic_model)
    for t in range(k):
        sel = truth == t
        per_topic.append({"id": t, "label": labels[t], "n": int(sel.sum()),
                          "accuracy": float((pred[sel] == t).mean()) if sel.any() else None})
    return InferenceReport(
        equations=len(test), k=k, accuracy=float((pred == truth).mean()),
        top3_accuracy=float((top3 == truth[:, None]).any(axis=1).mean()),
        chance_uniform=1.0 / k, chance_majority=float((truth == majority).mean()),
        prior_only=float((truth == prior.argmax()).mean()),
        bag_of_tokens=float((bot_pred == truth).mean()), per_topic=per_topic)


# ------------------------------------------------------------------------------------- topic awareness
@dataclass
class AwarenessReport:
    per_topic: list[dict]
    accuracy: float
    chance: float
    temperature: float
    per_topic_n: int
    theta_mode: str

    def to_markdown(self) -> str:
        lines = ["| topic | label | generated | classified back to it |", "|---|---|---|---|"]
        for row in self.per_topic:
            lines.append(f"| {row['id']} | {row['label']} | {row['n']} | {row['accuracy']:.2f} |")
        lines.append(f"\noverall {self.accuracy:.3f} vs chance {self.chance:.3f} "
                     f"(T = {self.temperature}, θ = {self.theta_mode}, {self.per_topic_n} per topic)")
        return "\n".join(lines)


def topic_awareness(lm: LoadedModel, topic_model: Any, *, per_topic: int = 20, temperature: float = 0.8,
                    seed: int = 0, data_dir: str | Path | None = None, theta_mode: str = "prototype",
                    constrained: bool = True, topics: Sequence[int] | None = None) -> AwarenessReport:
    """Generate `per_topic` equations for each topic and classify them back with p(k|eq) (uniform prior,
    so only the equation speaks)."""
    k = int(topic_model.k)
    data_dir = default_data_dir(lm, topic_model, data_dir)
    train = read_split(data_dir, "train") if data_dir else None
    protos = topic_prototypes(topic_model, train)
    controls = allowed_control_sequences(lm, data_dir) if constrained else None
    labels = topic_labels(topic_model)
    rows = []
    hits = total = 0
    for t in (topics if topics is not None else range(k)):
        theta = topic_theta(topic_model, t, mode=theta_mode, prototypes=protos)
        eqs = sample_equations(lm, theta, n=per_topic, temperature=temperature, seed=seed + 7919 * t,
                               control_sequences=controls, constrained=constrained)
        ll = topic_log_likelihoods(lm, eqs, k)
        pred = ll.argmax(axis=1)
        acc = float((pred == t).mean())
        rows.append({"id": int(t), "label": labels[t], "n": len(eqs), "accuracy": acc})
        hits += int((pred == t).sum())
        total += len(eqs)
    return AwarenessReport(per_topic=rows, accuracy=hits / max(total, 1), chance=1.0 / k,
                           temperature=temperature, per_topic_n=per_topic, theta_mode=theta_mode)


# ------------------------------------------------------------------------------ symbol–word alignment
@dataclass
class AlignmentRow:
    id: int
    label: str
    top_words: list[str]
    tokens: list[tuple[str, float]]     # (token, log2 lift)


def symbol_word_alignment(lm: LoadedModel, topic_model: Any, data_dir: str | Path, *,
                          baseline: LoadedModel | None = None, n_equations: int = 200, top: int = 8,
                          min_prob: float = 2e-4, seed: int = 0, split: str = "test") -> list[AlignmentRow]:
    """Per topic k: the tokens whose average next-token probability on real `split` equations (teacher
    forcing) rises most under θ = e_k, as log2 lift over the unconditioned `baseline` model (or, without
    one, over the same model with θ = the training prior). Whitespace and specials are left out; tokens
    rarer than `min_prob` under the reference are left out (a lift of a near-zero probability is noise)."""
    k = int(topic_model.k)
    recs = read_split(data_dir, split)
    rng = np.random.default_rng(seed)
    if len(recs) > n_equations:
        recs = [recs[i] for i in sorted(rng.choice(len(recs), size=n_equations, replace=False))]
    seqs = [encode_equation(lm.tokenizer, r["equation"]) for r in recs]
    if baseline is not None:
        if list(baseline.tokenizer.tokens) != list(lm.tokenizer.tokens):
            raise ValueError("the baseline model has another vocabulary: train both with the same tokenizer")
        ref = mean_next_token_probs(baseline, seqs, None)
    else:
        prior = thetas_for(read_split(data_dir, "train"), topic_model).mean(axis=0)
        ref = mean_next_token_probs(lm, seqs, prior / prior.sum())
    vocab = list(lm.tokenizer.tokens)
    specials = {getattr(lm.tokenizer, a, None) for a in ("eos_id", "bos_id", "pad_id", "unk_id")}
    keep = np.array([i not in specials and not vocab[i].isspace() and ref[i] >= min_prob
                     for i in range(len(vocab))])
    labels = topic_labels(topic_model)
    rows = []
    for t in range(k):
        theta = np.zeros(k, dtype=np.float32)
        theta[t] = 1.0
        p = mean_next_token_probs(lm, seqs, theta)
        lift = np.where(keep, np.log2(np.clip(p, 1e-12, None) / np.clip(ref, 1e-12, None)), -np.inf)
        best = np.argsort(-lift)[:top]
        rows.append(AlignmentRow(id=t, label=labels[t], top_words=topic_top_words(topic_model, t, 8),
                                 tokens=[(vocab[i], float(lift[i])) for i in best if np.isfinite(lift[i])]))
    return rows


def alignment_markdown(rows: Sequence[AlignmentRow]) -> str:
    lines = ["| topic | top words | LaTeX tokens with the highest lift (log2) |", "|---|---|---|"]
    for r in rows:
        toks = ", ".join(f"`{t.strip() or repr(t)}` {v:+.1f}" for t, v in r.tokens)
        lines.append(f"| {r.id} {r.label} | {', '.join(r.top_words)} | {toks} |")
    return "\n".join(lines)


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


# ------------------------------------------------------------------------------------- compile rates
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
    train = read_split(data_dir, "train") if data_dir else None
    protos = topic_prototypes(topic_model, train)
    controls = allowed_control_sequences(lm, data_dir) if constrained else None
    counts = [n // k + (1 if t < n % k else 0) for t in range(k)]
    labels = topic_labels(topic_model)
    eqs: list[str] = []
    owner: list[int] = []
    t0 = time.perf_counter()
    topics_iter: Iterable = range(k)
    if progress:
        from tqdm import tqdm

        topics_iter = tqdm(topics_iter, desc=f"sampling ({'constrained' if constrained else 'plain'})", unit="topic")
    for t in topics_iter:
        if counts[t] == 0:
            continue
        theta = topic_theta(topic_model, t, mode=theta_mode, prototypes=protos)
        got = sample_equations(lm, theta, n=counts[t], temperature=temperature, seed=seed + 7919 * t,
                               max_len=max_len, control_sequences=controls, constrained=constrained)
        eqs.extend(got)
        owner.extend([t] * len(got))
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
    from collections import Counter

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
