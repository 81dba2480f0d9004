"""Topic coherence with cleaner contexts: two topic models (fitted with the same TopicConfig and seed on two
ingests of the same equations that differ only in their contexts), each scored against BOTH ingests' train
contexts, so that neither model is judged only on the corpus it was fitted on.

For each (model, reference corpus) pair: c_npmi (window 10), c_v and u_mass of every topic's top 10 words,
averaged over topics. A top word that the reference corpus lacks (e.g. `graphics`, `width`) still counts:
it co-occurs with nothing there, which is what such a word is worth.

    .venv/bin/python bench/context_topics_bench.py BASELINE_INGEST BASELINE_TOPICS NEW_INGEST NEW_TOPICS
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.topics import TopicModel, select_training  # noqa: E402

MEASURES = (("c_npmi", 10), ("c_v", None), ("u_mass", None))


def reference_texts(ingest_dir: Path, model: TopicModel, max_texts: int = 20000) -> list[list[str]]:
    """The ingest's train contexts under the model's caps, tokenised by the model's own tokenizer."""
    with open(ingest_dir / "equations.jsonl", encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh if line.strip()]
    tokens = [model.tokenizer(r["context"]) for r in records]
    idx = select_training(records, tokens, model.config)
    texts = [tokens[i] for i in idx]
    if len(texts) > max_texts:
        rng = np.random.RandomState(model.config.seed)
        texts = [texts[i] for i in sorted(rng.choice(len(texts), max_texts, replace=False))]
    return texts


def coherence(model: TopicModel, texts: list[list[str]]) -> dict:
    from gensim.corpora import Dictionary
    from gensim.models.coherencemodel import CoherenceModel

    topics = [model.top_words(t, 10) for t in range(model.k)]
    seen = {w for t in texts for w in t}
    missing = sorted({w for topic in topics for w in topic if w not in seen})
    texts = texts + [[w] for w in missing]  # one lone occurrence each: no co-occurrence, so npmi near -1
    dictionary = Dictionary(texts)
    out = {"missing": missing}
    for measure, window in MEASURES:
        kwargs = {"texts": texts} if measure != "u_mass" else {"corpus": [dictionary.doc2bow(t) for t in texts]}
        cm = CoherenceModel(topics=topics, dictionary=dictionary, coherence=measure, window_size=window, topn=10,
                            processes=1, **kwargs)
        out[measure] = float(np.nanmean(cm.get_coherence_per_topic()))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("baseline_ingest", type=Path)
    ap.add_argument("baseline_topics", type=Path)
    ap.add_argument("new_ingest", type=Path)
    ap.add_argument("new_topics", type=Path)
    args = ap.parse_args()
    models = {"baseline": TopicModel.load(args.baseline_topics), "new": TopicModel.load(args.new_topics)}
    ingests = {"baseline": args.baseline_ingest, "new": args.new_ingest}
    print(f"{'model':<10}{'reference':<12}" + "".join(f"{m:>10}" for m, _ in MEASURES))
    scores = {}
    for name, model in models.items():
        for ref_name, ingest_dir in ingests.items():
            scores[name, ref_name] = coherence(model, reference_texts(ingest_dir, model))
            print(f"{name:<10}{ref_name:<12}" + "".join(f"{scores[name, ref_name][m]:>10.4f}" for m, _ in MEASURES)
                  + (f"   top words absent there: {' '.join(scores[name, ref_name]['missing'])}"
                     if scores[name, ref_name]["missing"] else ""))
    for ref_name in ingests:
        b, n = scores["baseline", ref_name], scores["new", ref_name]
        print(f"new - baseline on the {ref_name} reference: "
              + ", ".join(f"{m} {n[m] - b[m]:+.4f}" for m, _ in MEASURES))
    for name, model in models.items():
        words = sorted({w for t in range(model.k) for w in model.top_words(t, 10)})
        print(f"{name}: {len(words)} distinct top-10 words; e.g. topic 0: {' '.join(model.top_words(0, 10))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
