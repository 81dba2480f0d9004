"""`topiceq score`: total log-probability and bits per character of a text under a checkpoint (any kind)."""
from __future__ import annotations

import json
from pathlib import Path

from topiceq.arguments import add_checkpoint, add_device, add_topic, load_model_arg, theta_arg

HELP = "score a text: total log-probability and bits per character"


def add_arguments(p) -> None:
    add_checkpoint(p)
    p.add_argument("text", nargs="?", default=None, help="the text to score (or use --file)")
    p.add_argument("--file", help="score the contents of this file instead")
    add_topic(p)
    add_device(p)
    p.add_argument("--json", action="store_true",
                   help='print {"logprob_nats", "n_chars", "bits_per_char", "nats_per_char"}')


def run(args) -> int:
    if (args.text is None) == (args.file is None):
        raise ValueError("give the text to score either as an argument or with --file (one of them)")
    text = args.text if args.file is None else Path(args.file).read_text(encoding="utf-8")
    if not text:
        raise ValueError("the text to score is empty")
    lm = load_model_arg(args)
    unknown = lm.tokenizer.unknown_fraction(text)
    s = lm.score(text, theta=theta_arg(args, lm))
    if args.json:
        print(json.dumps({"logprob_nats": s.logprob_nats, "n_chars": s.n_chars, "bits_per_char": s.bits_per_char,
                          "nats_per_char": s.nats_per_char, "unknown_fraction": unknown}))
        return 0
    note = f" ({unknown:.1%} of its symbols unknown to the model, scored as <unk>)" if unknown else ""
    print(f"log p = {s.logprob_nats:.3f} nats over {s.n_chars} characters: {s.nats_per_char:.4f} nats/char, "
          f"{s.bits_per_char:.4f} bits/char{note}")
    return 0
