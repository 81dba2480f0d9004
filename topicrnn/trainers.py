"""Training for every model kind: `train_preset(preset, out_dir, ...)` dispatches on the preset's kind.

  rnn | gru | lstm  -> `topicrnn.train.train`, the one torch loop (text or equation records, θ, resume);
  ngram             -> count the n-grams of the training text (`NGramLM.fit`);
  numpy-rnn         -> min-char-rnn's Adagrad loop (`NumpyRNN.fit`).

Every trainer writes OUT/best.pt, which `topicrnn.checkpoint.load_model` reads, and returns a summary with
at least: step, best_val_nats_per_char, best_val_bits_per_char, tokens_per_s, device, out, parameters,
vocab_size. The n-gram and the numpy RNN train on one text file: its first 1 - val_fraction, validated on
the rest with the one scoring path. A new kind registers its trainer with `register_trainer(kind, fn)`
(how to add a kind: topicrnn/presets.py).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from .checkpoint import save_checkpoint
from .data import read_text, split_text
from .interface import LN2, LoadedModel, SequenceModel
from .ngram import NGramLM
from .numpy_rnn import NumpyRNN
from .presets import Preset
from .tokenizers import Tokenizer, make_tokenizer
from .train import train

# trainer(preset, out_dir, *, data_path, topics_dir, resume, device, max_steps, progress) -> summary dict
Trainer = Callable[..., dict]
TRAINERS: dict[str, Trainer] = {}


def register_trainer(kind: str, trainer: Trainer, *, replace: bool = False) -> None:
    if kind in TRAINERS and not replace:
        raise ValueError(f"model kind {kind!r} has a trainer already (pass replace=True to redefine it)")
    TRAINERS[kind] = trainer


def train_preset(preset: Preset, out_dir, *, data_path=None, topics_dir=None, resume: bool = False,
                 device: str = "auto", max_steps: int | None = None, progress: bool = True) -> dict:
    """Train `preset` (any kind) into out_dir; returns the trainer's summary."""
    if preset.kind not in TRAINERS:
        raise ValueError(f"no trainer for model kind {preset.kind!r} (preset {preset.name!r}); "
                         f"known kinds: {', '.join(sorted(TRAINERS))}")
    return TRAINERS[preset.kind](preset, out_dir, data_path=data_path, topics_dir=topics_dir, resume=resume,
                                 device=device, max_steps=max_steps, progress=progress)


def _train_torch(preset: Preset, out_dir, **kwargs) -> dict:
    return train(preset.model, preset.train, out_dir, preset=preset.name, **kwargs)


# ----------------------------------------------------------------------------- models fitted on one text

def _text_split(preset: Preset, data_path, topics_dir, resume: bool) -> tuple[str, str]:
    if resume:
        raise ValueError(f"--resume: a {preset.kind} model is trained in one call; there is nothing to resume")
    if topics_dir is not None:
        raise ValueError(f"a {preset.kind} model takes no topic vector: drop --topics")
    if data_path is None or Path(data_path).is_dir():
        raise ValueError(f"preset {preset.name!r} trains on one text file: pass --data PATH/TO/text.txt")
    return split_text(read_text(data_path), preset.train.val_fraction)


def _save_and_summarise(preset: Preset, out_dir, model: SequenceModel, tokenizer: Tokenizer, val_text: str, *,
                        step: int, seconds: float, tokens: int, data_path, history: dict | None = None) -> dict:
    """Validate with the one scoring path, write OUT/best.pt, return the common summary."""
    val = LoadedModel(model, tokenizer).score(val_text).nats_per_char
    history = history or {"step": [], "train_loss": [], "val_step": [], "val_nats_per_char": []}
    history["val_step"].append(step)
    history["val_nats_per_char"].append(val)
    out = Path(out_dir)
    save_checkpoint(out / "best.pt", {
        "kind": model.kind, "model_config": preset.model.to_dict(), "train_config": preset.train.to_dict(),
        "tokenizer": tokenizer.to_dict(), "model": model.state_dict(), "optimizer": None, "step": step,
        "best_val": val, "history": history,
        "topic": None, "preset": preset.name, "data_path": str(Path(data_path).resolve()),
        "data_info": {"train_tokens": tokens, "val_chars": len(val_text)}})
    return {"step": step, "best_val_nats_per_char": val, "best_val_bits_per_char": val / LN2,
            "last_val": {"nats_per_char": val, "bits_per_char": val / LN2}, "tokens_per_s": tokens / max(seconds, 1e-9),
            "train_seconds": seconds, "device": "cpu", "out": str(out), "parameters": model.num_parameters(),
            "vocab_size": tokenizer.vocab_size, "stopped_for_time": False}


def _train_ngram(preset: Preset, out_dir, *, data_path, topics_dir, resume, device, max_steps, progress) -> dict:
    """Count the n-grams of the training text (`max_steps` and `device` do not apply: one pass on the CPU)."""
    train_text, val_text = _text_split(preset, data_path, topics_dir, resume)
    t0 = time.perf_counter()
    tokenizer = make_tokenizer(preset.model.tokenizer).fit(train_text)
    model = NGramLM(tokenizer, preset.model).fit(train_text)
    tokens = len(tokenizer.tokenize(train_text))
    return _save_and_summarise(preset, out_dir, model, tokenizer, val_text, step=1,
                               seconds=time.perf_counter() - t0, tokens=tokens, data_path=data_path)


def _train_numpy_rnn(preset: Preset, out_dir, *, data_path, topics_dir, resume, device, max_steps,
                     progress) -> dict:
    """min-char-rnn's loop for `max_steps` steps (on the CPU, in numpy)."""
    train_text, val_text = _text_split(preset, data_path, topics_dir, resume)
    cfg = preset.train
    steps = cfg.max_steps if max_steps is None else int(max_steps)
    t0 = time.perf_counter()
    tokenizer = make_tokenizer(cfg.tokenizer).fit(train_text)
    preset.model.vocab_size = tokenizer.vocab_size
    model = NumpyRNN.from_config(preset.model)
    curve = model.fit(tokenizer.encode(train_text), steps=steps, seq_length=cfg.seq_length,
                      batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, progress=progress)
    history = {"step": [100 * (i + 1) for i in range(len(curve))], "train_loss": curve, "val_step": [],
               "val_nats_per_char": []}
    return _save_and_summarise(preset, out_dir, model, tokenizer, val_text, step=steps,
                               seconds=time.perf_counter() - t0, tokens=steps * cfg.seq_length * cfg.batch_size,
                               data_path=data_path, history=history)


for _kind in ("rnn", "gru", "lstm"):
    register_trainer(_kind, _train_torch)
register_trainer("ngram", _train_ngram)
register_trainer("numpy-rnn", _train_numpy_rnn)
