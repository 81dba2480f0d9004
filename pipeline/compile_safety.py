"""Which equations may share a pdflatex run with others (the batch path of the compile check).

An equation shares a run only if nothing it can do outlives it: every control sequence it names is either on
the reviewed list below (math typesetting whose effects are local to a group) or undefined under the preamble
(it then stops with `! Undefined control sequence.`, exactly as it does alone), and it contains no `^^`
notation, control characters or non-ASCII bytes (which could form other control sequences). Everything else
(`\\def`, `\\global`, `\\catcode`, `\\csname`, `\\input`, `\\write`, `\\label`, counters, ...) is checked on its
own with the one-document rule. The scan is deliberately coarser than TeX: it never skips comments, so it can
only see more names than TeX executes, never fewer.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from pipeline.package_macros import structure_problem

# Math typesetting commands of LaTeX, amsmath, amssymb, amsfonts, mathtools and bm whose effects stay inside
# the display's group: no counters, labels, writes, file access, global assignments or deferred material.
# Reviewed by reading their definitions under the default preamble; a custom preamble only keeps a name whose
# meaning is the same as under the default preamble.
SAFE_COMMANDS: frozenset[str] = frozenset("""
alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa varkappa lambda mu nu xi omicron pi
varpi rho varrho sigma varsigma tau upsilon phi varphi chi psi omega digamma
Gamma Delta Theta Lambda Xi Pi Sigma Upsilon Phi Psi Omega varGamma varDelta varTheta varLambda varXi varPi
varSigma varUpsilon varPhi varPsi varOmega
frac dfrac tfrac cfrac genfrac binom dbinom tbinom sqrt root of over atop above choose brace brack
overwithdelims atopwithdelims abovewithdelims
left right middle big Big bigg Bigg bigl bigr Bigl Bigr biggl biggr Biggl Biggr bigm Bigm biggm Biggm
mathrm mathbf mathit mathsf mathtt mathcal mathbb mathfrak mathnormal boldsymbol bm pmb mathversion
rm bf it sf tt sl sc cal mit em
text textrm textbf textit textsf texttt textsl textsc textup textmd textnormal emph mbox hbox fbox boxed
mathop mathbin mathrel mathord mathopen mathclose mathpunct mathinner operatorname
displaystyle textstyle scriptstyle scriptscriptstyle limits nolimits displaylimits
quad qquad enspace thinspace medspace thickspace negthinspace negmedspace negthickspace hspace hskip kern
mkern mskip hfill hfil relax nonscript allowbreak nobreak
phantom hphantom vphantom smash mathstrut strut vcenter raisebox
hat widehat tilde widetilde bar overline underline vec dot ddot dddot ddddot breve check acute grave mathring
Hat Tilde Bar Vec Dot Ddot Breve Check Acute Grave
overbrace underbrace overrightarrow overleftarrow overleftrightarrow underrightarrow underleftarrow
underleftrightarrow xrightarrow xleftarrow xmapsto xhookrightarrow xhookleftarrow xLeftarrow xRightarrow
xleftrightarrow xLeftrightarrow xrightharpoonup xrightharpoondown xleftharpoonup xleftharpoondown
xrightleftharpoons xleftrightharpoons xlongequal
stackrel overset underset substack sideset prescript mathclap mathllap mathrlap clap llap rlap cramped
smashoperator adjustlimits
ldots cdots vdots ddots dots dotsc dotsb dotsm dotsi dotso hdots iddots
sum prod coprod int iint iiint iiiint idotsint oint bigcup bigcap bigsqcup bigvee bigwedge bigodot bigotimes
bigoplus biguplus
lim liminf limsup sup inf max min arg det dim exp ker log ln lg sin cos tan cot sec csc arcsin arccos arctan
sinh cosh tanh coth deg gcd hom Pr injlim projlim varinjlim varprojlim varliminf varlimsup
mod bmod pmod pod
not neq ne leq le geq ge
langle rangle lvert rvert lVert rVert vert Vert lceil rceil lfloor rfloor lbrace rbrace lbrack rbrack
backslash
colon coloneqq coloneq eqqcolon eqcolon Coloneqq Coloneq dblcolon vcentcolon
prime infty partial nabla forall exists nexists emptyset varnothing hbar hslash ell wp Re Im aleph beth gimel
imath jmath
cdot times div pm mp ast star circ bullet oplus ominus otimes oslash odot cap cup sqcap sqcup wedge vee
setminus smallsetminus
to gets mapsto rightarrow leftarrow leftrightarrow Rightarrow Leftarrow Leftrightarrow longrightarrow
longleftarrow longleftrightarrow Longrightarrow Longleftarrow Longleftrightarrow longmapsto implies impliedby
iff uparrow downarrow updownarrow Uparrow Downarrow Updownarrow hookrightarrow hookleftarrow
in notin ni subset supset subseteq supseteq subsetneq supsetneq equiv sim simeq approx cong propto perp mid
parallel
dagger ddagger top bot models
vbox vtop hrule vrule cr crcr omit hline mathchoice lefteqn uproot leftroot ref eqref
normalfont rmfamily sffamily ttfamily bfseries mdseries itshape upshape slshape scshape
tiny scriptsize footnotesize small normalsize large Large LARGE huge Huge math
l L o O t th TH c r d a b v u H k i j ae AE oe OE ss aa AA dh DH ng NG
time day month year nulldelimiterspace delimitershortfall delimiterfactor scriptspace the
smallskip medskip bigskip vspace alph Alph arabic roman Roman boldmath unboldmath
""".split())
# Why the last two lines are safe: \time \day \month \year are integer parameters and \nulldelimiterspace
# \delimitershortfall \delimiterfactor \scriptspace math parameters: assigning one (there is no \global or
# \globaldefs among these names) is local to the group, and nothing after the equation reads them (LaTeX's
# \enddocument typesets no date or math; pdfTeX dates the PDF from the clock, not from \time). \the only
# expands. \smallskip \medskip \bigskip \vspace are `\vspace` (\vskip in vertical mode, else \@bsphack
# \vadjust{...} \@esphack, local assignments only). \alph \Alph \arabic \roman \Roman expand to
# `\@alph\csname c@#1\endcsname`: the \csname makes an undefined name \relax locally, nothing else.
# \boldmath \unboldmath are `\mathversion{bold|normal}` (as in \boldsymbol): \math@version is set locally; the
# global \glb@currsize and math fonts it resets are put back after every equation (FIRST_USE_SETUP).

# Control symbols (backslash + one non-letter) that only typeset or space: `\\{` `\\,` `\\\\` etc.
SAFE_SYMBOLS: frozenset[str] = frozenset(list("{}|,;:!> _%&$#[]()\"'\n^~=.`") + ["\\"])

# Environments that are math typesetting with local effects.
SAFE_ENVIRONMENTS: frozenset[str] = frozenset("""
matrix pmatrix bmatrix Bmatrix vmatrix Vmatrix smallmatrix matrix* pmatrix* bmatrix* Bmatrix* vmatrix* Vmatrix*
smallmatrix* psmallmatrix bsmallmatrix Bsmallmatrix vsmallmatrix Vsmallmatrix
cases cases* dcases dcases* rcases rcases* drcases drcases*
array subarray aligned alignedat gathered split lgathered rgathered multlined
""".split())

# Meanings (`\\meaning` under the preamble) that are a single math character, delimiter or accent: safe
# whatever the preamble, e.g. `\\mathchar"3221` (\\to) or `\\protected macro:->\\delimiter "426830A `.
_CHAR_MEANING = re.compile(
    r'^(?:\\mathchar"[0-9A-F]+|\\char"[0-9A-F]+|'
    r'(?:\\protected )?macro:->\\(?:mathchar|delimiter|mathaccent) ?"?[0-9A-F]+ ?)$')

_NAME_OK = re.compile(r"[A-Za-z]+\*?")


def meaning_is_char(meaning: str) -> bool:
    """True for a `\\meaning` that is one math character/delimiter/accent (safe under any preamble)."""
    return bool(_CHAR_MEANING.match(meaning))


# Characters an environment name may have besides letters (besides `=`, which the meaning query uses, and
# characters with a special meaning inside \\csname or a macro argument: `\\ { } % ~ # & $`).
_ENV_NAME_CHARS = re.compile(r"[A-Za-z0-9*@^_.:;,!?'\"()\[\]/|<>+ \t\n-]*")
_BLANK_LINE = re.compile(r"\n[ \t]*\n")


def environment_name(body: str) -> str | None:
    """The name `\\begin{BODY}` / `\\end{BODY}` looks up, as TeX reads it; "" when BODY holds a blank line (the
    argument ends in `! Paragraph ended before \\begin was complete.` and no name is looked up); None when
    this cannot be told from the text."""
    if _NAME_OK.fullmatch(body):
        return body
    if "\r" in body or not _ENV_NAME_CHARS.fullmatch(body):
        return None  # a carriage return ends the line in TeX (catcode 5): not modelled
    if _BLANK_LINE.search(body):
        return ""
    # Inside braces a run of spaces, tabs and a line end is one space token (TeX drops spaces at line ends
    # and at the start of the next line), and the name keeps it.
    return re.sub(r"[ \t\n]+", " ", body)


@dataclass
class Scan:
    """What the batch path needs to know about one equation."""

    names: set[str] = field(default_factory=set)  # control words (without backslash)
    environments: set[str] = field(default_factory=set)
    unsafe_reason: str | None = None  # set when the text itself rules out sharing a run


def scan(equation: str) -> Scan:
    """Control words, environment names and any lexical reason that rules out the batch path."""
    out = Scan()
    text = equation
    if "^^" in text:
        out.unsafe_reason = "^^ notation"
        return out
    for ch in text:
        o = ord(ch)
        if o > 126:
            out.unsafe_reason = "non-ASCII character"
            return out
        if o < 32 and ch not in "\t\n\r":
            out.unsafe_reason = "control character"
            return out
    i, n = 0, len(text)
    while i < n:
        if text[i] != "\\":
            i += 1
            continue
        j = i + 1
        if j >= n:  # a final backslash reads the end of the line: `\^^M`, a control space in LaTeX
            break
        if text[j].isascii() and text[j].isalpha():
            k = j
            while k < n and text[k].isascii() and text[k].isalpha():
                k += 1
            name = text[j:k]
            out.names.add(name)
            if name in ("begin", "end"):
                m = re.match(r"[ \t]*\{([^{}\\]*)\}", text[k:])
                env = environment_name(m.group(1)) if m else None
                if m is None and re.match(r"[ \t]*\{[^{}]*$", text[k:]):
                    # No brace closes the argument: what follows the equation (`\]`, `\end{document}`, balanced)
                    # cannot either, so it runs to the end of the file and no name is looked up.
                    env = ""
                if env is None:
                    out.unsafe_reason = f"\\{name} without a plain environment name"
                    return out
                if env:
                    out.environments.add(env)
            i = k
        else:
            if text[j] not in SAFE_SYMBOLS:
                out.unsafe_reason = f"control symbol \\{text[j]!r}"[:60]
                return out
            i = j + 1
    return out


_BEGIN = re.compile(r"\\begin(?![A-Za-z])")
_END = re.compile(r"\\end(?![A-Za-z])")


def may_break_off(equation: str) -> bool:
    """A guess, for ordering only (never for a verdict): does the equation look unbalanced (braces, \\\\begin and
    \\\\end, \\\\left and \\\\right), so that it may break off and stop its shared run? A run that stops after its
    last equation costs no restart, so the batch path puts such equations last."""
    return (structure_problem(equation) is not None  # braces, \\left/\\right: the ingest's own check
            or len(_BEGIN.findall(equation)) != len(_END.findall(equation)))
