"""`topiceq hmm letters|instability|charlm`: the lecture's hidden Markov model experiments."""
from __future__ import annotations

import argparse
import json
import sys

HELP = "HMM experiments: the 2-state letters HMM, the instability of EM, character HMMs as language models"
DESCRIPTION = (
    "letters: a 2-state HMM over the 26 letters of English prose, EM from near-uniform parameters; writes the "
    "curves of P(state = 1 | letter) across iterations (letters.png), the phase-transition iteration and the final "
    "split (letters.json). instability: a two-parameter bit HMM (the two emission probabilities; transitions fixed), "
    "EM from a grid of starting points at once; heatmaps of the log-likelihood after iterations 1, 2, 3, 4, 10, 15 "
    "(instability.png). charlm: character HMMs on the first 90% of a text, validation bits per character on the "
    "last 10% (nanoGPT's split), one row per number of states (charhmm.md, charhmm.json).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from topicrnn.hmm_config import CharHMMConfig, InstabilityConfig, LettersConfig

    fmt = argparse.ArgumentDefaultsHelpFormatter
    sub = parser.add_subparsers(dest="hmm_command", metavar="{letters,instability,charlm}", required=True)

    d = LettersConfig()
    p = sub.add_parser("letters", help="the 2-state letters HMM (after Cave & Neuwirth)", formatter_class=fmt,
                       description="Letters a-z of the text's prose (case folded, everything else dropped; a "
                       "Project Gutenberg header is skipped), EM from near-uniform parameters.")
    p.add_argument("--text", required=True, metavar="FILE", help="an English text (e.g. war-and-peace.txt)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for letters.png, letters.json, the curves")
    p.add_argument("--chars", type=int, default=d.chars, help="letters fed to the HMM")
    p.add_argument("--iterations", type=int, default=d.iterations, help="EM iterations (all of them are run)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the perturbation of the uniform start")
    p.add_argument("--perturbation", type=float, default=d.perturbation,
                   help="relative size of the perturbation (rows ∝ 1 + p·U(-1, 1))")
    _device(p, d.device)

    d = InstabilityConfig()
    p = sub.add_parser("instability", help="EM from a grid of starting points of a two-parameter bit HMM",
                       formatter_class=fmt)
    p.add_argument("--out", required=True, metavar="DIR", help="folder for instability.png/.json/.npz")
    p.add_argument("--grid", type=int, default=d.grid, help="grid × grid starting points (α₀, β₀)")
    p.add_argument("--iterations", type=int, default=d.iterations, help="EM iterations")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the training bits")
    p.add_argument("--bits", type=int, default=d.bits, help="length of the training sequence")
    p.add_argument("--dtype", choices=["float64", "float32"], default=d.dtype)
    _device(p, d.device)

    d = CharHMMConfig()
    p = sub.add_parser("charlm", help="character HMMs: validation bits/char for several numbers of states",
                       formatter_class=fmt)
    p.add_argument("--text", required=True, metavar="FILE", help="a text (e.g. tinyshakespeare.txt)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for charhmm.md and charhmm.json")
    p.add_argument("--states", type=int, nargs="+", default=[2, 4, 8, 16], help="numbers of hidden states")
    p.add_argument("--iterations", type=int, default=d.iterations, help="most EM iterations per model")
    p.add_argument("--tol", type=float, default=d.tol, help="stop when an iteration gains fewer nats")
    p.add_argument("--max-seconds", type=float, default=d.max_seconds, help="time budget of EM per model")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the random initial parameters")
    p.add_argument("--tokenizer", choices=["char", "latex"], default=d.tokenizer, help="the HMM's symbols")
    p.add_argument("--emission-pseudocount", type=float, default=d.emission_pseudocount,
                   help="added to every expected emission count (0: maximum likelihood)")
    p.add_argument("--transition-pseudocount", type=float, default=d.transition_pseudocount,
                   help="added to every expected transition (and start) count (0: maximum likelihood)")
    p.add_argument("--dtype", choices=["float64", "float32"], default=d.dtype)
    _device(p, d.device)


def _device(p, default: str) -> None:
    p.add_argument("--device", default=default, choices=["auto", "cpu", "cuda"], help="torch device for EM")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from topicrnn import hmm_experiments as ex
    from topicrnn.device import resolve_device
    from topicrnn.hmm_config import CharHMMConfig, InstabilityConfig, LettersConfig

    device = str(resolve_device(args.device, mps=False))
    if getattr(args, "text", None) and not Path(args.text).is_file():
        raise FileNotFoundError(f"text file {args.text} does not exist: pass --text FILE")
    if args.hmm_command == "letters":
        cfg = LettersConfig(chars=args.chars, iterations=args.iterations, seed=args.seed,
                            perturbation=args.perturbation, device=device)
        s = ex.run_letters(args.text, args.out, cfg)
        pt, split = s["phase_transition"], s["final_split"]
        line = (f"letters HMM, {s['letters']} letters, {s['iterations']} EM iterations in {s['seconds']:.1f} s: "
                f"phase transition at iteration {pt['iteration']} (steepest rise {pt['steepest_rise_iteration']}); "
                f"state 0: {split['state_0']}  state 1: {split['state_1']}  (vowel state {split['vowel_state']}); "
                f"{s['initial_bits_per_letter']:.4f} -> {s['final_bits_per_letter']:.4f} bits/letter")
    elif args.hmm_command == "instability":
        cfg = InstabilityConfig(grid=args.grid, iterations=args.iterations, seed=args.seed, bits=args.bits,
                                device=device, dtype=args.dtype)
        s = ex.run_instability(args.out, cfg)
        line = (f"instability: {s['n_models']} starts x {cfg.iterations} EM iterations in {s['seconds']:.2f} s; "
                f"best final log-likelihood {s['best_final_log_likelihood']:.3f} "
                f"(truth {s['truth_log_likelihood']:.3f}),"
                f" {s['fraction_within_0.1_nats_of_best']:.0%} of the starts end within 0.1 nats of it")
    else:
        cfg = CharHMMConfig(iterations=args.iterations, tol=args.tol, max_seconds=args.max_seconds,
                            seed=args.seed, tokenizer=args.tokenizer, device=device, dtype=args.dtype,
                            emission_pseudocount=args.emission_pseudocount,
                            transition_pseudocount=args.transition_pseudocount)
        rows = ex.char_hmm_table(args.text, args.out, args.states, cfg)
        s = {"rows": rows, "outputs": {"table": str(Path(args.out) / "charhmm.md"),
                                       "summary": str(Path(args.out) / "charhmm.json")}}
        line = ex.char_hmm_markdown(rows).rstrip()
    if args.json:
        print(json.dumps(s, default=str))
    else:
        print(line)
        for name, path in s["outputs"].items():
            print(f"  {name}: {path}", file=sys.stderr)
    return 0
