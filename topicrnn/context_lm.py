"""An LSTM language model whose θ acts inside the network, with θ from its own context encoder (issue 20).

`ContextLM` is the model kind `context-lstm` (ModelConfig.kind when `context_encoder` or `film` is set) of the
step protocol (topicrnn.interface.SequenceModel): `load_model` loads it, the one sampler and
`generation.generate_for_topics` generate from it, `scoring` scores it. What is new:

* θ inside the network is `cond` [B, C]: the topic mixture of the model's own neural topic model over the
  equation's context words (`context_encoder`, topicrnn.context_encoder; C = context_topics), or a given LDA θ
  (C = topic_dim) for FiLM without an encoder. Training passes `cond` (from `Batch.context`). The protocol's
  `theta` is an LDA θ [B, topic_dim] (topic prototypes, one-hot e_k, `--topic`): a context-encoder model turns
  it into the expected bag of those topics' top words (`topic_words`, a buffer filled at training from the
  LDA) -> encoder; no θ at all = the no-context θ. `with_context_theta()` is the same model seen with θ =
  `cond` itself (topic_dim = C): the evaluation scores each equation with the θ of its own context words, and
  `--words` generates from the encoder's θ of those words, both through the one scoring path and sampler.
* θ joined to the input (`topic_mode` input) and as a logit bias (bias), as in RecurrentLM. Since θ is
  constant over an equation, an additive shift of the gate pre-activations W_θ θ equals joining θ to the
  input; what is new is multiplicative:
  - film "io": FiLM scale/shift of the embedding (the input projection of layer 1: W_ih diag(1 + γ(θ)), a
    topic-dependent factored input weight as in TCNLM) and of every layer's output h (the next layer's input
    and the head's). Runs on nn.LSTM, one per layer, so cuDNN stays.
  - film "cell": the gate pre-activations (W_ih x + W_hh h + b) ⊙ (1 + γ(θ)) inside the cell, the recurrent
    part included: a TorchScript loop over time (`film_lstm_loop`), no cuDNN — see docs/results.md for its
    speed against nn.LSTM.
  Every FiLM map starts at zero, so a new model starts as the unconditioned LSTM.

`build_model(config)` is the one way a torch model is built from its config (training and `load_model`).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .context_encoder import ContextEncoder
from .data import ContextVocab, pad_contexts
from .models import ModelConfig, RecurrentLM, TorchStepModel
from .theta import theta_batch


def build_model(config: ModelConfig) -> nn.Module:
    """The torch model of a config's kind: ContextLM for `context-lstm`, else RecurrentLM (rnn | gru | lstm)."""
    return ContextLM(config) if config.kind == "context-lstm" else RecurrentLM(config)


def film_lstm_loop(xg: torch.Tensor, w_hh: torch.Tensor, scale: torch.Tensor, h: torch.Tensor,
                   c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """xg [B, T, 4H] = W_ih x + b (all steps at once), scale [B, 4H] = 1 + γ(θ); gate order i, f, g, o as in
    nn.LSTM. -> (outputs [B, T, H], h, c). Runs eagerly on the CPU (measured faster there than the scripted
    loop: bench/conditioning_bench.py --time-cells) and as `film_lstm_loop_scripted` on CUDA, where the
    TorchScript fuser can fuse the gate arithmetic."""
    xg = xg * scale.unsqueeze(1)
    w_t = w_hh.t()
    outs = []
    for t in range(xg.shape[1]):
        gates = xg[:, t] + torch.mm(h, w_t) * scale
        i, f, g, o = gates.chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        outs.append(h)
    return torch.stack(outs, 1), h, c


film_lstm_loop_scripted = torch.jit.script(film_lstm_loop)


class FilmLSTMLayer(nn.Module):
    """One LSTM layer whose gate pre-activations are scaled by 1 + γ(θ) (the in-cell variant)."""

    def __init__(self, input_size: int, hidden: int, cond_dim: int):
        super().__init__()
        self.hidden = hidden
        self.ih = nn.Linear(input_size, 4 * hidden)
        self.w_hh = nn.Parameter(torch.empty(4 * hidden, hidden))
        self.gate_film = nn.Linear(cond_dim, 4 * hidden)
        bound = hidden ** -0.5  # nn.LSTM's initialisation
        for p in (self.ih.weight, self.ih.bias, self.w_hh):
            nn.init.uniform_(p, -bound, bound)
        nn.init.zeros_(self.gate_film.weight)
        nn.init.zeros_(self.gate_film.bias)

    def forward(self, x, state, cond):
        h, c = state
        # float32 inside the loop: autocast does not reach into a scripted function
        with torch.autocast(device_type=x.device.type, enabled=False):
            xg = self.ih(x.float())
            scale = 1.0 + self.gate_film(cond.float())
            loop = film_lstm_loop_scripted if x.is_cuda else film_lstm_loop
            out, h, c = loop(xg, self.w_hh.float(), scale, h.float(), c.float())
        return out, (h, c)


class ContextLM(TorchStepModel):
    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        if not config.conditioned_lm:
            raise ValueError("ContextLM is for context_encoder/film configs: build RecurrentLM otherwise "
                             "(topicrnn.context_lm.build_model picks)")
        self.config = c = config
        modes = set(c.topic_mode.split("+"))
        self.cond_dim = c.context_topics if c.context_encoder else c.topic_dim
        self.joins_input, self.adds_bias = "input" in modes, "bias" in modes
        film = set(c.film.split("+")) - {"none"}
        self.film_io, self.film_cell = "io" in film, "cell" in film
        self.context_vocab: ContextVocab | None = None  # attached by training / checkpoint loading
        self._cond_cache: tuple | None = None

        self.embed = nn.Embedding(c.vocab_size, c.embedding)
        self.drop = nn.Dropout(c.dropout)
        self.encoder = ContextEncoder(c.context_vocab_size, c.context_topics, c.context_hidden) \
            if c.context_encoder else None
        if c.context_encoder and c.topic_dim:  # LDA θ -> expected bag of its topics' top words
            self.register_buffer("topic_words", torch.zeros(c.topic_dim, c.context_vocab_size))
        else:
            self.topic_words = None
        k = self.cond_dim
        sizes = [c.embedding + (k if self.joins_input else 0)] + [c.hidden] * (c.layers - 1)
        if self.film_cell:
            self.layers = nn.ModuleList(FilmLSTMLayer(n, c.hidden, k) for n in sizes)
        else:
            self.layers = nn.ModuleList(nn.LSTM(n, c.hidden, batch_first=True) for n in sizes)
        self.film_in = self.film_out = None
        if self.film_io:
            self.film_in = nn.Linear(k, 2 * c.embedding)
            self.film_out = nn.ModuleList(nn.Linear(k, 2 * c.hidden) for _ in range(c.layers))
            for lin in [self.film_in, *self.film_out]:
                nn.init.zeros_(lin.weight)
                nn.init.zeros_(lin.bias)
        self.head = nn.Linear(c.hidden, c.vocab_size)
        self.topic_bias = nn.Linear(k, c.vocab_size, bias=False) if self.adds_bias else None
        if self.topic_bias is not None:
            nn.init.zeros_(self.topic_bias.weight)

    # ------------------------------------------------------------------- the step protocol (interface.py)
    # kind, vocab_size, topic_dim (K of the LDA θ the protocol's `theta` is; 0: a context-encoder model asked by
    # contexts and words only), device, state_layers: TorchStepModel's.

    @property
    def conditioning_mode(self) -> str:
        """How θ enters, for tables: `context:input+film-io` (θ from the contexts) or `input+film-io` (LDA θ)."""
        c = self.config
        film = "" if c.film == "none" else f"+film-{c.film}"
        return (f"context:{c.topic_mode}" if self.encoder is not None else c.topic_mode) + film

    def with_context_theta(self) -> "ContextThetaView":
        """This model with θ = θ inside the network (e.g. `context_theta_rows`) instead of an LDA θ."""
        return ContextThetaView(self)

    def scoring_parameters(self) -> int:
        """Parameters that reach p(equation | context): all but the topic model's decoder, which only trains
        the encoder."""
        dec = sum(p.numel() for p in self.encoder.decoder.parameters()) if self.encoder is not None else 0
        return self.num_parameters() - dec

    # ------------------------------------------------------------------------------------------ θ
    def set_topic_words(self, matrix) -> None:
        """The [topic_dim, context_vocab_size] bridge from LDA topics to context words (rows sum to 1 or 0)."""
        if self.topic_words is None:
            raise ValueError("this model takes no LDA θ (topic_dim 0 or no context encoder)")
        self.topic_words.copy_(torch.as_tensor(matrix, dtype=torch.float32))

    def context_theta(self, context: torch.Tensor) -> torch.Tensor:
        """Context word ids [B, L] -> θ inside the network [B, C] (the posterior mean: scoring, generation)."""
        if self.encoder is None:
            raise ValueError("this model has no context encoder: give it an LDA θ")
        return self.encoder.theta(context.to(self.head.weight.device))

    def theta_from_texts(self, texts) -> torch.Tensor:
        """Context texts (or words) -> θ inside the network [n, C], through the stored context vocabulary."""
        if self.context_vocab is None:
            raise ValueError("this model's context vocabulary is missing (load it with its checkpoint)")
        return self.context_theta(pad_contexts([self.context_vocab.encode(t) for t in texts]))

    def conditioning(self, theta: torch.Tensor | None, batch: int) -> torch.Tensor:
        """θ inside the network from what a caller without contexts has: an LDA θ [B, topic_dim] (or [K]),
        or None (the no-context θ). Cached while evaluating, so a sampler passing the same θ every step
        encodes it once."""
        device = self.head.weight.device
        if self.encoder is None:
            return theta_batch(theta, batch, self.cond_dim, device)
        if theta is not None:
            if self.topic_words is None:
                raise ValueError("this model reads θ from contexts only (no LDA topics were bridged at training)")
            theta = theta_batch(theta, batch, self.config.topic_dim, device, what="an LDA θ, or contexts")
        # the cache holds while the weights are unchanged (in-place updates bump a tensor's _version)
        versions = tuple(p._version for p in self.encoder.parameters())
        cached = self._cond_cache
        if not self.training and cached is not None and cached[0] == (batch, versions) and (
                (theta is None and cached[1] is None)
                or (theta is not None and cached[1] is not None
                    # the sampler passes the same tensor every step: no device sync for torch.equal then
                    and (theta is cached[1] or torch.equal(theta, cached[1])))):
            return cached[2]
        if theta is None:
            cond = self.encoder.empty_theta(batch, device).expand(batch, -1)
        else:
            weights = theta @ self.topic_words
            weights = weights / weights.sum(-1, keepdim=True).clamp(min=1e-12)
            cond = torch.softmax(self.encoder.encode_weights(weights)[0], dim=-1)
        self._cond_cache = None if self.training else ((batch, versions), theta, cond)
        return cond

    # ------------------------------------------------------------------------------------------ running
    def initial_state(self, batch: int, theta: torch.Tensor | None = None, device=None):
        c = self.config
        device = device if device is not None else self.head.weight.device
        h = torch.zeros(c.layers, batch, c.hidden, device=device)
        return h, torch.zeros_like(h)

    def forward(self, tokens: torch.Tensor, theta: torch.Tensor | None = None, state=None, *,
                cond: torch.Tensor | None = None):
        """tokens [B, T] -> (logits [B, T, V], (h, c)). `cond` [B, C]: θ inside the network (from the
        contexts); without it, from `theta` (LDA θ) or the no-context θ (see `conditioning`)."""
        batch, steps = tokens.shape
        if cond is None:
            cond = self.conditioning(theta, batch)
        # the network reads θ relative to the uniform mixture (K θ - 1: 0 for "no topic", ~1 per unit of
        # preference): raw θ of 50 topics differ by hundredths, which the zero-started maps took hundreds of
        # steps more to pick up (measured on the planted test)
        cond = cond * self.cond_dim - 1.0
        if state is None:
            state = self.initial_state(batch, device=tokens.device)
        x = self.drop(self.embed(tokens))
        if self.film_io:
            gamma, beta = self.film_in(cond).unsqueeze(1).chunk(2, dim=-1)
            x = x * (1.0 + gamma.to(x.dtype)) + beta.to(x.dtype)
        if self.joins_input:
            x = torch.cat([x, cond.to(x.dtype).unsqueeze(1).expand(batch, steps, -1)], dim=-1)
        h0, c0 = state
        hs, cs = [], []
        for i, layer in enumerate(self.layers):
            if self.film_cell:
                out, (h, c) = layer(x, (h0[i], c0[i]), cond)
            else:
                out, (h, c) = layer(x, (h0[i : i + 1].contiguous(), c0[i : i + 1].contiguous()))
                h, c = h[0], c[0]
            if self.film_io:
                gamma, beta = self.film_out[i](cond).unsqueeze(1).chunk(2, dim=-1)
                out = out * (1.0 + gamma.to(out.dtype)) + beta.to(out.dtype)
            hs.append(h)
            cs.append(c)
            x = self.drop(out)  # between layers and before the head, as nn.LSTM's dropout + RecurrentLM
        logits = self.head(x)
        if self.topic_bias is not None:
            logits = logits + self.topic_bias(cond).to(logits.dtype).unsqueeze(1)
        return logits, (torch.stack(hs), torch.stack(cs))

    def step(self, token_ids: torch.Tensor, theta: torch.Tensor | None = None, state=None, *, cond=None):
        logits, state = self.forward(token_ids.view(-1, 1), theta, state, cond=cond)
        return logits[:, 0], state


class ContextThetaView(TorchStepModel):
    """A ContextLM seen by the sampler and the scoring path with θ = θ inside the network [B, C] (topic_dim =
    C): rows of `context_theta_rows` (each equation's own context; `--words`)."""

    def __init__(self, model: ContextLM):
        super().__init__()
        self.lm = model
        self.config, self.head = model.config, model.head

    @property
    def topic_dim(self) -> int:
        return self.lm.cond_dim

    @property
    def conditioning_mode(self) -> str:
        return self.lm.conditioning_mode

    def _cond(self, theta: torch.Tensor | None, batch: int) -> torch.Tensor:
        return theta_batch(theta, batch, self.topic_dim, self.device, what="θ inside the network: context_theta_rows")

    def initial_state(self, batch: int, theta: torch.Tensor | None = None, device=None):
        return self.lm.initial_state(batch, device=device)

    def forward(self, tokens, theta=None, state=None):
        return self.lm(tokens, None, state, cond=self._cond(theta, tokens.shape[0]))

    def step(self, token_ids, theta=None, state=None):
        return self.lm.step(token_ids, None, state, cond=self._cond(theta, token_ids.shape[0]))


def reads_contexts(model) -> bool:
    """Whether a model infers its θ from context words itself (a context-lstm with a context encoder)."""
    return getattr(model, "encoder", None) is not None


@torch.no_grad()
def context_theta_rows(model: ContextLM, contexts, batch_size: int = 512) -> np.ndarray:
    """Context texts (or word lists) -> θ inside the network [n, C] (the encoder's posterior mean), for
    `with_context_theta()`."""
    was_training = model.training
    model.eval()
    rows = [model.theta_from_texts([t if isinstance(t, str) else " ".join(t) for t in contexts[i:i + batch_size]])
            .float().cpu().numpy() for i in range(0, len(contexts), batch_size)]
    model.train(was_training)
    return np.concatenate(rows) if rows else np.zeros((0, model.cond_dim), np.float32)


def context_conditioning(model: nn.Module, batch, train_config=None):
    """θ inside the network for a batch with context word ids -> (cond or None, topic-model loss or None).
    With a TrainConfig (training): the regularised θ (random part of the context, noise, conditioning dropout)
    and the topic model's loss; without one (evaluation): the posterior mean, no loss."""
    if batch.context is None or getattr(model, "encoder", None) is None:
        return None, None
    if train_config is None:
        return model.context_theta(batch.context), None
    cfg = train_config
    return model.encoder.regularised_theta(batch.context, keep=cfg.context_keep, drop=cfg.cond_dropout,
                                           noise=cfg.theta_noise, kl_weight=cfg.kl_weight,
                                           kl_warmup=cfg.kl_warmup_steps, lm_grad=cfg.encoder_lm_grad)
