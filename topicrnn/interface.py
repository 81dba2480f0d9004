"""The one model interface: `score(text) -> Score` and `sample(...) -> list[str]`.

Every model (n-gram, numpy RNN, torch RNN/GRU/LSTM) implements it. Per-character figures are always
total nats / number of characters of the text, whatever the tokenizer, so models with different tokenizers
compare. Models of short records (equations) also score the end of the record: <eos> counts as one
character (like the newline that ends a line of a text file), so n_chars = len(text) + 1 there.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

LN2 = math.log(2.0)


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
        return math.exp(self.logprob_nats)

    @classmethod
    def from_nats(cls, logprob_nats: float, n_chars: int) -> "Score":
        return cls(float(logprob_nats), int(n_chars), -float(logprob_nats) / max(1, n_chars) / LN2)


@runtime_checkable
class LanguageModel(Protocol):
    def score(self, text: str) -> Score: ...
    def sample(self, n: int = 1, max_len: int = 300, *, temperature: float = 1.0, prime: str = "",
               seed: int | None = None) -> list[str]: ...


class TorchLM:
    """A trained `RecurrentLM` + its tokenizer behind the interface (θ fixed per instance or per call)."""

    def __init__(self, model, tokenizer, *, add_eos: bool = False, theta=None, chunk: int = 512):
        self.model, self.tokenizer = model, tokenizer
        self.add_eos = add_eos  # records (equations) end with <eos>; long texts do not
        self.theta = theta
        self.chunk = chunk  # long texts are run in chunks that carry the state (cuDNN limit)

    @classmethod
    def from_checkpoint(cls, path_or_dir, device="cpu", theta=None) -> "TorchLM":
        from .checkpoint import load_checkpoint

        model, tokenizer, meta = load_checkpoint(path_or_dir, device=device)
        add_eos = meta.get("train_config", {}).get("data_kind") == "records"
        lm = cls(model, tokenizer, add_eos=add_eos, theta=theta)
        lm.metadata = meta
        return lm

    def _theta(self, theta):
        import torch

        k = self.model.config.topic_dim
        theta = self.theta if theta is None else theta
        if k == 0:
            return None
        if theta is None:
            raise ValueError(f"this model is topic-conditioned (K={k}): give theta")
        return torch.as_tensor(theta, dtype=torch.float32, device=self.model.head.weight.device).view(1, k)

    def token_logprobs(self, text: str, theta=None):
        """Log-probability (nats) of each scored token: [bos] + tokens (+ <eos>)."""
        import torch

        tok = self.tokenizer
        ids = tok.encode(text, bos=True, eos=self.add_eos)
        x = torch.tensor(ids, dtype=torch.long, device=self.model.head.weight.device).unsqueeze(0)
        th = self._theta(theta)
        was_training = self.model.training
        self.model.eval()
        out, state = [], None
        with torch.no_grad():
            for s in range(0, x.shape[1] - 1, self.chunk):
                inp = x[:, s : s + self.chunk]
                tgt = x[:, s + 1 : s + 1 + self.chunk]
                logits, state = self.model(inp[:, : tgt.shape[1]], th, state)
                lp = torch.log_softmax(logits.float(), -1).gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
                out.append(lp[0])
        if was_training:
            self.model.train()
        return torch.cat(out) if out else torch.zeros(0)

    def score(self, text: str, theta=None) -> Score:
        total = float(self.token_logprobs(text, theta).sum())
        return Score.from_nats(total, len(text) + (1 if self.add_eos else 0))

    def sample(self, n: int = 1, max_len: int = 300, *, temperature: float = 1.0, prime: str = "",
               seed: int | None = None, theta=None, **kwargs) -> list[str]:
        from .sampling import sample

        theta = self.theta if theta is None else theta
        return sample(self.model, self.tokenizer, n=n, max_len=max_len, temperature=temperature, prime=prime,
                      seed=seed, theta=theta, stop_at_eos=kwargs.pop("stop_at_eos", self.add_eos), **kwargs)
