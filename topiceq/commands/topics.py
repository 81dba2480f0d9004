"""`topiceq topics fit|show|infer`: LDA topics over equation contexts."""
from __future__ import annotations

import argparse
import json
import sys

HELP = "fit LDA topics on an ingest dir, show the topic table, infer topics for words"
DESCRIPTION = (
    "fit: LDA (gensim) over the words around the equations of an ingest dir (train split, capped per paper and "
    "per source) -> TOPICDIR with the model, θ of every equation, the topic table and metrics. "
    "show: the topic table. infer: the top topics of some words, with percentages."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pipeline.topics import TopicConfig  # light: numpy and the dataclass; gensim is imported in run

    d = TopicConfig()
    sub = parser.add_subparsers(dest="topics_command", metavar="{fit,show,infer}", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter

    fit = sub.add_parser("fit", help="fit topics on an ingest dir", formatter_class=fmt)
    fit.add_argument("--data", required=True, help="ingest dir holding equations.jsonl")
    fit.add_argument("--out", required=True, help="TOPICDIR to write")
    fit.add_argument("--k", type=int, default=d.k, help="number of topics")
    fit.add_argument("--seed", type=int, default=d.seed)
    fit.add_argument("--passes", type=int, default=d.passes)
    fit.add_argument("--documents", choices=["contexts", "papers"], default=d.documents,
                     help="LDA documents: one per equation context, or one per paper (its contexts joined)")
    fit.add_argument("--max-per-paper", type=int, default=d.max_per_paper, help="0 = no cap")
    fit.add_argument("--max-per-source", type=int, default=d.max_per_source,
                     help="cap per book/collection (e.g. all Stacks Project chapters together); 0 = no cap")
    fit.add_argument("--no-below", type=int, default=d.no_below, help="drop words in fewer training contexts")
    fit.add_argument("--no-above", type=float, default=d.no_above, help="drop words in more than this fraction")
    fit.add_argument("--bigrams", action="store_true", help="join frequent word pairs (gensim Phrases)")
    fit.add_argument("--multicore", action="store_true", help="LdaMulticore (not reproducible)")
    fit.add_argument("--workers", type=int, default=None, help="LdaMulticore workers")
    fit.add_argument("--labels", default=None, help='TOML file of human labels: lines like 3 = "Quantum physics"')
    fit.add_argument("--no-metrics", action="store_true", help="skip coherence, perplexity and NMI")

    show = sub.add_parser("show", help="print the topic table", formatter_class=fmt)
    show.add_argument("--model", required=True, help="TOPICDIR")
    show.add_argument("-n", "--words", type=int, default=10, help="top words per topic")
    show.add_argument("--labels", default=None, help="TOML file of human labels to attach to the model first")
    show.add_argument("--json", action="store_true", help="the table as JSON")

    infer = sub.add_parser("infer", help="top topics of some words", formatter_class=fmt)
    infer.add_argument("--model", required=True, help="TOPICDIR")
    infer.add_argument("--json", action="store_true", help='{"topics": [{"id", "label", "weight"}, ...]}')
    infer.add_argument("--top", type=int, default=5, help="topics to print (--json prints all K)")
    infer.add_argument("words", nargs="+", metavar="WORDS")


def run(args: argparse.Namespace) -> int:
    return {"fit": _fit, "show": _show, "infer": _infer}[args.topics_command](args)


def _fit(args) -> int:
    from pipeline.topic_fit import fit_topics
    from pipeline.topics import TopicConfig

    config = TopicConfig(k=args.k, seed=args.seed, passes=args.passes, documents=args.documents,
                         max_per_paper=args.max_per_paper or None, max_per_source=args.max_per_source or None,
                         no_below=args.no_below, no_above=args.no_above, bigrams=args.bigrams,
                         multicore=args.multicore, workers=args.workers, metrics=not args.no_metrics)
    model = fit_topics(args.data, args.out, config, labels_file=args.labels, progress=True)
    m = model.metrics
    print(_table(model, 6))
    line = (f"{model.k} topics from {m['lda_documents']} documents ({m['train_contexts_used']} train contexts of "
            f"{m['equations']} equations), vocabulary {m['vocabulary']}; LDA fit {m['fit_seconds']:.1f} s, "
            f"total {m['total_seconds']:.1f} s")
    if "c_npmi" in m:
        nmi = m.get("nmi_area_heldout")
        line += (f"; coherence c_npmi {m['c_npmi']:.3f}, c_v {m['c_v']:.3f}; held-out perplexity "
                 f"{m['heldout_perplexity'] or float('nan'):.0f}; NMI(topic, area) held-out "
                 + (f"{nmi:.3f}" if nmi is not None else "n/a"))
    print(line)
    print(f"wrote {args.out}")
    return 0


def _areas(model, topic: int, min_share: float = 0.05) -> str:
    """"math 92% · physics 5%": the topic's mass per area (those with at least min_share)."""
    return " · ".join(f"{a} {100 * s:.0f}%" for a, s in model.areas(topic).items() if s >= min_share)


def _table(model, n: int) -> str:
    width = max(len(lab) for lab in model.labels)
    areas = [_areas(model, t) for t in range(model.k)]
    area_width = max(len(a) for a in areas)
    return "\n".join(f"{t:>3}  {model.labels[t]:<{width}}  " + (f"[{areas[t]:<{area_width}}]  " if area_width else "")
                     + " ".join(model.top_words(t, n)) for t in range(model.k))


def _show(args) -> int:
    from pipeline.topics import TopicModel, load_labels

    model = TopicModel.load(args.model)
    if args.labels:
        model.set_labels(load_labels(args.labels, model.k), args.labels)
    if args.json:
        print(json.dumps({"topics": [{"id": t, "label": model.labels[t], "areas": model.areas(t),
                                      "top_words": [{"word": w, "weight": p}
                                                    for w, p in model.top_word_weights(t, args.words)]}
                                     for t in range(model.k)]}, indent=1))
        return 0
    print(_table(model, args.words))
    m = model.metrics
    if "c_npmi" in m:
        print(f"{model.k} topics; coherence c_npmi {m['c_npmi']:.3f}, c_v {m['c_v']:.3f}")
    return 0


def _infer(args) -> int:
    from pipeline.topics import TopicModel

    model = TopicModel.load(args.model)
    text = " ".join(args.words)
    ignored = model.unknown_words(text)
    if ignored:
        print("note: ignored (stop words or not in the topic vocabulary): " + ", ".join(ignored), file=sys.stderr)
    theta = model.infer([text])[0]
    if args.json:
        print(json.dumps({"topics": model.weighted_topics(theta)}))
        return 0
    for item in model.weighted_topics(theta, args.top):
        print(f"{100 * item['weight']:5.1f}%  {item['id']:>3}  {item['label']}")
    return 0
