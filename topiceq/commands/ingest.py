"""`topiceq ingest`: LaTeX sources -> equation/context records."""
from __future__ import annotations

import argparse
import sys

HELP = "read LaTeX sources (files, folders, .gz/.tar/.zip archives, unarXive JSONL) into equation/context records"
DESCRIPTION = (
    "Extract every display equation with the prose around it from LaTeX sources. SOURCE may be a LaTeX file, a "
    "folder (searched recursively), a gzip/bzip2/xz/tar/zip archive (recognised by its bytes, whatever its name), "
    "an arXiv bulk tarball or an unarXive .jsonl file. Macros the papers (and their own .cls/.sty files) define "
    "are expanded so that each equation compiles on its own. Splits follow the paper's identity (arXiv id, else "
    "its content), so the same paper is read once and never lands in two splits. Writes OUT/equations.jsonl and "
    "OUT/report.json (every input: read, partly read or skipped, with the reason); nothing is written anywhere "
    "else."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sources", nargs="+", metavar="SOURCE", help="files, folders or archives to read")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")
    parser.add_argument("--context-words", type=int, default=50, metavar="N",
                        help="words of context kept before and after each equation")
    parser.add_argument("--workers", type=int, default=0, metavar="N",
                        help="worker processes (0 = one per CPU, 1 = no subprocesses)")
    parser.add_argument("--max-paper-mb", type=float, default=50.0, metavar="MB",
                        help="LaTeX bytes read per paper and per archive member")
    parser.add_argument("--max-equation-chars", type=int, default=1000, metavar="N",
                        help="drop equations longer than this after normalisation")
    parser.add_argument("--keep-undefined", action="store_true",
                        help="keep equations that surely fail the compile rule: commands its preamble does not "
                        "define, unbalanced braces or \\left/\\right")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of a summary")


def run(args: argparse.Namespace) -> int:
    import json

    from pipeline.ingest import IngestConfig, ingest

    if args.context_words < 0:
        raise ValueError("--context-words must be 0 or more")
    if args.max_paper_mb <= 0:
        raise ValueError("--max-paper-mb must be positive")
    config = IngestConfig(context_words=args.context_words, workers=max(0, args.workers),
                          max_paper_mb=args.max_paper_mb, max_equation_chars=args.max_equation_chars,
                          drop_undefined=not args.keep_undefined, progress=not args.no_progress)
    report = ingest(args.sources, args.out, config)
    if args.json:
        print(json.dumps(report, indent=1, ensure_ascii=False))
        return 0
    print(f"{report['equations']} equations from {report['papers_with_equations']} of {report['papers_read']} "
          f"papers in {report['seconds']:.1f} s -> {args.out}/equations.jsonl")
    areas = ", ".join(f"{a} {n}" for a, n in report["equations_per_area"].items())
    print(f"  per area: {areas}")
    splits = ", ".join(f"{a} {n}" for a, n in report["equations_per_split"].items())
    print(f"  per split: {splits}")
    if report["dropped"]:
        print("  dropped: " + "; ".join(f"{r} {n}" for r, n in report["dropped"].items()))
    inputs = report["inputs"]
    print(f"  inputs: {inputs['read']} read, {inputs['partly_read']} partly read, {inputs['skipped']} skipped"
          + (f" (reasons in {args.out}/report.json)" if inputs["skipped"] or inputs["partly_read"] else ""))
    if report["duplicate_papers_count"]:
        print(f"  same paper found again: {report['duplicate_papers_count']} copies read once (see report.json)")
    if report["partly_read_count"]:
        print(f"  papers partly read: {report['partly_read_count']} (see report.json)")
    sys.stdout.flush()
    return 0
