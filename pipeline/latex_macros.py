"""Collect a paper's macro definitions and expand them inside extracted equations.

Supported: `\\newcommand`/`\\renewcommand`/`\\providecommand`/`\\DeclareRobustCommand` (starred too, with
`[n]` arguments and an optional first argument `[default]`), `\\def`/`\\gdef`/`\\edef`/`\\xdef` with undelimited
`#1..#9`, `\\DeclareMathOperator(*)` and `\\let`. Expansion is bounded: a recursive or exploding macro raises
`MacroLimitError` so the caller drops that one equation.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from pipeline.latex_groups import find_top_level, group_end, skip_space


class MacroLimitError(ValueError):
    """Raised when expanding an equation needs too many steps or grows too long (recursive macros)."""


@dataclass
class Macro:
    name: str                   # without the backslash
    nargs: int = 0
    default: str | None = None  # default of the optional first argument, None when there is none
    body: str = ""
    rescan: bool = True         # False for `\let` aliases of commands we do not define (never re-expanded)
    handler: object = None      # callable(text, i) -> (replacement, index after the call) for special macros
    braced_args_only: bool = False  # expand only when every mandatory argument is a {group}


@dataclass
class ExpandConfig:
    max_expansions: int = 2000     # macro calls per equation before it is dropped as recursive
    max_length: int = 20000        # characters an equation may grow to while expanding
    keep_blanks: bool = False      # keep the blanks after a control word (prose: `\gw signal` stays two words)


@dataclass
class MacroTable:
    macros: dict[str, Macro] = field(default_factory=dict)
    unsupported: dict[str, int] = field(default_factory=dict)  # e.g. delimited \def parameters
    envs: dict[str, tuple[int, str | None]] = field(default_factory=dict)  # (re)newenvironment: (nargs, default)
    delimited: dict[str, tuple[str, str]] = field(default_factory=dict)  # \def\x(#1){..}: (parameters, body)


_DEF_RE = re.compile(r"\\(?:(?:global|long|protected|outer)\s*)*\\?"
                     r"(newcommand|renewcommand|providecommand|DeclareRobustCommand|def|gdef|edef|xdef|"
                     r"DeclareMathOperator|let|newenvironment|renewenvironment)(?![a-zA-Z@])")
_NAME_RE = re.compile(r"\s*(?:\{\s*\\([a-zA-Z@]+|.)\s*\}|\\([a-zA-Z@]+|.))", re.S)
_CS_RE = re.compile(r"\\([a-zA-Z@]+)|\\.", re.S)
_PARAM_RE = re.compile(r"#(#|[1-9])")
_NEVER_DEFINE = {"begin", "end", "left", "right", "item", "par", "relax"}


def collect_macros(text: str, table: MacroTable | None = None) -> tuple[MacroTable, str]:
    """Parse every definition in `text` (in order; later ones win, `\\providecommand` never overrides).

    Returns the table and `text` with the definitions blanked out (same length, so offsets stay valid), so
    that display math written inside a definition body is never extracted as an equation.
    """
    table = table or MacroTable()
    if "\\" not in text:
        return table, text
    spans: list[tuple[int, int]] = []
    pos = 0
    while True:
        m = _DEF_RE.search(text, pos)
        if m is None:
            break
        kind = m.group(1)
        try:
            parsed = _parse_definition(text, m.end(), kind, table)
        except _BadDefinition:
            parsed = None
        if parsed is None:
            pos = m.end()
            continue
        macro, end = parsed
        if macro is not None and macro.name not in _NEVER_DEFINE:
            if kind == "providecommand" and macro.name in table.macros:
                pass
            else:
                table.macros[macro.name] = macro
        spans.append((m.start(), end))
        pos = end
    if spans:
        parts = []
        last = 0
        for s, e in spans:
            parts.append(text[last:s])
            parts.append(" " * (e - s))
            last = e
        parts.append(text[last:])
        text = "".join(parts)
    return table, text


class _BadDefinition(Exception):
    pass


def _read_group(text: str, i: int) -> tuple[str, int]:
    """Brace group starting at text[i] == '{' -> (content, index after)."""
    if i >= len(text) or text[i] != "{":
        raise _BadDefinition
    end = group_end(text, i)
    if end == -1:
        raise _BadDefinition
    return text[i + 1:end - 1], end


def _read_bracket(text: str, i: int) -> tuple[str, int]:
    """`[...]` starting at text[i] == '[' (braces inside are respected) -> (content, index after)."""
    j = find_top_level(text, i + 1, "]")
    if j < 0:
        raise _BadDefinition
    return text[i + 1:j], j + 1


def _parse_definition(text: str, i: int, kind: str, table: MacroTable) -> tuple[Macro | None, int] | None:
    if kind in ("newcommand", "renewcommand", "providecommand", "DeclareRobustCommand"):
        if text.startswith("*", i):
            i += 1
        nm = _NAME_RE.match(text, i)
        if nm is None:
            raise _BadDefinition
        name = nm.group(1) or nm.group(2)
        i = skip_space(text, nm.end())
        nargs = 0
        default = None
        if text.startswith("[", i):
            n_str, i = _read_bracket(text, i)
            if not n_str.strip().isdigit():
                raise _BadDefinition
            nargs = int(n_str.strip())
            i = skip_space(text, i)
            if text.startswith("[", i):
                default, i = _read_bracket(text, i)
                i = skip_space(text, i)
        body, end = _read_group(text, i)
        return Macro(name, nargs, default, _clean_body(body)), end
    if kind in ("def", "gdef", "edef", "xdef"):
        nm = re.compile(r"\s*\\([a-zA-Z@]+|.)", re.S).match(text, i)
        if nm is None:
            raise _BadDefinition
        name = nm.group(1)
        i = nm.end()
        brace = text.find("{", i, i + 200)
        if brace == -1:
            raise _BadDefinition
        params = text[i:brace]
        body, end = _read_group(text, brace)
        compact = re.sub(r"\s+", "", params)
        expected = "".join(f"#{k}" for k in range(1, len(compact) // 2 + 1))
        if compact != expected:
            table.unsupported["\\def with delimited parameters"] = \
                table.unsupported.get("\\def with delimited parameters", 0) + 1
            table.delimited[name] = (params, body)  # not expanded; context words still need to find its calls
            return None, end
        return Macro(name, len(compact) // 2, None, _clean_body(body)), end
    if kind in ("newenvironment", "renewenvironment"):
        if text.startswith("*", i):
            i += 1
        i = skip_space(text, i)
        name, i = _read_group(text, i)
        i = skip_space(text, i)
        nargs = 0
        default = None
        if text.startswith("[", i):
            n_str, i = _read_bracket(text, i)
            nargs = int(n_str.strip()) if n_str.strip().isdigit() else 0
            i = skip_space(text, i)
            if text.startswith("[", i):
                default, i = _read_bracket(text, i)
                i = skip_space(text, i)
        _, i = _read_group(text, i)
        i = skip_space(text, i)
        _, end = _read_group(text, i)
        table.envs[name.strip()] = (nargs, default)
        return None, end
    if kind == "DeclareMathOperator":
        star = text.startswith("*", i)
        if star:
            i += 1
        nm = _NAME_RE.match(text, i)
        if nm is None:
            raise _BadDefinition
        name = nm.group(1) or nm.group(2)
        i = skip_space(text, nm.end())
        body, end = _read_group(text, i)
        op = "\\operatorname*" if star else "\\operatorname"
        return Macro(name, 0, None, op + "{" + body.strip() + "}"), end
    if kind == "let":
        m = re.compile(r"\s*\\([a-zA-Z@]+|.)\s*=?\s*(?:\\([a-zA-Z@]+|.)|([^\\\s]))", re.S).match(text, i)
        if m is None:
            raise _BadDefinition
        name = m.group(1)
        if m.group(2) is not None:
            target = m.group(2)
            if target in table.macros:
                src = table.macros[target]
                return Macro(name, src.nargs, src.default, src.body, src.rescan), m.end()
            return Macro(name, 0, None, "\\" + target, rescan=False), m.end()
        return Macro(name, 0, None, m.group(3)), m.end()
    return None


_BODY_DROP_RE = re.compile(r"\\(?:xspace|protect|nolinebreak|relax)(?![a-zA-Z@])\s*")


def _clean_body(body: str) -> str:
    """Drop commands that mean nothing inside an equation but are undefined under the compile rule."""
    body = _BODY_DROP_RE.sub("", body)
    if "\\ensuremath" in body:
        body = re.sub(r"\\ensuremath(?![a-zA-Z@])\s*", "", body)
    return body.strip()


# ----------------------------------------------------------------------------------------------- expansion

def _needs_space(before: str, after: str) -> bool:
    """True when joining `before` + `after` would glue a control word to following letters."""
    if not after or not (after[0].isalpha() or after[0] == "@"):
        return False
    m = re.search(r"\\[a-zA-Z@]+$", before[-60:])
    if m is None:
        return False
    # an escaped backslash `\\` followed by letters is not a control word
    k = len(before) - len(m.group(0)) - 1
    nback = 0
    while k >= 0 and before[k] == "\\":
        nback += 1
        k -= 1
    return nback % 2 == 0


def _join(before: str, after: str) -> str:
    return before + " " + after if _needs_space(before, after) else before + after


def _read_arg(text: str, i: int) -> tuple[str, int]:
    """One undelimited TeX argument at text[i:] (spaces skipped): brace group content or a single token."""
    i = skip_space(text, i)
    n = len(text)
    if i >= n:
        return "", i
    c = text[i]
    if c == "{":
        end = group_end(text, i)
        if end == -1:
            raise MacroLimitError("unbalanced braces in a macro argument")
        return text[i + 1:end - 1], end
    if c == "}":
        return "", i  # missing argument; TeX would complain too
    if c == "\\":
        m = _CS_RE.match(text, i)
        if m is None:
            return "\\", i + 1
        return m.group(0), m.end()
    return c, i + 1


def _braced_args_follow(text: str, i: int, n: int) -> bool:
    for _ in range(n):
        i = skip_space(text, i)
        if not text.startswith("{", i):
            return False
        end = group_end(text, i)
        if end == -1:
            return False
        i = end
    return True


def _substitute(body: str, args: list[str]) -> str:
    if "#" not in body:
        return body
    out = []
    pos = 0
    for m in _PARAM_RE.finditer(body):
        out.append(body[pos:m.start()])
        g = m.group(1)
        if g == "#":
            piece = "#"
        else:
            k = int(g)
            piece = args[k - 1] if k <= len(args) else ""
        prev = "".join(out)
        out = [_join(prev, piece)]
        pos = m.end()
    tail = body[pos:]
    prev = "".join(out)
    return _join(prev, tail) if tail else prev


def expand_macros(text: str, macros: dict[str, Macro], config: ExpandConfig | None = None,
                  used: set[str] | None = None) -> str:
    """Expand every use of `macros` in `text` (recursively, bounded). `used` collects the names expanded."""
    if not macros or "\\" not in text:
        return text
    cfg = config or ExpandConfig()
    count = 0
    pos = 0
    while True:
        m = _CS_RE.search(text, pos)
        if m is None:
            return text
        name = m.group(1)
        macro = macros.get(name) if name else None
        if macro is None:
            pos = m.end()
            continue
        # a backslash escaped by another backslash (`\\foo` = line break + text) is not a control sequence
        k = m.start() - 1
        nback = 0
        while k >= 0 and text[k] == "\\":
            nback += 1
            k -= 1
        if nback % 2 == 1:
            pos = m.end()
            continue
        count += 1
        if count > cfg.max_expansions:
            raise MacroLimitError(f"more than {cfg.max_expansions} macro expansions (recursive \\{name}?)")
        i = m.end()
        if macro.handler is not None:
            handled = macro.handler(text, i)
            if handled is None:  # the special form does not apply here: leave the command as it is
                pos = m.end()
                continue
            repl, i = handled
            if used is not None:
                used.add(name)
            head = text[:m.start()]
            joined_head = _join(head, repl) if repl else head
            text = _join(joined_head, text[i:])
            if len(text) > cfg.max_length:
                raise MacroLimitError(f"equation grew past {cfg.max_length} characters while expanding \\{name}")
            pos = m.start()
            continue
        args: list[str] = []
        nargs = macro.nargs
        if macro.default is not None and nargs > 0:
            j = skip_space(text, i)
            if text.startswith("[", j):
                try:
                    opt, i = _read_bracket(text, j)
                except _BadDefinition:
                    opt = macro.default
            else:
                opt = macro.default
            args.append(opt)
            nargs -= 1
        if macro.braced_args_only and text.startswith("*", i):
            i += 1  # physics-style starred variants (`\\vu*{x}`, `\\abs*{x}`) mean the same here
        if macro.braced_args_only and nargs and not _braced_args_follow(text, i, nargs):
            pos = m.end()
            continue
        for _ in range(nargs):
            arg, i = _read_arg(text, i)
            args.append(arg)
        if used is not None:
            used.add(name)
        repl = _substitute(macro.body, args) if macro.nargs else macro.body
        head = text[:m.start()]
        rest = text[i:]
        if macro.nargs == 0 and not cfg.keep_blanks:
            rest = rest.lstrip(" \t\n")  # TeX skips blanks after a control word
        joined_head = _join(head, repl) if repl else head
        new_text = _join(joined_head, rest)
        if len(new_text) > cfg.max_length:
            raise MacroLimitError(f"equation grew past {cfg.max_length} characters while expanding \\{name}")
        text = new_text
        pos = m.start() if macro.rescan else len(joined_head)


# ----------------------------------------------------------------------------------------------- special forms

def _peek(text: str, i: int) -> tuple[str, int]:
    j = skip_space(text, i)
    return (text[j] if j < len(text) else ""), j


def _if_next_char(text: str, i: int):
    r"""`\@ifnextchar C{yes}{no}`: decided by the character that follows the call."""
    tok, i = _read_arg(text, i)
    yes, i = _read_arg(text, i)
    no, i = _read_arg(text, i)
    want = "{" if tok in ("\\bgroup", "{") else tok
    nxt, _ = _peek(text, i)
    return (yes if nxt == want else no), i


def _if_star(text: str, i: int):
    yes, i = _read_arg(text, i)
    no, i = _read_arg(text, i)
    nxt, j = _peek(text, i)
    if nxt == "*":
        return yes, j + 1
    return no, i


def _top_level_bar(s: str) -> bool:
    return find_top_level(s, 0, "|") >= 0


def _braket(text: str, i: int):
    """braket package `\\braket{a|b}` or physics `\\braket{a}{b}` / `\\braket{a}`."""
    nxt, j = _peek(text, i)
    if nxt != "{":
        return None
    a, i = _read_arg(text, j)
    if _top_level_bar(a):
        return "\\left\\langle " + a.replace("|", "\\middle\\vert ") + "\\right\\rangle", i
    nxt, j = _peek(text, i)
    if nxt == "{":
        b, i = _read_arg(text, j)
    else:
        b = a
    return "\\left\\langle " + a + "\\middle\\vert " + b + "\\right\\rangle", i


_QTY_PAIRS = {"(": ("(", ")"), "[": ("[", "]"), "|": ("|", "|")}


def _qty(text: str, i: int):
    """physics `\\qty(..)`, `\\qty[..]`, `\\qty|..|`, `\\qty{..}`; siunitx `\\qty{3}{m}`."""
    nxt, j = _peek(text, i)
    if nxt == "{":
        a, k = _read_arg(text, j)
        nxt2, j2 = _peek(text, k)
        if nxt2 == "{":
            unit, k2 = _read_arg(text, j2)
            return a + "\\,\\mathrm{" + unit + "}", k2
        return "\\left\\{" + a + "\\right\\}", k
    if nxt not in _QTY_PAIRS:
        return None
    open_, close = _QTY_PAIRS[nxt]
    depth = 0
    k = j
    while k < len(text):
        c = text[k]
        if c == "\\":
            k += 2
            continue
        if c == open_ and (open_ != close or k == j):
            depth += 1
        elif c == close:
            depth -= 1
            if depth == 0:
                inner = text[j + 1:k]
                left = "\\lvert" if open_ == "|" else open_
                right = "\\rvert" if close == "|" else close
                return "\\left" + left + " " + inner + "\\right" + right, k + 1
        k += 1
    return None


_MQTY_ENVS = {"(": ("pmatrix", ")"), "[": ("bmatrix", "]"), "|": ("vmatrix", "|"), "{": ("matrix", "}")}


def _mqty(text: str, i: int):
    """physics `\\mqty(a & b \\\\ c & d)` and the `[..]`, `|..|`, `{..}` forms -> amsmath matrices."""
    nxt, j = _peek(text, i)
    if nxt not in _MQTY_ENVS:
        return None
    env, close = _MQTY_ENVS[nxt]
    if nxt == "{":
        inner, k = _read_arg(text, j)
        return "\\begin{matrix}" + inner + "\\end{matrix}", k
    k = find_top_level(text, j + 1, close)
    if k < 0:
        return None
    return "\\begin{" + env + "}" + text[j + 1:k] + "\\end{" + env + "}", k + 1


def _derivative(symbol: str):
    def handler(text: str, i: int):
        nxt, j = _peek(text, i)
        order = ""
        if nxt == "[":
            try:
                order, i = _read_bracket(text, j)
            except _BadDefinition:
                return None
            nxt, j = _peek(text, i)
        if nxt != "{":
            return None
        f, i = _read_arg(text, j)
        power = "^{" + order + "}" if order else ""
        nxt, j = _peek(text, i)
        if nxt == "{":
            x, i = _read_arg(text, j)
            return "\\frac{" + symbol + power + " " + f + "}{" + symbol + " " + x + power + "}", i
        return "\\frac{" + symbol + power + "}{" + symbol + " " + f + power + "}", i
    return handler


def special_macros() -> dict[str, Macro]:
    """Macros whose meaning depends on what follows them (not expressible as a plain definition)."""
    return {
        "@ifnextchar": Macro("@ifnextchar", handler=_if_next_char),
        "@ifstar": Macro("@ifstar", handler=_if_star),
        "braket": Macro("braket", handler=_braket),
        "qty": Macro("qty", handler=_qty),
        "mqty": Macro("mqty", handler=_mqty),
        "dv": Macro("dv", handler=_derivative("\\mathrm{d}")),
        "pdv": Macro("pdv", handler=_derivative("\\partial")),
    }
