"""Checks of the command line's inputs, run by `topiceq.cli` before a command starts, so that bad input gets
one line that says what is wrong and what to do instead of a traceback (or, worse, a silent wrong answer):
a truncated or foreign checkpoint, a character model where an equation model is needed, a topic model fitted
on another ingest than --data, or one other than the model was trained with.

The checks read inputs through their owners (topicrnn.checkpoint, pipeline.topics, pipeline.ingest) and
keep the heavy imports inside the functions (this module is imported to build --help).
"""
from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Any


class UsageError(Exception):
    """An error whose message tells the user what to do; printed as one line, exit status 2."""


# command -> the kind of checkpoint it needs ("equation" or "any").
CHECKPOINT_KIND = {"generate": "equation", "quiz": "equation", "evaluate": "equation", "sample": "any",
                   "score": "any"}
# Share of an ingest's equations that must have a topic mixture in the topic model given with it.
MIN_THETA_COVERAGE = 0.5


def validate(command: str, args: argparse.Namespace) -> None:
    """Raise UsageError for inputs that cannot work together; do nothing for a command with none of them."""
    checkpoints = getattr(args, "checkpoint", None)
    if checkpoints is not None and command in CHECKPOINT_KIND:
        for path in checkpoints if isinstance(checkpoints, list) else [checkpoints]:
            payload = read_checkpoint_or_explain(path, CHECKPOINT_KIND[command], command)
            if getattr(args, "topics", None):
                check_checkpoint_topics(path, payload, args.topics)
    data, topics = getattr(args, "data", None), getattr(args, "topics", None)
    if data and topics and Path(data).is_dir():
        check_topics_fit_ingest(Path(topics), Path(data))


def read_checkpoint_or_explain(path: str, kind: str, command: str) -> dict[str, Any]:
    """The checkpoint's stored dict (topicrnn.checkpoint.read_checkpoint), or a UsageError that says why not."""
    from topicrnn.checkpoint import read_checkpoint, resolve_checkpoint

    file = resolve_checkpoint(path)  # FileNotFoundError with its own advice
    try:
        payload = read_checkpoint(file)
    except RuntimeError as exc:
        if exc.__cause__ is None:  # readable, but not ours (the reader's message says so)
            raise UsageError(f"{exc}: pass a checkpoint written by `topiceq train`") from None
        with open(file, "rb") as fh:
            is_zip = fh.read(4) == b"PK\x03\x04"  # torch.save writes a zip archive
        what = ("is truncated or damaged (an interrupted copy?)" if is_zip
                else "is not a checkpoint written by `topiceq train`")
        raise UsageError(f"checkpoint {file} {what}: train it again or pass another --checkpoint") from None
    if kind == "equation" and payload.get("train_config", {}).get("data_kind") != "records":
        raise UsageError(f"{file} is a character model (trained on a text file); `topiceq {command}` needs an "
                         "equation model: train one with --preset eq-tiny|eq-cpu|eq-lstm --data INGESTDIR "
                         "--topics TOPICDIR")
    return payload


def check_checkpoint_topics(path: str, payload: dict[str, Any], topics_dir: str) -> None:
    """A topic-conditioned model with another topic model than the one it was trained with: each θ component
    would mean another topic. Same folder, or a copy of it (same labels): fine."""
    trained = payload.get("topic")
    if not trained or not Path(topics_dir).is_dir():
        return  # an unconditioned model takes no θ; a missing folder gets the command's own message
    if Path(str(trained.get("dir", ""))).resolve() == Path(topics_dir).resolve():
        return
    given = _topic_model(str(Path(topics_dir).resolve()))
    if given is None:
        return
    if int(given.k) != int(trained.get("k", -1)) or list(given.labels) != list(trained.get("labels") or []):
        raise UsageError(f"{payload['path']} was trained with the topic model {trained.get('dir')} "
                         f"({trained.get('k')} topics), not {topics_dir} ({given.k} topics, other labels): "
                         "pass the --topics folder the model was trained with")


def check_topics_fit_ingest(topics_dir: Path, data_dir: Path) -> None:
    """A topic model fitted on another ingest than --data has no θ for its equations."""
    from pipeline.ingest import read_records

    if not (topics_dir.is_dir() and (data_dir / "equations.jsonl").is_file()):
        return  # the command reports a missing folder in its own words
    ids = [str(r["id"]) for r in read_records(data_dir)]
    if not ids:
        return  # an ingest without equations: the command says so
    model = _topic_model(str(topics_dir.resolve()))
    if model is None:
        return
    theta = model.theta_by_id()
    covered = sum(i in theta for i in ids) / len(ids)
    if covered < MIN_THETA_COVERAGE:
        raise UsageError(f"the topic model {topics_dir} was fitted on another ingest than {data_dir} (it has a "
                         f"topic mixture for {covered:.0%} of its equations): fit one on it "
                         f"(topiceq topics fit --data {data_dir} --out TOPICDIR) or pass the matching --data")


@functools.lru_cache(maxsize=4)
def _topic_model(topics_dir: str) -> Any:
    """The topic model in TOPICS_DIR, or None when there is none to compare with (e.g. a folder holding only
    theta.npz, which training accepts): the command then reports in its own words what it lacks."""
    from pipeline.topics import TopicModel

    try:
        return TopicModel.load(topics_dir)
    except (OSError, ValueError, KeyError):
        return None
