"""Compile check: one pdflatex document per equation (the rule) vs `pipeline.compile_check.check`, same run.

Equations: real ones from an ingest folder (default data/ingest-all, else data/ingest-sample topped up by a
plain regular-expression cut of ../shared/data/arxiv/demo), mixed with corrupted copies made by seeded edits
(delete a brace, insert an unknown macro, unbalance \\left, ...). Prints both rates, their ratio and the
agreement of the verdicts (ok and error message). Both sides use the same number of workers.

    .venv/bin/python bench/compile_bench.py -n 2000 --workers 2
    .venv/bin/python bench/compile_bench.py --real-share data/ingest-all   # share of real equations compiling
"""
from __future__ import annotations

import argparse
import json
import random
import re
import resource
import sys
import tempfile
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.compile_check import check, check_one_document, last_stats  # noqa: E402

SHARED = REPO.parent / "shared" / "data" / "arxiv"

UNKNOWN_MACROS = ["\\foo", "\\bbR", "\\abs", "\\norm", "\\RR", "\\braket", "\\E", "\\eqdef", "\\Var", "\\tr"]


def regex_equations(root: Path, limit: int) -> list[str]:
    """A plain cut of display equations (equation, \\[ \\], $$), labels dropped: a fallback source."""
    pat = re.compile(r"\\begin\{equation\*?\}(.*?)\\end\{equation\*?\}|\\\[(.*?)\\\]|\$\$(.*?)\$\$", re.S)
    out: list[str] = []
    for path in sorted(root.rglob("*.tex")):
        text = path.read_text(encoding="utf-8", errors="replace")
        for m in pat.finditer(text):
            body = next(g for g in m.groups() if g is not None)
            body = re.sub(r"\\label\{[^{}]*\}", "", body).strip()
            if body and len(body) <= 1000:
                out.append(body)
        if len(out) >= limit:
            break
    return out


def load_real(data: Path | None, n: int) -> tuple[list[str], str]:
    candidates = [data] if data else [REPO / "data" / "ingest-all", REPO / "data" / "ingest-sample"]
    for d in candidates:
        f = d / "equations.jsonl"
        if f.is_file():
            eqs = [json.loads(line)["equation"] for line in f.open(encoding="utf-8") if line.strip()]
            source = str(f.relative_to(REPO) if f.is_relative_to(REPO) else f)
            if len(eqs) < n and data is None and (SHARED / "demo").is_dir():
                eqs += regex_equations(SHARED / "demo", n - len(eqs) + 200)
                source += " + regex cut of ../shared/data/arxiv/demo"
            return eqs, source
    if not (SHARED / "demo").is_dir():
        raise SystemExit("no equations: run `topiceq ingest` or provide ../shared/data/arxiv")
    return regex_equations(SHARED / "demo", n + 200), "regex cut of ../shared/data/arxiv/demo"


def corrupt(eq: str, rng: random.Random) -> tuple[str, str]:
    """One seeded edit that usually (not always) breaks the equation; returns (text, kind)."""
    kinds = ["delete_brace", "unknown_macro", "unbalance_left", "truncate", "blank_line", "drop_end",
             "stray_alignment", "missing_argument"]
    kind = rng.choice(kinds)
    if kind == "delete_brace":
        pos = [i for i, c in enumerate(eq) if c in "{}" and (i == 0 or eq[i - 1] != "\\")]
        if pos:
            i = rng.choice(pos)
            return eq[:i] + eq[i + 1:], kind
        kind = "unknown_macro"
    if kind == "unknown_macro":
        i = rng.randrange(len(eq) + 1)
        return eq[:i] + rng.choice(UNKNOWN_MACROS) + " " + eq[i:], kind
    if kind == "unbalance_left":
        if "\\right" in eq:
            i = rng.choice([m.start() for m in re.finditer(r"\\right", eq)])
            return eq[:i] + eq[i + len("\\right") + 1:], kind  # drops \right and its delimiter
        i = rng.randrange(len(eq) + 1)
        return eq[:i] + "\\left( " + eq[i:], kind
    if kind == "truncate":
        return eq[: rng.randrange(max(1, len(eq)))], kind
    if kind == "blank_line":
        i = rng.randrange(len(eq) + 1)
        return eq[:i] + "\n\n" + eq[i:], kind
    if kind == "drop_end":
        m = list(re.finditer(r"\\end\{[^{}]*\}", eq))
        if m:
            x = rng.choice(m)
            return eq[:x.start()] + eq[x.end():], kind
        return eq + " \\end{matrix}", kind
    if kind == "stray_alignment":
        i = rng.randrange(len(eq) + 1)
        return eq[:i] + " & " + eq[i:], kind
    i = rng.randrange(len(eq) + 1)
    return eq[:i] + rng.choice(["\\frac{a}", "\\sqrt", "^", "_", "\\hat"]) + eq[i:], kind


def build_mix(real: list[str], n: int, invalid_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    pool = list(dict.fromkeys(e for e in real if e.strip()))
    rng.shuffle(pool)
    n_bad = int(round(n * invalid_fraction))
    good = pool[: n - n_bad]
    eqs, kinds = list(good), ["real"] * len(good)
    for k in range(n_bad):
        text, kind = corrupt(pool[k % len(pool)], rng)
        eqs.append(text)
        kinds.append(kind)
    order = list(range(len(eqs)))
    rng.shuffle(order)
    return [eqs[i] for i in order], [kinds[i] for i in order]


def cpu_seconds() -> tuple[float, float]:
    """CPU time of this process and of its finished children (pdflatex): on a shared machine the wall-clock
    ratio swings with the load, the CPU ratio much less."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def baseline(eqs: list[str], workers: int, timeout: float):
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda e: check_one_document(e, timeout=timeout), eqs))


def speed(args) -> int:
    real, source = load_real(args.data, args.n)
    eqs, kinds = build_mix(real, args.n, args.invalid_fraction, args.seed)
    print(f"equations: {len(eqs)} ({Counter(kinds)['real']} real from {source}, "
          f"{len(eqs) - Counter(kinds)['real']} corrupted, seed {args.seed}); workers {args.workers}")
    base_n = min(args.baseline_n or len(eqs), len(eqs))
    with tempfile.TemporaryDirectory(prefix="teq-bench-cache-") as cache:
        check(["x"], workers=1, use_cache=False, cache_dir=cache)  # builds the preamble format once
        c0 = cpu_seconds()
        t0 = time.perf_counter()
        ours = check(eqs, workers=args.workers, use_cache=False, cache_dir=cache, timeout=args.timeout,
                     progress=True)
        t_ours = time.perf_counter() - t0
        c1 = cpu_seconds()
        stats = last_stats()
    t0 = time.perf_counter()
    ref = baseline(eqs[:base_n], args.workers, args.timeout)
    t_base = time.perf_counter() - t0
    c2 = cpu_seconds()
    cpu_ours = (c1[0] - c0[0]) + (c1[1] - c0[1])
    cpu_base = (c2[0] - c1[0]) + (c2[1] - c1[1])
    rate_base = base_n / t_base
    rate_ours = len(eqs) / t_ours
    agree_ok = sum(a.ok == b.ok for a, b in zip(ref, ours))
    agree_err = sum((a.ok, a.error) == (b.ok, b.error) for a, b in zip(ref, ours))
    print(f"one document per equation: {base_n} eqs in {t_base:.1f} s = {rate_base:.1f} eq/s")
    print(f"compile_check.check:       {len(eqs)} eqs in {t_ours:.2f} s = {rate_ours:.1f} eq/s")
    print(f"ratio: {rate_ours / rate_base:.1f}x")
    print(f"CPU (Python + pdflatex): one document per equation {cpu_base:.1f} s, check() {cpu_ours:.2f} s; "
          f"per equation ratio {(cpu_base / base_n) / (cpu_ours / len(eqs)):.1f}x")
    print(f"agreement on {base_n}: ok {agree_ok}/{base_n} = {agree_ok / base_n:.2%}; "
          f"ok and error message {agree_err}/{base_n} = {agree_err / base_n:.2%}")
    print(f"compiled: rule {sum(v.ok for v in ref)}/{base_n}, ours {sum(v.ok for v in ours[:base_n])}/{base_n}; "
          f"real {sum(v.ok for v, k in zip(ours, kinds) if k == 'real')}/{Counter(kinds)['real']}")
    print(f"check(): {stats.batch_runs} shared runs for {stats.batch_safe} batch-safe equations, "
          f"{stats.alone} checked alone, {stats.in_doubt} re-checked alone after doubt")
    for i, (a, b) in enumerate(zip(ref, ours)):
        if (a.ok, a.error) != (b.ok, b.error):
            print(f"  DISAGREE [{kinds[i]}] {eqs[i][:120]!r}: rule {a.ok} {a.error!r} / ours {b.ok} {b.error!r}")
    return 0 if agree_ok == base_n else 1


def real_share(args) -> int:
    f = args.real_share / "equations.jsonl"
    records = [json.loads(line) for line in f.open(encoding="utf-8") if line.strip()]
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        src = r.get("source", "")
        group = "sample" if "/arxiv/sample/" in src else "demo" if "/arxiv/demo/" in src else "other"
        groups[group].append(r)
    t0 = time.perf_counter()
    verdicts = check([r["equation"] for r in records], workers=args.workers, timeout=args.timeout,
                     progress=True, use_cache=not args.no_cache)
    print(f"{len(records)} equations from {f} checked in {time.perf_counter() - t0:.1f} s")
    by_id = {r["id"]: v for r, v in zip(records, verdicts)}
    for group, recs in sorted(groups.items()):
        vs = [by_id[r["id"]] for r in recs]
        ok = sum(v.ok for v in vs)
        print(f"{group}: {ok}/{len(vs)} = {ok / len(vs):.2%} compile")
        causes = Counter(re.sub(r"on input line \d+", "on input line N", v.error or "") for v in vs if not v.ok)
        for cause, count in causes.most_common(args.top):
            example = next(r for r in recs if not by_id[r["id"]].ok
                           and re.sub(r"on input line \d+", "on input line N", by_id[r["id"]].error or "") == cause)
            print(f"  {count:5d}  {cause}   e.g. {example['id']}: {example['equation'][:100]!r}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--invalid-fraction", type=float, default=0.35)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--data", type=Path, default=None, help="ingest folder with equations.jsonl")
    ap.add_argument("--baseline-n", type=int, default=None,
                    help="run the one-document rule on the first N only (default: all)")
    ap.add_argument("--real-share", type=Path, default=None, metavar="INGESTDIR",
                    help="instead: share of the folder's equations that compile, by sample/demo, with causes")
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--no-cache", action="store_true", help="--real-share: ignore cached verdicts")
    args = ap.parse_args()
    return real_share(args) if args.real_share else speed(args)


if __name__ == "__main__":
    sys.exit(main())
