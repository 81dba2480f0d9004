"""The lecture's HMM experiments: the letters HMM, the instability of EM, and character HMMs as language models.

Letters (after Cave & Neuwirth): a 2-state HMM over the 26 letters of English prose, started close to uniform
(a small seeded perturbation), trained by EM for ≥ 1,000 iterations. Text handling: a Project Gutenberg
header and licence trailer are cut off; the letters start at the first paragraph of at least 300 characters
(past a title page and a table of contents); case is folded (A -> a); every other character (space,
punctuation, digits, newlines, accented letters) is dropped, so the HMM reads one unbroken stream of a–z and
`chars` counts letters. P(state = 1 | letter) is the mean posterior of state 1 over the letter's occurrences in
each iteration's E-step. The phase transition is the iteration at which the spread of these 26 curves (max −
min) first reaches half of its final value.

Instability: a two-parameter HMM emitting bits. Two hidden states; the free parameters are the emission
probabilities α = P(bit = 1 | state 0) and β = P(bit = 1 | state 1). Fixed (never re-estimated): the
transition matrix [[0.9, 0.1], [0.2, 0.8]] and the start distribution (its stationary one, (2/3, 1/3)).
Training data: `bits` bits sampled (seeded) from the same model with α = 0.2, β = 0.7. From every point of
a grid × grid lattice of starting values (α₀, β₀) (cell centres in (0, 1)) EM runs in one batched fit,
and the training log-likelihood after iterations 1, 2, 3, 4, 10 and 15 is drawn as heatmaps.

Character HMMs: `fit_char_hmm` trains an HMM on the first 90% of a text (nanoGPT's split, symbols = the
character tokenizer's ids, or LaTeX tokens) and reports validation bits per character (total nats / characters
of the validation text), the figure the RNNs report.
"""
from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from .data import read_text, split_text  # noqa: E402
from .hmm import LN2, HMM, BatchedHMM  # noqa: E402
from .hmm_config import CharHMMConfig, InstabilityConfig, LettersConfig  # noqa: E402
from .tokenizers import make_tokenizer  # noqa: E402

LETTERS = "abcdefghijklmnopqrstuvwxyz"
VOWELS = set("aeiou")
_GUTENBERG_START = re.compile(r"\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG[^\n]*\n")
_GUTENBERG_END = re.compile(r"\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG")
DTYPES = {"float64": torch.float64, "float32": torch.float32}


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, default=float) + "\n", encoding="utf-8")


def save_figure(fig, path: Path) -> None:
    """Write a PNG atomically (a half-written figure never replaces a good one)."""
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def near_uniform(rng: np.random.Generator, shape: tuple, perturbation: float) -> np.ndarray:
    """Rows ∝ 1 + perturbation · U(−1, 1): uniform distributions nudged by a seeded, relative perturbation."""
    p = 1.0 + perturbation * (2.0 * rng.random(shape) - 1.0)
    return p / p.sum(-1, keepdims=True)


# ---------------------------------------------------------------------------------------------- letters
def prose_letters(text: str, n: int, min_paragraph: int = 300) -> str:
    """The first n letters (a–z, case folded) of the prose in `text` (see the module docstring)."""
    start = _GUTENBERG_START.search(text)
    if start:
        text = text[start.end():]
    end = _GUTENBERG_END.search(text)
    if end:
        text = text[: end.start()]
    offset = 0
    for para in re.finditer(r"(?:[^\n]+\n?)+", text):  # blocks of non-empty lines
        if len(para.group()) >= min_paragraph:
            offset = para.start()
            break
    letters = "".join(c for c in text[offset:].lower() if "a" <= c <= "z")
    if len(letters) < n:
        raise ValueError(f"the text holds only {len(letters)} letters of prose; ask for fewer (--chars)")
    return letters[:n]


def phase_transition(posterior: np.ndarray) -> dict:
    """posterior [iterations, 26] -> the iteration (1-based) where the spread of the curves first reaches half
    of its final value, the steepest rise of the spread, and the final spread."""
    spread = posterior.max(1) - posterior.min(1)
    final = float(spread[-1])
    midpoint = int(np.argmax(spread >= final / 2.0)) + 1
    steepest = int(np.argmax(np.diff(spread))) + 2 if len(spread) > 1 else 1
    return {"iteration": midpoint, "steepest_rise_iteration": steepest, "final_spread": final,
            "initial_spread": float(spread[0]), "separated": final >= 0.5}


def run_letters(text_path, out_dir, cfg: LettersConfig = LettersConfig(), progress: bool = True) -> dict:
    """Fit the 2-state letters HMM; writes letters.png and letters.json into out_dir; returns the summary."""
    if cfg.iterations < 2 or cfg.chars < 100:
        raise ValueError("the letters experiment needs --iterations >= 2 and --chars >= 100")
    letters = prose_letters(read_text(text_path), cfg.chars)  # bad input fails before anything is written
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    X = np.frombuffer(letters.encode("ascii"), np.uint8).astype(np.int64) - ord("a")
    rng = np.random.default_rng(cfg.seed)
    model = HMM(2, 26, n_iter=cfg.iterations, tol=-math.inf, init_params="", seed=cfg.seed, device=cfg.device,
                chunk_length=cfg.chunk_length)
    model.startprob_ = near_uniform(rng, (2,), cfg.perturbation)
    model.transmat_ = near_uniform(rng, (2, 2), cfg.perturbation)
    model.emissionprob_ = near_uniform(rng, (2, 26), cfg.perturbation)
    posterior = []
    bar = tqdm(total=cfg.iterations, desc="letters EM", unit="it", disable=not progress, dynamic_ncols=True)

    def record(m, stats):
        emit = stats["emit"][0].double().cpu().numpy()  # [2, 26]: Σ posterior per state and letter
        posterior.append(emit[1] / np.maximum(emit.sum(0), 1e-300))
        bar.update(1)

    started = time.perf_counter()
    model.fit(X, callback=record)
    seconds = time.perf_counter() - started
    bar.close()
    posterior = np.array(posterior)
    counts = np.bincount(X, minlength=26)
    posterior[:, counts == 0] = np.nan  # a letter that never occurs has no posterior
    present = counts > 0
    transition = phase_transition(posterior[:, present])
    final = posterior[-1]
    state1 = [c for c, p, k in zip(LETTERS, final, present) if k and p > 0.5]
    state0 = [c for c, p, k in zip(LETTERS, final, present) if k and p <= 0.5]
    vowel_state = 1 if len(VOWELS & set(state1)) >= len(VOWELS & set(state0)) else 0
    history = np.asarray(model.monitor_.history)
    summary = {
        "config": asdict(cfg), "text": str(text_path), "letters": len(letters), "seconds": seconds,
        "seconds_per_iteration": seconds / len(history), "iterations": len(history),
        "phase_transition": transition,
        "final_split": {"state_0": "".join(state0), "state_1": "".join(state1), "vowel_state": vowel_state,
                        "vowels_in_vowel_state": "".join(sorted(VOWELS & set(state1 if vowel_state else state0)))},
        "final_bits_per_letter": float(-history[-1] / len(letters) / LN2),
        "initial_bits_per_letter": float(-history[0] / len(letters) / LN2),
        "startprob": model.startprob_.tolist(), "transmat": model.transmat_.tolist(),
        "emissionprob": {c: model.emissionprob_[:, i].tolist() for i, c in enumerate(LETTERS)},
        "posterior_state1_final": {c: float(p) for c, p in zip(LETTERS, final)},
    }
    plot_letters(posterior, history / len(letters) / -LN2, transition, out / "letters.png")
    np.savetxt(out / "letters_posterior.csv", posterior, delimiter=",", header=",".join(LETTERS), fmt="%.6f",
               comments="")
    write_json(out / "letters.json", summary)
    summary["outputs"] = {"figure": str(out / "letters.png"), "summary": str(out / "letters.json"),
                          "posterior": str(out / "letters_posterior.csv")}
    return summary


def plot_letters(posterior: np.ndarray, bits: np.ndarray, transition: dict, path: Path) -> None:
    iters = np.arange(1, len(posterior) + 1)
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(11, 8), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for i, c in enumerate(LETTERS):
        if not np.isnan(posterior[-1, i]):
            vowel = c in VOWELS
            ax.plot(iters, posterior[:, i], color="tab:red" if vowel else "0.55", lw=1.6 if vowel else 0.8)
    # Letters that end at (nearly) the same value share one label at the right edge.
    ends = sorted((posterior[-1, i], c) for i, c in enumerate(LETTERS) if not np.isnan(posterior[-1, i]))
    groups: list[list] = []
    for value, c in ends:
        if groups and value - groups[-1][-1][0] < 0.015:
            groups[-1].append((value, c))
        else:
            groups.append([(value, c)])
    for g in groups:
        ax.annotate(" ".join(c for _, c in g), (iters[-1], float(np.mean([v for v, _ in g]))), xytext=(4, 0),
                    textcoords="offset points", va="center", fontsize=8)
    for a in (ax, ax2):
        a.axvline(transition["iteration"], color="tab:blue", ls="--", lw=1)
    ax.set_ylabel("P(state = 1 | letter)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"2-state letters HMM: EM from near-uniform parameters (vowels red); "
                 f"phase transition at iteration {transition['iteration']}")
    ax2.plot(iters, bits, color="k", lw=1)
    ax2.set_ylabel("bits / letter")
    ax2.set_xlabel("EM iteration")
    fig.tight_layout()
    save_figure(fig, path)


# ------------------------------------------------------------------------------------------ instability
def bit_hmm(n_models: int, cfg: InstabilityConfig, **kwargs) -> BatchedHMM:
    """The two-parameter bit HMM: transitions and start fixed, emissions re-estimated (params="e"); kwargs
    override the HMM's settings (e.g. device)."""
    A = np.asarray(cfg.transmat, dtype=np.float64)
    evals, evecs = np.linalg.eig(A.T)
    stationary = np.real(evecs[:, np.argmin(np.abs(evals - 1))])
    settings = dict(params="e", init_params="", tol=-math.inf, n_iter=cfg.iterations, seed=cfg.seed,
                    device=cfg.device, dtype=DTYPES[cfg.dtype], chunk_length=cfg.chunk_length)
    model = BatchedHMM(n_models, 2, 2, **{**settings, **kwargs})
    model.startprob_ = stationary / stationary.sum()
    model.transmat_ = A
    return model


def emission_grid(alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """[M] α, β -> emission matrices [M, 2, 2]: row s = (P(0 | s), P(1 | s))."""
    return np.stack([np.stack([1 - alpha, alpha], -1), np.stack([1 - beta, beta], -1)], 1)


def truth_model(cfg: InstabilityConfig) -> HMM:
    """The bit HMM that generates the training data (α, β = cfg.true_emission)."""
    truth = bit_hmm(1, cfg)
    truth.emissionprob_ = emission_grid(np.array([cfg.true_emission[0]]), np.array([cfg.true_emission[1]]))
    return truth.model(0)


def instability_data(cfg: InstabilityConfig) -> np.ndarray:
    return truth_model(cfg).sample(cfg.bits, seed=cfg.seed)[0]


def run_instability(out_dir, cfg: InstabilityConfig = InstabilityConfig(), progress: bool = True) -> dict:
    """EM from every grid point at once; writes instability.png, instability.json, instability.npz."""
    if cfg.grid < 2 or cfg.iterations < 1 or cfg.bits < 10:
        raise ValueError("the instability experiment needs --grid >= 2, --iterations >= 1 and >= 10 bits")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    X = instability_data(cfg)
    G = cfg.grid
    centres = (np.arange(G) + 0.5) / G
    beta0, alpha0 = np.meshgrid(centres, centres, indexing="ij")  # row = β₀, column = α₀
    model = bit_hmm(G * G, cfg)
    model.emissionprob_ = emission_grid(alpha0.ravel(), beta0.ravel())
    bar = tqdm(total=cfg.iterations, desc=f"instability EM ({G}x{G} starts)", unit="it", disable=not progress,
               dynamic_ncols=True)
    started = time.perf_counter()
    model.fit(X, callback=lambda m, s: bar.update(1) and None)  # None: go on (tqdm's update returns True)
    after_last = np.asarray(model.score(X))
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    bar.close()
    history = np.asarray(model.monitor_.history)  # history[k]: log-likelihood after k iterations
    after = {k: (history[k] if k < len(history) else after_last) for k in range(1, cfg.iterations + 1)}
    panels = [k for k in cfg.panels if k <= cfg.iterations] or [cfg.iterations]
    final_b = model.emissionprob_[:, :, 1]  # [M, 2]: learned α, β
    best = float(after_last.max())
    truth_ll = float(truth_model(cfg).score(X))
    summary = {
        "config": asdict(cfg), "n_models": G * G, "seconds": seconds, "truth_log_likelihood": truth_ll,
        "best_final_log_likelihood": best,
        "fraction_within_0.1_nats_of_best": float(np.mean(after_last >= best - 0.1)),
        "fraction_still_near_diagonal": float(np.mean(np.abs(final_b[:, 0] - final_b[:, 1]) < 0.05)),
        "panels": {k: {"min": float(after[k].min()), "max": float(after[k].max()), "median": float(np.median(after[k]))}
                   for k in panels},
    }
    plot_instability({k: after[k].reshape(G, G) for k in panels}, centres, cfg, out / "instability.png")
    np.savez_compressed(out / "instability.npz", centres=centres, iterations=np.arange(1, cfg.iterations + 1),
                        loglik=np.stack([after[k].reshape(G, G) for k in range(1, cfg.iterations + 1)]),
                        final_alpha=final_b[:, 0].reshape(G, G), final_beta=final_b[:, 1].reshape(G, G), bits=X)
    write_json(out / "instability.json", summary)
    summary["outputs"] = {"figure": str(out / "instability.png"), "summary": str(out / "instability.json"),
                          "grids": str(out / "instability.npz")}
    return summary


def plot_instability(grids: dict, centres: np.ndarray, cfg: InstabilityConfig, path: Path) -> None:
    n = len(grids)
    cols = min(3, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols + 1.2, 3.5 * rows + 0.6), squeeze=False,
                             layout="constrained")
    values = np.concatenate([g.ravel() for g in grids.values()])
    vmin, vmax = np.percentile(values, 2), values.max()
    extent = (0, 1, 0, 1)
    for n_ax, (ax, (k, g)) in enumerate(zip(axes.ravel(), grids.items())):
        im = ax.imshow(g, origin="lower", extent=extent, vmin=vmin, vmax=vmax, cmap="viridis", aspect="equal")
        ax.plot(*cfg.true_emission, "r+", ms=10, mew=2)
        ax.plot(cfg.true_emission[1], cfg.true_emission[0], "rx", ms=7, mew=1.5)
        ax.plot([0, 1], [0, 1], color="w", lw=0.6, ls=":")
        ax.set_title(f"after {k} iteration{'s' if k > 1 else ''}")
        if n_ax % cols == 0:
            ax.set_ylabel("β₀ = P(1 | state 1)")
        if n_ax >= n - cols:
            ax.set_xlabel("α₀ = P(1 | state 0)")
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.85, label="training log-likelihood (nats)")
    fig.suptitle(f"EM from {len(centres)}×{len(centres)} starts, {cfg.bits} bits (+ truth, × its label swap)")
    save_figure(fig, path)


# ---------------------------------------------------------------------------------------- character HMM
def fit_char_hmm(text_path, cfg: CharHMMConfig = CharHMMConfig(), progress: bool = True) -> dict:
    """Train an HMM language model on the first 90% of a text (symbols: the tokenizer's ids; its <bos> is the
    HMM's start symbol) -> {"model", "tokenizer", validation bits per character of the last 10%, ...}."""
    train_text, val_text = split_text(read_text(text_path), cfg.val_fraction)
    if not train_text or not val_text:
        raise ValueError(f"{text_path}: the text is too short to split into training and validation parts")
    tok = make_tokenizer(cfg.tokenizer).fit(train_text)
    train_ids, val_ids = np.asarray(tok.encode(train_text)), np.asarray(tok.encode(val_text))
    unseen = int((val_ids == tok.unk_id).sum())
    if unseen and cfg.emission_pseudocount <= 0:
        raise ValueError(f"the validation text holds {unseen} symbols never seen in training (probability 0 "
                         "under maximum likelihood): set emission_pseudocount > 0")
    model = HMM(cfg.n_states, tok.vocab_size, start_symbol=tok.bos_id, n_iter=cfg.iterations, tol=cfg.tol,
                emissionprob_prior=1.0 + cfg.emission_pseudocount, transmat_prior=1.0 + cfg.transition_pseudocount,
                startprob_prior=1.0 + cfg.transition_pseudocount, seed=cfg.seed, device=cfg.device,
                dtype=DTYPES[cfg.dtype], chunk_length=cfg.chunk_length)
    bar = tqdm(total=cfg.iterations, desc=f"char HMM, {cfg.n_states} states", unit="it", disable=not progress,
               dynamic_ncols=True)
    started = time.perf_counter()

    def tick(m, stats) -> bool:
        bar.update(1)
        bar.set_postfix(bits=f"{-m.monitor_.history[-1] / len(train_ids) / LN2:.4f}")
        return cfg.max_seconds is not None and time.perf_counter() - started > cfg.max_seconds

    model.fit(train_ids, callback=tick)
    train_ll = model.score(train_ids)  # after the last update (the history holds the ones before)
    seconds = time.perf_counter() - started
    bar.close()
    val_ll = model.score(val_ids)
    S, V = cfg.n_states, tok.vocab_size
    sample = tok.decode(model.sample(300, seed=cfg.seed)[0])
    return {"model": model, "tokenizer": tok, "n_states": S, "iterations": model.monitor_.iter,
            "parameters": (S - 1) + S * (S - 1) + S * (V - 1), "train_chars": len(train_text),
            "val_chars": len(val_text), "train_bits_per_char": -train_ll / len(train_text) / LN2,
            "val_bits_per_char": -val_ll / len(val_text) / LN2, "val_nats_per_char": -val_ll / len(val_text),
            "seconds": seconds, "seconds_per_iteration": seconds / max(1, model.monitor_.iter),
            "device": str(model.device), "dtype": cfg.dtype, "sample": sample}


def char_hmm_table(text_path, out_dir, states: list[int], cfg: CharHMMConfig = CharHMMConfig(),
                   progress: bool = True) -> list[dict]:
    """fit_char_hmm for every number of states; writes charhmm.json and charhmm.md (a results table)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for S in states:
        result = fit_char_hmm(text_path, CharHMMConfig(**{**asdict(cfg), "n_states": S}), progress)
        rows.append({k: v for k, v in result.items() if k not in ("model", "tokenizer")})
        write_json(out / "charhmm.json", {"text": str(text_path), "config": asdict(cfg), "rows": rows})
        (out / "charhmm.md").write_text(char_hmm_markdown(rows), encoding="utf-8")
    return rows


def char_hmm_markdown(rows: list[dict]) -> str:
    lines = ["| states | free parameters | EM iterations | train bits/char | val bits/char | val nats/char "
             "| s/iteration | device |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['n_states']} | {r['parameters']:,} | {r['iterations']} | {r['train_bits_per_char']:.4f} "
                     f"| {r['val_bits_per_char']:.4f} | {r['val_nats_per_char']:.4f} | "
                     f"{r['seconds_per_iteration']:.2f} | {r['device']} ({r['dtype']}) |")
    return "\n".join(lines) + "\n"
