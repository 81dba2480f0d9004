"""Equation model on planted data: a toy ingest dir whose two topics write different symbols.

The model is trained for a few seconds with the project's one training loop (`eq-tiny`); θ comes from a
theta.npz written by hand (the loop reads θ from TOPICDIR/theta.npz alone), so the planted topic is known.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.ingest import read_records
from pipeline.topics import ThetaTable
from topicrnn.checkpoint import load_model
from topicrnn.evaluation import evaluate
from topicrnn.generation import sample_equations
from topicrnn.presets import apply_overrides, get_preset
from topicrnn.topic_probes import topic_log_likelihoods, topic_posterior
from topicrnn.train import train

K = 2


def planted_equation(topic: int, rng: np.random.Generator) -> str:
    """Topic 0 writes Greek letters with superscripts; topic 1 writes sums over Latin letters with subscripts."""
    if topic == 0:
        a, b = rng.choice([r"\alpha", r"\beta", r"\gamma", r"\omega"], size=2)
        return f"{a}^{{{rng.integers(2, 9)}}} + {b}^{{{rng.integers(2, 9)}}}"
    a, b = rng.choice(list("xyzw"), size=2)
    return rf"\sum_{{i=1}}^{{n}} {a}_{{i}} {b}_{{i}}"


def write_planted(root: Path, n: int = 240, seed: int = 0) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    data, topics = root / "ingest", root / "topics"
    data.mkdir()
    topics.mkdir()
    ids, thetas = [], []
    with open(data / "equations.jsonl", "w") as f:
        for i in range(n):
            topic = i % K
            split = ["train"] * 8 + ["val", "test"]
            rec = {"id": f"paper{i % 20}#{i}", "paper": f"paper{i % 20}",
                   "area": ["math.AG", "hep-th"][topic], "source": "toy.tex",
                   "env": "equation", "equation": planted_equation(topic, rng), "context": "",
                   "split": split[(i // K) % 10], "topic": topic}
            f.write(json.dumps(rec) + "\n")
            ids.append(rec["id"])
            th = np.full(K, 0.1 / (K - 1))
            th[topic] = 0.9
            thetas.append(th)
    np.savez(topics / "theta.npz", ids=np.array(ids), theta=np.array(thetas, dtype=np.float32))
    return data, topics


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    data, topics = write_planted(root)
    ckpts = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: extra threads only contend (the CI machine is shared)
    try:
        for name, overrides in {"input": [], "none": ["topic_dim=0"]}.items():
            preset = apply_overrides(get_preset("eq-tiny"), overrides + [
                "max_steps=250", "eval_every=250", "hidden=48", "min_count=1", "batch_size=16", "lr=1e-2"])
            train(preset.model, preset.train, root / name, data_path=data, topics_dir=topics, device="cpu",
                  progress=False, preset="eq-tiny")
            ckpts[name] = root / name
    finally:
        torch.set_num_threads(threads)
    return data, topics, ckpts


def test_equation_to_topic_inference_recovers_the_planted_topic(planted):
    data, _, ckpts = planted
    lm = load_model(ckpts["input"])
    test = list(read_records(data, "test"))
    truth = np.array([r["topic"] for r in test])
    ll = topic_log_likelihoods(lm, [r["equation"] for r in test], K)
    post = topic_posterior(ll, np.full(K, 1 / K))
    accuracy = float((post.argmax(axis=1) == truth).mean())
    assert len(test) >= 20 and accuracy >= 0.9, accuracy


def test_generation_follows_the_topic(planted):
    data, _, ckpts = planted
    lm = load_model(ckpts["input"])
    greek = []
    for topic in range(K):
        theta = np.full(K, 0.1 / (K - 1), dtype=np.float32)
        theta[topic] = 0.9
        eqs = sample_equations(lm, theta, n=30, temperature=0.7, seed=3, max_len=40, constrained=False)
        greek.append(np.mean([("\\alpha" in e or "\\beta" in e or "\\gamma" in e or "\\omega" in e) for e in eqs]))
    assert greek[0] > 0.7 and greek[1] < 0.3, greek


def test_conditioned_model_beats_the_unconditioned_one_on_planted_data(planted):
    data, _, ckpts = planted
    topic_model = ThetaTable(planted[1])  # the planted θ, read from theta.npz
    table = evaluate(data, topic_model, [ckpts["none"], ckpts["input"]])
    by_name = {r.topic_mode: r for r in table.rows}
    assert table.baseline == "none" and set(by_name) == {"none", "input"}
    for r in table.rows:
        assert r.equations == len(list(read_records(data, "test")))
        assert r.chars == sum(len(x["equation"]) + 1 for x in list(read_records(data, "test")))
        assert 0 < r.bits_per_char < r.bits_per_token
    assert by_name["input"].bits_per_char < by_name["none"].bits_per_char
    md = table.to_markdown()
    assert "baseline" in md and "bits/char" in md and "%" in md


def test_per_area_table_adds_up_to_the_whole(planted):
    data, topics, ckpts = planted
    table = evaluate(data, ThetaTable(topics), [ckpts["none"], ckpts["input"]], by="area")
    test = list(read_records(data, "test"))
    assert [g.group for g in table.groups] == sorted({"math", "physics"})  # coarse areas, equal sizes
    assert sum(g.equations for g in table.groups) == len(test)
    for row in table.rows:  # character-weighted mean of the groups = the overall figure
        mean = sum(g.bits_per_char[row.name] * g.chars for g in table.groups) / sum(g.chars for g in table.groups)
        assert mean == pytest.approx(row.bits_per_char, rel=1e-9)
    for g in table.groups:  # the planted topic helps in both areas
        assert g.bits_per_char["input"] < g.bits_per_char["none"], g
    md = table.to_markdown()
    assert "| area | equations |" in md and "| physics |" in md
    assert table.to_json()["groups"][0]["group"] == table.groups[0].group
    with pytest.raises(ValueError, match="by must be one of"):
        evaluate(data, ThetaTable(topics), [ckpts["none"]], by="colour")
