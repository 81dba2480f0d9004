"""From "TeX accepts it" to "a mathematician would write it": rules layered over the TeX automaton.

`WellFormedAutomaton` runs `SyntaxAutomaton`'s transition and adds (each switchable in SyntaxConfig):
- `balanced`: `( )`, `[ ]`, `\\{ \\}` (also `\\lbrace`, `\\lbrack`, after `\\big` and friends) close inside the
  group, argument, `\\left…\\right` or environment they were opened in; a round or square opener closes with
  either (`[0, 1)` is a half-open interval), a brace with a brace. They may cross an alignment's `&` and `\\\\`
  (`f(x &= a \\\\ &+ b)` is how long formulas are broken). At most MAX_OPEN open at once in one scope;
  a bracket is never a lone script or macro argument (`x^(`).
- `operands`: no empty argument (`\\frac{}{x}`, `\\sqrt{}`, `x^{}`, `\\text{ }`; a plain `{}` stays legal, as in
  `{}^{14}C`), and an operator or relation waits for its operand: after `+`, `=`, `\\leq`, `\\to`, `\\sum` ...
  (outside scripts, where `x^{2+}` and `\\mathbb{R}_+` are usual) comes neither a closer, punctuation, `&`,
  `\\\\`, the end, nor another operator except a sign (`a = -b`).
- `known_words`: the letters inside `\\text{…}`-like arguments, and inside `\\mathrm{…}` / `\\operatorname{…}`,
  spell words seen there in the training equations (SyntaxVocabulary.text_words / roman_words); a word ends
  before any other character. An empty word list leaves that context free.

State encoding (on top of automaton.py's): flag bits EMPTY (the innermost argument holds nothing yet), NEED
(an operand is due) and, from DSHIFT up, the open delimiters of the current scope (2 bits each, innermost
lowest); a frame saves its outer scope's delimiters with SCOPE_KEEP like the group's GF bit. A word context's
frame ends with the word written so far (`("ta", rest, after, mark, word)`, `("tg", word)`,
`("a", rest, after, "r", word)`). Masks are shared by states that differ only in that word: `key()` and
`representative()` keep only whether it is complete, and `word_of()` gives the TokenAutomaton the word, whose
own mask row (letters that continue it) is ANDed in.
"""
from __future__ import annotations

from .automaton import GF, NL, SyntaxAutomaton, SyntaxConfig
from .tables import (BINARY_WORDS, BRACE, CLOSE_CHARS, CLOSE_WORDS, CLOSING_WORDS, LEAD_CHARS, LETTERS,
                     LONE_OPERATOR_MACROS, NOT_AFTER_OPERATOR_CHARS, OPEN_CHARS, OPEN_WORDS, OPERATOR_CHARS,
                     RELATION_WORDS, ROMAN_MACROS, SIGN_CHARS, SIGN_WORDS, SyntaxVocabulary)

EMPTY, NEED, LEAD, SLASH, PLACE = 512, 1024, 2048, 4096, 8192
DSHIFT, MAX_OPEN = 14, 6
DMASK = ((1 << (2 * MAX_OPEN)) - 1) << DSHIFT
CLOSER_TEXT = {1: ")", 2: "]"}
WILD, WILD_OPEN = "*", "*+"  # a word in a mask's representative state: complete / not yet complete
FILLER = "1"  # what closing() writes where an operand or an argument is due


def open_delims(flags: int) -> int:
    return (flags & DMASK) >> DSHIFT


def make_automaton(syntax: SyntaxVocabulary, config: SyntaxConfig | None = None) -> SyntaxAutomaton:
    """The TeX automaton, with the well-formedness rules when any of them is on in `config`."""
    config = config or SyntaxConfig()
    if config.balanced or config.operands or config.known_words:
        return WellFormedAutomaton(syntax, config)
    return SyntaxAutomaton(syntax, config)


class WellFormedAutomaton(SyntaxAutomaton):
    ATOM_KEEP = GF | DMASK
    SCOPE_KEEP = GF | DMASK
    ROW_KEEP = DMASK | NEED  # `a = & b`, `a = \\ & b`: the operand may come in the next cell or row

    def __init__(self, syntax: SyntaxVocabulary, config: SyntaxConfig | None = None):
        super().__init__(syntax, config)
        c = self.config
        self.balanced, self.operands = c.balanced, c.operands
        self.vocab = {"text": syntax.text_words if c.known_words else frozenset(),
                      "roman": syntax.roman_words if c.known_words else frozenset()}
        self.prefixes = {k: frozenset(w[:i] for w in words for i in range(len(w) + 1)) for k, words in self.vocab.items()}
        self._shortest: dict = {}
        self._script_cache: dict = {}
        # a brace opener only where its closer can be written
        self.brace_closer = "\\}" if "}" in self.ord_symbols else "\\rbrace" if "rbrace" in self.symbols else None

    # --- contexts ---
    def _in_script(self, stack) -> bool:
        """Inside a script, an extensible arrow's or a stacking macro's argument: operators stand alone there."""
        hit = self._script_cache.get(stack)
        if hit is None:
            hit = any(f[0] in ("a", "o") and f[3] in ("s", "x", "p") for f in stack)
            self._script_cache[stack] = hit
        return hit

    @staticmethod
    def _word_context(frame) -> str | None:
        """"text" / "roman" where the frame's letters spell words, else None."""
        if frame is None:
            return None
        if frame[0] in ("ta", "tg"):
            return "text"
        if frame[0] == "a" and frame[3] == "r":
            return "roman"
        return None

    def _word_slot(self, frame) -> int:
        return 1 if frame[0] == "tg" else 4

    def _complete_word(self, ctx: str, word: str) -> bool:
        return word in ("", WILD) or word in self.vocab[ctx]

    def word_of(self, state) -> tuple[str, str] | None:
        """(context, word so far) where a word rule applies to the next letters, else None."""
        pending, _, stack = state
        if pending is not None or not stack:
            return None
        ctx = self._word_context(stack[-1])
        if ctx is None or not self.vocab[ctx]:
            return None
        return ctx, stack[-1][self._word_slot(stack[-1])]

    def word_allows(self, ctx: str, word: str, token: str) -> bool:
        """The word rule alone for a whole token: letters continue the word, anything else needs it complete
        (a control word's name is not a word)."""
        if token.startswith("\\") or not token:
            return self._complete_word(ctx, word)
        for c in token:
            if c in LETTERS:
                word += c
                if word not in self.prefixes[ctx]:
                    return False
            else:
                if not self._complete_word(ctx, word):
                    return False
                word = ""
        return True

    def representative(self, state):
        """`state` with its word replaced by WILD / WILD_OPEN: the state a key's mask is computed on."""
        word = self.word_of(state)
        if word is None:
            return state
        ctx, w = word
        top = state[2][-1]
        i = self._word_slot(top)
        wild = WILD if self._complete_word(ctx, w) else WILD_OPEN
        return (state[0], state[1], state[2][:-1] + (top[:i] + (wild,) + top[i + 1:],))

    def key(self, state) -> tuple:
        """The base key of the representative, with only what legality reads of the open delimiters (the
        innermost one and whether the cap is reached, not those below it nor those a frame saved), and whether
        a script is open."""
        pending, flags, stack = self.representative(state)
        if pending is not None and pending[0] in ("arg", "dl"):
            info = pending[2]
            pending = pending[:2] + ((info & ~DMASK) | (self._delim_key(info) if pending[0] == "dl" else 0),) \
                + pending[3:]
        if stack:
            top = stack[-1]
            i = {"g": 1, "l": 1, "a": 2, "ta": 2, "o": 2, "e": 5}.get(top[0])
            if i is not None:
                stack = stack[:-1] + (top[:i] + (top[i] & ~DMASK,) + top[i + 1:],)
        # (inside a script an operator asks for nothing: what a control word being spelled will do depends on it)
        return super().key((pending, (flags & ~DMASK) | self._delim_key(flags), stack)) + (self._in_script(stack),)

    @staticmethod
    def _delim_key(flags: int) -> int:
        d = open_delims(flags)
        return ((d & 3) | (4 if d >= 1 << (2 * (MAX_OPEN - 1)) else 0)) << DSHIFT

    # --- the lexeme step ---
    def char(self, state, c: str):
        if c == "\\" and (state[0] is None):
            word = self.word_of(state)
            if word is not None and (word[1] == WILD_OPEN or not self._complete_word(*word)):
                return None  # a control word may not cut a word short
        return super().char(state, c)

    def lex(self, state, lx):
        pending, flags, stack = state
        kind = lx[0]
        top = stack[-1] if stack else None
        math = not self._text_mode(stack)
        word = self.word_of(state)
        if word is not None and not (kind == "c" and lx[1] in LETTERS):
            if word[1] == WILD_OPEN or not self._complete_word(*word):
                return None
        if pending is None and math and not self._allowed_here(lx, flags, top):
            return None
        if pending is None and not math and self.operands and flags & EMPTY and lx == ("c", "}") and top[0] == "ta":
            return None  # `\text{ }`
        if pending is not None and pending[0] == "dl" and pending[1] == "big":
            delim = self._delimiter(lx) or 0
            if delim < 0 and (pending[2] & NEED or (self.balanced and not self._closes(pending[2], -delim))):
                return None  # (NEED: `a + \bigr)`)
            if delim > 0 and self.balanced and not self._can_open(pending[2], delim):
                return None
        new = super().lex(state, lx)
        if new is None:
            return None
        return self._after(state, lx, new, word)

    def _delimiter(self, lx) -> int | None:
        """+kind for an opener, -kind for a closer, None for anything else."""
        kind, v = lx[0], lx[1]
        if kind == "c":
            return OPEN_CHARS.get(v) or (-CLOSE_CHARS[v] if v in CLOSE_CHARS else None)
        if kind == "y":
            return BRACE if v == "{" else -BRACE if v == "}" else None
        if kind == "w":
            return OPEN_WORDS.get(v) or (-CLOSE_WORDS[v] if v in CLOSE_WORDS else None)
        return None

    def _closes(self, flags: int, kind: int) -> bool:
        top = open_delims(flags) & 3
        return top != 0 and (top == kind or (top != BRACE and kind != BRACE))

    def _can_open(self, flags: int, kind: int) -> bool:
        return open_delims(flags) < (1 << (2 * (MAX_OPEN - 1))) and (kind != BRACE or self.brace_closer is not None)

    def _allowed_here(self, lx, flags: int, top) -> bool:
        """Pre-checks of a lexeme with nothing pending, in math mode."""
        kind, v = lx[0], lx[1]
        pops = ((kind == "c" and (v == "}" or (v == "]" and top is not None and top[0] == "o")))
                or kind == "e" or (kind == "w" and v in ("right", "end", "middle")))
        if self.balanced:
            if pops and open_delims(flags):
                return False
            if kind == "w" and (v in self.genfracs) and open_delims(flags):
                return False
            delim = None if pops else self._delimiter(lx)
            if delim is not None and delim > 0:
                if (kind == "c" and v == "[" and top is not None and top[0] == "o") or not self._can_open(flags, delim):
                    return False
            if delim is not None and delim < 0 and not self._closes(flags, -delim):
                return False
        if self.operands:
            if pops and flags & EMPTY and top is not None and top[0] in ("a", "ta", "o"):
                return False
            if kind == "w" and v in self.genfracs and flags & EMPTY:
                return False
            if flags & PLACE:  # a sign with nothing before it: an operand, or it stands for one (`(-, M)`)
                if pops or kind == "e" or (kind == "c" and v in "&=<>") or (kind == "y" and v == "\\") \
                        or (kind == "w" and v in RELATION_WORDS):
                    return False
            if flags & NEED:
                if pops or kind == "e":
                    return False
                if kind == "c":
                    if v in NOT_AFTER_OPERATOR_CHARS:
                        return False
                elif kind == "y":
                    if v == "}":
                        return False
                elif kind == "w":
                    if v in RELATION_WORDS or v in CLOSING_WORDS or v in self.genfracs:
                        return False
        return True

    def _after(self, state, lx, new, word):
        """Post-step: delimiters, EMPTY / NEED, the word, the \\mathrm mark."""
        pending, flags, stack = state
        npending, nflags, nstack = new
        kind, v = lx[0], lx[1]
        math = not self._text_mode(stack)
        if pending is None and math:
            if self.balanced:
                delim = self._delimiter(lx)
                if delim is not None and len(nstack) == len(stack) and npending is None:
                    nflags = self._push_pop(nflags, delim)
            if self.operands and npending is None:
                nflags = self._operand_flags(flags, lx, nflags, stack)
            if kind == "c" and v in "^_'":  # a script or prime: an operand precedes what comes next
                nflags &= ~LEAD
                if npending is not None and npending[0] == "arg":
                    npending = npending[:2] + (npending[2] & ~LEAD,) + npending[3:]
            if kind == "w" and v in self.bigs and npending is not None:
                npending = npending[:2] + (npending[2] | (flags & NEED),)  # a \big closer must not follow `+`
            if kind == "w" and npending is not None and npending[0] == "arg" and len(npending) == 3:
                if v in ROMAN_MACROS:
                    npending = npending + ("r",)
                elif v in LONE_OPERATOR_MACROS:
                    npending = npending + ("p",)
        elif pending is not None and pending[0] == "dl" and pending[1] == "big":
            nflags &= ~NEED
            delim = self._delimiter(lx)
            if delim is not None and self.balanced:
                nflags = self._push_pop(nflags, delim)
        elif pending is not None and pending[0] == "arg" and len(nstack) == len(stack):  # a one-token argument
            if self.balanced and ((kind == "c" and v in "()[]") or (kind == "w" and (v in OPEN_WORDS or v in CLOSE_WORDS))):
                return None  # a bracket as a lone argument (`x^(`): no mathematician's writing
            if self.operands and pending[1][0] != "s" and pending[3:4] not in (("p",), ("x",)) \
                    and ((kind == "c" and v in OPERATOR_CHARS) or (kind == "w" and (v in BINARY_WORDS or v in RELATION_WORDS))):
                return None  # an operator as a macro's argument (`\mathrm\to`, `\frac=2`); in a script it is usual
        if len(nstack) > len(stack):  # a new frame
            fresh = nstack[-1]
            if fresh[0] in ("a", "ta", "o") and fresh[3] not in ("x", "p") and self.operands:
                nflags |= EMPTY
            if fresh[0] in ("g", "a", "o", "l", "e") and self.operands:
                nflags |= LEAD
            if self._word_context(fresh) is not None:
                nstack = nstack[:-1] + (fresh + ("",),)
        if word is not None:  # the word context's frame (if it is still open) gets the word written so far
            i = len(stack) - 1
            if i < len(nstack) and nstack[i][0] == stack[i][0]:
                frame = nstack[i]
                slot = self._word_slot(frame)
                if kind == "c" and v in LETTERS:
                    w = WILD if word[1] in (WILD, WILD_OPEN) else word[1] + v
                    if w != WILD and w not in self.prefixes[word[0]]:
                        return None
                else:
                    w = WILD if word[1] in (WILD, WILD_OPEN) else ""
                nstack = nstack[:i] + (frame[:slot] + (w,) + frame[slot + 1:],) + nstack[i + 1:]
        return (npending, nflags, nstack)

    def _operand_flags(self, flags: int, lx, nflags: int, stack) -> int:
        """NEED after an operator or relation (outside scripts), LEAD where no operand precedes."""
        kind, v = lx[0], lx[1]
        if (kind == "c" and v in LEAD_CHARS) or (kind == "c" and v == "&") or (kind == "y" and v in ("\\", "{")) \
                or (kind == "w" and v in OPEN_WORDS):
            return nflags | LEAD
        if self._in_script(stack):
            return nflags
        if kind == "c" and v == "/":
            return nflags | SLASH
        if flags & SLASH and kind == "w" and v in ("sim", "cong", "simeq"):
            return nflags  # a quotient by an equivalence: `U(T)/\sim_T`
        if (kind == "c" and v in SIGN_CHARS) or (kind == "w" and v in SIGN_WORDS):
            # a sign after an operator still needs its operand (`= -x`); where no operand precedes it, it
            # may be a placeholder (`(-)`)
            return nflags | (NEED if flags & NEED or not flags & (LEAD | NL) else PLACE)
        if (kind == "c" and v in OPERATOR_CHARS) or (kind == "w" and (v in BINARY_WORDS or v in RELATION_WORDS
                                                                   or v in self.operators or v in self.genfracs)):
            return nflags | NEED
        return nflags

    @staticmethod
    def _push_pop(flags: int, delim: int) -> int:
        d = open_delims(flags)
        d = (d << 2) | delim if delim > 0 else d >> 2
        return (flags & ~DMASK) | (d << DSHIFT)

    # --- the end ---
    def complete(self, state) -> bool:
        if not super().complete(state):
            return False
        state = self.terminate(state)
        return not state[1] & (NEED | PLACE) and not open_delims(state[1])

    def _shortest_completion(self, ctx: str, word: str) -> str:
        key = (ctx, word)
        hit = self._shortest.get(key)
        if hit is None:
            ends = [w for w in self.vocab[ctx] if w.startswith(word)]
            if not ends:
                raise AssertionError(f"no {ctx} word continues {word!r}")
            hit = min(ends, key=lambda w: (len(w), w))[len(word):]
            self._shortest[key] = hit
        return hit

    def _closing_piece(self, state) -> str | None:
        pending, flags, stack = state
        top = stack[-1] if stack else None
        if pending is None:
            word = self.word_of(state)
            if word is not None and not self._complete_word(*word):
                return self._shortest_completion(*word)
            if flags & (NEED | PLACE):
                return FILLER
            if flags & EMPTY and top is not None and top[0] in ("a", "ta", "o"):
                return FILLER
            d = open_delims(flags) & 3
            if d:
                if d != BRACE and top is not None and top[0] == "o":
                    return ")"  # a `]` would end the optional argument (`\xrightarrow[\Big[a)]`)
                return CLOSER_TEXT.get(d) or self.brace_closer
        elif pending[0] == "arg" and self.operands:
            return "{%s}" % FILLER
        return super()._closing_piece(state)
