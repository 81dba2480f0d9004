"""Training data for the torch models.

Long text (Shakespeare, code) -> `TextStreams`: the text is cut into B contiguous streams read in chunks of
T tokens; the hidden state is carried from one chunk to the next (truncated BPTT). Each stream starts with
<bos>, so every character is predicted and a model can be sampled from <bos>.
Validation split = the last 10% of the text (as nanoGPT does).

Short records (equations), each with an optional θ -> `RecordBatches`: length-bucketed, padded batches
with masks; inputs are <bos> + tokens, targets tokens + <eos>.
`load_equation_split(INGESTDIR, TOPICDIR, split)` reads `INGESTDIR/equations.jsonl` and `TOPICDIR/theta.npz`
through their owners (`pipeline.ingest.read_records`, `pipeline.topics.read_theta`; numpy alone, no gensim).

Context words (issue 20): a model with its own context encoder (topicrnn.context_lm) reads each equation's
context as a bag of word ids of a `ContextVocab`, built from the training split's contexts only; records carry
them (`Record.context`) and batches bring them padded (`Batch.context`, 0 = padding).
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from pipeline.ingest import read_records
from pipeline.topic_tokens import EXTRA_STOPWORDS, plain_words
from pipeline.topics import read_theta

from .tokenizers import Tokenizer


@dataclass
class Batch:
    x: torch.Tensor  # [B, T] input ids
    y: torch.Tensor  # [B, T] target ids
    mask: torch.Tensor | None  # [B, T] bool, True = a real target (None: all real)
    theta: torch.Tensor | None  # [B, K]
    reset: bool  # True: start from a fresh state (first chunk of an epoch, or any record batch)
    n_chars: int  # characters these targets stand for (per-character figures)
    n_tokens: int  # real target tokens
    context: torch.Tensor | None = None  # [B, L] context word ids (0 = padding), for a context-encoder model

    def to(self, device) -> "Batch":
        # CUDA: copy from pinned memory, so that the copy is truly asynchronous and the CPU prepares the next step
        # while the GPU runs this one (the plain equation model's loop: 0.84x -> 1.00x a bare step, results.md).
        cuda = device.type == "cuda"

        def move(t):
            if t is None:
                return None
            return t.pin_memory().to(device, non_blocking=True) if cuda and t.device.type == "cpu" else t.to(device)

        return Batch(move(self.x), move(self.y), move(self.mask), move(self.theta), self.reset, self.n_chars,
                     self.n_tokens, move(self.context))


# ----------------------------------------------------------------------------- long text

def read_text(path: str | Path) -> str:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"text file {p} not found: pass --data PATH/TO/text.txt")
    return p.read_text(encoding="utf-8", errors="replace")


def split_text(text: str, val_fraction: float = 0.1) -> tuple[str, str]:
    """nanoGPT's split: the first 90% for training, the last 10% for validation."""
    cut = int(len(text) * (1.0 - val_fraction))
    return text[:cut], text[cut:]


class TextStreams:
    """B streams over one long token sequence, read in chunks of T (truncated BPTT)."""

    def __init__(self, ids, batch_size: int, seq_len: int, bos_id: int):
        self.ids = np.asarray(ids, dtype=np.int64)
        self.batch_size, self.seq_len, self.bos_id = batch_size, seq_len, bos_id
        if len(self.ids) < batch_size * 2:
            raise ValueError(f"text of {len(self.ids)} tokens is too short for {batch_size} streams")

    def _layout(self, offset: int):
        arr = self.ids[offset:]
        seg = len(arr) // self.batch_size
        y = arr[: seg * self.batch_size].reshape(self.batch_size, seg)
        x = np.concatenate([np.full((self.batch_size, 1), self.bos_id), y[:, :-1]], axis=1)
        return torch.from_numpy(x), torch.from_numpy(np.ascontiguousarray(y))

    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.ids) // self.batch_size / self.seq_len)

    def epoch_batches(self, epoch: int, seed: int, start: int = 0) -> Iterator[Batch]:
        """Chunks of one epoch; the streams start at a random offset (< T) chosen from (seed, epoch)."""
        offset = int(np.random.default_rng([seed, epoch]).integers(0, self.seq_len)) if epoch > 0 else 0
        offset = min(offset, max(0, len(self.ids) - self.batch_size * 2))
        x, y = self._layout(offset)
        for j in range(start, math.ceil(x.shape[1] / self.seq_len)):
            xs = x[:, j * self.seq_len : (j + 1) * self.seq_len]
            ys = y[:, j * self.seq_len : (j + 1) * self.seq_len]
            yield Batch(xs, ys, None, None, j == 0, ys.numel(), ys.numel())

    def eval_batches(self) -> Iterator[Batch]:
        x, y = self._layout(0)
        for j in range(0, x.shape[1], self.seq_len):
            ys = y[:, j : j + self.seq_len]
            yield Batch(x[:, j : j + self.seq_len], ys, None, None, j == 0, ys.numel(), ys.numel())


# ----------------------------------------------------------------------------- short records

@dataclass
class Record:
    ids: list[int]  # tokens, without <bos>/<eos>
    n_chars: int  # len(text) + 1 (the <eos>, counted as one character)
    theta: np.ndarray | None = None
    key: str = ""
    context: np.ndarray | None = None  # context word ids (ContextVocab.encode), for a context-encoder model


def make_records(texts: list[str], tokenizer: Tokenizer, thetas=None, keys=None,
                 max_tokens: int = 0, contexts=None) -> tuple[list[Record], int]:
    """Texts (+ θ rows, + context word ids) -> records; records longer than max_tokens (>0) are dropped.
    -> (records, n_dropped)."""
    out, dropped = [], 0
    for i, text in enumerate(texts):
        ids = tokenizer.encode(text)
        if max_tokens and len(ids) + 1 > max_tokens:
            dropped += 1
            continue
        th = None if thetas is None else np.asarray(thetas[i], dtype=np.float32)
        ctx = None if contexts is None else np.asarray(contexts[i], dtype=np.int64)
        out.append(Record(ids, len(text) + 1, th, "" if keys is None else str(keys[i]), ctx))
    return out, dropped


def pad_ragged(flat: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, idx) -> np.ndarray:
    """Rows `idx` of a ragged array (flat values + offsets + lengths) -> [len(idx), max(1, longest)], 0-padded."""
    idx = np.asarray(idx, dtype=np.int64)
    lens = lengths[idx]
    out = np.zeros((len(idx), max(1, int(lens.max()) if len(idx) else 1)), dtype=np.int64)
    rows = np.repeat(np.arange(len(idx)), lens)
    cols = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
    out[rows, cols] = flat[np.repeat(offsets[idx], lens) + cols]
    return out


def pad_contexts(contexts) -> torch.Tensor:
    """A list of context-id arrays -> LongTensor [n, L] (0 = padding), for scoring outside a batcher."""
    lengths = np.array([len(c) for c in contexts], dtype=np.int64)
    flat = np.concatenate([np.asarray(c, dtype=np.int64) for c in contexts]) if len(contexts) else np.zeros(0, np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if len(contexts) else lengths
    return torch.from_numpy(pad_ragged(flat, offsets, lengths, np.arange(len(contexts))))


class RecordBatches:
    """Length-bucketed padded batches of records (inputs <bos>+ids, targets ids+<eos>, mask)."""

    def __init__(self, records: list[Record], batch_size: int, *, pad_id: int, bos_id: int, eos_id: int,
                 pool_batches: int = 50):
        if not records:
            raise ValueError("no records to batch")
        self.batch_size = batch_size
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.pool = batch_size * pool_batches  # records sorted by length within pools of this size
        self.has_theta = records[0].theta is not None
        # Flat arrays, built once (the records themselves are not kept): collating a batch is a few numpy
        # gathers (a python loop over rows cost ~6 ms a batch, as long as a GPU step on short equations).
        self.lengths = np.array([len(r.ids) for r in records], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        self.flat_ids = np.fromiter((i for r in records for i in r.ids), dtype=np.int64, count=int(self.lengths.sum()))
        self.n_chars = np.array([r.n_chars for r in records], dtype=np.int64)
        self.thetas = np.stack([r.theta for r in records]).astype(np.float32) if self.has_theta else None
        self.has_context = records[0].context is not None
        if self.has_context:  # the same flat layout for the context word ids
            self.ctx_lengths = np.array([len(r.context) for r in records], dtype=np.int64)
            self.ctx_offsets = np.concatenate([[0], np.cumsum(self.ctx_lengths)[:-1]]).astype(np.int64)
            self.ctx_flat = (np.concatenate([r.context for r in records]).astype(np.int64)
                             if self.ctx_lengths.sum() else np.zeros(0, np.int64))

    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def _collate(self, idx) -> Batch:
        idx = np.asarray(idx, dtype=np.int64)
        lens = self.lengths[idx]
        b, t = len(idx), int(lens.max()) + 1
        rows = np.repeat(np.arange(b), lens)
        cols = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)  # position within its row
        vals = self.flat_ids[np.repeat(self.offsets[idx], lens) + cols]
        x = np.full((b, t), self.pad_id, dtype=np.int64)
        y = np.full((b, t), self.pad_id, dtype=np.int64)
        x[:, 0] = self.bos_id
        x[rows, cols + 1] = vals
        y[rows, cols] = vals
        y[np.arange(b), lens] = self.eos_id
        mask = np.arange(t)[None, :] < (lens + 1)[:, None]
        theta = torch.from_numpy(self.thetas[idx]) if self.has_theta else None
        context = (torch.from_numpy(pad_ragged(self.ctx_flat, self.ctx_offsets, self.ctx_lengths, idx))
                   if self.has_context else None)
        return Batch(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(mask), theta, True,
                     int(self.n_chars[idx].sum()), int((lens + 1).sum()), context)

    def _order(self, epoch: int, seed: int) -> list[list[int]]:
        rng = np.random.default_rng([seed, epoch])
        perm = rng.permutation(len(self.lengths))
        batches = []
        for s in range(0, len(perm), self.pool):
            pool = sorted(perm[s : s + self.pool], key=lambda i: self.lengths[i])
            batches += [pool[b : b + self.batch_size] for b in range(0, len(pool), self.batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def epoch_batches(self, epoch: int, seed: int, start: int = 0) -> Iterator[Batch]:
        order = self._order(epoch, seed)
        for idx in order[start:]:
            yield self._collate(idx)

    def eval_batches(self) -> Iterator[Batch]:
        order = sorted(range(len(self.lengths)), key=lambda i: self.lengths[i])
        for b in range(0, len(order), self.batch_size):
            yield self._collate(order[b : b + self.batch_size])


# ----------------------------------------------------------------------------- ingest + topics

@dataclass
class EquationSplit:
    texts: list[str]
    ids: list[str]
    theta: np.ndarray | None  # [n, K] or None (no topic dir)
    missing_theta: int  # records dropped because the topic dir has no θ for them
    contexts: list[str] = field(default_factory=list)  # each equation's context text (same order)


def load_equation_split(ingest_dir, topic_dir=None, split: str = "train") -> EquationSplit:
    """Equations of one split of INGESTDIR with their θ from TOPICDIR (records without one are dropped)."""
    recs = list(read_records(ingest_dir, split))
    if topic_dir is None:
        return EquationSplit([r["equation"] for r in recs], [r["id"] for r in recs], None, 0,
                             [r.get("context") or "" for r in recs])
    by_id, k = read_theta(topic_dir)
    texts, ids, rows, missing, contexts = [], [], [], 0, []
    for r in recs:
        th = by_id.get(str(r["id"]))
        if th is None:
            missing += 1
            continue
        texts.append(r["equation"])
        ids.append(r["id"])
        rows.append(th)
        contexts.append(r.get("context") or "")
    theta = np.stack(rows).astype(np.float32) if rows else np.zeros((0, k), np.float32)
    return EquationSplit(texts, ids, theta, missing, contexts)


# ----------------------------------------------------------------------------- context words (issue 20)

MAX_CONTEXT_WORDS = 256  # ids kept per context (ingest contexts hold ~100 words; a bound for odd records)
# English function words of three letters or more (gensim's list is not importable on the GPU image; these are
# the ones that rank highest by document frequency in the training contexts and say nothing about the topic).
FUNCTION_WORDS = frozenset("""
the and for are was were that this these those there their them they then than with from into onto over under
such all any some each every other has have had having will would can could may might must shall should not
but also because which who whom whose what when where why how its our out only both more most much many
very same own too does did done been being here while after before between through during about against
""".split())


def context_words(text: str) -> list[str]:
    """The words of a context as the context encoder reads them: lower-case ASCII letters, at least three, not
    one of the words that sit around every equation (pipeline.topic_tokens.EXTRA_STOPWORDS) nor a function
    word. No gensim, so that it runs where the LDA does not (the GPU image); other very common words go by
    document frequency when the vocabulary is built (ContextVocab.fit's max_df)."""
    return [w for w in plain_words(text) if len(w) >= 3 and w not in EXTRA_STOPWORDS and w not in FUNCTION_WORDS]


@dataclass
class ContextVocab:
    """The context words a context encoder knows: id 0 is padding, word i has id i + 1. Built from the
    training split's contexts only (a word seen only in val/test papers is unknown), kept by document
    frequency: in at least `min_df` contexts and at most a `max_df` share of them, the `max_words` most
    frequent. Travels in the checkpoint (`to_dict`)."""

    words: list[str]

    def __post_init__(self):
        self.index = {w: i + 1 for i, w in enumerate(self.words)}

    @property
    def size(self) -> int:
        return len(self.words) + 1

    @classmethod
    def fit(cls, texts, *, max_words: int = 2000, min_df: int = 3, max_df: float = 0.3) -> "ContextVocab":
        texts = list(texts)
        df = Counter(w for t in texts for w in set(context_words(t)))
        cap = max_df * max(1, len(texts))
        kept = sorted((w for w, n in df.items() if min_df <= n <= cap), key=lambda w: (-df[w], w))[:max_words]
        if not kept:
            raise ValueError(f"no context word is in at least {min_df} of the {len(texts)} training contexts "
                             "(and at most a share max_df of them): lower context_min_df")
        return cls(kept)

    def encode(self, text: str) -> np.ndarray:
        ids = [self.index[w] for w in context_words(text) if w in self.index]
        return np.asarray(ids[:MAX_CONTEXT_WORDS], dtype=np.int64)

    def to_dict(self) -> dict:
        return {"words": list(self.words)}

    @classmethod
    def from_dict(cls, d: dict) -> "ContextVocab":
        return cls(list(d["words"]))
