"""The lecture's vanilla RNN in numpy (Karpathy's min-char-rnn), with its own backpropagation.

h_t = tanh(W_xh x_t + W_hh h_{t-1} + b_h),  y_t = W_hy h_t + b_y,  p_t = softmax(y_t),
loss = Σ_t -log p_t[target_t]; backpropagation through time over `seq_length` steps, every gradient clipped
to [-5, 5], Adagrad updates. x_t is one-hot, so W_xh x_t is a column lookup. A batch dimension (B parallel
streams, loss summed over time and averaged over the batch) makes it usable on a whole book; B = 1 is
min-char-rnn exactly. `to_torch()` gives the same network as torch nn.RNN + nn.Linear.

Run `python -m topicrnn.numpy_rnn --text FILE` for validation figures on the nanoGPT split.
"""
from __future__ import annotations

import math

import numpy as np

from .interface import Score
from .tokenizers import CharTokenizer

PARAMS = ("Wxh", "Whh", "Why", "bh", "by")


class NumpyRNN:
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
        self.tokenizer: CharTokenizer | None = None

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

    def forward_logprobs(self, ids: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Log-probabilities of the next symbol after each input id (ids [T]); -> ([T, V], last h)."""
        P = self.p
        out = np.empty((len(ids), self.vocab_size))
        for t, i in enumerate(ids):
            h = np.tanh(P["Wxh"][:, i] + P["Whh"] @ h + P["bh"])
            y = P["Why"] @ h + P["by"]
            y = y - y.max()
            out[t] = y - np.log(np.exp(y).sum())
        return out, h

    # ------------------------------------------------------------------ training on text
    def fit(self, text: str, *, steps: int = 1000, seq_length: int = 25, batch_size: int = 1, lr: float = 0.1,
            seed: int = 0, progress: bool = False) -> list[float]:
        """Adagrad on B streams of the text, chunks of seq_length, state carried (min-char-rnn's loop).
        Returns the smoothed loss per character every 100 steps."""
        tok = self.tokenizer
        ids = np.asarray(tok.encode(text), dtype=np.int64)
        seg = len(ids) // batch_size
        streams = ids[: seg * batch_size].reshape(batch_size, seg)
        rng = np.random.default_rng(seed)
        h = np.zeros((batch_size, self.hidden))
        pos = 0
        smooth = math.log(self.vocab_size) * seq_length
        curve = []
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=steps, desc="numpy-rnn")
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
                curve.append(smooth / seq_length)
                if bar is not None:
                    bar.set_postfix(loss=f"{smooth / seq_length:.3f}", refresh=False)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        return curve

    @classmethod
    def for_text(cls, text: str, hidden: int = 100, seed: int = 0) -> "NumpyRNN":
        tok = CharTokenizer().fit(text)
        m = cls(tok.vocab_size, hidden, seed)
        m.tokenizer = tok
        return m

    # ------------------------------------------------------------------ the interface
    def score(self, text: str) -> Score:
        """Log-probability of text[1:] given text[0] (the state starts at zero on the first character)."""
        ids = np.asarray(self.tokenizer.encode(text), dtype=np.int64)
        lp, _ = self.forward_logprobs(ids[:-1], np.zeros(self.hidden))
        total = float(lp[np.arange(len(ids) - 1), ids[1:]].sum())
        return Score.from_nats(total, len(ids) - 1)

    def sample(self, n: int = 1, max_len: int = 300, *, temperature: float = 1.0, prime: str = "\n",
               seed: int | None = None) -> list[str]:
        rng = np.random.default_rng(seed)
        tok = self.tokenizer
        out = []
        for _ in range(n):
            ids = tok.encode(prime or "\n")
            lp, h = self.forward_logprobs(np.asarray(ids[:-1], dtype=np.int64), np.zeros(self.hidden))
            cur, gen = ids[-1], []
            for _ in range(max_len):
                lp, h = self.forward_logprobs(np.asarray([cur]), h)
                logits = lp[0].copy()
                logits[list(tok.special_ids)] = -np.inf
                if temperature <= 0:
                    cur = int(logits.argmax())
                else:
                    p = np.exp((logits - logits.max()) / temperature)
                    cur = int(rng.choice(len(p), p=p / p.sum()))
                gen.append(cur)
            out.append(prime + tok.decode(gen))
        return out

    # ------------------------------------------------------------------ torch twin
    def to_torch(self):
        """The same network as torch modules: (nn.RNN on one-hot inputs, nn.Linear output)."""
        import torch
        from torch import nn

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


def main(argv=None) -> int:
    import argparse
    import json
    import time

    from .data import read_text, split_text

    ap = argparse.ArgumentParser(description="numpy RNN (min-char-rnn) validation figure on the nanoGPT split")
    ap.add_argument("--text", required=True)
    ap.add_argument("--hidden", type=int, default=100)
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--seq-length", type=int, default=25)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sample", type=int, default=0)
    a = ap.parse_args(argv)
    train, val = split_text(read_text(a.text))
    t0 = time.perf_counter()
    m = NumpyRNN.for_text(train, a.hidden, a.seed)
    curve = m.fit(train, steps=a.steps, seq_length=a.seq_length, batch_size=a.batch, lr=a.lr, seed=a.seed,
                  progress=True)
    s = m.score(val)
    print(json.dumps({"hidden": a.hidden, "steps": a.steps, "seq_length": a.seq_length, "batch": a.batch,
                      "train_chars_seen": a.steps * a.seq_length * a.batch,
                      "train_smoothed_nats_per_char": round(curve[-1], 4) if curve else None,
                      "val_nats_per_char": round(s.nats_per_char, 4), "val_bits_per_char": round(s.bits_per_char, 4),
                      "val_chars": s.n_chars, "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
    if a.sample:
        print(m.sample(1, a.sample, seed=a.seed)[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
