"""The HMM as a language model of the one interface (`topiceq train --preset hmm-char`, `score`, `sample`).

The symbols are a tokenizer's ids fitted on the training text (characters, words or LaTeX tokens: `HMMConfig`);
the tokenizer's <bos> is the HMM's start symbol (a step on it leaves the state as it is), so the one scoring
path and the one sampler (topicrnn.interface) see p(x_1), p(x_2 | x_1), ... exactly as `HMM.score` computes
them. The special tokens never occur in the training symbols: the pseudo-counts give them, like any unused
emission, a tiny probability, so held-out text (and an <unk>) never has probability 0. The step's state is the
filtered posterior [B, S] (`state_layers` -> {"posterior"}).

`fit_hmm_lm` is shared by the trainer (topicrnn.trainers) and `topiceq hmm charlm` (topicrnn.hmm_experiments);
`load_hmm` is the checkpoint loader (topicrnn.checkpoint).
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
from tqdm import tqdm

from .device import resolve_device
from .hmm import HMM
from .hmm_config import HMMConfig, HMMTrainConfig
from .tokenizers import Tokenizer, make_tokenizer

DTYPES = {"float64": torch.float64, "float32": torch.float32}


def build_hmm(model_cfg: HMMConfig, train_cfg: HMMTrainConfig, tokenizer: Tokenizer, device="cpu") -> HMM:
    """An unfitted HMM over the tokenizer's ids with the training settings (seeded random start)."""
    if model_cfg.n_states < 1:
        raise ValueError(f"n_states must be >= 1, not {model_cfg.n_states}")
    if train_cfg.dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {train_cfg.dtype!r}")
    prior = 1.0 + train_cfg.transition_pseudocount
    return HMM(model_cfg.n_states, tokenizer.vocab_size, start_symbol=tokenizer.bos_id, n_iter=train_cfg.iterations,
               tol=train_cfg.tol, emissionprob_prior=1.0 + train_cfg.emission_pseudocount, transmat_prior=prior,
               startprob_prior=prior, seed=train_cfg.seed, device=resolve_device(device, mps=False),
               dtype=DTYPES[train_cfg.dtype], chunk_length=train_cfg.chunk_length)


def fit_hmm_lm(train_text: str, model_cfg: HMMConfig, train_cfg: HMMTrainConfig, *, device="cpu",
               iterations: int | None = None, progress: bool = True) -> tuple[HMM, Tokenizer, dict]:
    """EM on the training text's symbols -> (model, tokenizer, {"train_bits_per_char": [...] per iteration,
    "seconds", "iterations", "symbols"}). `iterations` overrides the config's (`--max-steps`)."""
    if not train_text:
        raise ValueError("the training text is empty")
    tok = make_tokenizer(model_cfg.tokenizer).fit(train_text)
    ids = np.asarray(tok.encode(train_text))
    model = build_hmm(model_cfg, train_cfg, tok, device)
    if iterations is not None:
        model.n_iter = int(iterations)
    bar = tqdm(total=model.n_iter, desc=f"HMM, {model_cfg.n_states} states", unit="it", disable=not progress,
               dynamic_ncols=True)
    curve: list[float] = []
    started = time.perf_counter()

    def tick(m, stats) -> bool:
        curve.append(-float(m.monitor_.history[-1]) / len(train_text) / math.log(2.0))
        bar.update(1)
        bar.set_postfix(bits=f"{curve[-1]:.4f}")
        return train_cfg.max_seconds is not None and time.perf_counter() - started > train_cfg.max_seconds

    model.fit(ids, callback=tick)
    bar.close()
    return model, tok, {"train_bits_per_char": curve, "seconds": time.perf_counter() - started,
                        "iterations": model.monitor_.iter, "symbols": len(ids)}


def load_hmm(payload: dict, tokenizer: Tokenizer, device: torch.device) -> HMM:
    """Checkpoint loader (topicrnn.checkpoint.LOADERS["hmm"])."""
    cfg = HMMConfig.from_dict(payload["model_config"])
    train = HMMTrainConfig.from_dict(payload.get("train_config") or {})
    model = HMM(cfg.n_states, tokenizer.vocab_size, start_symbol=tokenizer.bos_id, init_params="", device=device,
                dtype=DTYPES.get(train.dtype, torch.float64))
    return model.load_state_dict(payload["model"])
