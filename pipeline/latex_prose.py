"""Context words: the prose around each display equation, and nothing else.

A paper's document becomes prose in two steps.

1. On the whole document (linear scans; offsets kept, so display positions stay valid), `prose_mask` blanks
   what is not prose: inline math; floats, tables, pictures and algorithms with their captions; the
   bibliography (`thebibliography`, a pasted `.bbl`, a "References" section, stray `\\bibitem`s); graphics
   commands with their options and file names; `\\hbox`/`\\vbox`, rules, skips and dimension assignments;
   and every call of a paper macro that, however deeply, wraps `\\ref`, `\\cite`, `\\label`, a graphics file
   or a URL. Sectioning commands and the bibliography are barriers: a context never crosses them (nor the
   end of the document, where the document stops).
2. In the windows next to each display only, `ContextExtractor.words` expands the paper's own text macros,
   drops references, citations and word-less commands (a regex pass; pylatexenc only where markup is left)
   and removes what is still not a word: label keys (`eq:main`), file names, dimensions.

`context_pairs` then takes up to N words on each side of every display from the segments between displays.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from pipeline.latex_clean import find_env_end
from pipeline.latex_groups import find_top_level, group_end, skip_space
from pipeline.latex_macros import ExpandConfig, Macro, MacroLimitError, MacroTable, expand_macros

# ----------------------------------------------------------------------------------------------- whole document

# Environments that hold no prose of the paper's argument (figures and tables with their captions, code).
CUT_ENVS = ("figure", "figure*", "table", "table*", "wrapfigure", "wraptable", "sidewaysfigure", "sidewaystable",
            "subfigure", "subtable", "tabular", "tabular*", "tabularx", "tabulary", "longtable", "supertabular",
            "deluxetable", "deluxetable*", "planotable", "picture", "pspicture", "tikzpicture", "pgfpicture",
            "algorithm", "algorithm*", "algorithmic", "algorithm2e", "lstlisting", "verbatim", "floatrow",
            "tabbing", "figwindow", "SCfigure", "marginfigure", "margintable", "widetext_figure")
BIBLIOGRAPHY_ENVS = ("thebibliography", "references", "bibliography", "biblist", "thereferences")
# Commands cut with their arguments: (mandatory arguments) -- optional [..] ones are skipped wherever they are.
CUT_COMMANDS = {
    "includegraphics": 1, "epsfig": 1, "psfig": 1, "epsfbox": 1, "epsffile": 1,
    "plotone": 1, "plottwo": 2, "plotfiddle": 7, "includepdf": 1, "includemovie": 3, "resizebox": 3,
    "scalebox": 2, "rotatebox": 2, "reflectbox": 1, "special": 1, "graphicspath": 1,
    "DeclareGraphicsExtensions": 1, "caption": 1, "captionof": 2, "subcaption": 1, "subfigure": 1,
    "subfloat": 1, "psfrag": 2, "bibliography": 1,
    "bibliographystyle": 1, "nocite": 1, "printbibliography": 0, "addbibresource": 1, "hypersetup": 1,
    "lean": 1, "uses": 1, "proves": 1, "leanok": 0, "mathlibok": 0, "notready": 0, "discussion": 1,
    "rule": 2, "makebox": 0, "framebox": 0, "parbox": 1, "raisebox": 1,   # (their last argument is prose)
}
_BOX_RE = re.compile(r"\\(?:hbox|vbox|vtop|vcenter)(?![a-zA-Z@])\s*(?:(?:to|spread)\s*[^{]{0,60})?(?=\{)")
_UNIT = r"(?:pt|pc|in|bp|cm|mm|dd|cc|sp|em|ex|mu|px)(?![a-zA-Z])"
# No two optional blank runs touch (`\s*\s*` backtracks quadratically on the blanks left by removed definitions).
_DIMEN = r"-?(?:\d+(?:[.,]\d*)?|[.,]\d+)[ \t]*(?:true[ \t]*)?" + _UNIT
_GLUE = _DIMEN + r"(?:\s*(?:plus|minus)\s*(?:" + _DIMEN + r"|-?[\d.]+[ \t]*fil+))*"
_ASSIGN_RE = re.compile(
    r"\\[a-zA-Z@]+\s*(?:=\s*)?" + _GLUE
    + r"|\\[a-zA-Z@]+\s*=\s*(?:-?[\d.]*\\[a-zA-Z@]+|-?\d+(?![\d.]))"
    + r"|\\[vh]rule(?:\s*(?:height|width|depth)\s*(?:" + _DIMEN + r"|\\[a-zA-Z@]+))*")
_SECTION_RE = re.compile(r"\\(?:part|chapter|section|appendix)(?![a-zA-Z@])")
_BIB_HEADING_RE = re.compile(r"\\(?:section|chapter|subsection|paragraph)\*?\s*\{\s*(?:References?|REFERENCES?|"
                             r"Bibliography|BIBLIOGRAPHY|Literature\s+Cited|Works\s+Cited|Reference\s+list)\s*\}")
_BIBITEM_RE = re.compile(r"\\bibitem(?![a-zA-Z@])")
# A macro body that points at a label, a citation, a figure file or a link: its arguments are never prose.
_REFLIKE_BODY_RE = re.compile(r"\\(?:[a-zA-Z]*ref|[a-zA-Z]*cite[a-zA-Z]*|label|includegraphics|epsfig|psfig|"
                              r"epsfbox|epsffile|plotone|plottwo|url|href|bibitem|hyperlink|hypertarget|"
                              r"input|include)(?![a-zA-Z@])")


def _skip_arg(text: str, i: int) -> int:
    """Past one undelimited argument at text[i:] (blanks skipped): a brace group or a single token."""
    i = skip_space(text, i)
    if i >= len(text):
        return i
    if text[i] == "{":
        end = group_end(text, i)
        return end if end != -1 else i + 1
    if text[i] == "\\":
        m = re.compile(r"\\(?:[a-zA-Z@]+|.)", re.S).match(text, i)
        return m.end() if m else i + 1
    return i + 1 if text[i] != "}" else i


def _skip_options(text: str, i: int) -> int:
    """Past any `[...]` option groups at text[i:] (blanks skipped)."""
    while True:
        j = skip_space(text, i)
        if not text.startswith("[", j):
            return i
        close = find_top_level(text[j + 1:j + 2001], 0, "]")
        if close == -1:
            return i
        i = j + 1 + close + 1


def call_end(text: str, i: int, nargs: int) -> int:
    """End of a command call whose name ends at `i`: its star, `nargs` arguments and the option groups
    before each of them (options after the last argument are left: they may be prose in brackets)."""
    if text.startswith("*", i):
        i += 1
    for _ in range(nargs):
        i = _skip_arg(text, _skip_options(text, i))
    return i if nargs else _skip_options(text, i)


def _delimited_call_end(text: str, i: int, params: str) -> int:
    """End of a call of `\\def\\x<params>{...}` (params e.g. `(#1)` or `#1,#2.`); `i` when it does not match."""
    start = i
    pieces = [p for p in re.split(r"(#[1-9])", params) if p]
    k = 0
    while k < len(pieces):
        piece = pieces[k]
        nxt = pieces[k + 1] if k + 1 < len(pieces) else None
        if piece.startswith("#") and (nxt is None or nxt.startswith("#")):  # undelimited parameter
            i = _skip_arg(text, i)
            k += 1
        elif piece.startswith("#"):  # delimited by the literal that follows, outside braces
            window = text[i:i + 2000]
            stop = find_top_level(window, 0, nxt) if len(nxt) == 1 else window.find(nxt)
            if stop == -1:
                return start
            i += stop + len(nxt)
            k += 2
        else:  # a literal the call must start with
            j = skip_space(text, i) if piece.strip() != piece else i
            if not text.startswith(piece.strip() or piece, j):
                return start
            i = j + len(piece.strip() or piece)
            k += 1
    return i


_ENDS_IN_REF_RE = re.compile(_REFLIKE_BODY_RE.pattern + r"\s*$")


def ref_like_macros(table: MacroTable) -> set[str]:
    """Names of the paper's macros whose expansion, however deeply, reaches a reference-like command."""
    bodies = {name: m.body for name, m in table.macros.items()}
    bodies.update({name: body for name, (_, body) in table.delimited.items()})
    calls = {name: set(re.findall(r"\\([a-zA-Z@]+)", body)) for name, body in bodies.items()}
    found = {name for name, body in bodies.items() if _REFLIKE_BODY_RE.search(body)}
    changed = True
    while changed:
        changed = False
        for name, used in calls.items():
            if name not in found and used & found:
                found.add(name)
                changed = True
    return found


def _env_spans(doc: str, envs: tuple[str, ...], to_end_if_unclosed: bool) -> list[tuple[int, int]]:
    begin_re = re.compile(r"\\begin\s*\{(" + "|".join(re.escape(e) for e in envs) + r")\}")
    spans = []
    pos = 0
    while True:
        m = begin_re.search(doc, pos)
        if m is None:
            return spans
        close = find_env_end(doc, m.group(1), m.end())
        if close is not None:
            spans.append((m.start(), close[1]))
            pos = close[1]
        elif to_end_if_unclosed:
            spans.append((m.start(), len(doc)))
            return spans
        else:
            spans.append((m.start(), m.end()))
            pos = m.end()


def _next_barrier(doc: str, i: int) -> int:
    m = _SECTION_RE.search(doc, i)
    return m.start() if m else len(doc)


def _blank(doc: str, spans: list[tuple[int, int]]) -> str:
    """`doc` with every span replaced by blanks (newlines kept, so lines stay lines and offsets stay valid)."""
    if not spans:
        return doc
    out = []
    pos = 0
    for s, e in sorted(spans):
        if e <= pos:
            continue
        s = max(s, pos)
        out.append(doc[pos:s])
        piece = doc[s:e]
        out.append(re.sub(r"[^\n]", " ", piece) if "\n" in piece else " " * len(piece))
        pos = e
    out.append(doc[pos:])
    return "".join(out)


def prose_mask(doc: str, table: MacroTable, inline_math: list[tuple[int, int]] = ()
               ) -> tuple[str, list[int]]:
    """(`doc` with everything that is not prose blanked, sorted barrier offsets). See the module docstring."""
    spans = list(inline_math)
    spans += _env_spans(doc, CUT_ENVS, to_end_if_unclosed=False)
    bib = _env_spans(doc, BIBLIOGRAPHY_ENVS, to_end_if_unclosed=True)
    for m in _BIB_HEADING_RE.finditer(doc):
        bib.append((m.start(), _next_barrier(doc, m.end())))
    spans += bib
    for m in _BIBITEM_RE.finditer(doc):  # a bibliography without an environment: to the next section
        if not any(s <= m.start() < e for s, e in bib):
            end = _next_barrier(doc, m.end())
            bib.append((m.start(), end))
            spans.append((m.start(), end))
    spans += [(m.start(), m.end()) for m in _ASSIGN_RE.finditer(doc)]
    names = dict(CUT_COMMANDS)
    ref_like = ref_like_macros(table)
    for name in ref_like:
        macro = table.macros.get(name)
        if macro is not None:
            # a body that ends in the reference command (`\let\R\ref`, `{see \ref}`) takes its argument too
            takes_one_more = bool(_ENDS_IN_REF_RE.search(macro.body))
            names[name] = macro.nargs - (1 if macro.default is not None else 0) + takes_one_more
    delimited = {name: params for name, (params, _) in table.delimited.items() if name in ref_like}
    every = sorted(set(names) | set(delimited), key=len, reverse=True)
    if every:
        call_re = re.compile(r"\\(" + "|".join(re.escape(n) for n in every) + r")(?![a-zA-Z@])")
        for m in call_re.finditer(doc):
            name = m.group(1)
            end = (_delimited_call_end(doc, m.end(), delimited[name]) if name in delimited
                   else call_end(doc, m.end(), names[name]))
            spans.append((m.start(), end))
    for m in _BOX_RE.finditer(doc):
        end = group_end(doc, m.end())
        spans.append((m.start(), end if end != -1 else m.end()))
    masked = _blank(doc, spans)
    barriers = sorted({m.start() for m in _SECTION_RE.finditer(masked)} | {s for s, _ in bib})
    return masked, barriers


# ----------------------------------------------------------------------------------------------- segments

@dataclass
class Segment:
    """The prose between two displays: `head` up to the first barrier, `tail` after the last one."""
    head: str
    tail: str
    crossed: bool   # a barrier lies inside: context stops here


def segments_between(text: str, cuts: list[tuple[int, int]], start: int, barriers: list[int]) -> list[Segment]:
    """Segment k is the text before display k (`cuts`: the displays' (start, end)); one more after the last."""
    out = []
    prev = start
    bi = 0
    for s, e in cuts + [(len(text), len(text))]:
        seg_end = max(s, prev)
        while bi < len(barriers) and barriers[bi] < prev:
            bi += 1
        inside = []
        bj = bi
        while bj < len(barriers) and barriers[bj] < seg_end:
            inside.append(barriers[bj])
            bj += 1
        if inside:
            out.append(Segment(text[prev:inside[0]], text[inside[-1]:seg_end], True))
        else:
            piece = text[prev:seg_end]
            out.append(Segment(piece, piece, False))
        prev = max(prev, e)
    return out


class _Words:
    """Words near the ends of each segment, converted lazily and only within `window` characters."""

    def __init__(self, segments: list[Segment], window: int, words_of) -> None:
        self.segments = segments
        self.window = window
        self.words_of = words_of
        self._head: dict[int, list[str]] = {}
        self._tail: dict[int, list[str]] = {}

    def head(self, k: int) -> list[str]:
        if k not in self._head:
            t = self.segments[k].head
            if len(t) <= 2 * self.window:
                self._head[k] = self.words_of(t) if t.strip() else []
            else:  # cut at a line end when there is one, so no command is cut in two
                cut = t.rfind("\n", self.window // 2, self.window)
                self._head[k] = self.words_of(t[:cut]) if cut != -1 else self.words_of(t[: self.window])[:-1]
        return self._head[k]

    def tail(self, k: int) -> list[str]:
        if k not in self._tail:
            t = self.segments[k].tail
            if len(t) <= 2 * self.window:
                self._tail[k] = self.words_of(t) if t.strip() else []
            else:
                cut = t.find("\n", len(t) - self.window, len(t) - self.window // 2)
                self._tail[k] = (self.words_of(t[cut:]) if cut != -1
                                 else self.words_of(t[-self.window:])[1:])
        return self._tail[k]


def context_pairs(segments: list[Segment], n: int, window: int, words_of) -> list[tuple[str, str]]:
    """(before, after): up to `n` words on each side of display i (segment i is before it), never across a
    barrier and never further than 20 displays away."""
    words = _Words(segments, window, words_of)
    out = []
    for i in range(len(segments) - 1):
        before: list[str] = []
        k = i
        while k >= 0 and len(before) < n and i - k < 20:
            before = words.tail(k) + before
            if segments[k].crossed:
                break
            k -= 1
        after: list[str] = []
        k = i + 1
        while k < len(segments) and len(after) < n and k - i < 21:
            after = after + words.head(k)
            if segments[k].crossed:
                break
            k += 1
        out.append((" ".join(before[-n:]), " ".join(after[:n])))
    return out


# ----------------------------------------------------------------------------------------------- words

_INLINE_MATH_RE = re.compile(r"(?<!\\)\$(?:\\.|[^$\\])*?(?<!\\)\$|\\\((?:.|\n)*?\\\)", re.S)
_REF_RE = re.compile(r"\\(?:[a-zA-Z]*cite[a-zA-Z]*|[a-zA-Z]*ref|label|url|href|eqref|input|include|usepackage|"
                     r"bibliography|bibliographystyle|documentclass|includegraphics|hypertarget|hyperlink)"
                     r"(?![a-zA-Z@])\*?\s*(?:\[[^\]]{0,200}\]\s*)*(?:\{[^{}]{0,500}\}\s*){0,2}")
_ENV_TOKEN_RE = re.compile(r"\\(?:begin|end)\s*\{[^{}]{0,40}\}(?:\{[^{}]{0,40}\})?")
WORD_RE = re.compile(r"[^\W_](?:[\w'’-]*[^\W_])?")
# Formatting commands whose argument is prose (kept) and commands that carry no words (dropped): handled by
# regular expressions so that most prose never needs the (much slower) pylatexenc parser.
_TEXT_WRAPPERS_RE = re.compile(
    r"\\(?:emph|textbf|textit|textsl|textrm|texttt|textsf|textsc|textup|textmd|underline|mbox|text|"
    r"section|subsection|subsubsection|paragraph|subparagraph|chapter|part|title|footnote|textnormal|"
    r"enquote|uline|MakeUppercase|MakeLowercase)\*?\s*(?:\[[^\]{}]{0,200}\])?\s*(?=\{)")
_NO_WORDS_RE = re.compile(
    r"\\(?:noindent|medskip|bigskip|smallskip|par|newline|linebreak|pagebreak|newpage|clearpage|centering|"
    r"quad|qquad|maketitle|hfill|vfill|phantomsection|item|indent|raggedright|raggedleft|footnotesize|small|"
    r"large|Large|LARGE|normalsize|tiny|scriptsize|huge|Huge|bfseries|itshape|rmfamily|ttfamily|sffamily|"
    r"em|bf|it|rm|tt|sc|sl|appendix|tableofcontents|frontmatter|mainmatter|backmatter|protect|relax|"
    r"hline|toprule|midrule|bottomrule|and|textwidth|linewidth|columnwidth|hsize|vsize|textheight|"
    r"baselineskip|parindent|parskip)(?![a-zA-Z@])\*?(?:\s*\[[^\]{}]{0,100}\])?")
_DROP_WITH_ARGS_RE = re.compile(
    r"\\(?:[vh]space|includegraphics|color|setlength|addtolength|setcounter|addtocounter|"
    r"bibitem|vskip|hskip|rule|pagestyle|thispagestyle|newtheorem|theoremstyle|numberwithin|"
    r"graphicspath|captionsetup|hypersetup|definecolor|date|author|affiliation|email|address|"
    r"thanks|keywords|pacs|orcid|lean|uses|proves|leanok|mathlibok|notready)(?![a-zA-Z@])\*?\s*"
    r"(?:\[[^\]]{0,200}\]\s*)*(?:\{[^{}]{0,300}\}\s*){0,3}")
_SIMPLE_ESCAPES = {"\\%": "%", "\\&": "&", "\\_": "_", "\\#": "#", "\\$": "$", "~": " ", "\\@": "",
                   "\\ ": " ", "\\,": " ", "\\/": ""}
_ESCAPE_RE = re.compile("|".join(re.escape(k) for k in _SIMPLE_ESCAPES))
# Accents, so that `Sch\\"{o}dinger` and `\\'etale` need no parser: the letter plus a combining mark.
_COMBINING = {"'": "\u0301", "`": "\u0300", "^": "\u0302", '"': "\u0308", "~": "\u0303", "=": "\u0304",
              ".": "\u0307", "c": "\u0327", "v": "\u030c", "u": "\u0306", "H": "\u030b", "k": "\u0328",
              "r": "\u030a"}
_ACCENT_RE = re.compile(r"\\(?:(['`^\"~=.])\s*|([cvuHkr])\s*(?=\{))(?:\{\s*(\\?[A-Za-z])\s*\}|(\\[A-Za-z](?![a-zA-Z@])\s*|[A-Za-z]))")
_LETTERS = {"ss": "ß", "o": "ø", "O": "Ø", "ae": "æ", "AE": "Æ", "oe": "œ", "OE": "Œ", "aa": "å", "AA": "Å",
            "l": "ł", "L": "Ł", "i": "ı", "j": "ȷ"}
_LETTER_RE = re.compile(r"\\(ss|o|O|ae|AE|oe|OE|aa|AA|l|L|i|j)(?![a-zA-Z@])(?:\{\}| *)")


def _accent(m: re.Match) -> str:
    letter = (m.group(3) or m.group(4)).strip().lstrip("\\")
    letter = {"i": "i", "j": "j"}.get(letter, letter)  # \\'\\i is an accented i
    return unicodedata.normalize("NFC", letter + _COMBINING[m.group(1) or m.group(2)])
# What is still not a word after the markup is gone: label keys, file names, dimensions, options.
_KEY_RE = re.compile(r"\b[A-Za-z]+:[A-Za-z0-9_.:/+-]*[A-Za-z0-9]")                            # eq:main
_FILE_EXT = r"\.(?:eps|ps|pdf|png|jpe?g|gif|tiff?|svg|tex|bbl|bib|sty|cls|dat|txt|csv|py)\b"
_FILE_RE = re.compile(r"(?<![\w./-])[\w./-]+" + _FILE_EXT)                                  # figs/a.pdf
_DIMEN_WORD_RE = re.compile(r"(?<![\w.])-?(?:\d+(?:\.\d*)?|\.\d+)(?: ?(?:pt|cm|mm|bp|pc|sp|dd|cc)|in|em|ex)\b")
_OPTION_RE = re.compile(r"\b(?:width|height|angle|scale|trim|clip|keepaspectratio)\s*=\s*[^\s,\]]*")
_CHECKS = ((_KEY_RE, re.compile(r"[A-Za-z]:[A-Za-z0-9]")), (_FILE_RE, re.compile(_FILE_EXT)),
           (_DIMEN_WORD_RE, re.compile(r"\d ?(?:pt|cm|mm|bp|pc|sp|dd|cc|in|em|ex)\b")), (_OPTION_RE, re.compile("=")))


def strip_non_words(text: str) -> str:
    """Remove what is still not a word once the markup is gone: label keys, file names, dimensions, options.
    (Each pattern runs only where a cheap check finds a candidate: most prose has none.)"""
    for rx, check in _CHECKS:
        if check.search(text):
            text = rx.sub(" ", text)
    return text


def simplify_prose(latex: str) -> str:
    """Regex pre-pass: drop inline math, citations/references, environment markers and word-less commands;
    unwrap formatting commands. What is left is plain text, or a little markup for pylatexenc."""
    text = _INLINE_MATH_RE.sub(" ", latex)
    text = _REF_RE.sub(" ", text)
    text = _ENV_TOKEN_RE.sub(" ", text)
    if "\\" in text:
        text = _DROP_WITH_ARGS_RE.sub(" ", text)
        text = _NO_WORDS_RE.sub(" ", text)
        text = _TEXT_WRAPPERS_RE.sub(" ", text)
        text = _ACCENT_RE.sub(_accent, text)
        text = _LETTER_RE.sub(lambda m: _LETTERS[m.group(1)], text)
        text = _ESCAPE_RE.sub(lambda m: _SIMPLE_ESCAPES[m.group(0)], text)
        text = text.replace("\\\\", " ")
    return text


def prose_macros(table: MacroTable, known: frozenset[str] | set[str]) -> dict[str, Macro]:
    """The paper's macros worth expanding in prose: its own names (not LaTeX's, whose meaning a class file
    may have rewritten into layout code), no `@` internals, no special forms."""
    return {name: m for name, m in table.macros.items()
            if name not in known and "@" not in name and m.handler is None}


class ContextExtractor:
    """Plain words of LaTeX prose: the paper's macros expanded, the regex pre-pass above, then pylatexenc
    only where markup remains."""

    def __init__(self) -> None:
        from pylatexenc import latexwalker
        from pylatexenc.latex2text import LatexNodes2Text, MacroTextSpec, get_default_latex_context_db

        db = get_default_latex_context_db()
        db.add_context_category("topiceq-drop", prepend=True, macros=[
            MacroTextSpec(name, simplify_repl="") for name in
            ("cite", "citep", "citet", "ref", "eqref", "autoref", "cref", "Cref", "label", "url",
             "includegraphics", "caption", "maketitle", "tableofcontents")
        ])
        # parsing without "specials" (`--`, `~`, quotes) is about 1.5x faster and loses no words
        self._walker_db = latexwalker.get_default_latex_context_db().filter_context(
            keep_which=["macros", "environments"])
        self._walker_cls = latexwalker.LatexWalker
        self._l2t = LatexNodes2Text(latex_context=db, math_mode="remove", strict_latex_spaces=False,
                                    keep_braced_groups=False)
        self._expand = ExpandConfig(max_expansions=500, max_length=50000, keep_blanks=True)
        self.pylatexenc_calls = 0

    def words(self, latex: str, macros: dict[str, Macro] | None = None) -> list[str]:
        if macros and "\\" in latex:
            try:
                latex = expand_macros(latex, macros, self._expand)
            except MacroLimitError:
                pass  # a recursive text macro: its words stay unexpanded
        text = simplify_prose(latex)
        if "\\" in text:
            self.pylatexenc_calls += 1
            try:
                walker = self._walker_cls(text, latex_context=self._walker_db, tolerant_parsing=True)
                nodes, _, _ = walker.get_latex_nodes()
                text = self._l2t.nodelist_to_text(nodes)
            except Exception:  # pylatexenc is tolerant, but never let one bad window stop a paper
                text = re.sub(r"\\[a-zA-Z@]+\*?|[{}$&^_~#\\]", " ", text)
        else:
            text = text.replace("{", " ").replace("}", " ")
        return WORD_RE.findall(strip_non_words(text))
