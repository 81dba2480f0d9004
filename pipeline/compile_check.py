"""Does an equation compile? Real pdflatex verdicts under ../shared/docs/compile-rule.md, fast.

`check_one_document` is the rule itself: one document per equation, one pdflatex run. `check` gives the same
verdict for every equation, much faster: equations that cannot leave a trace share pdflatex runs (many per
run, from a preloaded format, see pipeline.compile_batch), everything else and every case in doubt goes
through the rule's own run (started from an uncompressed copy of pdflatex's format: the same bytes undumped);
verdicts are cached on disk by (preamble, equation, TeX installation).
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import compile_safety
from pipeline.compile_cache import FormatCache, VerdictCache, warn
from pipeline.compile_batch import (CALIBRATION_EQUATIONS, BatchOutcome, math_versions, run_batch, state_check_tex,
                                    state_names, tex_job)
from pipeline.compile_tex import (PDFLATEX_RUNS, SandboxConfig, engine_id, first_error, pdflatex_path, read_log,
                                  run_tex, sandbox_env, scratch_folder)

DEFAULT_PREAMBLE = "\\documentclass{article}\n\\usepackage{amsmath,amssymb,amsfonts,mathtools,bm}\n"

# Bump when a change here could change a verdict: old cache entries are then ignored.
RULE_VERSION = "3"


@dataclass(frozen=True)
class Verdict:
    ok: bool
    error: str | None  # the first TeX error, e.g. "! Undefined control sequence. \\foo"; None when ok
    seconds: float  # pdflatex time spent on this equation (its share of a shared run)


@dataclass
class CompileConfig:
    batch_size: int = 400  # equations per shared pdflatex run (at most)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    use_format: bool = True  # preload the preamble into a format (start-up ~3x faster)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "topiceq" / "compile"


def document_text(equation: str, preamble: str = DEFAULT_PREAMBLE) -> str:
    """The one document of the rule for EQUATION."""
    pre = preamble if preamble.endswith("\n") else preamble + "\n"
    return pre + "\\begin{document}\n\\[\n" + equation + "\n\\]\n\\end{document}\n"


def check_one_document(equation: str, preamble: str | None = None, timeout: float = 10.0,
                       config: CompileConfig | None = None) -> Verdict:
    """The compile rule, literally: the equation's own document, pdflatex once, exit 0 and a PDF in time."""
    return _one_document(equation, preamble, timeout, config or CompileConfig(), None)


def _one_document(equation: str, preamble: str | None, timeout: float, config: CompileConfig,
                  standard_format: Path | None) -> Verdict:
    """The rule's run; STANDARD_FORMAT: an uncompressed copy of pdflatex's own format to start from (the same
    bytes undumped, see compile_cache.uncompressed_format; -progname keeps kpathsea's settings pdflatex's)."""
    fmt_args = [f"-fmt={standard_format.with_suffix('')}", "-progname=pdflatex"] if standard_format else []
    # On disk, not in /dev/shm: an equation checked alone may write files (\openout, up to the file-size cap each).
    with tempfile.TemporaryDirectory(prefix="teq-one-") as tmp:
        tmpdir = Path(tmp)
        (tmpdir / "eq.tex").write_bytes(document_text(equation, preamble or DEFAULT_PREAMBLE).encode("utf-8"))
        res = run_tex([*fmt_args, "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape", "eq.tex"],
                      tmpdir, timeout, config.sandbox)
        pdf = tmpdir / "eq.pdf"
        has_pdf = pdf.exists() and pdf.stat().st_size > 0
        if res.timed_out:
            return Verdict(False, f"timeout: no result within {timeout:g} s", res.seconds)
        if res.returncode == 0 and has_pdf:
            return Verdict(True, None, res.seconds)
        err = first_error(read_log(tmpdir / "eq.log"))
        if err is None:
            if res.returncode == 0:
                err = "no PDF written"
            elif res.returncode < 0:
                err = f"pdflatex killed by signal {-res.returncode} (memory or file-size limit)"
            else:
                err = f"pdflatex exited with status {res.returncode}"
        return Verdict(False, err, res.seconds)


def query_meanings(names: list[str], preamble: str, fmt: Path | None, config: CompileConfig) -> dict[str, str | None]:
    """`\\meaning` of each control-sequence name in the document body under PREAMBLE (None: undefined)."""
    out: dict[str, str | None] = {}
    if not names:
        return out
    body = ["\\begin{document}", "\\makeatletter",
            "\\def\\teq@q#1{\\immediate\\write17{@@Q#1=\\ifcsname#1\\endcsname D"
            "\\expandafter\\meaning\\csname#1\\endcsname\\else U\\fi}}"]
    body += [f"\\teq@q{{{name}}}" for name in names]
    body.append("\\csname @@end\\endcsname")
    args, text = tex_job(body, preamble, fmt)
    with scratch_folder("teq-names-", {"names.tex": text.encode("utf-8")}) as tmpdir:
        run_tex(args + ["names.tex"], tmpdir, 60.0, config.sandbox)
        for line in read_log(tmpdir / "names.log"):
            if line.startswith("@@Q") and "=" in line:
                name, _, value = line[3:].partition("=")
                if value.startswith("D"):
                    out[name] = value[1:]
                elif value.startswith("U"):
                    out[name] = None
    missing = [n for n in names if n not in out]
    if missing:
        raise RuntimeError(f"could not read the meaning of {len(missing)} control sequences from pdflatex "
                           f"(e.g. {missing[0]!r}); is the preamble valid?")
    return out


@dataclass
class CheckStats:
    """What one call of `check` did (for benchmarks and tests; `last_stats()` returns the latest)."""

    equations: int = 0
    cache_hits: int = 0
    unique_checked: int = 0
    batch_safe: int = 0
    batch_runs: int = 0  # shared pdflatex runs (a run stopped early and restarted counts twice)
    in_doubt: int = 0  # batch equations re-checked alone
    alone: int = 0  # equations checked alone because they may leave a trace
    warnings: list[str] = field(default_factory=list)  # cache trouble: the check went on without it

    def add(self, **kw: int) -> None:
        with _STATS_LOCK:
            for k, v in kw.items():
                setattr(self, k, getattr(self, k) + v)


_STATS_LOCK = threading.Lock()
_LAST_STATS = CheckStats()


def last_stats() -> CheckStats:
    return _LAST_STATS


_STATE_MEMO: dict[tuple[str, str, str], str | None] = {}
_STATE_MEMO_LOCK = threading.Lock()


class _Checker:
    """One call of `check`: the shared state of its worker threads."""

    def __init__(self, preamble: str, cache_dir: Path, timeout: float, config: CompileConfig,
                 use_cache: bool, stats: CheckStats | None = None) -> None:
        self.preamble = preamble
        self.timeout = timeout
        self.config = config
        pdflatex_path()  # TeX missing: its message, before anything else (engine_id is remembered per process)
        self.engine = engine_id()
        self.use_cache = use_cache
        self.stats = stats if stats is not None else CheckStats()
        # The sqlite file also keeps control-sequence meanings: those are kept even without the verdict cache.
        self.cache = VerdictCache(cache_dir, self.stats.warnings)
        self.formats = FormatCache(cache_dir, self.engine, config.sandbox, self.stats.warnings)
        self._meaning_memo: dict[tuple[str, str], str | None] = {}
        self.cache_dir = cache_dir
        self._state_lock = threading.Lock()
        self._state_tex: str | None | bool = False  # False: not built yet
        self._versions: list[str] | None | bool = False
        self._versions_lock = threading.Lock()

    def versions(self) -> list[str] | None:
        """The preamble's math versions (their alphabets' first-use state is put back after every equation)."""
        with self._versions_lock:
            if self._versions is False:
                self._versions = math_versions(self.meanings(self.preamble, {"check@mathfonts"})["check@mathfonts"])
            return self._versions  # type: ignore[return-value]

    def state_tex(self) -> str | None:
        """The state check for shared runs (default preamble only; None: stop after any broken equation)."""
        with self._state_lock:
            if self._state_tex is False:
                memo_key = (str(self.cache_dir), self.engine, self.preamble)
                with _STATE_MEMO_LOCK:
                    if memo_key not in _STATE_MEMO:
                        _STATE_MEMO[memo_key] = (self._build_state_tex() if self.preamble == DEFAULT_PREAMBLE
                                                 else None)
                    self._state_tex = _STATE_MEMO[memo_key]
            return self._state_tex  # type: ignore[return-value]

    def _build_state_tex(self) -> str | None:
        pkey = hashlib.sha256((RULE_VERSION + self.engine + "\0" + self.preamble).encode()).hexdigest()[:24]
        names = state_names()
        if not names:
            return None
        meanings = self.meanings(self.preamble, set(names))
        volatile_file = self.cache_dir / f"volatile-{pkey}.json"
        volatile: set[str] | None = None
        if volatile_file.is_file():
            try:
                volatile = set(json.loads(volatile_file.read_text()))
            except (ValueError, OSError, TypeError) as exc:  # damaged: computed again and replaced below
                warn(self.stats.warnings, f"{volatile_file} was unreadable ({exc}); rebuilt")
                volatile = None
        if volatile is None:
            # Names that change while valid equations are typeset are caches or scratch: not watched.
            log: list[str] = []
            run_batch(list(CALIBRATION_EQUATIONS), self.preamble, self.format(self.preamble), 60.0,
                      self.config.sandbox, state_tex=state_check_tex(meanings, set(), report_all=True),
                      check_every=True, raw_log=log, versions=self.versions())
            self.stats.add(batch_runs=1)
            if not any(line.startswith(f"@@NONCE E{len(CALIBRATION_EQUATIONS) - 1} ") for line in log):
                return None  # calibration did not run through: no state check, runs stop instead
            volatile = {line.split()[2] for line in log if line.startswith("@@NONCE S ")}
            try:
                self.cache_dir.mkdir(parents=True, exist_ok=True)
                tmp = volatile_file.with_suffix(f".{os.getpid()}.{secrets.token_hex(4)}.tmp")
                tmp.write_text(json.dumps(sorted(volatile)))
                os.replace(tmp, volatile_file)
            except OSError as exc:  # read-only or full: computed again next time
                warn(self.stats.warnings, f"could not keep {volatile_file.name} in the compile cache ({exc})")
        return state_check_tex(meanings, volatile)

    def alone(self, equation: str) -> Verdict:
        """The rule's run for one equation, from an uncompressed copy of pdflatex's format when there is one."""
        # A first line `%&name` picks the format in the rule's run (pdftex's %&-line parsing): keep it literal.
        standard = (self.formats.standard() if self.config.use_format and not self.preamble.startswith("%&")
                    else None)
        return _one_document(equation, self.preamble, self.timeout, self.config, standard)

    def format(self, preamble: str) -> Path | None:
        return self.formats.get(preamble) if self.config.use_format else None

    def meanings(self, preamble: str, names: set[str]) -> dict[str, str | None]:
        pkey = hashlib.sha256((self.engine + "\0" + preamble).encode()).hexdigest()[:24]
        want = sorted(n for n in names if (pkey, n) not in self._meaning_memo)
        if want:
            got = self.cache.get_meanings(pkey, want)
            todo = [n for n in want if n not in got]
            if todo:
                fresh = query_meanings(todo, preamble, self.format(preamble), self.config)
                self.cache.put_meanings(pkey, fresh)
                got.update(fresh)
            for n in want:
                self._meaning_memo[(pkey, n)] = got[n]
        return {n: self._meaning_memo[(pkey, n)] for n in names}

    def batch_safe(self, scans: list[compile_safety.Scan]) -> list[bool]:
        """Which equations may share a run: see pipeline.compile_safety."""
        names: set[str] = set()
        for s in scans:
            if s.unsafe_reason is None:
                names |= {n for n in s.names if n.isalpha()}
                for env in s.environments:
                    names |= {env, "end" + env}
        mine = self.meanings(self.preamble, names)
        custom = self.preamble != DEFAULT_PREAMBLE
        default = self.meanings(DEFAULT_PREAMBLE, names) if custom else mine

        def name_ok(n: str) -> bool:
            m = mine.get(n)
            if m is None or compile_safety.meaning_is_char(m):
                return True
            return n in compile_safety.SAFE_COMMANDS and (not custom or m == default.get(n))

        def env_ok(e: str) -> bool:
            if mine.get(e) is None and mine.get("end" + e) is None:
                # "Environment ... undefined" (\begin), or "\begin{...} ended by \end{...}" after \end makes
                # \end<name> \relax locally: an error alone and in a batch alike
                return True
            return (e in compile_safety.SAFE_ENVIRONMENTS
                    and (not custom or (mine.get(e) == default.get(e)
                                        and mine.get("end" + e) == default.get("end" + e))))

        out = []
        for s in scans:
            out.append(s.unsafe_reason is None and all(name_ok(n) for n in s.names if n not in ("begin", "end"))
                       and all(env_ok(e) for e in s.environments))
        return out

    def run_batches(self, equations: list[str], on_done) -> None:
        """Check batch-safe EQUATIONS; calls on_done(index, Verdict) as verdicts arrive."""
        fmt = self.format(self.preamble)
        pending = list(range(len(equations)))
        while pending:
            outcomes, used = run_batch([equations[i] for i in pending], self.preamble, fmt, self.timeout,
                                       self.config.sandbox, state_tex=self.state_tex(), versions=self.versions())
            self.stats.add(batch_runs=1)
            if used == 0:  # nothing came back from the run: take the first one alone
                outcomes, used = [BatchOutcome(None, None, 0.0)], 1
            for i, outcome in zip(pending[:used], outcomes):
                if outcome.ok is None:
                    self.stats.add(in_doubt=1)
                    on_done(i, self.alone(equations[i]))
                else:
                    on_done(i, Verdict(outcome.ok, outcome.error, outcome.seconds))
            pending = pending[used:]


def check(equations, *, workers: int | None = None, preamble: str | None = None, use_cache: bool = True,
          cache_dir: str | Path | None = None, timeout: float = 10.0, progress: bool = False,
          config: CompileConfig | None = None, stats: CheckStats | None = None) -> list[Verdict]:
    """Verdicts for EQUATIONS in input order, each the same as `check_one_document`'s.

    STATS, when given, is filled with what the call did, including the warnings of a cache in trouble (the
    check then went on without it); `last_stats()` returns the same object."""
    equations = [str(e) for e in equations]
    config = config or CompileConfig()
    preamble = preamble if preamble is not None else DEFAULT_PREAMBLE
    workers = max(1, workers or os.cpu_count() or 1)
    checker = _Checker(preamble, Path(cache_dir) if cache_dir else default_cache_dir(), timeout, config,
                       use_cache, stats)
    global _LAST_STATS
    _LAST_STATS = checker.stats
    try:
        return _check(checker, equations, workers, preamble, use_cache, timeout, progress, config)
    finally:
        checker.cache.close()


def _check(checker: _Checker, equations: list[str], workers: int, preamble: str, use_cache: bool,
           timeout: float, progress: bool, config: CompileConfig) -> list[Verdict]:
    results: list[Verdict | None] = [None] * len(equations)
    checker.stats.equations = len(equations)

    keys: list[str] = []
    if use_cache:
        keys = [hashlib.sha256("\0".join((RULE_VERSION, checker.engine, f"{timeout:g}", preamble, eq))
                               .encode("utf-8", "surrogatepass")).hexdigest() for eq in equations]
        hits = checker.cache.get_verdicts(sorted(set(keys)))
        for i, key in enumerate(keys):
            if key in hits:
                results[i] = Verdict(*hits[key])

    # Identical equations are checked once.
    todo_by_eq: dict[str, list[int]] = {}
    for i, eq in enumerate(equations):
        if results[i] is None:
            todo_by_eq.setdefault(eq, []).append(i)
    unique = list(todo_by_eq)
    checker.stats.cache_hits = sum(r is not None for r in results)
    checker.stats.unique_checked = len(unique)
    if not unique:
        return results  # type: ignore[return-value]

    scans = [compile_safety.scan(eq) for eq in unique]
    safe = checker.batch_safe(scans)
    safe_idx = [u for u in range(len(unique)) if safe[u]]
    solo_idx = [u for u in range(len(unique)) if not safe[u]]
    checker.stats.batch_safe = len(safe_idx)
    checker.stats.alone = len(solo_idx)

    lock = threading.Lock()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(unique), desc="compile-check", unit="eq", file=sys.stderr)
    fresh: list[tuple[str, Verdict]] = []

    def done(u: int, verdict: Verdict) -> None:
        with lock:
            for i in todo_by_eq[unique[u]]:
                results[i] = verdict
            if use_cache:
                fresh.append((keys[todo_by_eq[unique[u]][0]], verdict))
            if bar is not None:
                bar.update(1)

    # Chunks small enough to keep every worker busy, large enough to pay pdflatex's start-up rarely. A run
    # restarts after an equation that breaks off in a way that cannot be cleaned up (it costs a new start),
    # unless that equation was the run's last: equations that look unbalanced go at the end of the chunks,
    # spread over them. (Order never changes a verdict: each equation starts from the same state.)
    size = max(8, min(config.batch_size, -(-len(safe_idx) // (workers * 3)) if safe_idx else 1))
    n_chunks = -(-len(safe_idx) // size) if safe_idx else 0
    breaks_off = {u: compile_safety.may_break_off(unique[u]) for u in safe_idx}  # one scan per equation
    suspect = [u for u in safe_idx if breaks_off[u]]
    plain = [u for u in safe_idx if not breaks_off[u]]
    tasks = []
    for c in range(n_chunks):
        tasks.append(("batch", plain[c * len(plain) // n_chunks:(c + 1) * len(plain) // n_chunks] + suspect[c::n_chunks]))
    tasks += [("one", [u]) for u in solo_idx]

    def work(task):
        kind, us = task
        if kind == "batch":
            checker.run_batches([unique[u] for u in us], lambda j, v: done(us[j], v))
        else:
            done(us[0], checker.alone(unique[us[0]]))

    # Solo checks first: they are the slow ones, and batches fill the gaps.
    tasks.sort(key=lambda t: t[0] != "one")
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for fut in [pool.submit(work, t) for t in tasks]:
                fut.result()
    finally:
        if bar is not None:
            bar.close()
        if use_cache and fresh:
            checker.cache.put_verdicts([(k, v.ok, v.error, v.seconds) for k, v in fresh])
    return results  # type: ignore[return-value]


def pdflatex_runs() -> int:
    """pdflatex processes started by this module so far (a cache hit starts none)."""
    return PDFLATEX_RUNS.runs


__all__ = ["DEFAULT_PREAMBLE", "CheckStats", "CompileConfig", "last_stats", "Verdict", "check", "check_one_document", "document_text",
           "default_cache_dir", "pdflatex_runs", "sandbox_env"]
