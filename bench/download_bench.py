"""Download benchmark: `topiceq download` of N papers from a local arXiv look-alike (tests/arxiv_server.py: a
real HTTP server on 127.0.0.1 serving an Atom listing and the real archives of
../shared/data/arxiv/formats/arxiv-source, cycled) with --delay 0, against a bare urllib loop that fetches the
same N e-print URLs and writes them to disk (no listing, no checks, no manifest), measured in the same run.

The ratio says what listing, content checks (gzip decompressed to the end, sha256), the manifest and fsync cost
per paper. With arXiv's own 3 s delay the run is bound by politeness instead: (requests) × delay, printed too.

    .venv/bin/python bench/download_bench.py [--papers 100] [--repeat 3] [--sources DIR]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from arxiv_server import FakeArxiv, FakePaper  # noqa: E402
from pipeline.arxiv_download import DownloadConfig, download_category  # noqa: E402
from pipeline.arxiv_meta import read_manifest  # noqa: E402
from pipeline.polite_http import PoliteConfig  # noqa: E402

DEFAULT_SOURCES = REPO.parent / "shared" / "data" / "arxiv" / "formats" / "arxiv-source"


def bare_urllib(base_url: str, ids: list[str], out: Path) -> float:
    t0 = time.perf_counter()
    for pid in ids:
        with urllib.request.urlopen(f"{base_url}/e-print/{pid}v1", timeout=30) as resp:
            (out / f"{pid}.bin").write_bytes(resp.read())
    return time.perf_counter() - t0


def ours(srv: FakeArxiv, n: int, out: Path) -> tuple[float, int]:
    cfg = DownloadConfig(out=out, base_url=srv.base_url, api_url=srv.api_url, progress=False,
                         http=PoliteConfig(delay_s=0.0))
    t0 = time.perf_counter()
    summary = download_category("math.AG", n, cfg)
    took = time.perf_counter() - t0
    if summary.ok != n:
        raise SystemExit(f"only {summary.ok} of {n} papers downloaded: {summary.failures[:3]}")
    return took, summary.requests


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--papers", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each; the median is reported")
    ap.add_argument("--sources", type=Path, default=DEFAULT_SOURCES)
    args = ap.parse_args()
    files = sorted(p for p in args.sources.iterdir() if p.name.endswith((".gz", ".tar.gz")))
    if not files:
        raise SystemExit(f"no .gz sources in {args.sources}")
    ids = [f"2401.{i:05d}" for i in range(1, args.papers + 1)]
    papers = [FakePaper.from_file(pid, files[i % len(files)], categories=["math.AG"],
                                  submitted=f"2024-01-01T00:{i // 60:02d}:{i % 60:02d}Z") for i, pid in enumerate(ids)]
    total_mb = sum(len(p.body) for p in papers) / 2**20
    ours_s, base_s, requests = [], [], []
    with FakeArxiv(papers) as srv:
        for _ in range(args.repeat):
            for name in ("bare", "ours"):
                work = Path(tempfile.mkdtemp(prefix="dl-bench-"))
                try:
                    if name == "bare":
                        base_s.append(bare_urllib(srv.base_url, ids, work))
                    else:
                        took, n_requests = ours(srv, args.papers, work)
                        assert len(read_manifest(work)) == args.papers
                        ours_s.append(took)
                        requests.append(n_requests)
                finally:
                    shutil.rmtree(work)
    requests = max(requests)
    o, b = statistics.median(ours_s), statistics.median(base_s)
    print(f"{args.papers} papers ({total_mb:.1f} MB, {len(files)} real archives cycled) from 127.0.0.1, "
          f"median of {args.repeat}:")
    print(f"  bare urllib loop      {b:7.3f} s   {args.papers / b:7.1f} papers/s")
    print(f"  topiceq download (0s) {o:7.3f} s   {args.papers / o:7.1f} papers/s   ({requests} requests: listing "
          f"+ one per paper)")
    print(f"  ratio ours / bare     {o / b:7.2f}")
    print(f"  with the default --delay 3: at least {(requests - 1) * 3.0:.0f} s for these {requests} requests "
          f"(politeness bound, not measured)")


if __name__ == "__main__":
    main()
