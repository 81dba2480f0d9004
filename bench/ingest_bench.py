"""Ingest benchmark: the whole corpus through `pipeline.ingest.ingest`, against a plain baseline in the same run.

Baseline: what a plain script does — one process reads every .tex/.ltx/.Rnw file and cuts `equation`, `\\[ \\]`
and `$$` bodies with one regular expression (no archives, no macros, no contexts). Ours does far more work per
paper; the ratio says what that costs. Prints papers/s, equations/s, CPU seconds (all processes) and peak
memory (largest single process, and the sum of the main process and the largest worker as an upper bound).

    .venv/bin/python bench/ingest_bench.py [SOURCE] [--workers N]
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.ingest import IngestConfig, ingest  # noqa: E402

DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "arxiv"
_NAIVE_RE = re.compile(r"\\begin\{equation\*?\}(.*?)\\end\{equation\*?\}|\\\[(.*?)\\\]|\$\$(.*?)\$\$", re.S)


def naive_baseline(source: Path) -> tuple[float, int, int]:
    t0 = time.perf_counter()
    files = 0
    eqs = 0
    for p in sorted(source.rglob("*")):
        if p.suffix.lower() in (".tex", ".ltx", ".rnw") and p.is_file() and not p.is_symlink():
            text = p.read_bytes().decode("utf-8", errors="replace")
            files += 1
            for m in _NAIVE_RE.finditer(text):
                body = next(g for g in m.groups() if g is not None)
                body = re.sub(r"\\label\{[^}]*\}", "", body).strip()
                if body:
                    eqs += 1
    return time.perf_counter() - t0, files, eqs


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", nargs="?", default=str(DEFAULT_SOURCE))
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    source = Path(args.source)
    if not source.exists():
        print(f"{source} does not exist", file=sys.stderr)
        return 1
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (shared machine: timings are noisy)")
    base_s, base_files, base_eqs = naive_baseline(source)
    print(f"baseline (regex, 1 process): {base_files} files, {base_eqs} equations in {base_s:.2f} s")
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as out:
        cpu0 = cpu_seconds()
        t0 = time.perf_counter()
        report = ingest([source], out, IngestConfig(workers=args.workers, progress=False))
        wall = time.perf_counter() - t0
        cpu = cpu_seconds() - cpu0
        size_mb = os.path.getsize(Path(out) / "equations.jsonl") / 2**20
    own_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kid_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"ingest ({args.workers} workers): {report['papers_read']} papers, {report['equations']} equations, "
          f"{size_mb:.1f} MB of records in {wall:.1f} s wall, {cpu:.1f} s CPU (all processes)")
    print(f"  {report['papers_read'] / wall:.1f} papers/s, {report['equations'] / wall:.0f} equations/s; "
          f"CPU-bound estimate on an idle {args.workers}-core machine: {cpu / max(1, args.workers):.1f} s")
    print(f"  peak memory: main {own_peak:.0f} MB, largest worker {kid_peak:.0f} MB "
          f"(upper bound for the run: {own_peak + args.workers * kid_peak:.0f} MB)")
    print(f"ratio ingest/baseline wall time: {wall / base_s:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
