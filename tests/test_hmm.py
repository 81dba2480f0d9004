"""HMM (topicrnn/hmm.py): known probabilities, brute force over all state paths, EM never going down, hmmlearn's
score and EM, Viterbi, batched == looped, the chunked recursion's corner cases, the step protocol."""
from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import torch

from topicrnn.hmm import HMM, BatchedHMM, ConvergenceMonitor
from topicrnn.scoring import forward_block

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_model(S, V, seed, chunk_length=None, **kwargs) -> HMM:
    m = HMM(S, V, seed=seed, chunk_length=chunk_length, **kwargs)
    rng = np.random.default_rng(seed)
    m.startprob_ = rng.dirichlet(np.ones(S))
    m.transmat_ = rng.dirichlet(np.ones(S), size=S)
    m.emissionprob_ = rng.dirichlet(np.ones(V), size=S)
    m.init_params = ""
    return m


def brute_force(m: HMM, x: np.ndarray):
    """Every state path of one sequence: (p(x), posteriors [n, S], best path, its probability)."""
    pi, A, B = m.startprob_, m.transmat_, m.emissionprob_
    S, n = len(pi), len(x)
    total, post, best, best_p = 0.0, np.zeros((n, S)), None, -1.0
    for path in itertools.product(range(S), repeat=n):
        p = pi[path[0]] * B[path[0], x[0]]
        for t in range(1, n):
            p *= A[path[t - 1], path[t]] * B[path[t], x[t]]
        total += p
        post[np.arange(n), path] += p
        if p > best_p:
            best, best_p = np.array(path), p
    return total, post / total, best, best_p


# ------------------------------------------------------------------------------------------ known values
def weather_model() -> HMM:
    """Wikipedia's HMM example: states Rainy, Sunny; activities walk, shop, clean."""
    m = HMM(2, 3, init_params="")
    m.startprob_ = [0.6, 0.4]
    m.transmat_ = [[0.7, 0.3], [0.4, 0.6]]
    m.emissionprob_ = [[0.1, 0.4, 0.5], [0.6, 0.3, 0.1]]
    return m


def test_wikipedia_weather_example():
    m = weather_model()
    walk_shop_clean = [0, 1, 2]
    assert math.exp(m.score(walk_shop_clean)) == pytest.approx(0.033612, rel=1e-12)
    logp, path = m.decode(walk_shop_clean)
    assert path.tolist() == [1, 0, 0]  # Sunny, Rainy, Rainy
    assert math.exp(logp) == pytest.approx(0.01344, rel=1e-12)


@pytest.mark.parametrize("S, chunk_length", [(2, 2), (3, 3), (5, 4), (6, None)])
def test_brute_force_over_all_state_paths(S, chunk_length):
    """Likelihood, posteriors and Viterbi against enumeration, with the sequence cut into chunks of a few
    symbols (the chunked recursion's corrections) and two sequences that share a chunk."""
    V, rng = 4, np.random.default_rng(S)
    m = random_model(S, V, seed=S, chunk_length=chunk_length)
    n = 8 if S <= 3 else 6
    x1, x2 = rng.integers(0, V, n), rng.integers(0, V, n - 1)
    p1, post1, best1, bp1 = brute_force(m, x1)
    p2, post2, best2, bp2 = brute_force(m, x2)
    X, lengths = np.concatenate([x1, x2]), [n, n - 1]
    assert m.score(X, lengths) == pytest.approx(math.log(p1) + math.log(p2), rel=1e-12)
    np.testing.assert_allclose(m.predict_proba(X, lengths), np.vstack([post1, post2]), atol=1e-12)
    logp, path = m.decode(X, lengths)
    assert path.tolist() == best1.tolist() + best2.tolist()
    assert logp == pytest.approx(math.log(bp1) + math.log(bp2), rel=1e-12)


def test_chain_that_never_forgets_uses_the_exact_fallback():
    """A deterministic cycle with uninformative emissions never forgets where it started: the correction sweeps
    cannot merge, and the transfer-matrix fallback must still give the exact answer."""
    m = HMM(3, 3, init_params="", chunk_length=5)
    m.startprob_ = [1.0, 0.0, 0.0]
    m.transmat_ = np.roll(np.eye(3), 1, axis=1)
    m.emissionprob_ = [[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]]
    X = np.random.default_rng(0).integers(0, 3, 60)
    expected = sum(math.log(m.emissionprob_[t % 3, x]) for t, x in enumerate(X))
    assert m.score(X) == pytest.approx(expected, rel=1e-12)
    post = m.predict_proba(X)
    np.testing.assert_allclose(post, np.eye(3)[np.arange(60) % 3], atol=1e-12)


# -------------------------------------------------------------------------------------------- hmmlearn
@pytest.mark.parametrize("S, V, n, chunk_length", [(2, 3, 3000, 64), (3, 5, 2000, None), (7, 6, 4000, 50),
                                                   (16, 20, 5000, None)])
def test_score_posteriors_and_em_agree_with_hmmlearn(S, V, n, chunk_length):
    hmm = pytest.importorskip("hmmlearn.hmm")
    rng = np.random.default_rng(n + S)
    X = rng.integers(0, V, n)
    lengths = [n // 3, n // 3, n - 2 * (n // 3)]
    m = random_model(S, V, seed=S, chunk_length=chunk_length, n_iter=4, tol=-np.inf)
    ref = hmm.CategoricalHMM(S, n_features=V, init_params="", n_iter=4, tol=-np.inf, implementation="scaling")
    ref.startprob_, ref.transmat_, ref.emissionprob_ = m.startprob_, m.transmat_, m.emissionprob_
    ours, theirs = m.score(X, lengths), ref.score(X[:, None], lengths)
    assert abs(ours - theirs) / abs(theirs) <= 1e-6
    np.testing.assert_allclose(m.predict_proba(X, lengths), ref.predict_proba(X[:, None], lengths), atol=1e-9)
    m.fit(X, lengths)
    ref.fit(X[:, None], lengths)
    for name in ("startprob_", "transmat_", "emissionprob_"):
        np.testing.assert_allclose(getattr(m, name), getattr(ref, name), atol=1e-9)
    np.testing.assert_allclose(m.monitor_.history, list(ref.monitor_.history), rtol=1e-9)


def test_map_em_with_dirichlet_priors_agrees_with_hmmlearn_and_never_goes_down():
    hmm = pytest.importorskip("hmmlearn.hmm")
    X = np.random.default_rng(5).integers(0, 6, 2000)
    priors = dict(startprob_prior=1.3, transmat_prior=1.5, emissionprob_prior=1.2)
    m = random_model(4, 6, seed=6, n_iter=6, tol=-np.inf, **priors)
    ref = hmm.CategoricalHMM(4, n_features=6, init_params="", n_iter=6, tol=-np.inf, **priors)
    ref.startprob_, ref.transmat_, ref.emissionprob_ = m.startprob_, m.transmat_, m.emissionprob_
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        m.fit(X, lengths=[1000, 1000])
    ref.fit(X[:, None], lengths=[1000, 1000])
    for name in ("startprob_", "transmat_", "emissionprob_"):
        np.testing.assert_allclose(getattr(m, name), getattr(ref, name), atol=1e-9)
    h = np.array(m.monitor_.history)
    assert np.all(np.diff(h) >= -1e-9 * np.abs(h[1:]))


def test_zero_probability_is_minus_infinity_not_nan():
    m = random_model(3, 3, seed=1, chunk_length=4)
    A = m.transmat_.copy()
    A[:, 2] = 0.0  # state 2 is never entered again,
    m.transmat_ = A / A.sum(1, keepdims=True)
    B = np.full((3, 3), 0.5)
    B[:, 2] = 0.0
    B[2] = [0.0, 0.0, 1.0]  # and only state 2 emits symbol 2
    m.emissionprob_ = B
    m.startprob_ = [0.5, 0.5, 0.0]
    X = np.array([0, 1, 0, 0, 1, 1, 0, 2, 0, 1, 0, 1])
    assert m.score(X) == -math.inf
    assert m.score(X, lengths=[7, 5]) == -math.inf and math.isfinite(m.score(X[:7]))


def test_viterbi_agrees_with_hmmlearn_on_a_long_sequence():
    hmm = pytest.importorskip("hmmlearn.hmm")
    m = random_model(4, 5, seed=3)
    X = np.random.default_rng(1).integers(0, 5, 3000)
    ref = hmm.CategoricalHMM(4, n_features=5, init_params="")
    ref.startprob_, ref.transmat_, ref.emissionprob_ = m.startprob_, m.transmat_, m.emissionprob_
    logp, path = m.decode(X)
    ref_logp, ref_path = ref.decode(X[:, None], algorithm="viterbi")
    assert logp == pytest.approx(ref_logp, rel=1e-10)

    def path_logprob(p):
        return (np.log(m.startprob_[p[0]]) + np.log(m.transmat_[p[:-1], p[1:]]).sum()
                + np.log(m.emissionprob_[p, X]).sum())

    # Equal paths, or paths of exactly the same probability (this model has such ties).
    assert np.mean(path == ref_path) > 0.99
    assert path_logprob(path) == pytest.approx(logp, rel=1e-12)
    assert path_logprob(ref_path) == pytest.approx(logp, rel=1e-12)


# ------------------------------------------------------------------------------------------------- EM
@pytest.mark.parametrize("S, chunk_length", [(2, None), (5, 40)])
def test_em_log_likelihood_never_goes_down(S, chunk_length):
    truth = random_model(S, 6, seed=10 + S)
    X, _ = truth.sample(3000, seed=1)
    m = HMM(S, 6, n_iter=40, tol=-np.inf, seed=5, chunk_length=chunk_length)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the monitor's warning would fail the test
        m.fit(X, lengths=[1000, 1500, 500])
    h = np.array(m.monitor_.history)
    assert len(h) == 40 and h[-1] > h[0] + 10
    assert np.all(np.diff(h) >= -1e-9 * np.abs(h[1:]))


def test_callback_sees_every_iteration_and_can_stop_em():
    X = np.random.default_rng(0).integers(0, 3, 300)
    seen = []
    m = HMM(2, 3, n_iter=20, tol=-np.inf, seed=0)
    m.fit(X, callback=lambda model, stats: seen.append(float(stats["emit"].sum())) or len(seen) == 4)
    assert m.monitor_.iter == 4 and seen == pytest.approx([300.0] * 4)  # expected counts of all symbols


def test_monitor_warns_when_the_log_likelihood_goes_down_and_stops_on_tol():
    mon = ConvergenceMonitor(tol=0.5, n_iter=10)
    mon.report(-100.0)
    with pytest.warns(RuntimeWarning, match="went down"):
        mon.report(-101.0)
    assert mon.converged  # a gain below tol
    mon = ConvergenceMonitor(tol=0.5, n_iter=3)
    for v in (-10.0, -5.0, -1.0):
        mon.report(v)
    assert mon.converged and mon.iter == 3 and mon.history == [-10.0, -5.0, -1.0]


@pytest.mark.parametrize("S", [3, 6])
def test_batched_equals_looped(S):
    """M models in one batched fit == M separate fits, including models that converge at different iterations
    (a converged model of the batch stops changing, as a separate fit stops)."""
    rng = np.random.default_rng(4)
    X, _ = random_model(3, 5, seed=2).sample(1500, seed=3)
    lengths = [700, 800]
    M, V = 4, 5
    starts = [rng.dirichlet(np.ones(S)) for _ in range(M)]
    trans = [rng.dirichlet(np.ones(S), size=S) for _ in range(M)]
    emits = [rng.dirichlet(np.ones(V), size=S) for _ in range(M)]
    batch = BatchedHMM(M, S, V, n_iter=25, tol=0.5, init_params="")
    batch.startprob_, batch.transmat_, batch.emissionprob_ = np.array(starts), np.array(trans), np.array(emits)
    batch.fit(X, lengths)
    iterations = []
    for i in range(M):
        single = HMM(S, V, n_iter=25, tol=0.5, init_params="")
        single.startprob_, single.transmat_, single.emissionprob_ = starts[i], trans[i], emits[i]
        single.fit(X, lengths)
        iterations.append(single.monitor_.iter)
        np.testing.assert_allclose(batch.transmat_[i], single.transmat_, atol=1e-10)
        np.testing.assert_allclose(batch.emissionprob_[i], single.emissionprob_, atol=1e-10)
        np.testing.assert_allclose(batch.startprob_[i], single.startprob_, atol=1e-10)
        np.testing.assert_allclose(np.array(batch.monitor_.history)[: single.monitor_.iter, i],
                                   single.monitor_.history, rtol=1e-10)
        assert batch.model(i).score(X, lengths) == pytest.approx(single.score(X, lengths), rel=1e-10)
    assert len(set(iterations)) > 1, "the test needs models that converge at different iterations"
    np.testing.assert_allclose(batch.score(X, lengths), [batch.model(i).score(X, lengths) for i in range(M)],
                               rtol=1e-10)


def test_params_fixed_parameters_and_float32():
    m = random_model(2, 2, seed=1, params="e", n_iter=5, tol=-np.inf)
    A, pi = m.transmat_.copy(), m.startprob_.copy()
    X = np.random.default_rng(0).integers(0, 2, 500)
    m.fit(X)
    np.testing.assert_array_equal(m.transmat_, A)
    np.testing.assert_array_equal(m.startprob_, pi)
    m32 = random_model(3, 4, seed=2, dtype=torch.float32)
    m64 = random_model(3, 4, seed=2)
    X = np.random.default_rng(0).integers(0, 4, 2000)
    assert m32.score(X) == pytest.approx(m64.score(X), rel=1e-5)


def test_sample_is_seeded_and_follows_the_model():
    m = weather_model()
    a, sa = m.sample(2000, seed=7)
    b, _ = m.sample(2000, seed=7)
    assert np.array_equal(a, b) and not np.array_equal(a, m.sample(2000, seed=8)[0])
    rainy = sa == 0
    assert np.mean(a[rainy] == 2) == pytest.approx(0.5, abs=0.05)  # Rainy cleans half the time
    assert np.mean(sa[1:][sa[:-1] == 0] == 0) == pytest.approx(0.7, abs=0.05)


@pytest.mark.parametrize("X, lengths, match", [
    (np.zeros((3, 2), int), None, "1-D"), ([0, 1, 5], None, "0..2"), ([0, -1], None, "0..2"),
    ([0, 1, 2], [2, 2], "sum to"), ([], None, "non-empty"), ([0.5, 1], None, "integer")])
def test_bad_input_is_a_clear_error(X, lengths, match):
    with pytest.raises(ValueError, match=match):
        weather_model().score(X, lengths)


def test_bad_parameters_are_a_clear_error():
    m = HMM(2, 3)
    with pytest.raises(ValueError, match="probability distribution"):
        m.transmat_ = [[0.5, 0.6], [0.5, 0.5]]
    with pytest.raises(ValueError, match="shape"):
        m.emissionprob_ = [[1.0, 0.0], [0.5, 0.5]]
    with pytest.raises(ValueError, match="not set"):
        HMM(2, 3, init_params="").fit([0, 1, 2])


# ------------------------------------------------------------------------------------ the step protocol
def test_step_protocol_reproduces_score_and_round_trips():
    m = random_model(4, 6, seed=8)
    m.start_symbol = 5  # like a tokenizer's <bos>: never emitted, leaves the state as it is
    m.emissionprob_ = np.hstack([m.emissionprob_[:, :5] / m.emissionprob_[:, :5].sum(1, keepdims=True),
                                 np.zeros((4, 1))])
    X = np.random.default_rng(2).integers(0, 5, (3, 40))
    state = m.initial_state(3)
    assert m.kind == "hmm" and m.topic_dim == 0 and m.vocab_size == 6 and state.shape == (3, 4)
    assert float(state.abs().sum()) == 0.0
    ids = torch.full((3,), 5, dtype=torch.long)
    total = torch.zeros(3, dtype=torch.float64)
    for t in range(X.shape[1]):
        logits, state = m.step(ids, None, state)
        ids = torch.as_tensor(X[:, t])
        total += logits.gather(1, ids.view(-1, 1)).squeeze(1)
    np.testing.assert_allclose(total.numpy(), [m.score(x) for x in X], rtol=1e-10)
    assert torch.allclose(m.state_layers(state)["posterior"].sum(-1), torch.ones(3, dtype=torch.float64))
    tokens = torch.cat([torch.full((3, 1), 5), torch.as_tensor(X)], 1)
    logits, _ = forward_block(m, tokens, None, None)  # what scoring and sampling run: steps, one by one
    via_forward = logits[:, :-1].gather(2, tokens[:, 1:, None]).squeeze(-1).sum(1)
    np.testing.assert_allclose(via_forward.numpy(), total.numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="theta"):
        m.step(ids, torch.ones(3, 2), None)

    import io

    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    again = HMM(4, 6, init_params="").load_state_dict(torch.load(buf, weights_only=True))
    assert again.score(X[0]) == pytest.approx(m.score(X[0]), rel=1e-12)
    assert m.num_parameters() == 3 + 4 * 3 + 4 * 5
