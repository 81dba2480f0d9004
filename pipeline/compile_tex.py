"""Running pdflatex in a sandbox and reading its log: the pieces shared by the one-document rule and the batch.

Sandbox (docs: ../shared/docs/compile-rule.md, "with a stricter sandbox"): `openin_any=p openout_any=p`,
`-no-shell-escape`, a fresh temporary folder, no font generation (`mktex*` would write outside the folder),
a wall-clock timeout that kills the whole process group, and `ulimit` caps on address space, file size and
core dumps (set by `sh` before `exec`, which is safe from threads, unlike `preexec_fn`).
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import select
import signal
import subprocess
import threading
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator


@dataclass
class SandboxConfig:
    memory_mb: int = 2048  # address-space cap per pdflatex; a run needs about 150 MB
    file_size_mb: int = 128  # largest file a run may write (log, pdf, anything \openout'd)


@dataclass
class TexResult:
    returncode: int | None  # None: killed at the timeout
    seconds: float
    timed_out: bool


class RunCounter:
    """How many pdflatex processes this module started (tests use it to see a cache hit run nothing)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.runs = 0

    def add(self) -> None:
        with self._lock:
            self.runs += 1


PDFLATEX_RUNS = RunCounter()


def pdflatex_path() -> str:
    path = shutil.which("pdflatex")
    if path is None:
        raise RuntimeError("pdflatex not found: install TeX Live, e.g. `sudo apt-get install texlive-latex-base "
                           "texlive-latex-recommended texlive-fonts-recommended` on Debian/Ubuntu, or `sudo make "
                           "setup` in the repository")
    return path


_SCRATCH: list[str | None] = []
STALE_SCRATCH_S = 3600.0  # a run lasts seconds; a folder this old was left by a killed process


def scratch_root() -> str | None:
    """Parent of the temporary folders the runs work in: /dev/shm (memory) where it is a writable folder, else
    the system default (None). A batch writes one small file per equation; on this machine's disk creating a
    file costs ~0.9 ms, in /dev/shm ~0.02 ms. Only for runs of batch-safe equations, which cannot open files for
    writing (\\openout, \\write are not on the reviewed list): memory is not filled by a hostile equation.
    The first call also removes this user's scratch folders that a killed process left, there and in the
    system's temporary folder."""
    if not _SCRATCH:
        root = "/dev/shm"
        usable = os.path.isdir(root) and os.access(root, os.W_OK | os.X_OK)
        _SCRATCH.append(root if usable else None)
        for folder in ([root] if usable else []) + [tempfile.gettempdir()]:
            _remove_stale_scratch(Path(folder))
    return _SCRATCH[0]


def _remove_stale_scratch(root: Path) -> None:
    now = time.time()
    try:
        entries = list(root.glob("teq-*"))
    except OSError:
        return
    for entry in entries:
        try:
            st = entry.lstat()
            if entry.is_dir() and st.st_uid == os.getuid() and now - st.st_mtime > STALE_SCRATCH_S:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            continue


@contextmanager
def scratch_folder(prefix: str, files: dict[str, bytes]) -> Iterator[Path]:
    """A temporary folder holding FILES, in memory (scratch_root) when it has room, else on disk; removed
    after use. A full /dev/shm (shared by every process on the machine) costs speed, never a verdict."""
    roots = [scratch_root()] + ([None] if scratch_root() is not None else [])
    for n, root in enumerate(roots):
        tmp = None
        try:
            tmp = tempfile.TemporaryDirectory(prefix=prefix, dir=root)
            for name, content in files.items():
                (Path(tmp.name) / name).write_bytes(content)
        except OSError:
            if tmp is not None:
                tmp.cleanup()
            if n + 1 == len(roots):
                raise
            continue
        with tmp:
            yield Path(tmp.name)
        return


def sandbox_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("TEXINPUTS", "TEXMFOUTPUT", "TEXFORMATS", "shell_escape", "shell_escape_commands")}
    env.update(openin_any="p", openout_any="p", shell_escape="f", max_print_line="100000",
               MKTEXTFM="0", MKTEXPK="0", MKTEXMF="0", MKTEXTEX="0", MKTEXFMT="0", LC_ALL="C")
    return env


def run_tex(args: list[str], cwd: Path, timeout: float, config: SandboxConfig | None = None) -> TexResult:
    """Run `pdflatex ARGS` in CWD under the sandbox; never raises on TeX failure or timeout."""
    config = config or SandboxConfig()
    limits = (f"ulimit -v {config.memory_mb * 1024} && ulimit -f {config.file_size_mb * 1024} "
              f"&& ulimit -c 0 && exec \"$@\"")
    cmd = ["/bin/sh", "-c", limits, "sh", pdflatex_path(), *args]
    PDFLATEX_RUNS.add()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=sandbox_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    if not _wait_exit(proc, timeout):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        return TexResult(None, time.perf_counter() - start, True)
    rc = proc.wait()
    return TexResult(rc, time.perf_counter() - start, False)


def _wait_exit(proc: subprocess.Popen, timeout: float) -> bool:
    """Wait until PROC exits (True) or TIMEOUT seconds pass (False), without reaping it.

    `Popen.wait(timeout)` polls with sleeps of up to 50 ms, which adds ~25 ms to every run on average (a large
    share of a 100 ms pdflatex start); a pidfd becomes readable the moment the process exits."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        try:
            proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        poller = select.poll()  # not select.select: it fails for descriptors above 1023
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(max(0.0, timeout) * 1000.0))
    finally:
        os.close(fd)


def read_log(path: Path) -> list[str]:
    try:
        return path.read_bytes().decode("latin-1").splitlines()
    except FileNotFoundError:
        return []


_LAST_TOKEN = re.compile(r"(\\(?:[A-Za-z@]+|.))\s*$")


def is_error_line(line: str) -> bool:
    return line.startswith("!") and not line.startswith("!  ==>")


def error_text(lines: list[str], i: int) -> str:
    """The error at lines[i] as one line: TeX's message, plus the offending control sequence when undefined."""
    message = lines[i].strip()
    if message == "! Undefined control sequence.":
        for line in lines[i + 1:i + 4]:
            if line.strip():
                m = _LAST_TOKEN.search(line)
                if m:
                    message += " " + m.group(1)
                break
    return message


def first_error(lines: list[str]) -> str | None:
    for i, line in enumerate(lines):
        if is_error_line(line):
            return error_text(lines, i)
    return None


_ENGINE_ID: str | None = None


def engine_id() -> str:
    """Identifies the TeX installation (engine version and the installed LaTeX format), for cache keys."""
    global _ENGINE_ID
    if _ENGINE_ID is None:
        version = subprocess.run([pdflatex_path(), "--version"], capture_output=True, text=True,
                                 env=sandbox_env()).stdout.splitlines()[:1]
        fmt = subprocess.run(["kpsewhich", "-engine=pdftex", "pdflatex.fmt"], capture_output=True, text=True,
                             env=sandbox_env()).stdout.strip()
        stamp = ""
        if fmt:
            st = os.stat(fmt)
            stamp = f"{fmt}:{st.st_size}:{int(st.st_mtime)}"
        _ENGINE_ID = hashlib.sha256(("\n".join(version) + "\n" + stamp).encode()).hexdigest()[:16]
    return _ENGINE_ID
