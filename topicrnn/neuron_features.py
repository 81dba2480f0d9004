"""Feature detectors for the neuron search: what a character-level reader could be tracking at each character.

Each detector maps a text to one float per character: its value *after reading* that character, which is what
the recurrent state after that character can know. Regions run from their opening character up to, not
including, the last character of their closing delimiter: after `"abc"` is read the quote is closed, so the
closing `"` is outside (0) while the opening one is inside (1). Binary detectors give 0/1; `brace_depth` and
`line_position` are counts. Detectors are plain text scanners (no tokenizer): the viewer maps them to tokens
by the value at each token's last character.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Feature:
    name: str  # the name `--find` takes
    description: str  # what "on" means, for pages
    domain: str  # the kind of text it is meant for: any | C | LaTeX
    detect: Callable[[str], np.ndarray]  # text -> float64 [len(text)]


def _regions(n: int, regions) -> np.ndarray:
    out = np.zeros(n, dtype=np.float64)
    for start, end in regions:
        out[start:end] = 1.0
    return out


# ------------------------------------------------------------------------------------------- any text
def quotes(text: str) -> np.ndarray:
    """Inside "…" (straight quotes toggle; a backslash escapes one inside) or “…” (curly quotes nest)."""
    out = np.zeros(len(text), dtype=np.float64)
    straight = False
    curly = 0
    escaped = False
    for i, ch in enumerate(text):
        if straight and escaped:
            escaped = False
        elif straight and ch == "\\":
            escaped = True
        elif ch == '"' and not (text[i - 1:i] == "'" and text[i + 1:i + 2] == "'"):  # not the C literal '"'
            straight = not straight
            if not straight:
                continue  # the closing quote is outside
        elif ch == "“":
            curly += 1
        elif ch == "”" and curly:
            curly -= 1
            if not curly and not straight:
                continue
        out[i] = 1.0 if (straight or curly) else 0.0
    return out


def wikilink(text: str) -> np.ndarray:
    """Inside a [[ … ]] link (wiki markup)."""
    regions, start = [], None
    for m in re.finditer(r"\[\[|\]\]", text):
        if m.group() == "[[" and start is None:
            start = m.start()
        elif m.group() == "]]" and start is not None:
            regions.append((start, m.end() - 1))
            start = None
    if start is not None:
        regions.append((start, len(text)))
    return _regions(len(text), regions)


def brace_depth(text: str) -> np.ndarray:
    """How many { are open (LaTeX's \\{ and \\} are characters, not groups)."""
    out = np.zeros(len(text), dtype=np.float64)
    depth = 0
    for i, ch in enumerate(text):
        if ch in "{}" and not _escaped(text, i):
            depth = depth + 1 if ch == "{" else max(0, depth - 1)
        out[i] = depth
    return out


def inline_math(text: str) -> np.ndarray:
    """Inside $…$ (or $$…$$; \\$ is a dollar sign)."""
    out = np.zeros(len(text), dtype=np.float64)
    inside = False
    i = 0
    while i < len(text):
        width = 0
        if text[i] == "$" and not _escaped(text, i):
            width = 2 if text[i + 1:i + 2] == "$" else 1
            inside = not inside
        if width:
            out[i:i + width] = 1.0 if inside else np.r_[np.ones(width - 1), 0.0]
            i += width
            continue
        out[i] = 1.0 if inside else 0.0
        i += 1
    return out


def line_position(text: str) -> np.ndarray:
    """Characters read since the last newline (0 right after a newline)."""
    out = np.zeros(len(text), dtype=np.float64)
    column = 0
    for i, ch in enumerate(text):
        column = 0 if ch == "\n" else column + 1
        out[i] = column
    return out


def _escaped(text: str, i: int) -> bool:
    """Whether text[i] follows an odd number of backslashes."""
    n = 0
    while i - n - 1 >= 0 and text[i - n - 1] == "\\":
        n += 1
    return n % 2 == 1


# ------------------------------------------------------------------------------------------------- C
def c_comments_and_strings(text: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(comments, string and char literals) of C code, each (start, index of the closing character)."""
    comments, strings = [], []
    i, n = 0, len(text)
    while i < n:
        two = text[i:i + 2]
        if two == "/*":
            end = text.find("*/", i + 2)
            end = n - 1 if end < 0 else end + 1
            comments.append((i, end))
            i = end + 1
        elif two == "//":
            end = text.find("\n", i)
            end = n - 1 if end < 0 else end
            comments.append((i, end))
            i = end + 1
        elif text[i] in "\"'":
            j = i + 1
            while j < n and text[j] != text[i] and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            end = min(j, n - 1)
            strings.append((i, end))
            i = end + 1
        else:
            i += 1
    return comments, strings


def _c_code_mask(text: str) -> np.ndarray:
    """True where a character is code (not in a comment or literal, delimiters included)."""
    mask = np.ones(len(text), dtype=bool)
    comments, strings = c_comments_and_strings(text)
    for start, end in comments + strings:
        mask[start:end + 1] = False
    return mask


def _match(text: str, start: int, code: np.ndarray, open_ch: str, close_ch: str) -> int:
    """Index of the bracket closing the one at `start` (len(text) if it never closes)."""
    depth = 0
    for j in range(start, len(text)):
        if not code[j]:
            continue
        if text[j] == open_ch:
            depth += 1
        elif text[j] == close_ch:
            depth -= 1
            if depth == 0:
                return j
    return len(text)


_C_IF = re.compile(r"(?<![A-Za-z0-9_])if\s*\(")


def _c_ifs(text: str) -> list[tuple[int, int, int]]:
    """(open paren, close paren, end of the statement it guards) for each `if (…)` of C code."""
    code = _c_code_mask(text)
    out = []
    for m in _C_IF.finditer(text):
        if not code[m.start()]:
            continue
        paren = m.end() - 1
        close = _match(text, paren, code, "(", ")")
        j = close + 1
        while j < len(text) and (text[j].isspace() or not code[j]):  # blanks and comments
            j += 1
        if j < len(text) and text[j] == "{":
            end = _match(text, j, code, "{", "}")
        else:  # one statement: up to its `;`
            end = next((k for k in range(j, len(text)) if text[k] == ";" and code[k]), len(text))
        out.append((paren, close, end))
    return out


def c_comment(text: str) -> np.ndarray:
    """Inside a C comment (/* … */ or // … end of line)."""
    return _regions(len(text), c_comments_and_strings(text)[0])


def if_block(text: str) -> np.ndarray:
    """Inside a C `if (…) { … }` statement: its condition and the block (or the one statement) it guards."""
    return _regions(len(text), [(paren, end) for paren, _, end in _c_ifs(text)])


def if_condition(text: str) -> np.ndarray:
    """Inside the parentheses of a C `if (…)`."""
    return _regions(len(text), [(paren, close) for paren, close, _ in _c_ifs(text)])


# ---------------------------------------------------------------------------------------------- LaTeX
_CONTROL = re.compile(r"\\(?:[a-zA-Z]+|.)", re.DOTALL)


def _latex_arg_end(text: str, i: int) -> int:
    """Index of the last character of the macro argument starting at or after `i` (a {group} or one token)."""
    while i < len(text) and text[i] in " \t\n":
        i += 1
    if i >= len(text):
        return len(text)
    if text[i] == "{":
        depth = 0
        for j in range(i, len(text)):
            if text[j] in "{}" and not _escaped(text, j):
                depth += 1 if text[j] == "{" else -1
                if depth == 0:
                    return j
        return len(text)
    m = _CONTROL.match(text, i)
    return m.end() - 1 if m else i


_FRAC = re.compile(r"\\[dtc]?frac(?![a-zA-Z])")


def frac(text: str) -> np.ndarray:
    """Inside \\frac{…}{…} (\\dfrac, \\tfrac, \\cfrac too): from the command to its denominator's end."""
    regions = []
    for m in _FRAC.finditer(text):
        numerator_end = _latex_arg_end(text, m.end())
        regions.append((m.end() - 1, _latex_arg_end(text, numerator_end + 1)))
    return _regions(len(text), regions)


def _script(text: str, mark: str) -> np.ndarray:
    regions = [(i, _latex_arg_end(text, i + 1)) for i, ch in enumerate(text) if ch == mark and not _escaped(text, i)]
    return _regions(len(text), regions)


def subscript(text: str) -> np.ndarray:
    """Inside a subscript: from `_` to the end of its argument (x_i, x_{i+1})."""
    return _script(text, "_")


def superscript(text: str) -> np.ndarray:
    """Inside a superscript: from `^` to the end of its argument."""
    return _script(text, "^")


_LEFT_RIGHT = re.compile(r"\\(left|right)(?![a-zA-Z])\s*(\\[a-zA-Z]+|\\.|.)?", re.DOTALL)


def left_right(text: str) -> np.ndarray:
    """Inside \\left( … \\right) (any delimiters; pairs nest): from the opening delimiter to the closing one."""
    regions, stack = [], []
    for m in _LEFT_RIGHT.finditer(text):
        if m.group(1) == "left":
            stack.append(m.end() - 1)
        elif stack:
            regions.append((stack.pop(), m.end() - 1))
    regions += [(start, len(text)) for start in stack]
    return _regions(len(text), regions)


FEATURES: dict[str, Feature] = {f.name: f for f in [
    Feature("quotes", "inside quotes (\"…\" or “…”)", "any", quotes),
    Feature("wikilink", "inside a [[ … ]] link", "any", wikilink),
    Feature("brace_depth", "number of open { braces", "any", brace_depth),
    Feature("inline_math", "inside $…$", "any", inline_math),
    Feature("line_position", "position in the line (characters since the newline)", "any", line_position),
    Feature("comment", "inside a C comment", "C", c_comment),
    Feature("if_block", "inside an if (…) { … } statement of C code", "C", if_block),
    Feature("if_condition", "inside the condition of a C if (…)", "C", if_condition),
    Feature("frac", "inside \\frac{…}{…}", "LaTeX", frac),
    Feature("subscript", "inside a subscript _{…}", "LaTeX", subscript),
    Feature("superscript", "inside a superscript ^{…}", "LaTeX", superscript),
    Feature("left_right", "inside \\left( … \\right)", "LaTeX", left_right),
]}


_C_SHAPE = re.compile(r"(?<![A-Za-z0-9_])(?:if|for|while)\s*\(")
_LATEX_SHAPE = re.compile(r"\\(?:frac|left|right|sum|int|mathbf|mathrm|begin|end|alpha|beta|partial)(?![a-zA-Z])")


def features_for(text: str, tokenizer_kind: str = "char") -> list[str]:
    """The features worth ranking on this text: every "any" feature, the C ones where the text looks like C
    (an `if (`, `for (` or `while (` and ; { } at least every 200 characters), the LaTeX ones for LaTeX tokens or text with math commands (so that a C
    identifier's `_` is not taken for a subscript)."""
    looks_c = bool(_C_SHAPE.search(text)) and sum(text.count(ch) for ch in ";{}") >= 0.005 * len(text)
    looks_latex = tokenizer_kind == "latex" or len(_LATEX_SHAPE.findall(text)) >= 3
    keep = {"any": True, "C": looks_c, "LaTeX": looks_latex}
    return [name for name, f in FEATURES.items() if keep[f.domain]]


def get_feature(name: str) -> Feature:
    if name not in FEATURES:
        raise ValueError(f"unknown feature {name!r}; known: {', '.join(FEATURES)}")
    return FEATURES[name]
