"""Content-keyed caching and stage error reporting for topiceq's Prefect tasks.

A task made with `stage_task` is recomputed only when something it depends on changed:

* the *content* of every `pathlib.Path` argument (a file's bytes, or a folder's relative paths and bytes),
* every other argument (config dataclasses by their fields, numbers, strings, lists, dicts),
* the source of the task function and of the stage modules it wraps (`pipeline.ingest`, ...) with every
  repository module they import, so editing a stage's code invalidates its results (and only its own).

Output arguments (`outputs=("out_dir",)`) take part by their path only (their content is what the task
produces). When the task finishes it writes a marker `.topiceq-task.json` holding its key and the outputs'
content hash into each output (next to it, for a file); a later run whose outputs are missing, edited, or
carry another key (a run that crashed half-way through writing them) forgets the stale record and recomputes. Results are persisted by
Prefect in the flow's result storage (`RUNDIR/.prefect-results`), so a new process finds them: that is how
a second run with nothing changed is fast and how a crashed run resumes from the last completed task.

Failures: the task body's exception is re-raised as `StageFailed`, whose message names the stage and its
input (`stage 'ingest' failed on input /path/corpus: ...`). Only transient failures (`TransientError`, I/O
errors other than a missing file, time-outs, broken connections) are retried; bad input never is.
"""
from __future__ import annotations

import contextvars
import dataclasses
import functools
import hashlib
import inspect
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from prefect import task
from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext
from prefect.filesystems import LocalFileSystem

REPO_ROOT = Path(__file__).resolve().parents[1]
MARKER_NAME = ".topiceq-task.json"
# Bump to invalidate every cached result after a change in how keys are made.
KEY_VERSION = "topiceq-cache-v1"
# Names never part of a folder's content: our own markers, Python byte code, editor/OS debris.
IGNORED_NAMES = {MARKER_NAME, ".topiceq-started.json", "__pycache__", ".DS_Store"}


# --------------------------------------------------------------------------------------------------- hashing
_hash_memo: dict[tuple, str] = {}
_hash_lock = threading.Lock()


def _file_digest(path: Path, st: os.stat_result) -> str:
    # Memoised by (path, size, mtime, inode): the cache key is computed by Prefect and again by the task
    # body, and a corpus folder is hashed by several tasks of one run.
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

    Symbolic links are followed; markers and `__pycache__` are left out. A missing path is a
    FileNotFoundError that names it.
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
            if name in IGNORED_NAMES or name.endswith(".pyc"):
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
    import ast

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


CODE_PACKAGES = ("pipeline", "topicrnn", "flows")


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


def fingerprint(value: Any) -> Any:
    """A JSON-able stand-in for a task argument: Paths by content, dataclasses by fields, the rest by value."""
    if isinstance(value, Path):
        return {"path-content": content_hash(value)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"dataclass": f"{type(value).__module__}.{type(value).__qualname__}",
                "fields": fingerprint(dataclasses.asdict(value))}
    if isinstance(value, dict):
        return {"dict": [[fingerprint(k), fingerprint(v)] for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))]}
    if isinstance(value, (list, tuple)):
        return {"seq": [fingerprint(v) for v in value]}
    if isinstance(value, (set, frozenset)):
        return {"set": sorted(json.dumps(fingerprint(v), sort_keys=True) for v in value)}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot make a cache key from a {type(value).__name__}; pass paths, numbers, strings, "
                    "dataclasses or containers of them")


def task_key(stage: str, source: str, arguments: dict[str, Any], outputs: Iterable[str],
             code: tuple[str, ...]) -> str:
    """The cache key of one call of a stage task: stage, code, inputs by content, outputs by path."""
    outputs = set(outputs)
    payload = {
        "version": KEY_VERSION,
        "stage": stage,
        "source": hashlib.blake2b(source.encode(), digest_size=20).hexdigest(),
        "code": code_hash(tuple(code)) if code else None,
        "inputs": {name: fingerprint(value) for name, value in sorted(arguments.items()) if name not in outputs},
        "outputs": {name: str(Path(arguments[name]).resolve()) if arguments.get(name) is not None else None
                    for name in sorted(outputs)},
    }
    return stage + "-" + hashlib.blake2b(json.dumps(payload, sort_keys=True).encode(), digest_size=20).hexdigest()


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
        marker = marker_path(value)
        try:
            recorded = json.loads(marker.read_text())
            if recorded["key"] != key or recorded["content"] != content_hash(value):
                return False
        except (OSError, ValueError, KeyError):  # no marker, no output, or an unreadable one
            return False
    return True


def write_markers(arguments: dict[str, Any], outputs: Iterable[str], key: str, stage: str) -> None:
    for name in outputs:
        value = arguments.get(name)
        if value is None or not Path(value).exists():
            continue
        tmp = marker_path(value).with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, "stage": stage, "content": content_hash(value),
                                   "finished": time.time()}))
        os.replace(tmp, marker_path(value))


def _forget(task_ctx: TaskRunContext, key: str) -> None:
    """Delete a persisted record whose outputs are gone, so that Prefect recomputes instead of reusing it."""
    store = getattr(task_ctx, "result_store", None)
    for storage in (getattr(store, "metadata_storage", None), getattr(store, "result_storage", None)):
        if isinstance(storage, LocalFileSystem):
            base = Path(storage.basepath or ".").expanduser()
            (base / key).unlink(missing_ok=True)


@dataclass
class ContentCache(CachePolicy):
    """Prefect cache policy: the key of `task_key`, valid only while the outputs carry its marker."""

    stage: str = ""
    source: str = ""
    outputs: tuple[str, ...] = ()
    code: tuple[str, ...] = ()

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> str | None:
        key = task_key(self.stage, self.source, inputs, self.outputs, self.code)
        if self.outputs and not outputs_complete(inputs, self.outputs, key):
            _forget(task_ctx, key)
        return key


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
_current_key: contextvars.ContextVar[str | None] = contextvars.ContextVar("topiceq_stage_key", default=None)


def current_key() -> str | None:
    """Inside a stage task's body: its cache key (e.g. to resume a crashed training of the same key only)."""
    return _current_key.get()


def _call_with_key(key: str, fn: Callable, args: tuple, kwargs: dict) -> Any:
    # A module-level helper: the task wrapper below must not refer to the ContextVar itself, because Dask
    # ships the wrapper to its workers with cloudpickle, which cannot pickle a ContextVar.
    token = _current_key.set(key)
    try:
        return fn(*args, **kwargs)
    finally:
        _current_key.reset(token)


def started_with_same_key(out_dir: str | os.PathLike) -> bool:
    """True when a previous attempt of this very task (same key) started writing into out_dir and did not
    finish: its partial outputs (e.g. a training's last.pt) can be resumed from. Records this attempt."""
    key = current_key()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = out / ".topiceq-started.json"
    try:
        same = json.loads(started.read_text()).get("key") == key and key is not None
    except (OSError, ValueError):
        same = False
    started.write_text(json.dumps({"key": key, "started": time.time()}))
    return same

def stage_task(stage: str, *, input_arg: str, outputs: tuple[str, ...] = ("out_dir",),
               code: tuple[str, ...] = (), retries: int = 2, retry_delay_seconds: float = 3.0,
               cache: bool = True, **task_options: Any) -> Callable[[Callable], Any]:
    """Make a Prefect task of a thin stage function.

    `input_arg` names the argument that failure messages quote; `outputs` the arguments that are paths the
    stage writes; `code` the modules (e.g. "pipeline.ingest") whose source, with their imports, is part of
    the key. Extra keyword arguments go to
    `prefect.task` (e.g. `tags`, `timeout_seconds`).
    """

    def decorate(fn: Callable) -> Any:
        signature = inspect.signature(fn)
        try:
            source = inspect.getsource(fn)
        except OSError:  # defined interactively: fall back to the byte code
            source = fn.__code__.co_code.hex()

        @functools.wraps(fn)
        def run_stage(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            arguments = dict(bound.arguments)
            try:
                key = task_key(stage, source, arguments, outputs, code)
                result = _call_with_key(key, fn, args, kwargs)
            except StageFailed:
                raise
            except Exception as exc:
                raise StageFailed(stage, describe_input(arguments.get(input_arg)), f"{type(exc).__name__}: {exc}",
                                  transient=is_transient(exc)) from exc
            if cache and outputs:
                write_markers(arguments, outputs, key, stage)
            return result

        options: dict[str, Any] = dict(name=stage, retries=retries, retry_delay_seconds=retry_delay_seconds,
                                       retry_condition_fn=_retry_only_transient, log_prints=True)
        if cache:
            options.update(cache_policy=ContentCache(stage=stage, source=source, outputs=tuple(outputs),
                                                     code=tuple(code)),
                           persist_result=True)
        else:
            from prefect.cache_policies import NO_CACHE

            options.update(cache_policy=NO_CACHE, persist_result=False)
        options.update(task_options)
        return task(**options)(run_stage)

    return decorate
