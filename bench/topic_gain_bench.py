"""Where the topic vector helps inside an equation (issue 6): bits per token by token position, for a plain
model and a topic model scored on the same test equations (each with the θ of its own context).

    .venv/bin/python bench/topic_gain_bench.py --data data/eq-ingest --topics data/eq-topics \\
        --plain data/eq6/none-4000 --topic data/eq6/input-4000

Prints a markdown table: per position bucket, both models' bits/token, the ratio topic/plain as a gain, and
the bucket's share of the whole gain. A gain spread evenly over all positions means the topic model is ahead
in training; a gain at the first tokens is information (θ says how an equation starts) that the prefix
supplies later on. Both models must share a tokenizer (they do when trained on the same ingest dir).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BUCKETS = [(1, 1), (2, 5), (6, 10), (11, 20), (21, 40), (41, 80), (81, None)]


def nats_by_position(lm, records, thetas, buckets=BUCKETS) -> tuple[np.ndarray, np.ndarray]:
    """Summed negative log-probability (nats) and token count per position bucket (position 1 = first token
    after <bos>; the end counts as a token)."""
    from topicrnn.evaluation import encode_equation
    from topicrnn.scoring import token_logprobs

    sums, counts = np.zeros(len(buckets)), np.zeros(len(buckets), dtype=np.int64)
    seqs = [encode_equation(lm.tokenizer, rec["equation"]) for rec in records]
    for lp in token_logprobs(lm.model, seqs, thetas if lm.conditioned else None, pad_id=lm.tokenizer.pad_id):
        for b, (lo, hi) in enumerate(buckets):
            seg = lp[lo - 1:hi]
            sums[b] -= seg.sum()
            counts[b] += len(seg)
    return sums, counts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="ingest dir (equations.jsonl)")
    ap.add_argument("--topics", required=True, help="topic model folder the topic model was trained with")
    ap.add_argument("--plain", required=True, help="checkpoint of the unconditioned model (the baseline)")
    ap.add_argument("--topic", required=True, help="checkpoint of the topic-conditioned model")
    ap.add_argument("--split", default="test", choices=["train", "val", "test"])
    ap.add_argument("--max-equations", type=int, default=None, help="a seeded subset of the split")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = ap.parse_args(argv)

    import torch

    from pipeline.ingest import read_records
    from pipeline.topics import TopicModel
    from topicrnn.checkpoint import load_model
    from topicrnn.conditioning import thetas_for

    torch.set_num_threads(args.threads)
    records = list(read_records(args.data, args.split))
    if args.max_equations and len(records) > args.max_equations:
        keep = sorted(np.random.default_rng(args.seed).choice(len(records), args.max_equations, replace=False))
        records = [records[i] for i in keep]
    plain, topic = load_model(args.plain), load_model(args.topic)
    if plain.conditioned or not topic.conditioned:
        raise SystemExit("--plain must be an unconditioned checkpoint and --topic a topic-conditioned one")
    if list(plain.tokenizer.tokens) != list(topic.tokenizer.tokens):
        raise SystemExit("the two checkpoints have different tokenizers: train both on the same ingest dir")
    thetas = thetas_for(records, TopicModel.load(args.topics)).astype(np.float32)
    base, base_n = nats_by_position(plain, records, thetas)
    cond, _ = nats_by_position(topic, records, thetas)
    total_gain = float((base - cond).sum())
    print(f"{len(records):,} {args.split} equations; plain {args.plain}, topic {args.topic}\n")
    print("| token position | tokens | plain bits/token | topic bits/token | gain (topic/plain - 1) | share of the gain |")
    print("|---|---|---|---|---|---|")
    for b, (lo, hi) in enumerate(BUCKETS):
        n = max(int(base_n[b]), 1)
        p_bits, c_bits = base[b] / n / np.log(2), cond[b] / n / np.log(2)
        label = str(lo) if lo == hi else (f"{lo}+" if hi is None else f"{lo}–{hi}")
        share = (base[b] - cond[b]) / total_gain * 100 if total_gain else float("nan")
        print(f"| {label} | {int(base_n[b]):,} | {p_bits:.3f} | {c_bits:.3f} | {(c_bits / p_bits - 1) * 100:+.1f}% "
              f"| {share:.0f}% |")
    all_p, all_c = base.sum() / base_n.sum() / np.log(2), cond.sum() / base_n.sum() / np.log(2)
    print(f"| all | {int(base_n.sum()):,} | {all_p:.3f} | {all_c:.3f} | {(all_c / all_p - 1) * 100:+.1f}% | 100% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
