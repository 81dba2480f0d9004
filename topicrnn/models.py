"""Torch recurrent language models (rnn | gru | lstm) with an optional topic vector θ.

Built on nn.RNN / nn.GRU / nn.LSTM so that cuDNN runs them on a GPU. The topic vector (K floats, K =
`topic_dim`; 0 = a plain language model) enters in one of three ways (`topic_mode`):
  input - θ is joined to the embedding at every step (the TopicEq-style default);
  init  - θ -> the initial hidden (and cell) state of every layer through a linear map + tanh;
  bias  - θ -> an additive bias on the output logits (as in TopicRNN).
Modes combine with "+" (e.g. `input+bias`): each named path is built and θ enters through all of them.

Issue 20 adds the kind `context-lstm` (topicrnn.context_lm; `context_lm.build_model` builds either): a
context encoder (`context_encoder`: θ from the model's own neural topic model over the equation's context
words, trained jointly) and θ acting multiplicatively inside the network (`film`: FiLM scale/shift of each layer's input and
output, or of the gate pre-activations inside the cell).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .configs import DictConfig
from .theta import theta_batch

CELLS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
TOPIC_MODES = ("input", "init", "bias")
FILM_MODES = ("none", "io", "cell", "io+cell")


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
    # Issue 20 (topicrnn.context_lm). With context_encoder, θ inside the network is the encoder's own topic
    # mixture of `context_topics` topics, inferred from the equation's context words; topic_dim is then the K
    # of the LDA θ the model can also be asked with (generation by topic: an LDA θ becomes the expected bag of
    # its topics' top words), 0 = contexts and words only.
    context_encoder: bool = False
    context_topics: int = 50  # K of the encoder's logistic-normal θ
    context_hidden: int = 128  # the encoder's hidden width (word embedding = first layer, ProdLDA-style)
    context_vocab_size: int = 0  # set from the context vocabulary at training time (padding included)
    film: str = "none"  # none | io (scale/shift of each layer's input and output, cuDNN) | cell (of the gate
    #                     pre-activations inside a scripted LSTM cell, recurrent part included) | io+cell

    @property
    def conditioned_lm(self) -> bool:
        """Whether this config needs topicrnn.context_lm.ContextLM rather than RecurrentLM."""
        return bool(self.context_encoder) or self.film != "none"

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
        if self.film not in FILM_MODES:
            raise ValueError(f"film must be one of {FILM_MODES}, not {self.film!r}")
        if self.conditioned_lm:
            if self.cell != "lstm":
                raise ValueError("context_encoder and film are built for cell=lstm only")
            if "init" in self.topic_mode.split("+"):
                raise ValueError("context_encoder/film models take topic_mode input and/or bias, not init")
            if self.context_encoder and (self.context_vocab_size < 2 or self.context_topics < 2):
                raise ValueError("context_encoder needs context_vocab_size (set from the data) and context_topics >= 2")
            if not self.context_encoder and self.topic_dim == 0:
                raise ValueError("film needs a θ: a topic_dim (LDA θ) or context_encoder=true")

    def uses(self, mode: str) -> bool:
        """Whether θ enters through `mode` (input | init | bias); never for a plain model."""
        return bool(self.topic_dim) and mode in self.topic_mode.split("+")

    @property
    def kind(self) -> str:
        """The model kind a checkpoint records (topicrnn.interface): the cell, or `context-lstm` for a
        context-encoder / FiLM model (topicrnn.context_lm.ContextLM)."""
        return "context-lstm" if self.conditioned_lm else self.cell


class TorchStepModel(nn.Module):
    """What every torch kind of the step protocol shares (RecurrentLM here, ContextLM in context_lm): the
    protocol's attributes read from `config` and `head`, and the per-layer state for the neuron viewer."""

    config: ModelConfig
    head: nn.Linear

    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def is_lstm(self) -> bool:
        return self.config.cell == "lstm"

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def topic_dim(self) -> int:
        return self.config.topic_dim

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def state_layers(self, state) -> dict[str, torch.Tensor]:
        """Per layer l: "h{l}" (and "c{l}" for an LSTM), each [B, hidden]."""
        if self.is_lstm:
            h, c = state
            return {name: t for l in range(self.config.layers) for name, t in ((f"h{l}", h[l]), (f"c{l}", c[l]))}
        return {f"h{l}": state[l] for l in range(self.config.layers)}

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def scoring_parameters(self) -> int:
        """Parameters that reach p(equation | θ): all of them here (a context model leaves out its topic
        model's decoder); the figure equal-size comparisons match."""
        return self.num_parameters()


class RecurrentLM(TorchStepModel):
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


    def _check_theta(self, theta: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        return theta_batch(theta, batch, self.config.topic_dim, self.device)

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



def detach_state(state):
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()
