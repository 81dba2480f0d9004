"""The compile check's caches, shared by every thread and process that checks equations: the verdict cache (one
sqlite file of verdicts and control-sequence meanings) and the preloaded formats (`FormatCache`, below).

Why it is built this way (issue 15: the first `make run` failed with `OperationalError: database is locked`):
every compile-check task opened its own connection and ran `PRAGMA journal_mode=WAL` on it. On a new file
that pragma first reads the file (a shared lock) and then rewrites its header (an exclusive lock). Two
connections doing that at once each hold the shared lock and each want the exclusive one: a deadlock, so
sqlite answers SQLITE_BUSY at once instead of calling the busy handler, and the busy timeout never applies.
The same holds for any deferred transaction that reads and then writes while another connection writes.

So here:
* the file is created, switched to WAL and given its tables once, under an exclusive `flock` on a side file
  (`verdicts.sqlite.lock`); a connection opened later finds the file in WAL mode and changes nothing;
* a cache object holds one connection, used under a lock by its threads (the cache costs microseconds next to
  pdflatex, so threads gain nothing from connections of their own), with a busy timeout for other processes;
* reads are single statements; every write is `BEGIN IMMEDIATE` (the write lock is taken first, where the
  busy timeout applies), so no transaction ever turns from a read into a write;
* a cache never fails a check: a file that is not a database (or is damaged) is set aside as
  `verdicts.sqlite.corrupt-<time>` and a new one is built; anything else (still locked after the timeout, a
  read-only folder, a full disk) turns the cache off for the rest of the call. Each case adds a warning to
  `warnings` (the caller puts it into its report) and prints it on stderr once.
"""
from __future__ import annotations

import fcntl
import gzip
import hashlib
import os
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, TypeVar

from pipeline.compile_tex import SandboxConfig, run_tex

T = TypeVar("T")

BUSY_TIMEOUT_S = 30.0  # another process's write takes milliseconds; this only matters on a starved machine
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, ok INTEGER, error TEXT, seconds REAL)",
    "CREATE TABLE IF NOT EXISTS meanings (pkey TEXT, name TEXT, meaning TEXT, PRIMARY KEY (pkey, name))",
)
# sqlite's primary result codes for a file that is not (or no longer) a sound database.
DAMAGED_CODES = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}


def is_damaged(exc: BaseException) -> bool:
    """True for sqlite's "file is not a database" and "database disk image is malformed"."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.DatabaseError) and code is not None and (code & 0xFF) in DAMAGED_CODES


def flock_exclusive(path: Path, timeout: float) -> int:
    """An open descriptor of PATH (created if needed) holding an exclusive flock; closing it releases the
    lock. TimeoutError after TIMEOUT seconds (a holder that hangs must not hang every check behind it)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise TimeoutError(f"{path} stayed locked for {timeout:g} s") from None
            time.sleep(0.01)
        except BaseException:
            os.close(fd)
            raise


def warn(warnings: list[str], message: str) -> None:
    """Record a cache warning for the caller's report and show it on stderr."""
    warnings.append(message)
    print(f"topiceq: warning: {message}", file=sys.stderr)


class VerdictCache:
    """sqlite file of verdicts and of control-sequence meanings (see the module's docstring)."""

    def __init__(self, cache_dir: Path, warnings: list[str] | None = None) -> None:
        self.dir = Path(cache_dir)
        self.path = self.dir / "verdicts.sqlite"
        self.warnings: list[str] = warnings if warnings is not None else []
        self.off: str | None = None  # why the cache is off (None: on)
        self._lock = threading.Lock()
        self._con: sqlite3.Connection | None = None
        self._inode: int | None = None
        self._set_aside = False
        with self._lock:
            self._guard(self._open, None)

    # ------------------------------------------------------------------------------------------ the file
    def _side_lock(self) -> int:
        """An exclusive flock held while the file is created, converted or set aside (released on close)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        return flock_exclusive(self.dir / "verdicts.sqlite.lock", BUSY_TIMEOUT_S)

    def _open(self) -> None:
        fd = self._side_lock()
        try:
            con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                  check_same_thread=False)
            try:
                # Reading the mode reads the header: a file that is not a database fails here.
                if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    con.execute("PRAGMA journal_mode=WAL")  # alone under the flock: no other upgrader
                for statement in SCHEMA:
                    con.execute(statement)
                self._inode = os.stat(self.path).st_ino
            except BaseException:
                con.close()
                raise
            self._con = con
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    def _set_damaged_file_aside(self, exc: BaseException) -> None:
        """Move a damaged file (and its -wal/-shm) aside and build a new one, once per cache object."""
        if self._con is not None:
            self._con.close()
            self._con = None
        fd = self._side_lock()
        try:
            try:
                current = os.stat(self.path).st_ino
            except FileNotFoundError:
                current = None
            # Another process may have replaced the file already: set aside only the one that failed here.
            if current is not None and (self._inode is None or current == self._inode):
                aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
                os.replace(self.path, aside)
                for suffix in ("-wal", "-shm"):
                    Path(str(self.path) + suffix).unlink(missing_ok=True)
                warn(self.warnings, f"the compile cache {self.path} was damaged ({exc}); set aside as "
                                    f"{aside.name} and rebuilt")
        finally:
            os.close(fd)
        self._open()

    def _guard(self, action: Callable[[], T], fallback: T) -> T:
        """Run ACTION on the file; on trouble, repair a damaged file once or turn the cache off (never raise).
        Call with self._lock held."""
        if self.off is not None:
            return fallback
        try:
            return action()
        except (sqlite3.Error, OSError) as exc:
            if is_damaged(exc) and not self._set_aside:
                self._set_aside = True
                try:
                    self._set_damaged_file_aside(exc)
                    return action()
                except (sqlite3.Error, OSError) as again:
                    exc = again
            self.off = f"{type(exc).__name__}: {exc}"
            warn(self.warnings, f"the compile cache {self.path} cannot be used ({self.off}); "
                                "checking without it")
            self.close_connection()
            return fallback

    def close_connection(self) -> None:
        if self._con is not None:
            try:
                self._con.close()
            except sqlite3.Error:
                pass
            self._con = None

    def close(self) -> None:
        with self._lock:
            self.close_connection()

    # ---------------------------------------------------------------------------------------- reads/writes
    def _select(self, sql: str, prefix: list, items: list[str]) -> list[tuple]:
        rows: list[tuple] = []
        for i in range(0, len(items), 500):
            chunk = items[i:i + 500]
            rows += self._con.execute(sql.format(",".join("?" * len(chunk))), [*prefix, *chunk]).fetchall()
        return rows

    def _write(self, sql: str, rows: list[tuple]) -> None:
        con = self._con
        con.execute("BEGIN IMMEDIATE")  # the write lock first: the busy timeout applies, no upgrade later
        try:
            con.executemany(sql, rows)
        except BaseException:
            try:
                con.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the transaction is gone already; the first error is the one to report
            raise
        con.execute("COMMIT")

    def get_verdicts(self, keys: list[str]) -> dict[str, tuple[bool, str | None, float]]:
        """(ok, error, seconds) of the KEYS that are in the file."""
        sql = "SELECT key, ok, error, seconds FROM verdicts WHERE key IN ({})"
        with self._lock:
            rows = self._guard(lambda: self._select(sql, [], keys), [])
        return {k: (bool(ok), err, sec) for k, ok, err, sec in rows}

    def put_verdicts(self, items: list[tuple[str, bool, str | None, float]]) -> None:
        rows = [(k, int(ok), err, sec) for k, ok, err, sec in items]
        with self._lock:
            self._guard(lambda: self._write("INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?, ?)", rows), None)

    def get_meanings(self, pkey: str, names: list[str]) -> dict[str, str | None]:
        sql = "SELECT name, meaning FROM meanings WHERE pkey = ? AND name IN ({})"
        with self._lock:
            return dict(self._guard(lambda: self._select(sql, [pkey], names), []))

    def put_meanings(self, pkey: str, meanings: dict[str, str | None]) -> None:
        rows = [(pkey, k, v) for k, v in meanings.items()]
        with self._lock:
            self._guard(lambda: self._write("INSERT OR REPLACE INTO meanings VALUES (?, ?, ?)", rows), None)


# ----------------------------------------------------------------------------------------- preloaded formats
def uncompressed_format(data: bytes) -> bytes:
    """The format as pdftex reads it. pdftex writes formats gzip-compressed and reads them through zlib's
    gzread, which returns the bytes of a file that is not gzip-compressed as they are: the decompressed file
    gives pdftex exactly the same bytes to undump, and a start from it skips ~100 ms of inflating 18 MB."""
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


FORMAT_LOCK_TIMEOUT_S = 300.0  # another process building a format takes seconds; minutes on a starved machine


class FormatCache:
    """A pdflatex format with the preamble preloaded (`pdflatex -ini "&pdflatex" ... \\dump`), one per preamble
    and engine, built once into the cache folder; None when the preamble cannot be dumped.

    Formats are built, checked and replaced under an exclusive flock on `formats/.lock`, so processes that
    share the folder build each one once. Next to each format, `NAME.sum` holds the digest of its bytes,
    written before the format is renamed into place; the first use in a process checks it, and a format whose
    bytes differ (a damaged file would make every verdict wrong) is set aside and built again. A folder that
    cannot be written (read-only, full) means no format: the checks start pdflatex the plain way (same
    verdicts, slower) and WARNINGS says why."""

    def __init__(self, cache_dir: Path, engine: str, config: SandboxConfig,
                 warnings: list[str] | None = None) -> None:
        self.dir = cache_dir / "formats"
        self.engine = engine
        self.config = config
        self.warnings: list[str] = warnings if warnings is not None else []
        self._lock = threading.Lock()
        self._known: dict[str, Path | None] = {}

    def standard(self) -> Path | None:
        """An uncompressed copy of pdflatex's own format (None when it cannot be found)."""
        with self._lock:
            if "" not in self._known:
                src = subprocess.run(["kpsewhich", "-engine=pdftex", "pdflatex.fmt"], capture_output=True,
                                     text=True).stdout.strip()
                # engine: version, format size and time
                self._known[""] = (self._ensure(f"pdflatex-{self.engine}-u.fmt",
                                                lambda: uncompressed_format(Path(src).read_bytes()))
                                   if src else None)
            return self._known[""]

    def get(self, preamble: str) -> Path | None:
        key = hashlib.sha256((self.engine + "\0" + preamble).encode()).hexdigest()[:20]
        with self._lock:
            if key not in self._known:
                self._known[key] = self._ensure(f"teq-{key}-u.fmt", lambda: self._dump(preamble))
            return self._known[key]

    def _dump(self, preamble: str) -> bytes | None:
        with tempfile.TemporaryDirectory(prefix="teq-fmt-") as tmp:
            tmpdir = Path(tmp)
            (tmpdir / "pre.tex").write_text(preamble + "\n\\dump\n", encoding="utf-8")
            res = run_tex(["-ini", "-jobname=teqfmt", "-interaction=nonstopmode", "-halt-on-error",
                           "-no-shell-escape", "&pdflatex", "pre.tex"], tmpdir, 120.0, self.config)
            built = tmpdir / "teqfmt.fmt"
            if res.returncode == 0 and built.exists():
                return uncompressed_format(built.read_bytes())
        return None

    def _ensure(self, name: str, make: Callable[[], bytes | None]) -> Path | None:
        """The checked format NAME, built with MAKE when missing or damaged; None when there can be none."""
        fmt = self.dir / name
        total = fmt.with_name(name + ".sum")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = flock_exclusive(self.dir / ".lock", FORMAT_LOCK_TIMEOUT_S)
        except OSError as exc:
            warn(self.warnings, f"the compile cache folder {self.dir} cannot be used ({exc}); checking "
                                "without a preloaded format (slower)")
            return None
        try:
            _remove_stale_parts(self.dir)
            if fmt.exists():
                try:
                    recorded = total.read_text().strip()
                except FileNotFoundError:
                    recorded = None  # from before the digests: built again, not a damage
                if recorded is not None and _matches(fmt, recorded):
                    return fmt
                if recorded is not None:
                    aside = fmt.with_name(f"{name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
                    os.replace(fmt, aside)
                    warn(self.warnings, f"the preloaded format {fmt} was damaged; set aside as {aside.name} "
                                        "and built again")
            data = make()
            if data is None:
                return None
            # The digest first, then the format, each renamed into place: a reader sees a whole format with
            # its digest, or a digest without a format (built again), never a half-written format.
            for path, content in ((total, _digest(data).encode()), (fmt, data)):
                part = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
                try:
                    part.write_bytes(content)
                    os.replace(part, path)
                finally:
                    part.unlink(missing_ok=True)
            return fmt
        except OSError as exc:
            warn(self.warnings, f"could not build the preloaded format {fmt} ({exc}); checking without it "
                                "(slower)")
            return None
        finally:
            os.close(fd)


def _remove_stale_parts(folder: Path, age_s: float = 3600.0) -> None:
    """Formats half-copied by a process that was killed (18 MB each); called with the folder's lock held."""
    now = time.time()
    for part in folder.glob("*.part"):
        try:
            if now - part.stat().st_mtime > age_s:
                part.unlink()
        except OSError:
            continue


_VERIFIED: set[tuple] = set()  # (path, size, mtime, inode, digest) of formats this process has checked


def _matches(fmt: Path, recorded: str) -> bool:
    """Whether FMT's bytes have the RECORDED digest (each file version is read once per process)."""
    st = fmt.stat()
    memo = (str(fmt), st.st_size, st.st_mtime_ns, st.st_ino, recorded)
    if memo in _VERIFIED:
        return True
    if _digest(fmt.read_bytes()) != recorded:
        return False
    _VERIFIED.add(memo)
    return True


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=20).hexdigest()
