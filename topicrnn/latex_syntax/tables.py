"""What each control sequence of the compile rule's preamble does syntactically, and what the training
equations used (`SyntaxVocabulary`): the data the automaton (automaton.py) reads, no logic of its own.

Every entry was checked against real pdflatex (see the package docstring).
"""
from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Iterable


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

# ----------------------------------------------------------------------------------------------------
# What a mathematician writes (wellformed.py): delimiters, operators that need an operand, word macros
# ----------------------------------------------------------------------------------------------------
PAREN, BRACKET, BRACE = 1, 2, 3  # delimiter kinds (a round or square opener may close with either: `[0, 1)`)
OPEN_CHARS = {"(": PAREN, "[": BRACKET}
CLOSE_CHARS = {")": PAREN, "]": BRACKET}
OPEN_WORDS = {"lbrace": BRACE, "lbrack": BRACKET}
CLOSE_WORDS = {"rbrace": BRACE, "rbrack": BRACKET}
# Binary operators and relations: each needs an operand after it (outside scripts: `x^{2+}`, `\mathbb{R}_+`).
BINARY_WORDS = _words("""pm mp times div cap cup uplus sqcap sqcup vee wedge lor land setminus smallsetminus wr
oplus ominus otimes oslash odot bigcirc amalg dotplus ltimes rtimes leftthreetimes rightthreetimes boxplus
boxminus boxtimes boxdot circledast circledcirc circleddash intercal barwedge veebar doublebarwedge curlyvee
curlywedge Cap Cup divideontimes bmod neg lnot forall exists nexists""")
RELATION_WORDS = _words("""leq le geq ge neq ne equiv sim simeq approx cong propto prec succ preceq succeq ll gg
subset supset subseteq supseteq sqsubset sqsupset sqsubseteq sqsupseteq in ni owns notin vdash dashv models
mid parallel nmid nparallel asymp doteq doteqdot lesssim gtrsim leqslant geqslant eqslantless eqslantgtr
lessapprox gtrapprox approxeq thicksim thickapprox backsim backsimeq subsetneq supsetneq subsetneqq supsetneqq
varsubsetneq varsupsetneq nsubseteq nsupseteq subseteqq supseteqq Subset Supset lneq gneq lneqq gneqq nleq ngeq
nless ngtr nleqslant ngeqslant lnsim gnsim nsim ncong nprec nsucc npreceq nsucceq trianglelefteq
trianglerighteq ntrianglelefteq ntrianglerighteq coloneqq eqqcolon Coloneqq Eqqcolon coloneq eqcolon Coloneq
Eqcolon triangleq circeq bumpeq Bumpeq risingdotseq fallingdotseq eqcirc preccurlyeq succcurlyeq lll ggg leqq
geqq vDash Vdash nvdash nvDash varpropto
to gets leftarrow rightarrow Leftarrow Rightarrow leftrightarrow Leftrightarrow longleftarrow longrightarrow
Longleftarrow Longrightarrow longleftrightarrow Longleftrightarrow mapsto longmapsto hookleftarrow
hookrightarrow iff implies impliedby leadsto rightharpoonup rightharpoondown leftharpoonup leftharpoondown
rightleftharpoons leftrightharpoons twoheadrightarrow twoheadleftarrow rightarrowtail leftarrowtail
rightsquigarrow dashrightarrow dashleftarrow""")
# (`\cdot`, `\circ`, `\ast`, `\star`, `\bullet` are left out: they stand alone as placeholders, `f(\cdot)`.)
SIGN_WORDS = _words("pm mp")
OPERATOR_CHARS = frozenset("+-=<>")
SIGN_CHARS = frozenset("+-")
# A sign where no operand precedes it (a scope's start, after an opener or punctuation) may stand for an
# argument, as in `\mathrm{Hom}(-, M)`, `(-)^\vee`, `- \otimes_R M`: there it asks for nothing.
LEAD_CHARS = frozenset(",;:([")
# What may not directly follow an operator that waits for its operand: closers, punctuation, a relation.
# (May: scripts, `\otimes_R`, `\sum_i`; a sign or a binary operator, `\to - \otimes_A N`; an alignment's
# `&` or `\\`, `a = & b`, the operand coming in the next cell.)
NOT_AFTER_OPERATOR_CHARS = frozenset(")]},;!?'=<>/*")
# Arguments that hold an operator alone (`\stackrel{d}{\to}`, `\phantom{=}`), or nothing (`\xrightarrow{}`).
LONE_OPERATOR_MACROS = _words("phantom hphantom vphantom stackrel overset underset mathrel mathbin mathop")
CLOSING_WORDS = _words("rangle rfloor rceil rvert rVert rbrace rbrack right middle end")
# Macros whose argument is words: \text-like (text mode) and \mathrm / \operatorname (upright math).
TEXT_ARG_MACROS = frozenset(n for n, k in ARG_MACROS.items() if k == ("t",))
ROMAN_MACROS = _words("mathrm operatorname")


# ----------------------------------------------------------------------------------------------------
# What the training equations used
# ----------------------------------------------------------------------------------------------------

_CS_SCAN = re.compile(r"\\(?:([a-zA-Z]+)|(.))", re.DOTALL)
_BEGIN_SCAN = re.compile(r"\\begin\s*\{([^{}]*)\}")
_WORD_ARG_SCAN = re.compile(r"\\(%s)\s*\*?\s*\{" % "|".join(sorted(TEXT_ARG_MACROS | ROMAN_MACROS, key=len,
                                                                        reverse=True)))
_LETTER_RUN = re.compile(r"\\[a-zA-Z]+|[a-zA-Z]+")


def _group_body(text: str, start: int) -> str:
    """The text of the brace group whose `{` is just before `start` (to the end if it never closes)."""
    depth, i = 1, start
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        depth += (c == "{") - (c == "}")
        if depth == 0:
            return text[start:i]
        i += 1
    return text[start:]


def argument_words(equation: str) -> tuple[set[str], set[str]]:
    """(words inside \\text-like arguments, words inside \\mathrm / \\operatorname arguments): maximal runs of
    ASCII letters that are not a control word's name."""
    text: set[str] = set()
    roman: set[str] = set()
    for m in _WORD_ARG_SCAN.finditer(equation):
        body = _group_body(equation, m.end())
        words = {w for w in _LETTER_RUN.findall(body) if not w.startswith("\\")}
        (roman if m.group(1) in ROMAN_MACROS else text).update(words)
    return text, roman


@dataclass
class SyntaxVocabulary:
    """Control words, control symbols and environments seen in (compiling) training equations, and the words
    written inside \\text-like and \\mathrm / \\operatorname arguments (empty: no word rule, any letters)."""

    control_words: frozenset[str]
    control_symbols: frozenset[str]
    environments: frozenset[str]
    text_words: frozenset[str] = frozenset()
    roman_words: frozenset[str] = frozenset()

    @classmethod
    def from_equations(cls, equations: Iterable[str]) -> "SyntaxVocabulary":
        words: set[str] = set()
        symbols: set[str] = set()
        envs: set[str] = set()
        text: set[str] = set()
        roman: set[str] = set()
        for eq in equations:
            for m in _CS_SCAN.finditer(eq):
                if m.group(1):
                    words.add(m.group(1))
                else:
                    symbols.add(m.group(2))
            envs.update(n.strip() for n in _BEGIN_SCAN.findall(eq))
            t, r = argument_words(eq)
            text |= t
            roman |= r
        return cls(frozenset(words), frozenset(symbols), frozenset(envs), frozenset(text), frozenset(roman))

    def to_dict(self) -> dict:
        return {"control_words": sorted(self.control_words), "control_symbols": sorted(self.control_symbols),
                "environments": sorted(self.environments), "text_words": sorted(self.text_words),
                "roman_words": sorted(self.roman_words)}

    @classmethod
    def from_dict(cls, d: dict) -> "SyntaxVocabulary":
        return cls(frozenset(d["control_words"]), frozenset(d["control_symbols"]), frozenset(d["environments"]),
                   frozenset(d.get("text_words", ())), frozenset(d.get("roman_words", ())))

    def unsupported(self) -> dict[str, list[str]]:
        """Seen names that the tables do not know (they are never offered)."""
        known = (SYMBOLS | OPERATORS | LIMITS | SPACES | GENFRACS | BIG_WORDS | frozenset(ARG_MACROS)
                 | STRUCTURAL | DELIM_WORDS | TEXT_WORDS)
        return {"control_words": sorted(self.control_words - known),
                "control_symbols": sorted(self.control_symbols - SPACE_SYMBOLS - ORD_SYMBOLS - {"\\"}),
                "environments": sorted(self.environments - frozenset(ENVIRONMENTS))}

