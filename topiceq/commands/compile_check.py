"""topiceq compile-check: which equations compile under ../shared/docs/compile-rule.md (real pdflatex)."""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

HELP = "check with real pdflatex which equations compile (one per line, or JSONL records)"
DESCRIPTION = (
    "Check equations with real pdflatex under the project's compile rule (docs: compile-rule.md): each "
    "verdict is the one a document of its own would get. Input: FILE or - (stdin); a .jsonl file holds "
    "JSON records with the equation in --field, any other file one equation per line. Prints a summary "
    "(n, compiled, fraction, most common errors); with --json (summary then on stderr), one {\"ok\", \"error\"} line per "
    "input on stdout, in input order. Verdicts are cached in $XDG_CACHE_HOME/topiceq/compile."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", nargs="?", default="-", metavar="FILE|-",
                        help="equations: a .jsonl file of records, a text file with one equation a line, or - "
                             "for stdin (JSONL when every line is a JSON object)")
    parser.add_argument("--field", default="equation", help="JSON field that holds the equation")
    parser.add_argument("--json", action="store_true", help="one JSON verdict per input line on stdout")
    parser.add_argument("--workers", type=int, default=None, help="parallel pdflatex processes (default: CPUs)")
    parser.add_argument("--preamble", type=Path, default=None,
                        help="file with the preamble (\\documentclass ... before \\begin{document}); "
                             "default: the compile rule's")
    parser.add_argument("--no-cache", action="store_true", help="ignore and do not fill the verdict cache")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds one equation may take (the rule: 10)")
    parser.add_argument("--top", type=int, default=5, help="how many of the most common errors to list")


def read_equations(source: str, field: str, split: str | None = None) -> list[str]:
    """Equations of a .jsonl file of records (only those of `split` when given), a text file or stdin."""
    if source == "-":
        text = sys.stdin.read()
        is_jsonl = None
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {source} (give a .jsonl file, a text file or - for stdin)")
        text = path.read_text(encoding="utf-8", errors="replace")
        is_jsonl = path.suffix == ".jsonl"
    lines = text.splitlines()
    if is_jsonl is None:  # stdin: JSON records when every non-empty line is one
        stripped = [ln for ln in lines if ln.strip()]
        is_jsonl = bool(stripped) and all(ln.lstrip().startswith("{") for ln in stripped)
    if not is_jsonl:
        return lines
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source}:{number}: not JSON ({exc.msg}); use a .txt file for one equation a line")
        if not isinstance(record, dict) or field not in record:
            raise ValueError(f"{source}:{number}: no field {field!r} in this record (choose it with --field)")
        if split is None or record.get("split") == split:
            out.append(str(record[field]))
    return out


def summarize(verdicts, top: int = 5) -> dict:
    n = len(verdicts)
    compiled = sum(v.ok for v in verdicts)
    errors = Counter(v.error for v in verdicts if not v.ok)
    return {"n": n, "compiled": compiled, "fraction": compiled / n if n else 0.0,
            "errors": errors.most_common(top)}


def run(args: argparse.Namespace) -> int:
    from pipeline.compile_check import DEFAULT_PREAMBLE, check

    preamble = DEFAULT_PREAMBLE
    if args.preamble is not None:
        if not args.preamble.is_file():
            raise FileNotFoundError(f"no such preamble file: {args.preamble}")
        preamble = args.preamble.read_text(encoding="utf-8")
        if "\\begin{document}" in preamble:
            raise ValueError("--preamble must stop before \\begin{document} (the check adds it)")
    if args.workers is not None and args.workers < 1:
        raise ValueError("--workers must be at least 1")
    equations = read_equations(args.file, args.field)
    verdicts = check(equations, workers=args.workers, preamble=preamble, use_cache=not args.no_cache,
                     timeout=args.timeout, progress=sys.stderr.isatty())
    if args.json:
        out = sys.stdout
        for v in verdicts:
            out.write(json.dumps({"ok": v.ok, "error": v.error}) + "\n")
        out.flush()
    # The summary goes to stderr when stdout carries the JSON lines.
    where = sys.stderr if args.json else sys.stdout
    s = summarize(verdicts, args.top)
    print(f"compile-check: n={s['n']} compiled={s['compiled']} fraction={s['fraction']:.4f}", file=where)
    if s["errors"]:
        print("most common errors:", file=where)
    for error, count in s["errors"]:
        print(f"  {count:6d}  {error}", file=where)
    return 0
