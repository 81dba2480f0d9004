"""`topiceq generate`: equations for the topics of some context words (or for one topic), compile-checked."""
from __future__ import annotations

import argparse
import json
import sys

from topiceq.arguments import add_checkpoint, add_decoding, add_device, add_topic, load_model_arg

HELP = "generate equations for context words or a topic, each with its compile verdict"
DESCRIPTION = (
    "Infer a topic mixture from --words (or take --topic ID|LABEL: θ = the mean θ of the training equations "
    "whose dominant topic it is), sample n equations from a topic-conditioned checkpoint with syntax-aware "
    "decoding, and compile-check each one with pdflatex. With --topic, the equations are the ones the "
    "`equations` flow writes for that topic with the same seed."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_checkpoint(parser)
    parser.add_argument("--topics", required=True, metavar="TOPICDIR", help="topic model folder")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--words", nargs="+", help="context words (the topic mixture is inferred from them)")
    add_topic(parser, group=which, topics_option=False)
    parser.add_argument("-n", type=int, default=5, help="number of equations")
    add_decoding(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--constrained", action=argparse.BooleanOptionalAction, default=True,
                        help="syntax-aware decoding (braces, environments, known control sequences only)")
    parser.add_argument("--length", type=int, default=300, help="maximum tokens per equation")
    parser.add_argument("--data", metavar="DIR", default=None,
                        help="ingest dir the model was trained on (for the topic prototypes and the known "
                             "control sequences when the checkpoint does not store them)")
    parser.add_argument("--no-check", dest="check", action="store_false", help="skip the compile check")
    add_device(parser)
    parser.add_argument("--json", action="store_true",
                        help='print {"topics": [{"id","label","weight"}], "equations": [{"equation","compiles","error"}]}')


def run(args: argparse.Namespace) -> int:
    from pipeline.topics import TopicModel
    from topicrnn.generation import generate

    if args.n < 1:
        raise ValueError("-n must be at least 1")
    topic_model = TopicModel.load(args.topics)
    words = " ".join(args.words) if args.words else None
    result = generate(load_model_arg(args), topic_model, words=words, topic=args.topic, n=args.n,
                      temperature=args.temperature, seed=args.seed, constrained=args.constrained,
                      max_len=args.length, theta_mode=args.theta, data_dir=args.data, check=args.check,
                      length_control=args.lengths)
    if args.json:
        print(json.dumps(result.to_json(), ensure_ascii=False))
        return 0
    print("topics: " + ", ".join(f"{t.label} ({t.id}) {t.weight * 100:.0f}%" for t in result.topics))
    for i, eq in enumerate(result.equations, 1):
        verdict = "-" if eq.compiles is None else ("compiles" if eq.compiles else f"fails: {eq.error}")
        print(f"{i:>3}. [{verdict}] {eq.equation}")
    checked = [e for e in result.equations if e.compiles is not None]
    if checked:
        ok = sum(e.compiles for e in checked)
        print(f"{ok}/{len(checked)} compile (T = {args.temperature}, "
              f"{'constrained' if args.constrained else 'unconstrained'}, {result.seconds:.1f} s)", file=sys.stderr)
    return 0
