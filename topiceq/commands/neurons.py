"""`topiceq neurons`: colour a text by one neuron's activation, or find the neurons that track a feature."""
from __future__ import annotations

import argparse
import json
import sys

from topiceq.arguments import add_checkpoint, add_device, add_topic, load_model_arg, theta_arg

HELP = "look inside a model: a text coloured by a neuron, or the neurons that track a feature"
DESCRIPTION = (
    "Step the model through a text one token at a time, record every layer's hidden (and LSTM cell) state, "
    "and write a self-contained HTML page: with --neuron LAYER:INDEX (e.g. c1:37) the text coloured by that "
    "neuron (blue = near 0, green = near ±1) with the model's top-5 next tokens under each token and an "
    "automatic description of what it tracks; with --find FEATURE the neurons ranked by correlation with the "
    "feature and the best ones drawn; --find all writes an index page linking each feature's best neuron "
    "(and one page per feature next to it). Equation models read one equation per line (or a .jsonl of "
    "records); a topic-conditioned model gets θ from --words (with --topics), --topic, or the uniform mixture."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from topicrnn.neuron_features import FEATURES

    add_checkpoint(p)
    p.add_argument("--text", required=True, metavar="FILE",
                   help="text file (equation models: one equation a line), or a .jsonl of records (--field)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--neuron", metavar="LAYER:INDEX", help="the neuron to draw, e.g. h0:12 or c1:37")
    which.add_argument("--find", metavar="FEATURE",
                       help=f"rank neurons by correlation with a feature: {', '.join(FEATURES)}; "
                            "'all' writes an index page and one page per feature")
    p.add_argument("--out", required=True, metavar="PAGE.html", help="the page to write")
    p.add_argument("--start", type=int, default=0, help="first character of the file to record")
    p.add_argument("--chars", type=int, default=20000,
                   help="characters recorded (the correlations use all of them); 0 = the whole file")
    p.add_argument("--show", type=int, default=3000, help="characters drawn on a page")
    p.add_argument("--show-from", type=int, default=0, help="first recorded character drawn")
    p.add_argument("--rendered", type=int, default=3, help="best neurons drawn on a feature page")
    p.add_argument("--field", default="equation", help=".jsonl input: the field holding the text")
    p.add_argument("--split", default=None, help=".jsonl input: keep records of this split only (e.g. test)")
    theta = p.add_mutually_exclusive_group()
    theta.add_argument("--words", nargs="+",
                       help="topic-conditioned models: θ inferred from these context words (the topic model of "
                            "--topics, default: the one the checkpoint was trained with)")
    add_topic(p, group=theta)
    add_device(p)
    p.add_argument("--json", action="store_true", help="print the summary (best neurons, r, pages) as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def read_text(path: str, field: str, split: str | None) -> str:
    """A text file as it is; a .jsonl of records as one record's `field` a line."""
    from pathlib import Path

    from .compile_check import read_equations

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--text {p}: no such file")
    if p.suffix != ".jsonl":
        return p.read_text(encoding="utf-8", errors="replace")
    return "\n".join(" ".join(equation.split()) for equation in read_equations(str(p), field, split))


def excerpt(text: str, start: int, chars: int, records: bool) -> str:
    """text[start:start + chars]; for records, whole lines only."""
    if start < 0 or chars < 0:
        raise ValueError("--start and --chars must be >= 0")
    out = text[start:start + chars] if chars else text[start:]
    if records:
        if start > 0 and text[start - 1:start] != "\n":
            out = out.split("\n", 1)[1] if "\n" in out else ""
        if chars and start + chars < len(text) and text[start + chars:start + chars + 1] != "\n":
            out = out.rsplit("\n", 1)[0] if "\n" in out else ""
    return out


def _theta(args, lm):
    """θ for a topic-conditioned model and a note for the page: from --words, --topic (prototype or one-hot,
    as in `topiceq generate`), or the uniform mixture (`theta_arg`)."""
    import numpy as np

    theta = theta_arg(args, lm)
    if theta is None:
        return None, ""
    if args.words:
        top = np.argsort(-theta)[:3]
        return theta, (f"θ from the words {' '.join(args.words)!r} "
                       f"(top topics {', '.join(f'{i}: {theta[i]:.0%}' for i in top)})")
    return theta, (f"θ = the uniform mixture of the {lm.topic_dim} topics" if args.topic is None
                   else f"θ = topic {args.topic} ({args.theta})")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from topicrnn.neuron_features import FEATURES
    from topicrnn.neuron_pages import PageContext, write_pages
    from topicrnn.neurons import parse_unit, record, text_segments

    if args.find is not None and args.find != "all" and args.find not in FEATURES:
        raise ValueError(f"--find {args.find!r}: unknown feature; known: {', '.join(FEATURES)}, or all")
    if args.neuron is not None:
        parse_unit(args.neuron)  # the spelling, before the model is loaded; the range after recording
    if args.show < 1 or args.rendered < 1:
        raise ValueError("--show and --rendered must be >= 1")
    out = Path(args.out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"--out {out}: give a page name ending in .html")
    lm = load_model_arg(args)
    model, tokenizer, meta, ckpt = lm.model, lm.tokenizer, lm.metadata, lm.path
    records = meta.get("train_config", {}).get("data_kind") == "records"
    text = excerpt(read_text(args.text, args.field, args.split), args.start, args.chars, records)
    if not text.strip():
        raise ValueError(f"--text {args.text}: nothing to read there (empty file, or --start past its end)")
    theta, theta_note = _theta(args, lm)

    recording = record(model, tokenizer, text_segments(text, records), text=text, theta=theta,
                       progress=not args.no_progress)
    if args.neuron is not None:
        parse_unit(args.neuron, recording)
    cfg = meta.get("model_config", {})
    ctx = PageContext(model=f"{cfg.get('cell', '?')} {cfg.get('layers', '?')} × {cfg.get('hidden', '?')}, "
                            f"{tokenizer.kind} tokens",
                      checkpoint=str(ckpt), text_name=Path(args.text).name + (f" from character {args.start:,}"
                                                                               if args.start else ""),
                      show_from=args.show_from, show_chars=args.show, theta_note=theta_note)
    summary = write_pages(recording, out, ctx, neuron=args.neuron, find=args.find, rendered=args.rendered)
    unknown = tokenizer.unknown_fraction(text)
    summary.update({"tokens": len(recording), "unknown_fraction": unknown})
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
        return 0
    if unknown:
        print(f"note: {unknown:.1%} of the text's symbols are unknown to the model (read as <unk>)", file=sys.stderr)
    if args.neuron is not None:
        print(summary["summary"])
    else:
        for name, best in summary["best"].items():
            print(f"{name:>14}: " + ("not in this text" if best is None else f"{best['unit']:>7}  r = {best['r']:+.3f}"))
    print(f"{len(recording):,} tokens recorded; wrote {', '.join(summary['pages'][:3])}"
          + (f" and {len(summary['pages']) - 3} more" if len(summary["pages"]) > 3 else ""))
    return 0
