"""The lecture's slide: five generated equations per topic next to five real ones of the same topic.

For each shown topic (by default the `--topics-shown` topics with the most real test equations), the model
writes equations through the one generation path (`topicrnn.generation.generate_for_topics`, θ = the topic's
prototype, the flow's decoding: syntax constraint with the well-formedness rules, T and length control as
`topiceq run` uses them); the first `--per-topic` that compile (real pdflatex) are shown next to as many real
test-split equations whose context's dominant topic it is, drawn with the same seed. Prints Markdown (or
writes it to `--out`), one section per topic:

    python bench/topic_slide.py --data data/ingest --topics data/topics --checkpoint data/ckpt/eq \\
        --topics-shown 6 --per-topic 5 --out docs/topic_slide.md
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipeline.quiz import quiz_reals  # noqa: E402
from pipeline.topics import ThetaTable  # noqa: E402
from topicrnn.checkpoint import load_model  # noqa: E402
from topicrnn.generation import DEFAULT_LENGTH_CONTROL, DEFAULT_TEMPERATURE, LENGTH_CONTROL, quiz_fakes  # noqa: E402


def code(equation: str) -> str:
    """An equation as a Markdown table cell: a code span, pipes escaped."""
    return "`" + equation.replace("|", "\\|").replace("`", "'") + "`"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, type=Path, help="ingest folder the model was trained on")
    ap.add_argument("--topics", required=True, type=Path, help="topic folder the model was trained with")
    ap.add_argument("--checkpoint", required=True, help="checkpoint file or folder")
    ap.add_argument("--topics-shown", type=int, default=6, help="topics with the most real test equations (0: all)")
    ap.add_argument("--per-topic", type=int, default=5)
    ap.add_argument("--candidates", type=int, default=3, help="generated per shown equation (some do not compile)")
    ap.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE)
    ap.add_argument("--lengths", choices=list(LENGTH_CONTROL), default=DEFAULT_LENGTH_CONTROL)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, help="write the Markdown here instead of printing it")
    args = ap.parse_args(argv)

    table = ThetaTable(args.topics)
    _, reals = quiz_reals(args.data, table.theta_by_id())  # test split, each with its dominant topic
    by_topic: dict[int, list[str]] = {}
    for r in reals:
        by_topic.setdefault(int(r["topic"]), []).append(r["equation"])
    ranked = sorted(by_topic, key=lambda t: (-len(by_topic[t]), t))
    shown = sorted(ranked[:args.topics_shown] if args.topics_shown else ranked)

    lm = load_model(args.checkpoint, device=args.device)
    candidates = quiz_fakes(lm, table, shown, args.per_topic * args.candidates, data_dir=args.data,
                            seed=args.seed, temperature=args.temperature, length_control=args.lengths)
    fakes: dict[int, list[str]] = {t: [] for t in shown}
    for f in candidates:
        if f.compiles and len(fakes[f.topic]) < args.per_topic:
            fakes[f.topic].append(f.equation)

    rng = np.random.default_rng(args.seed)
    total = len(reals)
    lines = [f"Model `{lm.name}` ({lm.n_parameters():,} parameters), T = {args.temperature:g}, lengths "
             f"{args.lengths}, seed {args.seed}; {len(candidates)} generated for {len(shown)} topics, "
             f"{sum(f.compiles for f in candidates)} compile.", ""]
    for t in shown:
        pool = by_topic[t]
        real = [pool[i] for i in rng.choice(len(pool), size=min(args.per_topic, len(pool)), replace=False)]
        lines += [f"**{t}: {table.labels[t]}** ({len(pool)} of {total} real test equations)", "",
                  "| generated | real |", "|---|---|"]
        for i in range(max(len(real), len(fakes[t]))):
            fake = code(fakes[t][i]) if i < len(fakes[t]) else "–"
            lines.append(f"| {fake} | {code(real[i]) if i < len(real) else '–'} |")
        lines.append("")
    text = "\n".join(lines)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
