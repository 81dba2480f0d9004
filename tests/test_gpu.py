"""The CUDA paths — bf16 training with pinned-memory copies, seeded sampling with and without the syntax
constraint, checkpoints written on the GPU that load on the CPU — run on every device torch has: the `cpu`
cases check the tests themselves in CI, the `cuda` cases are marked `gpu` and skipped without a GPU."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.package_macros import structure_problem
from topicrnn.checkpoint import load_model
from topicrnn.data import RecordBatches, make_records
from topicrnn.generation import allowed_control_sequences, sample_equations
from topicrnn.presets import apply_overrides, get_preset
from topicrnn.sampling import sample
from topicrnn.tokenizers import LatexTokenizer
from topicrnn.train import train

DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU")])]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("device", DEVICES)
def test_batch_to_device_copies_exactly(device):
    tok = LatexTokenizer().fit([r"\frac{a}{b}", "x+y"])
    recs, _ = make_records([r"\frac{a}{b}", "x+y", "x"], tok, thetas=np.eye(3))
    b = next(RecordBatches(recs, 3, pad_id=tok.pad_id, bos_id=tok.bos_id, eos_id=tok.eos_id).epoch_batches(0, 1))
    moved = b.to(torch.device(device))
    assert moved.x.device.type == device and moved.theta.device.type == device
    for a, c in ((b.x, moved.x), (b.y, moved.y), (b.mask, moved.mask), (b.theta, moved.theta)):
        assert torch.equal(a, c.cpu())


@pytest.mark.parametrize("device", DEVICES)
def test_train_on_device_then_load_on_cpu_and_sample_with_a_seed(tmp_path, device):
    text = tmp_path / "t.txt"
    text.write_text("to be or not to be, that is the question.\n" * 400)
    p = apply_overrides(get_preset("tiny"), ["max_steps=40", "eval_every=20", "lr=1e-2"])
    res = train(p.model, p.train, tmp_path / "ck", data_path=text, device=device, progress=False)
    assert res["device"].startswith(device) and res["best_val_nats_per_char"] < 2.5
    lm = load_model(tmp_path / "ck", device="cpu")  # written on `device`, read on the CPU
    assert lm.device.type == "cpu" and lm.metadata["step"] in (20, 40) and lm.kind == "lstm"
    model, tok = lm.model.to(device), lm.tokenizer
    a = sample(model, tok, n=4, max_len=30, seed=3, temperature=0.8)
    b = sample(model, tok, n=4, max_len=30, seed=3, temperature=0.8)
    assert a == b and len(set(a)) > 1  # reproducible with a seed; the 4 rows are not copies of each other


@pytest.mark.parametrize("device", DEVICES)
def test_constrained_sampling_on_device_closes_what_it_opens(tmp_path, device):
    eqs = [r"\frac{a}{b} + x^{2}", r"\left( x + y \right)", r"\begin{aligned} a &= b \\ c &= d \end{aligned}"] * 30
    ingest = tmp_path / "ingest"
    ingest.mkdir()
    with open(ingest / "equations.jsonl", "w", encoding="utf-8") as f:
        for i, e in enumerate(eqs):
            f.write(json.dumps({"id": f"e{i}", "paper": f"p{i % 9}", "area": "math", "equation": e,
                                "split": "val" if i % 9 == 0 else "train"}) + "\n")
    p = apply_overrides(get_preset("eq-tiny"), ["topic_dim=0", "max_steps=30", "eval_every=15"])
    train(p.model, p.train, tmp_path / "ck", data_path=ingest, device=device, progress=False)
    lm = load_model(tmp_path / "ck", device=device)
    syntax = allowed_control_sequences(lm, ingest)
    out = sample_equations(lm, None, n=32, temperature=1.0, seed=0, syntax=syntax)
    assert len(out) == 32 and all(structure_problem(e) is None for e in out)
    assert out == sample_equations(lm, None, n=32, temperature=1.0, seed=0, syntax=syntax)
