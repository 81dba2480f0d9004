"""Does topic conditioning carry over to unseen papers? The fair protocol of issue 20, item 4.

Every variant is trained on the same data, tokenizer and number of steps, with >= 3 seeds, and scored on the
test split (papers that are not in training) against the plain LSTM of (at least) the same parameter count:
its hidden size is raised to match the largest conditioned variant (the counts are printed; "scoring
parameters" leave out the context topic model's decoder, which never touches p(equation | context)).
Reported per variant, mean ± sd over seeds and as a ratio to the plain model (paired by seed):
  * test bits/char, pooled and as the macro average over coarse arXiv areas (the test split is mostly one
    book: the pooled figure alone hides where conditioning helps);
  * the shuffled-context control: every test equation gets the context (or LDA θ) of an equation of ANOTHER
    paper; a model that uses its context gets worse, by as much as it leans on it;
  * bits per token by position in the equation (first token, 2-5, 6-20, 21+);
  * the same gain on 1,000 equations of training papers: a gain there but not on unseen papers = memorised papers.

Two steps, two machines (the GPU image has torch and numpy, no gensim):

    # here: pack an ingest dir + its LDA θ into a bundle (contexts reduced to the words the encoder reads)
    python bench/conditioning_bench.py pack --data data/ingest --topics data/topics --out data/cond-bundle
    # anywhere: train and score every (variant, seed); P worker processes share the device
    python bench/conditioning_bench.py run --bundle data/cond-bundle --out data/cond-run --size gpu \\
        --device cuda --seeds 3 --steps auto --budget-s 330 --parallel 5

`--steps auto` (GPU): the workers first time 30 training steps of their first variant, all at once (the
concurrency the run will have), plus one validation pass; the parent turns that into the largest equal step
count that fits --budget-s, and every job then trains exactly that many steps. The table goes to stdout,
OUT/table.md and OUT/results.json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from conditioning_jobs import (BUCKETS, DEFAULT_VARIANTS, SIZES, VARIANTS, cmd_worker, job_preset,  # noqa: E402
                               kind_of, scoring_parameters)


# ---------------------------------------------------------------------------------------------- pack
def cmd_pack(args) -> int:
    from gpu_check import write_bundle

    from topicrnn.data import context_words

    # the context reduced to the words the encoder can read (ContextVocab.fit sees the same words)
    write_bundle(args.data, args.topics, args.out, lambda r: {
        "id": r["id"], "paper": r.get("paper", ""), "area": r.get("area", ""), "split": r["split"],
        "equation": r["equation"], "context": " ".join(context_words(r.get("context") or ""))})
    return 0


# --------------------------------------------------------------------------------------------- configs
def vocab_sizes(bundle: Path, size: str) -> tuple[int, int, int]:
    """(LaTeX vocabulary, context vocabulary, LDA K) of the bundle's training split, as training fits them."""
    from pipeline.topics import read_theta
    from topicrnn.data import ContextVocab, load_equation_split
    from topicrnn.tokenizers import make_tokenizer

    cfg = job_preset(size, "ctx-film", 1).train
    tr = load_equation_split(bundle / "ingest", None, "train")
    tok = make_tokenizer(cfg.tokenizer).fit(tr.texts, min_count=cfg.min_count)
    cv = ContextVocab.fit(tr.contexts, max_words=cfg.context_vocab_max, min_df=cfg.context_min_df,
                          max_df=cfg.context_max_df)
    return tok.vocab_size, cv.size, read_theta(bundle / "topics")[1]


def count_parameters(size: str, variant: str, vocab: int, ctx_vocab: int, k: int, hidden: int | None = None) -> int:
    from topicrnn.context_lm import build_model

    mc = job_preset(size, variant, 1, hidden).model
    mc.vocab_size, mc.context_vocab_size = vocab, ctx_vocab
    if mc.topic_dim == -1:
        mc.topic_dim = k
    return scoring_parameters(build_model(mc))


def matched_plain_hidden(size: str, target: int, vocab: int, ctx_vocab: int, k: int) -> int:
    """The smallest hidden size whose plain model has at least `target` parameters."""
    base = job_preset(size, "plain", 1).model.hidden
    h = base
    while count_parameters(size, "plain", vocab, ctx_vocab, k, h) < target:
        h += 1
    return h


# ---------------------------------------------------------------------------------------------- parent
def choose_steps(probes: list[dict], queues: list[list[tuple[str, int]]], budget_s: float, elapsed_s: float,
                 max_steps: int, min_steps: int) -> int:
    """The largest equal step count whose busiest queue fits the budget, with the slowest probed step time:
    per job, steps x step time + 4 validations + scoring (test and seen papers, true and shuffled: ~3.5
    validations) + 10 s of checkpoints; per worker, preparing the data of each further kind it trains."""
    step_s = max(p["step_s"] for p in probes)
    val_s = max(p["val_s"] for p in probes)
    prep_s = max(p.get("prep_s", 0.0) for p in probes)
    left = budget_s - elapsed_s
    per_step = []
    for q in queues:
        fixed = len(q) * (7.5 * val_s + 10.0) + (len({kind_of(v) for v, _ in q}) - 1) * prep_s
        per_step.append((left - fixed) / (len(q) * step_s * 1.1))
    return max(min_steps, min(max_steps, int(min(per_step))))


def mean_sd(xs) -> tuple[float, float]:
    xs = [x for x in xs if x is not None]
    if not xs:
        return float("nan"), float("nan")
    return float(np.mean(xs)), float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0


def pm(xs, fmt="{:.4f}", pct=False) -> str:
    m, s = mean_sd(xs)
    if math.isnan(m):
        return "—"
    if len([x for x in xs if x is not None]) < 2:  # one seed: no spread to show
        return f"{m * 100:+.1f}%" if pct else fmt.format(m)
    if pct:
        return f"{m * 100:+.1f}% ± {s * 100:.1f}"
    return (fmt + " ± " + fmt).format(m, s)


def macro(res: dict, key: str = "test") -> float:
    areas = res[key]["areas"]
    return float(np.mean([a["bpc"] for a in areas.values()]))


def make_table(results: list[dict], variants: list[str]) -> str:
    ok = [r for r in results if "error" not in r]
    if not ok:
        return "no job finished: " + "; ".join(f"{r['variant']} seed {r['seed']}: {r['error']}" for r in results)
    by = {v: {r["seed"]: r for r in ok if r["variant"] == v} for v in variants}
    base = by.get("plain", {})

    def ratio(v, fn):  # paired by seed: variant / plain - 1
        return [fn(by[v][s]) / fn(base[s]) - 1 for s in by[v] if s in base]

    def ratio_rows(columns, value_of, fmt):  # per variant: the mean over seeds of each column, ratio to plain
        rows = []
        for v in variants:
            rs = list(by[v].values())
            if not rs:
                continue
            cells = []
            for c in columns:
                vals = [x for x in (value_of(r, c) for r in rs) if x is not None]
                paired = [value_of(by[v][s], c) / value_of(base[s], c) - 1 for s in by[v] if s in base
                          and value_of(by[v][s], c) is not None and value_of(base[s], c) is not None]
                cells.append(fmt.format(np.mean(vals)) + ("" if v == "plain" else f" ({pm(paired, pct=True)})"))
            rows.append(f"| {v} | " + " | ".join(cells) + " |")
        return rows

    lines = ["| variant | scoring params | steps | seeds | test bits/char | vs plain | area macro bits/char | "
             "vs plain | shuffled context | shuffle penalty | seen papers: vs plain | best val |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for v in variants:
        rs = list(by[v].values())
        if not rs:
            lines.append(f"| {v} | — | — | 0 | — | — | — | — | — | — | — | — |")
            continue
        shuf = [r["test_shuffled"]["bpc"] for r in rs if "test_shuffled" in r]
        pen = [r["test_shuffled"]["bpc"] / r["test"]["bpc"] - 1 for r in rs if "test_shuffled" in r]
        steps = sorted({r["steps"] for r in rs})
        lines.append(
            f"| {v} | {rs[0]['scoring_parameters']:,} (h {rs[0]['hidden']}) | {'/'.join(map(str, steps))}"
            f"{' (time cap)' if any(r['stopped_for_time'] for r in rs) else ''} | {len(rs)} | "
            f"{pm([r['test']['bpc'] for r in rs])} | {'baseline' if v == 'plain' else pm(ratio(v, lambda r: r['test']['bpc']), pct=True)} | "
            f"{pm([macro(r) for r in rs])} | {'baseline' if v == 'plain' else pm(ratio(v, macro), pct=True)} | "
            f"{pm(shuf) if shuf else '—'} | {pm(pen, pct=True) if pen else '—'} | "
            f"{'baseline' if v == 'plain' else pm(ratio(v, lambda r: r['seen']['bpc']), pct=True)} | "
            f"{pm([r['best_val_bpc'] for r in rs])} |")
    areas = sorted({a for r in ok for a in r["test"]["areas"]},
                   key=lambda a: -max(r["test"]["areas"].get(a, {"n": 0})["n"] for r in ok))
    lines += ["", "Per area (test bits/char, mean over seeds; ratio to plain paired by seed):", "",
              "| variant | " + " | ".join(f"{a} ({ok[0]['test']['areas'].get(a, {'n': 0})['n']})" for a in areas) + " |",
              "|---|" + "---|" * len(areas)]
    lines += ratio_rows(areas, lambda r, a: r["test"]["areas"][a]["bpc"] if a in r["test"]["areas"] else None,
                        "{:.4f}")
    names = [b[2] for b in BUCKETS]
    lines += ["", "Bits per token by position in the equation (test; ratio to plain paired by seed):", "",
              "| variant | " + " | ".join(f"position {n}" for n in names) + " |", "|---|" + "---|" * len(names)]
    lines += ratio_rows(names, lambda r, n: r["test"]["positions"][n], "{:.3f}")
    errors = [r for r in results if "error" in r]
    if errors:
        lines += ["", "Failed jobs: " + "; ".join(f"{r['variant']} seed {r['seed']}: {r['error']}" for r in errors)]
    return "\n".join(lines)


def time_cells(size: str, device_name: str) -> str:
    """Forward + backward of one LSTM layer at the size's shape: nn.LSTM (cuDNN on a GPU) vs the in-cell
    FiLM layer's scripted loop. -> a line for the report."""
    import torch

    from topicrnn.context_lm import FilmLSTMLayer
    from topicrnn.device import resolve_device

    dev = resolve_device(device_name)
    p = job_preset(size, "ctx-cell", 1)
    b, t, h, e = p.train.batch_size, 64, p.model.hidden, p.model.embedding
    x = torch.randn(b, t, e, device=dev)
    cond = torch.softmax(torch.randn(b, p.model.context_topics, device=dev), -1)
    lstm = torch.nn.LSTM(e, h, batch_first=True).to(dev)
    film = FilmLSTMLayer(e, h, p.model.context_topics).to(dev)
    state = (torch.zeros(b, h, device=dev), torch.zeros(b, h, device=dev))
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    bf16 = dev.type == "cuda"

    def run(fn, n=10):
        for i in range(n + 3):
            if i == 3:
                sync()
                t0 = time.perf_counter()
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=bf16):
                out = fn()
            out.float().sum().backward()
        sync()
        return (time.perf_counter() - t0) / n

    from topicrnn import context_lm

    def cell(loop):
        def fn():
            with torch.autocast(device_type=dev.type, enabled=False):
                xg = film.ih(x)
                scale = 1.0 + film.gate_film(cond)
                return loop(xg, film.w_hh, scale, *state)[0]
        return fn

    t_lstm = run(lambda: lstm(x)[0])
    t_script = run(cell(context_lm.film_lstm_loop_scripted))
    t_eager = run(cell(context_lm.film_lstm_loop))
    return (f"one layer fwd+bwd, batch {b} x {t} steps, {e} -> {h}, {dev.type}: nn.LSTM {t_lstm * 1e3:.1f} ms; "
            f"in-cell FiLM loop: scripted {t_script * 1e3:.1f} ms ({t_script / t_lstm:.1f}x), "
            f"eager {t_eager * 1e3:.1f} ms ({t_eager / t_lstm:.1f}x)")


def cmd_run(args) -> int:
    t_start = time.time()
    out = Path(args.out)
    bundle = Path(args.bundle)
    for d in ("results", "logs", "jobs"):
        (out / d).mkdir(parents=True, exist_ok=True)
    for stale in list((out / "results").glob("*.json")) + list(out.glob("probe-*.json")) + [out / "steps.json"]:
        stale.unlink(missing_ok=True)
    variants = list(args.variants)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or "plain" not in variants:
        raise SystemExit(f"--variants must include plain and name only {sorted(VARIANTS)} (unknown: {unknown})")
    variants.remove("plain")
    variants.insert(0, "plain")
    report = []

    def say(line: str):
        print(line, flush=True)
        report.append(line)

    # 1. parameter counts: the plain model's hidden size raised to the largest conditioned variant's count
    vocab, ctx_vocab, k = vocab_sizes(bundle, args.size)
    counts = {v: count_parameters(args.size, v, vocab, ctx_vocab, k) for v in variants if v != "plain"}
    target = max(counts.values()) if counts else 0
    plain_hidden = matched_plain_hidden(args.size, target, vocab, ctx_vocab, k)
    counts["plain"] = count_parameters(args.size, "plain", vocab, ctx_vocab, k, plain_hidden)
    say(f"size {args.size}, vocabulary {vocab}, context words {ctx_vocab - 1}, LDA K {k}; scoring parameters: "
        + ", ".join(f"{v} {counts[v]:,}" for v in variants) + f" (plain: hidden {plain_hidden})")
    if args.time_cells:
        try:
            say(time_cells(args.size, args.device))
        except Exception as e:  # noqa: BLE001 - the timing is a side figure
            say(f"cell timing failed: {e!r}")

    # 2. jobs, seed-major (a run cut short still has whole seeds), dealt round-robin to the workers
    jobs = [(v, s) for s in range(args.seeds) for v in variants]
    n_workers = max(1, min(args.parallel, len(jobs)))
    queues = [jobs[i::n_workers] for i in range(n_workers)]
    procs = []
    for i, q in enumerate(queues):
        cmd = [sys.executable, str(Path(__file__).resolve()), "worker", "--bundle", str(bundle), "--out", str(out),
               "--size", args.size, "--device", args.device, "--steps", str(args.steps), "--worker-id", str(i),
               "--plain-hidden", str(plain_hidden), "--threads", str(args.threads),
               "--job-cap-s", str(args.job_cap_s), "--jobs", ",".join(f"{v}:{s}" for v, s in q)]
        log = open(out / "logs" / f"worker-{i}.txt", "w")
        path = os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                       env={**os.environ, "PYTHONPATH": path}), log))
    steps = args.steps
    if args.steps == "auto":
        while len(list(out.glob("probe-*.json"))) < n_workers:
            if any(p.poll() is not None for p, _ in procs):
                raise SystemExit(f"a worker ended before its probe: see {out / 'logs'}")
            time.sleep(0.5)
        probes = [json.loads(p.read_text()) for p in out.glob("probe-*.json")]
        steps = choose_steps(probes, queues, args.budget_s, time.time() - t_start, args.max_steps, args.min_steps)
        (out / "steps.json").write_text(json.dumps({"steps": steps, "probes": probes}))
        say("probe (all workers at once): " + ", ".join(f"{p['variant']} {p['step_s'] * 1e3:.1f} ms/step"
                                                        for p in probes)
            + f"; validation {max(p['val_s'] for p in probes):.1f} s -> {steps} steps each")
    # a guard: past it, workers are stopped and the table is made of the jobs that finished
    wall = args.deadline_s or (args.budget_s * 1.25 + 60 if args.steps == "auto" else 0)
    for p, log in procs:
        try:
            p.wait(timeout=max(1.0, t_start + wall - time.time()) if wall else None)
        except subprocess.TimeoutExpired:
            p.kill()
            say(f"a worker was stopped at the deadline ({wall:.0f} s)")
        log.close()
    results = [json.loads(p.read_text()) for p in sorted((out / "results").glob("*.json"))]
    table = make_table(results, variants)
    say(f"\n{len(results)} of {len(jobs)} jobs, {steps} steps each, {args.seeds} seeds, {n_workers} workers, "
        f"device {args.device}, wall {time.time() - t_start:.0f} s\n")
    say(table)
    (out / "table.md").write_text("\n".join(report) + "\n")
    (out / "results.json").write_text(json.dumps({"args": vars(args), "counts": counts, "plain_hidden": plain_hidden,
                                                  "steps": steps, "results": results}, indent=1))
    return 0 if results and all("error" not in r for r in results) else 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("pack", help="ingest dir + LDA θ -> a bundle that needs only torch and numpy")
    b.add_argument("--data", required=True, help="ingest dir (equations.jsonl)")
    b.add_argument("--topics", required=True, help="topic dir (theta.npz, topics.json)")
    b.add_argument("--out", default=str(REPO / "data" / "cond-bundle"))
    r = sub.add_parser("run", help="train and score every (variant, seed), print the table")
    r.add_argument("--bundle", default=str(REPO / "data" / "cond-bundle"))
    r.add_argument("--out", default=os.environ.get("OUT", str(REPO / "data" / "cond-run")))
    r.add_argument("--size", choices=sorted(SIZES), default="cpu")
    r.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, help=f"of {', '.join(VARIANTS)}")
    r.add_argument("--seeds", type=int, default=3)
    r.add_argument("--steps", default="auto", help="training steps of every job, or auto (fit --budget-s)")
    r.add_argument("--max-steps", type=int, default=3000, help="auto: at most this many steps")
    r.add_argument("--min-steps", type=int, default=300, help="auto: at least this many steps")
    r.add_argument("--budget-s", type=float, default=330.0, help="auto: seconds for the whole run")
    r.add_argument("--job-cap-s", type=float, default=0.0, help="a time cap per job (0 = none): a guard")
    r.add_argument("--deadline-s", type=float, default=0.0,
                   help="stop workers after this many seconds and report the finished jobs (0: with --steps auto "
                        "1.25 x budget + 60, else none)")
    r.add_argument("--parallel", type=int, default=1, help="worker processes sharing the device")
    r.add_argument("--threads", type=int, default=1, help="torch CPU threads per worker")
    r.add_argument("--device", default="auto")
    r.add_argument("--time-cells", action="store_true", help="also time nn.LSTM vs the in-cell FiLM layer")
    w = sub.add_parser("worker", help=argparse.SUPPRESS)
    for name in ("--bundle", "--out", "--size", "--device", "--steps", "--jobs", "--worker-id"):
        w.add_argument(name, required=True)
    w.add_argument("--plain-hidden", type=int, default=0)
    w.add_argument("--threads", type=int, default=1)
    w.add_argument("--job-cap-s", type=float, default=0.0)
    args = p.parse_args(argv)
    return {"pack": cmd_pack, "run": cmd_run, "worker": cmd_worker}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
