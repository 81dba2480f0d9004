"""The one model interface: the step protocol every sequence model implements, and `LoadedModel`.

`SequenceModel` (contract: docs/architecture.md, "Sequence models") is what the sampler, the scoring path,
the trainers' validation and the neuron viewer see: torch RNN/GRU/LSTM (`topicrnn.models.RecurrentLM`), the
n-gram (`topicrnn.ngram.NGramLM`), the numpy RNN (`topicrnn.numpy_rnn.NumpyRNN`) and the coming HMM.
Non-torch models take and return torch tensors on the CPU at the boundary and compute in numpy inside.

`LoadedModel(model, tokenizer, metadata)` is a model with its tokenizer: `score(text) -> Score` and
`sample(...) -> list[str]`, both through the one scoring path (`topicrnn.scoring`) and the one sampler
(`topicrnn.sampling`). `topicrnn.checkpoint.load_model(path)` returns one for any kind.

Per-character figures are always total nats / number of characters of the text, whatever the tokenizer, so
models with different tokenizers compare. Models of short records (equations) also score the end of the
record: <eos> counts as one character (like the newline that ends a line of a text file), so
n_chars = len(text) + 1 there.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from .sampling import SequenceConstraint, sample
from .scoring import sequence_logprobs
from .tokenizers import Tokenizer

LN2 = math.log(2.0)

State = Any  # whatever a model carries: an LSTM's (h, c), an HMM's posterior [B, S], an n-gram's last ids


@runtime_checkable
class SequenceModel(Protocol):
    kind: str  # "rnn" | "gru" | "lstm" | "ngram" | "numpy-rnn" | "hmm" (checkpoints record it)
    vocab_size: int
    topic_dim: int  # K of θ; 0 = unconditioned
    device: torch.device

    def initial_state(self, batch: int, theta: torch.Tensor | None = None) -> State: ...

    def step(self, ids: torch.Tensor, theta: torch.Tensor | None, state: State | None
             ) -> tuple[torch.Tensor, State]:
        """ids [B] -> (next-token logits [B, V], state); log_softmax of the logits = log-probabilities."""
        ...

    def state_layers(self, state: State) -> dict[str, torch.Tensor]:
        """Named per-step vectors [B, H] for the neuron viewer ("h0", "c0", ... / "posterior")."""
        ...


@dataclass(frozen=True)
class Score:
    logprob_nats: float  # total natural-log probability of the text (<= 0)
    n_chars: int  # characters scored
    bits_per_char: float

    @property
    def nats_per_char(self) -> float:
        return -self.logprob_nats / max(1, self.n_chars)

    @property
    def probability(self) -> float:
        """The text's probability (the lecture's "viability" of a sentence)."""
        return math.exp(self.logprob_nats)

    @classmethod
    def from_nats(cls, logprob_nats: float, n_chars: int) -> "Score":
        return cls(float(logprob_nats), int(n_chars), -float(logprob_nats) / max(1, n_chars) / LN2)


@dataclass
class LoadedModel:
    """A sequence model with its tokenizer and the metadata of its checkpoint.

    `add_eos`: the model was trained on records that end with <eos> (equations); None = read it from the
    metadata (`train_config.data_kind == "records"`). `chunk`: long texts are scored in chunks of this many
    tokens that carry the state (cuDNN's sequence-length limit). `cache` holds per-model derived objects
    (the syntax vocabulary and constraint automaton of topicrnn.generation).
    """

    model: SequenceModel
    tokenizer: Tokenizer
    metadata: dict = field(default_factory=dict)
    path: Path | None = None
    name: str = "model"
    add_eos: bool | None = None
    chunk: int = 512
    cache: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.add_eos is None:
            self.add_eos = (self.metadata.get("train_config") or {}).get("data_kind") == "records"
        if self.model.vocab_size != self.tokenizer.vocab_size:
            raise ValueError(f"the tokenizer has {self.tokenizer.vocab_size} tokens but the model "
                             f"{self.model.vocab_size}")

    @property
    def kind(self) -> str:
        return self.model.kind

    @property
    def topic_dim(self) -> int:
        return int(self.model.topic_dim)

    @property
    def conditioned(self) -> bool:
        return self.topic_dim > 0

    @property
    def topic_mode(self) -> str:
        """How θ enters (input | init | bias, joined by "+"); `none` for an unconditioned model."""
        if not self.conditioned:
            return "none"
        return str(getattr(getattr(self.model, "config", None), "topic_mode", "input"))

    @property
    def device(self) -> torch.device:
        return self.model.device

    def n_parameters(self) -> int:
        return int(self.model.num_parameters())

    def theta_row(self, theta=None) -> np.ndarray | None:
        """θ [1, K] for one text (None for an unconditioned model, where θ is ignored)."""
        if not self.conditioned:
            return None
        if theta is None:
            raise ValueError(f"this model is topic-conditioned (K={self.topic_dim}): give theta")
        return np.asarray(theta, dtype=np.float32).reshape(1, self.topic_dim)

    def score(self, text: str, theta=None) -> Score:
        """Total log-probability of `text` after <bos> (and of the <eos> that ends a record)."""
        ids = self.tokenizer.encode(text, bos=True, eos=self.add_eos)
        nats = sequence_logprobs(self.model, [ids], self.theta_row(theta), pad_id=self.tokenizer.pad_id,
                                 chunk=self.chunk)
        return Score.from_nats(float(nats[0]), len(text) + (1 if self.add_eos else 0))

    def sample(self, n: int = 1, max_len: int = 300, *, temperature: float = 1.0, prime: str = "",
               seed: int | None = None, theta=None, top_k: int | None = None, top_p: float | None = None,
               greedy: bool = False, constraint: SequenceConstraint | None = None,
               stop_at_eos: bool | None = None) -> list[str]:
        """n texts from the one sampler; a records model stops at <eos> unless told otherwise."""
        return sample(self.model, self.tokenizer, n=n, max_len=max_len, temperature=temperature, top_k=top_k,
                      top_p=top_p, greedy=greedy, prime=prime, theta=theta, seed=seed, constraint=constraint,
                      stop_at_eos=self.add_eos if stop_at_eos is None else stop_at_eos)
