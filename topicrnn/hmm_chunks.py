"""The chunked forward–backward recursions behind `topicrnn.hmm`.

Why chunked: a recursion
over 200,000 symbols is 200,000 sequential steps, and a Python step costs microseconds. The sequence is cut
into C chunks of L symbols that advance together (one batched matrix product per step, L steps). A chunk
needs the filtered distribution at the end of the previous chunk; it starts from a guess, and a correction
sweep re-runs each chunk from its true incoming distribution only until its messages agree with the first
sweep's (relative difference ≤ tol, then they agree from there on: a non-negative linear map never expands
Hilbert's projective distance, Birkhoff). Chains that never forget (periodic, deterministic) would need C
sweeps; after MAX_SWEEPS the exact incoming distributions come from chunk transfer matrices (S³ per step).
Both messages are normalised at every step (α̂ and β̂ up to a constant), so posteriors are exact and the
log-likelihood is Σ log of the forward normalisers.

Layout: positions are cut into C chunks of L steps; messages are [L, S, C, M] (step, state, chunk, model), so a
step reads and writes one contiguous [S, C, M] block and a per-model matrix broadcasts along contiguous memory.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

# Relative agreement at which two runs of a chunk count as merged (rounding noise is ~1e-16 / ~1e-7).
MERGE_TOL = {torch.float64: 1e-12, torch.float32: 1e-5}
CHECK_EVERY = 4  # correction sweeps test for the merge every this many steps (a test costs a sync)
MAX_SWEEPS = 6  # correction sweeps before the exact transfer-matrix fallback


@dataclass
class ChunkedSymbols:
    """Symbols laid out as C chunks of L steps: arrays indexed [step i, chunk c] hold position c·L + i. The tail
    is padded with a pad symbol (id n_symbols, probability 1 in every state) whose positions are one-symbol sequences:
    they add 0 to the log-likelihood and nothing to the statistics."""
    n: int
    L: int
    C: int
    sym: torch.Tensor  # [L, C] long
    real: torch.Tensor  # [L, C] bool: not a pad
    reset_fwd: torch.Tensor  # [L, C] bool: a sequence starts here (the forward message restarts from π)
    reset_bwd: torch.Tensor  # [L, C] bool: a sequence starts at the next position (β restarts from 1)
    any_fwd: list  # per step: does any chunk restart there
    any_bwd: list
    fwd_idx: tuple  # (steps, chunks) of the reset_fwd positions
    bwd_idx: tuple
    real_start_idx: tuple  # (steps, chunks) where a real sequence starts
    warm: dict | None = None  # messages entering each chunk in the last E-step: the next one's first guess
    buffers: dict = field(default_factory=dict)  # reused arrays: fresh ones of this size cost page faults

    def workspace(self, dtype, device):
        """get(name, *shape) -> a reused uninitialised tensor."""
        def get(name, *shape, dtype=dtype):
            t = self.buffers.get(name)
            if t is None or t.shape != shape or t.dtype != dtype or t.device != device:
                t = self.buffers[name] = torch.empty(shape, dtype=dtype, device=device)
            return t
        return get


def as_symbols(X, lengths, n_symbols: int) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X)
    if X.ndim == 2 and X.shape[1] == 1:  # hmmlearn's column shape
        X = X[:, 0]
    if X.ndim != 1 or X.size == 0:
        raise ValueError(f"X must be a non-empty 1-D array of symbol ids, got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.integer):
        if not np.all(np.mod(X, 1) == 0):
            raise ValueError("X must hold integer symbol ids")
        X = X.astype(np.int64)
    if X.min() < 0 or X.max() >= n_symbols:
        raise ValueError(f"symbol ids must lie in 0..{n_symbols - 1}, found {X.min()}..{X.max()}")
    lengths = np.asarray([len(X)] if lengths is None else lengths, dtype=np.int64).reshape(-1)
    if lengths.size == 0 or lengths.min() <= 0 or lengths.sum() != len(X):
        raise ValueError(f"lengths must be positive and sum to len(X) = {len(X)}, got sum {lengths.sum()}")
    return X.astype(np.int64), lengths


def chunk_layout(X: np.ndarray, lengths: np.ndarray, n_chunks: int, pad: int, device) -> ChunkedSymbols:
    n = len(X)
    L = -(-n // max(1, min(n_chunks, n)))
    C = -(-n // L)
    N = C * L
    sym = np.full(N, pad, np.int64)
    sym[:n] = X
    start = np.ones(N, bool)
    start[:n] = False
    start[np.concatenate([[0], np.cumsum(lengths)[:-1]])] = True
    start_next = np.ones(N, bool)
    start_next[:-1] = start[1:]
    real = np.arange(N) < n

    def grid(a):  # [N] -> [L, C]: position c·L + i at [i, c]
        return np.ascontiguousarray(a.reshape(C, L).T)

    def idx(mask):
        return tuple(torch.from_numpy(k).to(device) for k in np.nonzero(grid(mask)))

    tens = [torch.from_numpy(grid(a)).to(device) for a in (sym, real, start, start_next)]
    return ChunkedSymbols(n, L, C, *tens, grid(start).any(1).tolist(), grid(start_next).any(1).tolist(), idx(start),
                 idx(start_next), idx(start & real))


def _close(a: torch.Tensor, b: torch.Tensor, tol: float) -> bool:
    return bool((a - b).abs_().le_(torch.maximum(a, b).mul_(tol)).all())


def sum_states(z: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Σ over the state axis (the first of [S, C, M]); a few states are added up (a reduction kernel over an
    axis of 2 costs more than the adds)."""
    if z.shape[0] > Propagator.SMALL:
        return torch.sum(z, 0, out=out)
    s = torch.add(z[0], z[1], out=out) if z.shape[0] > 1 else (z[0].clone() if out is None else out.copy_(z[0]))
    for k in range(2, z.shape[0]):
        s.add_(z[k])
    return s


class Propagator:
    """z_j = Σ_i x_i K_ij for messages laid out [..., S, C, M] (state-major, models innermost, so broadcasting a
    per-model K over chunks runs along contiguous memory). Few states: S² fused multiply-adds over long vectors
    (a batched product of 2 × 2 matrices is all overhead); one model: one matrix product; else batched."""

    SMALL = 4

    def __init__(self, K: torch.Tensor):
        self.M, self.S = K.shape[0], K.shape[1]
        if self.S <= self.SMALL:
            self.cols = [K[:, i, :].T.unsqueeze(1).contiguous() for i in range(self.S)]  # [S, 1, M]: K_i·
        else:
            self.Kt = K.transpose(1, 2).contiguous()  # [M, S, S]

    def __call__(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        S, M = self.S, self.M
        if S <= self.SMALL:
            z = torch.mul(self.cols[0], x.select(-3, 0).unsqueeze(-3), out=out)
            for i in range(1, S):
                z.addcmul_(self.cols[i], x.select(-3, i).unsqueeze(-3))
            return z
        lead, C = x.shape[:-3], x.shape[-2]
        if M == 1:
            if out is not None:
                torch.matmul(self.Kt[0], x.reshape(*lead, S, C), out=out.view(*lead, S, C))
                return out
            return torch.matmul(self.Kt[0], x.reshape(*lead, S, C)).view(*lead, S, C, 1)
        z = torch.matmul(self.Kt, x.movedim(-1, -3)).movedim(-3, -1)  # via [..., M, S, C]
        return z.contiguous() if out is None else out.copy_(z)


def run_chain(E, prop, r, reset, any_reset, out, x_in, *, reverse=False, norms=None, tol=1e-12) -> int:
    """x_t = normalise(E_t ⊙ (reset_t ? r : prop(x_{t-1}))) along every chunk (backwards when `reverse`), all
    chunks and models at once (E [S, L, C, M]); writes x into out [L, S, C, M] (and the sums before normalising
    into norms [L, C, M]). x_in [S, C, M]: the guess for the message entering each chunk, updated in place.
    Returns the number of sweeps run."""
    S, L, C, M = E.shape
    order = range(L - 1, -1, -1) if reverse else range(L)
    end = 0 if reverse else L - 1  # where a chunk's messages leave it
    r_b = r.T.unsqueeze(1)  # [S, 1, M]
    sums = norms if norms is not None else E.new_empty(L, C, M)
    scratch = E.new_empty(S, C, M)

    def sweep(x, compare: bool) -> None:
        for k, i in enumerate(order):
            check = compare and k % CHECK_EVERY == CHECK_EVERY - 1
            z = prop(x, scratch if check else out[i])  # written in place: no copy per step
            if any_reset[i]:
                torch.where(reset[i].view(1, C, 1), r_b, z, out=z)
            z.mul_(E[:, i])
            z.div_(sum_states(z, sums[i]))
            if check:
                merged = _close(z, out[i], tol)
                out[i].copy_(z)
                if merged:  # every later message of the previous sweep stands (within tol)
                    return
            x = out[i]

    sweep(x_in, False)
    for sweeps in range(1, MAX_SWEEPS + 1):
        new_in = x_in.clone()
        if reverse:
            new_in[:, :-1] = out[end][:, 1:]
        else:
            new_in[:, 1:] = out[end][:, :-1]
        if _close(new_in, x_in, tol):
            return sweeps
        x_in.copy_(new_in)
        sweep(x_in, True)
    _exact_incoming(E, prop, r_b, reset, any_reset, x_in, reverse)
    sweep(x_in, False)
    return MAX_SWEEPS + 2


def _exact_incoming(E, prop, r_b, reset, any_reset, x_in, reverse) -> None:
    """The exact message entering every chunk: each chunk's transfer matrix (F[k] = its messages when entered
    in state k; scaled by the total), then one pass over the chunks."""
    S, L, C, M = E.shape
    eye = torch.eye(S, dtype=E.dtype, device=E.device)
    F = eye.view(S, S, 1, 1).expand(S, S, C, M).contiguous()  # [S_in, S, C, M]
    for i in (range(L - 1, -1, -1) if reverse else range(L)):
        F = prop(F)
        if any_reset[i]:
            F = torch.where(reset[i].view(1, 1, C, 1), r_b, F)
        F.mul_(E[:, i]).div_(F.sum((0, 1)))
    for c in (range(C - 2, -1, -1) if reverse else range(1, C)):
        prev = c + 1 if reverse else c - 1
        x = (x_in[:, prev].unsqueeze(1) * F[:, :, prev]).sum(0)  # [S, M]
        x_in[:, c] = x / x.sum(0)


def log_total(norms: torch.Tensor, data: ChunkedSymbols, work) -> torch.Tensor:
    """Σ log of the forward normalisers over the real positions, per model: [L, C, M] -> [M] (float64 sums).
    Products of runs of g normalisers come first (g = 8 in float64, 4 in float32): one log per run, a log
    costing ~10 multiplications; if a product leaves the float range, the plain sum of logs. A normaliser 0
    (a symbol no state can emit) gives -inf."""
    L, C, M = norms.shape
    pad_from = data.n - (C - 1) * L  # the pads are the tail of the last chunk: their normaliser is 1 exactly
    if pad_from < L:
        norms[pad_from:, C - 1] = 1.0
    if not float(norms.amin()) > 0.0:  # a 0 (or the NaN that 0/0 left behind it): probability 0
        impossible = ((norms <= 0) | norms.isnan()).any(1).any(0)
        total = norms.clamp(min=1e-300).log().sum(0, dtype=torch.float64).sum(0)
        return torch.where(impossible, -math.inf, total)
    g = 8 if norms.dtype == torch.float64 else 4
    full = (L // g) * g
    prods = work("norm_runs", L // g, C, M)
    torch.mul(norms[0:full:g], norms[1:full:g], out=prods)
    for k in range(2, g):
        prods.mul_(norms[k:full:g])
    tiny = 1e-290 if norms.dtype == torch.float64 else 1e-35
    if full and float(prods.amin()) < tiny:
        return norms.log().sum(0, dtype=torch.float64).sum(0)
    return (prods.log().sum(0, dtype=torch.float64).sum(0)
            + norms[full:].log().sum(0, dtype=torch.float64).sum(0))


def pair_sums(a: torch.Tensor, b: torch.Tensor, tmp: torch.Tensor | None = None) -> torch.Tensor:
    """Σ over steps and chunks of a_i b_j per model: [L, S, C, M] × 2 -> [M, S, S] (tmp: a scratch like b)."""
    L, S, C, M = a.shape
    if S <= Propagator.SMALL:
        rows = []
        for i in range(S):
            prod = torch.mul(a[:, i : i + 1], b, out=tmp if tmp is not None and tmp.shape == b.shape else None)
            rows.append(prod.sum(0).sum(1))  # [S, M]; the outer axis first (one reduction over both is slower)
        return torch.stack(rows).permute(2, 0, 1)  # [M, i, j]
    if M == 1:  # L products [S, C] x [C, S], then a sum
        return torch.bmm(a.reshape(L, S, C), b.reshape(L, S, C).transpose(1, 2)).sum(0, keepdim=True)
    a2, b2 = (t.permute(3, 1, 0, 2).reshape(M, S, L * C) for t in (a, b))
    return torch.bmm(a2, b2.transpose(1, 2))


def default_chunks(n: int, width: int, device: torch.device) -> int:
    """Chunks so that one step works on ~2^15 numbers on a CPU (2^20 on a GPU), but at most ~256 steps a chunk
    (many states: wider products are faster, measured 1.28 -> 0.92 s per iteration for 128 states on 200,000
    symbols) and at least 64."""
    target = 2 ** 20 if device.type == "cuda" else 2 ** 15
    return int(max(1, min(max(target // max(1, width), n // 256), n // 64)))


def forward_backward(E: torch.Tensor, pi: torch.Tensor, A: torch.Tensor, data: ChunkedSymbols, work,
                     posteriors: bool = True):
    """Scaled forward–backward for M models on the same symbols: E [S, L, C, M] = p(x_t | s), pi [M, S],
    A [M, S, S] -> (log-likelihood [M], γ [L, S, C, M] or None, Σ_t ξ_t [M, S, S] or None)."""
    S, L, C, M = E.shape
    tol = MERGE_TOL[E.dtype]
    warm = data.warm or {}
    alpha, norms = work("alpha", L, S, C, M), work("norms", L, C, M)
    x_in = warm.get("fwd")
    x_in = E.new_full((S, C, M), 1.0 / S) if x_in is None else x_in
    run_chain(E, Propagator(A), pi, data.reset_fwd, data.any_fwd, alpha, x_in, norms=norms, tol=tol)
    logprob = log_total(norms, data, work)
    if not posteriors:
        data.warm = {**warm, "fwd": x_in}
        return logprob, None, None
    y = work("y", L, S, C, M)  # ∝ p(x_t | s_t) β_t(s_t)
    y_in = warm.get("bwd")
    y_in = E.new_full((S, C, M), 1.0 / S) if y_in is None else y_in
    back = Propagator(A.transpose(1, 2))
    run_chain(E, back, E.new_ones(M, S), data.reset_bwd, data.any_bwd, y, y_in, reverse=True, tol=tol)
    data.warm = {"fwd": x_in, "bwd": y_in}
    # β_t ∝ Σ_j A_ij p(x_{t+1} | j) β_{t+1}(j) (y one position later), and 1 before a new sequence
    beta = work("beta", L, S, C, M)
    back(y[1:], beta[:-1])
    beta[L - 1, :, : C - 1] = back(y[0, :, 1:])
    beta[data.bwd_idx[0], :, data.bwd_idx[1]] = 1.0
    gamma = beta.mul_(alpha)
    norm = sum_states(gamma.transpose(0, 1), work("norm", L, C, M))  # [L, C, M]
    gamma.div_(norm.unsqueeze(1))
    # ξ_t(i, j) = α̂_{t-1}(i) A_ij y_t(j) / norm_{t-1}, for t not starting a sequence
    norm_prev = work("norm_prev", L, C, M)
    norm_prev[1:] = norm[:-1]
    norm_prev[0, 1:] = norm[L - 1, :-1]
    norm_prev[0, 0] = 1.0
    w = y.div_(norm_prev.unsqueeze(1))
    w[data.fwd_idx[0], :, data.fwd_idx[1]] = 0.0
    tmp = work("pair_tmp", L - 1, S, C, M) if S <= Propagator.SMALL else None
    xi = pair_sums(alpha[:-1], w[1:], tmp) + pair_sums(alpha[L - 1 :, :, :-1], w[:1, :, 1:])
    return logprob, gamma, xi.mul_(A)
