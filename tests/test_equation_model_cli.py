"""`topiceq generate` and `topiceq evaluate` end to end: a real (tiny) LDA topic model, a model trained for a
few seconds with the one training loop, real pdflatex verdicts."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.topic_fit import fit_topics
from pipeline.topics import TopicConfig
from topicrnn.presets import apply_overrides, get_preset
from topicrnn.train import train

pytestmark = pytest.mark.slow  # an LDA fit and two trainings (~20 s unloaded; a minute on a busy machine)

WORDS = [["galaxy", "star", "orbit", "gravity", "mass", "planet"],
         ["probability", "variance", "estimator", "regression", "sample", "likelihood"]]


def toy_ingest(root: Path, n: int = 160, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    data = root / "ingest"
    data.mkdir()
    with open(data / "equations.jsonl", "w") as f:
        for i in range(n):
            topic = i % 2
            eq = (rf"\frac{{G M}}{{r^{{{rng.integers(2, 4)}}}}} = \omega^2 r" if topic == 0
                  else rf"\hat{{\beta}} = \sum_{{i=1}}^{{n}} x_{{i}} y_{{{rng.integers(1, 9)}}}")
            ctx = " ".join(rng.choice(WORDS[topic], size=12))
            rec = {"id": f"p{i % 16}#{i}", "paper": f"p{i % 16}", "area": "toy", "source": "t.tex", "env": "equation",
                   "equation": eq, "context": ctx, "split": (["train"] * 8 + ["val", "test"])[(i // 2) % 10]}
            f.write(json.dumps(rec) + "\n")
    return data


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("eqcli")
    data = toy_ingest(root)
    topics = root / "topics"
    fit_topics(data, topics, TopicConfig(k=2, passes=5, no_below=1, no_above=1.0, min_tokens=1, metrics=False,
                                         max_per_paper=None, max_per_source=None))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, extra in {"input": [], "none": ["topic_dim=0"]}.items():
            p = apply_overrides(get_preset("eq-tiny"), extra + ["max_steps=60", "eval_every=60", "min_count=1"])
            train(p.model, p.train, root / name, data_path=data, topics_dir=topics, device="cpu", progress=False)
    finally:
        torch.set_num_threads(threads)
    return root, data, topics


class Result:
    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def topiceq(capsys):
    """The `topiceq` dispatcher, in process (as the console script calls it): exit status, stdout, stderr."""
    from topiceq.cli import main

    def run(*args: str) -> Result:
        capsys.readouterr()
        code = main(list(args))
        out = capsys.readouterr()
        return Result(code, out.out, out.err)

    return run


def test_generate_json_shape_and_real_verdicts(toy, pdflatex, topiceq):
    root, data, topics = toy
    res = topiceq("generate", "--checkpoint", str(root / "input"), "--topics", str(topics),
                  "--words", "galaxy", "orbit", "star", "-n", "3", "--seed", "1", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert set(out) == {"topics", "equations"}
    assert 1 <= len(out["topics"]) <= 3 and all(set(t) == {"id", "label", "weight"} for t in out["topics"])
    weights = [t["weight"] for t in out["topics"]]
    assert weights == sorted(weights, reverse=True) and 0.99 <= sum(weights) <= 1.01  # K = 2: both shown
    assert len(out["equations"]) == 3
    for e in out["equations"]:
        assert set(e) == {"equation", "compiles", "error"}
        assert isinstance(e["compiles"], bool) and (e["error"] is None) == e["compiles"]
    again = topiceq("generate", "--checkpoint", str(root / "input"), "--topics", str(topics),
                    "--words", "galaxy", "orbit", "star", "-n", "3", "--seed", "1", "--json", "--no-check")
    assert [e["equation"] for e in json.loads(again.stdout)["equations"]] == [e["equation"] for e in out["equations"]]
    # human output: the mixture line, then one line per equation with its verdict
    text = topiceq("generate", "--checkpoint", str(root / "input"), "--topics", str(topics), "--topic", "0",
                   "-n", "2", "--no-check")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.strip().splitlines()
    assert lines[0].startswith("topics: ") and "%" in lines[0] and len(lines) == 3


def test_generate_rejects_unknown_words_and_topics(toy, topiceq):
    root, _, topics = toy
    res = topiceq("generate", "--checkpoint", str(root / "input"), "--topics", str(topics),
                  "--words", "zzzqqq", "-n", "1", "--no-check")
    assert res.returncode != 0 and "vocabulary" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = topiceq("generate", "--checkpoint", str(root / "input"), "--topics", str(topics), "--topic", "7",
                  "-n", "1", "--no-check")
    assert res.returncode != 0 and "topic" in res.stderr


def test_evaluate_prints_one_row_per_checkpoint(toy, topiceq):
    root, data, topics = toy
    res = topiceq("evaluate", "--data", str(data), "--topics", str(topics),
                  "--checkpoint", str(root / "none"), str(root / "input"), "--json", "--inference")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    rows = out["table"]["rows"]
    assert [r["topic_mode"] for r in rows] == ["none", "input"] and out["table"]["baseline"] == "none"
    assert rows[0]["equations"] == rows[1]["equations"] > 0 and rows[0]["chars"] == rows[1]["chars"]
    assert all(0 < r["bits_per_char"] < 20 for r in rows)
    inf = out["inference"]
    assert inf["k"] == 2 and 0 <= inf["accuracy"] <= 1 and inf["chance_uniform"] == 0.5
    md = topiceq("evaluate", "--data", str(data), "--topics", str(topics), "--checkpoint", str(root / "none"),
                 str(root / "input"))
    assert "| none | none |" in md.stdout and "baseline" in md.stdout
