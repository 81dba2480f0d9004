"""`topiceq sample`: sample text from a trained checkpoint."""
from __future__ import annotations

import json

HELP = "sample text from a trained language model checkpoint"


def add_arguments(p) -> None:
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="checkpoint file or folder holding best.pt")
    p.add_argument("--prime", default="", help="text to start from (fed through the model first)")
    p.add_argument("-n", type=int, default=1, help="number of samples (generated together, batched)")
    p.add_argument("--length", type=int, default=500, help="tokens to generate at most per sample")
    p.add_argument("--temperature", type=float, default=1.0, help="<= 0 means greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--greedy", action="store_true", help="always take the most likely token")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--topic", type=int, default=None, metavar="ID",
                   help="topic-conditioned models: θ = this one topic (default: uniform mixture)")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--json", action="store_true", help='print {"samples": [...]}')


def topic_theta(k: int, topic: int | None):
    """θ for a topic-conditioned model from the command line: one topic, or the uniform mixture."""
    import numpy as np

    if k == 0:
        return None
    if topic is None:
        return np.full(k, 1.0 / k, dtype=np.float32)
    if not 0 <= topic < k:
        raise ValueError(f"--topic {topic}: the model has topics 0..{k - 1}")
    theta = np.zeros(k, dtype=np.float32)
    theta[topic] = 1.0
    return theta


def run(args) -> int:
    from topicrnn.interface import TorchLM
    from topicrnn.train import resolve_device

    lm = TorchLM.from_checkpoint(args.checkpoint, device=resolve_device(args.device))
    theta = topic_theta(lm.model.config.topic_dim, args.topic)
    texts = lm.sample(n=args.n, max_len=args.length, temperature=args.temperature, prime=args.prime,
                      seed=args.seed, theta=theta, top_k=args.top_k, top_p=args.top_p, greedy=args.greedy)
    if args.json:
        print(json.dumps({"samples": texts}))
        return 0
    for i, t in enumerate(texts):
        if args.n > 1:
            print(f"--- sample {i + 1}")
        print(t)
    return 0
