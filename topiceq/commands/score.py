"""`topiceq score`: total log-probability and bits per character of a text under a checkpoint."""
from __future__ import annotations

import json

HELP = "score a text: total log-probability and bits per character"


def add_arguments(p) -> None:
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="checkpoint file or folder holding best.pt")
    p.add_argument("text", nargs="?", default=None, help="the text to score (or use --file)")
    p.add_argument("--file", help="score the contents of this file instead")
    p.add_argument("--topic", type=int, default=None, metavar="ID",
                   help="topic-conditioned models: θ = this one topic (default: uniform mixture)")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--json", action="store_true",
                   help='print {"logprob_nats", "n_chars", "bits_per_char", "nats_per_char"}')


def run(args) -> int:
    from pathlib import Path

    from topicrnn.interface import TorchLM
    from topicrnn.train import resolve_device

    from .sample import topic_theta

    if (args.text is None) == (args.file is None):
        raise ValueError("give the text to score either as an argument or with --file (one of them)")
    text = args.text if args.file is None else Path(args.file).read_text(encoding="utf-8")
    if not text:
        raise ValueError("the text to score is empty")
    lm = TorchLM.from_checkpoint(args.checkpoint, device=resolve_device(args.device))
    theta = topic_theta(lm.model.config.topic_dim, args.topic)
    unknown = lm.tokenizer.unknown_fraction(text)
    s = lm.score(text, theta=theta)
    if args.json:
        print(json.dumps({"logprob_nats": s.logprob_nats, "n_chars": s.n_chars, "bits_per_char": s.bits_per_char,
                          "nats_per_char": s.nats_per_char, "unknown_fraction": unknown}))
        return 0
    note = f" ({unknown:.1%} of its symbols unknown to the model, scored as <unk>)" if unknown else ""
    print(f"log p = {s.logprob_nats:.3f} nats over {s.n_chars} characters: {s.nats_per_char:.4f} nats/char, "
          f"{s.bits_per_char:.4f} bits/char{note}")
    return 0
