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

Modules: tables.py (what each control sequence does; `SyntaxVocabulary`), automaton.py (`SyntaxAutomaton`,
the transition function and closing), wellformed.py (what a mathematician writes: balanced delimiters,
operands, words; on by default in `SyntaxConfig`), constraint.py (`TokenAutomaton` over a tokenizer's
vocabulary, `LatexConstraint`, the sampler's per-batch constraint, and `LengthPrior` for its length control).
"""
from .automaton import START, SyntaxAutomaton, SyntaxConfig
from .constraint import LatexConstraint, LengthPrior, TokenAutomaton
from .tables import SyntaxVocabulary

__all__ = ["START", "LatexConstraint", "LengthPrior", "SyntaxAutomaton", "SyntaxConfig", "SyntaxVocabulary",
           "TokenAutomaton"]
