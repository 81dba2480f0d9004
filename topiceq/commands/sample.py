"""`topiceq sample`: sample text from a trained checkpoint (any model kind)."""
from __future__ import annotations

import json

from topiceq.arguments import add_checkpoint, add_device, add_topic, load_model_arg, theta_arg

HELP = "sample text from a trained language model checkpoint"


def add_arguments(p) -> None:
    add_checkpoint(p)
    p.add_argument("--prime", default="", help="text to start from (fed through the model first)")
    p.add_argument("-n", type=int, default=1, help="number of samples (generated together, batched)")
    p.add_argument("--length", type=int, default=500, help="tokens to generate at most per sample")
    p.add_argument("--temperature", type=float, default=1.0, help="<= 0 means greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--greedy", action="store_true", help="always take the most likely token")
    p.add_argument("--seed", type=int, default=None)
    add_topic(p)
    add_device(p)
    p.add_argument("--json", action="store_true", help='print {"samples": [...]}')


def run(args) -> int:
    lm = load_model_arg(args)
    texts = lm.sample(args.n, args.length, temperature=args.temperature, prime=args.prime, seed=args.seed,
                      theta=theta_arg(args, lm), top_k=args.top_k, top_p=args.top_p, greedy=args.greedy)
    if args.json:
        print(json.dumps({"samples": texts}))
        return 0
    for i, t in enumerate(texts):
        if args.n > 1:
            print(f"--- sample {i + 1}")
        print(t)
    return 0
