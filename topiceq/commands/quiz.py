"""`topiceq quiz`: a "which is fake?" quiz from real test-split equations and the model's equations."""
from __future__ import annotations

import argparse
import json
import math

from topiceq.arguments import add_checkpoint, add_decoding, add_device, load_model_arg

HELP = "export a real-vs-fake equation quiz (quiz.json, answers.json, quiz.html, quiz.pdf)"
DESCRIPTION = (
    "Each question pairs one real equation from the test split with one equation generated for the same topic "
    "that compiles, matched by length; questions are labelled by topic and shuffled with --seed. "
    "Writes QUIZDIR/quiz.json (no answers), answers.json, quiz.html (self-contained, offline) and quiz.pdf "
    "(handout, answer key on the last page).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_checkpoint(parser)
    parser.add_argument("--data", required=True, metavar="INGESTDIR", help="ingest folder (equations.jsonl) the topics were fitted on")
    parser.add_argument("--topics", required=True, metavar="TOPICDIR", help="topic model folder (topiceq topics fit --out)")
    parser.add_argument("-n", type=int, default=10, help="number of questions")
    parser.add_argument("--out", required=True, metavar="QUIZDIR", help="folder for the quiz files")
    parser.add_argument("--seed", type=int, default=0, help="seed for generation, pairing and order")
    add_decoding(parser)
    parser.add_argument("--candidates", type=float, default=3.0,
                        help="equations generated per question (some do not compile or find no real match)")
    parser.add_argument("--max-length-ratio", type=float, default=1.3,
                        help="longer/shorter equation within a question, in characters")
    parser.add_argument("--constrained", action=argparse.BooleanOptionalAction, default=True,
                        help="syntax-aware decoding")
    add_device(parser, help_for="generation")
    parser.add_argument("--title", default="Which is fake?", help="title of the page and the handout")
    parser.add_argument("--json", action="store_true", help="print a JSON summary instead of text")


def run(args: argparse.Namespace) -> int:
    from pipeline.quiz import QuizConfig, choose_topics, quiz_reals
    from pipeline.quiz_export import assemble_quiz
    from pipeline.topics import ThetaTable
    from topicrnn.conditioning import check_topic_dims, topic_labels
    from topicrnn.generation import quiz_fakes

    if args.n < 1:
        raise ValueError(f"-n must be at least 1, got {args.n}")
    topic_model = ThetaTable(args.topics)  # θ, labels and prototypes: no LDA (gensim) needed
    records, reals = quiz_reals(args.data, topic_model.theta_by_id())
    lm = load_model_arg(args)
    check_topic_dims(lm, topic_model)
    topics = choose_topics((r["topic"] for r in reals), args.n, args.seed)
    fakes = quiz_fakes(lm, topic_model, topics, max(1, math.ceil(args.n * args.candidates / len(topics))),
                       data_dir=args.data, seed=args.seed, temperature=args.temperature,
                       constrained=args.constrained, length_control=args.lengths)
    quiz, paths, summary = assemble_quiz(
        reals, fakes, args.n, args.seed, args.out, topic_labels=topic_labels(topic_model),
        config=QuizConfig(max_length_ratio=args.max_length_ratio, title=args.title),
        known_equations=(r["equation"] for r in records))
    summary.update(generated=len(fakes), generated_compiling=sum(f.compiles for f in fakes))
    if args.json:
        print(json.dumps(summary))
    else:
        rate = summary["generated_compiling"] / max(1, summary["generated"])
        topics_text = ", ".join(f"{label} {count}" for label, count in summary["topics"].items())
        print(f"quiz: {len(quiz.questions)} of {args.n} questions ({topics_text}); "
              f"{summary['generated_compiling']}/{summary['generated']} generated equations compiled "
              f"({rate:.0%}); wrote {', '.join(paths)} to {args.out}")
        hard = summary.get("detector")
        if hard:
            print(f"how hard: a character n-gram detector tells {hard['equations']} generated equations from "
                  f"real ones of the same topic and length {hard['char_ngram_accuracy']:.0%} of the time, a bag "
                  f"of LaTeX tokens {hard['tokens_accuracy']:.0%} (50% = chance"
                  f"{'; each judged by a detector that never saw its paper' if hard['papers_held_out'] else ''})")
    return 0
