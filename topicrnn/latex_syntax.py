"""Syntax-aware decoding for LaTeX math: a constraint that keeps every prefix completable.

`LatexConstraint` implements the sampler's `SequenceConstraint` protocol (/work/briefs/sampler_constraint.md):
per sequence it tracks a pushdown state over the text written so far and allows only the next tokens after
which the prefix can still be completed into an equation that compiles under docs/compile-rule (display
math, preamble amsmath/amssymb/amsfonts/mathtools/bm). `closing()` gives the text that completes each prefix.

What is tracked (each rule checked against real pdflatex while writing this file):
- brace groups, macro arguments (`\\frac` 2, `\\sqrt[opt]{}`, `\\hat` 1, `\\text{}` in text mode, ...);
- `\\left`/`\\middle`/`\\right` pairing inside one group, each followed by a delimiter (also `\\big(` ...);
- `\\begin{env}`/`\\end{env}` for the math environments in ENVIRONMENTS, with `&` only at an alignment's
  own cell level and at most as many columns as the environment has (cases 2, matrix 10, array = its
  column spec, alignedat{n} 2n, gathered 1 ...), `\\\\` only at an alignment's cell level (pdflatex accepts
  `a \\\\ b` in a plain `\\[ \\]`, but not after a split nor in a group within an alignment), `\\hline` only at
  the start of an array row, no `[`/`*` right after `\\\\` or `\\begin{env}` (read as an optional argument);
- `^`/`_` need an argument (a group, one character, a symbol that is a single math character, or a robust
  font/text macro: `x^\\mathrm{T}`); no double super/subscript (a prime `'` counts as a superscript);
- `\\limits` only after an operator; one `\\over`/`\\atop`/`\\choose` per group, none directly in a macro's
  argument (`\\frac a{\\over}` loses the braces);
- what pdflatex showed to fail although it looks fine: `split` below the top level or with an environment
  inside, more than 3 nested environments, `\\begin{aligned}&` with
  no space (if an array-like environment follows in that row), accents nested in accents or in an
  extensible arrow's argument (`\\macc@kerna`), anything but symbols inside `\\bm{}` (`\\bm{\\binom12}`), a
  nested `[..]` inside an optional argument, a `]` (e.g. `\\right]`) directly inside one;
- `$`, `#`, `%`, a blank line, non-ASCII characters, `}` with nothing open, `&` outside alignments,
  unknown control sequences and environments (including `\\end{document}`) are never allowed;
- only control sequences and environments that appear in the training equations (`SyntaxVocabulary`) AND
  whose syntax the tables below know are ever offered.

Tokens may be single characters (CharTokenizer: a control word is spelled letter by letter and its partial
name is checked against the names legal in that context) or LaTeX tokens (`\\frac`, `\\begin{aligned}`).
Speed: states are interned; the mask of a state depends only on a small key (pending item, flags, the
innermost open frame, whether the depth cap is reached, the marks of open arguments), so masks are
computed once per key (control words that behave alike are tried once) into a bool table [keys, V] and
looked up by index; transitions are cached per (state, token). Share one TokenAutomaton per model.

A prefix the constraint cannot parse (e.g. a prime with an unknown macro) leaves that sequence
unconstrained (`broken`), with an empty closing.
"""
from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Iterable, Protocol, Sequence

import torch


class SequenceConstraint(Protocol):
    def start(self, batch_size: int) -> None: ...
    def allowed_mask(self) -> torch.Tensor: ...
    def advance(self, token_ids: list[int]) -> None: ...
    def closing(self) -> list[str]: ...


# ----------------------------------------------------------------------------------------------------
# Tables: what each control sequence of the compile rule's preamble does syntactically.
# ----------------------------------------------------------------------------------------------------

def _words(s: str) -> frozenset[str]:
    return frozenset(s.split())


GREEK = _words("""alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa varkappa lambda
mu nu xi pi varpi rho varrho sigma varsigma tau upsilon phi varphi chi psi omega digamma
Gamma Delta Theta Lambda Xi Pi Sigma Upsilon Phi Psi Omega
varGamma varDelta varTheta varLambda varXi varPi varSigma varUpsilon varPhi varPsi varOmega""")

# Ordinary, binary, relation, punctuation symbols and arrows: no argument, one atom.
SYMBOLS = GREEK | _words("""
infty partial nabla ell hbar hslash imath jmath wp Re Im aleph beth gimel daleth prime backprime
emptyset varnothing forall exists nexists neg lnot top bot angle measuredangle sphericalangle triangle
Box square blacksquare Diamond diamond lozenge blacklozenge bigstar clubsuit diamondsuit heartsuit
spadesuit flat natural sharp complement eth mho surd dagger ddagger S P checkmark circledS Bbbk Finv Game
ldots cdots vdots ddots dots dotsb dotsc dotsm dotsi dotso colon cdotp ldotp vcentcolon
pm mp times div cdot ast star circ bullet cap cup uplus sqcap sqcup vee wedge lor land setminus
smallsetminus wr oplus ominus otimes oslash odot bigcirc amalg triangleleft triangleright
bigtriangleup bigtriangledown lhd rhd unlhd unrhd dotplus ltimes rtimes leftthreetimes rightthreetimes
boxplus boxminus boxtimes boxdot circledast circledcirc circleddash centerdot intercal barwedge veebar
doublebarwedge curlyvee curlywedge Cap Cup divideontimes
leq le geq ge neq ne equiv sim simeq approx cong propto prec succ preceq succeq ll gg subset supset
subseteq supseteq sqsubset sqsupset sqsubseteq sqsupseteq in ni owns notin vdash dashv models perp mid
parallel nmid nparallel asymp doteq doteqdot bowtie smile frown smallsmile smallfrown lesssim gtrsim
leqslant geqslant eqslantless eqslantgtr lessapprox gtrapprox approxeq thicksim thickapprox backsim
backsimeq subsetneq supsetneq subsetneqq supsetneqq varsubsetneq varsupsetneq nsubseteq nsupseteq
subseteqq supseteqq Subset Supset lneq gneq lneqq gneqq nleq ngeq nless ngtr nleqslant ngeqslant
lnsim gnsim lnapprox gnapprox nsim ncong nprec nsucc npreceq nsucceq precsim succsim precapprox
succapprox precneqq succneqq precnsim succnsim precnapprox succnapprox
trianglelefteq trianglerighteq vartriangleleft vartriangleright ntriangleleft ntriangleright
ntrianglelefteq ntrianglerighteq vartriangle blacktriangle blacktriangledown blacktriangleleft
blacktriangleright triangledown coloneqq eqqcolon Coloneqq Eqqcolon coloneq eqcolon Coloneq Eqcolon
dblcolon colonapprox Colonapprox colonsim Colonsim triangleq circeq bumpeq Bumpeq risingdotseq
fallingdotseq eqcirc preccurlyeq succcurlyeq curlyeqprec curlyeqsucc lll ggg lessgtr gtrless lesseqgtr
gtreqless lesseqqgtr gtreqqless leqq geqq lessdot gtrdot vDash Vdash Vvdash nvdash nvDash nVdash nVDash
shortmid shortparallel nshortmid nshortparallel therefore because between pitchfork backepsilon
varpropto
to gets leftarrow rightarrow Leftarrow Rightarrow leftrightarrow Leftrightarrow longleftarrow
longrightarrow Longleftarrow Longrightarrow longleftrightarrow Longleftrightarrow mapsto longmapsto
hookleftarrow hookrightarrow uparrow downarrow updownarrow Uparrow Downarrow Updownarrow nearrow
searrow swarrow nwarrow iff implies impliedby leadsto rightharpoonup rightharpoondown leftharpoonup
leftharpoondown rightleftharpoons leftrightharpoons rightrightarrows leftleftarrows leftrightarrows
rightleftarrows twoheadrightarrow twoheadleftarrow rightarrowtail leftarrowtail looparrowleft
looparrowright circlearrowleft circlearrowright curvearrowleft curvearrowright upharpoonleft
upharpoonright downharpoonleft downharpoonright upuparrows downdownarrows multimap nrightarrow
nleftarrow nRightarrow nLeftarrow nleftrightarrow nLeftrightarrow rightsquigarrow leftrightsquigarrow
Lsh Rsh dashrightarrow dashleftarrow Lleftarrow Rrightarrow longleftrightarrow
langle rangle lfloor rfloor lceil rceil vert Vert lvert rvert lVert rVert backslash lbrace rbrace
lbrack rbrack ulcorner urcorner llcorner lrcorner lgroup rgroup
not bmod
""")

# Large operators and log-like functions: one atom after which \limits / \nolimits are legal.
OPERATORS = _words("""
sum prod coprod int iint iiint iiiint oint idotsint bigcup bigcap bigsqcup bigvee bigwedge bigoplus
bigotimes bigodot biguplus smallint
sin cos tan cot sec csc arcsin arccos arctan sinh cosh tanh coth log ln lg exp det dim ker hom arg deg
gcd lim limsup liminf max min sup inf Pr injlim projlim varlimsup varliminf varinjlim varprojlim
""")

LIMITS = _words("limits nolimits")
# Spacing and style switches: no atom (a later ^ gets an empty nucleus in TeX; we stay conservative and
# keep the script flags of the last atom).
SPACES = _words("""quad qquad enspace thinspace medspace thickspace negthinspace negmedspace negthickspace
displaystyle textstyle scriptstyle scriptscriptstyle rm bf it sf tt cal mit""")
GENFRACS = _words("over atop choose")
DELIM_WORDS = _words("""langle rangle lfloor rfloor lceil rceil vert Vert lvert rvert lVert rVert uparrow
downarrow updownarrow Uparrow Downarrow Updownarrow backslash lgroup rgroup lmoustache rmoustache
lbrace rbrace lbrack rbrack ulcorner urcorner llcorner lrcorner arrowvert Arrowvert bracevert""")
BIG_WORDS = _words("""big Big bigg Bigg bigl bigr Bigl Bigr biggl biggr Biggl Biggr bigm Bigm biggm Biggm""")

# Argument-taking macros: kinds of their arguments, in order. 'm' = math group or one token, 'g' = math
# group only, 't' = text-mode group, 'r' = optional [math] argument, 'q' = optional star.
ARG_MACROS: dict[str, tuple[str, ...]] = {}
for _n in _words("""hat widehat check tilde widetilde bar overline underline vec overrightarrow
overleftarrow overleftrightarrow underrightarrow underleftarrow underleftrightarrow dot ddot dddot ddddot
acute grave breve mathring mathrm mathbf mathit mathsf mathtt mathcal mathbb mathfrak mathnormal
boldsymbol bm pmb phantom hphantom vphantom mathop mathbin mathrel mathord mathopen mathclose mathpunct
mathinner overbrace underbrace boxed pmod pod"""):
    ARG_MACROS[_n] = ("m",)
for _n in _words("frac dfrac tfrac cfrac binom dbinom tbinom overset underset stackrel"):
    ARG_MACROS[_n] = ("m", "m")
for _n in _words("text textrm textbf textit textsf texttt textnormal textup textsl textsc textmd emph mbox hbox"):
    ARG_MACROS[_n] = ("t",)
ARG_MACROS["sqrt"] = ("r", "m")
ARG_MACROS["smash"] = ("g",)  # amsmath's \smash[t|b]: keep `[` away from it
for _n in _words("""xrightarrow xleftarrow xleftrightarrow xRightarrow xLeftarrow xLeftrightarrow xmapsto
xhookrightarrow xhookleftarrow xrightharpoonup xrightharpoondown xleftharpoonup xleftharpoondown
xrightleftharpoons xleftrightharpoons"""):
    ARG_MACROS[_n] = ("r", "g")
ARG_MACROS["operatorname"] = ("q", "g")
# amsmath accents: nested ones fail in some contexts (\macc@kerna undefined: `\hat{\xrightarrow{\hat x}}`,
# accents deep inside an accented array): no accent inside an accent's or an extensible arrow's argument.
ACCENTS = _words("""hat widehat check tilde widetilde bar vec dot ddot dddot ddddot acute grave breve
mathring""")
XARROWS = frozenset(n for n, k in ARG_MACROS.items() if k == ("r", "g"))
# Robust macros that TeX accepts as a script's argument without braces (`x^\mathrm{T}`, `x_\text{max}`):
# TeX skips their \relax (\protect) when it looks for the math field; `x^\hat x` fails.
SCRIPT_MACROS = _words("mathrm mathbf mathit mathsf mathtt mathcal mathbb mathfrak text frac")
# \bm / \boldsymbol take their argument apart: inside it only symbols, operators, spacing, groups and
# scripts (`\bm{\binom12}` is an error, `\boldsymbol{\operatorname{..}\text{..}}` loops past the time limit,
# an environment fails inside a matrix).
BOLD = _words("bm boldsymbol")
# Marks an argument frame carries down to everything nested in it.
MARKS = {**{n: "x" for n in XARROWS}, **{n: "h" for n in ACCENTS}, **{n: "b" for n in BOLD}}
OP_RESULT = _words("mathop overbrace underbrace operatorname")  # these make an operator atom

STRUCTURAL = _words("left right middle begin end hline")

# Control symbols.
SPACE_SYMBOLS = frozenset(", ; : ! > ".split()) | {" "}
ORD_SYMBOLS = frozenset("{ } | _ & % # $".split())
DELIM_SYMBOLS = frozenset("{ } |".split())
TEXT_SYMBOLS = frozenset(", & % # _ { }".split()) | {" "}
TEXT_WORDS = _words("quad qquad")

# Symbols that break as an undelimited argument (`x^\ldots` -> "Missing { inserted"), measured with
# pdflatex over x^\foo, x_\foo, \frac\foo\foo, \hat\foo, \sqrt\foo, \mathrm\foo.
NOT_ARGSAFE = _words("""
Colonapprox Coloneq Coloneqq Colonsim Longrightarrow Pr arccos arcsin arctan arg bigcap bigcup bigodot
bigoplus bigotimes bigsqcup biguplus bigvee bigwedge bmod bowtie cdots colon colonapprox coloneq
coloneqq colonsim cong coprod cos cosh cot coth csc dashleftarrow dashrightarrow dblcolon ddots deg det
dim doteq dots dotsb dotsc dotsi dotsm dotso exp gcd hom idotsint iff iiiint iiint iint impliedby
implies inf injlim int ker ldots lg lim liminf limsup ln log longrightarrow max min models notin oint
prod projlim sec sin sinh sum sup tan tanh varinjlim varliminf varlimsup varprojlim vcentcolon vdots
""")

# Environments: name -> max number of `&` per row (None = unlimited), whether \hline is legal.
ENVIRONMENTS: dict[str, int | None] = {
    "aligned": None, "gathered": 0, "split": 1, "cases": 1, "dcases": 1, "rcases": 1,
    "matrix": 9, "pmatrix": 9, "bmatrix": 9, "Bmatrix": 9, "vmatrix": 9, "Vmatrix": 9, "smallmatrix": 9,
    "psmallmatrix": 9, "multlined": 0,  # mathtools (in the compile preamble)
    "array": -1,  # from the column spec
    "alignedat": -2,  # 2n - 1 from {n}
}

LETTERS = frozenset(string.ascii_letters)
DIGITS = frozenset(string.digits)
MATH_CHARS = LETTERS | DIGITS | frozenset("+-=<>()[]|/*.,;:!?\"@`")
ARG_CHARS = LETTERS | DIGITS
SCRIPT_CHARS = LETTERS | DIGITS | frozenset("+-=<>()[]|/*.,;:!?\"@`")
TEXT_CHARS = LETTERS | DIGITS | frozenset(".,;:!?'\"()[]-/+=*@<>|~`")
DELIM_CHARS = frozenset("()[]|/.<>")
SPACE_CHARS = frozenset(" \t\n")

# flag bits of a state
SUP, SUB, PRIME, OP, NB_BRACKET, NB_STAR, NL, GF, NB_AMP = 1, 2, 4, 8, 16, 32, 64, 128, 256
_ATOM_KEEP = GF  # what survives the start of a new atom


# ----------------------------------------------------------------------------------------------------
# What the training equations used
# ----------------------------------------------------------------------------------------------------

_CS_SCAN = re.compile(r"\\(?:([a-zA-Z]+)|(.))", re.DOTALL)
_BEGIN_SCAN = re.compile(r"\\begin\s*\{([^{}]*)\}")


@dataclass
class SyntaxVocabulary:
    """Control words, control symbols and environments seen in (compiling) training equations."""

    control_words: frozenset[str]
    control_symbols: frozenset[str]
    environments: frozenset[str]

    @classmethod
    def from_equations(cls, equations: Iterable[str]) -> "SyntaxVocabulary":
        words: set[str] = set()
        symbols: set[str] = set()
        envs: set[str] = set()
        for eq in equations:
            for m in _CS_SCAN.finditer(eq):
                if m.group(1):
                    words.add(m.group(1))
                else:
                    symbols.add(m.group(2))
            envs.update(n.strip() for n in _BEGIN_SCAN.findall(eq))
        return cls(frozenset(words), frozenset(symbols), frozenset(envs))

    def to_dict(self) -> dict:
        return {"control_words": sorted(self.control_words), "control_symbols": sorted(self.control_symbols),
                "environments": sorted(self.environments)}

    @classmethod
    def from_dict(cls, d: dict) -> "SyntaxVocabulary":
        return cls(frozenset(d["control_words"]), frozenset(d["control_symbols"]), frozenset(d["environments"]))

    def unsupported(self) -> dict[str, list[str]]:
        """Seen names that the tables do not know (they are never offered)."""
        known = (SYMBOLS | OPERATORS | LIMITS | SPACES | GENFRACS | BIG_WORDS | frozenset(ARG_MACROS)
                 | STRUCTURAL | DELIM_WORDS | TEXT_WORDS)
        return {"control_words": sorted(self.control_words - known),
                "control_symbols": sorted(self.control_symbols - SPACE_SYMBOLS - ORD_SYMBOLS - {"\\"}),
                "environments": sorted(self.environments - frozenset(ENVIRONMENTS))}


@dataclass
class SyntaxConfig:
    max_depth: int = 10  # open groups/arguments/\left/environments at once
    max_array_columns: int = 10
    max_environments: int = 3  # nested environments (6 nested alignments inside split fail)
    allow_newlines: bool = True  # single newlines (never a blank line)


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

    @staticmethod
    def _gf(flags) -> int:
        return flags & GF

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
                return (None, flags & _ATOM_KEEP, self._touch(stack))
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
                return (None, 0, self._touch(stack) + (("g", flags & GF),))
            if c == "}":
                if top is None or top[0] not in ("g", "a"):
                    return None
                if top[0] == "g":
                    return (None, top[1], stack[:-1])
                if top[3] == "b":  # \bm{..} unwraps: a script of its last atom stays on it (`\bm{a^2}^3` fails)
                    return self._args_next(top[1], (top[2] & ~(SUP | SUB | PRIME)) | (flags & (SUP | SUB)),
                                           stack[:-1])
                return self._args_next(top[1], top[2], stack[:-1])
            if c == "&":
                if top is None or top[0] != "e" or top[2] == -1:
                    return None
                name, maxamp, amp, rowstart, gf = top[1:]
                if maxamp is not None and amp >= maxamp:
                    return None
                amp = amp + 1 if maxamp is not None else 0
                return (None, 0, stack[:-1] + (("e", name, maxamp, amp, False, gf),))
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
                return (None, NB_BRACKET | NB_STAR, stack[:-1] + (("e", name, maxamp, 0, True, gf),))
            if c in self.space_symbols:
                return (None, flags & ~(PRIME | OP), self._touch(stack))
            if c in self.ord_symbols:
                return (None, flags & _ATOM_KEEP, self._touch(stack))
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
            new_stack = self._touch(stack) + (("e", env, maxamp, 0, True, flags & GF),)
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
            return (None, flags & _ATOM_KEEP, self._touch(stack))
        if name in self.operators:
            return (None, (flags & _ATOM_KEEP) | OP, self._touch(stack))
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
            after = (flags & _ATOM_KEEP) | (OP if name in OP_RESULT else 0)
            if name in MARKS:
                return (("arg", kinds, after, MARKS[name]), flags & GF, self._touch(stack))
            return (("arg", kinds, after), flags & GF, self._touch(stack))
        if name in self.bigs:
            return (("dl", "big", flags & _ATOM_KEEP), flags & GF, self._touch(stack))
        if name == "left" and "left" in self.structural and "right" in self.structural:
            # inside [..] of \sqrt a `]` (e.g. of \right]) would end the optional argument
            if not self._can_push(stack) or (top is not None and top[0] == "o"):
                return None
            return (("dl", "left", flags & GF), flags & GF, self._touch(stack))
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
        if ptype == "arg":
            kinds, after = pending[1], pending[2]
            k = kinds[0]
            if kind == "s":
                if lx[1]:
                    if not self.config.allow_newlines or flags & NL:
                        return None
                    return (pending, flags | NL, stack)
                return state
            flags &= ~NL
            if k == "q":
                if kind == "c" and lx[1] == "*":
                    return (("arg", kinds[1:], after), flags, stack)
                return self._lex_pending((("arg", kinds[1:], after), flags, stack), lx)
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
            if kind == "s":
                if lx[1]:
                    if not self.config.allow_newlines or flags & NL:
                        return None
                    return (pending, flags | NL, stack)
                return state
            if kind == "c" and lx[1] == "]" and stack and stack[-1][0] == "o":
                return None
            ok = ((kind == "c" and lx[1] in DELIM_CHARS) or (kind == "y" and lx[1] in self.delim_symbols)
                  or (kind == "w" and lx[1] in self.delim_words))
            if not ok:
                return None
            gf = flags & GF
            if what == "left":
                return (None, 0, stack + (("l", gf),))
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
            if state[0] is None and not state[2]:
                if state[1] & NL:  # nothing but blanks on this line: write an empty group
                    out.append("{}")
                return "".join(out)
            piece = self._closing_piece(state)
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

    def _closing_piece(self, state) -> str:
        pending, flags, stack = state
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

_TOKEN_LEX = re.compile(r"\\(?:begin|end)\{([a-zA-Z]+\*?)\}\Z")
_WORD_TOKEN = re.compile(r"\\([a-zA-Z]+)\Z")
_SYMBOL_TOKEN = re.compile(r"\\([^a-zA-Z])\Z", re.DOTALL)


class TokenAutomaton:
    """The automaton lifted to a token vocabulary, with interned states and cached masks/transitions.

    Build one per (vocabulary, syntax) and share it between LatexConstraint objects: caches persist.
    """

    def __init__(self, vocab: Sequence[str], syntax: SyntaxVocabulary, *, eos_id: int,
                 special_ids: Iterable[int] = (), config: SyntaxConfig | None = None):
        self.vocab = list(vocab)
        self.syntax = syntax
        self.auto = SyntaxAutomaton(syntax, config)
        self.eos_id = int(eos_id)
        self.special = set(int(i) for i in special_ids) | {self.eos_id}
        self.V = len(self.vocab)
        self._plan = [self._plan_token(i, t) for i, t in enumerate(self.vocab)]
        self._classes = self._token_classes()
        self._states: list = []
        self._state_ids: dict = {}
        self._key_of: list[int] = []  # state id -> mask row
        self._key_rows: dict = {}
        self.n_keys = 0  # distinct state keys = mask rows in use
        self._complete: list[bool] = []
        self._table = torch.zeros(64, self.V, dtype=torch.bool)  # mask rows 0..n_keys-1, grown by doubling
        self._trans: dict[tuple[int, int], int] = {}
        self._closing: dict[int, str] = {}
        self.start_id = self.intern(START)
        self.unconstrained_row = torch.ones(self.V, dtype=torch.bool)
        for i in self.special - {self.eos_id}:
            self.unconstrained_row[i] = False
        self.finished_row = torch.zeros(self.V, dtype=torch.bool)
        self.finished_row[self.eos_id] = True

    def _plan_token(self, i, tok):
        """How a token is applied: ("special",) | ("lex", lexeme, is_word) | ("chars", text, is_word)."""
        if i in self.special:
            return ("special",)
        m = _TOKEN_LEX.match(tok)
        if m:
            return ("lex", ("b" if tok.startswith("\\begin") else "e", m.group(1)), False, tok)
        m = _WORD_TOKEN.match(tok)
        if m:
            return ("lex", ("w", m.group(1)), True, tok)
        m = _SYMBOL_TOKEN.match(tok)
        if m and m.group(1) not in SPACE_CHARS:
            return ("lex", ("y", m.group(1)), False, tok)
        if tok and all(c in SPACE_CHARS for c in tok):
            return ("lex", ("s", "\n" in tok), False, tok)
        return ("chars", tok, False, tok)

    def intern(self, state) -> int:
        sid = self._state_ids.get(state)
        if sid is None:
            sid = len(self._states)
            self._states.append(state)
            self._state_ids[state] = sid
            k = self.auto.key(state)
            row = self._key_rows.get(k)
            if row is None:
                row = self.n_keys
                self._key_rows[k] = row
                mask = self._compute_mask(state)
                self.n_keys += 1
                if row >= self._table.shape[0]:
                    grown = torch.zeros(2 * self._table.shape[0], self.V, dtype=torch.bool)
                    grown[:row] = self._table[:row]
                    self._table = grown
                self._table[row] = mask
            self._key_of.append(row)
            self._complete.append(self.auto.complete(state))
        return sid

    def _apply(self, state, ti):
        plan = self._plan[ti]
        if plan[0] == "special":
            return None
        pending = state[0]
        if plan[0] == "lex" and not (pending is not None and pending[0] == "cs"):
            lx = plan[1]
            if lx[0] in ("b", "e") and pending is not None:
                return None  # \begin{x} as one token where the name is not expected as characters
            if lx[0] in ("w", "y") and pending is not None and pending[0] in ("env", "col", "cnt"):
                return None
            return self.auto.lex(state, lx)
        return self.auto.text(state, plan[3], end_word=plan[2])

    def _word_signature(self, name: str) -> tuple:
        """Everything about a control word that its legality depends on (outside a partial name)."""
        a = self.auto
        return (name in a.symbols, name in a.operators, name in NOT_ARGSAFE, name in a.limits, name in a.spaces,
                name in a.genfracs, a.arg_macros.get(name), name in OP_RESULT, name in a.bigs,
                name in a.delim_words, name in a.text_words, name if name in a.structural else None,
                name in ACCENTS, MARKS.get(name), name in SCRIPT_MACROS)

    def _token_classes(self) -> list[tuple[int, list[int]]]:
        """Tokens that are legal in exactly the same states (except while a name is being spelled): control
        words with the same signature; every other token is its own class. (representative, members)"""
        groups: dict = {}
        for ti, plan in enumerate(self._plan):
            if plan[0] == "special":
                continue
            if plan[0] == "lex" and plan[1][0] == "w":
                key = ("w",) + self._word_signature(plan[1][1])
            else:
                key = ("t", ti)
            groups.setdefault(key, []).append(ti)
        return [(members[0], members) for members in groups.values()]

    def _compute_mask(self, state) -> torch.Tensor:
        ok = [False] * self.V
        if state[0] is not None and state[0][0] == "cs":
            for ti in range(self.V):
                if self._plan[ti][0] != "special":
                    ok[ti] = self._apply(state, ti) is not None
        else:
            for rep, members in self._classes:
                if self._apply(state, rep) is not None:
                    for ti in members:
                        ok[ti] = True
        ok[self.eos_id] = self.auto.complete(state)
        return torch.tensor(ok, dtype=torch.bool)

    def step(self, sid: int, ti: int) -> int:
        """Next state id, or -1 if the token is illegal."""
        k = (sid, ti)
        nxt = self._trans.get(k)
        if nxt is None:
            s = self._apply(self._states[sid], ti)
            nxt = -1 if s is None else self.intern(s)
            self._trans[k] = nxt
        return nxt

    def table(self) -> torch.Tensor:
        """bool [number of distinct state keys, V]: one mask row per key."""
        return self._table[: self.n_keys]

    def mask_rows(self, sids: Sequence[int]) -> torch.Tensor:
        key_of = self._key_of
        return self._table[torch.tensor([key_of[s] for s in sids], dtype=torch.long)]

    def closing(self, sid: int) -> str:
        c = self._closing.get(sid)
        if c is None:
            c = self.auto.closing(self._states[sid])
            self._closing[sid] = c
        return c

    def is_complete(self, sid: int) -> bool:
        return self._complete[sid]

    @property
    def n_states(self) -> int:
        return len(self._states)

    def state(self, sid: int):
        return self._states[sid]

    def run_text(self, text: str):
        """State after a whole text spelled by characters (None if illegal): for checks and tests."""
        return self.auto.text(START, text)


class LatexConstraint:
    """Per-batch syntax constraint (SequenceConstraint). Make one per sampler call; share the automaton."""

    def __init__(self, automaton: TokenAutomaton):
        self.automaton = automaton
        self.sids: list[int] = []
        self.finished: list[bool] = []
        self.broken: list[bool] = []

    @classmethod
    def from_equations(cls, equations: Iterable[str], vocab: Sequence[str], eos_id: int, *,
                       special_ids: Iterable[int] = (), config: SyntaxConfig | None = None) -> "LatexConstraint":
        syntax = SyntaxVocabulary.from_equations(equations)
        return cls(TokenAutomaton(vocab, syntax, eos_id=eos_id, special_ids=special_ids, config=config))

    @classmethod
    def for_tokenizer(cls, tokenizer, syntax: SyntaxVocabulary, config: SyntaxConfig | None = None) -> "LatexConstraint":
        return cls(TokenAutomaton(tokenizer.tokens, syntax, eos_id=tokenizer.eos_id,
                                  special_ids=tokenizer.special_ids, config=config))

    def fresh(self) -> "LatexConstraint":
        return LatexConstraint(self.automaton)

    # --- protocol ---
    def start(self, batch_size: int) -> None:
        a = self.automaton
        self.sids = [a.start_id] * batch_size
        self.finished = [False] * batch_size
        self.broken = [False] * batch_size

    def allowed_mask(self) -> torch.Tensor:
        a = self.automaton
        mask = a.mask_rows([max(s, 0) for s in self.sids])
        if any(self.finished) or any(self.broken):
            mask = mask.clone()
            for i, (f, b) in enumerate(zip(self.finished, self.broken)):
                if f:
                    mask[i] = a.finished_row
                elif b:
                    mask[i] = a.unconstrained_row
        return mask

    def advance(self, token_ids: Sequence[int]) -> None:
        a = self.automaton
        eos = a.eos_id
        sids = self.sids
        for i, t in enumerate(token_ids):
            if self.finished[i] or self.broken[i]:
                continue
            t = int(t)
            if t == eos:
                self.finished[i] = True
                continue
            nxt = a.step(sids[i], t)
            if nxt < 0:  # e.g. a prime the constraint cannot parse: stop constraining this sequence
                self.broken[i] = True
            else:
                sids[i] = nxt

    def closing(self) -> list[str]:
        a = self.automaton
        return ["" if (f or b) else a.closing(s) for s, f, b in zip(self.sids, self.finished, self.broken)]

    # --- extras ---
    def complete(self) -> list[bool]:
        """Per sequence: is the prefix a complete equation as it stands?"""
        a = self.automaton
        return [f or (not b and a.is_complete(s)) for s, f, b in zip(self.sids, self.finished, self.broken)]
