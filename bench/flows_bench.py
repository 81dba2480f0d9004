"""What Prefect costs: per task, per flow, and for a whole small flow against calling the same functions directly.

Prints, all measured in this one run on this machine:
  * the embedded server's start (the first flow call of a process),
  * per flow run: an empty flow vs an empty function,
  * per task run: a stage task (content-keyed cache, persisted result) around `pipeline.ingest.split_for`
    vs the direct call, uncached and cached,
  * the charlm flow (tiny preset) vs its three functions (train, sample, score) called directly, and the
    flow's second run (everything from the cache).
Usage: python bench/flows_bench.py [--steps 30] [--tasks 40]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TEXT = REPO.parent / "shared" / "data" / "text" / "tinyshakespeare.txt"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="training steps of the tiny charlm model")
    parser.add_argument("--tasks", type=int, default=40, help="task calls for the per-task figure")
    parser.add_argument("--chars", type=int, default=100_000, help="characters of Tiny Shakespeare to train on")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="topiceq-flows-bench-"))
    os.environ["PREFECT_HOME"] = str(work / "prefect-home")
    from flows.settings import apply_prefect_defaults

    apply_prefect_defaults()
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"  # the bench measures, it does not narrate

    from prefect import flow

    from flows.caching import stage_task
    from flows.launch import configured
    from pipeline.ingest import split_for

    @flow
    def empty_flow() -> int:
        return 1

    t0 = time.perf_counter()
    empty_flow()
    server_start = time.perf_counter() - t0

    n_flows = 5
    t0 = time.perf_counter()
    for _ in range(n_flows):
        empty_flow()
    per_flow = (time.perf_counter() - t0) / n_flows
    t0 = time.perf_counter()
    for _ in range(n_flows):
        empty_flow.fn()
    per_flow_direct = (time.perf_counter() - t0) / n_flows

    @stage_task("bench-split", input_arg="paper", outputs=(), code=("pipeline.ingest",))
    def split_task(paper: str) -> str:
        return split_for(paper)

    @flow
    def many_tasks(n: int, out: str) -> list[str]:
        return [split_task(f"paper-{i}") for i in range(n)]

    runnable = configured(many_tasks, work / "run")
    t0 = time.perf_counter()
    first = runnable(args.tasks, str(work / "run"))
    t_uncached = time.perf_counter() - t0
    t0 = time.perf_counter()
    second = runnable(args.tasks, str(work / "run"))
    t_cached = time.perf_counter() - t0
    assert first == second
    t0 = time.perf_counter()
    direct = [split_for(f"paper-{i}") for i in range(args.tasks)]
    t_direct = time.perf_counter() - t0
    assert direct == first
    per_task_uncached = (t_uncached - per_flow) / args.tasks
    per_task_cached = (t_cached - per_flow) / args.tasks
    per_call_direct = t_direct / args.tasks

    # The charlm flow against its functions called directly, same inputs.
    from flows.charlm import CHARLM_PRESETS, charlm_flow
    from flows.launch import run_flow
    from topicrnn.checkpoint import load_model
    from topicrnn.data import read_text, split_text
    from topicrnn.presets import get_preset
    from topicrnn.trainers import train_preset

    text = work / "text.txt"
    text.write_text(TEXT.read_text(encoding="utf-8")[: args.chars], encoding="utf-8")

    def direct(model_dir: Path) -> None:
        p = get_preset(CHARLM_PRESETS["tiny"])
        train_preset(p, model_dir, data_path=str(text), max_steps=args.steps, progress=False)
        lm = load_model(model_dir)
        lm.sample(3, 300, temperature=0.8, seed=0)
        lm.score(split_text(read_text(text), 0.1)[1][:20000])

    direct(work / "warm-up")  # first calls pay for lazy imports and allocator warm-up: not Prefect's cost
    t0 = time.perf_counter()
    direct(work / "direct")
    t_functions = time.perf_counter() - t0

    params = dict(text=str(text), preset="tiny", max_steps=args.steps)
    t0 = time.perf_counter()
    run_flow(charlm_flow, work / "flow", **params)
    t_flow = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_flow(charlm_flow, work / "flow", **params)
    t_flow_cached = time.perf_counter() - t0

    print(f"embedded Prefect server start (first flow call): {server_start:.2f} s")
    print(f"per flow run: {per_flow * 1000:.0f} ms vs {per_flow_direct * 1e6:.1f} us for the bare function")
    print(f"per task run ({args.tasks} calls, content-keyed cache, persisted result): "
          f"{per_task_uncached * 1000:.1f} ms uncached, {per_task_cached * 1000:.1f} ms from the cache, "
          f"vs {per_call_direct * 1e6:.1f} us calling the function")
    print(f"charlm flow (tiny, {args.steps} steps, {args.chars:,} chars): {t_flow:.2f} s through Prefect vs "
          f"{t_functions:.2f} s calling train/sample/score directly: ratio {t_flow / t_functions:.2f}x "
          f"(overhead {t_flow - t_functions:+.2f} s); second run from the cache {t_flow_cached:.2f} s "
          f"({t_flow_cached / t_functions:.2f}x)")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
