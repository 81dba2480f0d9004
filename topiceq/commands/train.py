"""`topiceq train`: train a language model of any kind from a preset."""
from __future__ import annotations

import json
from pathlib import Path

from topiceq.arguments import add_device

HELP = "train a language model (char text or equations) from a preset"
DESCRIPTION = ("Train the preset's model kind: a torch RNN/GRU/LSTM (the one training loop), an n-gram (counts) "
               "or the numpy RNN. --data is a text file for character presets (tiny, cpu-lstm, shakespeare-lstm, "
               "char-5gram, min-char-rnn) or an ingest dir for equation presets (eq-*), which also need --topics "
               "unless topic_dim=0. Writes CKPTDIR/best.pt (torch: also last.pt and loss_curve.png).")


def add_arguments(p) -> None:
    p.add_argument("--preset", required=True, help="tiny, cpu-lstm, shakespeare-lstm, eq-lstm, eq-cpu, eq-tiny, "
                   "char-5gram, min-char-rnn (topicrnn.presets; an unknown name lists the registered ones)")
    p.add_argument("--out", required=True, metavar="CKPTDIR", help="folder for best.pt, last.pt, loss_curve.png")
    p.add_argument("--data", metavar="PATH", help="text file (char presets) or ingest dir (eq-* presets); "
                   "default for char presets: ../shared/data/text/tinyshakespeare.txt")
    p.add_argument("--topics", metavar="TOPICDIR", help="topic dir holding theta.npz (equation presets)")
    p.add_argument("--max-steps", type=int, help="override the preset's max_steps")
    add_device(p, help_for="training")
    p.add_argument("--resume", action="store_true", help="continue from CKPTDIR/last.pt")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any ModelConfig/TrainConfig field, e.g. --set hidden=256 --set lr=1e-3")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def default_text_path() -> Path:
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "text" / "tinyshakespeare.txt"


def run(args) -> int:
    from topicrnn.presets import apply_overrides, get_preset
    from topicrnn.trainers import train_preset

    preset = apply_overrides(get_preset(args.preset), args.overrides)
    data = args.data
    if data is None and preset.train.data_kind == "text" and not args.resume:
        data = str(default_text_path())
    res = train_preset(preset, args.out, data_path=data, topics_dir=args.topics, resume=args.resume,
                       device=args.device, max_steps=args.max_steps, progress=not args.no_progress)
    if args.json:
        summary = {k: v for k, v in res.items() if k != "history"}
        print(json.dumps(summary))
    else:
        best = res["best_val_nats_per_char"]
        best_s = "n/a" if best is None else f"{best:.4f} nats/char ({res['best_val_bits_per_char']:.4f} bits/char)"
        print(f"trained {args.preset} to step {res['step']} on {res['device']} "
              f"({res['parameters']:,} parameters, vocab {res['vocab_size']}, "
              f"{res['tokens_per_s']:,.0f} tokens/s); best validation {best_s}; checkpoints in {res['out']}")
    return 0
