"""Many equations in one pdflatex run, each verdict the same as the one-document rule's.

Each equation goes into its own file holding exactly the lines the one-document rule puts around it below
the preamble: comment lines in place of the preamble and `\\begin{document}` (so line numbers in messages
agree), `\\[`, the equation, `\\]`, `\\end{document}`. The batch `\\input`s these files one after another,
each inside a group, with `\\enddocument` redefined to print a marker and return. So every token an equation
can read, even one that runs past its end, is what it would read alone, and the state it starts from is the
state after `\\begin{document}`, because only equations that cannot leave a trace (pipeline.compile_safety)
share a run, and what an equation that broke off leaves behind is cleared or stops the run (below).

From the log, per equation: no error and `\\enddocument` reached at the outer level -> compiles; a first error
printed before `\\enddocument` or the end of its file -> fails with that error (TeX had read nothing that
differs from the one-document run); anything else (an error only in what comes after, a timeout, a crash, a
capacity or "too many" error that could come from the equations before it) -> in doubt, and the caller checks
that equation alone with the one-document rule.

An equation that broke off half-way (did not reach `\\end{document}` at the outer level) may leave global state
half-changed, e.g. amsmath's alignment counters or LaTeX's `\\if@ignore`. After such an equation the open groups
are closed (an alignment with `\\crcr` and a right brace, a bounded number of tries) and the state check compares
every watched name (the macros and registers named in the kernel and package files, minus those that change
while valid equations are typeset) with its value after `\\begin{document}` and puts back what changed; a name
that was undefined and is now defined, a group that would not close, an open conditional, or anything else off
stops the run, and the rest start in a fresh one. After every equation, clean or not, the first-use state of
the math alphabets is put back (FIRST_USE_SETUP), so that the next equation meets them as it would alone.

Speed: a run starts from the preamble's format stored uncompressed (compile_cache.FormatCache), in a folder in /dev/shm
(compile_tex.scratch_root); an equation inside a run costs ~0.5 ms, a start ~70 ms.
"""
from __future__ import annotations

import re
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pipeline.compile_tex import (SandboxConfig, error_text, is_error_line, read_log, run_tex,
                                  scratch_folder)

BATCH_SETUP = r"""\makeatletter
% Uncompressed PDF streams: the batch's PDF is thrown away, and no TeX error depends on compression.
\pdfcompresslevel=0 \pdfobjcompresslevel=0
\def\teq@st{\the\currentgrouplevel:\the\currentiflevel:\ifvmode v\else\ifhmode h\else m\fi\fi\ifinner i\fi}
\def\teq@B#1{\immediate\write17{@@NONCE B#1 \the\pdfelapsedtime}}
% \write expands with mode 0, so the state is taken by \edef first.
\long\def\enddocument{\edef\teq@s{\teq@st}\immediate\write17{@@NONCE D \teq@s}%
  \xdef\teq@d{\teq@s}\teq@gobble}
\long\def\teq@gobble#1\ignorespaces\fi{}
\def\teq@ok{0:0}
\def\teq@dok{1:0:h}\def\teq@dokv{1:0:v}
\def\teq@stop{\immediate\write17{@@NONCE X}\read16to\teq@x}
% After an equation that failed, close whatever it left open, innermost first, by e-TeX's group type;
% stop the run when that is not possible (the output routine, an open conditional, or 32 closings that left
% a group open). An alignment (an error inside `aligned`, `matrix`, ...) ends with \crcr and a right brace.
\def\teq@fix{%
  \ifnum\currentgrouplevel>\z@
    \ifcase\currentgrouptype
      \teq@close\teq@stop\or
      \teq@close\egroup\or \teq@close\egroup\or \teq@close\egroup\or \teq@close\egroup\or
      \teq@close\egroup\or \teq@close\teq@endalign\or \teq@close\egroup\or \teq@close\teq@stop\or
      \teq@close\egroup\or \teq@close\egroup\or \teq@close\egroup\or \teq@close\egroup\or
      \teq@close\egroup\or \teq@close\endgroup\or \teq@close\teq@mathshift\or \teq@close\teq@right
    \else\teq@close\teq@stop
    \fi
  \fi}
\long\def\teq@close#1#2\fi\fi{\fi\fi#1\teq@count\teq@fix}
\newcount\teq@n
\def\teq@count{\global\advance\teq@n\@ne \ifnum\teq@n>32 \teq@stop\fi}
\def\teq@endalign{\crcr\egroup}
\def\teq@mathshift{\ifinner$\else$$\fi}
\def\teq@right{\right.}
% An equation that did not reach \end{document} at the outer level, or left groups open, may have left
% global state half-changed (amsmath keeps some): unless the state check (\teq@check, when loaded) finds
% every watched name as it was after \begin{document}, the run stops after it and restarts fresh.
\def\teq@unclean{\teq@stop}
\def\teq@do#1{\teq@B{#1}\gdef\teq@d{}\global\teq@n\z@\begingroup\pdfprimitive\input ./tq#1.tex
  \immediate\write17{@@NONCE F#1}%
  \ifnum\currentgrouplevel=\@ne\else\gdef\teq@d{}\fi
  \teq@fix
  \ifmmode\teq@stop\fi \par
  \teq@firstuse
  \ifx\teq@d\teq@dok\teq@clean\else\ifx\teq@d\teq@dokv\teq@clean\else\teq@unclean\fi\fi
  \edef\teq@s{\the\currentgrouplevel:\the\currentiflevel\ifmmode m\fi}%
  \immediate\write17{@@NONCE E#1 \teq@s\space\the\pdfelapsedtime}%
  \ifx\teq@s\teq@ok\else\teq@stop\fi}
\let\teq@clean\relax
\let\teq@firstuse\relax
\makeatother
"""

# A math alphabet's first use (LaTeX's \document@select@group) allocates a family and redefines, globally, the
# alphabet, its math version's font list \mv@<version> and counter \c@mv@<version> (and, near the family limit,
# freezes the version); the math fonts themselves are set globally when the size is first set up
# (\glb@settings, keyed by \glb@currsize). Alone, every equation starts from the state before any of that; in
# a shared run \teq@firstuse puts all of it back after each equation, so the next one starts from that same
# state. (Fonts loaded on the way stay loaded: loading one that exists again only repeats the log's font info.)
FIRST_USE_SETUP = r"""\makeatletter
\begingroup
\gdef\teq@firstuse{}%
\gdef\teq@keepalph#1#2{\expandafter\global\expandafter\let\csname teq@a@\string#1\endcsname#1%
  \xdef\teq@firstuse{\unexpanded\expandafter{\teq@firstuse}\global\let\noexpand#1\expandafter\noexpand\csname teq@a@\string#1\endcsname}}%
\gdef\teq@keepcs#1{%
  \ifcsname#1\endcsname
    \expandafter\global\expandafter\let\csname teq@k@#1\expandafter\endcsname\csname#1\endcsname
  \else
    \expandafter\global\expandafter\let\csname teq@k@#1\endcsname\teq@undefined
  \fi
  \xdef\teq@firstuse{\unexpanded\expandafter{\teq@firstuse}\global\let\expandafter\noexpand\csname#1\endcsname
    \expandafter\noexpand\csname teq@k@#1\endcsname}}%
\gdef\teq@keepversion#1{%
  \begingroup
    \let\install@mathalphabet\teq@keepalph \let\getanddefine@fonts\@gobbletwo
    \csname mv@#1\endcsname
  \endgroup
  \teq@keepcs{mv@#1}\teq@keepcs{mv@#1@frozen}\teq@keepcs{mv@#1@reset}\teq@keepcs{g__nfss_frozen_mv_#1_tl}%
  \xdef\teq@firstuse{\unexpanded\expandafter{\teq@firstuse}\global\csname c@mv@#1\endcsname=\the\csname c@mv@#1\endcsname\relax}}%
\gdef\teq@keepfam#1{\xdef\teq@firstuse{\unexpanded\expandafter{\teq@firstuse}\global\textfont#1=\the\textfont#1
  \global\scriptfont#1=\the\scriptfont#1 \global\scriptscriptfont#1=\the\scriptscriptfont#1 }}%
VERSIONS\teq@keepcs{glb@currsize}%
\teq@keepfam0\teq@keepfam1\teq@keepfam2\teq@keepfam3\teq@keepfam4\teq@keepfam5\teq@keepfam6\teq@keepfam7
\teq@keepfam8\teq@keepfam9\teq@keepfam{10}\teq@keepfam{11}\teq@keepfam{12}\teq@keepfam{13}\teq@keepfam{14}%
\teq@keepfam{15}%
\endgroup
\makeatother
"""


def first_use_tex(versions: list[str]) -> str:
    """TeX that snapshots, after \\begin{document}, the first-use state of every math alphabet of VERSIONS and
    defines \\teq@firstuse to put it back."""
    return FIRST_USE_SETUP.replace("VERSIONS", "".join(f"\\teq@keepversion{{{v}}}" for v in versions))


def math_versions(check_mathfonts_meaning: str | None) -> list[str] | None:
    """The math versions declared (LaTeX's \\DeclareMathVersion adds `\\aftergroup\\mv@<version>@reset` to
    \\check@mathfonts); None when that cannot be read."""
    if not check_mathfonts_meaning:
        return None
    found = re.findall(r"\\aftergroup \\mv@([A-Za-z]+)@reset ", check_mathfonts_meaning)
    return found or None

# Files whose code runs while an equation is typeset under the default preamble: the global state an
# equation that broke off half-way could leave changed is among the names they mention.
STATE_FILES = ("latex.ltx", "article.cls", "size10.clo", "amsmath.sty", "amstext.sty", "amsbsy.sty", "amsopn.sty",
               "amsgen.sty", "mathtools.sty", "mhsetup.sty", "calc.sty", "bm.sty", "amsfonts.sty", "amssymb.sty",
               "expl3-code.tex")
_REGISTER = re.compile(r"^\\(count|dimen|skip|muskip|toks)\d+$")

# Valid equations used once per preamble to find the names that change in normal operation (caches,
# scratch variables, the page counter): the state check ignores those.
CALIBRATION_EQUATIONS = (
    r"x^2", r"\frac{a}{b} + \sqrt[3]{x}", r"\begin{aligned} a &= b \\ c &= d \end{aligned}",
    r"\begin{split} a &= b \\ &= c \end{split}", r"\begin{matrix} 1 & 2 \\ 3 & 4 \end{matrix}",
    r"\begin{pmatrix} a \end{pmatrix} \begin{bmatrix} b \end{bmatrix}", r"f(x) = \begin{cases} 1 & x > 0 \\ 0 & "
    r"\text{otherwise} \end{cases}", r"\text{if } \mathbb{R} \mathcal{O} \mathfrak{g} \mathsf{x} \mathtt{y}",
    r"\left( \frac{1}{2} \middle| \right.", r"\bm{x} \boldsymbol{\alpha} \pmb{y}", r"\operatorname{Tr} \lim_{n} \sin x",
    r"\begin{array}{c|l} a & b \\ \hline c & d \end{array}", r"\overbrace{a+b}^{n} \underbrace{c}_{m} \xrightarrow{f}",
    r"\sum_{\substack{i \\ j}} \dots \cdots \ldots", r"\begin{dcases} a & b \end{dcases} \coloneqq \mathclap{x}",
    r"\begin{gathered} a \\ b \end{gathered} \begin{alignedat}{2} a &= b & c &= d \end{alignedat}",
    r"\mathbf{A} \mathit{b} \mathrm{c} \textbf{d} \textit{e} \mbox{f} \hbox{g}", r"\binom{n}{k} \tfrac12 \dfrac{1}{2}",
    r"\hat{a} \widehat{ab} \tilde{x} \vec{v} \dot{y} \ddot{z} \overline{w}", r"\big( \Big[ \bigg\{ \Bigg\langle",
    r"""\text{\small a \large b \ttfamily c \bfseries d \"o \'e} \models \lefteqn{x}""",
    r"\begin{multlined} a + b \\ c \end{multlined} \ref{x} \eqref{y} \sqrt[\uproot{2}3]{x}",
    r"\begin{array}{cc} a & b \cr \omit c & d \crcr \end{array} \mathchoice{a}{b}{c}{d} \vbox{\hrule}",
    "a \\\n b",
    r"\text{\l \o \t{ab} \c{c} \v{s} \r{a} \d{o} \b{o} \u{a} \H{o} \=a \.a \^a \~a \`a \ss \ae} a",
)


def tex_job(body: list[str], preamble: str, fmt: Path | None) -> tuple[list[str], str]:
    """pdflatex arguments and file text for a document body: the dumped format when there is one, else the
    preamble written in front of the body."""
    text = "\n".join(body) + "\n"
    args = ["-interaction=nonstopmode", "-no-shell-escape"]
    if fmt is not None:
        # -fmt alone would also make the format's path kpathsea's program name, so that texmf.cnf's settings
        # for pdflatex (its TEXINPUTS search order) would not apply.
        args += [f"-fmt={fmt.with_suffix('')}", "-progname=pdflatex"]
    else:
        text = preamble + ("" if preamble.endswith("\n") else "\n") + text
    return args, text


def state_names() -> list[str]:
    """Control-sequence names whose value the state check compares (without the backslash)."""
    names: set[str] = set()
    for f in STATE_FILES:
        path = subprocess.run(["kpsewhich", f], capture_output=True, text=True).stdout.strip()
        if not path:
            continue
        text = Path(path).read_text(encoding="latin-1")
        if not f.startswith("expl3"):
            names |= set(re.findall(r"\\([A-Za-z@]+)", text))
        names |= {n for n in re.findall(r"\\([A-Za-z@_:]+)", text) if re.match(r"g__?[A-Za-z]", n)}
    return sorted(names)


def state_check_tex(meanings: dict[str, str | None], volatile: set[str], report_all: bool = False) -> str:
    """TeX (read inside a group with @ _ : as letters, so all global) that snapshots the watched names now and
    defines \\teq@check: every watched macro or register found changed is put back as it was (reported as
    `R name`), and a watched name that was undefined and is now defined is made undefined again by \\let to a
    name never defined (reported as `U name`). REPORT_ALL (calibration) only reports (`S name`), changing
    nothing."""
    snap, check = [], []
    for name, meaning in sorted(meanings.items()):
        if name in volatile or name.startswith("teq@"):
            continue
        if meaning is None:
            check.append(f"\\ifcsname {name}\\endcsname\\teq@undef{{{name}}}\\fi%")
        elif meaning == "\\" + name or "\\outer" in meaning.split("macro:")[0]:
            continue  # a primitive under its own name, or an \\outer macro that cannot appear in a body
        elif m := _REGISTER.match(meaning):
            snap.append(f"\\xdef\\teq@v@{name}{{\\the\\{name}}}")
            put = "\\teq@putt" if m.group(1) == "toks" else "\\teq@putr"
            check.append(f"\\edef\\teq@t{{\\the\\{name}}}\\ifx\\teq@t\\teq@v@{name}\\else"
                         f"{put}{{{name}}}\\fi%")
        else:
            snap.append(f"\\global\\let\\teq@s@{name}=\\{name}")
            check.append(f"\\ifx\\{name}\\teq@s@{name}\\else\\teq@putm{{{name}}}\\fi%")
    # The name appears only as letters in the branch TeX may skip: a name meaning \\iftrue there would be
    # counted as a conditional.
    head = [r"\gdef\teq@bad#1{\immediate\write17{@@NONCE S #1}\global\let\teq@tainted\relax}"]
    if report_all:
        head += [r"\gdef\teq@putm#1{\teq@bad{#1}}", r"\gdef\teq@putr#1{\teq@bad{#1}}",
                 r"\gdef\teq@putt#1{\teq@bad{#1}}", r"\gdef\teq@undef#1{\teq@bad{#1}}"]
    else:
        head += [r"\gdef\teq@undef#1{\immediate\write17{@@NONCE U #1}\expandafter\global\expandafter\let"
                 r"\csname#1\endcsname\teq@undefined}",
                 r"\gdef\teq@putm#1{\immediate\write17{@@NONCE R #1}\expandafter\global\expandafter\let"
                 r"\csname#1\expandafter\endcsname\csname teq@s@#1\endcsname}",
                 r"\gdef\teq@putr#1{\immediate\write17{@@NONCE R #1}\global\csname#1\endcsname="
                 r"\csname teq@v@#1\endcsname\relax}",
                 r"\gdef\teq@putt#1{\immediate\write17{@@NONCE R #1}\global\csname#1\endcsname="
                 r"\expandafter\expandafter\expandafter{\csname teq@v@#1\endcsname}}"]
    return "\n".join([*head, *snap, "\\gdef\\teq@check{\\global\\let\\teq@tainted\\empty%", *check, "}"]) + "\n"


# Messages whose cause may be what earlier equations of the run left behind (fonts, families, memory).
_STATE_DEPENDENT = re.compile(r"capacity exceeded|Too many|No room for a new|memory|Interwoven|"
                              r"That makes 100 errors|I can't go on|Emergency stop", re.I)
# A math alphabet's first use allocates a family and redefines the command globally, so an error inside its
# argument names a different macro before and after its first use in the run: in doubt unless the run puts
# the first-use state back after every equation (FIRST_USE_SETUP).
_FIRST_USE_DEPENDENT = re.compile(r"math@egroup|select@group|use@mathgroup|getanddefine@fonts")


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


def run_batch(equations: list[str], preamble: str, fmt: Path | None, timeout: float, config: SandboxConfig,
              state_tex: str | None = None, check_every: bool = False,
              raw_log: list[str] | None = None,
              versions: list[str] | None = None) -> tuple[list[BatchOutcome], int]:
    """Check EQUATIONS (all batch-safe) in one run. Returns outcomes for a prefix and its length; the caller
    runs the rest again (the run stopped after an equation that left the state off, or crashed). VERSIONS: the
    preamble's math versions, whose alphabets' first-use state is put back after every equation."""
    nonce = secrets.token_hex(6)
    lines_before = preamble_line_count(preamble)
    files = {f"tq{k}.tex": equation_file_text(eq, lines_before).encode("utf-8") for k, eq in enumerate(equations)}
    body = ["\\begin{document}", BATCH_SETUP.replace("NONCE", nonce)]
    if versions:
        body.append(first_use_tex(versions).replace("NONCE", nonce))
    if state_tex is not None:
        files["teqstate.tex"] = state_tex.replace("NONCE", nonce).encode("latin-1")
        body.append("\\begingroup\\catcode`\\@=11 \\catcode`\\_=11 \\catcode`\\:=11 "
                    "\\pdfprimitive\\input ./teqstate.tex \\endgroup")
        body.append("\\makeatletter\\def\\teq@unclean{\\teq@check\\ifx\\teq@tainted\\relax\\teq@stop\\fi}"
                    + ("\\let\\teq@clean\\teq@check" if check_every else "") + "\\makeatother")
    body += [f"\\csname teq@do\\endcsname{{{k}}}" for k in range(len(equations))]
    body.append("\\clearpage\\deadcycles0 \\csname @@end\\endcsname")
    args, text = tex_job(body, preamble, fmt)
    files["batch.tex"] = text.encode("utf-8")
    with scratch_folder("teq-batch-", files) as tmpdir:
        # An equation takes ~0.5 ms here and the start ~70 ms, so this leaves a wide margin; an equation that
        # hangs only in a shared run (it reads past its file into the driver, e.g. `\\bm` cut off in `aligned`)
        # costs this much instead of twice the rule's limit: its run is killed, what the log holds is judged,
        # it becomes a doubt and is checked alone. A slow but valid one does the same, within the rule's limit.
        run_timeout = min(2 * timeout + 0.2 * len(equations), 2.0 + 0.02 * len(equations))
        res = run_tex(args + ["batch.tex"], tmpdir, run_timeout, config)
        lines = read_log(tmpdir / "batch.log")
    if raw_log is not None:
        raw_log.extend(line.replace(nonce, "NONCE") for line in lines)
    outcomes, used = parse_batch_log(lines, nonce, timeout, first_use_reset=bool(versions))
    if res.timed_out and used < len(equations):
        # Killed: the log (written in blocks) ends at or before the equation that hung. The first one it
        # does not judge is in doubt (checked alone), so the restart does not begin with a hang again; if the
        # culprit was another, that costs one check alone.
        outcomes, used = outcomes[:used] + [BatchOutcome(None, None, 0.0)], used + 1
    return outcomes, used


def parse_batch_log(lines: list[str], nonce: str, timeout: float,
                    first_use_reset: bool = False) -> tuple[list[BatchOutcome], int]:
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
        outcome, stop = _judge(section, tag, k, timeout, t0, first_use_reset)
        outcomes.append(outcome)
        if stop:
            return outcomes, k + 1
    return outcomes, len(outcomes)


def _judge(section: list[str], tag: str, k: int, timeout: float, t0: int,
           first_use_reset: bool = False) -> tuple[BatchOutcome, bool]:
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
        if not first_use_reset and _FIRST_USE_DEPENDENT.search(message):
            return doubt, stop
        if message == "! Undefined control sequence.":
            # No control sequence at the end of the context line: the error came from inside a package's
            # caches (bm builds them on first use), which differ after earlier equations.
            return doubt, stop
        return BatchOutcome(False, message, seconds), stop
    if first_err is None and complete and d_at is not None and f_at is not None and d_at < f_at \
            and d_state in ("1:0:h", "1:0:v") and state_ok:
        if seconds > timeout / 2:  # too close to the rule's limit to call from a shared run
            return doubt, stop
        return BatchOutcome(True, None, seconds), stop
    return doubt, stop
