"""Topics benchmark: fit time, θ inference rate, and (with --sweep) coherence / perplexity / NMI per K.

    python bench/topics_bench.py [--data data/ingest-all] [--k 20]
        fit with the default TopicConfig (goal <= 60 s); infer θ for every context of the data dir with
        TopicModel.infer_many (goal >= 1,000 contexts/s) against gensim's own per-document
        get_document_topics(minimum_probability=0) on the same bags of words, measured in the same run.
    python bench/topics_bench.py --sweep 10,20,30,50 --documents contexts,papers [--json out.json]
        one fit per (documents, K) with metrics: c_npmi (window 10, top 10), c_v, held-out perplexity,
        NMI(dominant topic, area) on held-out / all equations, fit seconds.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.topic_fit import fit_topics  # noqa: E402
from pipeline.topics import TopicConfig, read_equations  # noqa: E402


def default_data() -> Path:
    for name in ("ingest-all", "ingest-sample"):
        if (REPO / "data" / name / "equations.jsonl").is_file():
            return REPO / "data" / name
    raise SystemExit("no ingest dir: pass --data DIR (run `topiceq ingest ../shared/data/arxiv --out DIR`)")


def bench_fit_and_infer(data: Path, config: TopicConfig, max_baseline: int) -> None:
    from gensim.models import LdaModel

    with tempfile.TemporaryDirectory() as tmp:
        t0, c0 = time.perf_counter(), time.process_time()
        model = fit_topics(data, Path(tmp) / "m", config, progress=False)
        total, total_cpu = time.perf_counter() - t0, time.process_time() - c0
        m = model.metrics
        print(f"data {data}: {m['equations']} equations, {m['train_contexts_used']} train contexts used "
              f"({m['lda_documents']} LDA documents), vocabulary {m['vocabulary']}, K={config.k}, "
              f"documents={config.documents}, passes={config.passes}")
        print(f"fit_topics total {total:.1f} s wall, {total_cpu:.1f} s CPU (goal <= 60 s): LDA {m['fit_seconds']:.1f} s "
              f"({m['fit_cpu_seconds']:.1f} s CPU), "
              f"θ for all {m['equations']} equations {m['theta_seconds']:.1f} s, metrics "
              f"{m.get('metrics_seconds', 0):.1f} s")
        if "c_npmi" in m:
            print(f"  c_npmi {m['c_npmi']:.4f}  c_v {m['c_v']:.4f}  held-out perplexity (completion) "
                  f"{m['heldout_perplexity']:.1f}  NMI held-out {m['nmi_area_heldout']}  NMI all {m['nmi_area_all']}")

        # Baseline for the fit: plain gensim LdaModel, its defaults (1 pass), on the same documents.
        records = read_equations(data)
        texts = [r["context"] for r in records]
        bows, n_known = model.bows(texts)
        train = [b for b, r in zip(bows, records) if r["split"] == "train" and b]
        t0 = time.perf_counter()
        LdaModel(train, num_topics=config.k, id2word=model.dictionary, random_state=config.seed, eval_every=None)
        plain = time.perf_counter() - t0
        print(f"baseline: plain LdaModel, 1 pass over all {len(train)} uncapped train contexts: {plain:.1f} s "
              f"-> our fit / baseline = {m['fit_seconds'] / plain:.2f}")

        # Inference: ours (tokenise + batched E-step) vs gensim per document on the same bags of words.
        # Wall time and this process's CPU time: the machine is shared, CPU time is the steadier figure.
        t0, c0 = time.perf_counter(), time.process_time()
        theta, n_known = model.infer_many(texts)
        ours, ours_cpu = time.perf_counter() - t0, time.process_time() - c0
        sub = [b for b in bows if b][:max_baseline]
        lda = model.lda
        t0, c0 = time.perf_counter(), time.process_time()
        for b in sub:
            lda.get_document_topics(b, minimum_probability=0)
        base, base_cpu = time.perf_counter() - t0, time.process_time() - c0
        ours_rate, base_rate = len(texts) / ours, len(sub) / base
        print(f"inference: TopicModel.infer_many {ours_rate:,.0f} contexts/s wall, {len(texts) / ours_cpu:,.0f}/s "
              f"CPU ({len(texts)} contexts incl. tokenising; goal >= 1,000) vs gensim get_document_topics "
              f"{base_rate:,.0f}/s wall, {len(sub) / base_cpu:,.0f}/s CPU ({len(sub)} bags, no tokenising) -> "
              f"ratio {ours_rate / base_rate:.1f}x wall, {(len(texts) / ours_cpu) / (len(sub) / base_cpu):.1f}x CPU")


def sweep(data: Path, base: TopicConfig, ks: list[int], documents: list[str], out_json: str | None,
          keep: Path | None = None) -> None:
    rows = []
    header = (f"{'documents':<9} {'K':>3} {'c_npmi':>7} {'c_v':>6} {'perplex':>8} {'NMI_held':>8} {'NMI_all':>8} "
              f"{'fit_s':>6} {'cpu_s':>6}")
    print(header)
    with tempfile.TemporaryDirectory() as tmp:
        for doc_mode in documents:
            for k in ks:
                cfg = replace(base, k=k, documents=doc_mode, metrics=True)
                model = fit_topics(data, Path(keep or tmp) / f"{doc_mode}-{k}-seed{base.seed}", cfg)
                m = model.metrics
                row = {"documents": doc_mode, "k": k, "seed": base.seed, **{key: m.get(key) for key in (
                    "c_npmi", "c_v", "heldout_perplexity", "heldout_perplexity_gensim_bound", "nmi_area_heldout",
                    "nmi_area_all", "nmi_area_train_used", "fit_seconds", "fit_cpu_seconds", "lda_documents",
                    "vocabulary")}}
                row["top_words"] = [model.top_words(t, 6) for t in range(k)]
                rows.append(row)
                print(f"{doc_mode:<9} {k:>3} {m['c_npmi']:>7.4f} {m['c_v']:>6.3f} {m['heldout_perplexity']:>8.1f} "
                      f"{m['nmi_area_heldout'] or 0:>8.3f} {m['nmi_area_all'] or 0:>8.3f} {m['fit_seconds']:>6.1f} {m['fit_cpu_seconds']:>6.1f}",
                      flush=True)
    if out_json:
        Path(out_json).write_text(json.dumps(rows, indent=1))
        print(f"wrote {out_json}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None, help="ingest dir (default data/ingest-all, else -sample)")
    ap.add_argument("--k", type=int, default=TopicConfig().k)
    ap.add_argument("--passes", type=int, default=TopicConfig().passes)
    ap.add_argument("--seed", type=int, default=TopicConfig().seed)
    ap.add_argument("--documents", default=TopicConfig().documents, help="contexts, papers, or both comma-separated (sweep)")
    ap.add_argument("--sweep", default=None, help="comma-separated K values: run the coherence sweep instead")
    ap.add_argument("--no-metrics", action="store_true", help="fit/infer bench without coherence etc.")
    ap.add_argument("--max-baseline", type=int, default=3000, help="contexts timed with gensim per document")
    ap.add_argument("--json", default=None, help="sweep results to this file")
    ap.add_argument("--keep", type=Path, default=None, help="keep the sweep's topic dirs under this folder")
    args = ap.parse_args()
    data = args.data or default_data()
    base = TopicConfig(k=args.k, passes=args.passes, seed=args.seed, metrics=not args.no_metrics)
    if args.sweep:
        sweep(data, base, [int(x) for x in args.sweep.split(",")], args.documents.split(","), args.json, args.keep)
    else:
        bench_fit_and_infer(data, replace(base, documents=args.documents), args.max_baseline)
    return 0


if __name__ == "__main__":
    sys.exit(main())
