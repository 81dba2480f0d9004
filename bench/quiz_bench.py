"""How hard is the quiz? A bag-of-tokens classifier telling real from generated equations on quiz pairs.

Pairs are made exactly as `topiceq quiz` makes them (test-split real equation + compiling generated equation of
the same topic, closest length within the ratio bound). Reported, all measured in this run:

* per-equation accuracy of a cross-validated bag-of-LaTeX-tokens logistic regression (folds grouped by pair,
  so the two members of a pair are never split), against chance (0.5: pairs are balanced);
* pairwise accuracy, the quiz's own task: in each held-out pair, the equation with the higher P(fake) is
  called fake; chance is 0.5;
* the same pairwise task answered by length alone ("the longer one is fake"), on the quiz's length-matched
  pairs and on pairs with a random real equation of the topic: length matching should bring it to ~0.5.

Lower accuracy is better for the model. Example:
    python bench/quiz_bench.py --checkpoint runs/eq/best.pt --data data/ingest-all --topics runs/topics \
        --pairs 300 --seed 0
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipeline.detector import detector_accuracy, latex_tokens, telltale_features  # noqa: E402


def pairwise_scores(pairs: list[tuple[str, str]], folds: int, seed: int) -> dict:
    """Cross-validated per-equation and pairwise accuracy of a bag-of-tokens logistic regression."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline

    texts = [t for real, fake in pairs for t in (real, fake)]
    labels = np.array([label for _ in pairs for label in (0, 1)])  # 1 = fake
    groups = np.repeat(np.arange(len(pairs)), 2)
    order = np.random.default_rng(seed).permutation(len(pairs))  # GroupKFold is deterministic: shuffle groups
    rank = np.empty_like(order)
    rank[order] = np.arange(len(pairs))
    groups = rank[groups]

    per_equation, pairwise = [], []
    for train, test in GroupKFold(n_splits=folds).split(texts, labels, groups):
        model = make_pipeline(
            CountVectorizer(tokenizer=latex_tokens, token_pattern=None, lowercase=False, ngram_range=(1, 2),
                            min_df=1),
            LogisticRegression(max_iter=2000, C=1.0))
        model.fit([texts[i] for i in train], labels[train])
        p_fake = model.predict_proba([texts[i] for i in test])[:, 1]
        per_equation.append(float(np.mean((p_fake > 0.5) == labels[test])))
        # test indices come in (real, fake) order per pair: GroupKFold keeps both members, in index order
        p = p_fake.reshape(-1, 2)
        pairwise.append(float(np.mean(p[:, 1] > p[:, 0]) + 0.5 * np.mean(p[:, 1] == p[:, 0])))
    return {"per_equation_accuracy": float(np.mean(per_equation)), "per_equation_std": float(np.std(per_equation)),
            "pairwise_accuracy": float(np.mean(pairwise)), "pairwise_std": float(np.std(pairwise)),
            "folds": folds}


def longer_is_fake(pairs: list[tuple[str, str]]) -> float:
    from pipeline.quiz import equation_length

    hits = [1.0 if equation_length(f) > equation_length(r) else 0.5 if equation_length(f) == equation_length(r)
            else 0.0 for r, f in pairs]
    return float(np.mean(hits)) if hits else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True, help="ingest folder the topics were fitted on")
    parser.add_argument("--topics", required=True)
    parser.add_argument("--pairs", type=int, default=300, help="quiz pairs to build (at most)")
    parser.add_argument("--candidates", type=float, default=2.0, help="generated equations per pair")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--max-length-ratio", type=float, default=1.3)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--save-fakes", help="write the generated equations (JSONL) for reruns")
    parser.add_argument("--fakes", help="read generated equations from a --save-fakes file instead of sampling")
    args = parser.parse_args(argv)

    from pipeline.quiz import FakeEquation, QuizConfig, build_quiz, choose_topics, quiz_reals
    from pipeline.topics import TopicModel
    from topicrnn.checkpoint import load_model
    from topicrnn.generation import quiz_fakes

    t0 = time.perf_counter()
    topic_model = TopicModel.load(args.topics)
    records, reals = quiz_reals(args.data, topic_model.theta_by_id())
    topics = choose_topics(sorted({r["topic"] for r in reals}), args.pairs, args.seed)
    per_topic = max(1, math.ceil(args.pairs * args.candidates / len(topics)))
    if args.fakes:
        fakes = [FakeEquation(**json.loads(line)) for line in open(args.fakes, encoding="utf-8")]
        topics = sorted({f.topic for f in fakes})
    else:
        fakes = quiz_fakes(load_model(args.checkpoint, device=args.device), topic_model, topics, per_topic,
                           data_dir=args.data, seed=args.seed, temperature=args.temperature)
    if args.save_fakes:
        with open(args.save_fakes, "w", encoding="utf-8") as fh:
            for f in fakes:
                fh.write(json.dumps({"equation": f.equation, "topic": f.topic, "compiles": f.compiles,
                                     "error": f.error}) + "\n")
    quiz = build_quiz(reals, fakes, args.pairs, args.seed, config=QuizConfig(max_length_ratio=args.max_length_ratio),
                      known_equations=(r["equation"] for r in records))
    pairs = [(q.options[q.real], q.options[q.fake]) for q in quiz.questions]
    generation_s = time.perf_counter() - t0

    # The same fakes with a random real equation of their topic: what length would give away unmatched.
    rng = random.Random(args.seed)
    reals_by_topic: dict[int, list[str]] = {}
    for r in reals:
        reals_by_topic.setdefault(r["topic"], []).append(r["equation"])
    unmatched = [(rng.choice(reals_by_topic[q.topic]), q.options[q.fake]) for q in quiz.questions]

    folds = max(2, min(args.folds, len(pairs)))
    scores = pairwise_scores(pairs, folds, args.seed)
    result = {
        "checkpoint": str(args.checkpoint), "pairs": len(pairs), "generated": len(fakes),
        "generated_compiling": sum(f.compiles for f in fakes), "topics": len(topics),
        **scores, "chance": 0.5,
        "pairwise_vs_chance": scores["pairwise_accuracy"] / 0.5,
        "longer_is_fake_matched": longer_is_fake(pairs),
        "longer_is_fake_unmatched": longer_is_fake(unmatched),
        "generation_seconds": round(generation_s, 1),
        "telltale_tokens": telltale_features([r for r, _ in pairs], [f for _, f in pairs]) if len(pairs) >= 2 else {},
        "char_ngram_accuracy": detector_accuracy([r for r, _ in pairs], [f for _, f in pairs], "char").accuracy
        if len(pairs) >= 2 else None,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{len(pairs)} quiz pairs over {len(topics)} topics "
              f"({result['generated_compiling']}/{len(fakes)} generated equations compiled)")
        print(f"bag-of-tokens, per equation : {scores['per_equation_accuracy']:.3f} ± {scores['per_equation_std']:.3f}"
              f"  (chance 0.500, {folds}-fold CV grouped by pair)")
        print(f"bag-of-tokens, which of two : {scores['pairwise_accuracy']:.3f} ± {scores['pairwise_std']:.3f}"
              f"  = {result['pairwise_vs_chance']:.2f}x chance")
        if result["char_ngram_accuracy"] is not None:
            print(f"char n-gram detector, per equation (pipeline.detector, stratified CV): "
                  f"{result['char_ngram_accuracy']:.3f}")
        print(f"'longer is fake', quiz pairs: {result['longer_is_fake_matched']:.3f}; "
              f"with a random real of the topic: {result['longer_is_fake_unmatched']:.3f}")
        if result["telltale_tokens"]:
            print(f"tokens that say fake: {' | '.join(result['telltale_tokens']['fake'])}")
            print(f"tokens that say real: {' | '.join(result['telltale_tokens']['real'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
