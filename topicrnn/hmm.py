"""Hidden Markov models with discrete emissions: forward–backward, Baum–Welch (EM), Viterbi, sampling.

p(x_1..x_n) = Σ over state paths Π p(s_t | s_{t-1}) p(x_t | s_t). `HMM(n_states, n_symbols)` has hmmlearn's
estimator shape (`fit`, `score`, `predict_proba`, `decode`, `sample`; learned `startprob_`, `transmat_`,
`emissionprob_`; a `monitor_` with the log-likelihood history). X is a 1-D array of symbol ids; several
sequences are concatenated with `lengths`. `BatchedHMM(n_models, ...)` runs EM for many models on the same
data at once, vectorised across models (torch: on the GPU when `device="cuda"`). EM is a template method
(`_BaseHMM.fit`): hooks initialise, accumulate sufficient statistics and re-estimate; the emission model is
the subclass's part. `HMM` also implements the step protocol of the one model interface (`kind = "hmm"`).

Two forward–backward passes give the same numbers (to rounding): `engine="chunked"` runs chunks of the sequence
at once in torch, on any device (`topicrnn.hmm_chunks` says how and why); `engine="fused"` is one compiled loop
per block of models on the CPU (`topicrnn.hmm_fused`, numba). `engine="auto"` takes the fused one where it is
faster (`hmm_fused.wins`: a batch of models, or one model of ≤ 3 states) and numba is installed, else the
chunked one.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from . import hmm_fused
from .hmm_chunks import MERGE_TOL, ChunkedSymbols, as_symbols, chunk_layout, default_chunks, forward_backward
from .hmm_fused import FusedSymbols
from .device import resolve_device

LN2 = math.log(2.0)
ENGINES = ("auto", "fused", "chunked")  # the forward-backward pass (module docstring)
# A log-likelihood drop smaller than this (relative) is rounding noise, not a failure of EM.
MONOTONE_NOISE = {torch.float64: 1e-11, torch.float32: 1e-6}


class ConvergenceMonitor:
    """EM's log-likelihood history (one value, or one array over models, per iteration), hmmlearn's rule:
    converged when the gain of the last iteration is below `tol` or after `n_iter` iterations. Warns
    (RuntimeWarning) when the log-likelihood goes down by more than rounding noise, which EM never does."""

    def __init__(self, tol: float, n_iter: int, verbose: bool = False, rel_noise: float = 1e-11):
        self.tol, self.n_iter, self.verbose, self.rel_noise = tol, n_iter, verbose, rel_noise
        self.history: list = []
        self.iter = 0

    def report(self, logprob) -> None:
        value = np.asarray(logprob, dtype=np.float64)
        if self.history:
            prev = np.asarray(self.history[-1], dtype=np.float64)
            delta = value - prev
            noise = np.maximum(np.sqrt(np.finfo(float).eps), self.rel_noise * np.abs(prev))
            down = np.isfinite(delta) & (delta < -noise)
            if down.any():
                warnings.warn(f"EM iteration {self.iter + 1}: the log-likelihood went down by "
                              f"{float((-delta[down]).max()):.3g} (from {prev[down].ravel()[0]:.6f}); EM never does "
                              "that in exact arithmetic: check the data and the parameters", RuntimeWarning,
                              stacklevel=3)
            if self.verbose:
                print(f"{self.iter + 1:>10d} {float(value.mean()):>16.6f} {float(delta.mean()):>+16.6f}")
        self.history.append(value.item() if value.ndim == 0 else value)
        self.iter += 1

    @property
    def converged_models(self) -> np.ndarray:
        """Per-model flag (an array; one element for a single model)."""
        if len(self.history) < 2:
            return np.zeros(np.shape(self.history[-1]) if self.history else (), bool).reshape(-1)
        gain = np.asarray(self.history[-1]) - np.asarray(self.history[-2])
        return np.asarray(gain < self.tol).reshape(-1)

    @property
    def converged(self) -> bool:
        return self.iter >= self.n_iter or bool(self.converged_models.all())


def _normalised(a, name: str, shape: tuple) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    if not np.all(np.isfinite(a)) or a.min() < 0 or not np.allclose(a.sum(-1), 1.0, atol=1e-6):
        raise ValueError(f"{name}: every row must be a probability distribution (non-negative, sums to 1)")
    return a


class _BaseHMM:
    """Start and transition probabilities, the chunked forward–backward pass and EM as a template method.
    Subclasses own the emission model through five hooks: `_init_emissions`, `_emission_probs`,
    `_accumulate_emissions`, `_update_emissions`, `_emission_log_prior` (and `_emission_table`, for the fused
    pass, when the emissions are a table). Parameters live as torch tensors with a leading model axis."""

    def __init__(self, n_states: int, n_models: int = 1, *, n_iter: int = 10, tol: float = 1e-2,
                 params: str = "ste", init_params: str = "ste", startprob_prior: float = 1.0,
                 transmat_prior: float = 1.0, seed: int | None = None, device="cpu", dtype=torch.float64,
                 chunk_length: int | None = None, engine: str = "auto", verbose: bool = False):
        if n_states < 1 or n_models < 1:
            raise ValueError("n_states and n_models must be >= 1")
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
        if dtype not in MERGE_TOL:
            raise ValueError("dtype must be torch.float64 or torch.float32")
        self.n_states, self.n_models = int(n_states), int(n_models)
        self.n_iter, self.tol, self.params, self.init_params = n_iter, tol, params, init_params
        self.startprob_prior, self.transmat_prior = startprob_prior, transmat_prior
        self.seed, self.dtype, self.chunk_length, self.verbose = seed, dtype, chunk_length, verbose
        self.engine = engine
        self.device = resolve_device(device, mps=False)
        self._pi = self._A = None
        self.monitor_ = ConvergenceMonitor(tol, n_iter, verbose)

    # ------------------------------------------------------------------ parameters
    def _tensor(self, a) -> torch.Tensor:
        return torch.as_tensor(np.array(a), dtype=self.dtype, device=self.device)

    def _set(self, name: str, value, row_shape: tuple) -> torch.Tensor:
        """A numpy/torch value of shape row_shape (shared by all models) or (n_models, *row_shape)."""
        value = np.asarray(value.detach().cpu() if torch.is_tensor(value) else value, dtype=np.float64)
        full = (self.n_models, *row_shape)
        if value.shape == row_shape:
            value = np.broadcast_to(value, full)
        return self._tensor(_normalised(value, name, full))

    def _get(self, t: torch.Tensor | None, name: str) -> np.ndarray:
        if t is None:
            raise AttributeError(f"{name} is not set: fit the model or assign it")
        return t.detach().cpu().numpy()

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)

    def _init(self, data: ChunkedSymbols) -> None:
        """Draw the parameters named in init_params (seeded); the others must have been assigned."""
        rng, M, S = self._rng(), self.n_models, self.n_states
        if "s" in self.init_params:
            self._pi = self._tensor(rng.dirichlet(np.ones(S), size=M))
        if "t" in self.init_params:
            self._A = self._tensor(rng.dirichlet(np.ones(S), size=(M, S)))
        self._init_emissions(rng)
        for t, name, letter in ((self._pi, "startprob_", "s"), (self._A, "transmat_", "t")):
            if t is None:
                raise ValueError(f"{name} is not set: assign it, or put {letter!r} in init_params")

    # ------------------------------------------------------------------ data and the E-step
    _fused_emissions = False  # a subclass whose emissions are a table [M, S, V] (`_emission_table`) sets True

    def uses_fused(self) -> bool:
        """Whether the E-step runs the fused pass (see the module docstring); `engine="fused"` where it cannot
        run is an error."""
        if self.engine == "chunked" or not self._fused_emissions:
            if self.engine == "fused":
                raise ValueError("engine='fused' needs a categorical HMM")
            return False
        if self.engine == "fused":
            if not hmm_fused.available():
                raise RuntimeError("engine='fused' needs numba (pip install numba); or use engine='chunked'")
            if self.device.type != "cpu":
                raise ValueError(f"engine='fused' runs on the CPU, not {self.device}: use engine='auto' or 'chunked'")
            return True
        return (hmm_fused.available() and self.device.type == "cpu" and self.chunk_length is None
                and hmm_fused.wins(self.n_states, self.n_models))

    def _data(self, X, lengths) -> ChunkedSymbols | FusedSymbols:
        X, lengths = as_symbols(X, lengths, self.n_symbols)
        if self.uses_fused():
            return FusedSymbols.of(X, lengths)
        width = self.n_models * self.n_states
        chunks = (-(-len(X) // self.chunk_length) if self.chunk_length
                  else default_chunks(len(X), width, self.device))
        return chunk_layout(X, lengths, chunks, self.n_symbols, self.device)

    def _check_parameters(self) -> None:
        if self._pi is None or self._A is None:
            raise ValueError("the model has no parameters yet: fit it or assign startprob_, transmat_, ...")

    def _forward_backward(self, data: ChunkedSymbols, posteriors: bool = True):
        """The chunked pass -> (log-likelihood [M], γ [L, S, C, M] or None, Σ_t ξ_t [M, S, S] or None); γ lives in
        the data's workspace (the next E-step overwrites it)."""
        self._check_parameters()
        work = data.workspace(self.dtype, self.device)
        E = self._emission_probs(data, work("E", self.n_states, data.L, data.C, self.n_models))
        return forward_backward(E, self._pi, self._A, data, work, posteriors)

    def _fused(self, data: FusedSymbols, *, backward: bool = True, posteriors: bool = False):
        """The fused pass -> (log-likelihood [M], statistics as `_do_estep` returns them, γ [M, n, S] or None)."""
        self._check_parameters()
        pi, A, B = (t.detach().cpu().numpy() for t in (self._pi, self._A, self._emission_table()))
        logprob, start, trans, emit, gamma = hmm_fused.estep(
            data.sym, data.first, pi.T, A.transpose(1, 2, 0), B.transpose(2, 1, 0), backward=backward,
            trans="t" in self.params, posteriors=posteriors, threads=torch.get_num_threads())
        stats = {name: torch.from_numpy(np.ascontiguousarray(a)).to(self.dtype)
                 for name, a in (("start", start.T), ("trans", trans.transpose(2, 0, 1)),
                                 ("emit", emit.transpose(2, 1, 0)))}
        gamma = None if gamma is None else torch.from_numpy(np.ascontiguousarray(gamma.transpose(2, 0, 1)))
        return torch.from_numpy(logprob), stats, gamma

    def _do_estep(self, data: ChunkedSymbols | FusedSymbols):
        """-> ({"start": [M, S], "trans": [M, S, S], "emit": ...: expected counts}, log-likelihood [M])."""
        if isinstance(data, FusedSymbols):
            logprob, stats, _ = self._fused(data)
            return stats, logprob
        logprob, gamma, xi = self._forward_backward(data)
        stats = {"start": gamma[data.real_start_idx[0], :, data.real_start_idx[1]].sum(0).T, "trans": xi}
        self._accumulate_emissions(stats, data, gamma)
        return stats, logprob

    # ------------------------------------------------------------------ the M-step
    @staticmethod
    def _reestimate(counts: torch.Tensor, prior: float, old: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """Rows ∝ counts + prior - 1 (the MAP estimate under a Dirichlet prior; prior 1 = relative frequencies);
        a row with nothing counted keeps its old value, and so does every model that is not active."""
        counts = (counts + (prior - 1.0)).clamp_(min=0.0)
        total = counts.sum(-1, keepdim=True)
        new = torch.where(total > 0, counts / total.clamp(min=1e-300), old)
        return torch.where(active.view(-1, *([1] * (old.dim() - 1))), new, old)

    @staticmethod
    def _dirichlet_log(prior: float, p: torch.Tensor) -> torch.Tensor:
        """(prior - 1) Σ log p per model: a Dirichlet log-density up to its constant (0 for prior 1)."""
        if prior == 1.0:
            return p.new_zeros(p.shape[0])
        return (prior - 1.0) * p.clamp(min=1e-300).log().flatten(1).sum(1)

    def _log_prior(self) -> torch.Tensor:
        """Log-density of the re-estimated parameters under their Dirichlet priors, per model: MAP-EM never
        lowers log-likelihood + this (with every prior 1, plain EM and the log-likelihood)."""
        total = self._pi.new_zeros(self.n_models)
        if "s" in self.params:
            total += self._dirichlet_log(self.startprob_prior, self._pi)
        if "t" in self.params:
            total += self._dirichlet_log(self.transmat_prior, self._A)
        return total + self._emission_log_prior()

    def _do_mstep(self, stats: dict, active: torch.Tensor) -> None:
        if "s" in self.params:
            self._pi = self._reestimate(stats["start"], self.startprob_prior, self._pi, active)
        if "t" in self.params:
            self._A = self._reestimate(stats["trans"], self.transmat_prior, self._A, active)
        if "e" in self.params:
            self._update_emissions(stats, active)

    # ------------------------------------------------------------------ the template
    def fit(self, X, lengths=None, callback=None):
        """Baum–Welch: E-step (posteriors, log-likelihood of the current parameters), M-step, report, until
        the gain is below tol or n_iter iterations. The history holds the log-likelihood (plus the log prior
        density when a Dirichlet prior is set, the quantity MAP-EM never lowers). A model of a batch that has
        converged stops changing.
        `callback(model, stats)` runs after every iteration (stats: the E-step's expected counts); when it
        returns True, EM stops there (a time budget, say)."""
        data = self._data(X, lengths)
        self._init(data)
        self.monitor_ = ConvergenceMonitor(self.tol, self.n_iter, self.verbose, MONOTONE_NOISE[self.dtype])
        active = torch.ones(self.n_models, dtype=torch.bool, device=self.device)
        for _ in range(self.n_iter):
            stats, logprob = self._do_estep(data)
            objective = logprob + self._log_prior()  # of the parameters the E-step used
            self._do_mstep(stats, active)
            self.monitor_.report(self._report_value(objective))
            stop = bool(callback(self, stats)) if callback is not None else False
            active &= torch.as_tensor(~self.monitor_.converged_models, device=self.device)
            if stop or self.monitor_.iter >= self.n_iter or not bool(active.any()):
                break
        return self

    def _report_value(self, logprob: torch.Tensor):
        return logprob.detach().cpu().numpy()

    def score(self, X, lengths=None):
        """Total log-likelihood of X (all sequences) under each model."""
        data = self._data(X, lengths)
        if isinstance(data, FusedSymbols):
            return self._report_value(self._fused(data, backward=False)[0])
        return self._report_value(self._forward_backward(data, posteriors=False)[0])

    def score_samples(self, X, lengths=None):
        """(log-likelihood, state posteriors p(s_t | all of X) [n, S] per model)."""
        data = self._data(X, lengths)
        if isinstance(data, FusedSymbols):
            logprob, _, gamma = self._fused(data, posteriors=True)
        else:
            logprob, gamma, _ = self._forward_backward(data)
            gamma = gamma.permute(3, 2, 0, 1).reshape(self.n_models, -1, self.n_states)[:, : data.n]  # [M, n, S]
        return self._report_value(logprob), self._posterior_value(gamma)

    def predict_proba(self, X, lengths=None):
        return self.score_samples(X, lengths)[1]

    def _posterior_value(self, gamma: torch.Tensor):
        return gamma.detach().cpu().numpy()


class BatchedHMM(_BaseHMM):
    """`n_models` categorical HMMs fitted on the same data at once; attributes carry a leading model axis
    (`startprob_` [M, S], `transmat_` [M, S, S], `emissionprob_` [M, S, V]; `score` -> [M]). Assigning a
    value without the model axis gives every model the same one."""

    def __init__(self, n_models: int, n_states: int, n_symbols: int, *, emissionprob_prior: float = 1.0,
                 **kwargs):
        super().__init__(n_states, n_models, **kwargs)
        if n_symbols < 1:
            raise ValueError("n_symbols must be >= 1")
        self.n_symbols = int(n_symbols)
        self.emissionprob_prior = emissionprob_prior
        self._B = None

    _fused_emissions = True

    def _emission_table(self) -> torch.Tensor:
        return self._B  # [M, S, V]

    startprob_ = property(lambda self: self._get(self._pi, "startprob_"),
                          lambda self, v: setattr(self, "_pi", self._set("startprob_", v, (self.n_states,))))
    transmat_ = property(lambda self: self._get(self._A, "transmat_"),
                         lambda self, v: setattr(self, "_A", self._set("transmat_", v,
                                                                       (self.n_states, self.n_states))))
    emissionprob_ = property(lambda self: self._get(self._B, "emissionprob_"),
                             lambda self, v: setattr(self, "_B", self._set("emissionprob_", v,
                                                                           (self.n_states, self.n_symbols))))

    def _init_emissions(self, rng) -> None:
        if "e" in self.init_params:
            b = rng.random((self.n_models, self.n_states, self.n_symbols))
            self._B = self._tensor(b / b.sum(-1, keepdims=True))
        if self._B is None:
            raise ValueError("emissionprob_ is not set: assign it, or put 'e' in init_params")

    def _emission_probs(self, data: ChunkedSymbols, out: torch.Tensor) -> torch.Tensor:
        """p(x_t | s) for every position into out [S, L, C, M] (the pad symbol has probability 1 everywhere)."""
        M, S = self.n_models, self.n_states
        table = torch.cat([self._B, self._B.new_ones(M, S, 1)], -1).permute(1, 2, 0).contiguous()  # [S, V+1, M]
        torch.index_select(table, 1, data.sym.view(-1), out=out.view(S, -1, M))
        return out

    def _accumulate_emissions(self, stats: dict, data: ChunkedSymbols, gamma: torch.Tensor) -> None:
        M, S, V = self.n_models, self.n_states, self.n_symbols
        # γ [L, S, C, M] -> [S, L·C, M] (a copy of whole [C, M] blocks), then one index_add over positions
        by_state = data.workspace(self.dtype, self.device)("gamma_by_state", S, data.L, data.C, M)
        by_state.copy_(gamma.transpose(0, 1))
        counts = gamma.new_zeros(S, V + 1, M)
        if M == 1:  # a trailing axis of 1 sends index_add down a slow path
            counts.view(S, V + 1).index_add_(1, data.sym.view(-1), by_state.view(S, -1))
        else:
            counts.index_add_(1, data.sym.view(-1), by_state.view(S, -1, M))
        stats["emit"] = counts[:, :V].permute(2, 0, 1)  # [M, S, V]: Σ_t γ_t(s) [x_t = v]

    def _emission_log_prior(self) -> torch.Tensor:
        if "e" not in self.params:
            return self._B.new_zeros(self.n_models)
        return self._dirichlet_log(self.emissionprob_prior, self._B)

    def _update_emissions(self, stats: dict, active: torch.Tensor) -> None:
        self._B = self._reestimate(stats["emit"], self.emissionprob_prior, self._B, active)

    def model(self, index: int) -> "HMM":
        """Model `index` of the batch as a single HMM (same settings, its parameters)."""
        single = HMM(self.n_states, self.n_symbols, **self._settings())
        single._pi, single._A, single._B = (t[index : index + 1].clone() for t in (self._pi, self._A, self._B))
        single.monitor_.history = [float(np.asarray(h).reshape(-1)[index]) for h in self.monitor_.history]
        single.monitor_.iter = self.monitor_.iter
        return single

    def _settings(self) -> dict:
        return dict(n_iter=self.n_iter, tol=self.tol, params=self.params, init_params=self.init_params,
                    startprob_prior=self.startprob_prior, transmat_prior=self.transmat_prior,
                    emissionprob_prior=self.emissionprob_prior, seed=self.seed, device=self.device,
                    dtype=self.dtype, chunk_length=self.chunk_length, engine=self.engine, verbose=self.verbose)


def _log(a: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(a)


class HMM(BatchedHMM):
    """A categorical HMM (hmmlearn's `CategoricalHMM` shape): `startprob_` [S], `transmat_` [S, S],
    `emissionprob_` [S, V], `score` -> float, `predict_proba` -> [n, S], `decode` (Viterbi), `sample`.

    Also a model of the one interface (step protocol): the state is the filtered posterior p(s_t | x_1..t)
    [B, S]; an all-zero row means "nothing seen yet" (its prediction uses `startprob_`), so `initial_state`
    is zeros and `step` needs no branch. `start_symbol` (a tokenizer's <bos>) is not an HMM symbol: a step on
    it leaves the state as it is, so feeding [bos, x_1, x_2, ...] yields p(x_1), p(x_2 | x_1), ... exactly."""

    kind = "hmm"
    topic_dim = 0

    def __init__(self, n_states: int, n_symbols: int, *, start_symbol: int | None = None, **kwargs):
        super().__init__(1, n_states, n_symbols, **kwargs)
        self.start_symbol = start_symbol

    startprob_ = property(lambda self: BatchedHMM.startprob_.fget(self)[0], BatchedHMM.startprob_.fset)
    transmat_ = property(lambda self: BatchedHMM.transmat_.fget(self)[0], BatchedHMM.transmat_.fset)
    emissionprob_ = property(lambda self: BatchedHMM.emissionprob_.fget(self)[0], BatchedHMM.emissionprob_.fset)

    def _report_value(self, logprob: torch.Tensor) -> float:
        return float(logprob[0])

    def _posterior_value(self, gamma: torch.Tensor) -> np.ndarray:
        return gamma[0].detach().cpu().numpy()

    # ------------------------------------------------------------------ Viterbi and sampling
    def decode(self, X, lengths=None) -> tuple[float, np.ndarray]:
        """The most probable state path (Viterbi, log space): (its log-probability, states [n])."""
        X, lengths = as_symbols(X, lengths, self.n_symbols)
        log_pi, log_A, log_B = _log(self.startprob_), _log(self.transmat_), _log(self.emissionprob_)
        total, paths, start = 0.0, [], 0
        for n in lengths:
            x = X[start : start + n]
            start += n
            back = np.empty((n, self.n_states), np.int64)
            delta = log_pi + log_B[:, x[0]]
            for t in range(1, n):
                scores = delta[:, None] + log_A  # [from, to]
                back[t] = scores.argmax(0)
                delta = scores[back[t], np.arange(self.n_states)] + log_B[:, x[t]]
            path = np.empty(n, np.int64)
            path[-1] = int(delta.argmax())
            for t in range(n - 1, 0, -1):
                path[t - 1] = back[t, path[t]]
            total += float(delta.max())
            paths.append(path)
        return total, np.concatenate(paths)

    def predict(self, X, lengths=None) -> np.ndarray:
        return self.decode(X, lengths)[1]

    def sample(self, n: int, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """n symbols from the model: (X [n], states [n]); seeded by `seed` (else the model's seed)."""
        rng = np.random.default_rng(self.seed if seed is None else seed)
        pi, A, B = self.startprob_, np.cumsum(self.transmat_, 1), np.cumsum(self.emissionprob_, 1)
        states, symbols = np.empty(n, np.int64), np.empty(n, np.int64)
        s = int(np.searchsorted(np.cumsum(pi), rng.random() * pi.sum(), side="right"))
        u = rng.random((n, 2))
        for t in range(n):
            if t:
                s = int(np.searchsorted(A[s], u[t, 0] * A[s, -1], side="right"))
            states[t] = s
            symbols[t] = int(np.searchsorted(B[s], u[t, 1] * B[s, -1], side="right"))
        return symbols, states

    # ------------------------------------------------------------------ the step protocol
    @property
    def vocab_size(self) -> int:
        return self.n_symbols

    def initial_state(self, batch: int, theta=None) -> torch.Tensor:
        return torch.zeros(batch, self.n_states, dtype=self.dtype, device=self.device)

    def _predict_state(self, post: torch.Tensor) -> torch.Tensor:
        """p(s_{t+1} | x_1..t) from the filtered posterior; a zero row (start) gives startprob_."""
        return post @ self._A[0] + (1.0 - post.sum(-1, keepdim=True)).clamp_(min=0.0) * self._pi[0]

    def step(self, ids: torch.Tensor, theta=None, state=None):
        """(ids [B], state [B, S] | None) -> (log p(next symbol) [B, V], filtered posterior [B, S])."""
        if theta is not None:
            raise ValueError("an HMM is not topic-conditioned (topic_dim = 0): pass theta=None")
        ids = torch.as_tensor(ids, device=self.device).long().view(-1)
        if state is None:
            state = self.initial_state(ids.shape[0])
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.n_symbols):
            raise ValueError(f"symbol ids must lie in 0..{self.n_symbols - 1}")
        B = self._B[0]
        joint = self._predict_state(state) * B[:, ids].T
        total = joint.sum(-1, keepdim=True)
        post = torch.where(total > 0, joint / total.clamp(min=1e-300), state)  # an impossible symbol: unchanged
        if self.start_symbol is not None:
            post = torch.where((ids == self.start_symbol).unsqueeze(-1), state, post)
        logits = (self._predict_state(post) @ B).log()  # log 0 = -inf: a symbol the model never emits
        return logits, post

    def state_layers(self, state: torch.Tensor) -> dict:
        return {"posterior": state}

    # ------------------------------------------------------------------ persistence
    def num_parameters(self) -> int:
        """Free probabilities: S - 1 start, S(S - 1) transition, S(V - 1) emission."""
        S, V = self.n_states, self.n_symbols
        return (S - 1) + S * (S - 1) + S * (V - 1)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The parameters as CPU tensors (a checkpoint's "model"; `torch.load(weights_only=True)` reads them)."""
        self._check_parameters()
        return {"startprob": self._pi[0].cpu(), "transmat": self._A[0].cpu(), "emissionprob": self._B[0].cpu()}

    def load_state_dict(self, state: dict) -> "HMM":
        self.startprob_, self.transmat_, self.emissionprob_ = (state["startprob"], state["transmat"],
                                                              state["emissionprob"])
        return self
