"""Markov n-gram language model over the ids of a tokenizer: characters or words ("Remixing Noon").

p(w_1..w_n) = Π p(w_i | previous order-1 symbols). Smoothing:
  kn   - interpolated Kneser-Ney (absolute discount D per order, D = n1 / (n1 + 2 n2); lower orders use
         continuation counts; the bottom interpolates with the uniform distribution over the vocabulary);
  addk - add-k (Lidstone) on the full-order counts.
The vocabulary is the tokenizer's (`char`: one symbol per character; `word`: `\\w+` runs, single punctuation
marks and newlines, spaces implied; `latex`: LaTeX tokens); <pad> and <bos> are never predicted, unseen symbols
are <unk>, and <bos> pads the context at the start of a text. A model of records (`records=True`, equations)
is fitted on each record framed <bos>...<eos> and predicts <eos>; a model of one text never does. A sentence's "viability" is its probability under the
model: `LoadedModel(lm, lm.tokenizer).score(sentence).probability`.

It implements the step protocol (topicrnn.interface): the state is the last order-1 ids [B, order-1]; each step
returns the log of the smoothed distribution, computed in numpy. Sampling and scoring go through the one
sampler and the one scoring path. `topiceq train --preset char-5gram` fits one (topicrnn.trainers).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .configs import DictConfig
from .tokenizers import Tokenizer


@dataclass
class NGramConfig(DictConfig):
    order: int = 5
    tokenizer: str = "char"  # char | word | latex
    smoothing: str = "kn"  # kn | addk
    k: float = 0.1  # add-k constant
    records: bool = False  # fitted on records (each framed <bos>...<eos>), so <eos> is predicted

    kind = "ngram"  # not a field: what a preset of this config trains

    def validate(self) -> None:
        if self.order < 1:
            raise ValueError("order must be >= 1")
        if self.tokenizer not in ("char", "word", "latex"):
            raise ValueError(f"an n-gram's tokenizer must be char, word or latex, not {self.tokenizer!r}")
        if self.smoothing not in ("kn", "addk"):
            raise ValueError(f"smoothing must be kn or addk, not {self.smoothing!r}")


@dataclass
class NGramTrainConfig(DictConfig):
    """An n-gram is fitted in one pass on one text file: its first 1 - val_fraction, validated on the rest."""

    data_kind: str = "text"
    val_fraction: float = 0.1


class NGramLM:
    kind = "ngram"
    topic_dim = 0
    device = torch.device("cpu")

    def __init__(self, tokenizer: Tokenizer, config: NGramConfig | None = None):
        self.config = config or NGramConfig(tokenizer=tokenizer.kind)
        self.config.validate()
        self.tokenizer = tokenizer
        self.order = self.config.order
        self.vocab_size = tokenizer.vocab_size
        # Symbols that can follow a context: all but <pad>, <bos> and (in one text) <eos>; <unk> stands for
        # unseen ones.
        self.predictable = np.ones(self.vocab_size, dtype=bool)
        self.predictable[[tokenizer.pad_id, tokenizer.bos_id]] = False
        self.predictable[tokenizer.eos_id] = self.config.records
        self.n_predictable = int(self.predictable.sum())
        self.counts: list[dict] = []

    # ------------------------------------------------------------------ fitting
    def fit(self, text: str) -> "NGramLM":
        """Count the n-grams of one text (context padded with <bos> at the start)."""
        if self.config.records:
            raise ValueError("this n-gram models records: fit it with fit_records(texts)")
        return self._count([self.tokenizer.encode(text)])

    def fit_records(self, texts: Sequence[str]) -> "NGramLM":
        """Count the n-grams of each record, framed <bos>^(order-1) ... <eos>."""
        if not self.config.records:
            raise ValueError("this n-gram models one text: fit it with fit(text), or set records=True")
        return self._count([self.tokenizer.encode(t, eos=True) for t in texts])

    def _count(self, sequences: Sequence[list[int]]) -> "NGramLM":
        n, bos = self.order, self.tokenizer.bos_id
        raw: dict = defaultdict(Counter)
        for ids in sequences:
            seq = [bos] * (n - 1) + ids
            for i in range(n - 1, len(seq)):
                raw[tuple(seq[i - n + 1 : i])][seq[i]] += 1
        self._build(raw)
        return self

    def _build(self, raw: dict) -> None:
        """Full-order counts {context: Counter(next id)} -> the tables `distribution` reads."""
        n = self.order
        if self.config.smoothing == "kn":
            # Lower orders: continuation counts N1+(• ctx w) = distinct left extensions of (ctx, w).
            counts = [None] * n
            counts[n - 1] = raw
            for m in range(n - 2, -1, -1):
                cont: dict = defaultdict(Counter)
                for ctx, nxt in counts[m + 1].items():
                    for w in nxt:
                        cont[ctx[1:]][w] += 1
                counts[m] = cont
            self.counts = counts
            self.discount = []
            for m in range(n):
                c = Counter(v for nxt in counts[m].values() for v in nxt.values())
                n1, n2 = c.get(1, 0), c.get(2, 0)
                self.discount.append(n1 / (n1 + 2 * n2) if n1 + n2 > 0 else 0.5)
            self.totals = [{ctx: sum(nxt.values()) for ctx, nxt in counts[m].items()} for m in range(n)]
        else:
            self.counts = [raw] * n
            self.totals = [{ctx: sum(nxt.values()) for ctx, nxt in raw.items()}] * n

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, torch.Tensor]:
        """The full-order counts as flat tensors (contexts [E, order-1], next [E], count [E])."""
        rows = [(ctx, w, c) for ctx, nxt in self.counts[-1].items() for w, c in nxt.items()]
        width = self.order - 1
        return {"contexts": torch.tensor([r[0] for r in rows], dtype=torch.int64).reshape(len(rows), width),
                "next": torch.tensor([r[1] for r in rows], dtype=torch.int64),
                "count": torch.tensor([r[2] for r in rows], dtype=torch.int64)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> "NGramLM":
        raw: dict = defaultdict(Counter)
        for ctx, w, c in zip(state["contexts"].tolist(), state["next"].tolist(), state["count"].tolist()):
            raw[tuple(ctx)][w] = c
        self._build(raw)
        return self

    def num_parameters(self) -> int:
        """Stored counts (the n-gram's "parameters")."""
        return sum(len(nxt) for nxt in self.counts[-1].values()) if self.counts else 0

    # ------------------------------------------------------------------ probabilities
    def distribution(self, context: tuple) -> np.ndarray:
        """p(· | context) over the vocabulary (zero where not `predictable`); context = the previous ids."""
        n = self.order
        if self.config.smoothing == "addk":
            ctx = context[len(context) - (n - 1) :] if n > 1 else ()
            p = np.where(self.predictable, self.config.k, 0.0)
            for w, c in (self.counts[n - 1].get(ctx) or {}).items():
                p[w] += c
            return p / p.sum()
        p = np.where(self.predictable, 1.0 / self.n_predictable, 0.0)
        for m in range(n):
            ctx = context[len(context) - m :] if m else ()
            nxt = self.counts[m].get(ctx)
            if not nxt:
                continue
            d, tot = self.discount[m], self.totals[m][ctx]
            q = d * len(nxt) * p
            ids = np.fromiter(nxt.keys(), dtype=np.int64, count=len(nxt))
            cs = np.fromiter(nxt.values(), dtype=np.float64, count=len(nxt))
            q[ids] += np.maximum(cs - d, 0.0)
            p = q / tot
        return p

    # ------------------------------------------------------------------ the step protocol
    def initial_state(self, batch: int, theta=None) -> torch.Tensor:
        """The start of a text: a context of <bos> only."""
        return torch.full((batch, self.order - 1), self.tokenizer.bos_id, dtype=torch.int64)

    def step(self, ids: torch.Tensor, theta=None, state: torch.Tensor | None = None):
        """ids [B] -> (log p(· | context + id) [B, V] float64, the new context [B, order-1])."""
        if state is None:
            state = self.initial_state(len(ids))
        state = torch.cat([state, ids.view(-1, 1).cpu()], dim=1)[:, 1:] if self.order > 1 else state
        with np.errstate(divide="ignore"):  # never-predicted symbols: log 0 = -inf
            logp = np.log(np.stack([self.distribution(tuple(row)) for row in state.tolist()]))
        return torch.from_numpy(logp), state

    def state_layers(self, state: torch.Tensor) -> dict[str, torch.Tensor]:
        """An n-gram has no hidden vectors: its state is the context ids."""
        return {}
