"""Issue 20: the context encoder, θ inside the LSTM, and conditioning that carries over to unseen papers.

Planted data: each paper is about one of two subjects, its contexts use that subject's words (among shared
filler words) and its equations that subject's symbols; the test papers are never trained on. A context model
must therefore read the words, not remember the papers, to beat the plain model there.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.ingest import read_records
from pipeline.topics import ThetaTable
from topicrnn.checkpoint import load_model
from topicrnn.context_lm import ContextLM, build_model, context_theta_rows
from topicrnn.data import ContextVocab, RecordBatches, make_records, pad_contexts
from topicrnn.evaluation import evaluate, score_records
from topicrnn.generation import generate, sample_equations
from topicrnn.interface import SequenceModel
from topicrnn.models import ModelConfig, RecurrentLM
from topicrnn.presets import apply_overrides, get_preset
from topicrnn.tokenizers import make_tokenizer
from topicrnn.trainers import train_preset

SUBJECT_WORDS = [["galaxy", "halo", "stellar", "cosmic", "redshift"], ["morphism", "sheaf", "scheme", "functor", "ring"]]
FILLER = ["consider", "quantity", "analysis", "below", "model", "paper", "method"]


def planted_equation(subject: int, rng) -> str:
    """Subject 0: powers of Greek letters; subject 1: sums of indexed Latin letters; 1-3 terms each, so that
    lengths overlap (batches are bucketed by length: one subject per batch would hide θ's effect)."""
    terms = []
    for _ in range(rng.integers(1, 4)):
        if subject == 0:
            letter = rng.choice([r"\alpha", r"\beta", r"\gamma", r"\omega"])
            terms.append(f"{letter}^{{{rng.integers(2, 9)}}}")
        else:
            terms.append(rf"\sum_{{i}} {rng.choice(list('xyzw'))}_{{i}}")
    return " + ".join(terms)


def planted_context(subject: int, rng) -> str:
    words = list(rng.choice(SUBJECT_WORDS[subject], size=3)) + list(rng.choice(FILLER, size=6))
    rng.shuffle(words)
    return " ".join(words)


def write_planted(root: Path, papers: int = 24, per_paper: int = 12, seed: int = 0) -> tuple[Path, Path]:
    """Papers 0-17 train, 18-20 val, 21-23 test (split by paper, as ingest does); topics.json names the two
    subjects' words (the LDA bridge for generation by topic), theta.npz their mixtures."""
    rng = np.random.default_rng(seed)
    data, topics = root / "ingest", root / "topics"
    data.mkdir()
    topics.mkdir()
    ids, thetas = [], []
    with open(data / "equations.jsonl", "w") as f:
        for p in range(papers):
            subject = p % 2
            split = "train" if p < 18 else "val" if p < 21 else "test"
            for j in range(per_paper):
                rec = {"id": f"paper{p}#{j}", "paper": f"paper{p}", "area": ["astro-ph", "math.AG"][subject],
                       "equation": planted_equation(subject, rng), "context": planted_context(subject, rng),
                       "split": split, "subject": subject}
                f.write(json.dumps(rec) + "\n")
                ids.append(rec["id"])
                thetas.append([0.9, 0.1] if subject == 0 else [0.1, 0.9])
    np.savez(topics / "theta.npz", ids=np.array(ids), theta=np.array(thetas, dtype=np.float32))
    (topics / "topics.json").write_text(json.dumps({"topics": [
        {"id": k, "auto_label": "-".join(w[:2]), "human_label": None,
         "top_words": [{"word": x, "weight": 0.2} for x in w]} for k, w in enumerate(SUBJECT_WORDS)]}))
    return data, topics


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted-context")
    data, topics = write_planted(root)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: extra threads only contend
    ckpts = {}
    try:
        common = ["max_steps=500", "eval_every=500", "hidden=48", "min_count=1", "batch_size=16", "lr=1e-2"]
        for name, preset, extra in [("plain", "eq-tiny", ["topic_dim=0"]), ("context", "eq-ctx-tiny", [])]:
            p = apply_overrides(get_preset(preset), extra + common)
            train_preset(p, root / name, data_path=data, topics_dir=topics, device="cpu", progress=False)
            ckpts[name] = root / name
    finally:
        torch.set_num_threads(threads)
    return data, topics, ckpts


# ------------------------------------------------------------------------------------------ data
def test_context_vocabulary_keeps_words_by_document_frequency_and_drops_function_words():
    texts = ["the galaxy halo", "the galaxy mass", "the sheaf", "the galaxy with rare"]
    vocab = ContextVocab.fit(texts, min_df=2, max_df=0.9)
    assert vocab.words == ["galaxy"]  # "the"/"with": function words; "halo" etc.: in one context only
    assert vocab.encode("Galaxy, unknown galaxy").tolist() == [1, 1]
    assert ContextVocab.from_dict(vocab.to_dict()).index == vocab.index
    with pytest.raises(ValueError, match="context_min_df"):
        ContextVocab.fit(["one context"], min_df=5)


def test_record_batches_bring_each_records_context_padded():
    tok = make_tokenizer("latex").fit(["a+b", "x"])
    contexts = [np.array([3, 1, 2]), np.array([], dtype=np.int64), np.array([5])]
    recs, _ = make_records(["a+b", "x", "a"], tok, contexts=contexts)
    batcher = RecordBatches(recs, 3, pad_id=tok.pad_id, bos_id=tok.bos_id, eos_id=tok.eos_id)
    for batch in batcher.epoch_batches(0, seed=1):
        for row in range(batch.x.shape[0]):
            n = int(batch.mask[row].sum())  # tokens + <eos>
            text = tok.detokenize([tok.tokens[i] for i in batch.y[row, : n - 1].tolist()])
            want = contexts[["a+b", "x", "a"].index(text)]
            got = batch.context[row]
            assert got[: len(want)].tolist() == want.tolist() and not got[len(want):].any()
    assert pad_contexts(contexts).tolist() == [[3, 1, 2], [0, 0, 0], [5, 0, 0]]


# ------------------------------------------------------------------------------------------ model
def _config(**kw) -> ModelConfig:
    base = dict(cell="lstm", layers=2, hidden=16, embedding=8, dropout=0.0, vocab_size=30, context_encoder=True,
                context_topics=4, context_hidden=8, context_vocab_size=12, topic_dim=0, topic_mode="input")
    return ModelConfig(**{**base, **kw})


def test_build_model_picks_the_class_by_kind_and_validation_names_the_problem():
    assert isinstance(build_model(ModelConfig(vocab_size=10, hidden=8, embedding=4)), RecurrentLM)
    model = build_model(_config())
    assert isinstance(model, ContextLM) and isinstance(model, SequenceModel)
    assert model.kind == _config().kind == get_preset("eq-ctx-tiny").kind == "context-lstm"
    assert apply_overrides(get_preset("eq-ctx-tiny"), ["context_encoder=false", "film=none"]).kind == "lstm"
    with pytest.raises(ValueError, match="film must be"):
        _config(film="gates").validate()
    with pytest.raises(ValueError, match="film needs a θ"):
        _config(context_encoder=False, film="io").validate()
    with pytest.raises(ValueError, match="cell=lstm"):
        _config(cell="gru").validate()


def test_film_starts_as_the_unconditioned_network_and_the_cell_matches_nn_lstm():
    """Every FiLM map starts at zero: with the same weights, io and cell give the film-free model's logits,
    which also checks the scripted cell's gate order against nn.LSTM's."""
    torch.manual_seed(0)
    ref = build_model(_config(film="none")).eval()
    tokens = torch.randint(0, 30, (3, 7))
    cond = torch.softmax(torch.randn(3, 4), -1)
    want = ref(tokens, None, None, cond=cond)[0]
    for film in ("io", "cell", "io+cell"):
        model = build_model(_config(film=film)).eval()
        state = model.state_dict()
        for name, value in ref.state_dict().items():
            if name in state:
                state[name] = value
        for i, lstm in enumerate(ref.layers):
            if f"layers.{i}.ih.weight" in state:  # FilmLSTMLayer: W_ih, b_ih + b_hh, W_hh
                state[f"layers.{i}.ih.weight"] = lstm.weight_ih_l0
                state[f"layers.{i}.ih.bias"] = lstm.bias_ih_l0 + lstm.bias_hh_l0
                state[f"layers.{i}.w_hh"] = lstm.weight_hh_l0
        model.load_state_dict(state)
        got = model(tokens, None, None, cond=cond)[0]
        assert torch.allclose(got, want, atol=1e-5), film
        # and θ does act once the maps are not zero
        for name, p in model.named_parameters():
            if "film" in name:
                torch.nn.init.normal_(p, std=0.5)
        assert not torch.allclose(model(tokens, None, None, cond=cond)[0], want, atol=1e-3), film


def test_regularised_theta_drops_rows_to_the_no_context_theta():
    torch.manual_seed(0)
    enc = build_model(_config()).encoder
    ids = torch.randint(1, 12, (6, 5))
    theta, loss = enc.regularised_theta(ids, drop=1.0)
    assert torch.allclose(theta, enc.empty_theta(6, "cpu"))
    assert loss.item() > 0
    theta, _ = enc.regularised_theta(ids, keep=0.0)  # no word seen: a sample around the no-context θ
    mu_empty = enc.encode(torch.zeros(1, 1, dtype=torch.long))[0]
    mu_seen = enc.encode(ids)[0]
    assert not torch.allclose(mu_seen, mu_empty.expand_as(mu_seen))
    assert torch.allclose(theta.sum(-1), torch.ones(6))


# ------------------------------------------------------------------------------------------ trained
@pytest.mark.slow  # the module's two trainings: ~20 s of CPU, ~30 s on the shared machine
def test_context_model_beats_the_plain_model_on_unseen_papers_and_needs_their_contexts(planted):
    data, topics, ckpts = planted
    table = evaluate(data, ThetaTable(topics), [ckpts["plain"], ckpts["context"]])
    plain, ctx = table.rows
    assert table.baseline == plain.name and ctx.topic_mode.startswith("context")
    assert ctx.bits_per_char < 0.95 * plain.bits_per_char, (ctx.bits_per_char, plain.bits_per_char)
    # equal-size comparisons count what reaches p(equation | context): not the topic model's decoder
    assert plain.scoring_parameters == plain.parameters and ctx.scoring_parameters < ctx.parameters
    assert f"{ctx.parameters:,} ({ctx.scoring_parameters:,} scoring)" in table.to_markdown()
    # the same test equations with the other subject's contexts: worse than with their own
    lm = load_model(ckpts["context"])
    assert lm.kind == "context-lstm" and lm.topic_dim == 2  # the LDA bridge's K
    test = list(read_records(data, "test"))
    swapped = [dict(r, context=planted_context(1 - r["subject"], np.random.default_rng(i)))
               for i, r in enumerate(test)]
    own, _ = score_records(lm, test, None)
    other, _ = score_records(lm, swapped, None)
    assert other.bits_per_char > 1.05 * own.bits_per_char, (other.bits_per_char, own.bits_per_char)
    # the LoadedModel's own score (LDA θ through the bridge) goes through the same model
    assert np.isfinite(lm.score(test[0]["equation"], theta=[0.9, 0.1]).bits_per_char)


@pytest.mark.slow
def test_generation_by_words_and_by_lda_topic_follows_the_subject(planted):
    data, topics, ckpts = planted
    lm = load_model(ckpts["context"])
    table = ThetaTable(topics)
    by_context = replace(lm, model=lm.model.with_context_theta())  # what `generate --words` samples from
    greek = {}
    for subject in (0, 1):
        by_topic = generate(lm, table, topic=subject, n=80, seed=1, data_dir=data, check=False,
                            constrained=False, max_len=40)
        rows = context_theta_rows(lm.model, [" ".join(SUBJECT_WORDS[subject])])[0]
        by_words = sample_equations(by_context, rows, n=20, temperature=0.8, seed=2, constrained=False, max_len=40)
        greek[subject] = [np.mean(["\\" in e and "\\sum" not in e for e in eqs])
                          for eqs in ([e.equation for e in by_topic.equations], by_words)]
    # the LDA bridge (prototype θ -> its topics' words -> encoder) is the weaker route: ~0.3 apart over seeds,
    # where a model that ignored θ would be 0 ± 0.07 (80 equations each)
    assert greek[0][0] > greek[1][0] + 0.15 and greek[0][1] > greek[1][1] + 0.25, greek


def test_the_benchs_shuffled_control_gives_every_equation_another_papers_context():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / "conditioning_jobs.py"
    spec = importlib.util.spec_from_file_location("conditioning_jobs", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    papers = ["a"] * 5 + ["b"] * 3 + ["c"] * 2  # the largest paper: half of the equations
    perm = bench.cross_paper_permutation(papers, seed=3)
    assert sorted(perm.tolist()) == list(range(10))
    assert all(papers[i] != papers[j] for i, j in enumerate(perm))
