"""Why the context encoder has the shape it has: the topic model alone, with parts of its design taken out.

The neural topic model of topicrnn.context_encoder (bag of context words -> logistic-normal θ -> words) is
trained alone on the training contexts of a bundle (`conditioning_bench.py pack`), for each ablation and KL
weight, with the same seed, batches and steps; then θ of held-out contexts (test split) is inspected:
  * theta std — spread of θ across contexts, mean over topics (0 = every context gets the same θ: collapse);
  * max theta — mean of each context's largest topic share (1/K = uniform, 1 = one topic);
  * topics used — distinct dominant topics over the held-out contexts;
  * recon — reconstruction nats per context word (the unigram model of the same words in the last column
    of the header: what a θ that says nothing gives).
Ablations: `learned-bias` (decoder with a learned bias instead of the fixed log-frequency background, no
normalisation of the posterior mean), `background` (background, no normalisation), `background+norm` (the
shipped design: background + ProdLDA's batch normalisation of the posterior mean).

    python bench/context_encoder_bench.py --bundle data/cond-bundle --steps 600
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_encoder(ablation: str, vocab: int, topics: int, hidden: int, train_ids: np.ndarray):
    import torch
    import torch.nn.functional as F

    from topicrnn.context_encoder import ContextEncoder

    class Ablated(ContextEncoder):
        def _head(self, pooled, batch_stats):
            if ablation == "background+norm":
                return super()._head(pooled, batch_stats)
            h = self.body(pooled + self.in_bias)
            return self.mu(h).float(), self.logvar(h).float().clamp(-8.0, 8.0)

    enc = Ablated(vocab, topics, hidden)
    if ablation == "learned-bias":
        enc.decoder = torch.nn.Linear(topics, vocab)  # the background stays 0: the bias learns frequencies
    else:
        enc.set_background(train_ids)
    return enc, F


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default=str(REPO / "data" / "cond-bundle"))
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--topics", type=int, default=50)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--kl-weights", type=float, nargs="+", default=[1.0, 0.1, 0.01])
    p.add_argument("--ablations", nargs="+", default=["learned-bias", "background", "background+norm"])
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import torch

    from pipeline.ingest import read_records
    from topicrnn.data import pad_contexts
    from topicrnn.presets import apply_overrides, get_preset
    from topicrnn.train import prepare_data

    torch.set_num_threads(1)
    cfg = apply_overrides(get_preset("eq-ctx-cpu"), []).train
    data = prepare_data(cfg, Path(args.bundle) / "ingest", None, use_topics=False, use_context=True)
    vocab = data.context_vocab.size
    counts = np.bincount(data.train.ctx_flat, minlength=vocab)[1:]
    q = counts / counts.sum()
    unigram = float(-(q * np.log(q)).sum())
    held = pad_contexts([data.context_vocab.encode(r.get("context", ""))
                         for r in read_records(Path(args.bundle) / "ingest", "test")])
    print(f"{args.steps} steps, batch {cfg.batch_size}, K {args.topics}, hidden {args.hidden}, context words "
          f"{vocab - 1}, {len(held)} held-out contexts; unigram entropy {unigram:.3f} nats/word\n")
    print("| ablation | KL weight | theta std | max theta | topics used | recon nats/word (last 50 steps) |")
    print("|---|---|---|---|---|---|")
    for ablation in args.ablations:
        for beta in args.kl_weights:
            torch.manual_seed(args.seed)
            enc, F = make_encoder(ablation, vocab, args.topics, args.hidden, data.train.ctx_flat)
            opt = torch.optim.Adam(enc.parameters(), lr=args.lr)
            recons, step, epoch = [], 0, 0
            while step < args.steps:
                for b in data.train.epoch_batches(epoch, args.seed):
                    theta, loss = enc.regularised_theta(b.context, keep=cfg.context_keep, kl_weight=beta,
                                                        kl_warmup=cfg.kl_warmup_steps)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    with torch.no_grad():  # the reconstruction alone, from the posterior mean
                        mu, _ = enc.encode(b.context)
                        recons.append(float(enc.topic_model_loss(b.context, mu, mu, torch.zeros_like(mu), 0.0)))
                    step += 1
                    if step >= args.steps:
                        break
                epoch += 1
            enc.eval()
            with torch.no_grad():
                t = enc.theta(held)
            print(f"| {ablation} | {beta:g} | {float(t.std(0).mean()):.4f} | {float(t.max(1).values.mean()):.3f} | "
                  f"{len(set(t.argmax(1).tolist()))} | {np.mean(recons[-50:]):.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
