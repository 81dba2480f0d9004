"""Equation model (issue 6): scoring, θ paths, reproducible generation, equation→topic inference.

Fast: untrained models with fixed seeds, or toy models trained for a few seconds on planted data.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from topicrnn.evaluation import encode_equation
from topicrnn.generation import generate_for_topics, sample_equations
from topicrnn.interface import LoadedModel
from topicrnn.models import ModelConfig, RecurrentLM
from topicrnn.scoring import sequence_logprobs
from topicrnn.tokenizers import LatexTokenizer
from topicrnn.topic_probes import topic_posterior

EQUATIONS = [
    r"\alpha + \beta = \gamma",
    r"\frac{a}{b} \le \sqrt{x^2 + y^2}",
    r"E = mc^2",
    r"\sum_{i=1}^{n} x_i",
    r"\begin{pmatrix} a & b \\ c & d \end{pmatrix}",
    r"x",
]


def tiny_lm(mode: str = "input", k: int = 3, seed: int = 0, hidden: int = 16) -> LoadedModel:
    torch.manual_seed(seed)
    tok = LatexTokenizer().fit(EQUATIONS)
    cfg = ModelConfig(cell="lstm", layers=2, hidden=hidden, embedding=8, dropout=0.0, topic_dim=k,
                      topic_mode=mode, vocab_size=tok.vocab_size)
    model = RecurrentLM(cfg)
    if model.topic_bias is not None:  # starts at zero by design; give it something to say
        torch.nn.init.normal_(model.topic_bias.weight, std=0.5)
    model.eval()
    return LoadedModel(model, tok, {}, name=f"tiny-{mode}", add_eos=True)


def stepwise_logprob(lm: LoadedModel, equation: str, theta: np.ndarray) -> float:
    """log p(<bos> equation <eos>) one step at a time (the step protocol, no batching, no padding)."""
    ids = encode_equation(lm.tokenizer, equation)
    total, state = 0.0, None
    with torch.no_grad():
        for a, b in zip(ids[:-1], ids[1:]):
            logits, state = lm.model.step(torch.tensor([a]), torch.as_tensor(theta)[None], state)
            total += float(torch.log_softmax(logits, -1)[0, b])
    return total


def test_batched_scoring_matches_stepwise_logprobs_and_the_loaded_model_score():
    lm = tiny_lm("input")
    rng = np.random.default_rng(1)
    thetas = rng.dirichlet(np.ones(3), size=len(EQUATIONS)).astype(np.float32)
    seqs = [encode_equation(lm.tokenizer, e) for e in EQUATIONS]
    ours = sequence_logprobs(lm.model, seqs, thetas, batch_size=4)  # mixed lengths share padded batches
    for i, eq in enumerate(EQUATIONS):
        assert ours[i] == pytest.approx(stepwise_logprob(lm, eq, thetas[i]), rel=1e-5, abs=1e-4), eq
        score = lm.score(eq, thetas[i])
        assert score.n_chars == len(eq) + 1 and score.logprob_nats == pytest.approx(ours[i], rel=1e-5, abs=1e-4)


@pytest.mark.parametrize("mode", ["input", "init", "bias"])
def test_theta_changes_the_output_distribution(mode):
    lm = tiny_lm(mode)
    seqs = [encode_equation(lm.tokenizer, e) for e in EQUATIONS]
    e0 = np.tile(np.eye(3, dtype=np.float32)[0], (len(seqs), 1))
    e2 = np.tile(np.eye(3, dtype=np.float32)[2], (len(seqs), 1))
    a, b = sequence_logprobs(lm.model, seqs, e0), sequence_logprobs(lm.model, seqs, e2)
    assert np.abs(a - b).max() > 1e-3
    # ...and the same θ gives the same numbers (eval mode: no dropout noise)
    assert np.allclose(a, sequence_logprobs(lm.model, seqs, e0))


@pytest.mark.parametrize("mode", ["input", "init", "bias"])
def test_gradients_reach_the_topic_path(mode):
    lm = tiny_lm(mode)
    model = lm.model.train()
    ids = torch.tensor([encode_equation(lm.tokenizer, EQUATIONS[1])])
    theta = torch.tensor([[0.2, 0.5, 0.3]], requires_grad=True)
    logits, _ = model(ids[:, :-1], theta)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    loss.backward()
    assert theta.grad is not None and theta.grad.abs().sum() > 0
    emb = model.config.embedding
    topic_params = {"input": model.rnn.weight_ih_l0.grad[:, emb:],
                    "init": model.topic_init.weight.grad if model.topic_init is not None else None,
                    "bias": model.topic_bias.weight.grad if model.topic_bias is not None else None}[mode]
    assert topic_params is not None and topic_params.abs().sum() > 0


def test_unconditioned_model_ignores_theta_and_scores():
    lm = tiny_lm("input", k=0)
    assert not lm.conditioned and lm.topic_mode == "none"
    seqs = [encode_equation(lm.tokenizer, e) for e in EQUATIONS]
    a = sequence_logprobs(lm.model, seqs, None)
    b = sequence_logprobs(lm.model, seqs, np.eye(3, dtype=np.float32)[[0] * len(seqs)])
    assert np.all(a < 0) and np.allclose(a, b)


def test_generation_is_reproducible_with_a_seed():
    lm = tiny_lm("input")
    theta = np.array([0.1, 0.1, 0.8], dtype=np.float32)
    a = sample_equations(lm, theta, n=6, temperature=1.0, seed=5, max_len=20, constrained=False)
    b = sample_equations(lm, theta, n=6, temperature=1.0, seed=5, max_len=20, constrained=False)
    c = sample_equations(lm, theta, n=6, temperature=1.0, seed=6, max_len=20, constrained=False)
    assert a == b and len(a) == 6
    assert a != c


def test_topic_posterior_is_bayes_rule():
    ll = np.log(np.array([[0.2, 0.1], [0.01, 0.04]]))
    post = topic_posterior(ll, np.array([0.5, 0.5]))
    assert np.allclose(post, [[2 / 3, 1 / 3], [0.2, 0.8]])
    post = topic_posterior(ll, np.array([0.2, 0.8]))  # the prior moves it
    assert np.allclose(post[0], [0.04 / 0.12, 0.08 / 0.12])


def test_constrained_generation_is_reproducible_and_closes_what_it_opens():
    lm = tiny_lm("input", seed=3)
    theta = np.array([0.3, 0.3, 0.4], dtype=np.float32)
    a = sample_equations(lm, theta, n=8, temperature=1.5, seed=11, max_len=25, constrained=True)
    b = sample_equations(lm, theta, n=8, temperature=1.5, seed=11, max_len=25, constrained=True)
    assert a == b
    for eq in a:  # an untrained model at T=1.5 would leave groups open without the constraint
        assert eq.count("{") - eq.count("\\{") == eq.count("}") - eq.count("\\}"), eq
        assert eq.count("\\begin{") == eq.count("\\end{"), eq


def test_one_theta_row_per_equation_matches_separate_calls():
    lm = tiny_lm("input", seed=4)
    rows = np.array([[1, 0, 0], [0, 0, 1], [0, 1, 0]], dtype=np.float32)
    together = sample_equations(lm, rows, n=3, temperature=0.0, seed=0, max_len=12, constrained=False)
    apart = [sample_equations(lm, r, n=1, temperature=0.0, seed=0, max_len=12, constrained=False)[0] for r in rows]
    assert together == apart  # greedy: each row follows its own θ


def test_equations_for_topics_do_not_depend_on_the_other_topics():
    lm = tiny_lm("input", seed=5)
    thetas = {t: np.eye(3, dtype=np.float32)[t] for t in range(3)}
    kw = dict(temperature=1.0, seed=2, max_len=12, constrained=False)
    every = generate_for_topics(lm, thetas, 4, **kw)
    assert [g.topic for g in every] == [0] * 4 + [1] * 4 + [2] * 4
    alone = generate_for_topics(lm, {2: thetas[2]}, 4, **kw)
    assert alone == every[8:]  # topic 2 samples with seed + 7919 * 2 whatever else is asked for
    assert [g.equation for g in alone] == sample_equations(lm, thetas[2], n=4, seed=2 + 7919 * 2, temperature=1.0,
                                                          max_len=12, constrained=False)
    mixed = generate_for_topics(lm, thetas, {0: 1, 1: 0, 2: 2}, mix_topics=True, **kw)
    assert [g.topic for g in mixed] == [0, 2, 2]  # one sampler call, one θ row per sequence
    rows = np.stack([thetas[0], thetas[2], thetas[2]])
    assert [g.equation for g in mixed] == sample_equations(lm, rows, n=3, seed=2, temperature=1.0, max_len=12,
                                                          constrained=False)


def test_length_control_through_the_one_generation_path():
    """Issue 20: `generate_for_topics(lengths=...)` gives each equation a target from its topic's lengths;
    "target" ends no earlier than it, "cap" never much past it; the commands' defaults are the flow's."""
    from flows.equations import RUN_PRESETS
    from topicrnn.generation import DEFAULT_LENGTH_CONTROL, DEFAULT_TEMPERATURE, LENGTH_CONTROL, length_settings
    from topicrnn.latex_syntax import LengthPrior
    from topiceq import arguments

    lm = tiny_lm("input", seed=6)
    prior = LengthPrior({None: [6] * 30, 0: [3] * 30, 1: [10] * 30})
    thetas = {t: np.eye(3, dtype=np.float32)[t] for t in range(2)}
    kw = dict(temperature=1.5, seed=3, max_len=40, lengths=prior)
    target = generate_for_topics(lm, thetas, 5, length_floor=1.0, **kw)
    n_tokens = [len(lm.tokenizer.tokenize(g.equation)) for g in target]
    # (a space token after a control word is sampled but vanishes when the text is tokenized again)
    assert all(n >= (3, 10)[g.topic] - 2 for n, g in zip(n_tokens, target)), target
    capped = generate_for_topics(lm, thetas, 5, length_floor=0.0, **kw)
    assert all(len(lm.tokenizer.tokenize(g.equation)) <= 1.25 * (3, 10)[g.topic] + 8 for g in capped), capped
    assert length_settings(lm, "off", None) == {"lengths": None, "length_floor": 1.0}
    assert length_settings(lm, "cap", "anything", constrained=False)["lengths"] is None
    with pytest.raises(ValueError, match="unknown length control"):
        length_settings(lm, "exact", None)
    assert arguments.LENGTH_MODES == tuple(LENGTH_CONTROL)
    assert (arguments.DEFAULT_TEMPERATURE, arguments.DEFAULT_LENGTHS) == (DEFAULT_TEMPERATURE, DEFAULT_LENGTH_CONTROL)
    assert all((p.temperature, p.length_control) == (DEFAULT_TEMPERATURE, DEFAULT_LENGTH_CONTROL)
               for p in RUN_PRESETS.values())


def test_resolve_device_names_what_is_missing():
    from topicrnn.device import resolve_device

    assert resolve_device("cpu") == torch.device("cpu") == resolve_device(torch.device("cpu"))
    auto = resolve_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else auto.type)
    assert resolve_device("auto", mps=False).type != "mps"  # the HMMs compute in float64
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(RuntimeError, match="MPS is not available"):
        resolve_device("mps", mps=False)
