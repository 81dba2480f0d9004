"""Self-contained checkpoints: weights, optimizer, step, configs, vocabulary, topic info, RNG state.

Only tensors, dicts, lists, strings, numbers, bools and None are stored, so `torch.load(weights_only=True)`
reads them on any machine (CPU included). Writes go to a temporary file in the same folder, then
`os.replace`, so a run killed at any moment leaves either the old or the new file, never a torn one.

Keys of the stored dict:
  format "topiceq-lm/1"; model_config (dict); train_config (dict); tokenizer ({"kind", "tokens"});
  model (state_dict); optimizer (state_dict or None); step (int); best_val (nats/char or None);
  history ({"step", "train_loss", "val_step", "val_nats_per_char"}); topic ({"k", "dir", "labels"} or None);
  rng ({"torch", "cuda"}); data_state (dict); carry (hidden state carried across text chunks, or None);
  context_vocab ({"words"}: a context-encoder model's context words, topicrnn.data.ContextVocab; issue 20).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import torch

from .context_lm import build_model
from .data import ContextVocab
from .models import ModelConfig, RecurrentLM
from .tokenizers import Tokenizer

FORMAT = "topiceq-lm/1"


class LoadedCheckpoint(NamedTuple):
    model: RecurrentLM
    tokenizer: Tokenizer
    metadata: dict  # everything stored except weights/optimizer: configs, step, history, topic, path


def resolve_checkpoint(path_or_dir: str | os.PathLike) -> Path:
    """A checkpoint file, or a folder holding best.pt (else last.pt)."""
    p = Path(path_or_dir)
    if p.is_dir():
        for name in ("best.pt", "last.pt"):
            if (p / name).is_file():
                return p / name
        raise FileNotFoundError(f"{p} holds neither best.pt nor last.pt: train a model into it first "
                                "(topiceq train --out DIR ...)")
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {p} not found: pass a .pt file or a folder holding best.pt")
    return p


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """Write `payload` atomically (tmp file + fsync + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    payload = dict(payload)
    payload.setdefault("format", FORMAT)
    with open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def read_checkpoint(path_or_dir: str | os.PathLike, device="cpu") -> dict:
    path = resolve_checkpoint(path_or_dir)
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # a foreign or damaged file
        raise RuntimeError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise RuntimeError(f"{path} is not a topiceq checkpoint (format {FORMAT})")
    payload["path"] = str(path)
    return payload


def load_checkpoint(path_or_dir: str | os.PathLike, device="cpu") -> LoadedCheckpoint:
    """Checkpoint file or folder -> (model in eval mode on `device`, tokenizer, metadata)."""
    payload = read_checkpoint(path_or_dir, device=device)
    config = ModelConfig.from_dict(payload["model_config"])
    model = build_model(config)
    model.load_state_dict(payload["model"])
    if payload.get("context_vocab"):
        model.context_vocab = ContextVocab.from_dict(payload["context_vocab"])
    model.to(device).eval()
    tokenizer = Tokenizer.from_dict(payload["tokenizer"])
    metadata = {k: v for k, v in payload.items() if k not in ("model", "optimizer", "rng", "carry")}
    return LoadedCheckpoint(model, tokenizer, metadata)
