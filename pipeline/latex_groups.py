"""The one LaTeX brace scanner: brace depth over a text, control sequences skipped.

Every stage that needs "the end of this `{...}` group", "the first `]` or `&` outside braces" or "are the
braces balanced" walks the text with `scan_groups`, so an escaped `\\{`, `\\}` or `\\&` means the same
everywhere. It is regex-driven (fast on long bodies) and linear.
"""
from __future__ import annotations

import functools
import re
from typing import Iterator


@functools.lru_cache(maxsize=None)
def _token_re(marks: tuple[str, ...], envs: bool) -> re.Pattern:
    # marks first (so `\\\\` as a mark wins over the generic escape), then \begin/\end, escapes, braces
    alternatives = [re.escape(m) for m in sorted(marks, key=len, reverse=True)]
    if envs:
        alternatives.append(r"\\(?:begin|end)(?![a-zA-Z@])")
    alternatives += [r"\\.", r"[{}]"]
    return re.compile("|".join(alternatives), re.S)


def scan_groups(text: str, start: int = 0, marks: tuple[str, ...] = (), envs: bool = False
                ) -> Iterator[tuple[int, str, int]]:
    """(offset, token, depth after the token) for every `{`, `}` and `marks` token from `start` on.

    Control sequences (`\\{`, `\\&`, `\\\\` ...) are skipped unless named in `marks`. With `envs`,
    `\\begin` opens and `\\end` closes a level too (their `{name}` braces balance out on their own)."""
    depth = 0
    for m in _token_re(tuple(marks), envs).finditer(text, start):
        tok = m.group(0)
        if tok == "{":
            depth += 1
        elif tok == "}":
            depth -= 1
        elif tok in marks:
            pass
        elif envs and tok == "\\begin":
            depth += 1
        elif envs and tok == "\\end":
            depth -= 1
        else:
            continue
        yield m.start(), tok, depth


def skip_space(text: str, i: int) -> int:
    """Past the blanks (spaces, tabs, line ends) at text[i:], as TeX skips them before an argument."""
    n = len(text)
    while i < n and text[i] in " \t\r\n":
        i += 1
    return i


def group_end(text: str, start: int) -> int:
    """Offset just past the `{...}` group that opens at text[start], or -1 when it never closes."""
    for pos, tok, depth in scan_groups(text, start):
        if depth == 0 and tok == "}":
            return pos + 1
    return -1


def find_top_level(text: str, start: int, char: str) -> int:
    """Offset of the first `char` outside braces from `start` (escaped characters skipped), or -1."""
    for pos, tok, depth in scan_groups(text, start, (char,)):
        if tok == char and depth == 0:
            return pos
    return -1


def split_top_level(body: str, sep: str) -> list[str]:
    """Split at `sep` (`\\\\` or `&`) outside braces and nested environments."""
    parts = []
    last = 0
    for pos, tok, depth in scan_groups(body, 0, (sep,), envs=True):
        if tok == sep and depth == 0:
            parts.append(body[last:pos])
            last = pos + len(sep)
    parts.append(body[last:])
    return parts


def has_top_level(body: str, sep: str) -> bool:
    """True when `sep` occurs outside braces and nested environments."""
    return any(tok == sep and depth == 0 for _, tok, depth in scan_groups(body, 0, (sep,), envs=True))


def braces_balanced(text: str) -> bool:
    """True when every `}` closes an earlier `{` and every `{` is closed."""
    depth = 0
    for _, _, depth in scan_groups(text):
        if depth < 0:
            return False
    return depth == 0
