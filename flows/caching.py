"""Caching, crash safety and stage error reporting for topiceq's Prefect tasks.

A task made with `stage_task` is recomputed only when something it depends on changed. Its cache policy is
Prefect's own, composed: `StageCache(PathContent(...) + RepoCode(...) + INPUTS + TASK_SOURCE)`.
Prefect gives the value of every argument (INPUTS) and the task's source (TASK_SOURCE); this module adds
what Prefect lacks:

* `PathContent`: the *content* of every `pathlib.Path` argument that is an input (a file's bytes, a folder's
  relative paths and bytes); output arguments (`outputs=("out_dir",)`) take part by their path only, through
  INPUTS, since their content is what the task produces;
* `RepoCode`: the source of the stage modules a task wraps (`pipeline.ingest`, ...) and of every repository
  module they import, so editing a stage's code invalidates its results (and only its own);
* `StageCache`: a record is valid only while the task's outputs carry its completion marker.

Crash safety (kill -9 at any moment, then run again): before a task writes its outputs it removes their
markers, and when it has finished it writes into each output (next to it, for a file) a marker
`.topiceq-task.json` holding its key and the outputs' content hash, renamed into place last. An output is
finished exactly when its marker carries the current key and its content still has that hash; anything
else (missing, half-written, edited by hand, written under another key) makes the task run again. Results
are persisted in the run folder (`RUNDIR/.prefect-results`) by `RunResultStorage`, which writes every record
under a temporary name and renames it, sets a damaged record aside, and turns a write that fails (read-only,
disk full) into a warning: a cache never fails a run. Warnings reach the run's report (`take_warnings`).

Locks: a run folder is used by one run at a time (flows.launch holds an exclusive flock for the whole run),
so Prefect's record locks (`isolation_level=SERIALIZABLE` with a `FileSystemLockManager`) would add nothing;
they would also outlive a run killed with SIGKILL (their files carry no expiry unless given one), where the
kernel drops a flock by itself.

Failures: the task body's exception is re-raised as `StageFailed`, whose message names the stage and its
input (`stage 'ingest' failed on input /path/corpus: ...`). Only transient failures (`TransientError`, I/O
errors other than a missing file, time-outs, broken connections) are retried; bad input never is.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import json
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from prefect import task
from prefect.cache_policies import INPUTS, NO_CACHE, TASK_SOURCE, CachePolicy
from prefect.context import TaskRunContext
from prefect.filesystems import LocalFileSystem
from prefect.results import ResultRecord
from prefect.transactions import get_transaction

REPO_ROOT = Path(__file__).resolve().parents[1]
MARKER_NAME = ".topiceq-task.json"
STARTED_NAME = ".topiceq-started.json"
# Names never part of a folder's content: our own markers, Python byte code, editor/OS debris.
IGNORED_NAMES = {MARKER_NAME, STARTED_NAME, "__pycache__", ".DS_Store"}
CODE_PACKAGES = ("pipeline", "topicrnn", "flows")

logger = logging.getLogger("topiceq.cache")


# -------------------------------------------------------------------------------------------------- warnings
_warnings: list[str] = []
_warnings_lock = threading.Lock()


def note_warning(message: str) -> None:
    """A cache in trouble: the run goes on without it; the message goes to the log now and the report later."""
    with _warnings_lock:
        if message not in _warnings:
            _warnings.append(message)
    logger.warning(message)


def take_warnings() -> list[str]:
    """The warnings noted in this process since the last call (the flow puts them into its report)."""
    with _warnings_lock:
        out = list(_warnings)
        _warnings.clear()
    return out


# --------------------------------------------------------------------------------------------------- hashing
_hash_memo: dict[tuple, str] = {}
_hash_lock = threading.Lock()


def _file_digest(path: Path, st: os.stat_result) -> str:
    # Memoised by (path, size, mtime, inode): the cache key is computed by Prefect for every task, and a
    # corpus folder is hashed by several tasks of one run.
    memo_key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
    with _hash_lock:
        hit = _hash_memo.get(memo_key)
    if hit is not None:
        return hit
    h = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    with _hash_lock:
        _hash_memo[memo_key] = digest
    return digest


def content_hash(path: str | os.PathLike) -> str:
    """A digest of a file's bytes, or of a folder's relative file paths and their bytes (recursive, sorted).

    Symbolic links are followed; markers, `__pycache__` and half-written `*.part` files are left out. A missing
    path is a FileNotFoundError that names it.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_file():
        return "f:" + _file_digest(path, path.stat())
    h = hashlib.blake2b(digest_size=20)
    for root, dirs, files in os.walk(path, followlinks=True):
        dirs[:] = sorted(d for d in dirs if d not in IGNORED_NAMES)
        for name in sorted(files):
            if name in IGNORED_NAMES or name.endswith((".pyc", ".part")):  # .part: a write a kill cut short
                continue
            full = Path(root, name)
            try:
                st = full.stat()
            except FileNotFoundError:  # a dangling link is not content
                continue
            rel = full.relative_to(path).as_posix()
            h.update(rel.encode("utf-8", "surrogateescape") + b"\0" + _file_digest(full, st).encode() + b"\n")
    return "d:" + h.hexdigest()


def _module_file(module: str) -> Path | None:
    base = REPO_ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(module: str, file: Path) -> set[str]:
    """Repository modules that `module` imports anywhere in its source (also inside functions)."""
    tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
    package = module if file.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return {m for m in found if m.split(".")[0] in CODE_PACKAGES and _module_file(m) is not None}


# ast.parse is not thread-safe in CPython 3.11 ("AST constructor recursion depth mismatch" when two task
# threads compute keys at once), so closures are computed under a lock and remembered.
_closure_lock = threading.Lock()


def code_closure(modules: tuple[str, ...]) -> tuple[Path, ...]:
    """Source files of `modules` and of every repository module they import, transitively."""
    with _closure_lock:
        return _code_closure(modules)


@functools.lru_cache(maxsize=None)
def _code_closure(modules: tuple[str, ...]) -> tuple[Path, ...]:
    seen: dict[str, Path] = {}
    todo = list(modules)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        file = _module_file(module)
        if file is None:
            raise FileNotFoundError(f"module {module} has no source file under {REPO_ROOT}")
        seen[module] = file
        todo.extend(_imported_modules(module, file) - set(seen))
    return tuple(sorted(set(seen.values())))


def code_hash(modules: tuple[str, ...]) -> str:
    """A digest of the source of `modules` (e.g. `pipeline.ingest`) and of the repository modules they
    import: editing a stage's code invalidates that stage's results, editing another stage's does not."""
    h = hashlib.blake2b(digest_size=20)
    for file in code_closure(tuple(sorted(modules))):
        h.update(file.relative_to(REPO_ROOT).as_posix().encode() + b"\0" + _file_digest(file, file.stat()).encode())
    return h.hexdigest()


def _paths_in(value: Any) -> list[Path]:
    if isinstance(value, Path):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple, set, frozenset)):
        return [p for v in value for p in _paths_in(v)]
    return []


# ---------------------------------------------------------------------------------------- cache policies
@dataclass
class PathContent(CachePolicy):
    """Key part: the content of every Path among the task's inputs (also inside lists and dicts), except the
    arguments named in `exclude` (the outputs). A missing path is a part too: the task body then reports it."""

    exclude: tuple[str, ...] = ()

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> str | None:
        parts = {}
        for name in sorted(inputs or {}):
            if name in self.exclude:
                continue
            paths = _paths_in(inputs[name])
            if paths:
                parts[name] = [content_hash(p) if p.exists() else f"missing:{p}" for p in paths]
        if not parts:
            return None
        return hashlib.blake2b(json.dumps(parts, sort_keys=True).encode(), digest_size=20).hexdigest()


@dataclass
class RepoCode(CachePolicy):
    """Key part: the source of `modules` and of the repository modules they import (see code_hash)."""

    modules: tuple[str, ...] = ()

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> str | None:
        return code_hash(self.modules) if self.modules else None


@dataclass
class StageCache(CachePolicy):
    """The key of `key_parts`, prefixed with the stage's name; a persisted record is reused only while the
    outputs named in `outputs` carry the completion marker of this very key, and a damaged one is set aside."""

    stage: str = ""
    key_parts: CachePolicy = field(default_factory=lambda: INPUTS + TASK_SOURCE)
    outputs: tuple[str, ...] = ()

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> str | None:
        key = self.key_parts.compute_key(task_ctx=task_ctx, inputs=inputs, flow_parameters=flow_parameters,
                                         **kwargs)
        if key is None:
            return None
        key = f"{self.stage}-{key}"
        storage = getattr(getattr(task_ctx, "result_store", None), "result_storage", None)
        if isinstance(storage, LocalFileSystem):  # ours, or Prefect's default (deployments)
            record = storage._resolve_path(key)  # where Prefect's LocalFileSystem keeps the record of KEY
            if self.outputs and not outputs_complete(inputs, self.outputs, key):
                forget_record(record)
            else:
                set_aside_if_damaged(record)
        return key


def stage_policy(stage: str, outputs: tuple[str, ...], code: tuple[str, ...]) -> StageCache:
    """Prefect's INPUTS and TASK_SOURCE with the parts Prefect lacks, valid while the outputs are intact."""
    parts = PathContent(exclude=tuple(outputs)) + INPUTS + TASK_SOURCE
    if code:
        parts = parts + RepoCode(modules=tuple(code))
    return StageCache(stage=stage, key_parts=parts, outputs=tuple(outputs))


# ----------------------------------------------------------------------------------------- result storage
class RunResultStorage(LocalFileSystem):
    """Prefect's local result storage for a run folder, safe against a crash and a disk in trouble.

    Prefect's LocalFileSystem writes a record in place, so a run killed mid-write leaves a torn record.
    Here a record is written under a temporary name and renamed; a write that fails (read-only, disk full)
    is a warning (the result is not kept: the next run computes it again), never a failed task."""

    _block_type_name = "topiceq run result storage"

    def write_path(self, path: str, content: bytes, _sync: bool | None = None) -> str:
        target = self._resolve_path(path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(target, content)
        except OSError as exc:
            note_warning(f"could not keep a task result in {target.parent} ({exc}); the next run computes "
                         "it again")
        return str(target)

    async def awrite_path(self, path: str, content: bytes) -> str:
        return self.write_path(path, content)


def forget_record(path: Path) -> None:
    """Remove a task record whose outputs are gone or stale, so that Prefect computes the task again."""
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        note_warning(f"could not remove the stale task result {path} ({exc})")


def set_aside_if_damaged(path: Path) -> None:
    """A record that cannot be read back is renamed `KEY.damaged-<time>` (Prefect then computes it again)."""
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        return
    except OSError as exc:
        note_warning(f"could not read the task result {path} ({exc}); computing it again")
        return
    try:
        ResultRecord.deserialize(content)
    except Exception as exc:  # any failure to parse or unpickle: the record is of no use
        aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        try:
            os.replace(path, aside)
        except OSError:
            pass
        note_warning(f"the task result {path} was damaged ({type(exc).__name__}); set aside as {aside.name}, "
                     "computing it again")


# ------------------------------------------------------------------------------------- markers, atomic files
def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write DATA to PATH under a temporary name in the same folder, then rename: readers see all or none."""
    path = Path(path)
    part = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
    try:
        part.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    return path


def marker_path(output: str | os.PathLike) -> Path:
    output = Path(output)
    return output / MARKER_NAME if output.is_dir() else output.with_name(output.name + MARKER_NAME)


def outputs_complete(arguments: dict[str, Any], outputs: Iterable[str], key: str) -> bool:
    """True when every output exists, carries the marker of this very key and still has the content that
    the task wrote (an output deleted or edited by hand is recomputed)."""
    for name in outputs:
        value = arguments.get(name)
        if value is None:
            continue
        try:
            recorded = json.loads(marker_path(value).read_text())
            if recorded["key"] != key or recorded["content"] != content_hash(value):
                return False
        except (OSError, ValueError, KeyError, TypeError):  # no marker, no output, or an unreadable one
            return False
    return True


def clear_markers(arguments: dict[str, Any], outputs: Iterable[str]) -> None:
    """Before a task writes its outputs: they are unfinished until it has written its markers again."""
    for name in outputs:
        value = arguments.get(name)
        if value is not None:
            marker_path(value).unlink(missing_ok=True)


def write_markers(arguments: dict[str, Any], outputs: Iterable[str], key: str, stage: str) -> None:
    for name in outputs:
        value = arguments.get(name)
        if value is None or not Path(value).exists():
            continue
        write_atomic(marker_path(value), json.dumps({"key": key, "stage": stage, "content": content_hash(value),
                                                     "finished": time.time()}))


# ---------------------------------------------------------------------------------------------- failures
class TransientError(RuntimeError):
    """Raised by a task for a failure worth retrying (a busy resource, a lost worker), never for bad input."""


class StageFailed(RuntimeError):
    """A stage task failed; the message names the stage and its input, then the cause."""

    def __init__(self, stage: str, input_desc: str, cause: str, transient: bool = False):
        self.stage, self.input_desc, self.cause, self.transient = stage, input_desc, cause, transient
        super().__init__(f"stage '{stage}' failed on input {input_desc}: {cause}")

    def __reduce__(self):  # picklable across Dask workers
        return (StageFailed, (self.stage, self.input_desc, self.cause, self.transient))


def is_transient(exc: BaseException) -> bool:
    """Worth a retry: resource trouble, not bad input."""
    if isinstance(exc, StageFailed):
        return exc.transient
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)):
        return False
    if isinstance(exc, (TimeoutError, ConnectionError, BlockingIOError, InterruptedError)):
        return True
    if isinstance(exc, OSError):  # e.g. ENOSPC, EMFILE, a flaky network file system
        return True
    return type(exc).__name__ in {"CommClosedError", "KilledWorker"}


def _retry_only_transient(task_obj, task_run, state) -> bool:
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:  # the result could not be read back: do not retry blindly
        return False
    return isinstance(exc, BaseException) and is_transient(exc)


def describe_input(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        shown = ", ".join(str(v) for v in value[:3])
        return f"[{shown}{', ...' if len(value) > 3 else ''}] ({len(value)} items)" if len(value) > 3 else f"[{shown}]"
    return str(value)


# ---------------------------------------------------------------------------------------------- decorator
def current_key() -> str | None:
    """Inside a stage task's body: its cache key (e.g. to resume a crashed training of the same key only)."""
    txn = get_transaction()
    return getattr(txn, "key", None) if txn is not None else None


def started_with_same_key(out_dir: str | os.PathLike) -> bool:
    """True when a previous attempt of this very task (same key) started writing into out_dir and did not
    finish: its partial outputs (e.g. a training's last.pt) can be resumed from. Records this attempt."""
    key = current_key()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = out / STARTED_NAME
    try:
        same = json.loads(started.read_text()).get("key") == key and key is not None
    except (OSError, ValueError, AttributeError):
        same = False
    write_atomic(started, json.dumps({"key": key, "started": time.time()}))
    return same


def stage_task(stage: str, *, input_arg: str, outputs: tuple[str, ...] = ("out_dir",),
               code: tuple[str, ...] = (), retries: int = 2, retry_delay_seconds: float = 3.0,
               cache: bool = True, **task_options: Any) -> Callable[[Callable], Any]:
    """Make a Prefect task of a thin stage function.

    `input_arg` names the argument that failure messages quote; `outputs` the arguments that are paths the
    stage writes; `code` the modules (e.g. "pipeline.ingest") whose source, with their imports, is part of
    the key. Extra keyword arguments go to `prefect.task` (e.g. `tags`, `timeout_seconds`).
    """

    def decorate(fn: Callable) -> Any:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def run_stage(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            arguments = dict(bound.arguments)
            key = current_key() if cache else None
            try:
                clear_markers(arguments, outputs)
                result = fn(*args, **kwargs)
                if key is not None:
                    write_markers(arguments, outputs, key, stage)  # last: the outputs are finished now
            except StageFailed:
                raise
            except Exception as exc:
                raise StageFailed(stage, describe_input(arguments.get(input_arg)), f"{type(exc).__name__}: {exc}",
                                  transient=is_transient(exc)) from exc
            return result

        options: dict[str, Any] = dict(name=stage, retries=retries, retry_delay_seconds=retry_delay_seconds,
                                       retry_condition_fn=_retry_only_transient, log_prints=True)
        if cache:
            options.update(cache_policy=stage_policy(stage, tuple(outputs), tuple(code)), persist_result=True)
        else:
            options.update(cache_policy=NO_CACHE, persist_result=False)
        options.update(task_options)
        return task(**options)(run_stage)

    return decorate
