"""HMM experiments (topicrnn/hmm_experiments.py) and `topiceq hmm`, on small sizes (the `hmm` flow: test_flows.py)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from topicrnn.hmm_config import CharHMMConfig, InstabilityConfig, LettersConfig
from topicrnn.hmm_experiments import (fit_char_hmm, phase_transition, prose_letters, run_instability,
                                      run_letters)
from topiceq.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROSE = ("It was in July, 1805, and the speaker was the well-known Anna Pavlovna Scherer, maid of honor and "
         "favorite of the Empress Marya Fedorovna. With these words she greeted Prince Vasili Kuragin, a man of "
         "high rank and importance, who was the first to arrive at her reception. ")


def write_book(path: Path, paragraphs: int = 12) -> Path:
    header = "The Project Gutenberg EBook of Something\n\n*** START OF THIS PROJECT GUTENBERG EBOOK X ***\n\n"
    contents = "CONTENTS\n\nCHAPTER I\n\nCHAPTER II\n\n"
    body = "\n\n".join(PROSE * 2 for _ in range(paragraphs))
    path.write_text(header + contents + body + "\n\n*** END OF THIS PROJECT GUTENBERG EBOOK X ***\nlicence", "utf-8")
    return path


def is_png(path: Path) -> bool:
    return Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_prose_letters_skips_header_contents_and_non_letters(tmp_path):
    text = write_book(tmp_path / "book.txt").read_text()
    letters = prose_letters(text, 50)
    assert letters == "itwasinjulyandthespeakerwasthewellknownannapavlovn"
    with pytest.raises(ValueError, match="--chars"):
        prose_letters(text, 10 ** 6)
    with pytest.raises(ValueError, match="--chars"):
        run_letters(tmp_path / "book.txt", tmp_path / "out", LettersConfig(chars=10 ** 6), progress=False)
    assert not (tmp_path / "out").exists()  # nothing written for bad input


def test_phase_transition_finds_the_jump():
    it = np.arange(1, 401)[:, None]
    rise = 1 / (1 + np.exp(-(it - 250) / 5.0))  # letters leave 0.5 around iteration 250
    posterior = 0.5 + np.array([0.45, -0.4, 0.3, -0.45]) * rise
    pt = phase_transition(posterior)
    assert 245 <= pt["iteration"] <= 255 and 245 <= pt["steepest_rise_iteration"] <= 255 and pt["separated"]
    flat = phase_transition(np.full((50, 4), 0.5) + 1e-3 * np.arange(4))
    assert not flat["separated"]


def test_letters_experiment_writes_its_outputs(tmp_path):
    book = write_book(tmp_path / "book.txt")
    s = run_letters(book, tmp_path / "out", LettersConfig(chars=2000, iterations=40, perturbation=0.05),
                    progress=False)
    assert s["iterations"] == 40 and s["letters"] == 2000
    assert is_png(s["outputs"]["figure"])
    saved = json.loads(Path(s["outputs"]["summary"]).read_text())
    assert saved["phase_transition"] == s["phase_transition"]
    curves = np.loadtxt(s["outputs"]["posterior"], delimiter=",", skiprows=1)
    assert curves.shape == (40, 26)
    present = ~np.isnan(curves[0])
    assert present.sum() == len(set(prose_letters(book.read_text(), 2000)))
    assert np.all((curves[:, present] >= 0) & (curves[:, present] <= 1))
    assert s["final_bits_per_letter"] < s["initial_bits_per_letter"]
    assert set(s["final_split"]["state_0"] + s["final_split"]["state_1"]) == set(np.array(list(
        "abcdefghijklmnopqrstuvwxyz"))[present])


@pytest.mark.slow
def test_letters_split_vowels_from_consonants(shared_text, tmp_path):
    """The lecture's result on real prose: after the phase transition one state holds the vowels."""
    s = run_letters(shared_text / "war-and-peace.txt", tmp_path, LettersConfig(chars=5000, iterations=400,
                                                                              perturbation=0.05), progress=False)
    assert s["phase_transition"]["separated"]
    assert 20 < s["phase_transition"]["iteration"] < 400
    assert len(s["final_split"]["vowels_in_vowel_state"]) >= 4


def test_instability_grid_heatmaps_and_basins(tmp_path):
    cfg = InstabilityConfig(grid=6, iterations=4, bits=300, panels=(1, 2, 4))
    s = run_instability(tmp_path, cfg, progress=False)
    assert is_png(s["outputs"]["figure"]) and s["n_models"] == 36 and list(s["panels"]) == [1, 2, 4]
    grids = np.load(s["outputs"]["grids"])
    ll = grids["loglik"]  # [iteration, β₀ row, α₀ column]
    assert ll.shape == (4, 6, 6)
    assert np.all(np.diff(ll, axis=0) >= -1e-9 * np.abs(ll[1:]))  # EM never goes down, at any start
    assert np.mean(ll[-1] > ll[0] + 1e-3) > 0.8  # and it does go up (off the diagonal)
    a0, b0 = np.meshgrid(grids["centres"], grids["centres"])
    below, above = a0 < b0 - 0.1, a0 > b0 + 0.1
    # The diagonal α = β splits the starts: EM keeps the order of the two emission probabilities.
    assert np.all(grids["final_alpha"][below] < grids["final_beta"][below])
    assert np.all(grids["final_alpha"][above] > grids["final_beta"][above])


def test_char_hmm_scores_validation_and_steps_agree(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text(PROSE * 30)
    r = fit_char_hmm(text, CharHMMConfig(n_states=3, iterations=6, tol=-math.inf), progress=False)
    assert r["iterations"] == 6 and 0 < r["train_bits_per_char"] < r["val_bits_per_char"] + 1
    model, tok = r["model"], r["tokenizer"]
    val = PROSE * 30
    val = val[int(len(val) * 0.9):]
    ids = tok.encode(val, bos=True)
    state, total = None, 0.0
    for a, b in zip(ids[:-1], ids[1:]):
        logits, state = model.step(torch.tensor([a]), None, state)
        total += float(logits[0, b])
    assert -total / len(val) / math.log(2) == pytest.approx(r["val_bits_per_char"], rel=1e-9)

    odd = tmp_path / "odd.txt"
    odd.write_text(PROSE * 3 + "§")  # a symbol that only the validation part holds
    with pytest.raises(ValueError, match="emission_pseudocount"):
        fit_char_hmm(odd, CharHMMConfig(n_states=2, iterations=2, emission_pseudocount=0.0), progress=False)
    r = fit_char_hmm(odd, CharHMMConfig(n_states=2, iterations=2), progress=False)  # the default pseudo-count
    assert math.isfinite(r["val_bits_per_char"])


def test_cli_help_errors_and_runs(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["hmm", "--help"])
    assert e.value.code == 0 and "instability" in capsys.readouterr().out
    assert main(["hmm", "letters", "--text", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    book = write_book(tmp_path / "book.txt")
    assert main(["hmm", "letters", "--text", str(book), "--out", str(tmp_path / "l"), "--chars", "500",
                 "--iterations", "5"]) == 0
    assert "phase transition" in capsys.readouterr().out and is_png(tmp_path / "l" / "letters.png")
    assert main(["hmm", "instability", "--out", str(tmp_path / "i"), "--grid", "3", "--iterations", "2",
                 "--bits", "100", "--json"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["n_models"] == 9 and is_png(line["outputs"]["figure"])
    assert main(["hmm", "instability", "--out", str(tmp_path / "j"), "--grid", "1"]) == 1
    assert "--grid" in capsys.readouterr().err
