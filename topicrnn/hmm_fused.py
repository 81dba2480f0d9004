"""The fused forward–backward pass behind `topicrnn.hmm` on the CPU: one compiled loop (numba) per block of models.

Why: the chunked torch pass (`topicrnn.hmm_chunks`) spends ~30 element-wise tensor operations per state and
position, each a trip through memory, so many small models (the instability grid: 2,500 two-state models on 1,000
bits) cost ~25–50 µs per model and iteration, where the arithmetic is ~30 floating-point operations per position.
Here the E-step of a block of models is one loop over time: the forward messages are kept, the backward message
lives in a small buffer, and γ, Σ ξ and the emission counts are accumulated while β is computed. The models of a
block are the innermost axis, so every operation is a loop over models that LLVM turns into SIMD vectors (its
length must come from the data: a constant length is unrolled into scalar code instead).

Same scaling as hmmlearn's "scaling" implementation: α̂_t is normalised, c_t is its normaliser, β̂_t(i) =
Σ_j A_ij b_j(x_{t+1}) β̂_{t+1}(j) / c_{t+1} (1 at the end of a sequence), so γ_t = α̂_t β̂_t and
ξ_t(i, j) = α̂_t(i) A_ij b_j(x_{t+1}) β̂_{t+1}(j) / c_{t+1}. The log-likelihood Σ log c_t is kept as a product and a
count of 2^600 rescalings (one log per model instead of one per position). A normaliser 0 (a symbol that no
state can emit) gives -inf.

Arrays, models last: pi [S, M], A [S, S, M] (from, to), B [V, S, M]; sym [n] symbol ids; first [n] true where a
sequence starts. Counts are float64 whatever the parameters' dtype.
"""
from __future__ import annotations

import functools
import importlib.util
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

# A compiled loop needs numba (the optional `fast` extra); without it (the GPU machine's image, say) the chunked
# torch pass does the work. Imported on first use: `import numba` costs ~0.5 s, and every command that loads a
# checkpoint imports this module.
HAVE_NUMBA = importlib.util.find_spec("numba") is not None

RESCALE = 2.0 ** 600  # the likelihood product is multiplied by this when it falls below its inverse
LOG_RESCALE = 600 * math.log(2.0)
MAX_BLOCK = 64  # models per block: measured 16 -> 64 -> 128: 13.0 -> 8.0 -> 7.4 ms per grid iteration; α of a
# block (n x S x 64 numbers) stays in a core's cache for the grid's n = 1,000
LANES = 8  # a block's width is a multiple of this (8 doubles: one AVX-512 vector; 63 models cost more than 64)


def available() -> bool:
    return HAVE_NUMBA


def wins(n_states: int, n_models: int) -> bool:
    """Whether the fused pass beats the chunked one on a CPU, one thread (measured: docs/results.md, issue 17).
    One model gives the compiled loop no vector of models to run along, so torch's batched products win from 4
    states on (8 states: 2x slower); a batch of models fills the vectors (2,500 two-state models: 10x faster)
    until S^2 per model outgrows them (8 models of 64 states: 1.25x slower)."""
    limit = 3 if n_models == 1 else 16 if n_models < 8 else 32 if n_models < 16 else 128
    return n_states <= limit


def _estep_block(sym, first, pi, A, B, backward, trans, gamma, m0, logprob, start_c, trans_c, emit_c):
    """E-step of one block of W models: pi [S, W], A [S, S, W], B [V, S, W] (contiguous); writes logprob [W]
    and, with `backward`, start_c [S, W], trans_c [S, S, W] (if `trans`), emit_c [V, S, W] and
    gamma[:, :, m0:m0 + W] (if gamma is not empty) (the counts arrive zeroed)."""
    n, S, W = sym.shape[0], pi.shape[0], pi.shape[1]
    dt = pi.dtype
    alpha = np.empty((n, S, W), dt)
    inv_norm = np.empty((n, W), dt)  # 1 / c_t
    cur = np.empty((S, W), dt)
    tot = np.empty(W, dt)
    product = np.ones(W, np.float64)
    rescales = np.zeros(W, np.float64)
    dead = np.zeros(W, np.float64)
    # ---------------------------------------------------------------- forward
    for t in range(n):
        x = sym[t]
        if first[t]:
            for s in range(S):
                for w in range(W):
                    cur[s, w] = pi[s, w] * B[x, s, w]
        else:
            prev = alpha[t - 1]
            for s in range(S):
                for w in range(W):
                    cur[s, w] = prev[0, w] * A[0, s, w]
                for i in range(1, S):
                    for w in range(W):
                        cur[s, w] += prev[i, w] * A[i, s, w]
                for w in range(W):
                    cur[s, w] *= B[x, s, w]
        for w in range(W):
            tot[w] = cur[0, w]
        for s in range(1, S):
            for w in range(W):
                tot[w] += cur[s, w]
        inv = inv_norm[t]
        for w in range(W):
            r = product[w] * tot[w]
            dead[w] += 0.0 if r > 0.0 else 1.0  # 0 or NaN: probability 0 from here on
            low = r < 1.0 / RESCALE
            product[w] = r * RESCALE if low else r
            rescales[w] += 1.0 if low else 0.0
            inv[w] = 1.0 / tot[w]
        a = alpha[t]
        for s in range(S):
            for w in range(W):
                a[s, w] = cur[s, w] * inv[w]
    for w in range(W):
        logprob[w] = -math.inf if dead[w] > 0.0 else math.log(product[w]) - rescales[w] * LOG_RESCALE
    if not backward:
        return
    # ---------------------------------------------------------------- backward, with the statistics
    beta = np.ones((S, W), dt)  # β̂_t
    nxt = np.empty((S, W), dt)  # b_j(x_{t+1}) β̂_{t+1}(j) / c_{t+1}
    keep = gamma.shape[0] > 0
    for t in range(n - 1, -1, -1):
        a = alpha[t]
        if t == n - 1 or first[t + 1]:
            for s in range(S):
                for w in range(W):
                    beta[s, w] = 1.0
        else:
            y = sym[t + 1]
            inv = inv_norm[t + 1]
            for j in range(S):
                for w in range(W):
                    nxt[j, w] = B[y, j, w] * beta[j, w] * inv[w]
            for i in range(S):
                for w in range(W):
                    beta[i, w] = A[i, 0, w] * nxt[0, w]
                for j in range(1, S):
                    for w in range(W):
                        beta[i, w] += A[i, j, w] * nxt[j, w]
            if trans:
                for i in range(S):
                    for j in range(S):
                        for w in range(W):
                            trans_c[i, j, w] += a[i, w] * A[i, j, w] * nxt[j, w]
        x = sym[t]
        for s in range(S):
            for w in range(W):
                emit_c[x, s, w] += a[s, w] * beta[s, w]
        if keep:
            for s in range(S):
                for w in range(W):
                    gamma[t, s, m0 + w] = a[s, w] * beta[s, w]
        if first[t]:
            for s in range(S):
                for w in range(W):
                    start_c[s, w] += a[s, w] * beta[s, w]


@functools.cache
def _compiled():
    """`_estep_block` compiled (cached on disk by numba: later processes load it in ~0.5 s)."""
    import numba

    # error_model="numpy": 1/0 is inf (a zero-division check per element would keep the loops scalar)
    return numba.njit(cache=True, nogil=True, error_model="numpy")(_estep_block)


def _blocks(a: np.ndarray, k: int, W: int) -> np.ndarray:
    """[..., M] -> [k, ..., W] (the last model repeated to fill the last block), contiguous."""
    M = a.shape[-1]
    if k * W > M:
        a = np.concatenate([a, np.repeat(a[..., -1:], k * W - M, -1)], -1)
    return np.ascontiguousarray(np.moveaxis(a.reshape(*a.shape[:-1], k, W), -2, 0))


def _models(a: np.ndarray, M: int) -> np.ndarray:
    """[k, ..., W] -> [..., M]."""
    return np.moveaxis(a, 0, -2).reshape(*a.shape[1:-1], -1)[..., :M]


def estep(sym: np.ndarray, first: np.ndarray, pi: np.ndarray, A: np.ndarray, B: np.ndarray, *, backward: bool = True,
          trans: bool = True, posteriors: bool = False, threads: int = 1):
    """-> (log-likelihood [M], start counts [S, M], Σ ξ [S, S, M], emission counts [V, S, M], γ [n, S, M] or
    None). pi [S, M], A [S, S, M], B [V, S, M] (one dtype). `backward=False`: the log-likelihood only (the
    counts are 0); `trans=False` leaves Σ ξ at 0. Blocks of models run on `threads` threads."""
    if not available():
        raise RuntimeError("the fused HMM pass needs numba (pip install numba); use the chunked pass")
    n, (S, M), V = len(sym), pi.shape, B.shape[0]
    k = -(-M // MAX_BLOCK)
    W = -(-M // k)  # equal blocks (100 models: 2 x 56, not 64 + 36 padded to 64), whole SIMD vectors of 8
    W = W if W < LANES else -(-W // LANES) * LANES
    sym, first = np.ascontiguousarray(sym, np.int64), np.ascontiguousarray(first, np.bool_)
    pi_b, A_b, B_b = _blocks(pi, k, W), _blocks(A, k, W), _blocks(B, k, W)
    posteriors = posteriors and backward
    kernel = _compiled()
    gamma = np.empty((n, S, k * W) if posteriors else (0, S, W), pi.dtype)
    logprob = np.empty((k, W))
    start_c, trans_c, emit_c = np.zeros((k, S, W)), np.zeros((k, S, S, W)), np.zeros((k, V, S, W))

    def run(b: int) -> None:
        kernel(sym, first, pi_b[b], A_b[b], B_b[b], backward, trans, gamma, b * W, logprob[b], start_c[b], trans_c[b],
               emit_c[b])

    if threads > 1 and k > 1:
        with ThreadPoolExecutor(min(threads, k)) as pool:
            list(pool.map(run, range(k)))
    else:
        for b in range(k):
            run(b)
    return (logprob.reshape(-1)[:M], _models(start_c, M), _models(trans_c, M), _models(emit_c, M),
            gamma[..., :M] if posteriors else None)


@dataclass
class FusedSymbols:
    """The fused pass's data: the symbols as they are, and where each sequence starts."""
    n: int
    sym: np.ndarray  # [n] int64
    first: np.ndarray  # [n] bool

    @classmethod
    def of(cls, X: np.ndarray, lengths: np.ndarray) -> "FusedSymbols":
        first = np.zeros(len(X), np.bool_)
        first[np.concatenate([[0], np.cumsum(lengths)[:-1]])] = True
        return cls(len(X), np.ascontiguousarray(X, np.int64), first)
