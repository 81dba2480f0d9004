"""Our LSTM training step vs a bare nn.Embedding + nn.LSTM + nn.Linear step of the same shape, one process.

Both: 2 x 512 LSTM, embedding 128, vocab 65, batch 32 x 64 tokens, AdamW, grad clip 1.0, state carried
(truncated BPTT), no dropout. Ours = topicrnn.train.train_step on a RecurrentLM (the code the training loop
runs). Blocks of steps alternate between the two so that load on a shared machine hits both alike.
Prints tokens/s of each and the ratio ours / bare (goal >= 0.9).
    python bench/train_bench.py [--device cpu|cuda] [--batch 32] [--seq 64] [--rounds 5] [--steps 5]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import nn

from topicrnn.data import Batch
from topicrnn.device import resolve_device
from topicrnn.models import ModelConfig, RecurrentLM
from topicrnn.train import TrainConfig, make_optimizer, train_step


class Bare(nn.Module):
    def __init__(self, v, e, h, layers):
        super().__init__()
        self.emb, self.lstm, self.out = nn.Embedding(v, e), nn.LSTM(e, h, layers, batch_first=True), nn.Linear(h, v)

    def forward(self, x, state):
        y, state = self.lstm(self.emb(x), state)
        return self.out(y), state


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5, help="steps per timed block")
    ap.add_argument("--bf16", action="store_true", help="autocast bf16 on CUDA (both sides)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = resolve_device(a.device)
    V, E = 65, 128
    torch.manual_seed(0)
    cfg = TrainConfig(lr=2e-3, grad_clip=1.0, bf16=a.bf16)
    ours = RecurrentLM(ModelConfig(cell="lstm", layers=a.layers, hidden=a.hidden, embedding=E, dropout=0.0,
                                   vocab_size=V)).to(dev)
    ours_opt = make_optimizer(ours, cfg, dev)
    bare = Bare(V, E, a.hidden, a.layers).to(dev)
    bare_opt = torch.optim.AdamW(bare.parameters(), lr=2e-3, fused=dev.type == "cuda")
    x = torch.randint(0, V, (a.batch, a.seq), device=dev)
    y = torch.randint(0, V, (a.batch, a.seq), device=dev)
    batch = Batch(x, y, None, None, False, x.numel(), x.numel())
    amp = dict(device_type=dev.type, dtype=torch.bfloat16, enabled=a.bf16 and dev.type == "cuda")
    state = {"ours": None, "bare": None}

    def step_ours():
        _, state["ours"] = train_step(ours, ours_opt, batch, state["ours"], cfg, dev, 2e-3)

    def step_bare():
        with torch.autocast(**amp):
            logits, st = bare(x, state["bare"])
            loss = nn.functional.cross_entropy(logits.float().reshape(-1, V), y.reshape(-1))
        bare_opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(bare.parameters(), 1.0)
        bare_opt.step()
        state["bare"] = tuple(s.detach() for s in st)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def block(fn):
        sync()
        t = time.perf_counter()
        for _ in range(a.steps):
            fn()
        sync()
        return (time.perf_counter() - t) / a.steps

    for fn in (step_ours, step_bare):  # warm-up
        block(fn)
    times = {"ours": [], "bare": []}
    for r in range(a.rounds):
        order = [("ours", step_ours), ("bare", step_bare)] if r % 2 == 0 else [("bare", step_bare), ("ours", step_ours)]
        for name, fn in order:
            times[name].append(block(fn))
    tok = a.batch * a.seq
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"device {dev}, threads {torch.get_num_threads()}, {a.layers}x{a.hidden} LSTM, batch {a.batch} x {a.seq}, "
          f"bf16 {amp['enabled']}, {a.rounds} rounds x {a.steps} steps (median step)")
    print(f"bare nn.LSTM step : {tok / med['bare']:>12,.0f} tokens/s  ({med['bare'] * 1e3:.1f} ms/step)")
    print(f"ours train_step   : {tok / med['ours']:>12,.0f} tokens/s  ({med['ours'] * 1e3:.1f} ms/step)")
    print(f"ratio ours/bare   : {med['bare'] / med['ours']:.3f}  (goal >= 0.9)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
