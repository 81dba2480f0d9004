"""`topiceq run`: the whole pipeline as a Prefect flow (what `make run` calls)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from topiceq.arguments import add_device
from topiceq.inputs import UsageError

HELP = "run the whole pipeline as a Prefect flow (ingest, topics, train, generate, compile check, quiz)"
DESCRIPTION = (
    "Runs the `equations` flow (ingest -> topics -> train the topic model and the unconditioned baseline -> "
    "evaluate -> generate by topic -> compile check -> quiz -> report) on Prefect's embedded server, or the "
    "`charlm` flow (--flow charlm: text -> train -> sample -> score). Every task is cached by the content of "
    "its inputs in RUNDIR, so a second run with nothing changed is quick and a crashed run resumes from the "
    "last completed task; --refresh recomputes everything. --flow hmm runs the HMM experiments (the letters "
    "HMM, the instability grid). --task-runner dask spreads ingest shards and compile-check batches over a "
    "Dask cluster (a local one, or --dask-address tcp://HOST:PORT).")

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
DEFAULT_CORPUS = SHARED_DATA / "arxiv" / "demo"
DEFAULT_TEXT = SHARED_DATA / "text" / "tinyshakespeare.txt"
DEFAULT_LETTERS_TEXT = SHARED_DATA / "text" / "war-and-peace.txt"
DEFAULT_OUT = REPO_ROOT / "data" / "runs" / "latest"
PRESETS = ("tiny", "cpu", "gpu")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--flow", choices=("equations", "charlm", "hmm"), default="equations",
                        help="which flow: the equation pipeline, a character model on a text file, or the HMM "
                        "experiments (letters on --text, default war-and-peace.txt; the instability grid)")
    parser.add_argument("--corpus", metavar="DIR", nargs="+",
                        help=f"LaTeX sources to ingest (files or folders); default {DEFAULT_CORPUS} when present")
    parser.add_argument("--text", metavar="FILE", help=f"text file for --flow charlm (default {DEFAULT_TEXT})")
    parser.add_argument("--preset", choices=PRESETS,
                        help="model sizes and budgets: tiny (smoke test), cpu (minutes on 2 cores), gpu "
                        "(the full 2 x 512 models); default gpu when CUDA is available, else cpu")
    parser.add_argument("--out", metavar="RUNDIR", default=str(DEFAULT_OUT),
                        help="run folder: outputs, report.md, summary.json and the task cache; one run at a "
                        "time per folder (a second run on a folder in use stops at once and says so)")
    parser.add_argument("--refresh", action="store_true", help="recompute every task instead of using the cache")
    parser.add_argument("--task-runner", choices=("threads", "dask"), default="threads",
                        help="threads on this machine, or Dask (a LocalCluster unless --dask-address)")
    parser.add_argument("--dask-address", metavar="tcp://HOST:PORT", help="scheduler of an existing Dask cluster")
    parser.add_argument("--workers", type=int, help="threads, or LocalCluster worker processes (default: CPUs)")
    add_device(parser, help_for="training and generation")
    parser.add_argument("--seed", type=int, default=0, help="seed for generation and the quiz")
    parser.add_argument("--max-steps", type=int, help="training steps of each model (default: the preset's budget)")
    parser.add_argument("--json", action="store_true", help="print the final summary as one JSON line")


def default_preset() -> str:
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"


def _exit_on_sigterm() -> None:
    """SIGTERM (a `kill`, a CI time-out) unwinds like Ctrl-C, so Prefect stops its embedded server instead
    of leaving it running; the cache keeps every task that had completed."""
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. called from a test's thread): leave it alone
        pass


def writable_folder(path: Path, flag: str = "--out") -> Path:
    """PATH resolved and created, or a one-line error that says what to do."""
    path = path.resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".topiceq-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"cannot write to {flag} {path} ({exc.strerror or exc}): pass a folder you can "
                         "write to") from None
    return path


def check_corpus(corpus: list[Path], default: bool) -> None:
    missing = [str(c) for c in corpus if not c.exists()]
    if missing:
        hint = " (the shared demo corpus is missing: pass --corpus DIR)" if default else ""
        raise FileNotFoundError(f"corpus {', '.join(missing)} does not exist{hint}")
    for c in corpus:
        if c.is_dir() and not any(p.is_file() for p in c.rglob("*")):
            raise UsageError(f"corpus folder {c} is empty: put LaTeX sources in it (.tex files, arXiv "
                             ".tar.gz/.gz archives, or an ingest's .jsonl), or pass --corpus DIR")


def run(args: argparse.Namespace) -> int:
    if args.dask_address and args.task_runner != "dask":
        raise UsageError("--dask-address needs --task-runner dask")
    run_dir = writable_folder(Path(args.out))
    if args.flow == "equations":
        from pipeline.compile_tex import pdflatex_path

        pdflatex_path()  # before minutes of training: the compile check needs it (the message says how)
        corpus = [Path(c) for c in args.corpus] if args.corpus else [DEFAULT_CORPUS]
        check_corpus(corpus, default=not args.corpus)
    else:
        text = Path(args.text) if args.text else DEFAULT_LETTERS_TEXT if args.flow == "hmm" else DEFAULT_TEXT
        if not text.is_file():
            raise FileNotFoundError(f"text file {text} does not exist: pass --text FILE")
    preset = args.preset or default_preset()

    from flows.settings import RUN_PREFECT_HOME, apply_prefect_defaults

    apply_prefect_defaults(prefect_home=run_dir / RUN_PREFECT_HOME)
    _exit_on_sigterm()
    started = time.perf_counter()

    from flows.caching import StageFailed
    from flows.launch import RunFolderBusy, run_flow

    runner = dict(task_runner=args.task_runner, dask_address=args.dask_address, workers=args.workers)
    try:
        if args.flow == "charlm":
            from flows.charlm import charlm_flow

            summary = run_flow(charlm_flow, run_dir, **runner, text=str(text.resolve()), preset=preset,
                               device=args.device, seed=args.seed, refresh=args.refresh, max_steps=args.max_steps)
        elif args.flow == "hmm":
            from flows.hmm import hmm_flow

            summary = run_flow(hmm_flow, run_dir, **runner, text=str(text.resolve()), seed=args.seed,
                               device="cpu" if args.device == "mps" else args.device, refresh=args.refresh)
        else:
            from flows.equations import equations_flow

            summary = run_flow(equations_flow, run_dir, **runner, corpus=[str(c.resolve()) for c in corpus],
                               preset=preset, device=args.device, seed=args.seed, refresh=args.refresh,
                               max_steps=args.max_steps)
    except RunFolderBusy as exc:
        raise UsageError(str(exc)) from None
    except StageFailed:
        raise
    except (OSError, ValueError, RuntimeError):
        raise
    except Exception as exc:  # Prefect/Dask trouble: one line that names the flow, not a bare traceback
        raise RuntimeError(f"the {args.flow} flow failed: {type(exc).__name__}: {exc}") from exc

    elapsed = time.perf_counter() - started
    if args.json:
        print(json.dumps({**summary, "wall_seconds": elapsed}, default=str))
    else:
        print(f"topiceq run: {args.flow} flow finished in {elapsed:.1f} s; report: "
              f"{summary.get('outputs', {}).get('report', run_dir / 'report.md')}", file=sys.stderr)
    for warning in summary.get("warnings") or []:
        print(f"topiceq run: warning: {warning}", file=sys.stderr)
    return 0
