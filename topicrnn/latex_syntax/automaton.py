"""The automaton over lexemes and characters: which LaTeX math a prefix may continue with and still compile.

One dense job (the transition function of a pushdown automaton over TeX's math syntax, and the text that
completes a prefix), kept in one module because its rules read each other's state encoding.
"""
from __future__ import annotations

from dataclasses import dataclass

from .tables import (ACCENTS, ARG_CHARS, ARG_MACROS, BIG_WORDS, DELIM_CHARS, DELIM_SYMBOLS, DELIM_WORDS,
                     ENVIRONMENTS, GENFRACS, LETTERS, LIMITS, MARKS, MATH_CHARS, NOT_ARGSAFE, OP_RESULT,
                     OPERATORS, ORD_SYMBOLS, SCRIPT_CHARS, SCRIPT_MACROS, SPACE_CHARS, SPACE_SYMBOLS, SPACES,
                     STRUCTURAL, SYMBOLS, TEXT_CHARS, TEXT_SYMBOLS, TEXT_WORDS, SyntaxVocabulary)

# flag bits of a state
SUP, SUB, PRIME, OP, NB_BRACKET, NB_STAR, NL, GF, NB_AMP = 1, 2, 4, 8, 16, 32, 64, 128, 256


@dataclass
class SyntaxConfig:
    max_depth: int = 10  # open groups/arguments/\left/environments at once
    max_array_columns: int = 10
    max_environments: int = 3  # nested environments (6 nested alignments inside split fail)
    allow_newlines: bool = True  # single newlines (never a blank line)
    # What a mathematician writes (wellformed.py); all three off = the TeX rules alone.
    balanced: bool = True  # ( ) [ ] \{ \} closed in the scope they were opened in
    operands: bool = True  # no empty argument; an operator or relation is followed by its operand
    known_words: bool = True  # \text{..} / \mathrm{..} / \operatorname{..} spell words seen in training


# ----------------------------------------------------------------------------------------------------
# The automaton over lexemes and characters
# ----------------------------------------------------------------------------------------------------
# state = (pending, flags, stack); stack = tuple of frames, innermost last.
# frames: ("g", gf) math group; ("tg",) text group; ("a", rest, after, mark) math argument group;
#         ("ta", rest, after, mark) text argument group; ("o", rest, after, mark) optional [..] argument;
#         (mark: "s" a script's group, "x"/"h"/"b" see MARKS, "" otherwise)
#         ("l", gf) \left..\right; ("e", name, maxamp, amp, rowstart, gf) environment.
# pending: None; ("arg", kinds, after); ("dl", what, after); ("cs", prefix, outer_pending);
#          ("env", which, prefix|None); ("col", ncols, opened); ("cnt", stage).
# `after` = the flags once all arguments are read (it carries the enclosing group's GF bit).

Lexeme = tuple


class SyntaxAutomaton:
    """The (stateless) transition function plus caches; shared by every LatexConstraint built on it."""

    # Flag bits that survive: the start of a new atom; a scope (group, \left, environment) and its end; an
    # alignment's `&` or `\\`. TeX itself needs only GF (a group's \over); wellformed.py adds its own.
    ATOM_KEEP = GF
    SCOPE_KEEP = GF
    ROW_KEEP = 0

    def __init__(self, syntax: SyntaxVocabulary, config: SyntaxConfig | None = None):
        self.syntax = syntax
        self.config = config or SyntaxConfig()
        w = syntax.control_words
        self.symbols = (SYMBOLS & w)
        self.operators = OPERATORS & w
        self.limits = LIMITS & w
        self.spaces = SPACES & w
        self.genfracs = GENFRACS & w
        self.bigs = BIG_WORDS & w
        self.delim_words = DELIM_WORDS & w
        self.arg_macros = {n: k for n, k in ARG_MACROS.items() if n in w}
        self.text_words = TEXT_WORDS & w
        self.structural = STRUCTURAL & w
        s = syntax.control_symbols
        self.space_symbols = SPACE_SYMBOLS & s
        self.ord_symbols = ORD_SYMBOLS & s
        self.delim_symbols = DELIM_SYMBOLS & s
        self.text_symbols = TEXT_SYMBOLS & s
        self.newline_ok = "\\" in s
        self.envs = {n: v for n, v in ENVIRONMENTS.items() if n in syntax.environments}
        if "begin" not in w or "end" not in w:
            self.envs = {}
        self.all_words = sorted(self.symbols | self.operators | self.limits | self.spaces | self.genfracs
                                | self.bigs | self.delim_words | set(self.arg_macros) | self.text_words
                                | self.structural)
        self.all_symbols = sorted(self.space_symbols | self.ord_symbols | ({"\\"} if self.newline_ok else set()))
        self._names_cache: dict = {}
        self._marks_cache: dict = {}

    # --- helpers ---
    def _top(self, stack):
        return stack[-1] if stack else None

    def _text_mode(self, stack) -> bool:
        return bool(stack) and stack[-1][0] in ("tg", "ta")

    def _can_push(self, stack) -> bool:
        return len(stack) < self.config.max_depth

    def representative(self, state):
        """The state whose mask stands for all states of its key (wellformed.py replaces a word in progress)."""
        return state

    def word_of(self, state):
        """(context, word so far) where a word rule refines the mask (wellformed.py); None here."""
        return None

    def key(self, state) -> tuple:
        """All that legality reads: the pending item, the flags, the innermost frame, the depth cap and
        whether an extensible arrow's argument is open anywhere."""
        pending, flags, stack = state
        return (pending, flags, stack[-1] if stack else None, len(stack) >= self.config.max_depth,
                self._marks(stack), self._envs_full(stack))

    def _envs_full(self, stack) -> bool:
        """No further environment: the nesting cap is reached, or inside split (which collects its body;
        alignments nested in it made it miss its \\end{split})."""
        if stack and stack[0][0] == "e" and stack[0][1] == "split":
            return True
        return sum(f[0] == "e" for f in stack) >= self.config.max_environments

    def _marks(self, stack) -> str:
        """The marks of the open argument frames (see MARKS), as a sorted string."""
        m = self._marks_cache.get(stack)
        if m is None:
            m = "".join(sorted({f[3] for f in stack if len(f) > 3 and f[0] in ("a", "o", "ta") and f[3] in "xhb"
                                and f[3]}))
            self._marks_cache[stack] = m
        return m

    # --- finishing arguments ---
    def _args_next(self, kinds, after, stack, xa=""):
        """State once the current argument is done: the next pending argument or the `after` flags."""
        if kinds:
            return (("arg", kinds, after, xa) if xa else ("arg", kinds, after), after & GF, stack)
        return (None, after, stack)

    # --- the lexeme step ---
    def lex(self, state, lx: Lexeme):
        """Apply one lexeme; None if illegal. lx: ("c", ch) | ("w", name) | ("y", ch) | ("b", env) |
        ("e", env) | ("s", has_newline)."""
        pending, flags, stack = state
        kind = lx[0]
        if pending is not None:
            return self._lex_pending(state, lx)
        if kind == "s":
            # a space ends a prime's look-ahead (`x' ^2` is a double superscript)
            if lx[1]:
                if not self.config.allow_newlines or flags & NL:
                    return None
                return (None, (flags | NL) & ~(PRIME | NB_AMP), stack)
            return (None, flags & ~(PRIME | NB_AMP), stack)
        if flags & NB_AMP and lx == ("c", "&"):
            return None
        flags &= ~(NL | NB_AMP)
        if self._text_mode(stack):
            return self._lex_text(lx, flags, stack)
        top = self._top(stack)
        if kind == "c":
            c = lx[1]
            if c == "[" and flags & NB_BRACKET:
                return None
            if c == "*" and flags & NB_STAR:
                return None
            flags &= ~(NB_BRACKET | NB_STAR)
            if c == "]" and top is not None and top[0] == "o":
                return self._args_next(top[1], top[2], stack[:-1], top[3])
            if c in MATH_CHARS:
                return (None, flags & self.ATOM_KEEP, self._touch(stack))
            if c in "'^_" and "b" in self._marks(stack):
                return None  # no scripts inside \bm{} (`\bm{_x}` fails; `\bm{x}_i` is fine)
            if c == "'":
                if flags & SUP and not flags & PRIME:
                    return None
                return (None, (flags | SUP | PRIME) & ~OP, self._touch(stack))
            if c == "^":  # (arguments are only opened below the depth cap, so `{}` can always close them)
                if flags & SUP and not flags & PRIME or not self._can_push(stack):
                    return None
                after = (flags | SUP) & ~PRIME
                return (("arg", ("s",), after), flags & GF, self._touch(stack))
            if c == "_":
                if flags & SUB or not self._can_push(stack):
                    return None
                after = (flags | SUB) & ~PRIME
                return (("arg", ("s",), after), flags & GF, self._touch(stack))
            if c == "{":
                if not self._can_push(stack):
                    return None
                return (None, 0, self._touch(stack) + (("g", flags & self.SCOPE_KEEP),))
            if c == "}":
                if top is None or top[0] not in ("g", "a"):
                    return None
                if top[0] == "g":
                    return (None, top[1], stack[:-1])
                if top[3] == "b":  # \bm{..} unwraps: a script of its last atom stays on it (`\bm{a^2}^3` fails)
                    return self._args_next(top[1], (top[2] & ~(SUP | SUB | PRIME)) | (flags & (SUP | SUB)),
                                           stack[:-1])
                return self._args_next(top[1], top[2], stack[:-1], top[3] if top[3] != "s" else "")
            if c == "&":
                if top is None or top[0] != "e" or top[2] == -1:
                    return None
                name, maxamp, amp, rowstart, gf = top[1:]
                if maxamp is not None and amp >= maxamp:
                    return None
                amp = amp + 1 if maxamp is not None else 0
                return (None, flags & self.ROW_KEEP, stack[:-1] + (("e", name, maxamp, amp, False, gf),))
            if c == "~":
                return (None, flags & ~(PRIME | OP), self._touch(stack))
            if c == "\\":
                return None  # handled at the character level
            return None  # $ # % ^^ controls, non-ASCII, ...
        flags &= ~(NB_BRACKET | NB_STAR)
        if kind == "y":
            c = lx[1]
            if c == "\\":
                if not self.newline_ok:
                    return None
                # pdflatex accepts `a \\ b` at the top of \[ \] (and in groups there), but not after a
                # split (`\begin{split}\end{split}\\`): only at an alignment's cell level
                if top is None or top[0] != "e" or top[2] == -1:
                    return None
                name, maxamp, amp, rowstart, gf = top[1:]
                return (None, NB_BRACKET | NB_STAR | (flags & self.ROW_KEEP),
                        stack[:-1] + (("e", name, maxamp, 0, True, gf),))
            if c in self.space_symbols:
                return (None, flags & ~(PRIME | OP), self._touch(stack))
            if c in self.ord_symbols:
                return (None, flags & self.ATOM_KEEP, self._touch(stack))
            return None
        if kind == "w":
            return self._lex_word(lx[1], flags, stack)
        if kind == "b":
            env = lx[1]
            # split only at the top of the display (nested in another split it fails)
            if (env not in self.envs or not self._can_push(stack) or (top is not None and top[0] == "o")
                    or "b" in self._marks(stack) or (env == "split" and stack) or self._envs_full(stack)):
                return None
            maxamp = self.envs[env]
            new_stack = self._touch(stack) + (("e", env, maxamp, 0, True, flags & self.SCOPE_KEEP),)
            if maxamp == -1:
                return (("col", 0, False), 0, new_stack)
            if maxamp == -2:
                return (("cnt", 0), 0, new_stack)
            # `\begin{aligned}&` with no space between fails once an array-like environment follows in
            # that row ("Missing control sequence inserted"); a `[` would be read as the position argument
            return (None, NB_BRACKET | NB_AMP, new_stack)
        if kind == "e":
            if top is None or top[0] != "e" or top[1] != lx[1]:
                return None
            return (None, top[5], stack[:-1])
        return None

    def _touch(self, stack):
        """Content was written in the current cell: an environment row is no longer at its start."""
        if stack and stack[-1][0] == "e" and stack[-1][4]:
            top = stack[-1]
            return stack[:-1] + ((top[0], top[1], top[2], top[3], False, top[5]),)
        return stack

    def _lex_word(self, name, flags, stack):
        top = self._top(stack)
        if "b" in self._marks(stack) and (name in NOT_ARGSAFE or (name not in self.symbols and name not in
                                                                  self.operators and name not in self.limits)):
            return None  # (`\bm{\textstyle\bf x}`, `\boldsymbol{\dots}` fail too)
        if name in self.symbols:
            return (None, flags & self.ATOM_KEEP, self._touch(stack))
        if name in self.operators:
            return (None, (flags & self.ATOM_KEEP) | OP, self._touch(stack))
        if name in self.limits:
            if not flags & OP:
                return None
            return (None, flags, stack)
        if name in self.spaces:
            return (None, flags & ~(PRIME | OP), self._touch(stack))
        if name in self.genfracs:
            # a macro argument loses its braces (`\frac a{\over}` is ambiguous); a script's keeps them
            if flags & GF or (top is not None and top[0] == "a" and top[3] != "s"):
                return None
            return (None, GF, self._touch(stack))
        if name in self.arg_macros:
            if not self._can_push(stack):
                return None
            if name in ACCENTS and ("x" in self._marks(stack) or "h" in self._marks(stack)):
                return None
            kinds = self.arg_macros[name]
            after = (flags & self.ATOM_KEEP) | (OP if name in OP_RESULT else 0)
            if name in MARKS:
                return (("arg", kinds, after, MARKS[name]), flags & GF, self._touch(stack))
            return (("arg", kinds, after), flags & GF, self._touch(stack))
        if name in self.bigs:
            return (("dl", "big", flags & self.ATOM_KEEP), flags & GF, self._touch(stack))
        if name == "left" and "left" in self.structural and "right" in self.structural:
            # inside [..] of \sqrt a `]` (e.g. of \right]) would end the optional argument
            if not self._can_push(stack) or (top is not None and top[0] == "o"):
                return None
            return (("dl", "left", flags & self.SCOPE_KEEP), flags & GF, self._touch(stack))
        if name == "right" and "right" in self.structural:
            if top is None or top[0] != "l":
                return None
            return (("dl", "right", top[1]), flags & GF, stack)
        if name == "middle" and "middle" in self.structural:
            if top is None or top[0] != "l":
                return None
            return (("dl", "middle", 0), flags & GF, stack)
        if name == "hline" and "hline" in self.structural:
            if top is None or top[0] != "e" or top[1] != "array" or not top[4]:
                return None
            return (None, flags, stack)
        if name in ("begin", "end") and self.envs:
            if name == "end" and (top is None or top[0] != "e"):
                return None
            if name == "begin" and (not self._can_push(stack) or (top is not None and top[0] == "o")
                                    or "b" in self._marks(stack) or self._envs_full(stack)):
                return None
            return (("env", name, None), flags, stack)
        return None

    def _lex_text(self, lx, flags, stack):
        kind = lx[0]
        if kind == "c":
            c = lx[1]
            if c in TEXT_CHARS:
                return (None, 0, stack)
            if c == "{":
                if not self._can_push(stack):
                    return None
                return (None, 0, stack + (("tg",),))
            if c == "}":
                top = stack[-1]
                if top[0] == "tg":
                    return (None, 0, stack[:-1])
                return self._args_next(top[1], top[2], stack[:-1])
            return None
        if kind == "y":
            return (None, 0, stack) if lx[1] in self.text_symbols else None
        if kind == "w":
            return (None, 0, stack) if lx[1] in self.text_words else None
        return None

    def _lex_pending(self, state, lx):
        pending, flags, stack = state
        kind = lx[0]
        ptype = pending[0]
        if kind == "s" and ptype in ("arg", "dl"):  # blanks before an argument or a delimiter
            if lx[1]:
                if not self.config.allow_newlines or flags & NL:
                    return None
                return (pending, flags | NL, stack)
            return state
        if ptype == "arg":
            kinds, after = pending[1], pending[2]
            k = kinds[0]
            flags &= ~NL
            if k == "q":
                if kind == "c" and lx[1] == "*":
                    return (("arg", kinds[1:], after) + pending[3:], flags, stack)
                return self._lex_pending((("arg", kinds[1:], after) + pending[3:], flags, stack), lx)
            xa = pending[3] if len(pending) > 3 else ""
            if k == "r":
                if kind == "c" and lx[1] == "[":
                    # a nested [..] would end at the inner `]` (LaTeX does not count brackets)
                    if not self._can_push(stack) or (stack and stack[-1][0] == "o"):
                        return None
                    return (None, 0, stack + (("o", kinds[1:], after, xa),))
                return self._lex_pending((("arg", kinds[1:], after) + pending[3:], flags, stack), lx)
            if kind == "c" and lx[1] == "{":
                if not self._can_push(stack):
                    return None
                frame = ("ta" if k == "t" else "a", kinds[1:], after, "s" if k == "s" else xa)
                return (None, 0, stack + (frame,))
            if k in ("g", "t"):
                return None
            ok = False
            if kind == "c":
                ok = lx[1] in (SCRIPT_CHARS if k == "s" else ARG_CHARS)
                if lx[1] == "]" and stack and stack[-1][0] == "o":
                    ok = False
            elif kind == "w":
                ok = (lx[1] in self.symbols or lx[1] in self.operators) and lx[1] not in NOT_ARGSAFE
                if (k == "s" and lx[1] in SCRIPT_MACROS and lx[1] in self.arg_macros and self._can_push(stack)
                        and "b" not in self._marks(stack)):
                    return (("arg", self.arg_macros[lx[1]], after), flags & GF, stack)
            if not ok:
                return None
            return self._args_next(kinds[1:], after, stack)
        if ptype == "dl":
            what, info = pending[1], pending[2]
            if kind == "c" and lx[1] == "]" and stack and stack[-1][0] == "o":
                return None
            ok = ((kind == "c" and lx[1] in DELIM_CHARS) or (kind == "y" and lx[1] in self.delim_symbols)
                  or (kind == "w" and lx[1] in self.delim_words))
            if not ok:
                return None
            if what == "left":
                return (None, 0, stack + (("l", info),))
            if what == "right":
                return (None, info, stack[:-1])
            if what == "middle":
                return (None, 0, stack)
            return (None, info, stack)  # \big(
        if ptype == "env":
            which, prefix = pending[1], pending[2]
            if kind != "c":
                return None
            c = lx[1]
            if prefix is None:
                return (("env", which, ""), flags, stack) if c == "{" else None
            if c == "}":
                if which == "end":
                    return self.lex((None, flags, stack), ("e", prefix))
                return self.lex((None, flags, stack), ("b", prefix))
            new = prefix + c
            names = self._env_names(which, flags, stack)
            if not any(n.startswith(new) for n in names):
                return None
            return (("env", which, new), flags, stack)
        if ptype == "col":
            ncols, opened = pending[1], pending[2]
            if kind != "c":
                return None
            c = lx[1]
            if not opened:
                return (("col", 0, True), flags, stack) if c == "{" else None
            if c in "lcr":
                if ncols >= self.config.max_array_columns:
                    return None
                return (("col", ncols + 1, True), flags, stack)
            if c == "|":
                return state
            if c == "}" and ncols >= 1:
                top = stack[-1]
                frame = ("e", top[1], ncols - 1, 0, True, top[5])
                return (None, 0, stack[:-1] + (frame,))
            return None
        if ptype == "cnt":
            stage = pending[1]
            if kind != "c":
                return None
            c = lx[1]
            if stage == 0:
                return (("cnt", 1), flags, stack) if c == "{" else None
            if stage == 1:
                if c in "123456789":
                    top = stack[-1]
                    frame = ("e", top[1], 2 * int(c) - 1, 0, True, top[5])
                    return (("cnt", 2), flags, stack[:-1] + (frame,))
                return None
            return (None, 0, stack) if c == "}" else None
        return None  # ("cs", ...) is resolved at the character level

    def _env_names(self, which, flags, stack):
        if which == "end":
            top = self._top(stack)
            return [top[1]] if top is not None and top[0] == "e" else []
        return [n for n in self.envs if self.lex((None, flags, stack), ("b", n)) is not None]

    # --- characters ---
    def legal_names(self, ctx_state):
        """(set of legal control words, set of their prefixes, legal control symbols) in a context."""
        k = self.key(ctx_state)
        hit = self._names_cache.get(k)
        if hit is None:
            words = [n for n in self.all_words if self.lex(ctx_state, ("w", n)) is not None]
            prefixes = {n[:i] for n in words for i in range(1, len(n) + 1)}
            syms = [c for c in self.all_symbols if self.lex(ctx_state, ("y", c)) is not None]
            hit = (frozenset(words), frozenset(prefixes), frozenset(syms), sorted(words, key=lambda n: (len(n), n)))
            self._names_cache[k] = hit
        return hit

    def char(self, state, c: str):
        """Feed one character of text; None if illegal."""
        pending, flags, stack = state
        if pending is not None and pending[0] == "cs":
            prefix, outer = pending[1], pending[2]
            ctx = (outer, flags, stack)
            words, prefixes, syms, _ = self.legal_names(ctx)
            if c in LETTERS:
                return (("cs", prefix + c, outer), flags, stack) if prefix + c in prefixes else None
            if prefix == "":
                if c not in syms:
                    return None
                return self.lex(ctx, ("y", c))
            if prefix not in words:
                return None
            nxt = self.lex(ctx, ("w", prefix))
            return None if nxt is None else self.char(nxt, c)
        if c == "\\":
            if pending is not None and pending[0] in ("env", "col", "cnt"):
                return None
            ctx = (pending, flags & ~NL, stack)
            words, prefixes, syms, _ = self.legal_names(ctx)
            if not words and not syms:
                return None
            return (("cs", "", pending), flags & ~NL, stack)
        if c in SPACE_CHARS:
            if pending is not None and pending[0] in ("env", "col", "cnt"):
                return None
            return self.lex(state, ("s", c == "\n"))
        return self.lex(state, ("c", c))

    def terminate(self, state):
        """End a control word being spelled (a LaTeX token boundary, or end of text)."""
        pending, flags, stack = state
        if pending is not None and pending[0] == "cs":
            prefix, outer = pending[1], pending[2]
            if prefix == "":
                return None
            ctx = (outer, flags, stack)
            if prefix not in self.legal_names(ctx)[0]:
                return None
            return self.lex(ctx, ("w", prefix))
        return state

    def text(self, state, s: str, *, end_word: bool = False):
        for c in s:
            state = self.char(state, c)
            if state is None:
                return None
        return self.terminate(state) if end_word else state

    def complete(self, state) -> bool:
        state = self.terminate(state)
        return state is not None and state[0] is None and not state[2] and not state[1] & NL

    # --- closing ---
    def closing(self, state) -> str:
        """Text that completes `state` (checked by feeding it back)."""
        out: list[str] = []
        for _ in range(10_000):
            piece = self._closing_piece(state)
            if piece is None:
                return "".join(out)
            nxt = self.text(state, piece)
            if nxt is None:
                raise AssertionError(f"closing piece {piece!r} is illegal in {state!r}")
            if nxt[0] is not None and nxt[0][0] == "cs":
                nxt = self.terminate(nxt)
                if nxt is None:
                    raise AssertionError(f"closing name {piece!r} is not complete in {state!r}")
            out.append(piece)
            state = nxt
        raise AssertionError("closing did not finish")

    def _closing_piece(self, state) -> str | None:
        """The next piece of the closing text (None once the state is complete)."""
        pending, flags, stack = state
        if pending is None and not stack:
            return "{}" if flags & NL else None  # nothing but blanks on this line: write an empty group
        if pending is None:
            top = stack[-1]
            t = top[0]
            if t in ("g", "a", "tg", "ta"):
                return "}"
            if t == "o":
                return "]"
            if t == "l":
                return "\\right."
            return "\\end{%s}" % top[1]
        p = pending[0]
        if p == "cs":
            prefix, outer = pending[1], pending[2]
            words, _, syms, by_len = self.legal_names((outer, flags, stack))
            if prefix == "" and syms:
                return sorted(syms, key=lambda c: (c not in ", ", c))[0]
            for n in by_len:
                if n.startswith(prefix) and n != "begin" and n != "end":
                    return n[len(prefix):]
            for n in by_len:
                if n.startswith(prefix):
                    return n[len(prefix):]
            raise AssertionError(f"no completion for \\{prefix} in {state!r}")
        if p == "arg":
            return "{}"
        if p == "dl":
            return "."
        if p == "env":
            which, prefix = pending[1], pending[2]
            names = sorted(self._env_names(which, flags, stack), key=lambda n: (len(n), n))
            head = "{" if prefix is None else ""
            prefix = prefix or ""
            for n in names:
                if n.startswith(prefix):
                    return head + n[len(prefix):] + "}"
            raise AssertionError(f"no environment completes {prefix!r}")
        if p == "col":
            return ("" if pending[2] else "{") + ("c" if pending[1] == 0 else "") + "}"
        if p == "cnt":
            return ["{1}", "1}", "}"][pending[1]]
        raise AssertionError(f"unknown pending {pending!r}")


# The rule's document puts the equation on its own lines (`\\[` newline EQ newline `\\]`): the start
# counts as just after a newline, so a leading blank line, an all-blank equation or a trailing newline
# (each a paragraph break in math mode) are never allowed.
START = (None, NL, ())
