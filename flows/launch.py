"""Run a topiceq flow in a run folder: the folder's own result store (the cache) and the chosen task runner."""
from __future__ import annotations

from pathlib import Path
from typing import Any

RESULTS_DIRNAME = ".prefect-results"


def results_dir(run_dir: str | Path) -> Path:
    """Where a run folder keeps Prefect's persisted task results and cache records."""
    return Path(run_dir).resolve() / RESULTS_DIRNAME


def configured(flow_obj: Any, run_dir: str | Path, *, task_runner: str = "threads", dask_address: str | None = None,
               workers: int | None = None) -> Any:
    """`flow_obj` with its results (and so its cache) kept in `run_dir` and the given task runner."""
    from flows.runners import make_task_runner

    store = results_dir(run_dir)
    store.mkdir(parents=True, exist_ok=True)
    return flow_obj.with_options(result_storage=store, persist_result=True,
                                 task_runner=make_task_runner(task_runner, dask_address=dask_address,
                                                              workers=workers))


def run_flow(flow_obj: Any, run_dir: str | Path, *, task_runner: str = "threads", dask_address: str | None = None,
             workers: int | None = None, **parameters: Any) -> Any:
    """Call the flow with `out=run_dir` and `parameters`; a failed task's StageFailed propagates unchanged."""
    runnable = configured(flow_obj, run_dir, task_runner=task_runner, dask_address=dask_address, workers=workers)
    return runnable(out=str(Path(run_dir).resolve()), **parameters)
