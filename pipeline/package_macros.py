"""Well-known package macros rewritten into what the compile rule's preamble knows, and a check for commands
the preamble does not define.

The compile rule (docs/compile-rule.md) loads only amsmath, amssymb, amsfonts, mathtools and bm. Papers use
more: physics (`\\abs`, `\\dv`, `\\braket`...), braket, siunitx, mathrsfs, dsfont, bbm, cancel, xcolor, ...
`PACKAGE_DEFINITIONS` states their common macros in LaTeX, as a paper would; the paper's own definitions
always win over these. `undefined_commands(eq)` lists control words (and environments) of `eq` that the rule's
preamble does not define, using `rule_commands.txt`: every control word of the LaTeX kernel and those packages'
sources, verified one by one with `\\ifcsname` in a real pdflatex run (`python -m pipeline.package_macros`).
"""
from __future__ import annotations

import functools
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from pipeline.latex_groups import braces_balanced
from pipeline.latex_macros import Macro, MacroTable, collect_macros, special_macros

KNOWN_COMMANDS_FILE = Path(__file__).resolve().parent / "rule_commands.txt"

# Rewrites into the rule's preamble. Conflicting meanings (physics `\qty` vs siunitx `\qty`) are left out.
PACKAGE_DEFINITIONS = r"""
% physics
\newcommand{\abs}[1]{\left\lvert #1\right\rvert}
\newcommand{\norm}[1]{\left\lVert #1\right\rVert}
\newcommand{\bra}[1]{\left\langle #1\right\rvert}
\newcommand{\ket}[1]{\left\lvert #1\right\rangle}
\newcommand{\ketbra}[2]{\left\lvert #1\middle\rangle\!\middle\langle #2\right\rvert}
\newcommand{\expval}[1]{\left\langle #1\right\rangle}
\newcommand{\ev}[1]{\left\langle #1\right\rangle}
\newcommand{\mel}[3]{\left\langle #1\middle\vert #2\middle\vert #3\right\rangle}
\newcommand{\dd}{\mathrm{d}}
\newcommand{\fdv}[2]{\frac{\delta #1}{\delta #2}}
\newcommand{\order}[1]{\mathcal{O}\left(#1\right)}
\newcommand{\tr}{\operatorname{tr}}
\newcommand{\Tr}{\operatorname{Tr}}
\newcommand{\rank}{\operatorname{rank}}
\newcommand{\grad}{\nabla}
\newcommand{\curl}{\nabla\times}
\newcommand{\divergence}{\nabla\cdot}
\newcommand{\laplacian}{\nabla^2}
\newcommand{\vb}[1]{\mathbf{#1}}
\newcommand{\vu}[1]{\hat{\mathbf{#1}}}
\newcommand{\va}[1]{\vec{#1}}
\newcommand{\comm}[2]{\left[#1,#2\right]}
\newcommand{\acomm}[2]{\left\{#1,#2\right\}}
\newcommand{\pmqty}[1]{\begin{pmatrix}#1\end{pmatrix}}
\newcommand{\bmqty}[1]{\begin{bmatrix}#1\end{bmatrix}}
\newcommand{\vmqty}[1]{\begin{vmatrix}#1\end{vmatrix}}
% braket package (`\Braket{a|b}` style)
\newcommand{\Braket}[1]{\left\langle #1\right\rangle}
\newcommand{\Bra}[1]{\left\langle #1\right\rvert}
\newcommand{\Ket}[1]{\left\lvert #1\right\rangle}
\newcommand{\Set}[1]{\left\{#1\right\}}
% siunitx (units as upright text)
\newcommand{\SI}[2]{#1\,\mathrm{#2}}
\newcommand{\si}[1]{\mathrm{#1}}
\newcommand{\num}[1]{#1}
\newcommand{\unit}[1]{\mathrm{#1}}
\newcommand{\ang}[1]{#1^{\circ}}
% fonts: mathrsfs, dsfont, bbm, bbold, esvect, upgreek
\newcommand{\mathscr}[1]{\mathcal{#1}}
\newcommand{\mathds}[1]{\mathbb{#1}}
\newcommand{\mathbbm}[1]{\mathbb{#1}}
\newcommand{\bbm}[1]{\mathbb{#1}}
\newcommand{\vv}[1]{\vec{#1}}
\newcommand{\upmu}{\mu}
\newcommand{\uppi}{\pi}
\newcommand{\upalpha}{\alpha}
\newcommand{\upbeta}{\beta}
\newcommand{\upgamma}{\gamma}
\newcommand{\updelta}{\delta}
\newcommand{\upepsilon}{\epsilon}
\newcommand{\uptau}{\tau}
\newcommand{\upsigma}{\sigma}
\newcommand{\mathbold}[1]{\boldsymbol{#1}}
\newcommand{\bsym}[1]{\boldsymbol{#1}}
% cancel, xcolor, soul, ulem: keep the math, drop the decoration
\newcommand{\cancel}[1]{#1}
\newcommand{\bcancel}[1]{#1}
\newcommand{\xcancel}[1]{#1}
\newcommand{\cancelto}[2]{#2}
\newcommand{\textcolor}[2]{#2}
\newcommand{\color}[1]{}
\newcommand{\colorbox}[2]{#2}
\newcommand{\hl}[1]{#1}
\newcommand{\uline}[1]{\underline{#1}}
% references and links (hyperref, cleveref)
\newcommand{\cref}[1]{\ref{#1}}
\newcommand{\Cref}[1]{\ref{#1}}
\newcommand{\autoref}[1]{\ref{#1}}
\newcommand{\href}[2]{#2}
\newcommand{\hyperref}[2][]{#2}
\newcommand{\url}[1]{\texttt{#1}}
% xfrac, nicefrac, gensymb, textcomp, stmaryrd, relsize, units
\newcommand{\sfrac}[2]{{#1}/{#2}}
\newcommand{\nicefrac}[2]{{#1}/{#2}}
\newcommand{\unitfrac}[2]{{#1}/{#2}}
\newcommand{\degree}{^{\circ}}
\newcommand{\celsius}{^{\circ}\mathrm{C}}
\newcommand{\textdegree}{^{\circ}}
\newcommand{\llbracket}{[\![}
\newcommand{\rrbracket}{]\!]}
\newcommand{\mathlarger}[1]{#1}
\newcommand{\mathsmaller}[1]{#1}
\newcommand{\eqdef}{\stackrel{\mathrm{def}}{=}}
% AASTeX
\newcommand{\sun}{\odot}
\newcommand{\earth}{\oplus}
\newcommand{\arcsec}{{}^{\prime\prime}}
\newcommand{\arcmin}{{}^{\prime}}
\newcommand{\farcs}{.\!\!^{\prime\prime}}
\newcommand{\farcm}{.\!\!^{\prime}}
\newcommand{\micron}{\mu\mathrm{m}}
"""


@functools.lru_cache(maxsize=1)
def package_macros() -> dict[str, Macro]:
    table, _ = collect_macros(PACKAGE_DEFINITIONS, MacroTable())
    for macro in table.macros.values():
        macro.braced_args_only = True  # never swallow `&`, `\\` or a lone token: `\si` may be a paper's sigma
    table.macros.update(special_macros())
    known = known_commands()
    # never shadow something the rule's preamble already defines (e.g. amsmath's own commands)
    return {k: v for k, v in table.macros.items() if not known or k not in known}


@functools.lru_cache(maxsize=1)
def known_commands() -> frozenset[str]:
    """Control-word names (and environment names) that the compile rule's preamble defines; empty if unknown."""
    try:
        return frozenset(line.strip() for line in KNOWN_COMMANDS_FILE.read_text().splitlines() if line.strip())
    except OSError:
        return frozenset()


_CS_RE = re.compile(r"(\\\\)|\\begin\s*\{([^{}]+)\}|\\([a-zA-Z]+)")
# Defined by LaTeX, but only for text fonts: in math under the rule's OT1 encoding they stop the run.
_TEXT_ONLY = {"th", "TH", "dh", "DH", "dj", "DJ", "ng", "NG", "textquotedbl", "guillemotleft", "guillemotright"}


def undefined_commands(equation: str) -> list[str]:
    """Commands (`\\name`, or `{env}` for environments) in `equation` that the rule's preamble lacks."""
    known = known_commands()
    if not known:
        return []
    out = []
    for m in _CS_RE.finditer(equation):
        if m.group(1):
            continue
        name = m.group(3)
        if name is not None:
            if (name not in known or name in _TEXT_ONLY) and name != "end":
                out.append("\\" + name)
        else:
            env = m.group(2).strip()
            if env not in known:
                out.append("{" + env + "}")
    return sorted(set(out))


_CONVENTIONS = [
    (re.compile(r"^(?:bb|mathbb|BB|Bbb)([A-Za-z])$"), "\\mathbb{%s}"),
    (re.compile(r"^(?:c|cal|mc|mcal|C)([A-Z])$"), "\\mathcal{%s}"),
    (re.compile(r"^(?:s|sc|scr|msc)([A-Z])$"), "\\mathcal{%s}"),
    (re.compile(r"^(?:frak|fr|mf|mfrak|g|f)([A-Za-z])$"), "\\mathfrak{%s}"),
    (re.compile(r"^(?:bf|mb|mbf|vb)([A-Za-z])$"), "\\mathbf{%s}"),
    (re.compile(r"^(?:rm|mr|mrm)([A-Za-z])$"), "\\mathrm{%s}"),
    (re.compile(r"^([NZQRCFHPE])$"), "\\mathbb{%s}"),
]


def conventional_macro(name: str) -> Macro | None:
    """A guess for an undefined command named by a common convention (`\\bbH` -> `\\mathbb{H}`, `\\cA` ->
    `\\mathcal{A}`, `\\R` -> `\\mathbb{R}`): used only when neither the paper nor the rule's preamble
    defines the name (e.g. a book chapter whose macros live in the book's preamble)."""
    for pattern, template in _CONVENTIONS:
        m = pattern.match(name)
        if m:
            return Macro(name, 0, None, template % m.group(1))
    return None


# ----------------------------------------------------------------------------------------------- building the list

RULE_PREAMBLE_FILES = ["latex.ltx", "fontmath.ltx", "fonttext.ltx", "article.cls", "size10.clo",
                       "amsmath.sty", "amssymb.sty", "amsfonts.sty", "amsbsy.sty", "amsopn.sty", "amstext.sty",
                       "amsgen.sty", "mathtools.sty", "mhsetup.sty", "calc.sty", "keyval.sty", "bm.sty",
                       "expl3-code.tex", "latex2e-first-aid-for-external-files.ltx"]


def build_known_commands(extra_names: list[str] = (), out_path: Path = KNOWN_COMMANDS_FILE) -> int:
    """Verify candidate names with pdflatex under the compile rule's preamble; writes the defined ones."""
    candidates: set[str] = set(extra_names)
    for f in RULE_PREAMBLE_FILES:
        try:
            path = subprocess.run(["kpsewhich", f], capture_output=True, text=True, check=False).stdout.strip()
        except OSError:
            path = ""
        if not path:
            continue
        text = Path(path).read_text(encoding="latin-1")
        candidates.update(re.findall(r"\\([a-zA-Z]+)", text))
        candidates.update(re.findall(r"\\tex_([a-zA-Z]+):D", text))
        candidates.update(re.findall(r"\{([a-zA-Z]+\*?)\}", text))  # environment names
    names = sorted(n for n in candidates if re.fullmatch(r"[a-zA-Z]+\*?", n))
    body = "\n".join(f"\\check{{{n}}}" for n in names)
    doc = (r"\documentclass{article}" "\n" r"\usepackage{amsmath,amssymb,amsfonts,mathtools,bm}" "\n"
           r"\begin{document}" "\n" r"\newwrite\knownout \immediate\openout\knownout=known.txt" "\n"
           r"\def\check#1{\ifcsname #1\endcsname\immediate\write\knownout{#1}\fi}" "\n" + body + "\n"
           r"\immediate\closeout\knownout" "\n" r"\end{document}" "\n")
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "k.tex").write_text(doc)
        subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape", "k.tex"],
                       cwd=tmp, capture_output=True, check=False, timeout=300)
        known = sorted(set(Path(tmp, "known.txt").read_text(encoding="latin-1").split()))
    out_path.write_text("\n".join(known) + "\n")
    return len(known)


_LEFT_RE = re.compile(r"\\left(?![a-zA-Z@])")
_RIGHT_RE = re.compile(r"\\right(?![a-zA-Z@])")


def structure_problem(equation: str) -> str | None:
    """A reason when `equation` cannot compile whatever the preamble: unbalanced braces or \\left/\\right."""
    if not braces_balanced(equation):
        return "unbalanced braces"
    if len(_LEFT_RE.findall(equation)) != len(_RIGHT_RE.findall(equation)):
        return "unbalanced \\left/\\right"
    return None


if __name__ == "__main__":
    extra = Path(sys.argv[1]).read_text().split() if len(sys.argv) > 1 else []
    print(build_known_commands(extra), "defined names written to", KNOWN_COMMANDS_FILE)
