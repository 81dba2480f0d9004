"""Batched sampling with topicrnn.sampling.sample vs a bare loop of the same shape, one process.

Same weights for both (a 2 x 512 LSTM, embedding 128, vocab 65): the bare loop runs embedding -> nn.LSTM
(state carried) -> linear -> softmax -> multinomial for n sequences x L steps; ours adds the special-token
mask, temperature and the bookkeeping of the one sampler. Alternating rounds; prints tokens/s and the ratio
ours / bare (goal >= 0.8).
    python bench/sample_bench.py [--device cpu|cuda] [-n 64] [--length 100] [--rounds 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from topicrnn.device import resolve_device
from topicrnn.models import ModelConfig, RecurrentLM
from topicrnn.sampling import sample
from topicrnn.tokenizers import CharTokenizer

TEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'\n-&$3"


@torch.no_grad()
def bare_loop(model, n, length, bos, gen):
    x = torch.full((n,), bos, dtype=torch.long, device=model.head.weight.device)
    state, out = None, []
    for _ in range(length):
        h, state = model.rnn(model.embed(x).unsqueeze(1), state)
        probs = torch.softmax(model.head(h[:, 0]), -1)
        x = torch.multinomial(probs, 1, generator=gen).squeeze(1)
        out.append(x)
    return torch.stack(out, 1).tolist()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("--length", type=int, default=100)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = resolve_device(a.device)
    tok = CharTokenizer().fit(TEXT)
    torch.manual_seed(0)
    model = RecurrentLM(ModelConfig(cell="lstm", layers=2, hidden=a.hidden, embedding=128, dropout=0.0,
                                    vocab_size=tok.vocab_size)).to(dev).eval()

    def ours():
        sample(model, tok, n=a.n, max_len=a.length, seed=1, stop_at_eos=False)

    def bare():
        g = torch.Generator(device=dev)
        g.manual_seed(1)
        bare_loop(model, a.n, a.length, tok.bos_id, g)

    def timed(fn):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    ours(), bare()  # warm-up
    times = {"ours": [], "bare": []}
    for r in range(a.rounds):
        pair = [("ours", ours), ("bare", bare)] if r % 2 == 0 else [("bare", bare), ("ours", ours)]
        for name, fn in pair:
            times[name].append(timed(fn))
    med = {k: statistics.median(v) for k, v in times.items()}
    tokens = a.n * a.length
    print(f"device {dev}, threads {torch.get_num_threads()}, 2x{a.hidden} LSTM, n {a.n} x {a.length} steps, "
          f"{a.rounds} rounds (median)")
    print(f"bare sampling loop : {tokens / med['bare']:>12,.0f} tokens/s")
    print(f"topicrnn sample()  : {tokens / med['ours']:>12,.0f} tokens/s")
    print(f"ratio ours/bare    : {med['bare'] / med['ours']:.3f}  (goal >= 0.8)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
