"""Settings of the HMM experiments (`topicrnn.hmm_experiments`), kept in a module without torch or matplotlib so
that `topiceq hmm --help` shows the defaults without importing them."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LettersConfig:
    chars: int = 20_000  # letters fed to the HMM (after dropping everything that is not a–z)
    iterations: int = 1000
    seed: int = 0
    perturbation: float = 0.01  # relative size of the seeded nudge away from uniform parameters
    device: str = "cpu"
    chunk_length: int | None = None  # forward-backward chunk length (None: the HMM's default)


@dataclass
class InstabilityConfig:
    grid: int = 50  # grid × grid starting points (α₀, β₀)
    iterations: int = 15
    seed: int = 0
    bits: int = 1000  # length of the training sequence
    true_emission: tuple = (0.2, 0.7)  # (α, β) that generated the data
    transmat: tuple = ((0.9, 0.1), (0.2, 0.8))  # fixed
    panels: tuple = (1, 2, 3, 4, 10, 15)  # iterations drawn
    device: str = "cpu"
    dtype: str = "float64"
    chunk_length: int | None = None


@dataclass
class CharHMMConfig:
    n_states: int = 16
    iterations: int = 100
    tol: float = 1e-2  # nats of training log-likelihood: EM stops when an iteration gains less
    seed: int = 0
    val_fraction: float = 0.1  # nanoGPT's split: the first 90% trains, the last 10% validates
    tokenizer: str = "char"  # the symbols: topicrnn.tokenizers kinds (char | latex)
    # Added to every expected count before re-estimation (MAP with a Dirichlet(1 + c) prior). A maximum-likelihood
    # HMM gives probability 0 to a transition or an emission it never used, and held-out text then has
    # probability 0 (32 states on Tiny Shakespeare did); 1e-3 against counts in the thousands changes nothing else.
    emission_pseudocount: float = 1e-3
    transition_pseudocount: float = 1e-3
    max_seconds: float | None = None  # a time budget for EM (stops after the iteration that crosses it)
    device: str = "cpu"
    dtype: str = "float64"
    chunk_length: int | None = None
