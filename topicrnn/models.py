"""Torch recurrent language models (rnn | gru | lstm) with an optional topic vector θ.

Built on nn.RNN / nn.GRU / nn.LSTM so that cuDNN runs them on a GPU. The topic vector (K floats, K =
`topic_dim`; 0 = a plain language model) enters in one of three ways (`topic_mode`):
  input - θ is joined to the embedding at every step (the TopicEq-style default);
  init  - θ -> the initial hidden (and cell) state of every layer through a linear map + tanh;
  bias  - θ -> an additive bias on the output logits (as in TopicRNN).
Modes combine with "+" (e.g. `input+bias`): each named path is built and θ enters through all of them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .configs import DictConfig

CELLS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
TOPIC_MODES = ("input", "init", "bias")


@dataclass
class ModelConfig(DictConfig):
    cell: str = "lstm"  # rnn | gru | lstm
    layers: int = 2
    hidden: int = 512
    embedding: int = 128
    dropout: float = 0.3  # on the embedding, between layers and before the output layer
    topic_dim: int = 0  # K; 0 = plain language model
    topic_mode: str = "input"  # input | init | bias, or several joined by "+" (input+bias)
    vocab_size: int = 0  # set from the tokenizer at training time

    def validate(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}, not {self.cell!r}")
        parts = self.topic_mode.split("+")
        if not parts or any(m not in TOPIC_MODES for m in parts) or len(set(parts)) != len(parts):
            raise ValueError(f"topic_mode must be one of {TOPIC_MODES} or several of them joined by '+' "
                             f"(e.g. input+bias), not {self.topic_mode!r}")
        if self.vocab_size <= 0:
            raise ValueError("vocab_size is not set: fit a tokenizer first")
        if self.layers < 1 or self.hidden < 1 or self.embedding < 1 or self.topic_dim < 0:
            raise ValueError("layers, hidden and embedding must be >= 1 and topic_dim >= 0")

    def uses(self, mode: str) -> bool:
        """Whether θ enters through `mode` (input | init | bias); never for a plain model."""
        return bool(self.topic_dim) and mode in self.topic_mode.split("+")

    @property
    def kind(self) -> str:
        """The model kind a checkpoint records (topicrnn.interface): the cell."""
        return self.cell


class RecurrentLM(nn.Module):
    """The torch kinds of the step protocol (topicrnn.interface.SequenceModel), plus `forward` over a block."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        c = config
        self.embed = nn.Embedding(c.vocab_size, c.embedding)
        self.drop = nn.Dropout(c.dropout)
        k_in = c.topic_dim if c.uses("input") else 0
        kwargs = {"nonlinearity": "tanh"} if c.cell == "rnn" else {}
        self.rnn = CELLS[c.cell](c.embedding + k_in, c.hidden, num_layers=c.layers, batch_first=True,
                                 dropout=c.dropout if c.layers > 1 else 0.0, **kwargs)
        self.head = nn.Linear(c.hidden, c.vocab_size)
        self.topic_init = None
        self.topic_bias = None
        if c.uses("init"):
            n_states = 2 if c.cell == "lstm" else 1
            self.topic_init = nn.Linear(c.topic_dim, n_states * c.layers * c.hidden)
        if c.uses("bias"):
            self.topic_bias = nn.Linear(c.topic_dim, c.vocab_size, bias=False)  # the topic's lift per token

    @property
    def is_lstm(self) -> bool:
        return self.config.cell == "lstm"

    @property
    def kind(self) -> str:
        return self.config.cell

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def topic_dim(self) -> int:
        return self.config.topic_dim

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def _check_theta(self, theta: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        k = self.config.topic_dim
        if k == 0:
            return None
        if theta is None:
            raise ValueError(f"this model is topic-conditioned (topic_dim={k}): pass theta [B, {k}]")
        if theta.dim() == 1:
            theta = theta.unsqueeze(0).expand(batch, -1)
        if theta.shape != (batch, k):
            raise ValueError(f"theta must have shape [{batch}, {k}], not {list(theta.shape)}")
        return theta.to(self.device, torch.float32)

    def initial_state(self, batch: int, theta: torch.Tensor | None = None, device=None):
        """Zero state, or the θ-derived state in `init` mode. LSTM: (h, c), each [layers, B, hidden]."""
        c = self.config
        device = device if device is not None else self.device
        theta = self._check_theta(theta, batch) if c.topic_dim else None
        if self.topic_init is not None:
            s = torch.tanh(self.topic_init(theta.to(device)))  # [B, n_states*layers*hidden]
            s = s.view(batch, -1, c.layers, c.hidden).permute(1, 2, 0, 3).contiguous()
            return (s[0], s[1]) if self.is_lstm else s[0]
        h = torch.zeros(c.layers, batch, c.hidden, device=device)
        return (h, torch.zeros_like(h)) if self.is_lstm else h

    def forward(self, tokens: torch.Tensor, theta: torch.Tensor | None = None, state=None):
        """tokens [B, T] (long) -> (logits [B, T, V], state). `state` None = start of a sequence."""
        batch, steps = tokens.shape
        theta = self._check_theta(theta, batch)
        if state is None:
            state = self.initial_state(batch, theta, device=tokens.device)
        x = self.drop(self.embed(tokens))
        if theta is not None and self.config.uses("input"):
            x = torch.cat([x, theta.to(x.dtype).unsqueeze(1).expand(batch, steps, -1)], dim=-1)
        out, state = self.rnn(x, state)
        logits = self.head(self.drop(out))
        if self.topic_bias is not None:
            logits = logits + self.topic_bias(theta).to(logits.dtype).unsqueeze(1)
        return logits, state

    def step(self, token_ids: torch.Tensor, theta: torch.Tensor | None = None, state=None):
        """One step: token_ids [B] -> (logits [B, V], state)."""
        logits, state = self.forward(token_ids.view(-1, 1), theta, state)
        return logits[:, 0], state

    def state_layers(self, state) -> dict[str, torch.Tensor]:
        """Per layer l: "h{l}" (and "c{l}" for an LSTM), each [B, hidden]."""
        if self.is_lstm:
            h, c = state
            return {name: t for l in range(self.config.layers) for name, t in ((f"h{l}", h[l]), (f"c{l}", c[l]))}
        return {f"h{l}": state[l] for l in range(self.config.layers)}

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def detach_state(state):
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()
