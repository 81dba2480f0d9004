"""Self-contained checkpoints: weights, optimizer, step, configs, vocabulary, topic info, RNG state.

Only tensors, dicts, lists, strings, numbers, bools and None are stored, so `torch.load(weights_only=True)`
reads them on any machine (CPU included). Writes go to a temporary file in the same folder, then
`os.replace`, so a run killed at any moment leaves either the old or the new file, never a torn one.

Keys of the stored dict:
  format "topiceq-lm/1"; kind (rnn | gru | lstm | ngram | numpy-rnn | ...; absent in checkpoints written
  before kinds were recorded, which are torch ones: their model_config's cell); model_config (dict);
  train_config (dict); tokenizer ({"kind", "tokens"}); model (state dict of tensors); optimizer (state_dict
  or None); step (int); best_val (nats/char or None); history ({"step", "train_loss", "val_step",
  "val_nats_per_char"}); topic ({"k", "dir", "labels"} or None); rng ({"torch", "cuda"}); data_state (dict);
  carry (hidden state carried across text chunks, or None).

`load_model(path)` dispatches on the kind through `LOADERS` (a new kind adds its builder with
`register_loader`) and returns a `topicrnn.interface.LoadedModel`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch

from .interface import LoadedModel, SequenceModel
from .models import ModelConfig, RecurrentLM
from .ngram import NGramConfig, NGramLM
from .numpy_rnn import NumpyRNN, NumpyRNNConfig
from .tokenizers import Tokenizer

FORMAT = "topiceq-lm/1"


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


# payload (weights on `device`), tokenizer, device -> the model in eval mode
ModelLoader = Callable[[dict, Tokenizer, torch.device], SequenceModel]


def _recurrent(payload: dict, tokenizer: Tokenizer, device: torch.device) -> RecurrentLM:
    model = RecurrentLM(ModelConfig.from_dict(payload["model_config"]))
    model.load_state_dict(payload["model"])
    return model.to(device).eval()


def _ngram(payload: dict, tokenizer: Tokenizer, device: torch.device) -> NGramLM:
    return NGramLM(tokenizer, NGramConfig.from_dict(payload["model_config"])).load_state_dict(payload["model"])


def _numpy_rnn(payload: dict, tokenizer: Tokenizer, device: torch.device) -> NumpyRNN:
    model = NumpyRNN.from_config(NumpyRNNConfig.from_dict(payload["model_config"]))
    return model.load_state_dict({k: v.cpu() for k, v in payload["model"].items()})


LOADERS: dict[str, ModelLoader] = {"rnn": _recurrent, "gru": _recurrent, "lstm": _recurrent,
                                   "ngram": _ngram, "numpy-rnn": _numpy_rnn}


def register_loader(kind: str, loader: ModelLoader, *, replace: bool = False) -> None:
    """Teach `load_model` a new kind (e.g. from the module that defines the model)."""
    if kind in LOADERS and not replace:
        raise ValueError(f"model kind {kind!r} has a loader already (pass replace=True to redefine it)")
    LOADERS[kind] = loader


def checkpoint_kind(payload: dict) -> str:
    """The kind a checkpoint records; older checkpoints are torch ones and name their cell."""
    return str(payload.get("kind") or payload["model_config"]["cell"])


def load_model(path_or_dir: str | os.PathLike, device="cpu", name: str | None = None) -> LoadedModel:
    """Checkpoint file or folder -> LoadedModel (model in eval mode on `device`, tokenizer, metadata).
    `name` (for tables) defaults to the folder of best.pt / last.pt, else the file's stem."""
    payload = read_checkpoint(path_or_dir, device=device)
    kind = checkpoint_kind(payload)
    if kind not in LOADERS:
        raise RuntimeError(f"{payload['path']} holds a {kind!r} model, which this version cannot load "
                           f"(known kinds: {', '.join(sorted(LOADERS))})")
    tokenizer = Tokenizer.from_dict(payload["tokenizer"])
    model = LOADERS[kind](payload, tokenizer, torch.device(device))
    metadata = {k: v for k, v in payload.items() if k not in ("model", "optimizer", "rng", "carry")}
    file = Path(payload["path"])
    if name is None:
        name = file.parent.name if file.name in ("best.pt", "last.pt") else file.stem
    return LoadedModel(model, tokenizer, metadata, path=file, name=name)
