"""`topiceq evaluate`: test-split bits per character (and per token) for every checkpoint, as one table."""
from __future__ import annotations

import argparse
import json

from topiceq.arguments import add_checkpoint, add_device

HELP = "bits per character / per token of the test split for every checkpoint"
DESCRIPTION = (
    "Score the held-out equations (papers never seen in training) under every checkpoint, each equation with "
    "the θ of its own context; the first unconditioned model is the baseline. Optional: equation→topic "
    "inference accuracy, topic awareness of generation and symbol–word alignment for the first topic model."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="DIR", help="ingest dir (equations.jsonl)")
    parser.add_argument("--topics", required=True, metavar="TOPICDIR", help="topic model folder")
    add_checkpoint(parser, many=True)
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--max-equations", type=int, default=None, help="score a seeded subset of the split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--by", choices=["area", "source"], default=None,
                        help="also: the table per group of equations (coarse area, or source: a book, a paper)")
    parser.add_argument("--inference", action="store_true",
                        help="also: equation→topic accuracy vs chance and a bag-of-tokens classifier")
    parser.add_argument("--awareness", type=int, default=0, metavar="N",
                        help="also: generate N equations per topic and classify them back")
    parser.add_argument("--alignment", action="store_true",
                        help="also: per topic, LaTeX tokens whose probability rises most (lift over the baseline)")
    add_device(parser)
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")


def run(args: argparse.Namespace) -> int:
    from pipeline.topics import TopicModel
    from topicrnn.checkpoint import load_model
    from topicrnn.evaluation import evaluate
    from topicrnn.topic_probes import (alignment_markdown, infer_equation_topics, symbol_word_alignment,
                                       topic_awareness)
    from topicrnn.device import resolve_device

    topic_model = TopicModel.load(args.topics)
    device = resolve_device(args.device)
    models = [load_model(c, device=device) for c in args.checkpoint]
    table = evaluate(args.data, topic_model, models, split=args.split, max_equations=args.max_equations,
                     seed=args.seed, by=args.by, progress=True)
    out: dict = {"table": table.to_json()}
    text = [table.to_markdown()]
    conditioned = next((m for m in models if m.conditioned), None)
    baseline = next((m for m in models if not m.conditioned), None)
    if (args.inference or args.awareness or args.alignment) and conditioned is None:
        raise ValueError("--inference/--awareness/--alignment need a topic-conditioned checkpoint")
    if args.inference:
        rep = infer_equation_topics(conditioned, topic_model, args.data, seed=args.seed)
        out["inference"] = rep.__dict__
        text.append(rep.to_markdown())
    if args.awareness:
        aw = topic_awareness(conditioned, topic_model, per_topic=args.awareness, seed=args.seed, data_dir=args.data)
        out["awareness"] = aw.__dict__
        text.append(aw.to_markdown())
    if args.alignment:
        base = baseline if baseline is not None and list(baseline.tokenizer.tokens) == list(conditioned.tokenizer.tokens) else None
        rows = symbol_word_alignment(conditioned, topic_model, args.data, baseline=base, seed=args.seed)
        out["alignment"] = [r.__dict__ for r in rows]
        text.append(alignment_markdown(rows))
    if args.json:
        print(json.dumps(out, ensure_ascii=False))
    else:
        print("\n\n".join(text))
    return 0
