"""The fused forward–backward pass (topicrnn/hmm_fused.py, numba) against the chunked torch pass, hmmlearn and
brute force; EM through it never goes down; the engine choice and the numba-less fallback."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from topicrnn import hmm_fused
from topicrnn.hmm import HMM, BatchedHMM
from topicrnn.hmm_chunks import ChunkedSymbols
from topicrnn.hmm_fused import FusedSymbols

pytestmark = pytest.mark.usefixtures("one_torch_thread")
needs_numba = pytest.mark.skipif(not hmm_fused.available(), reason="numba is not installed (the optional fused pass)")


def batch(M, S, V, seed, engine, **kwargs) -> BatchedHMM:
    rng = np.random.default_rng(seed)
    m = BatchedHMM(M, S, V, init_params="", engine=engine, **kwargs)
    m.startprob_ = rng.dirichlet(np.ones(S), size=M)
    m.transmat_ = rng.dirichlet(np.ones(S), size=(M, S))
    m.emissionprob_ = rng.dirichlet(np.ones(V), size=(M, S))
    return m


def data(V, lengths, seed):
    return np.random.default_rng(seed).integers(0, V, sum(lengths)), list(lengths)


@needs_numba
@pytest.mark.parametrize("M, S, V", [(1, 1, 3), (1, 2, 4), (3, 3, 5), (70, 2, 2), (9, 5, 6), (20, 8, 7)])
def test_fused_equals_chunked_pass_and_em(M, S, V):
    """Score, posteriors and 5 EM iterations (parameters, history) of both passes; 70 models = two blocks, the
    last one padded."""
    X, lengths = data(V, [700, 1, 400, 299], seed=M + S)
    fused, chunked = batch(M, S, V, 1, "fused"), batch(M, S, V, 1, "chunked")
    assert fused.uses_fused() and not chunked.uses_fused()
    np.testing.assert_allclose(fused.score(X, lengths), chunked.score(X, lengths), rtol=1e-12)
    np.testing.assert_allclose(fused.predict_proba(X, lengths), chunked.predict_proba(X, lengths), atol=1e-11)
    for m in (fused, chunked):
        m.n_iter, m.tol = 5, -math.inf
        m.fit(X, lengths)
    for name in ("startprob_", "transmat_", "emissionprob_"):
        np.testing.assert_allclose(getattr(fused, name), getattr(chunked, name), atol=1e-11)
    np.testing.assert_allclose(np.array(fused.monitor_.history), np.array(chunked.monitor_.history), rtol=1e-12)


@needs_numba
@pytest.mark.parametrize("S, V, n", [(2, 3, 3000), (3, 5, 2000), (6, 4, 4000)])
def test_fused_agrees_with_hmmlearn(S, V, n):
    hmm = pytest.importorskip("hmmlearn.hmm")
    X, lengths = data(V, [n // 2, n - n // 2], seed=S)
    m = batch(4, S, V, S, "fused", n_iter=4, tol=-math.inf)
    scores = m.score(X, lengths)
    posteriors = m.predict_proba(X, lengths)
    m.fit(X, lengths)
    for k in range(4):
        start = batch(4, S, V, S, "fused")  # the same seeded parameters, before EM
        ref = hmm.CategoricalHMM(S, n_features=V, init_params="", n_iter=4, tol=-math.inf, implementation="scaling")
        ref.startprob_, ref.transmat_, ref.emissionprob_ = (start.startprob_[k], start.transmat_[k],
                                                            start.emissionprob_[k])
        theirs = ref.score(X[:, None], lengths)
        assert abs(scores[k] - theirs) / abs(theirs) <= 1e-6
        np.testing.assert_allclose(posteriors[k], ref.predict_proba(X[:, None], lengths), atol=1e-9)
        ref.fit(X[:, None], lengths)
        np.testing.assert_allclose(m.transmat_[k], ref.transmat_, atol=1e-9)
        np.testing.assert_allclose(m.emissionprob_[k], ref.emissionprob_, atol=1e-9)
        np.testing.assert_allclose(np.array(m.monitor_.history)[:, k], list(ref.monitor_.history), rtol=1e-9)


@needs_numba
def test_fused_matches_brute_force_on_a_short_sequence():
    m = batch(1, 3, 4, 7, "fused").model(0)
    X = np.array([0, 3, 1, 1, 2, 0])
    total = 0.0
    post = np.zeros((len(X), 3))
    pi, A, B = m.startprob_, m.transmat_, m.emissionprob_
    for path in np.ndindex(*([3] * len(X))):
        p = pi[path[0]] * B[path[0], X[0]] * np.prod([A[path[t - 1], path[t]] * B[path[t], X[t]]
                                                      for t in range(1, len(X))])
        total += p
        post[np.arange(len(X)), path] += p
    assert m.uses_fused()
    assert m.score(X) == pytest.approx(math.log(total), rel=1e-12)
    np.testing.assert_allclose(m.predict_proba(X), post / total, atol=1e-12)


@needs_numba
@pytest.mark.parametrize("dtype, params", [(torch.float64, "ste"), (torch.float64, "e"), (torch.float32, "ste")])
def test_em_through_the_fused_pass_never_lowers_the_likelihood(dtype, params):
    """100 models, 40 iterations: the monitor's RuntimeWarning (a drop beyond rounding) is an error here."""
    X, lengths = data(5, [1500, 500], seed=3)
    m = batch(100, 4, 5, 11, "fused", n_iter=40, tol=-math.inf, dtype=dtype, params=params)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        m.fit(X, lengths)
    h = np.array(m.monitor_.history)
    assert h.shape == (40, 100)
    noise = 1e-6 if dtype == torch.float32 else 1e-11
    assert np.all(np.diff(h, axis=0) >= -noise * np.abs(h[1:]))
    assert np.all(h[-1] > h[0] + 1.0)  # and it did climb


@needs_numba
def test_fused_threads_give_the_same_numbers_and_float32_is_close():
    M, S, V = 150, 3, 4
    X, lengths = data(V, [900, 100], seed=5)
    m = batch(M, S, V, 2, "fused")
    d = FusedSymbols.of(X, np.asarray(lengths))
    pi, A, B = m._pi.numpy(), m._A.numpy(), m._B.numpy()
    args = (d.sym, d.first, pi.T, A.transpose(1, 2, 0), B.transpose(2, 1, 0))
    one = hmm_fused.estep(*args, threads=1, posteriors=True)
    two = hmm_fused.estep(*args, threads=2, posteriors=True)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)
    m32 = batch(M, S, V, 2, "fused", dtype=torch.float32)
    np.testing.assert_allclose(m32.score(X, lengths), m.score(X, lengths), rtol=1e-5)


@needs_numba
def test_fused_zero_probability_is_minus_infinity_and_em_keeps_it_finite_elsewhere():
    m = batch(2, 2, 3, 0, "fused")
    B = m.emissionprob_.copy()
    B[0] = [[0.5, 0.5, 0.0], [0.3, 0.7, 0.0]]  # model 0 never emits symbol 2
    m.emissionprob_ = B
    scores = m.score([0, 1, 2, 0])
    assert scores[0] == -math.inf and np.isfinite(scores[1])


def test_engine_choice_and_the_fallback_without_numba(monkeypatch):
    with pytest.raises(ValueError, match="engine must be one of"):
        BatchedHMM(2, 2, 2, engine="fast")
    X = np.random.default_rng(0).integers(0, 3, 300)
    reference = batch(20, 2, 3, 4, "chunked").score(X)
    monkeypatch.setattr(hmm_fused, "HAVE_NUMBA", False)  # the GPU machine's image: no numba
    auto = batch(20, 2, 3, 4, "auto")
    assert not auto.uses_fused() and isinstance(auto._data(X, None), ChunkedSymbols)
    np.testing.assert_allclose(auto.score(X), reference, rtol=1e-12)
    with pytest.raises(RuntimeError, match="pip install numba"):
        batch(20, 2, 3, 4, "fused").score(X)
    monkeypatch.undo()
    if hmm_fused.available():
        assert batch(20, 2, 3, 4, "auto").uses_fused()  # a batch of small models: the fused pass
        assert not HMM(16, 3, engine="auto").uses_fused()  # one 16-state model: torch's batched products win
        assert not HMM(2, 3, chunk_length=50).uses_fused()  # a chunk length asks for the chunked pass
