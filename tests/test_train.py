"""The one training loop: checkpoints, resume, SIGKILL safety, records + θ, presets, commands."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from topicrnn.checkpoint import load_model, read_checkpoint
from topicrnn.data import RecordBatches, TextStreams, load_equation_split, make_records
from topicrnn.presets import apply_overrides, get_preset
from topicrnn.sampling import sample
from topicrnn.tokenizers import LatexTokenizer
from topicrnn.train import TrainConfig, lr_at, train
from topiceq.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_text(path: Path, n_lines: int = 300, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    words = ["to", "be", "or", "not", "that", "is", "the", "question", "whether", "tis", "nobler"]
    lines = [" ".join(rng.choice(words, size=6)) + "." for _ in range(n_lines)]
    path.write_text("\n".join(lines) + "\n")
    return path


def tiny_preset(**train_overrides):
    p = get_preset("tiny")
    p.model.hidden, p.model.embedding = 32, 16
    sets = {"batch_size": 4, "seq_len": 32, "eval_every": 5, "eval_max_batches": 2, "eval_batch_size": 2,
            "eval_seq_len": 64, "log_every": 1, "warmup_steps": 0, "min_lr_ratio": 1.0, "save_every": 0}
    sets.update(train_overrides)
    return apply_overrides(p, [f"{k}={v}" for k, v in sets.items()])


def make_ingest(tmp: Path, k: int = 3, n: int = 60, seed: int = 0) -> tuple[Path, Path]:
    """A small ingest dir (equations.jsonl) and topic dir (theta.npz) per docs/architecture.md."""
    rng = np.random.default_rng(seed)
    shapes = [r"\frac{a}{b}+c", r"\alpha x^{2}", r"\sum_{i=1}^{n} x_i", r"\int_0^1 f(x)\,dx", r"E=mc^2"]
    ingest, topics = tmp / "ingest", tmp / "topics"
    ingest.mkdir()
    topics.mkdir()
    ids, rows = [], []
    with open(ingest / "equations.jsonl", "w") as f:
        for i in range(n):
            split = ["train", "train", "train", "val", "test"][i % 5]
            eq = shapes[i % len(shapes)] + ("" if i % 2 else r" + \beta")
            rec = {"id": f"p{i // 4}#{i % 4}", "paper": f"p{i // 4}", "area": "x", "source": "s", "env": "equation",
                   "equation": eq, "context": "words", "split": split}
            f.write(json.dumps(rec) + "\n")
            ids.append(rec["id"])
            rows.append(rng.dirichlet(np.ones(k)))
    np.savez(topics / "theta.npz", ids=np.array(ids), theta=np.array(rows, dtype=np.float32))
    return ingest, topics


# ----------------------------------------------------------------------------- data

def test_text_streams_predict_every_char_once_and_continue():
    ids = np.arange(4, 4 + 103)
    s = TextStreams(ids, batch_size=4, seq_len=7, bos_id=1)
    batches = list(s.epoch_batches(0, seed=0))
    y = torch.cat([b.y for b in batches], 1)
    x = torch.cat([b.x for b in batches], 1)
    assert sorted(y.reshape(-1).tolist()) == list(range(4, 4 + 100))  # 103 // 4 * 4 targets, no repeats
    assert (x[:, 0] == 1).all() and torch.equal(x[:, 1:], y[:, :-1])
    assert [b.reset for b in batches] == [True] + [False] * (len(batches) - 1)
    # resuming mid-epoch yields the same remaining batches
    rest = list(s.epoch_batches(3, seed=5, start=2))
    full = list(s.epoch_batches(3, seed=5))
    assert all(torch.equal(a.x, b.x) for a, b in zip(rest, full[2:]))


def test_record_batches_collate_matches_a_row_by_row_reference():
    """The vectorised collation gives the padded batches the plain per-row loop gives (lengths 0 to 40)."""
    from topicrnn.data import Record

    rng = np.random.default_rng(0)
    recs = [Record(rng.integers(4, 50, size=int(n)).tolist(), int(n) + 3, rng.random(5).astype(np.float32))
            for n in rng.integers(0, 41, size=97)]
    rb = RecordBatches(recs, 8, pad_id=0, bos_id=1, eos_id=2, pool_batches=3)
    order = rb._order(0, seed=3)
    for idx, b in zip(order, rb.epoch_batches(0, seed=3)):
        rows = [recs[i] for i in idx]
        t = max(len(r.ids) for r in rows) + 1
        x, y, mask = torch.zeros(len(rows), t, dtype=torch.long), torch.zeros(len(rows), t, dtype=torch.long), \
            torch.zeros(len(rows), t, dtype=torch.bool)
        for i, r in enumerate(rows):
            n = len(r.ids)
            x[i, 0], x[i, 1:n + 1], y[i, :n], y[i, n], mask[i, :n + 1] = 1, torch.tensor(r.ids), \
                torch.tensor(r.ids), 2, True
        assert torch.equal(b.x, x) and torch.equal(b.y, y) and torch.equal(b.mask, mask)
        assert torch.equal(b.theta, torch.from_numpy(np.stack([r.theta for r in rows])))
        assert b.n_chars == sum(r.n_chars for r in rows) and b.n_tokens == int(mask.sum())


def test_record_batches_masks_and_chars():
    tok = LatexTokenizer().fit([r"\frac{a}{b}", "x+y"])
    recs, dropped = make_records([r"\frac{a}{b}", "x+y", "x"], tok, thetas=np.eye(3), max_tokens=0)
    assert dropped == 0
    rb = RecordBatches(recs, 2, pad_id=tok.pad_id, bos_id=tok.bos_id, eos_id=tok.eos_id)
    batches = list(rb.epoch_batches(0, seed=1))
    assert sum(b.n_chars for b in batches) == len(r"\frac{a}{b}") + 3 + 1 + 3
    assert sum(b.n_tokens for b in batches) == sum(len(r.ids) + 1 for r in recs)
    for b in batches:
        assert b.theta.shape == (b.x.shape[0], 3)
        for row in range(b.x.shape[0]):
            n = int(b.mask[row].sum())
            assert b.x[row, 0] == tok.bos_id and b.y[row, n - 1] == tok.eos_id
            assert torch.equal(b.x[row, 1:n], b.y[row, : n - 1])
    _, dropped = make_records([r"\frac{a}{b}", "x"], tok, max_tokens=3)
    assert dropped == 1


def test_lr_schedule_warmup_then_cosine():
    cfg = TrainConfig(lr=1.0, warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(60, cfg) == pytest.approx(0.55)
    assert lr_at(110, cfg) == pytest.approx(0.1)
    assert lr_at(10, cfg, time_fraction=0.5) == pytest.approx(0.55)  # a time budget half spent: mid-cosine
    assert lr_at(10, cfg, time_fraction=1.0) == pytest.approx(0.1)
    assert lr_at(60, cfg, time_fraction=0.1) == pytest.approx(0.55)  # steps further along than time


def test_overrides_are_typed_and_checked():
    p = apply_overrides(get_preset("shakespeare-lstm"),
                        ["hidden=256", "train.lr=1e-3", "bf16=false", "model.cell=gru", "max_steps=1e3"])
    assert (p.model.hidden, p.train.lr, p.train.bf16, p.model.cell, p.train.max_steps) == (256, 1e-3, False, "gru", 1000)
    assert get_preset("shakespeare-lstm").model.hidden == 512  # registry untouched
    with pytest.raises(ValueError, match="no such setting"):
        apply_overrides(get_preset("tiny"), ["hiden=3"])
    with pytest.raises(ValueError, match="not a valid int"):
        apply_overrides(get_preset("tiny"), ["layers=two"])
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("nope")


# ----------------------------------------------------------------------------- training

def test_train_text_writes_loadable_checkpoints_and_learns(tmp_path):
    data = make_text(tmp_path / "t.txt")
    p = tiny_preset(max_steps=30, eval_every=15, lr=1e-2)
    res = train(p.model, p.train, tmp_path / "ck", data_path=data, progress=False, preset="tiny")
    for name in ("best.pt", "last.pt", "loss_curve.png"):
        assert (tmp_path / "ck" / name).is_file()
    raw = torch.load(tmp_path / "ck" / "last.pt", map_location="cpu", weights_only=True)
    assert raw["step"] == 30 and raw["tokenizer"]["kind"] == "char" and "optimizer" in raw
    lm = load_model(tmp_path / "ck")
    meta = lm.metadata
    assert meta["step"] in (15, 30) and meta["best_val"] == pytest.approx(min(res["history"]["val_nats_per_char"]))
    assert raw["kind"] == "lstm" == lm.kind
    first = res["history"]["train_loss"][0]
    assert abs(first - math.log(lm.tokenizer.vocab_size)) < 0.3  # ≈ ln V at the start
    assert res["best_val_nats_per_char"] < first - 0.5  # and it learned
    out = sample(lm.model, lm.tokenizer, n=2, max_len=20, seed=0, stop_at_eos=False)
    assert len(out) == 2 and all(len(o) == 20 for o in out)


def test_max_seconds_stops_early_with_a_validated_checkpoint(tmp_path):
    data = make_text(tmp_path / "t.txt")
    p = tiny_preset(max_steps=100_000, eval_every=100_000, max_seconds=1e-9)  # out of time after one step
    res = train(p.model, p.train, tmp_path / "ck", data_path=data, progress=False, preset="tiny")
    assert res["stopped_for_time"] and res["step"] == 1
    assert res["history"]["val_step"] == [1]  # validated on the way out, checkpoints written
    assert load_model(tmp_path / "ck" / "last.pt").metadata["step"] == 1
    p = tiny_preset(max_steps=6, eval_every=3)
    assert not train(p.model, p.train, tmp_path / "full", data_path=data, progress=False)["stopped_for_time"]
    # the budget counts across resumes: the run's seconds so far are saved with its data position
    first = read_checkpoint(tmp_path / "full" / "last.pt")["data_state"]["seconds"]
    train(None, None, tmp_path / "full", resume=True, max_steps=9, progress=False)
    assert read_checkpoint(tmp_path / "full" / "last.pt")["data_state"]["seconds"] > first > 0


@pytest.mark.parametrize("kind", ["text", "records"])
def test_resume_gives_the_same_next_step_losses(tmp_path, kind):
    if kind == "text":
        data, topics = make_text(tmp_path / "t.txt"), None
        p = tiny_preset(max_steps=8, eval_every=4)
        p.model.dropout = 0.2  # dropout draws from the RNG that the checkpoint must restore
    else:
        data, topics = make_ingest(tmp_path)
        p = apply_overrides(get_preset("eq-tiny"), ["max_steps=8", "eval_every=4", "log_every=1", "warmup_steps=0",
                                                    "min_lr_ratio=1.0", "batch_size=4", "dropout=0.2"])
    a = train(p.model, p.train, tmp_path / "a", data_path=data, topics_dir=topics, progress=False)
    p.train.max_steps = 4
    train(p.model, p.train, tmp_path / "b", data_path=data, topics_dir=topics, progress=False)
    b = train(p.model, p.train, tmp_path / "b", resume=True, max_steps=8, progress=False)
    assert b["step"] == 8 and b["history"]["step"] == list(range(1, 9))
    assert b["history"]["train_loss"] == a["history"]["train_loss"]  # exactly: same weights, data, RNG


def test_sigkill_leaves_a_loadable_checkpoint_and_resume_continues(tmp_path):
    data = make_text(tmp_path / "t.txt", n_lines=600)
    out = tmp_path / "ck"
    cmd = [sys.executable, "-m", "topiceq.cli", "train", "--preset", "tiny", "--data", str(data), "--out", str(out),
           "--max-steps", "100000", "--no-progress", "--set", "save_every=2", "--set", "eval_every=100000",
           "--set", "hidden=32", "--set", "batch_size=4", "--set", "seq_len=32", "--set", "log_every=1"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        step = 0
        while time.time() < deadline and step < 6:
            time.sleep(0.3)
            assert proc.poll() is None, proc.stderr.read().decode()
            if (out / "last.pt").is_file():
                step = read_checkpoint(out / "last.pt")["step"]
        assert step >= 6, "training never wrote last.pt"
        os.kill(proc.pid, signal.SIGKILL)  # mid-run, possibly mid-write
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = load_model(out / "last.pt").metadata["step"]  # never torn: written via os.replace
    assert killed_at >= 6
    res = train(None, None, out, resume=True, max_steps=killed_at + 3, progress=False)
    assert res["step"] == killed_at + 3
    assert res["history"]["step"][-3:] == [killed_at + 1, killed_at + 2, killed_at + 3]


def test_equation_records_with_theta_train_sample_score(tmp_path, capsys):
    ingest, topics = make_ingest(tmp_path)
    split = load_equation_split(ingest, topics, "val")
    assert len(split.texts) == 12 and split.theta.shape == (12, 3) and split.missing_theta == 0
    ck = tmp_path / "eq"
    rc = cli_main(["train", "--preset", "eq-tiny", "--data", str(ingest), "--topics", str(topics), "--out", str(ck),
                   "--max-steps", "12", "--no-progress", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 12 and summary["best_val_bits_per_char"] > 0
    lm = load_model(ck)
    model, tok = lm.model, lm.tokenizer
    assert isinstance(tok, LatexTokenizer) and model.config.topic_dim == 3 and lm.metadata["topic"]["k"] == 3
    assert "\\frac" in tok.tokens
    texts = sample(model, tok, n=3, max_len=15, theta=np.array([1.0, 0, 0]), seed=4)
    assert texts == sample(model, tok, n=3, max_len=15, theta=np.array([1.0, 0, 0]), seed=4)
    assert cli_main(["score", "--checkpoint", str(ck), "--json", "--topic", "1", r"\frac{a}{b}+c"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["n_chars"] == len(r"\frac{a}{b}+c") + 1 and s["bits_per_char"] > 0
    assert cli_main(["sample", "--checkpoint", str(ck), "-n", "2", "--length", "10", "--seed", "1", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["samples"]) == 2
    # the unconditioned baseline on the same data, and a clear error when --topics is missing
    assert cli_main(["train", "--preset", "eq-tiny", "--data", str(ingest), "--out", str(tmp_path / "plain"),
                     "--max-steps", "3", "--no-progress", "--set", "topic_dim=0"]) == 0
    assert load_model(tmp_path / "plain").topic_dim == 0
    capsys.readouterr()
    assert cli_main(["train", "--preset", "eq-tiny", "--data", str(ingest), "--out", str(tmp_path / "x"),
                     "--no-progress"]) == 1
    assert "--topics" in capsys.readouterr().err


def test_sample_and_score_commands_on_a_char_model(tmp_path, capsys):
    data = make_text(tmp_path / "t.txt")
    p = tiny_preset(max_steps=10)
    train(p.model, p.train, tmp_path / "ck", data_path=data, progress=False)
    assert cli_main(["sample", "--checkpoint", str(tmp_path / "ck" / "best.pt"), "--prime", "to be", "-n", "2",
                     "--length", "25", "--seed", "3", "--json"]) == 0
    samples = json.loads(capsys.readouterr().out)["samples"]
    assert len(samples) == 2 and all(s.startswith("to be") and len(s) == 30 for s in samples)
    assert cli_main(["score", "--checkpoint", str(tmp_path / "ck"), "to be or not"]) == 0
    assert "bits/char" in capsys.readouterr().out
    assert cli_main(["score", "--checkpoint", str(tmp_path / "missing"), "x"]) == 1
    assert "not found" in capsys.readouterr().err


@pytest.mark.parametrize("preset, extra", [("char-5gram", ["--set", "order=3"]),
                                           ("min-char-rnn", ["--max-steps", "200", "--set", "hidden=16"])])
def test_every_kind_trains_scores_and_samples_through_the_cli(tmp_path, capsys, preset, extra):
    data = make_text(tmp_path / "t.txt")
    ck = tmp_path / "ck"
    assert cli_main(["train", "--preset", preset, "--data", str(data), "--out", str(ck), "--no-progress", "--json",
                     *extra]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    raw = torch.load(ck / "best.pt", map_location="cpu", weights_only=True)  # plain tensors and lists only
    lm = load_model(ck)
    assert raw["kind"] == lm.kind == get_preset(preset).kind and raw["tokenizer"]["kind"] == "char"
    # the validation figure is the held-out end of the text, scored by the one scoring path after loading
    held_out = data.read_text()[int(len(data.read_text()) * 0.9):]
    assert lm.score(held_out).nats_per_char == pytest.approx(summary["best_val_nats_per_char"], rel=1e-9)
    assert summary["best_val_bits_per_char"] < math.log2(lm.tokenizer.vocab_size) - 1  # it learned something
    assert cli_main(["score", "--checkpoint", str(ck), "--json", "to be or not"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["n_chars"] == len("to be or not") and s["logprob_nats"] == pytest.approx(
        lm.score("to be or not").logprob_nats)
    args = ["sample", "--checkpoint", str(ck), "--prime", "to be", "-n", "2", "--length", "15", "--seed", "3", "--json"]
    assert cli_main(args) == 0
    samples = json.loads(capsys.readouterr().out)["samples"]
    assert len(samples) == 2 and all(x.startswith("to be") and len(x) == 20 for x in samples)
    assert cli_main(args) == 0 and json.loads(capsys.readouterr().out)["samples"] == samples
    assert cli_main(["sample", "--checkpoint", str(ck), "--topic", "1"]) == 1  # one meaning: a topic's θ
    assert "takes no topic vector" in capsys.readouterr().err
    assert cli_main(["train", "--preset", preset, "--data", str(data), "--out", str(ck), "--resume",
                     "--no-progress"]) == 1
    assert "nothing to resume" in capsys.readouterr().err


def test_a_new_kind_needs_only_its_registrations(tmp_path):
    """What presets.py documents for the HMM: a model, a trainer, a loader, a preset; nothing else changes."""
    from dataclasses import dataclass

    from topicrnn.checkpoint import LOADERS, register_loader, save_checkpoint
    from topicrnn.interface import SequenceModel
    from topicrnn.presets import PRESETS, Preset, register_preset
    from topicrnn.tokenizers import make_tokenizer
    from topicrnn.trainers import TRAINERS, register_trainer, train_preset

    @dataclass
    class UniformConfig:
        kind = "uniform"

        def to_dict(self):
            return {}

    @dataclass
    class UniformTrain:
        data_kind: str = "text"

        def to_dict(self):
            return {"data_kind": self.data_kind}

    class Uniform:  # the step protocol and nothing else: every token alike
        kind, topic_dim, device = "uniform", 0, torch.device("cpu")

        def __init__(self, vocab_size):
            self.vocab_size = vocab_size

        def initial_state(self, batch, theta=None):
            return torch.zeros(batch, 1)

        def step(self, ids, theta=None, state=None):
            return torch.zeros(len(ids), self.vocab_size), torch.zeros(len(ids), 1)

        def state_layers(self, state):
            return {"h0": state}

        def num_parameters(self):
            return 0

    def fit(preset, out_dir, *, data_path, **_):
        tok = make_tokenizer("char").fit(Path(data_path).read_text())
        save_checkpoint(Path(out_dir) / "best.pt", {"kind": "uniform", "model_config": {}, "train_config": {},
                                                    "tokenizer": tok.to_dict(), "model": {}})
        return {"step": 0}

    try:
        register_trainer("uniform", fit)
        register_loader("uniform", lambda payload, tok, device: Uniform(tok.vocab_size))
        register_preset(Preset("uniform-test", "test kind", UniformConfig(), UniformTrain()))
        train_preset(get_preset("uniform-test"), tmp_path / "u", data_path=make_text(tmp_path / "t.txt"))
        lm = load_model(tmp_path / "u")
        assert lm.kind == "uniform" and isinstance(lm.model, SequenceModel)
        assert lm.score("to be").nats_per_char == pytest.approx(math.log(lm.tokenizer.vocab_size))
        assert [len(x) for x in lm.sample(2, 5, seed=0)] == [5, 5]
    finally:
        TRAINERS.pop("uniform", None)
        LOADERS.pop("uniform", None)
        PRESETS.pop("uniform-test", None)
