"""Many equations in one pdflatex run, each verdict the same as the one-document rule's.

Each equation goes into its own file holding exactly the lines the one-document rule puts around it below
the preamble: comment lines in place of the preamble and `\\begin{document}` (so line numbers in messages
agree), `\\[`, the equation, `\\]`, `\\end{document}`. The batch `\\input`s these files one after another,
each inside a group, with `\\enddocument` redefined to print a marker and return. So every token an equation
can read, even one that runs past its end, is what it would read alone, and the state it starts from is the
state after `\\begin{document}`, because only equations that cannot leave a trace (pipeline.compile_safety)
share a run, and a run is stopped as soon as the group level or mode is off after an equation.

From the log, per equation: no error and `\\enddocument` reached at the outer level -> compiles; a first error
printed before `\\enddocument` or the end of its file -> fails with that error (TeX had read nothing that
differs from the one-document run); anything else (an error only in what comes after, a timeout, a crash, a
capacity or "too many" error that could come from the equations before it) -> in doubt, and the caller checks
that equation alone with the one-document rule.
"""
from __future__ import annotations

import hashlib
import os
import re
import secrets
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from pipeline.compile_tex import SandboxConfig, error_text, is_error_line, read_log, run_tex

BATCH_SETUP = r"""\makeatletter
\def\teq@st{\the\currentgrouplevel:\the\currentiflevel:\ifvmode v\else\ifhmode h\else m\fi\fi\ifinner i\fi}
\def\teq@B#1{\immediate\write17{@@NONCE B#1 \the\pdfelapsedtime}}
% \write expands with mode 0, so the state is taken by \edef first.
\long\def\enddocument{\edef\teq@s{\teq@st}\immediate\write17{@@NONCE D \teq@s}\teq@gobble}
\long\def\teq@gobble#1\ignorespaces\fi{}
\def\teq@ok{0:0}
\def\teq@stop{\immediate\write17{@@NONCE X}\read16to\teq@x}
% After an equation that failed, close whatever it left open, innermost first, by e-TeX's group type;
% stop the run when that is not possible (an alignment, an open conditional).
\def\teq@fix{%
  \ifnum\currentgrouplevel>\z@
    \ifcase\currentgrouptype
      \teq@close\teq@stop\or
      \teq@close\egroup\or \teq@close\egroup\or \teq@close\egroup\or \teq@close\egroup\or
      \teq@close\egroup\or \teq@close\teq@stop\or \teq@close\egroup\or \teq@close\teq@stop\or
      \teq@close\egroup\or \teq@close\egroup\or \teq@close\egroup\or \teq@close\egroup\or
      \teq@close\egroup\or \teq@close\endgroup\or \teq@close\teq@mathshift\or \teq@close\teq@right
    \else\teq@close\teq@stop
    \fi
  \fi}
\long\def\teq@close#1#2\fi\fi{\fi\fi#1\teq@fix}
\def\teq@mathshift{\ifinner$\else$$\fi}
\def\teq@right{\right.}
\def\teq@do#1{\teq@B{#1}\begingroup\pdfprimitive\input ./tq#1.tex
  \immediate\write17{@@NONCE F#1}\teq@fix
  \ifmmode\teq@stop\fi \par
  \edef\teq@s{\the\currentgrouplevel:\the\currentiflevel\ifmmode m\fi}%
  \immediate\write17{@@NONCE E#1 \teq@s\space\the\pdfelapsedtime}%
  \ifx\teq@s\teq@ok\else\teq@stop\fi}
\makeatother
"""

# Messages whose cause may be what earlier equations of the run left behind (fonts, families, memory).
_STATE_DEPENDENT = re.compile(r"capacity exceeded|Too many|No room for a new|memory|Interwoven|"
                              r"That makes 100 errors|I can't go on|Emergency stop", re.I)


@dataclass
class BatchOutcome:
    """Per equation: verdict (ok, error, seconds) or doubt (None)."""

    ok: bool | None
    error: str | None
    seconds: float


def equation_file_text(equation: str, preamble_lines: int) -> str:
    # In the one-document file the preamble and \begin{document} take `preamble_lines` lines before `\[`.
    return "%\n" * preamble_lines + "\\[\n" + equation + "\n\\]\n\\end{document}\n"


def preamble_line_count(preamble: str) -> int:
    return preamble.count("\n") + (0 if preamble.endswith("\n") else 1) + 1  # + \begin{document}


class FormatCache:
    """A pdflatex format with the preamble preloaded (`pdflatex -ini "&pdflatex" ... \\dump`), one per preamble
    and engine, built once into the cache folder; None when the preamble cannot be dumped."""

    def __init__(self, cache_dir: Path, engine: str, config: SandboxConfig) -> None:
        self.dir = cache_dir / "formats"
        self.engine = engine
        self.config = config
        self._lock = threading.Lock()
        self._known: dict[str, Path | None] = {}

    def get(self, preamble: str) -> Path | None:
        key = hashlib.sha256((self.engine + "\0" + preamble).encode()).hexdigest()[:20]
        with self._lock:
            if key in self._known:
                return self._known[key]
            fmt = self.dir / f"teq-{key}.fmt"
            if not fmt.exists():
                self.dir.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryDirectory(prefix="teq-fmt-") as tmp:
                    tmpdir = Path(tmp)
                    (tmpdir / "pre.tex").write_text(preamble + "\n\\dump\n", encoding="utf-8")
                    res = run_tex(["-ini", "-jobname=teqfmt", "-interaction=nonstopmode", "-halt-on-error",
                                   "-no-shell-escape", "&pdflatex", "pre.tex"], tmpdir, 120.0, self.config)
                    built = tmpdir / "teqfmt.fmt"
                    if res.returncode == 0 and built.exists():
                        part = fmt.with_suffix(f".{os.getpid()}.{secrets.token_hex(4)}.part")
                        built.replace(part) if part.parent == built.parent else _copy(built, part)
                        os.replace(part, fmt)
            self._known[key] = fmt if fmt.exists() else None
            return self._known[key]


def _copy(src: Path, dst: Path) -> None:
    dst.write_bytes(src.read_bytes())


def run_batch(equations: list[str], preamble: str, fmt: Path | None, timeout: float,
              config: SandboxConfig) -> tuple[list[BatchOutcome], int]:
    """Check EQUATIONS (all batch-safe) in one run. Returns outcomes for a prefix and its length; the caller
    runs the rest again (the run stopped after an equation that left the state off, or crashed)."""
    nonce = secrets.token_hex(6)
    lines_before = preamble_line_count(preamble)
    with tempfile.TemporaryDirectory(prefix="teq-batch-") as tmp:
        tmpdir = Path(tmp)
        for k, eq in enumerate(equations):
            (tmpdir / f"tq{k}.tex").write_bytes(equation_file_text(eq, lines_before).encode("utf-8"))
        body = ["\\begin{document}", BATCH_SETUP.replace("NONCE", nonce)]
        body += [f"\\csname teq@do\\endcsname{{{k}}}" for k in range(len(equations))]
        body.append("\\clearpage\\deadcycles0 \\csname @@end\\endcsname")
        text = "\n".join(body) + "\n"
        args = ["-interaction=nonstopmode", "-no-shell-escape"]
        if fmt is not None:
            args.append(f"-fmt={fmt.with_suffix('')}")
        else:
            text = preamble + ("" if preamble.endswith("\n") else "\n") + text
        (tmpdir / "batch.tex").write_text(text, encoding="utf-8")
        run_timeout = 2 * timeout + 0.2 * len(equations)
        run_tex(args + ["batch.tex"], tmpdir, run_timeout, config)
        lines = read_log(tmpdir / "batch.log")
    return parse_batch_log(lines, nonce, timeout)


def parse_batch_log(lines: list[str], nonce: str, timeout: float) -> tuple[list[BatchOutcome], int]:
    tag = f"@@{nonce} "
    # Split the log into per-equation sections at the B markers.
    starts: list[int] = []
    for i, line in enumerate(lines):
        if line.startswith(tag + "B") and line[len(tag) + 1:].split(" ")[0] == str(len(starts)):
            starts.append(i)
    outcomes: list[BatchOutcome] = []
    for k, start in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(lines)
        section = lines[start + 1:end]
        try:
            t0 = int(lines[start].split()[-1])
        except ValueError:
            t0 = 0
        outcome, stop = _judge(section, tag, k, timeout, t0)
        outcomes.append(outcome)
        if stop:
            return outcomes, k + 1
    return outcomes, len(outcomes)


def _judge(section: list[str], tag: str, k: int, timeout: float, t0: int) -> tuple[BatchOutcome, bool]:
    """Outcome of one equation from its log section, and whether the run stopped after it."""
    first_err = d_at = f_at = e_line = None
    d_state = None
    aborted = False
    for i, line in enumerate(section):
        if line.startswith(tag):
            rest = line[len(tag):]
            if rest.startswith("D ") and d_at is None:
                d_at, d_state = i, rest[2:].strip()
            elif rest.startswith(f"F{k}") and rest[len(f"F{k}"):].strip() == "" and f_at is None:
                f_at = i
            elif rest.startswith(f"E{k} ") and e_line is None:
                e_line = rest
            elif rest.strip() == "X":
                aborted = True
        elif first_err is None and is_error_line(line):
            first_err = i
    seconds = 0.0
    complete = e_line is not None
    state_ok = False
    if complete:
        parts = e_line.split()
        state_ok = len(parts) == 3 and parts[1] == "0:0"
        try:
            seconds = max(0, int(parts[-1]) - t0) / 65536.0
        except ValueError:
            pass
    stop = (not complete) or aborted or not state_ok
    doubt = BatchOutcome(None, None, seconds)
    boundary = min(x for x in (d_at, f_at, len(section)) if x is not None)
    if first_err is not None and first_err < boundary:
        message = error_text(section, first_err)
        if _STATE_DEPENDENT.search(message):
            return doubt, stop
        return BatchOutcome(False, message, seconds), stop
    if first_err is None and complete and d_at is not None and f_at is not None and d_at < f_at \
            and d_state in ("1:0:h", "1:0:v") and state_ok:
        if seconds > timeout / 2:  # too close to the rule's limit to call from a shared run
            return doubt, stop
        return BatchOutcome(True, None, seconds), stop
    return doubt, stop
