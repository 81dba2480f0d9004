"""`topiceq download`: arXiv sources (as arXiv serves them) with their metadata, politely and resumably."""
from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import date

HELP = "download arXiv LaTeX sources with their categories (polite, resumable), or read a bulk source tarball"
DESCRIPTION = (
    "Fetch the LaTeX sources of arXiv papers, by id (--ids) or the newest of a category (--category CAT --max N, "
    "optionally --from/--until submission dates), listed through arXiv's API (Atom feed) and fetched from "
    "BASE/e-print/ID one request at a time with --delay seconds between requests (arXiv asks for 3 s), Retry-After "
    "honoured and exponential back-off on 429/5xx and cut connections. Or read an arXiv bulk source tarball "
    "handed over to you (--bulk arXiv_src_YYMM_NNN.tar), with metadata from the API unless --no-metadata. "
    "Each source is kept byte for byte as served (ID.tar.gz or ID.gz) in --out, with DIR/download-manifest.jsonl "
    "(id, version, title, categories, licence, status; failures with their reason). Running the same command "
    "again skips what is complete and retries what failed. `topiceq ingest DIR` then uses each paper's primary "
    "category as its area. Nothing is written outside --out."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--ids", nargs="+", metavar="ID", help="arXiv ids, e.g. 1801.03879 1801.03879v2 hep-th/9901001")
    what.add_argument("--category", metavar="CAT", help="an arXiv category, e.g. math.AG, hep-th, cs.LG (needs --max)")
    what.add_argument("--bulk", metavar="FILE.tar", help="an arXiv bulk source tarball (arXiv_src_*.tar) to read")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")
    parser.add_argument("--max", type=int, metavar="N", help="with --category: how many papers (newest first)")
    parser.add_argument("--from", dest="date_from", type=date.fromisoformat, metavar="YYYY-MM-DD",
                        help="with --category: submitted on or after this day")
    parser.add_argument("--until", dest="date_until", type=date.fromisoformat, metavar="YYYY-MM-DD",
                        help="with --category: submitted on or before this day")
    parser.add_argument("--delay", type=float, default=3.0, metavar="SECONDS",
                        help="pause between requests (arXiv's terms ask for 3 s; lower it only for your own mirror)")
    parser.add_argument("--base-url", default="https://arxiv.org", metavar="URL", help="sources at URL/e-print/ID")
    parser.add_argument("--api-url", default="https://export.arxiv.org/api/query", metavar="URL",
                        help="arXiv API query endpoint (Atom)")
    parser.add_argument("--max-mb", type=float, default=100.0, metavar="MB",
                        help="size cap per paper as served; larger sources are recorded as failed")
    parser.add_argument("--retries", type=int, default=4, metavar="N",
                        help="further attempts after a 429/5xx or a failed or cut connection")
    parser.add_argument("--backoff", type=float, default=5.0, metavar="SECONDS",
                        help="first back-off without Retry-After; doubles with each retry")
    parser.add_argument("--max-wait", type=float, default=600.0, metavar="SECONDS",
                        help="longest single wait; a longer Retry-After fails that request (try later)")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS", help="connect/read timeout")
    parser.add_argument("--page-size", type=int, default=100, metavar="N", help="papers per API page (at most 2000)")
    parser.add_argument("--contact", metavar="EMAIL",
                        help="your e-mail or URL, sent in the User-Agent so that arXiv can reach you "
                        "(when not given: $TOPICEQ_CONTACT)")
    parser.add_argument("--no-metadata", action="store_true",
                        help="with --bulk: do not ask the API for titles and categories")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from pipeline.arxiv_download import DownloadConfig, download_category, download_ids, import_bulk
    from pipeline.arxiv_meta import MANIFEST_FILE
    from pipeline.polite_http import PoliteConfig

    if args.category and not args.max:
        raise ValueError("--category needs --max N (how many papers)")
    if not args.category and (args.max or args.date_from or args.date_until):
        raise ValueError("--max, --from and --until go with --category")
    if args.no_metadata and not args.bulk:
        raise ValueError("--no-metadata goes with --bulk")
    if args.delay < 0 or args.retries < 0 or args.backoff < 0 or args.max_wait < 0 or args.timeout <= 0:
        raise ValueError("--delay, --retries, --backoff and --max-wait must be 0 or more, --timeout positive")
    http = PoliteConfig(delay_s=args.delay, retries=args.retries, backoff_s=args.backoff, max_wait_s=args.max_wait,
                        timeout_s=args.timeout,
                        contact=args.contact or os.environ.get("TOPICEQ_CONTACT", ""))
    cfg = DownloadConfig(out=args.out, base_url=args.base_url, api_url=args.api_url, max_mb=args.max_mb,
                         page_size=args.page_size, progress=not args.no_progress, http=http)
    if args.ids:
        summary = download_ids(args.ids, cfg)
    elif args.category:
        summary = download_category(args.category, args.max, cfg, args.date_from, args.date_until)
    else:
        summary = import_bulk(args.bulk, cfg, metadata=not args.no_metadata)
    if args.json:
        print(json.dumps(asdict(summary), indent=1, ensure_ascii=False))
    else:
        print(f"{summary.ok} sources saved ({summary.bytes / 2**20:.1f} MB), {summary.already_complete} already "
              f"complete, {summary.pdf_only} PDF-only, {summary.no_source} without LaTeX, {summary.failed} failed, "
              f"of {summary.listed} papers in {summary.seconds:.1f} s -> {args.out}")
        print(f"  {summary.requests} requests, {summary.retries} retries, {summary.seconds_waited:.1f} s waiting "
              f"(delay {args.delay:g} s)")
        for note in summary.notes[:10]:
            print(f"  note: {note}")
        for failure in summary.failures[:10]:
            print(f"  failed: {failure['id']}: {failure['reason']}")
    sys.stdout.flush()
    if summary.failed:
        print(f"topiceq download: {summary.failed} of {summary.listed} papers failed (reasons in "
              f"{os.path.join(args.out, MANIFEST_FILE)}): run the same command again to retry them",
              file=sys.stderr)
        return 1
    return 0
