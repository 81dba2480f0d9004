"""How real do generated equations look? Per model and decoder: the real-vs-fake detectors, well-formedness,
compile rate and lengths, all against the real test equations, measured in one run.

For every checkpoint × decoder × temperature × top-p (a "row"), `--n` equations are generated with
`topicrnn.generation.generate_for_topics` (θ = the topic's prototype; all topics' rows share the sampler
calls), over the topics in the proportions of the real test
equations' dominant topics (`--topic-mix test`, the default: the test split is mostly one book, and a
detector would otherwise learn the subject) or evenly (`--topic-mix even`, as the flow does):

    free        no constraint
    tex         the syntax constraint with the TeX rules alone (the constraint before issue 20)
    wellformed  + balanced delimiters, operands, \\text/\\mathrm words from training (the new default)
    length      wellformed + length control: target lengths from the topic's real training equations (no end
                before the target, then steered to end)
    cap         wellformed + the target length as a cap only (the model may end before it)

Reported per row (pipeline.detector, pipeline.wellformed, pipeline.compile_check):
* detector accuracy, char n-gram TF-IDF and bag of LaTeX tokens, each a logistic regression under 5-fold CV
  grouped by test paper (each equation judged by a model that never saw its paper: `pipeline.detector`)
  against real test equations of the same topic and length (chance 0.5; lower is better for the model); the
  char n-gram one against length-matched real test equations of any topic ("pooled"); and the char n-gram one
  under stratified folds ("any fold"), where the detector can learn the few test papers' notation;
* the same for real training equations drawn with the rows' topic mix (`pipeline.judge.control_equations`):
  the control, measured in this run (~0.5 with papers held out), and each row's accuracy as a ratio to it;
* balanced share, operators without operand, empty \\frac/\\sqrt arguments, compile rate (real pdflatex);
* length in characters: mean, and the total variation distance between the length histogram (bins of 10) of
  the fakes and that of real training equations drawn with the same topic mix (0 = the same distribution; the
  control row is that draw itself for the rows' topic mix, so 0 there);
* test bits/char of each checkpoint (`--bpc N` test equations; 0 skips).

`--fakes FILE.jsonl ...` adds rows of pre-generated equations (one JSON object a line with "equation", and
optionally "topic" and "set": one row per file and set), e.g. written on a GPU with `--save-fakes DIR`
there: the detectors and measures then run here without a model. `--json` prints one JSON object.

    python bench/detector_bench.py --data data/ingest --topics data/topics --checkpoint data/ckpt/eq \\
        --decoders free,tex,wellformed,length --temperatures 0.8 --n 500
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipeline.compile_check import check  # noqa: E402
from pipeline.detector import (DetectorConfig, detect, detector_accuracy, length_matched,  # noqa: E402
                               matched_indices, telltale_features)
from pipeline.judge import control_equations, paper_groups  # noqa: E402
from pipeline.quiz import attach_dominant_topics  # noqa: E402
from pipeline.wellformed import balanced_share, dangling_operator, empty_argument  # noqa: E402
from pipeline.ingest import read_records  # noqa: E402
from pipeline.topics import ThetaTable  # noqa: E402
from topicrnn.checkpoint import load_model  # noqa: E402
from topicrnn.conditioning import topic_prototypes, topic_theta  # noqa: E402
from topicrnn.evaluation import evaluate  # noqa: E402
from topicrnn.generation import allowed_control_sequences, generate_for_topics, length_prior  # noqa: E402
from topicrnn.latex_syntax import SyntaxConfig  # noqa: E402

DECODERS = {"free": None, "tex": SyntaxConfig(balanced=False, operands=False, known_words=False),
            "wellformed": SyntaxConfig(), "length": SyntaxConfig(), "cap": SyntaxConfig()}
LENGTH_FLOOR = {"length": 1.0, "cap": 0.0}


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def length_tv(fakes: list[str], reals: list[str], bin_width: int = 10, top: int = 400) -> float:
    """Total variation distance between the length histograms (characters, bins of `bin_width`, one last bin
    for everything from `top` on)."""
    bins = np.arange(0, top + bin_width, bin_width)
    bins = np.append(bins, np.inf)
    f = np.histogram([len(e) for e in fakes], bins)[0].astype(float)
    r = np.histogram([len(e) for e in reals], bins)[0].astype(float)
    return 0.5 * float(np.abs(f / max(f.sum(), 1) - r / max(r.sum(), 1)).sum())


def row_topics(k: int, n: int, mix: str, test_topics: list[int]) -> list[int]:
    """The topic of each of n equations: evenly, or in the proportions of the test equations' topics
    (largest remainders), sorted."""
    if mix == "even":
        share = np.full(k, 1.0 / k)
    else:
        share = np.bincount(test_topics, minlength=k) / max(len(test_topics), 1)
    counts = np.floor(share * n).astype(int)
    for t in np.argsort(-(share * n - counts), kind="stable")[: n - int(counts.sum())]:
        counts[t] += 1
    return [t for t in range(k) for _ in range(int(counts[t]))]


def generate_row(lm, topic_model, prototypes, prior, syntax, decoder: str, topics: list[int], temperature: float,
                 top_p: float, seed: int, max_len: int) -> tuple[list[str], list[int]]:
    """One equation per entry of `topics` (sorted), through the one generation path with all topics' rows in
    shared sampler calls (one θ row and one target length per equation)."""
    counts = {t: topics.count(t) for t in sorted(set(topics))}
    generated = generate_for_topics(
        lm, {t: topic_theta(topic_model, t, prototypes=prototypes) for t in counts}, counts,
        temperature=temperature, seed=seed, max_len=max_len, mix_topics=True, constrained=decoder != "free",
        syntax=syntax if decoder != "free" else None, top_p=None if top_p >= 1.0 else top_p,
        syntax_config=DECODERS[decoder], lengths=prior if decoder in LENGTH_FLOOR else None,
        length_floor=LENGTH_FLOOR.get(decoder, 1.0))
    return [g.equation for g in generated], [g.topic for g in generated]


def measure(name: str, fakes: list[str], topics: list[int | None], reals_test: list[str], test_topics: list[int],
            test_papers: list[str], train: list[dict], config: DetectorConfig, compile_: bool, seed: int) -> dict:
    """One row's figures; `train`: training records with their dominant `topic` (the length reference and
    the control are drawn from them with the row's topic mix)."""
    known = [i for i, t in enumerate(topics) if t is not None]
    same_topic = dict(seed=seed, config=config, fake_topics=[topics[i] for i in known], real_topics=test_topics)
    det = detect([fakes[i] for i in known], reals_test, real_groups=test_papers, **same_topic)
    any_fold = detect([fakes[i] for i in known], reals_test, features=("char",), **same_topic)["char"]
    pooled = matched_indices(fakes, reals_test, seed=seed)
    real_mix = [r["equation"] for r in control_equations(train, topics, seed)]
    pooled_acc = detector_accuracy([reals_test[j] for _, j in pooled], [fakes[i] for i, _ in pooled], "char", config,
                                   [test_papers[j] for _, j in pooled] * 2).accuracy
    row = {"row": name, "n": len(fakes), "matched": det["char"].n_fake,
           "char_acc": det["char"].accuracy, "char_std": det["char"].std,
           "tokens_acc": det["tokens"].accuracy, "tokens_std": det["tokens"].std, "char_pooled_acc": pooled_acc,
           "char_any_fold_acc": any_fold.accuracy,
           "balanced": balanced_share(fakes), "dangling": float(np.mean([dangling_operator(e) for e in fakes])),
           "empty_args": float(np.mean([empty_argument(e) for e in fakes])),
           "mean_len": float(np.mean([len(e) for e in fakes])),
           "real_mean_len": float(np.mean([len(e) for e in real_mix])), "length_tv": length_tv(fakes, real_mix)}
    if compile_:
        verdicts = check(fakes, progress=True)
        row["compile"] = sum(v.ok for v in verdicts) / len(verdicts)
    row["telltale_tokens"] = telltale_features([reals_test[j] for _, j in pooled], [fakes[i] for i, _ in pooled],
                                               "tokens", n=6)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="ingest folder (its test split is the real side)")
    ap.add_argument("--topics", required=True, help="topic folder the checkpoints were trained with")
    ap.add_argument("--checkpoint", nargs="*", default=[], help="checkpoint files or folders")
    ap.add_argument("--fakes", nargs="*", default=[], help="pre-generated JSONL files (see above)")
    ap.add_argument("--decoders", default="free,tex,wellformed,length", help=f"comma list of {', '.join(DECODERS)}")
    ap.add_argument("--temperatures", default="0.8", help="comma list")
    ap.add_argument("--top-p", default="1.0", help="comma list (1.0 = off)")
    ap.add_argument("--n", type=int, default=500, help="equations per row")
    ap.add_argument("--topic-mix", choices=["test", "even"], default="test",
                    help="topics of the generated equations: as the real test equations', or evenly")
    ap.add_argument("--max-len", type=int, default=300, help="tokens per equation at most")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--bpc", type=int, default=1000, help="test equations for bits/char per checkpoint (0: skip)")
    ap.add_argument("--no-compile", action="store_true", help="skip the pdflatex compile rate")
    ap.add_argument("--save-fakes", type=Path, help="write each generated row to DIR/ROW.jsonl")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    unknown = set(args.decoders.split(",")) - set(DECODERS)
    if unknown:
        ap.error(f"unknown decoders {sorted(unknown)}: choose from {', '.join(DECODERS)}")
    if not args.checkpoint and not args.fakes:
        ap.error("give --checkpoint CKPT ... and/or --fakes FILE.jsonl ...")

    t0 = time.perf_counter()
    topic_model = ThetaTable(args.topics)  # θ and labels: no LDA needed
    train = list(read_records(args.data, "train"))
    test = list(read_records(args.data, "test"))
    theta_by_id = topic_model.theta_by_id()
    test = attach_dominant_topics(test, theta_by_id, split=None)
    train_topics = attach_dominant_topics(train, theta_by_id, split=None)
    reals_test, test_topics = [r["equation"] for r in test], [r["topic"] for r in test]
    test_papers = paper_groups(test)
    topics_of_rows = row_topics(int(topic_model.k), args.n, args.topic_mix, test_topics)
    prototypes = topic_prototypes(topic_model, train)
    config = DetectorConfig(folds=args.folds, seed=args.seed)

    rows: list[dict] = []
    # the control: real training equations with the rows' topic mix against the test split, same detectors
    reals_train = control_equations(train_topics, topics_of_rows, args.seed)
    control = measure("control: real training equations", [r["equation"] for r in reals_train],
                      [r["topic"] for r in reals_train], reals_test, test_topics, test_papers, train_topics,
                      config, False, args.seed)
    rows.append(control)

    bpc: dict[str, float] = {}
    for ck in args.checkpoint:
        lm = load_model(ck, device=args.device)
        prior = length_prior(lm, args.data, topic_model)
        controls = allowed_control_sequences(lm, args.data)
        if args.bpc:
            table = evaluate(args.data, topic_model, [lm], split="test", max_equations=args.bpc, seed=args.seed)
            bpc[lm.name] = table.rows[0].bits_per_char
        for decoder in args.decoders.split(","):
            for temperature in floats(args.temperatures):
                for top_p in floats(args.top_p):
                    name = f"{lm.name} {decoder} T={temperature:g}" + (f" top-p={top_p:g}" if top_p < 1 else "")
                    t1 = time.perf_counter()
                    fakes, topics = generate_row(lm, topic_model, prototypes, prior, controls, decoder,
                                                 topics_of_rows, temperature, top_p, args.seed, args.max_len)
                    seconds = time.perf_counter() - t1
                    if args.save_fakes:
                        args.save_fakes.mkdir(parents=True, exist_ok=True)
                        with open(args.save_fakes / (name.replace(" ", "_").replace("=", "") + ".jsonl"), "w",
                                  encoding="utf-8") as fh:
                            for eq, topic in zip(fakes, topics):
                                fh.write(json.dumps({"equation": eq, "topic": topic, "set": name}) + "\n")
                    row = measure(name, fakes, topics, reals_test, test_topics, test_papers, train_topics, config,
                                  not args.no_compile, args.seed)
                    row.update(checkpoint=str(ck), bits_per_char=bpc.get(lm.name), generation_seconds=round(seconds, 1))
                    rows.append(row)
                    print(f"[bench] {name}: char {row['char_acc']:.3f}, tokens {row['tokens_acc']:.3f}, balanced "
                          f"{row['balanced']:.1%} ({seconds:.0f} s)", file=sys.stderr)
    for path in args.fakes:
        sets: dict[str, list[dict]] = {}
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if line.strip():
                item = json.loads(line)
                sets.setdefault(str(item.get("set") or Path(path).stem), []).append(item)
        for name, items in sets.items():
            row = measure(name, [i["equation"] for i in items], [i.get("topic") for i in items], reals_test,
                          test_topics, test_papers, train_topics, config, not args.no_compile, args.seed)
            row.update(checkpoint=None, bits_per_char=None, source=str(path))
            rows.append(row)

    for row in rows[1:]:
        row["char_vs_control"] = row["char_acc"] / control["char_acc"]
        row["tokens_vs_control"] = row["tokens_acc"] / control["tokens_acc"]
    if args.json:
        print(json.dumps({"rows": rows, "seconds": round(time.perf_counter() - t0, 1)}))
        return 0
    print(f"real test equations: {len(reals_test)} from {len(set(test_papers))} papers; detectors: {args.folds}-fold "
          "CV by test paper against real test equations of the same topic and length (pooled: any topic; any "
          "fold: stratified folds); chance 0.5")
    print("| row | n (matched) | char n-gram acc | tokens acc | char, pooled | char, any fold | balanced | no operand "
          "| empty arg | compile | mean len (real) | length TV | test bpc |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        comp = f"{row['compile']:.1%}" if "compile" in row else "–"
        bits = f"{row['bits_per_char']:.4f}" if row.get("bits_per_char") else "–"
        print(f"| {row['row']} | {row['n']} ({row['matched']}) | {row['char_acc']:.3f} ± {row['char_std']:.3f} | "
              f"{row['tokens_acc']:.3f} ± {row['tokens_std']:.3f} | {row['char_pooled_acc']:.3f} | "
              f"{row['char_any_fold_acc']:.3f} | "
              f"{row['balanced']:.1%} | {row['dangling']:.1%} | "
              f"{row['empty_args']:.1%} | {comp} | {row['mean_len']:.0f} ({row['real_mean_len']:.0f}) | "
              f"{row['length_tv']:.3f} | {bits} |")
    for row in rows[1:]:
        print(f"{row['row']}: char acc / control {row['char_vs_control']:.2f}, tokens acc / control "
              f"{row['tokens_vs_control']:.2f}; tokens that say fake: {' | '.join(row['telltale_tokens']['fake'])}")
    print(f"({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
