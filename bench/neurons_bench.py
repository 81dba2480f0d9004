"""Neuron search (issue 18): each feature's best neuron in a trained model vs the same network untrained.

The untrained network (same shape, seeded random weights) is the control: its units see the characters but
have learned nothing, so what it reaches (e.g. "inside a C comment" from the `*` characters alone) is what a
feature gives away through the input; the trained model's margin over it is what training put in the state.
Both are recorded on the same text through `model.step` (topicrnn.neurons.record). Prints a Markdown table.

    .venv/bin/python bench/neurons_bench.py --checkpoint data/ckpt/c --text ../shared/data/text/linux-like-c.txt \\
        --start 1750000 --chars 20000
    .venv/bin/python bench/neurons_bench.py --checkpoint data/ckpt/eq --text data/ingest/equations.jsonl --split test
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from topicrnn.checkpoint import load_model  # noqa: E402
from topicrnn.models import RecurrentLM  # noqa: E402
from topicrnn.neuron_pages import feature_extent  # noqa: E402
from topicrnn.neurons import best_per_feature, record, text_segments  # noqa: E402
from topiceq.commands.neurons import excerpt, read_text  # noqa: E402
from topiceq.commands.sample import topic_theta  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--text", required=True, help="text file, or a .jsonl of records (--split)")
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--chars", type=int, default=20000)
    p.add_argument("--split", default=None)
    p.add_argument("--seed", type=int, default=0, help="seed of the untrained control's weights")
    p.add_argument("--json-out", help="also write the figures as JSON here")
    args = p.parse_args(argv)

    lm = load_model(args.checkpoint)
    model, tokenizer, meta = lm.model, lm.tokenizer, lm.metadata
    records = meta.get("train_config", {}).get("data_kind") == "records"
    text = excerpt(read_text(args.text, "equation", args.split), args.start, args.chars, records)
    theta = topic_theta(model.config.topic_dim, None)  # uniform θ for a topic-conditioned model
    torch.manual_seed(args.seed)
    control = RecurrentLM(model.config).eval()

    rows, t0 = {}, time.perf_counter()
    for name, net in (("trained", model), ("untrained", control)):
        rec = record(net, tokenizer, text_segments(text, records), text=text, theta=theta)
        rows[name] = best_per_feature(rec)
    seconds = time.perf_counter() - t0
    cfg = model.config
    print(f"{Path(args.checkpoint).name}: {cfg.cell} {cfg.layers} x {cfg.hidden}, {len(rec):,} tokens of "
          f"{Path(args.text).name} (from character {args.start:,}), {seconds:.1f} s for both recordings\n")
    print("| feature | in this text | trained: best neuron | r | untrained control: best neuron | r | margin |r| |")
    print("|---|---|---|---|---|---|---|")
    out = {}
    for feature, best in rows["trained"].items():
        ctrl = rows["untrained"][feature]
        if best is None:
            continue
        margin = abs(best.r) - abs(ctrl.r)
        print(f"| {feature} | {feature_extent(rec, feature)} | {best.unit} | {best.r:+.3f} | {ctrl.unit} | {ctrl.r:+.3f} | {margin:+.3f} |")
        out[feature] = {"extent": feature_extent(rec, feature), "trained": [best.unit, best.r], "untrained": [ctrl.unit, ctrl.r]}
    absent = [f for f, b in rows["trained"].items() if b is None]
    if absent:
        print(f"\nnot in this text: {', '.join(absent)}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
