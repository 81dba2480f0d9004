"""The lecture's vanilla RNN in numpy (Karpathy's min-char-rnn), with its own backpropagation.

h_t = tanh(W_xh x_t + W_hh h_{t-1} + b_h),  y_t = W_hy h_t + b_y,  p_t = softmax(y_t),
loss = Σ_t -log p_t[target_t]; backpropagation through time over `seq_length` steps, every gradient clipped
to [-5, 5], Adagrad updates. x_t is one-hot, so W_xh x_t is a column lookup. A batch dimension (B parallel
streams, loss summed over time and averaged over the batch) makes it usable on a whole book; B = 1 is
min-char-rnn exactly. `to_torch()` gives the same network as torch nn.RNN + nn.Linear.

It implements the step protocol (topicrnn.interface) with numpy inside: the state is h [B, hidden] (float64);
sampling and scoring go through the one sampler and the one scoring path. `topiceq train --preset
min-char-rnn` trains one (topicrnn.trainers).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .configs import DictConfig

PARAMS = ("Wxh", "Whh", "Why", "bh", "by")


@dataclass
class NumpyRNNConfig(DictConfig):
    hidden: int = 100
    init_scale: float = 0.01
    seed: int = 0  # initial weights
    vocab_size: int = 0  # set from the tokenizer at training time

    kind = "numpy-rnn"  # not a field: what a preset of this config trains


@dataclass
class NumpyRNNTrainConfig(DictConfig):
    """min-char-rnn's loop (`NumpyRNN.fit`) on one text file: its first 1 - val_fraction."""

    data_kind: str = "text"  # one long text file
    tokenizer: str = "char"
    max_steps: int = 5000
    seq_length: int = 25
    batch_size: int = 1  # parallel streams
    lr: float = 0.1
    seed: int = 0  # where the streams restart after a wrap-around
    val_fraction: float = 0.1


class NumpyRNN:
    kind = "numpy-rnn"
    topic_dim = 0
    device = torch.device("cpu")

    def __init__(self, vocab_size: int, hidden: int = 100, seed: int = 0, init_scale: float = 0.01):
        rng = np.random.default_rng(seed)
        self.vocab_size, self.hidden = vocab_size, hidden
        self.p = {
            "Wxh": rng.standard_normal((hidden, vocab_size)) * init_scale,
            "Whh": rng.standard_normal((hidden, hidden)) * init_scale,
            "Why": rng.standard_normal((vocab_size, hidden)) * init_scale,
            "bh": np.zeros(hidden),
            "by": np.zeros(vocab_size),
        }
        self.mem = {k: np.zeros_like(v) for k, v in self.p.items()}  # Adagrad memory

    @classmethod
    def from_config(cls, config: NumpyRNNConfig) -> "NumpyRNN":
        return cls(config.vocab_size, config.hidden, config.seed, config.init_scale)

    # ------------------------------------------------------------------ core math
    def loss_and_grads(self, inputs: np.ndarray, targets: np.ndarray, hprev: np.ndarray):
        """inputs, targets: int [B, T] (or [T]); hprev [B, H] (or [H]).
        -> (loss summed over time, averaged over batch; grads dict; last hidden state)."""
        squeeze = inputs.ndim == 1
        if squeeze:
            inputs, targets, hprev = inputs[None], targets[None], hprev[None]
        P = self.p
        B, T = inputs.shape
        hs = np.empty((T + 1, B, self.hidden))
        hs[0] = hprev  # hs[t + 1] = h_t; hs[0] = the state before the chunk
        ps = np.empty((T, B, self.vocab_size))
        loss = 0.0
        rows = np.arange(B)
        for t in range(T):
            a = P["Wxh"][:, inputs[:, t]].T + hs[t] @ P["Whh"].T + P["bh"]
            hs[t + 1] = np.tanh(a)
            y = hs[t + 1] @ P["Why"].T + P["by"]
            y = y - y.max(axis=1, keepdims=True)
            e = np.exp(y)
            ps[t] = e / e.sum(axis=1, keepdims=True)
            loss -= np.log(ps[t][rows, targets[:, t]]).sum()
        g = {k: np.zeros_like(v) for k, v in P.items()}
        dh_next = np.zeros((B, self.hidden))
        for t in reversed(range(T)):
            dy = ps[t].copy()
            dy[rows, targets[:, t]] -= 1.0
            dy /= B
            g["Why"] += dy.T @ hs[t + 1]
            g["by"] += dy.sum(axis=0)
            dh = dy @ P["Why"] + dh_next
            da = (1.0 - hs[t + 1] ** 2) * dh
            g["bh"] += da.sum(axis=0)
            np.add.at(g["Wxh"].T, inputs[:, t], da)
            g["Whh"] += da.T @ hs[t]
            dh_next = da @ P["Whh"]
        for v in g.values():
            np.clip(v, -5, 5, out=v)  # as in min-char-rnn: against exploding gradients
        h_last = hs[T][0] if squeeze else hs[T]
        return loss / B, g, h_last

    def adagrad_step(self, grads: dict, lr: float = 0.1) -> None:
        for k in PARAMS:
            self.mem[k] += grads[k] * grads[k]
            self.p[k] -= lr * grads[k] / np.sqrt(self.mem[k] + 1e-8)

    # ------------------------------------------------------------------ training
    def fit(self, ids, *, steps: int = 1000, seq_length: int = 25, batch_size: int = 1, lr: float = 0.1,
            seed: int = 0, progress: bool = False) -> list[float]:
        """Adagrad on B streams of the token ids, chunks of seq_length, state carried (min-char-rnn's loop).
        Returns the smoothed loss per character every 100 steps."""
        ids = np.asarray(ids, dtype=np.int64)
        seg = len(ids) // batch_size
        streams = ids[: seg * batch_size].reshape(batch_size, seg)
        rng = np.random.default_rng(seed)
        h = np.zeros((batch_size, self.hidden))
        pos = 0
        smooth = math.log(self.vocab_size) * seq_length
        curve = []
        bar = tqdm(total=steps, desc="numpy-rnn", disable=not progress)
        for step in range(steps):
            if pos + seq_length + 1 > seg:  # wrap around: fresh state, shifted start
                pos, h = int(rng.integers(0, seq_length)), np.zeros((batch_size, self.hidden))
            x = streams[:, pos : pos + seq_length]
            y = streams[:, pos + 1 : pos + seq_length + 1]
            loss, g, h = self.loss_and_grads(x, y, h)
            self.adagrad_step(g, lr)
            pos += seq_length
            smooth = 0.999 * smooth + 0.001 * loss
            if (step + 1) % 100 == 0:
                curve.append(float(smooth / seq_length))
                bar.set_postfix(loss=f"{smooth / seq_length:.3f}", refresh=False)
            bar.update(1)
        bar.close()
        return curve

    # ------------------------------------------------------------------ the step protocol
    def initial_state(self, batch: int, theta=None) -> torch.Tensor:
        return torch.zeros(batch, self.hidden, dtype=torch.float64)

    def step(self, ids: torch.Tensor, theta=None, state: torch.Tensor | None = None):
        """ids [B] -> (log-probabilities of the next symbol [B, V] float64, h [B, hidden])."""
        P = self.p
        h = np.zeros((len(ids), self.hidden)) if state is None else state.numpy()
        h = np.tanh(P["Wxh"][:, ids.cpu().numpy()].T + h @ P["Whh"].T + P["bh"])
        y = h @ P["Why"].T + P["by"]
        y = y - y.max(axis=1, keepdims=True)
        logp = y - np.log(np.exp(y).sum(axis=1, keepdims=True))
        return torch.from_numpy(logp), torch.from_numpy(h)

    def state_layers(self, state: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"h0": state}

    def num_parameters(self) -> int:
        return sum(v.size for v in self.p.values())

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(v.copy()) for k, v in self.p.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> "NumpyRNN":
        for k in PARAMS:
            if tuple(state[k].shape) != self.p[k].shape:
                raise ValueError(f"numpy RNN weight {k}: shape {tuple(state[k].shape)}, expected {self.p[k].shape}")
            self.p[k] = state[k].numpy().astype(np.float64)
        return self

    # ------------------------------------------------------------------ torch twin
    def to_torch(self):
        """The same network as torch modules: (nn.RNN on one-hot inputs, nn.Linear output)."""
        rnn = nn.RNN(self.vocab_size, self.hidden, nonlinearity="tanh", batch_first=True).double()
        head = nn.Linear(self.hidden, self.vocab_size).double()
        with torch.no_grad():
            rnn.weight_ih_l0.copy_(torch.from_numpy(self.p["Wxh"]))
            rnn.weight_hh_l0.copy_(torch.from_numpy(self.p["Whh"]))
            rnn.bias_ih_l0.copy_(torch.from_numpy(self.p["bh"]))
            rnn.bias_hh_l0.zero_()
            head.weight.copy_(torch.from_numpy(self.p["Why"]))
            head.bias.copy_(torch.from_numpy(self.p["by"]))
        return rnn, head


def numerical_gradient_check(model: NumpyRNN, inputs, targets, hprev, *, n_checks: int = 10, eps: float = 1e-5,
                             seed: int = 0) -> float:
    """Largest relative error between analytic and centred-difference gradients at random entries.
    (Uses the unclipped loss; keep weights small so no gradient reaches the clip.)"""
    rng = np.random.default_rng(seed)
    _, grads, _ = model.loss_and_grads(inputs, targets, hprev)
    worst = 0.0
    for name in PARAMS:
        w = model.p[name]
        for _ in range(n_checks):
            idx = tuple(int(rng.integers(0, s)) for s in w.shape)
            old = w[idx]
            w[idx] = old + eps
            lp, _, _ = model.loss_and_grads(inputs, targets, hprev)
            w[idx] = old - eps
            lm, _, _ = model.loss_and_grads(inputs, targets, hprev)
            w[idx] = old
            num = (lp - lm) / (2 * eps)
            ana = grads[name][idx]
            denom = max(abs(num) + abs(ana), 1e-8)
            worst = max(worst, abs(num - ana) / denom)
    return worst
