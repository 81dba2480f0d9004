"""Contexts as prose: how many contexts hold non-prose, and which equations an ingest lost or gained, against
a baseline ingest of the same corpus (e.g. one made by an older commit).

A context "holds non-prose" when one of these detectors fires on its words:
  label key     camelCase tokens (`borelTransf`, `condRuzsaDist`) or lower-case key prefixes left by
                `eq:`/`fig:`/`sec:` keys (`eq`, `fig`, `sec`, `tab`, `thm`, `lem` ...)
  dimension     `4.7cm`, `0pt`, `textwidth`, `linewidth`, `baselineskip` ...
  file name     image extensions (`eps`, `png`, `jpg` ...), `pdf`/`ps` after a token with a digit or `_`,
                `graphics width`, `epsfig`, `psfig`
  bibliography  a journal abbreviation followed by a volume and a year (`Phys Lett B 247 1990`), arXiv ids
The detectors are the same for both ingests, so their false alarms (a "pdf" that is a density, "sec" for
seconds) cancel in the ratio; the matched comparison uses only equations both ingests wrote.

    .venv/bin/python bench/context_prose_bench.py BASELINE_INGEST_DIR NEW_INGEST_DIR [--examples N]
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

DETECTORS = {
    "label key": re.compile(r"\b[a-z]{2,}[A-Z][A-Za-z0-9]{2,}\b|\b(?:eq|eqn|eqs|fig|figs|tab|sec|ssec|subsec|thm|"
                            r"lem|prop|cor|defn|apx|chap|alg)\b"),
    "dimension": re.compile(r"\b\d+(?:pt|cm|mm|em|ex|bp|in)\b|\b\d+ (?:pt|cm|mm)\b|\b(?:textwidth|linewidth|"
                            r"columnwidth|hsize|vsize|baselineskip|textheight|epsfxsize|epsfysize)\b"),
    "file name": re.compile(r"\b(?:eps|png|jpe?g|gif|tiff?|svg|epsf|epsfig|psfig|epsfbox)\b|"
                            r"\b\S*[\d_]\S* (?:pdf|ps)\b|\bgraphics (?:width|height|scale|angle)\b"),
    "bibliography": re.compile(r"\b(?:Phys|Rev|Lett|ApJ|ApJS|ApJL|MNRAS|AJ|PASP|Astron|Astrophys|Nucl|Nature|"
                               r"JHEP|JCAP|Proc|Ann|Commun|Comm|Mon|Not|Soc|Acad|Sci|Math|J)\b(?: \S+){0,4}? \d{1,4}"
                               r"(?: \S+){0,2}? (?:19[5-9]\d|20[0-3]\d)\b|\barXiv \d{4} \d{4,5}\b"),
}


def records(ingest_dir: Path) -> list[dict]:
    with open(ingest_dir / "equations.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def flags(context: str) -> list[str]:
    return [name for name, rx in DETECTORS.items() if rx.search(context)]


def shares(recs: list[dict]) -> tuple[Counter, int, float]:
    hits: Counter = Counter()
    for r in recs:
        found = flags(r["context"])
        hits.update(found)
        hits["any"] += bool(found)
    words = sum(len(r["context"].split()) for r in recs) / max(1, len(recs))
    return hits, len(recs), words


def table(label: str, base: list[dict], new: list[dict]) -> None:
    bh, bn, bw = shares(base)
    nh, nn, nw = shares(new)
    print(f"\n{label}: {bn} baseline contexts (mean {bw:.1f} words), {nn} new contexts (mean {nw:.1f} words)")
    print(f"  {'detector':<14}{'baseline':>10}{'new':>10}{'new/baseline':>14}")
    for name in list(DETECTORS) + ["any"]:
        b = bh[name] / max(1, bn)
        n = nh[name] / max(1, nn)
        ratio = f"{n / b:.3f}" if b else "-"
        print(f"  {name:<14}{b:>9.2%}{n:>10.2%}{ratio:>14}")


def examples(recs: list[dict], n: int) -> None:
    for name, rx in DETECTORS.items():
        tokens = Counter(m.group(0) for r in recs for m in rx.finditer(r["context"]))
        print(f"  {name}: {', '.join(f'{t!r} {c}' for t, c in tokens.most_common(n)) or '-'}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("baseline", type=Path, help="ingest folder of the baseline (equations.jsonl, report.json)")
    ap.add_argument("new", type=Path, help="ingest folder to compare")
    ap.add_argument("--examples", type=int, default=12, metavar="N", help="most common hits shown per detector")
    args = ap.parse_args()
    base, new = records(args.baseline), records(args.new)
    table("all contexts", base, new)
    key = lambda r: (r["paper"], r["equation"])  # noqa: E731
    new_keys = {key(r) for r in new}
    base_keys = {key(r) for r in base}
    both = new_keys & base_keys
    table("equations both wrote", [r for r in base if key(r) in both], [r for r in new if key(r) in both])
    print("\nmost common hits, baseline:")
    examples(base, args.examples)
    print("most common hits, new:")
    examples(new, args.examples)

    brep = json.loads((args.baseline / "report.json").read_text())
    nrep = json.loads((args.new / "report.json").read_text())
    print(f"\nequations: baseline {len(base)}, new {len(new)} ({len(new) - len(base):+d}); "
          f"papers read {brep['papers_read']} -> {nrep['papers_read']}")
    print("dropped per cause (baseline -> new, change):")
    for reason in sorted(set(brep["dropped"]) | set(nrep["dropped"]), key=lambda r: -nrep["dropped"].get(r, 0)):
        b, n = brep["dropped"].get(reason, 0), nrep["dropped"].get(reason, 0)
        print(f"  {reason}: {b} -> {n} ({n - b:+d})")
    lost = Counter(r["paper"] for r in base if key(r) not in new_keys)
    gained = Counter(r["paper"] for r in new if key(r) not in base_keys)
    dup = {d["paper"] for d in nrep.get("duplicate_papers", [])}
    new_papers = {r["paper"] for r in new} - {r["paper"] for r in base}
    print(f"records only in baseline: {sum(lost.values())} (of papers read once now: "
          f"{sum(v for p, v in lost.items() if p in dup)}); only in new: {sum(gained.values())} "
          f"(of papers the baseline did not write: {sum(v for p, v in gained.items() if p in new_papers)})")
    for title, cnt in (("lost", lost), ("gained", gained)):
        print(f"  {title} by paper: " + ", ".join(f"{p} {c}" for p, c in cnt.most_common(8)))
    print(f"content copies in two splits: baseline {_copies_in_two_splits(base)}, new {_copies_in_two_splits(new)}")
    return 0


def _copies_in_two_splits(recs: list[dict]) -> int:
    """Equations whose (equation, context) pair occurs in more than one split: one paper's copies split apart."""
    where: dict[tuple[str, str], set[str]] = {}
    for r in recs:
        where.setdefault((r["equation"], r["context"]), set()).add(r["split"])
    return sum(1 for s in where.values() if len(s) > 1)


if __name__ == "__main__":
    sys.exit(main())
