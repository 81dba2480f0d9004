"""topicrnn.hmm against hmmlearn (CategoricalHMM, implementation="scaling") in one process, same data, same start.

1. EM iteration: S states, V symbols, n symbols (default 16 / 65 / 200,000: the first 200,000 characters of
   Tiny Shakespeare, whose 65 characters are the symbols; a sampled sequence if the file is missing). Both
   fit `--iterations` EM iterations from the same seeded random parameters (tol = -inf, so all of them run);
   alternating rounds; time per iteration, wall and CPU (hmmlearn's C++ runs in this process, so CPU seconds
   compare too). Goal: ours / hmmlearn <= 1.0. The two log-likelihood histories are compared as a check.
2. Instability grid: the two-parameter bit HMM of `topicrnn.hmm_experiments` (transitions fixed, the two
   emission probabilities learned) from grid x grid starting points, `--grid-iterations` EM iterations:
   one BatchedHMM fit against a loop of hmmlearn fits (params="e"). Goal: >= 20x. With `--baseline-fits N`
   only N of the loop's fits are timed and the loop's time is extrapolated (said in the output).

    python bench/hmm_bench.py [--part iteration|grid|all] [--threads 1] [--rounds 3]
    python bench/hmm_bench.py --device cuda --states 256 --part iteration --iterations 2 --cpu-path
    python bench/hmm_bench.py --device cuda --grid 200 --part grid --baseline-fits 2500 --cpu-path
3. Engines (`--part engines`, not in `all`): our two forward-backward passes, fused (numba) against chunked
   (torch), for (states, models, symbols) shapes: the measurements behind `hmm_fused.wins` (engine="auto").

`--cpu-path` also times our CPU path (on a GPU machine: the GPU against the CPU path). `--engine` picks our
forward-backward pass (auto | fused | chunked: topicrnn/hmm.py; the output names the one that ran); the first
call (numba's compilation, or loading it from its cache) is timed apart as the warm-up. Without hmmlearn
installed (the GPU machine's image), or with `--no-hmmlearn`, the baseline is left out and only our paths
are timed. `--json FILE` writes
every figure.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from topicrnn.device import resolve_device
from topicrnn.hmm import HMM
from topicrnn.hmm_config import InstabilityConfig
from topicrnn.hmm_experiments import bit_hmm, emission_grid, instability_data

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TEXT = REPO.parent / "shared" / "data" / "text" / "tinyshakespeare.txt"
DTYPES = {"float64": torch.float64, "float32": torch.float32}


def symbols(path: Path, n: int, V: int, seed: int) -> tuple[np.ndarray, str]:
    if path.is_file():
        text = path.read_text(encoding="utf-8")[:n]
        alphabet = sorted(set(text))
        if len(text) == n and len(alphabet) <= V:
            index = {c: i for i, c in enumerate(alphabet)}
            return np.array([index[c] for c in text]), f"first {n:,} characters of {path.name}"
    gen = HMM(16, V, seed=seed)
    gen._init(None)
    return gen.sample(n, seed=seed)[0], f"{n:,} symbols sampled from a random 16-state HMM"


def random_start(S: int, V: int, seed: int):
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.ones(S)), rng.dirichlet(np.ones(S), size=S), rng.dirichlet(np.ones(V), size=S)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device=torch.device("cpu")):
    sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu, out


def hmmlearn_model():
    try:
        from hmmlearn.hmm import CategoricalHMM
    except ImportError:
        return None
    return CategoricalHMM


def ratios(row: dict, kind: str, goal: str) -> None:
    """Ratios of every timed path against the baseline that is there (hmmlearn, else our CPU path)."""
    base = "hmmlearn" if f"hmmlearn wall {kind}" in row else ("ours, cpu" if f"ours, cpu wall {kind}" in row else None)
    if base is None:
        print("  (no baseline timed: hmmlearn missing and no --cpu-path)")
        return
    for name in [n[: -len(f" wall {kind}")] for n in row if n.endswith(f" wall {kind}")]:
        if name == base:
            continue
        for clock in ("wall", "cpu"):
            row[f"{name} / {base} ({clock})"] = row[f"{name} {clock} {kind}"] / row[f"{base} {clock} {kind}"]
        print(f"  {name} / {base}: wall {row[f'{name} / {base} (wall)']:.4f}, CPU {row[f'{name} / {base} (cpu)']:.4f}"
              f" ({goal})")


def engine(a, device) -> str:
    """--engine for our model on `device` (fused runs on the CPU only: on a GPU, auto)."""
    return a.engine if device.type == "cpu" else "auto"


def warm_up(fn, device, model) -> None:
    """One untimed call (numba's compile or cache load, first allocations, the CUDA context), said apart."""
    wall, _, _ = timed(fn, device)
    print(f"  ours: forward-backward pass {'fused (numba)' if model.uses_fused() else 'chunked (torch)'} on "
          f"{device}; warm-up call {wall:.2f} s (not counted)")


def bench_iteration(a, device) -> dict:
    CategoricalHMM = None if a.no_hmmlearn else hmmlearn_model()
    X, source = symbols(Path(a.text), a.length, a.symbols, a.seed)
    start = random_start(a.states, a.symbols, a.seed)
    print(f"EM iteration: {a.states} states, {a.symbols} symbols, {source}; {a.iterations} iterations per fit, "
          f"{a.rounds} alternating rounds, torch threads {torch.get_num_threads()}")

    def ours(dev, iterations=a.iterations):
        def run():
            m = HMM(a.states, a.symbols, n_iter=iterations, tol=-math.inf, init_params="", device=dev,
                    dtype=DTYPES[a.dtype], engine=engine(a, dev))
            m.startprob_, m.transmat_, m.emissionprob_ = start
            m.fit(X)
            return m.monitor_.history
        return run

    def theirs():
        m = CategoricalHMM(a.states, n_features=a.symbols, n_iter=a.iterations, tol=-math.inf, init_params="",
                           implementation="scaling")
        m.startprob_, m.transmat_, m.emissionprob_ = start
        m.fit(X[:, None])
        return list(m.monitor_.history)

    runs = {"ours": (ours(device), device)}
    if CategoricalHMM is not None:
        runs["hmmlearn"] = (theirs, torch.device("cpu"))
    if a.cpu_path:
        runs["ours, cpu"] = (ours(torch.device("cpu")), torch.device("cpu"))
    warm_up(ours(device, 1), device, HMM(a.states, a.symbols, device=device, engine=engine(a, device)))
    times = {k: [] for k in runs}
    histories = {}
    for r in range(a.rounds):
        order = list(runs) if r % 2 == 0 else list(reversed(runs))
        for name in order:
            fn, dev = runs[name]
            wall, cpu, histories[name] = timed(fn, dev)
            times[name].append((wall / a.iterations, cpu / a.iterations))
    row = {"states": a.states, "symbols": a.symbols, "length": len(X), "source": source, "dtype": a.dtype,
           "device": str(device), "engine": a.engine}
    for name, ts in times.items():
        row[f"{name} wall s/iter"] = min(t[0] for t in ts)
        row[f"{name} cpu s/iter"] = min(t[1] for t in ts)
        print(f"  {name:>10}: {row[f'{name} wall s/iter'] * 1000:9.1f} ms/iteration wall (best of {len(ts)}), "
              f"{row[f'{name} cpu s/iter'] * 1000:9.1f} ms CPU")
    ratios(row, "s/iter", "goal <= 1.0 against hmmlearn")
    ref = histories.get("hmmlearn", histories.get("ours, cpu"))
    if ref is not None:
        diff = np.abs(np.array(histories["ours"]) - np.array(ref)) / np.abs(ref)
        row["history max relative difference"] = float(diff.max())
        print(f"  log-likelihood histories agree to {diff.max():.1e} (relative)")
    return row


def bench_grid(a, device) -> dict:
    CategoricalHMM = None if a.no_hmmlearn else hmmlearn_model()
    cfg = InstabilityConfig(grid=a.grid, iterations=a.grid_iterations, bits=a.bits, seed=a.seed, dtype=a.dtype)
    X = instability_data(cfg)
    G = a.grid
    centres = (np.arange(G) + 0.5) / G
    beta0, alpha0 = np.meshgrid(centres, centres, indexing="ij")
    emissions = emission_grid(alpha0.ravel(), beta0.ravel())
    n_fits = min(G * G, a.baseline_fits or G * G)
    print(f"instability grid: {G}x{G} starts, {cfg.iterations} EM iterations, {len(X)} bits, ours {a.dtype} on "
          f"{device}; " + ("hmmlearn: not installed, left out" if CategoricalHMM is None else
                           f"hmmlearn: a loop of {n_fits} fits" + (" (timed, extrapolated to the grid)"
                                                                   if n_fits < G * G else "")))

    def ours(dev):
        def run():
            m = bit_hmm(G * G, cfg, device=dev, engine=engine(a, dev))
            m.emissionprob_ = emissions
            m.fit(X)
            return m.emissionprob_[:, :, 1]
        return run

    template = bit_hmm(1, cfg)
    pi, A = template.startprob_[0], template.transmat_[0]
    pick = np.linspace(0, G * G - 1, n_fits).round().astype(int)

    def theirs():
        out = []
        for k in pick:
            m = CategoricalHMM(2, n_features=2, params="e", init_params="", n_iter=cfg.iterations, tol=-math.inf,
                               implementation="scaling")
            m.startprob_, m.transmat_, m.emissionprob_ = pi, A, emissions[k]
            m.fit(X[:, None])
            out.append(m.emissionprob_[:, 1])
        return np.array(out)

    warm_up(ours(device), device, bit_hmm(G * G, cfg, device=device, engine=engine(a, device)))
    runs = {"ours": (ours(device), device)}
    if a.cpu_path:
        runs["ours, cpu"] = (ours(torch.device("cpu")), torch.device("cpu"))
    row = {"grid": G, "iterations": cfg.iterations, "bits": len(X), "dtype": a.dtype, "device": str(device),
           "engine": a.engine,
           "baseline_fits_timed": int(n_fits)}
    results = {}
    for name, (fn, dev) in runs.items():
        best = min((timed(fn, dev) for _ in range(a.rounds)), key=lambda t: t[0])
        row[f"{name} wall s"], row[f"{name} cpu s"], results[name] = best
    names = list(runs)
    if CategoricalHMM is not None:
        wall, cpu, ref = timed(theirs)
        scale = G * G / n_fits
        row["hmmlearn wall s"], row["hmmlearn cpu s"] = wall * scale, cpu * scale
        row["max |difference| of the learned emissions"] = float(np.abs(results["ours"][pick] - ref).max())
        names.append("hmmlearn")
    for name in names:
        print(f"  {name:>10}: {row[f'{name} wall s']:9.3f} s wall, {row[f'{name} cpu s']:9.3f} s CPU")
    ratios(row, "s", "time ratio; goal hmmlearn / ours >= 20x, i.e. <= 0.05")
    if "hmmlearn wall s" in row:
        print(f"  speed-up hmmlearn / ours: wall {row['hmmlearn wall s'] / row['ours wall s']:.1f}x, CPU "
              f"{row['hmmlearn cpu s'] / row['ours cpu s']:.1f}x (goal >= 20x); learned emissions agree to "
              f"{row['max |difference| of the learned emissions']:.1e}")
    if "ours, cpu" in results:
        row["max |difference| device vs cpu"] = float(np.abs(results["ours"] - results["ours, cpu"]).max())
    return row


ENGINE_SHAPES = [(2, 1, 200_000), (3, 1, 200_000), (4, 1, 200_000), (8, 1, 200_000), (16, 1, 200_000),
                 (4, 2, 100_000), (8, 8, 20_000), (16, 8, 10_000), (32, 4, 10_000), (32, 8, 10_000), (64, 8, 2_000),
                 (64, 16, 2_000), (2, 2500, 1_000)]


def bench_engines(a) -> list[dict]:
    """Fused against chunked, 2 EM iterations per fit (best of --rounds), V = 10 random symbols (65 for 1 model)."""
    from topicrnn.hmm import BatchedHMM

    rng = np.random.default_rng(a.seed)
    rows = []
    print(f"engines: fused (numba) vs chunked (torch), {a.dtype}, torch threads {torch.get_num_threads()}")
    for S, M, n in ENGINE_SHAPES:
        V = 65 if M == 1 else 10
        X = rng.integers(0, V, n)
        best = {}
        for engine_name in ("fused", "chunked"):
            def fit(iterations=2):
                m = BatchedHMM(M, S, V, n_iter=iterations, tol=-math.inf, seed=a.seed, engine=engine_name,
                               dtype=DTYPES[a.dtype])
                return m.fit(X)
            fit(1)  # warm-up
            best[engine_name] = min(timed(fit)[0] for _ in range(a.rounds)) / 2
        row = {"states": S, "models": M, "symbols": n, "fused s/iter": best["fused"], "chunked s/iter": best["chunked"],
               "fused / chunked": best["fused"] / best["chunked"]}
        rows.append(row)
        print(f"  {S:>3} states x {M:>4} models, {n:>7,} symbols: fused {best['fused'] * 1e3:8.1f} ms, chunked "
              f"{best['chunked'] * 1e3:8.1f} ms per iteration: fused / chunked {row['fused / chunked']:.2f}")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["iteration", "grid", "engines", "all"], default="all",
                    help="all = iteration and grid")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | auto (ours; hmmlearn always runs on the CPU)")
    ap.add_argument("--dtype", choices=list(DTYPES), default="float64")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (hmmlearn is single-threaded; 0 = torch's default)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--text", default=str(DEFAULT_TEXT), help="symbols for part 1 (its characters)")
    ap.add_argument("--states", type=int, default=16)
    ap.add_argument("--symbols", type=int, default=65)
    ap.add_argument("--length", type=int, default=200_000)
    ap.add_argument("--iterations", type=int, default=5, help="EM iterations per timed fit (part 1)")
    ap.add_argument("--grid", type=int, default=50)
    ap.add_argument("--grid-iterations", type=int, default=15)
    ap.add_argument("--bits", type=int, default=1000)
    ap.add_argument("--baseline-fits", type=int, default=0, help="time only this many hmmlearn fits (0 = all)")
    ap.add_argument("--cpu-path", action="store_true",
                    help="also time our CPU path (with --device cpu: a second run of the same, a smoke test)")
    ap.add_argument("--no-hmmlearn", action="store_true", help="leave the hmmlearn baseline out")
    ap.add_argument("--engine", choices=["auto", "fused", "chunked"], default="auto",
                    help="our forward-backward pass on the CPU (topicrnn/hmm.py)")
    ap.add_argument("--json", metavar="FILE", help="write the figures here")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = resolve_device(a.device, mps=False)
    out = {"torch": torch.__version__, "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
           else "cpu", "threads": torch.get_num_threads()}
    if a.part in ("iteration", "all"):
        out["iteration"] = bench_iteration(a, device)
    if a.part in ("grid", "all"):
        out["grid"] = bench_grid(a, device)
    if a.part == "engines":
        out["engines"] = bench_engines(a)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
