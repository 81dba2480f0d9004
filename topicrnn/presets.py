"""Named (model config, train config) pairs for `topiceq train --preset NAME`, and `--set key=value` overrides.

A preset names a model kind through its model config's `kind`: `ModelConfig` (rnn | gru | lstm, its cell;
context-lstm with a context encoder or FiLM, topicrnn.context_lm), `NGramConfig` (ngram), `NumpyRNNConfig`
(numpy-rnn), `HMMConfig` (hmm). Add a preset with `register_preset(Preset(...))` (e.g. from the module that
needs it). `--set` keys are field names of either dataclass (`hidden=256`, `lr=1e-3`), or
qualified (`model.dropout=0.2`, `train.max_steps=50`); values are parsed to the field's type (`none` for
optional fields).

Adding a model kind (how `hmm` was added: topicrnn/hmm.py, hmm_config.py, hmm_lm.py):
  1. the model implements the step protocol (topicrnn.interface.SequenceModel) with `kind = "hmm"`; a config
     dataclass (`DictConfig` of topicrnn/configs.py) with the class attribute `kind = "hmm"` configures it;
  2. a trainer fn(preset, out_dir, *, data_path, topics_dir, resume, device, max_steps, progress) fits it,
     writes OUT/best.pt with `checkpoint.save_checkpoint` (with "kind": "hmm") and returns the summary
     described in topicrnn/trainers.py; a loader fn(payload, tokenizer, device) rebuilds the model;
  3. one registration in each registry: `register_trainer("hmm", train_hmm)` at the end of
     topicrnn/trainers.py, `"hmm": load_hmm` in `LOADERS` of topicrnn/checkpoint.py, and
     `register_preset(Preset("hmm-...", "...", HMMConfig(...), HMMTrainConfig(...)))` below.
Then `topiceq train --preset hmm-...`, `topiceq score` and `topiceq sample` work for it (tests/test_train.py
adds a toy kind this way).
"""
from __future__ import annotations

import copy
import types
import typing
from dataclasses import dataclass, fields
from typing import Any

from .hmm_config import HMMConfig, HMMTrainConfig
from .models import ModelConfig
from .ngram import NGramConfig, NGramTrainConfig
from .numpy_rnn import NumpyRNNConfig, NumpyRNNTrainConfig
from .train import TrainConfig


@dataclass
class Preset:
    name: str
    description: str
    model: Any  # a model config dataclass with a `kind` (ModelConfig, NGramConfig, NumpyRNNConfig, ...)
    train: Any  # its train config dataclass (TrainConfig, NGramTrainConfig, NumpyRNNTrainConfig, ...)

    @property
    def kind(self) -> str:
        return self.model.kind


PRESETS: dict[str, Preset] = {}


def register_preset(preset: Preset, *, replace: bool = False) -> Preset:
    if preset.name in PRESETS and not replace:
        raise ValueError(f"preset {preset.name!r} exists already (pass replace=True to redefine it)")
    PRESETS[preset.name] = preset
    return preset


def get_preset(name: str) -> Preset:
    """A deep copy of the named preset (so overrides never touch the registry)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return copy.deepcopy(PRESETS[name])


def _parse(value: str, typ, key: str):
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin in (typing.Union, types.UnionType):
        if value.lower() in ("none", "null") and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _parse(value, inner[0], key)
    try:
        if typ is bool:
            low = value.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if typ is int:
            return int(float(value)) if "e" in value.lower() else int(value)
        if typ is float:
            return float(value)
        return typ(value)
    except ValueError:
        raise ValueError(f"--set {key}={value}: not a valid {getattr(typ, '__name__', typ)}") from None


def apply_overrides(preset: Preset, overrides: list[str] | None) -> Preset:
    """Apply `key=value` strings to a preset (in place) and return it."""
    targets = {"model": preset.model, "train": preset.train}
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        key = key.strip()
        if "." in key:
            scope, name = key.split(".", 1)
            if scope not in targets:
                raise ValueError(f"--set {key}: scope must be model. or train.")
            owners = [targets[scope]] if name in {f.name for f in fields(targets[scope])} else []
        else:
            name = key
            owners = [o for o in targets.values() if name in {f.name for f in fields(o)}]
        if not owners:
            known = sorted({f.name for o in targets.values() for f in fields(o)})
            raise ValueError(f"--set {key}: no such setting; known: {', '.join(known)}")
        obj = owners[0]
        typ = typing.get_type_hints(type(obj))[name]
        setattr(obj, name, _parse(value.strip(), typ, key))
    return preset


# ----------------------------------------------------------------------------- built-in presets

register_preset(Preset(
    "tiny", "CPU smoke run: 1-layer 64-unit char LSTM, a few hundred steps",
    ModelConfig(cell="lstm", layers=1, hidden=64, embedding=32, dropout=0.0),
    TrainConfig(batch_size=16, seq_len=64, max_steps=200, lr=3e-3, warmup_steps=10, eval_every=50,
                eval_max_batches=8, eval_batch_size=8, eval_seq_len=256, log_every=5, save_every=25, threads=1)))

register_preset(Preset(
    "cpu-lstm", "char LSTM for a few minutes on a busy 2-core CPU (2 x 128, ~1.4M training tokens)",
    ModelConfig(cell="lstm", layers=2, hidden=128, embedding=64, dropout=0.0),
    TrainConfig(batch_size=32, seq_len=64, max_steps=700, lr=4e-3, warmup_steps=20, eval_every=100,
                eval_batch_size=16, eval_seq_len=512, log_every=10, threads=1)))

register_preset(Preset(
    "shakespeare-lstm", "the lecture's char model: 2 x 512 LSTM, emb 128, dropout 0.3, AdamW 2e-3 cosine, "
    "batch 128 x 256, bf16 on CUDA (GPU run)",
    ModelConfig(cell="lstm", layers=2, hidden=512, embedding=128, dropout=0.3),
    TrainConfig(batch_size=128, seq_len=256, max_steps=3000, lr=2e-3, min_lr_ratio=0.1, warmup_steps=100,
                weight_decay=0.01, grad_clip=1.0, eval_every=100, eval_batch_size=16, eval_seq_len=512,
                log_every=25, bf16=True)))

# Equation models (issue 6): LaTeX tokens, records of an ingest dir, θ joined to every step's input.
# topic_dim=-1 means "K of the --topics dir"; `--set topic_dim=0` gives the unconditioned baseline.
register_preset(Preset(
    "eq-lstm", "equation model: 2 x 512 LSTM on LaTeX tokens, θ joined to every input (GPU run)",
    ModelConfig(cell="lstm", layers=2, hidden=512, embedding=128, dropout=0.3, topic_dim=-1, topic_mode="input"),
    TrainConfig(data_kind="records", tokenizer="latex", batch_size=128, max_steps=3000, lr=2e-3,
                warmup_steps=100, eval_every=100, early_stop_evals=8, log_every=25, max_record_tokens=400,
                min_count=2)))

register_preset(Preset(
    "eq-cpu", "equation model small enough for `make run` on 2 CPU cores (2 x 128, minutes)",
    ModelConfig(cell="lstm", layers=2, hidden=128, embedding=64, dropout=0.1, topic_dim=-1, topic_mode="input"),
    TrainConfig(data_kind="records", tokenizer="latex", batch_size=32, max_steps=600, lr=3e-3, warmup_steps=30,
                eval_every=250, early_stop_evals=4, log_every=10, max_record_tokens=300, min_count=2)))

register_preset(Preset(
    "eq-tiny", "equation model for tests: 1 x 32 LSTM, a few dozen steps",
    ModelConfig(cell="lstm", layers=1, hidden=32, embedding=16, dropout=0.0, topic_dim=-1, topic_mode="input"),
    TrainConfig(data_kind="records", tokenizer="latex", batch_size=8, max_steps=30, lr=5e-3, warmup_steps=3,
                eval_every=10, log_every=5, max_record_tokens=300, threads=1)))

# Issue 20: θ from the model's own context encoder (a neural topic model over the context words, trained
# jointly), FiLM on each layer's input and output, and what keeps θ from memorising papers (30% of rows see
# no context, the encoder sees a random half of each context). topic_dim=-1: the LDA of --topics is the
# bridge for generation by topic (its topics' top words -> the encoder); --set topic_dim=0 trains without it.
_CTX = dict(context_encoder=True, film="io", topic_dim=-1, topic_mode="input")
_CTX_TRAIN = dict(ntm_weight=1.0, cond_dropout=0.3, context_keep=0.5)
register_preset(Preset(
    "eq-ctx-lstm", "equation model with a context encoder + FiLM: 2 x 512 LSTM, θ from the context words (GPU run)",
    ModelConfig(cell="lstm", layers=2, hidden=512, embedding=128, dropout=0.3, context_hidden=128, **_CTX),
    TrainConfig(data_kind="records", tokenizer="latex", batch_size=128, max_steps=3000, lr=2e-3,
                warmup_steps=100, eval_every=100, early_stop_evals=8, log_every=25, max_record_tokens=400,
                min_count=2, **_CTX_TRAIN)))

# The CPU preset is the measured best of bench/conditioning_bench.py --size cpu (docs/results.md, issue 20):
# context encoder of width 32 and no conditioning dropout / word dropout, which cost more than they saved on
# unseen papers at 661, 1,500 and 3,000 steps (−7.6 % vs −0.9 % against plain at 661 steps, 3 seeds).
register_preset(Preset(
    "eq-ctx-cpu", "equation model with a context encoder + FiLM, small enough for 2 CPU cores (2 x 128)",
    ModelConfig(cell="lstm", layers=2, hidden=128, embedding=64, dropout=0.1, context_hidden=32, **_CTX),
    TrainConfig(data_kind="records", tokenizer="latex", batch_size=32, max_steps=600, lr=3e-3, warmup_steps=30,
                eval_every=100, early_stop_evals=4, log_every=10, max_record_tokens=300, min_count=2,
                ntm_weight=1.0, cond_dropout=0.0, context_keep=1.0)))

register_preset(Preset(
    "eq-ctx-tiny", "context-encoder equation model for tests: 1 x 32 LSTM, a few dozen steps",
    ModelConfig(cell="lstm", layers=1, hidden=32, embedding=16, dropout=0.0, context_topics=8, context_hidden=16,
                **_CTX),
    TrainConfig(data_kind="records", tokenizer="latex", batch_size=8, max_steps=30, lr=5e-3, warmup_steps=3,
                eval_every=10, log_every=5, max_record_tokens=300, threads=1, context_min_df=1, **_CTX_TRAIN)))

# The lecture's models before the LSTM, on one text file (default: tinyshakespeare): validation figures on
# its last 10% (docs/results.md).
register_preset(Preset(
    "char-5gram", "character 5-gram, interpolated Kneser-Ney (fitted in one pass; --set order=6, "
    "--set smoothing=addk, --set tokenizer=word)",
    NGramConfig(order=5, tokenizer="char", smoothing="kn"), NGramTrainConfig()))

register_preset(Preset(
    "min-char-rnn", "the lecture's numpy RNN: tanh, 100 hidden, BPTT 25, clip ±5, Adagrad 0.1 (--set batch_size=32 "
    "for 32 parallel streams)",
    NumpyRNNConfig(hidden=100), NumpyRNNTrainConfig(max_steps=5000, seq_length=25, batch_size=1, lr=0.1)))

register_preset(Preset(
    "hmm-char", "the lecture's hidden Markov model: 16 states over characters, Baum-Welch (EM) for at most 100 "
    "iterations (--set n_states=128, --set tokenizer=word, --max-steps N: EM iterations)",
    HMMConfig(n_states=16, tokenizer="char"), HMMTrainConfig(iterations=100)))
