"""Does `topiceq run` survive what a newcomer's machine does to it? Counts failures; all measured in this run.

Three parts, each against a baseline measured here:
A baseline run alone (no load) gives the time scale. Parts 1 and 2 run with a busy loop on every CPU.
  1. The root cause of issue 15, in isolation. The mechanism, made to happen once: a connection's read
     transaction turns into a write while another connection switches the file to WAL; sqlite fails it at
     once although the busy timeout is 60 s. Then RACES times, 8 threads open the verdict cache on a new file at
     the same moment. Baseline: the way it was opened before (`sqlite3.connect(timeout=60)` then
     `PRAGMA journal_mode=WAL` on every new connection); now: `pipeline.compile_cache.VerdictCache`.
     Prints the errors of each (the baseline's are "database is locked" despite the 60 s busy timeout).
  2. PAIRS pairs of `topiceq run --preset tiny`, the two runs of a pair at the same time on different --out
     folders with one shared compile cache (empty at the start: the first pair creates it), every CPU kept
     busy by busy loops. Counts runs that fail (exit status not 0) and runs whose report has warnings, and
     times a pair against the run alone.
  3. KILLS times: a run is killed with SIGKILL at a random moment (seeded; one in each of KILLS equal slices of
     the run alone's duration), then run again on the same folder; counts re-runs that fail, the tasks they took
     from the cache, and killed runs' Prefect servers still alive after the re-run.
Usage: nice python bench/reliability_bench.py [--pairs 20] [--kills 5] [--races 200]
       [--corpus ../shared/data/arxiv/sample] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CORPUS = REPO.parent / "shared" / "data" / "arxiv" / "sample"


# ------------------------------------------------------------------------------------- 1. creation races
def open_as_before(path: Path) -> None:
    con = sqlite3.connect(path, timeout=60)
    con.execute("PRAGMA journal_mode=WAL")
    with con:
        con.execute("CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, ok INTEGER, error TEXT, "
                    "seconds REAL)")
    con.close()


def open_now(path: Path) -> None:
    from pipeline.compile_cache import VerdictCache

    cache = VerdictCache(path.parent)
    cache.put_verdicts([("k", True, None, 0.0)])
    errors = list(cache.warnings)
    cache.close()
    if errors:
        raise RuntimeError("; ".join(errors))


def upgrade_deadlock(root: Path) -> tuple[str, float]:
    """The mechanism, made to happen: connection A holds a read transaction on a new file; connection B
    (busy timeout 60 s) switches the file to WAL, takes the write lock and waits for A's read to end; A now
    writes. Each waits for the other, so sqlite fails A at once instead of waiting: (A's error, seconds)."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "deadlock.sqlite"
    a = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    a.execute("BEGIN")
    a.execute("SELECT count(*) FROM sqlite_master").fetchall()  # a read lock, kept
    switched = threading.Event()

    def switch() -> None:
        b = sqlite3.connect(path, timeout=60)
        b.execute("PRAGMA journal_mode=WAL")  # waits until A lets go
        b.close()
        switched.set()

    other = threading.Thread(target=switch)
    other.start()
    time.sleep(0.5)  # B holds the write lock and waits
    t0 = time.perf_counter()
    try:
        a.execute("CREATE TABLE t (x)")
        error = "no error"
    except sqlite3.OperationalError as exc:
        error = f"{type(exc).__name__}: {exc}"
    waited = time.perf_counter() - t0
    a.execute("ROLLBACK")
    other.join()
    a.close()
    return error, waited


def creation_races(opener, races: int, threads: int, root: Path) -> list[str]:
    errors: list[str] = []
    for race in range(races):
        folder = root / f"race-{race}"
        folder.mkdir(parents=True)
        barrier = threading.Barrier(threads)

        def one() -> None:
            barrier.wait()
            try:
                opener(folder / "verdicts.sqlite")
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")

        workers = [threading.Thread(target=one) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    return errors


# ------------------------------------------------------------------------------------------------ runs
def run_env(cache_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_HOME"}  # as `make run`: the run folder's own
    env.update(PYTHONPATH=str(REPO), XDG_CACHE_HOME=str(cache_home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               DO_NOT_TRACK="1")
    return env


def start_run(out: Path, corpus: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "topiceq.cli", "run", "--preset", "tiny", "--corpus", str(corpus),
           "--out", str(out), "--workers", "2"]
    return subprocess.Popen(cmd, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def outcome(proc: subprocess.Popen, out: Path, log: Path) -> dict:
    text = log.read_text(errors="replace")
    summary = {}
    if (out / "summary.json").is_file():
        summary = json.loads((out / "summary.json").read_text())
    errors = [line for line in text.splitlines() if line.startswith("topiceq run: error")]
    return {"rc": proc.returncode, "error": errors[-1] if errors else None, "warnings": summary.get("warnings") or [],
            "cached": len(re.findall(r"Finished in state Cached", text)),
            "computed": len(re.findall(r"Task run '[^']+' - Finished in state Completed", text))}


def busy_loops(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def stop_all(processes: list[subprocess.Popen]) -> None:
    for p in processes:
        if p.poll() is None:
            p.kill()
        p.wait()


def servers_of(out: Path) -> list[int]:
    from flows.launch import servers_of as prefect_servers_of

    return prefect_servers_of(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--races", type=int, default=200)
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="topiceq-reliability-"))
    cores = os.cpu_count() or 2
    print(f"work folder {work}; {cores} CPUs; corpus {args.corpus}", flush=True)

    cache_home = work / "xdg"
    env = run_env(cache_home)
    alone_s = 1.0
    if args.pairs or args.kills:
        t0 = time.perf_counter()
        alone = start_run(work / "alone", args.corpus, env, work / "alone.log")
        alone.wait()
        alone_s = time.perf_counter() - t0
        print(f"baseline: one run alone, no busy loops: {alone_s:.0f} s, "
              f"{outcome(alone, work / 'alone', work / 'alone.log')}", flush=True)
        shutil.rmtree(cache_home, ignore_errors=True)  # the pairs start from no cache at all

    load = busy_loops(cores)  # parts 1 and 2 compete with a busy loop per CPU
    try:
        # 1 --------------------------------------------------------------------------------------------
        error, waited = upgrade_deadlock(work / "deadlock")
        print(f"1. a read turned write while another connection switches to WAL (busy timeout 60 s): "
              f"{error} after {waited * 1000:.1f} ms", flush=True)
        before = creation_races(open_as_before, args.races, 8, work / "races-before")
        now = creation_races(open_now, args.races, 8, work / "races-now")
        print(f"1. creation races ({args.races} x 8 threads on a new file): before {len(before)} errors "
              f"({sorted(set(before))[:2]}), now {len(now)} errors {sorted(set(now))[:2]}", flush=True)

        # 2 --------------------------------------------------------------------------------------------
        failures, warned, pair_s = [], 0, []
        for pair in range(args.pairs):
            t0 = time.perf_counter()
            runs = [(work / f"pair{pair:02d}-{side}", work / f"pair{pair:02d}-{side}.log") for side in "ab"]
            procs = [start_run(out, args.corpus, env, log) for out, log in runs]
            for p in procs:
                p.wait()
            pair_s.append(time.perf_counter() - t0)
            results = [outcome(p, out, log) for p, (out, log) in zip(procs, runs)]
            failures += [(pair, r["error"]) for r in results if r["rc"] != 0]
            warned += sum(bool(r["warnings"]) for r in results)
            print(f"   pair {pair + 1:2d}/{args.pairs}: {pair_s[-1]:.0f} s, exit {[r['rc'] for r in results]}, "
                  f"warnings {[len(r['warnings']) for r in results]}", flush=True)
    finally:
        stop_all(load)
    runs_total = 2 * args.pairs
    print(f"2. {args.pairs} pairs at once, {cores} busy loops: {len(failures)}/{runs_total} runs failed, "
          f"{warned} with warnings; a pair took {sum(pair_s) / max(1, len(pair_s)):.0f} s on average "
          f"= {sum(pair_s) / max(1, len(pair_s)) / alone_s:.2f} x one run alone", flush=True)
    for pair, error in failures:
        print(f"   pair {pair + 1}: {error}")

    # 3 ------------------------------------------------------------------------------------------------
    rng = random.Random(args.seed)
    kill_failures, reused, orphans = [], [], 0
    for k in range(args.kills):
        out, log = work / f"kill{k}", work / f"kill{k}.log"
        # Spread over the length of the run alone: one random moment in each of KILLS equal slices of it.
        at = 2.0 + (k + rng.random()) / args.kills * (0.95 * alone_s - 2.0)
        proc = start_run(out, args.corpus, env, log)
        try:
            proc.wait(timeout=at)
            finished_first = True
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)  # the run's process only: its children live on, as after kill -9
            proc.wait()
            finished_first = False
        t0 = time.perf_counter()
        again = start_run(out, args.corpus, env, work / f"kill{k}-again.log")
        again.wait()
        again_s = time.perf_counter() - t0
        result = outcome(again, out, work / f"kill{k}-again.log")
        time.sleep(10)  # a server stops within seconds of SIGTERM
        orphans += len(servers_of(out))  # read only: the re-run is the one that stops them
        if result["rc"] != 0:
            kill_failures.append((k, result["error"]))
        reused.append(result["cached"])
        print(f"   kill {k + 1}/{args.kills}: SIGKILL at {at:.0f} s{' (it had finished)' if finished_first else ''}; "
              f"re-run exit {result['rc']} in {again_s:.0f} s, {result['cached']} tasks from the cache, "
              f"{result['computed']} computed",
              flush=True)
    print(f"3. {args.kills} runs killed at random moments, then run again: {len(kill_failures)}/{args.kills} "
          f"re-runs failed; tasks taken from the cache per re-run: {reused}; servers of killed runs still "
          f"alive after the re-run: {orphans}", flush=True)
    for k, error in kill_failures:
        print(f"   kill {k + 1}: {error}")
    return 0 if not failures and not kill_failures and not now else 1


if __name__ == "__main__":
    sys.exit(main())
