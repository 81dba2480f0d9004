"""Does an equation read as written by a person? String checks behind the figures of issue 20.

`delimiters_balanced(equation)`: every `(`, `[`, `\\{` (also `\\lbrace`, `\\lbrack`, after `\\big` and friends)
is closed inside the same brace group, environment or `\\left…\\right` pair it was opened in, and `\\left` /
`\\begin{…}` pair with `\\right` / `\\end{…}`. A round or square opener may close with either (`[0, 1)` is a
half-open interval); `strict=True` asks for the same kind. The words of `\\text{…}` and the optional spacing
of a line break (`\\\\[2pt]`) are prose and length, not delimiters, and are skipped.

This is the measuring stick, independent of the decoding constraint that enforces the same rule
(topicrnn.latex_syntax): generated text is checked with it, not with the constraint's own state.
"""
from __future__ import annotations

import re
from typing import Iterable

_TOKEN = re.compile(r"\\[a-zA-Z]+|\\.|.", re.DOTALL)
OPENERS = {"(": "(", "[": "[", "\\{": "{", "\\lbrace": "{", "\\lbrack": "["}
CLOSERS = {")": "(", "]": "[", "\\}": "{", "\\rbrace": "{", "\\rbrack": "["}
# Text-mode arguments: their parentheses are prose.
TEXT_MACROS = frozenset(r"\text \textrm \textbf \textit \textsf \texttt \textnormal \textup \textsl \textsc \textmd "
                        r"\emph \mbox \hbox".split())
_LEFT_RIGHT = frozenset((r"\left", r"\right", r"\middle"))


def _skip_group(tokens: list[str], i: int) -> int:
    """Index after the brace group that starts at tokens[i] (or after one token if it is not a group)."""
    while i < len(tokens) and tokens[i].isspace():
        i += 1
    if i >= len(tokens) or tokens[i] != "{":
        return i + 1
    depth = 0
    while i < len(tokens):
        if tokens[i] == "{":
            depth += 1
        elif tokens[i] == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return i


def _delimiter_after(tokens: list[str], i: int) -> int:
    """Index after the delimiter that follows \\left / \\right / \\middle at tokens[i - 1]."""
    while i < len(tokens) and tokens[i].isspace():
        i += 1
    return i + 1


def delimiters_balanced(equation: str, *, strict: bool = False) -> bool:
    """True when ( ) [ ] \\{ \\} and \\left…\\right, \\begin…\\end pair up within their groups (see the module)."""
    tokens = _TOKEN.findall(equation)
    stack: list[tuple[str, str]] = []  # ("scope", "{" | "left" | "env:NAME") or ("delim", "(" | "[" | "{")
    i = 0
    while i < len(tokens):
        t = tokens[i]
        i += 1
        if t in TEXT_MACROS:
            i = _skip_group(tokens, i)
        elif t == "\\\\":
            j = i
            while j < len(tokens) and tokens[j] in (" ", "*"):
                j += 1
            if j < len(tokens) and tokens[j] == "[":  # \\[2pt]: a length, not a bracket
                while j < len(tokens) and tokens[j] != "]":
                    j += 1
                i = j + 1
        elif t == "{":
            stack.append(("scope", "{"))
        elif t == "}":
            if not stack or stack[-1] != ("scope", "{"):
                return False
            stack.pop()
        elif t in (r"\begin", r"\end"):
            j = _skip_group(tokens, i)
            name = "".join(tokens[i:j]).strip().strip("{}").strip()
            i = j
            if t == r"\begin":
                stack.append(("scope", "env:" + name))
            elif not stack or stack[-1] != ("scope", "env:" + name):
                return False
            else:
                stack.pop()
        elif t in _LEFT_RIGHT:
            i = _delimiter_after(tokens, i)
            if t == r"\left":
                stack.append(("scope", "left"))
            elif t == r"\right":
                if not stack or stack[-1] != ("scope", "left"):
                    return False
                stack.pop()
        elif t in OPENERS:
            stack.append(("delim", OPENERS[t]))
        elif t in CLOSERS:
            if not stack or stack[-1][0] != "delim":
                return False
            opened, kind = stack[-1][1], CLOSERS[t]
            if opened != kind and (strict or "{" in (opened, kind)):
                return False
            stack.pop()
    return not stack


def balanced_share(equations: Iterable[str], *, strict: bool = False) -> float:
    """Fraction of the equations with balanced delimiters (nan for none)."""
    flags = [delimiters_balanced(e, strict=strict) for e in equations]
    return sum(flags) / len(flags) if flags else float("nan")


_EMPTY_ARGUMENT = re.compile(r"\\(?:[dt]?frac|[dt]?binom|sqrt)\s*(?:\[[^\]]*\]\s*)?"
                             r"(?:\{\s*\}|\{(?:[^{}]|\{[^{}]*\})*\}\s*\{\s*\})")
# Macros whose arguments may hold an operator alone (`\\phantom{=}`, `\\stackrel{d}{\\to}`, `\\xrightarrow{}`):
# how many brace arguments each has. Scripts are alike: `x^{2+}`, `\\mathbb{R}_+`.
ALONE_MACROS = {r"\phantom": 1, r"\hphantom": 1, r"\vphantom": 1, r"\mathrel": 1, r"\mathbin": 1, r"\mathop": 1,
                r"\stackrel": 2, r"\overset": 2, r"\underset": 2}
_BIG = re.compile(r"\\[bB]igg?[lrm]?\Z")
_XARROW = re.compile(r"\\x[a-zA-Z]*arrow[a-zA-Z]*\Z")
OPERATORS = frozenset("= < > + -".split()) | frozenset(
    r"\le \leq \ge \geq \neq \to \times \otimes \oplus \cup \cap \in \subset \subseteq \mapsto \rightarrow "
    r"\Rightarrow \longrightarrow \equiv \sim \simeq \approx \cong \pm \mp".split())
_SIGNS = frozenset((r"+", r"-", r"\pm", r"\mp"))
_LEADS = frozenset(("(", "[", "{", ",", ";", ":", "&", r"\\", r"\{", r"\lbrace", r"\lbrack", r"\begin"))
SPACING = frozenset((r"\,", r"\;", r"\:", r"\!", r"\ ", r"\quad", r"\qquad", "~", r"\>"))
_ENDS = frozenset(("}", ")", "]", ",", ";", r"\right", r"\end"))


def empty_argument(equation: str) -> bool:
    """An empty argument of \\frac, \\binom or \\sqrt (`\\frac{}{x}`, `\\sqrt{}`)."""
    return bool(_EMPTY_ARGUMENT.search(equation))


def dangling_operator(equation: str) -> bool:
    """An operator or relation directly before a closer, punctuation or the end (`a +`, `(x =)`), outside
    scripts, prose and the arguments of stacking macros; a sign with nothing before it may stand for an
    argument before a comma or closer (`\\mathrm{Hom}(-, M)`), and `/\\sim` is a quotient. A string check for
    measuring output: the decoding constraint's rule (topicrnn.latex_syntax.wellformed) is finer."""
    tokens = [t for t in _TOKEN.findall(equation) if not t.isspace()]
    alone_depth = 0  # > 0 inside a group where operators may stand alone
    groups: list[bool] = []  # per open `{`: does it open such a group?
    upcoming = 0  # brace arguments still to come that are such groups
    waiting: str | None = None  # "op" (an operand is due) | "sign" (an operand, or a comma or closer)
    previous = "("
    i = 0
    while i < len(tokens):
        t = tokens[i]
        i += 1
        if t in TEXT_MACROS:
            i = _skip_group(tokens, i)
            t = "x"
        elif t in _LEFT_RIGHT or _BIG.match(t):  # a delimiter follows: `\left>` holds no relation
            delimiter = tokens[i] if i < len(tokens) else ""
            i += 1
            t = t if t == r"\right" else ")" if _BIG.match(t) and delimiter in CLOSERS else "("
        elif t in (r"\begin", r"\end"):
            i = _skip_group(tokens, i)  # the environment's name
        elif t in ("^", "_"):
            following = tokens[i] if i < len(tokens) else ""
            if following == "{" or (following.startswith("\\") and following[1:].isalpha()
                                    and following not in TEXT_MACROS and tokens[i + 1:i + 2] == ["{"]):
                upcoming += 1  # x^{2+}, x^\mathrm{+}: the group is the script
                i += following != "{"
            elif following not in TEXT_MACROS:
                i += 1  # a one-token script: x^+
            continue
        elif t in ALONE_MACROS or _XARROW.match(t):
            upcoming += ALONE_MACROS.get(t, 1)
            if i < len(tokens) and tokens[i] == "[":  # \xrightarrow[..]: to the first `]` outside braces
                depth = 0
                while i < len(tokens) and (tokens[i] != "]" or depth):
                    depth += (tokens[i] == "{") - (tokens[i] == "}")
                    i += 1
                i += 1
            if i < len(tokens) and tokens[i] != "{":  # a one-token argument: \phantom\cup
                i += 1
                upcoming -= 1
        if t in SPACING:
            continue  # spacing neither gives an operand nor ends the wait
        if alone_depth == 0 and waiting is not None and (t in _ENDS and not (waiting == "sign" and t in ",)]")):
            return True
        if t == "{":
            opens_alone = upcoming > 0
            upcoming -= opens_alone
            groups.append(opens_alone)
            alone_depth += opens_alone
        elif t == "}" and groups:
            alone_depth -= groups.pop()
        if alone_depth == 0 and t in OPERATORS and not (previous == "/" and t in (r"\sim", r"\cong", r"\simeq")):
            waiting = "sign" if t in _SIGNS and waiting is None and previous in _LEADS else "op"
        elif alone_depth == 0 or t != "{":
            waiting = None
        previous = t
    return waiting == "op"
