"""LaTeX source cleaning, display-math extraction and normalisation (context words: `pipeline.latex_prose`).

Everything here works on already-decoded text of one paper. The functions are pure and bounded: a 10 MB line,
an environment that never closes or a stray `\\iffalse` cost linear time and never raise.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.latex_groups import group_end, has_top_level, split_top_level

# ----------------------------------------------------------------------------------------------- cleaning

# A `%` that is not escaped: preceded by an even number of backslashes (including none).
_COMMENT_ENV_RE = re.compile(r"\\begin\{comment\}.*?(?:\\end\{comment\}|\Z)", re.S)
# Verbatim-like environments whose bodies are not LaTeX: their display math is not math.
_VERBATIM_ENVS = ("verbatim", "verbatim*", "Verbatim", "lstlisting", "minted", "alltt", "Sinput", "Soutput",
                  "Schunk", "Scode", "CodeInput", "CodeOutput", "CodeChunk", "knitrout", "filecontents",
                  "filecontents*", "tikzpicture")
_VERBATIM_RE = re.compile(
    r"\\begin\{(" + "|".join(re.escape(e) for e in _VERBATIM_ENVS) + r")\}.*?(?:\\end\{\1\}|\Z)", re.S)
_VERB_RE = re.compile(r"\\verb\*?([^a-zA-Z\s])[^\n]*?\1")
# \iffalse and every conditional that needs its own \fi. \iff (a math symbol) and \ifthenelse are not.
_IF_TOKEN_RE = re.compile(r"\\(iffalse|if[a-zA-Z]*|fi|else)(?![a-zA-Z])")
_NOT_CONDITIONALS = {"iff", "ifthenelse", "ifstrequal", "ifstrempty", "ifblank", "ifdef", "ifundef", "ifcsdef",
                     "ifnumcomp", "ifboolexpr", "ifbool", "iftoggle", "ifpdf"}


def strip_comments(text: str) -> str:
    """Remove `%` comments (TeX also eats the newline and the next line's leading blanks)."""
    i = text.find("%")
    if i == -1:
        return text
    out = []
    pos = 0
    n = len(text)
    while i != -1:
        k = i - 1
        while k >= pos and text[k] == "\\":
            k -= 1
        if (i - 1 - k) % 2 == 1:  # `\%` is a percent sign
            i = text.find("%", i + 1)
            continue
        out.append(text[pos:i])
        e = text.find("\n", i)
        if e == -1:
            pos = n
            break
        e += 1
        while e < n and text[e] in " \t":
            e += 1
        pos = e
        i = text.find("%", pos)
    out.append(text[pos:])
    return "".join(out)


def strip_iffalse(text: str) -> tuple[str, int]:
    """Remove `\\iffalse ... \\fi` blocks (keeping an `\\else` branch); returns (text, blocks that never close)."""
    if "\\iffalse" not in text:
        return text, 0
    out: list[str] = []
    pos = 0
    unclosed = 0
    while True:
        start = text.find("\\iffalse", pos)
        while start != -1 and re.match(r"[a-zA-Z]", text[start + 8:start + 9] or " "):
            start = text.find("\\iffalse", start + 8)
        if start == -1:
            out.append(text[pos:])
            break
        out.append(text[pos:start])
        depth = 0
        keep_from = None
        end = None
        for m in _IF_TOKEN_RE.finditer(text, start):
            name = m.group(1)
            if name == "fi":
                depth -= 1
                if depth == 0:
                    end = m.start() if keep_from is not None else m.end()
                    break
            elif name == "else":
                if depth == 1 and keep_from is None:
                    keep_from = m.end()
            elif name not in _NOT_CONDITIONALS:
                depth += 1
        if end is None:
            unclosed += 1
            pos = len(text)
            out.append("")
            break
        if keep_from is not None:
            out.append(text[keep_from:end])
            fi = _IF_TOKEN_RE.search(text, end)
            pos = fi.end() if fi else len(text)
        else:
            pos = end
    return "".join(out), unclosed


_RNW_CHUNK_RE = re.compile(r"(?ms)^<<[^\n]*>>=[ \t]*\n.*?(?:^@[ \t]*$|\Z)")


def strip_rnw(text: str) -> str:
    """Drop R chunks (`<<...>>=` ... `@`) and `\\Sexpr{...}` from a Sweave/knitr `.Rnw` file."""
    text = _RNW_CHUNK_RE.sub("", text)
    out = []
    pos = 0
    while True:
        i = text.find("\\Sexpr", pos)
        if i == -1:
            out.append(text[pos:])
            break
        out.append(text[pos:i])
        j = i + len("\\Sexpr")
        if j < len(text) and text[j] == "{":
            end = group_end(text, j)
            pos = end if end != -1 else j
            out.append(" ")
        else:
            pos = j
    return "".join(out)


def clean_source(text: str, *, rnw: bool = False) -> tuple[str, dict[str, int]]:
    """Comments, `comment` environments, `\\iffalse ... \\fi`, NULs, R chunks. Returns (text, problem counts)."""
    problems: dict[str, int] = {}
    text = text.replace("\x00", "")
    if rnw:
        text = strip_rnw(text)
    text = _VERB_RE.sub(" ", text) if "\\verb" in text else text
    text = strip_comments(text)
    text = _COMMENT_ENV_RE.sub("", text) if "\\begin{comment}" in text else text
    text, unclosed = strip_iffalse(text)
    if unclosed:
        problems["\\iffalse without \\fi (rest of file dropped)"] = unclosed
    return text, problems


def remove_verbatim(text: str) -> str:
    """Blank out verbatim-like environments (keeping length, so offsets stay valid)."""
    if "\\begin{" not in text:
        return text
    return _VERBATIM_RE.sub(lambda m: " " * len(m.group(0)), text)


# ----------------------------------------------------------------------------------------------- display math

DISPLAY_ENVS = ("equation", "align", "alignat", "gather", "multline", "eqnarray", "flalign", "displaymath",
                "dmath", "math_display")
_DISPLAY_ENV_NAMES = {e for e in DISPLAY_ENVS} | {e + "*" for e in DISPLAY_ENVS}
_DISPLAY_ENV_NAMES.discard("math_display")
_DISPLAY_ENV_NAMES.discard("math_display*")
# Tokens that matter while scanning for display math; escaped `\$` and `\\` are consumed so they never match.
_SCAN_RE = re.compile(r"\\\\|\\\$|\\\[|\\\]|\\\(|\\\)|\\begin\s*\{([^{}\s]{1,40})\}|\$\$|\$")


@dataclass
class RawDisplay:
    env: str        # original environment: "align*", "$$", "\\[", ...
    body: str       # the math between the delimiters, untouched
    start: int      # offset of the opening delimiter in the scanned text
    end: int        # offset just past the closing delimiter
    arg: str = ""   # alignat's column count


def find_displays(text: str, env_args: dict[str, tuple[int, str | None]] | None = None,
                  inline: list[tuple[int, int]] | None = None) -> tuple[list[RawDisplay], dict[str, int]]:
    """All display equations of a cleaned document in order, plus problem counts (unclosed environments, ...).

    Inline math (`$..$`, `\\(..\\)`) is skipped; its spans are appended to `inline` when given. Display math
    nested inside another display is part of the outer one. An environment that never closes is reported and scanning goes on after its opening.
    """
    displays: list[RawDisplay] = []
    problems: dict[str, int] = {}
    pos = 0
    n = len(text)

    def problem(reason: str) -> None:
        problems[reason] = problems.get(reason, 0) + 1

    while pos < n:
        m = _SCAN_RE.search(text, pos)
        if m is None:
            break
        tok = m.group(0)
        if tok == "$":
            # inline math: skip to the closing single `$`
            close = _find_inline_dollar_close(text, m.end())
            if close != -1 and inline is not None and text[close - 1] == "$":
                inline.append((m.start(), close))
            pos = close if close != -1 else m.end()
            continue
        if tok == "\\(":
            close = text.find("\\)", m.end())
            if close != -1 and inline is not None:
                inline.append((m.start(), close + 2))
            pos = close + 2 if close != -1 else m.end()
            continue
        if tok == "$$":
            close = _find_token(text, "$$", m.end())
            if close == -1:
                problem("unclosed $$")
                pos = m.end()
                continue
            displays.append(RawDisplay("$$", text[m.end():close], m.start(), close + 2))
            pos = close + 2
            continue
        if tok == "\\[":
            close = _find_token(text, "\\]", m.end())
            if close == -1:
                problem("unclosed \\[")
                pos = m.end()
                continue
            displays.append(RawDisplay("\\[", text[m.end():close], m.start(), close + 2))
            pos = close + 2
            continue
        env = m.group(1)
        if env is not None and env in _DISPLAY_ENV_NAMES:
            body_start = m.end()
            arg = ""
            if env.startswith("alignat"):
                am = re.match(r"\s*(?:\{([^{}]*)\}|(\d))", text[body_start:body_start + 50])
                if am:
                    arg = am.group(1) if am.group(1) is not None else am.group(2)
                    body_start += am.end()
            if env_args and env in env_args:  # a display environment the paper redefined with arguments
                nargs, default = env_args[env]
                body_start = _skip_env_args(text, body_start, nargs, default is not None)
            close = find_env_end(text, env, body_start)
            if close is None:
                problem(f"unclosed environment {env}")
                pos = m.end()
                continue
            end_start, end_end = close
            displays.append(RawDisplay(env, text[body_start:end_start], m.start(), end_end, arg))
            pos = end_end
            continue
        pos = m.end()
    return displays, problems


def _skip_env_args(text: str, i: int, nargs: int, has_optional: bool) -> int:
    for k in range(nargs):
        j = i
        while j < len(text) and text[j] in " \t\n":
            j += 1
        if k == 0 and has_optional:
            if text.startswith("[", j):
                close = text.find("]", j)
                i = close + 1 if close != -1 else j
            continue
        if text.startswith("{", j):
            end = group_end(text, j)
            i = end if end != -1 else j
        elif j < len(text):
            i = j + 1
    return i


def _find_token(text: str, token: str, start: int) -> int:
    """Next unescaped `token` (`$$` or `\\]`) at or after start; -1 if none."""
    i = start
    while True:
        j = text.find(token, i)
        if j == -1:
            return -1
        # count backslashes before j
        k = j - 1
        while k >= start and text[k] == "\\":
            k -= 1
        nback = j - 1 - k
        if token == "$$" and nback % 2 == 1:
            i = j + 1
            continue
        if token == "\\]" and nback % 2 == 1:  # `\\]` is a line break followed by `]`
            i = j + 1
            continue
        return j


def _find_inline_dollar_close(text: str, start: int) -> int:
    """Offset just past the `$` closing inline math opened before `start`; stops at a blank line."""
    i = start
    n = len(text)
    limit = min(n, start + 5000)
    while i < limit:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "$":
            return i + 1
        if c == "\n" and text.startswith("\n", i + 1):
            return i  # paragraph ended: unbalanced `$`
        i += 1
    return -1


def find_env_end(text: str, env: str, start: int) -> tuple[int, int] | None:
    begin = "\\begin{" + env + "}"
    end = "\\end{" + env + "}"
    depth = 1
    i = start
    while True:
        j = text.find(end, i)
        if j == -1:
            return None
        k = text.find(begin, i, j)
        if k != -1:
            depth += 1
            i = k + len(begin)
            continue
        depth -= 1
        if depth == 0:
            return j, j + len(end)
        i = j + len(end)


# ----------------------------------------------------------------------------------------------- normalisation

_DROP_CMDS_RE = re.compile(r"\\(?:nonumber|notag|displaybreak(?:\[\d\])?|allowdisplaybreaks(?:\[\d\])?|"
                           r"nopagebreak|pagebreak|centering|linebreak)(?![a-zA-Z])")
_LABEL_LIKE = ("label", "tag", "tag*", "eqlabel", "hypertarget", "index")
_TRAILING_RE = re.compile(r"(?:\s|\\[,;:!\s]|\\q?quad(?![a-zA-Z])|~|\\\\)+$|(?<!\\)\\$")
_ENV_TARGET = {
    "align": "aligned", "flalign": "aligned", "gather": "gathered", "multline": "multlined",
    "eqnarray": "aligned", "alignat": "alignedat",
}


def remove_command_with_arg(text: str, name: str, *, keep_arg: bool = False, replacement: str = "") -> str:
    """Remove every `\\name{...}` (and `\\name*{...}`), optionally keeping the argument."""
    token = "\\" + name
    if token not in text:
        return text
    out = []
    pos = 0
    while True:
        i = text.find(token, pos)
        if i == -1:
            out.append(text[pos:])
            break
        j = i + len(token)
        if j < len(text) and (text[j].isalpha() or text[j] == "@"):
            out.append(text[pos:j])
            pos = j
            continue
        if name[-1] != "*" and text.startswith("*", j):
            j += 1
        while j < len(text) and text[j] in " \t\n":
            j += 1
        out.append(text[pos:i])
        if j < len(text) and text[j] == "{":
            end = group_end(text, j)
            if end == -1:
                out.append(replacement)
                pos = j + 1
                continue
            out.append(("{" + text[j + 1:end - 1] + "}") if keep_arg else replacement)
            pos = end
        else:
            out.append(replacement)
            pos = j
    return "".join(out)


def normalise_display(d: RawDisplay) -> str:
    """Turn a display's body into one self-contained piece of math that compiles inside `\\[ \\]`."""
    body = d.body
    for name in _LABEL_LIKE:
        body = remove_command_with_arg(body, name)
    body = _DROP_CMDS_RE.sub(" ", body)
    body = remove_command_with_arg(body, "intertext", replacement="\\\\")
    body = remove_command_with_arg(body, "shortintertext", replacement="\\\\")
    base = d.env.rstrip("*")
    body = body.strip()
    body = _strip_trailing(body)
    target = _ENV_TARGET.get(base)
    if base == "eqnarray":
        rows = split_top_level(body, "\\\\")
        new_rows = []
        for row in rows:
            cells = split_top_level(row, "&")
            if len(cells) >= 3:
                row = cells[0] + "&" + cells[1] + " " + "".join(cells[2:])
            new_rows.append(row)
        body = "\\\\".join(new_rows)
    if target is None:
        # equation, displaymath, dmath, \[, $$: wrap only when the body has rows or alignment points
        multi_row = has_top_level(body, "\\\\")
        aligned = has_top_level(body, "&")
        if aligned:
            target = "aligned"
        elif multi_row:
            target = "gathered"
    if target == "multlined" and not has_top_level(body, "\\\\"):
        target = None
    if target == "alignedat":
        body = "\\begin{alignedat}{" + (d.arg or "1") + "}" + body + "\\end{alignedat}"
    elif target and not (target in ("aligned", "gathered") and not has_top_level(body, "\\\\")
                         and not has_top_level(body, "&")):
        body = "\\begin{" + target + "}" + body + "\\end{" + target + "}"
    if "\\begin{" in body:  # display environments nested inside a display (amsmath's testmath does this)
        body = _NESTED_DISPLAY_RE.sub(lambda m: "\\" + m.group(1) + "{" + _NESTED_TARGET[m.group(2)] + "}", body)
    body = collapse_whitespace(body)
    # amsmath quirk: `\begin{aligned}&` (empty first cell) followed later in the row by `\sin`, `\dots`, ...
    # stops pdflatex with "Missing control sequence inserted"; an empty group first avoids it
    body = _ALIGNED_AMP_RE.sub(lambda m: m.group(1) + "{}&", body)
    return body


_NESTED_DISPLAY_RE = re.compile(r"\\(begin|end)\{(align|flalign|gather)\*?\}")
_NESTED_TARGET = {"align": "aligned", "flalign": "aligned", "gather": "gathered"}
_ALIGNED_AMP_RE = re.compile(r"(\\begin\{(?:aligned\}(?:\[[tbc]\])?|split\}|alignedat\}\{[^{}]*\}))\s*&")


def _strip_trailing(body: str) -> str:
    prev = None
    while prev != body:
        prev = body
        body = _TRAILING_RE.sub("", body)
        if body.endswith((",", ".", ";")) and not body.endswith(("\\,", "\\;", "\\.")) and \
                not _DELIM_DOT_RE.search(body):
            body = body[:-1]
        elif body.endswith(("\\text{.}", "\\text{,}", "\\mathrm{.}", "\\mbox{.}", "\\text{;}")):
            body = body[: body.rfind("\\")]
    return body.strip()


_WS_RE = re.compile(r"\s+")
_DELIM_DOT_RE = re.compile(r"\\(?:right|left|middle|[bB]igg?[lrm]?)\s*\.$")


def collapse_whitespace(text: str) -> str:
    text = _WS_RE.sub(" ", text).strip()
    # `\ ` at the very end would become a dangling backslash
    if text.endswith("\\"):
        text = text[:-1].rstrip()
    return text
