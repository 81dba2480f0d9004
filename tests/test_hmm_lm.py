"""The HMM as a model of the one interface: `topiceq train --preset hmm-char`, `score` and `sample` through the one
sampler and `checkpoint.load_model` (topicrnn/hmm_lm.py)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from topicrnn.checkpoint import load_model
from topicrnn.hmm import HMM
from topiceq.cli import main as cli_main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WORDS = ["to", "be", "or", "not", "that", "is", "the", "question", "whether", "tis", "nobler", "in", "mind"]


def make_text(path, n_lines=250, seed=0):
    rng = np.random.default_rng(seed)
    path.write_text("\n".join(" ".join(rng.choice(WORDS, size=7)) + "." for _ in range(n_lines)) + "\n")
    return path


def train(tmp_path, capsys, *extra, name="ck"):
    data = make_text(tmp_path / "t.txt")
    ck = tmp_path / name
    assert cli_main(["train", "--preset", "hmm-char", "--data", str(data), "--out", str(ck), "--no-progress",
                     "--json", "--max-steps", "8", *extra]) == 0
    return data, ck, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def hmm_bits(lm, text: str) -> float:
    """Bits per character from the estimator's own forward pass (HMM.score), not the step protocol."""
    return -lm.model.score(np.asarray(lm.tokenizer.encode(text))) / len(text) / math.log(2.0)


def test_hmm_char_trains_scores_and_samples_through_the_cli(tmp_path, capsys):
    data, ck, summary = train(tmp_path, capsys, "--set", "n_states=5")
    raw = torch.load(ck / "best.pt", map_location="cpu", weights_only=True)  # plain tensors and values only
    assert raw["kind"] == "hmm" and raw["model_config"] == {"n_states": 5, "tokenizer": "char"}
    assert summary["step"] == 8 and len(raw["history"]["train_loss"]) == 8
    assert np.all(np.diff(raw["history"]["train_loss"]) <= 1e-12)  # EM: the training loss never goes up

    lm = load_model(ck, device="cpu")
    assert isinstance(lm.model, HMM) and lm.kind == "hmm" and lm.model.device == torch.device("cpu")
    V = lm.tokenizer.vocab_size
    assert lm.model.n_states == 5 and lm.n_parameters() == summary["parameters"] == 4 + 5 * 4 + 5 * (V - 1)
    text = data.read_text()
    held_out = text[int(len(text) * 0.9):]
    # the trainer's validation figure (the one scoring path, step by step) is HMM.score's forward pass
    assert summary["best_val_bits_per_char"] == pytest.approx(hmm_bits(lm, held_out), rel=1e-9)
    assert summary["best_val_bits_per_char"] < math.log2(lm.tokenizer.vocab_size) - 0.5  # it learned something

    line = "to be or not to be, that is the question"
    assert cli_main(["score", "--checkpoint", str(ck), "--json", line]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["n_chars"] == len(line) and s["bits_per_char"] == pytest.approx(hmm_bits(lm, line), rel=1e-9)

    args = ["sample", "--checkpoint", str(ck), "--prime", "to be", "-n", "3", "--length", "40", "--seed", "7",
            "--temperature", "0.7", "--json"]
    assert cli_main(args) == 0
    samples = json.loads(capsys.readouterr().out)["samples"]
    assert len(samples) == 3 and all(x.startswith("to be") and len(x) == 45 for x in samples)
    assert len(set(samples)) > 1  # three draws, not one repeated
    assert cli_main(args) == 0 and json.loads(capsys.readouterr().out)["samples"] == samples  # seeded
    assert cli_main(args[:-4] + ["8", "--temperature", "0.7", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] != samples  # another seed, other texts
    assert set("".join(samples)) <= set(text)  # never a special token, only symbols of the text


def test_the_step_state_is_the_filtered_posterior(tmp_path, capsys):
    data, ck, _ = train(tmp_path, capsys, "--set", "n_states=3")
    lm = load_model(ck)
    ids = lm.tokenizer.encode("to be or", bos=True)
    state = None
    for t in ids:
        logits, state = lm.model.step(torch.tensor([t]), None, state)
    post = lm.model.state_layers(state)["posterior"]
    assert post.shape == (1, 3) and float(post.sum()) == pytest.approx(1.0, abs=1e-12)
    x = np.asarray(ids[1:])
    np.testing.assert_allclose(post[0].numpy(), lm.model.score_samples(x)[1][-1], atol=1e-12)  # p(s_n | x_1..n)
    assert float(torch.logsumexp(logits, -1)) == pytest.approx(0.0, abs=1e-12)


def test_word_symbols_and_bad_settings(tmp_path, capsys):
    data, ck, summary = train(tmp_path, capsys, "--set", "n_states=3", "--set", "tokenizer=word", name="words")
    lm = load_model(ck)
    assert lm.tokenizer.kind == "word" and lm.tokenizer.vocab_size == 4 + len(WORDS) + 2  # words, "." and newline
    line = "to be or not to be."
    assert lm.score(line).bits_per_char == pytest.approx(hmm_bits(lm, line), rel=1e-9)
    assert cli_main(["sample", "--checkpoint", str(ck), "--prime", "to be", "--length", "5", "--seed", "1",
                     "--json"]) == 0
    words = lm.tokenizer.tokenize(json.loads(capsys.readouterr().out)["samples"][0])
    assert words[:2] == ["to", "be"] and len(words) == 7 and set(words) <= set(lm.tokenizer.tokens[4:])
    assert cli_main(["train", "--preset", "hmm-char", "--data", str(data), "--out", str(tmp_path / "bad"),
                     "--set", "n_states=0", "--no-progress"]) == 1
    assert "n_states must be >= 1" in capsys.readouterr().err
    assert cli_main(["train", "--preset", "hmm-char", "--data", str(data), "--out", str(ck), "--resume"]) == 1
    assert "nothing to resume" in capsys.readouterr().err
