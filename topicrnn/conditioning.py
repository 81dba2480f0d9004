"""θ for a topic-conditioned model: per equation from its own context, per topic a prototype, from words.

The topic model is read by its owner, `pipeline.topics` (`TopicModel` with gensim, or `ThetaTable` from
theta.npz alone); this module only turns what it offers into θ rows:

* `thetas_for(records, topic_model)`  θ of each equation: the topic model's θ of its own context words (the
  θ the model was trained with); records it was not fitted on get θ inferred from their context.
* `topic_prototypes` / `topic_theta`  θ for a named topic. The *prototype* is the mean θ of the training
  equations whose context's dominant topic is K: the model was trained on θ inferred from ~100 context words,
  which are never one-hot, so a one-hot θ is out of its training distribution while the prototype is a θ it
  has seen many of. One-hot θ (`mode="onehot"`) is kept for the likelihood classifier (p(eq | θ = e_k)).
* `theta_for_request`  `--words` (a mixture inferred from words) or `--topic ID|LABEL` (prototype or one-hot):
  the one meaning of those flags in `topiceq sample`, `score` and `generate`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline.ingest import read_records
from pipeline.topics import InferenceUnavailable

from .interface import LoadedModel

THETA_MODES = ("prototype", "onehot")


def thetas_for(records: Sequence[dict], topic_model: Any, theta_by_id: dict | None = None) -> np.ndarray:
    """θ [n, K] of each record from its own context (TopicModel.theta_by_id, else inferred from its words)."""
    k = int(topic_model.k)
    table = theta_by_id if theta_by_id is not None else topic_model.theta_by_id()
    out = np.full((len(records), k), 1.0 / k, dtype=np.float32)
    missing = []
    for i, r in enumerate(records):
        th = table.get(r["id"])
        if th is None:
            missing.append(i)
        else:
            out[i] = np.asarray(th, dtype=np.float32)
    if missing:
        # Records the topic model was not fitted on (another ingest dir): infer from their context words
        # (a context without a known word gets the LDA prior, as in the topic model's own theta.npz).
        theta, _ = topic_model.infer_many([records[i].get("context", "") for i in missing])
        out[missing] = theta
    return out


def topic_labels(topic_model: Any) -> list[str]:
    labels = list(getattr(topic_model, "labels", []) or [])
    return labels if len(labels) == int(topic_model.k) else [f"topic {i}" for i in range(int(topic_model.k))]


def topic_prototypes(topic_model: Any, records: Sequence[dict] | None = None,
                     theta_by_id: dict | None = None) -> np.ndarray:
    """[K, K]: row k = mean θ of the equations (training split when `records` is given) whose dominant topic
    is k; a topic that dominates no equation falls back to one-hot."""
    k = int(topic_model.k)
    table = theta_by_id if theta_by_id is not None else topic_model.theta_by_id()
    if records is not None:
        thetas = np.stack([np.asarray(table[r["id"]], dtype=np.float64) for r in records if r["id"] in table]) \
            if any(r["id"] in table for r in records) else np.zeros((0, k))
    else:
        thetas = np.stack([np.asarray(v, dtype=np.float64) for v in table.values()]) if table else np.zeros((0, k))
    proto = np.eye(k, dtype=np.float64)
    if len(thetas):
        dom = thetas.argmax(axis=1)
        for t in range(k):
            sel = thetas[dom == t]
            if len(sel):
                proto[t] = sel.mean(axis=0)
    return (proto / proto.sum(axis=1, keepdims=True)).astype(np.float32)


def training_prototypes(topic_model: Any, data_dir: str | Path | None) -> np.ndarray:
    """Prototypes from the training split of the ingest dir (all equations of the θ table without one)."""
    return topic_prototypes(topic_model, list(read_records(data_dir, "train")) if data_dir else None)


def topic_theta(topic_model: Any, topic: int, *, mode: str = "prototype",
                prototypes: np.ndarray | None = None) -> np.ndarray:
    k = int(topic_model.k)
    if not 0 <= topic < k:
        raise ValueError(f"topic {topic} is out of range: the topic model has topics 0..{k - 1}")
    if mode == "onehot":
        th = np.zeros(k, dtype=np.float32)
        th[topic] = 1.0
        return th
    if mode != "prototype":
        raise ValueError(f"unknown theta mode {mode!r}: use one of {', '.join(THETA_MODES)}")
    protos = prototypes if prototypes is not None else topic_prototypes(topic_model)
    return np.asarray(protos[topic], dtype=np.float32)


def theta_for_request(topic_model: Any, *, words: str | Sequence[str] | None = None, topic: str | int | None = None,
                      mode: str = "prototype", data_dir: str | Path | None = None) -> np.ndarray:
    """θ [K] for context words (the mixture the topic model infers) or for one topic (id or label; its
    prototype over the training split of `data_dir`, or one-hot)."""
    if (words is None) == (topic is None):
        raise ValueError("give exactly one of --words WORDS or --topic ID|LABEL")
    if words is not None:
        text = words if isinstance(words, str) else " ".join(words)
        try:
            return np.asarray(topic_model.infer([text])[0], dtype=np.float32)
        except InferenceUnavailable:
            raise
        except ValueError as exc:
            raise ValueError(f"none of the words {text!r} is in the topic model's vocabulary: "
                             f"try words from `topiceq topics show` ({exc})") from None
    index = topic if isinstance(topic, int) else int(topic_model.resolve_topic(str(topic)))
    prototypes = training_prototypes(topic_model, data_dir) if mode == "prototype" else None
    return topic_theta(topic_model, index, mode=mode, prototypes=prototypes)


def default_data_dir(lm: LoadedModel | None, topic_model: Any = None,
                     data_dir: str | Path | None = None) -> Path | None:
    """The ingest dir behind a model: the one given, else the one its training run or topic model names
    (when it is still there)."""
    candidates = [data_dir]
    if lm is not None:
        candidates.append(lm.metadata.get("data_path"))  # stored by every trainer
    candidates.append((getattr(topic_model, "metrics", None) or {}).get("data_dir"))
    for c in candidates:
        if c and Path(c, "equations.jsonl").is_file():
            return Path(c)
    if data_dir:
        raise FileNotFoundError(f"{data_dir}/equations.jsonl is missing: pass the ingest dir the model was trained on")
    return None


def check_topic_dims(lm: LoadedModel, topic_model: Any) -> None:
    """A conditioned model needs the topic model it was trained with (same K)."""
    if lm.conditioned and lm.topic_dim != int(topic_model.k):
        raise ValueError(f"{lm.path} was trained with {lm.topic_dim} topics but the topic model has "
                         f"{topic_model.k}: pass the --topics folder the model was trained with")
