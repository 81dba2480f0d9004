"""Run a topiceq flow in a run folder: one run at a time per folder, the folder's own result store (the
cache), and the chosen task runner.

Two runs on the same folder would interleave their writes (outputs, markers, Prefect's records and its
database), so a run holds an exclusive `flock` on `RUNDIR/.topiceq-run.lock` from start to end. A second run
on the same folder does not wait: it stops at once with a message that names the run holding the folder
(waiting could mean an hour of training behind it, and the user may as well pass another --out). The
kernel drops the lock when the holder exits in any way, kill -9 included, so a crashed run never leaves the
folder locked. Runs on different folders share only the caches built for sharing (the compile check's).

A run killed with SIGKILL cannot stop the embedded Prefect server it started (a child process that then
lives on, orphaned, holding ~150 MB and the run folder's Prefect database). The next run on the folder, once
it holds the lock, stops such servers: processes whose command line is Prefect's server and whose
PREFECT_HOME is this folder's own (`RUNDIR/.prefect`, see flows.settings), which no live run can own while
the lock is held. (Recording the server's pid would not do: a run killed while its server starts up has not
learnt it yet.)
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

RESULTS_DIRNAME = ".prefect-results"
LOCK_NAME = ".topiceq-run.lock"


class RunFolderBusy(RuntimeError):
    """Another run holds the run folder."""


def results_dir(run_dir: str | Path) -> Path:
    """Where a run folder keeps Prefect's persisted task results and cache records."""
    return Path(run_dir).resolve() / RESULTS_DIRNAME


@contextmanager
def hold_run_folder(run_dir: str | Path) -> Iterator[Path]:
    """Exclusive use of RUN_DIR (created if needed) for the duration of the block, or RunFolderBusy."""
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunFolderBusy(f"{run_dir} is in use by another topiceq run ({_describe_holder(fd)}); wait "
                                "for it to finish, or pass another --out") from None
        stop_orphaned_servers(run_dir)
        _write_holder(fd, {"pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                           "command": " ".join(sys.argv)})
        yield run_dir
    finally:
        os.close(fd)  # releases the flock; the file stays (removing it would race with a run taking it)


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        holder = json.loads(os.pread(fd, 65536, 0).decode())
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_holder(fd: int, holder: dict[str, Any]) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(holder).encode(), 0)


def _describe_holder(fd: int) -> str:
    holder = _read_holder(fd)
    if "pid" not in holder:
        return "its details are being written"
    return f"pid {holder['pid']}, started {holder.get('started', '?')}"


SERVER_COMMAND = b"prefect.server.api.server:create_app"


def servers_of(run_dir: Path) -> list[int]:
    """Pids of Prefect servers (this user's) whose PREFECT_HOME is RUN_DIR's own (Linux /proc; none elsewhere)."""
    from flows.settings import RUN_PREFECT_HOME

    home = f"PREFECT_HOME={Path(run_dir).resolve() / RUN_PREFECT_HOME}".encode()
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if (SERVER_COMMAND in (entry / "cmdline").read_bytes()
                    and home in (entry / "environ").read_bytes().split(b"\0")):
                found.append(int(entry.name))
        except (OSError, ValueError):
            continue  # gone, or another user's
    return found


def stop_orphaned_servers(run_dir: Path) -> None:
    """SIGTERM to the servers left by killed runs on RUN_DIR (call with the folder's lock held)."""
    for pid in servers_of(run_dir):
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass


# Exceptions that mean bad input, not a bug: the run stops with their one-line message (topiceq.cli), so
# Prefect's log of the failed task and flow shows that line without a traceback.
INPUT_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


class _InputErrorsWithoutTraceback(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        cause = getattr(exc, "__cause__", None) if type(exc).__name__ == "StageFailed" else exc
        if isinstance(cause, INPUT_ERRORS) and not os.environ.get("TOPICEQ_DEBUG"):
            record.exc_info, record.exc_text = None, None
        return True


_QUIET = _InputErrorsWithoutTraceback()


@contextmanager
def input_errors_without_traceback() -> Iterator[None]:
    """While a flow runs: Prefect logs a failed task or flow run with its traceback; for bad input that
    traceback says nothing the message does not (TOPICEQ_DEBUG=1 keeps it)."""
    loggers = [logging.getLogger(name) for name in ("prefect.flow_runs", "prefect.task_runs")]
    for logger in loggers:
        logger.addFilter(_QUIET)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(_QUIET)


def configured(flow_obj: Any, run_dir: str | Path, *, task_runner: str = "threads", dask_address: str | None = None,
               workers: int | None = None) -> Any:
    """`flow_obj` with its results (and so its cache) kept in `run_dir` and the given task runner."""
    from flows.caching import RunResultStorage
    from flows.runners import make_task_runner

    store = results_dir(run_dir)
    store.mkdir(parents=True, exist_ok=True)
    # Prefect takes a storage block only once it is saved on the server (a block document per run folder).
    storage = RunResultStorage(basepath=str(store))
    storage.save("run-" + hashlib.blake2b(str(store).encode(), digest_size=8).hexdigest(), overwrite=True)
    return flow_obj.with_options(result_storage=storage, persist_result=True,
                                 task_runner=make_task_runner(task_runner, dask_address=dask_address,
                                                              workers=workers))


def run_flow(flow_obj: Any, run_dir: str | Path, *, task_runner: str = "threads", dask_address: str | None = None,
             workers: int | None = None, **parameters: Any) -> Any:
    """Call the flow with `out=run_dir` and `parameters`, holding the run folder; a failed task's StageFailed
    propagates unchanged."""
    with hold_run_folder(run_dir) as held:
        runnable = configured(flow_obj, held, task_runner=task_runner, dask_address=dask_address,
                              workers=workers)
        with input_errors_without_traceback():
            return runnable(out=str(held), **parameters)
