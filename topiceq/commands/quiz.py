"""`topiceq quiz`: a "which is fake?" quiz from real test-split equations and the model's equations."""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path

HELP = "export a real-vs-fake equation quiz (quiz.json, answers.json, quiz.html, quiz.pdf)"
DESCRIPTION = (
    "Each question pairs one real equation from the test split with one equation generated for the same topic "
    "that compiles, matched by length; questions are labelled by topic and shuffled with --seed. "
    "Writes QUIZDIR/quiz.json (no answers), answers.json, quiz.html (self-contained, offline) and quiz.pdf "
    "(handout, answer key on the last page).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="equation model: a checkpoint file or a folder "
                        "holding best.pt")
    parser.add_argument("--data", required=True, help="ingest folder (equations.jsonl) the topics were fitted on")
    parser.add_argument("--topics", required=True, help="topic model folder (topiceq topics fit --out)")
    parser.add_argument("-n", type=int, default=10, help="number of questions")
    parser.add_argument("--out", required=True, help="folder for the quiz files")
    parser.add_argument("--seed", type=int, default=0, help="seed for generation, pairing and order")
    parser.add_argument("--temperature", type=float, default=0.8, help="sampling temperature")
    parser.add_argument("--candidates", type=float, default=3.0,
                        help="equations generated per question (some do not compile or find no real match)")
    parser.add_argument("--max-length-ratio", type=float, default=1.5,
                        help="longer/shorter equation within a question, in characters")
    parser.add_argument("--constrained", action=argparse.BooleanOptionalAction, default=True,
                        help="syntax-aware decoding")
    parser.add_argument("--device", default="cpu", help="torch device for generation")
    parser.add_argument("--title", default="Which is fake?", help="title of the page and the handout")
    parser.add_argument("--json", action="store_true", help="print a JSON summary instead of text")


def choose_topics(available: list[int], n: int, seed: int) -> list[int]:
    """The topics a quiz of n questions draws from: all of them, or a seeded sample of n when fewer fit."""
    topics = sorted(available)
    if len(topics) <= n:
        return topics
    return sorted(random.Random(seed).sample(topics, n))


def generate_fakes(lm, topic_model, topics: list[int], per_topic: int, *, data_dir: Path, seed: int,
                   temperature: float, constrained: bool) -> list:
    """`per_topic` equations for each topic (θ = the topic's prototype), each with its compile verdict."""
    from tqdm import tqdm

    from pipeline.compile_check import check
    from pipeline.quiz import FakeEquation
    from topicrnn import equation_model as em

    prototypes = em.topic_prototypes(topic_model, em.read_split(data_dir, "train"))
    controls = em.allowed_control_sequences(lm, data_dir) if constrained else None
    generated: list[tuple[int, str]] = []
    for i, topic in enumerate(tqdm(topics, desc="generating", unit="topic", file=sys.stderr)):
        theta = em.topic_theta(topic_model, topic, prototypes=prototypes)
        equations = em.sample_equations(lm, theta, n=per_topic, temperature=temperature, seed=seed + 7919 * i,
                                        control_sequences=controls, constrained=constrained)
        generated.extend((topic, eq) for eq in equations)
    verdicts = check([eq for _, eq in generated], progress=True)
    return [FakeEquation(equation=eq, topic=topic, compiles=bool(v.ok), error=v.error)
            for (topic, eq), v in zip(generated, verdicts)]


def run(args: argparse.Namespace) -> int:
    from pipeline.ingest import read_records
    from pipeline.quiz import QuizConfig, attach_dominant_topics, build_quiz, export_quiz, quiz_summary
    from topicrnn import equation_model as em

    if args.n < 1:
        raise ValueError(f"-n must be at least 1, got {args.n}")
    data_dir = Path(args.data)
    if not (data_dir / "equations.jsonl").is_file():
        raise FileNotFoundError(f"{data_dir}/equations.jsonl is missing: run `topiceq ingest SOURCE --out "
                                f"{data_dir}` first")
    topic_model = em.load_topic_model(args.topics)
    labels = em.topic_labels(topic_model)
    reals = attach_dominant_topics(read_records(data_dir), topic_model.theta_by_id(), split="test")
    if not reals:
        raise ValueError(f"no test-split equation of {data_dir} has a topic in {args.topics}: pass the --data "
                         "folder the topic model was fitted on")

    lm = em.load_model(args.checkpoint, device=args.device)
    if lm.conditioned and lm.n_topics != int(topic_model.k):
        raise ValueError(f"{lm.path} was trained with {lm.n_topics} topics but {args.topics} has "
                         f"{topic_model.k}: pass the --topics folder the model was trained with")
    topics = choose_topics(sorted({r["topic"] for r in reals}), args.n, args.seed)
    per_topic = max(1, math.ceil(args.n * args.candidates / len(topics)))
    fakes = generate_fakes(lm, topic_model, topics, per_topic, data_dir=data_dir, seed=args.seed,
                           temperature=args.temperature, constrained=args.constrained)

    config = QuizConfig(max_length_ratio=args.max_length_ratio, title=args.title)
    quiz = build_quiz(reals, fakes, args.n, args.seed, topic_labels=labels, config=config)
    paths = export_quiz(quiz, args.out, config, progress=True)

    summary = quiz_summary(quiz)
    summary["generated"] = len(fakes)
    summary["generated_compiling"] = sum(f.compiles for f in fakes)
    summary["files"] = {name: str(path) for name, path in paths.items()}
    if args.json:
        print(json.dumps(summary))
    else:
        rate = summary["generated_compiling"] / max(1, len(fakes))
        topics_text = ", ".join(f"{label} {count}" for label, count in summary["topics"].items())
        print(f"quiz: {len(quiz.questions)} of {args.n} questions ({topics_text}); "
              f"{summary['generated_compiling']}/{len(fakes)} generated equations compiled ({rate:.0%}); "
              f"wrote {', '.join(paths)} to {args.out}")
    return 0
