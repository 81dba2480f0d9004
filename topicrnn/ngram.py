"""Markov n-gram language model over characters or words ("Remixing Noon").

p(w_1..w_n) = Π p(w_i | previous order-1 symbols). Smoothing:
  kn   - interpolated Kneser-Ney (absolute discount D per order, D = n1 / (n1 + 2 n2); lower orders use
         continuation counts; the bottom interpolates with the uniform distribution over the vocabulary);
  addk - add-k (Lidstone) on the full-order counts.
A sentence's "viability" is its probability under the model (`viability`, or `score(...).logprob_nats`).
Words: `\\w+` runs, single punctuation marks and newlines are tokens; spaces are implied between words
(per-character figures still divide by the characters of the text). Unseen symbols map to <unk>.

Run `python -m topicrnn.ngram --text FILE --order 5` for validation figures on the nanoGPT split.
"""
from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from typing import Iterable

import numpy as np

from .interface import Score

BOS, UNK = "<s>", "<unk>"
_WORD = re.compile(r"\w+|\n|[^\w\s]")


class NGramLM:
    def __init__(self, order: int = 5, unit: str = "char", smoothing: str = "kn", k: float = 0.1):
        if order < 1:
            raise ValueError("order must be >= 1")
        if unit not in ("char", "word"):
            raise ValueError("unit must be char or word")
        if smoothing not in ("kn", "addk"):
            raise ValueError("smoothing must be kn or addk")
        self.order, self.unit, self.smoothing, self.k = order, unit, smoothing, k
        self.vocab: list[str] = []

    # ------------------------------------------------------------------ symbols
    def symbols(self, text: str) -> list[str]:
        return list(text) if self.unit == "char" else _WORD.findall(text)

    def join(self, syms: Iterable[str]) -> str:
        if self.unit == "char":
            return "".join(syms)
        out = ""
        for s in syms:
            if out and not out.endswith("\n") and s != "\n" and (s[0].isalnum() or s[0] == "_"):
                out += " "
            out += s
        return out

    def _ids(self, text: str) -> list[int]:
        unk = self.index[UNK]
        return [self.index.get(s, unk) for s in self.symbols(text)]

    # ------------------------------------------------------------------ fitting
    def fit(self, text: str) -> "NGramLM":
        syms = self.symbols(text)
        self.vocab = sorted(set(syms) | {UNK})
        self.index = {s: i for i, s in enumerate(self.vocab)}
        self.bos = len(self.vocab)  # a padding context symbol, never predicted
        seq = [self.bos] * (self.order - 1) + [self.index[s] for s in syms]
        n = self.order
        # counts[m][context tuple (length m)] -> Counter(next id); m = 0 .. n-1
        raw: list[dict] = [defaultdict(Counter) for _ in range(n)]
        for i in range(n - 1, len(seq)):
            w = seq[i]
            raw[n - 1][tuple(seq[i - n + 1 : i])][w] += 1
        if self.smoothing == "kn":
            # Lower orders: continuation counts N1+(• ctx w) = distinct left extensions of (ctx, w).
            counts = [None] * n
            counts[n - 1] = raw[n - 1]
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
            self.counts = raw
            self.totals = [{ctx: sum(nxt.values()) for ctx, nxt in raw[n - 1].items()}] * n
        return self

    # ------------------------------------------------------------------ probabilities
    def prob(self, w: int, context: tuple) -> float:
        """p(w | context) for symbol id w; context = the previous order-1 ids (padded with bos)."""
        n, V = self.order, len(self.vocab)
        if self.smoothing == "addk":
            ctx = context[len(context) - (n - 1) :] if n > 1 else ()
            nxt = self.counts[n - 1].get(ctx)
            c = nxt.get(w, 0) if nxt else 0
            tot = self.totals[n - 1].get(ctx, 0)
            return (c + self.k) / (tot + self.k * V)
        p = 1.0 / V
        for m in range(n):
            ctx = context[len(context) - m :] if m else ()
            nxt = self.counts[m].get(ctx)
            if not nxt:
                continue
            tot = self.totals[m][ctx]
            d = self.discount[m]
            p = (max(nxt.get(w, 0) - d, 0.0) + d * len(nxt) * p) / tot
        return p

    def distribution(self, context: tuple) -> np.ndarray:
        """p(· | context) over the vocabulary, as a vector."""
        n, V = self.order, len(self.vocab)
        if self.smoothing == "addk":
            ctx = context[len(context) - (n - 1) :] if n > 1 else ()
            p = np.full(V, self.k)
            for w, c in (self.counts[n - 1].get(ctx) or {}).items():
                p[w] += c
            return p / p.sum()
        p = np.full(V, 1.0 / V)
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

    # ------------------------------------------------------------------ the interface
    def score(self, text: str) -> Score:
        """Total log-probability of `text` (from the start-of-text context) and bits per character."""
        ids = self._ids(text)
        ctx = [self.bos] * (self.order - 1)
        total = 0.0
        for w in ids:
            total += math.log(self.prob(w, tuple(ctx[len(ctx) - (self.order - 1) :]) if self.order > 1 else ()))
            ctx.append(w)
        return Score.from_nats(total, len(text))

    def viability(self, sentence: str) -> float:
        """The lecture's 'viability' of a sentence: its probability under the model."""
        return math.exp(self.score(sentence).logprob_nats)

    def sample(self, n: int = 1, max_len: int = 300, *, temperature: float = 1.0, prime: str = "",
               seed: int | None = None) -> list[str]:
        rng = np.random.default_rng(seed)
        unk = self.index[UNK]
        out = []
        for _ in range(n):
            ctx = [self.bos] * (self.order - 1) + self._ids(prime)
            gen = []
            for _ in range(max_len):
                p = self.distribution(tuple(ctx[len(ctx) - (self.order - 1) :]) if self.order > 1 else ())
                p[unk] = 0.0
                if temperature <= 0:
                    w = int(p.argmax())
                else:
                    p = p ** (1.0 / temperature)
                    w = int(rng.choice(len(p), p=p / p.sum()))
                gen.append(w)
                ctx.append(w)
            out.append(prime + ("" if not prime or self.unit == "char" else " ")
                       + self.join(self.vocab[i] for i in gen))
        return out


def main(argv=None) -> int:
    import argparse
    import json
    import time

    from .data import read_text, split_text

    ap = argparse.ArgumentParser(description="n-gram validation figures on the nanoGPT split (last 10%)")
    ap.add_argument("--text", required=True)
    ap.add_argument("--order", type=int, nargs="+", default=[5])
    ap.add_argument("--unit", default="char", choices=["char", "word"])
    ap.add_argument("--smoothing", default="kn", choices=["kn", "addk"])
    ap.add_argument("--k", type=float, default=0.1)
    ap.add_argument("--sample", type=int, default=0, help="also print a sample of this many symbols")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    train, val = split_text(read_text(a.text))
    for order in a.order:
        t0 = time.perf_counter()
        lm = NGramLM(order, a.unit, a.smoothing, a.k).fit(train)
        s = lm.score(val)
        row = {"order": order, "unit": a.unit, "smoothing": a.smoothing, "val_nats_per_char": round(s.nats_per_char, 4),
               "val_bits_per_char": round(s.bits_per_char, 4), "val_chars": s.n_chars,
               "seconds": round(time.perf_counter() - t0, 1)}
        if a.unit == "word":  # per-char is not comparable here: spaces are implied, an OOV word is one <unk>
            ids = lm._ids(val)
            row["val_words"] = len(ids)
            row["val_oov_fraction"] = round(sum(i == lm.index[UNK] for i in ids) / max(1, len(ids)), 4)
            row["val_perplexity_per_word"] = round(math.exp(-s.logprob_nats / max(1, len(ids))), 1)
        print(json.dumps(row), flush=True)
        if a.sample:
            print(lm.sample(1, a.sample, seed=a.seed)[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
