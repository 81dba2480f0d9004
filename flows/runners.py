"""Task runner switch: threads on one machine, or a Dask cluster (local or remote) for scale-out.

With Dask, each task run executes in a Dask worker process: fan-out tasks (ingest shards, compile-check
batches) spread over the cluster's workers. Task arguments and results are paths and small records, so
workers must see the same file system as the flow (a laptop's LocalCluster, or a cluster with a shared
disk mounted at the same path); the cache (`RUNDIR/.prefect-results`) is on that disk too.
"""
from __future__ import annotations

import os
from typing import Any

TASK_RUNNERS = ("threads", "dask")


def make_task_runner(kind: str = "threads", *, dask_address: str | None = None, workers: int | None = None) -> Any:
    """A Prefect task runner.

    kind "threads": `ThreadPoolTaskRunner` with `workers` threads (default: the number of CPUs).
    kind "dask": `prefect_dask.DaskTaskRunner` on the cluster at `dask_address` (tcp://HOST:PORT), or, when
    none is given, a `LocalCluster` of `workers` single-threaded worker processes on 127.0.0.1 started for
    the flow run and closed after it.
    """
    workers = workers or os.cpu_count() or 2
    if kind == "threads":
        if dask_address:
            raise ValueError("--dask-address needs --task-runner dask")
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=workers)
    if kind == "dask":
        from prefect_dask import DaskTaskRunner

        if dask_address:
            if not dask_address.startswith(("tcp://", "tls://", "inproc://", "ucx://")):
                raise ValueError(f"--dask-address {dask_address!r} is not a Dask scheduler address: "
                                 "give it as tcp://HOST:PORT")
            return DaskTaskRunner(address=dask_address)
        return DaskTaskRunner(
            cluster_class="distributed.LocalCluster",
            cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                            "host": "127.0.0.1", "dashboard_address": None},
        )
    raise ValueError(f"unknown task runner {kind!r}: choose one of {', '.join(TASK_RUNNERS)}")


def dask_thread_count(task_runner: Any) -> int | None:
    """The number of task slots (worker threads, all workers together) of the Dask cluster behind
    `task_runner`, or None when it is not a `DaskTaskRunner` (e.g. threads)."""
    import sys

    module = sys.modules.get("prefect_dask.task_runners")  # not imported: it cannot be a DaskTaskRunner
    if module is None or not isinstance(task_runner, module.DaskTaskRunner):
        return None
    return sum(task_runner.client.nthreads().values()) or None
