"""Tokens for topic modelling: the words of an equation's context, reduced to what LDA should see.

Lower case, accents folded to ASCII, LaTeX leftovers (``\\mathbf``, ``{}``, ``$``) and numbers out, stop words
(gensim's English list plus words every paper uses around equations: "equation", "where", "fig", "eq") out,
a minimum length. The same function tokenises the training contexts and any words given to ``infer``, so a
word means the same thing in both places.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Iterable

from gensim.parsing.preprocessing import STOPWORDS as GENSIM_STOPWORDS

# Words that sit around display equations in every field and so say nothing about the topic; plus LaTeX
# command names that survive as plain words when markup is stripped, and reference boilerplate.
EXTRA_STOPWORDS = frozenset("""
eq eqs eqn eqns equation equations formula formulas expression expressions fig figs figure figures table tables
section sections sec appendix chapter ref refs cite citep citet label labels text textbf textit emph mathrm mathbf
mathcal mathbb mathit frac left right begin end align aligned item items footnote url http https www doi arxiv
org com html pdf et al ie eg cf resp iff etc viz vs let thus hence therefore denote denotes denoted denoting
given gives give obtain obtains obtained following follows follow use uses used using case cases shown shows
show note notes recall write written writes define defines defined definition yields yield yielding term terms
way ways also just like one two three four five six first second third new non simply simple able make makes
made need needs needed want set sets value values number numbers general particular respectively see seen
similarly similar consider considered example examples below above way order get gets got result results
form forms thing things defined rather well since within without upon however thus whereas
""".split())


@dataclass
class TokenConfig:
    """How context words become LDA tokens (stored with the model so inference tokenises identically)."""

    min_length: int = 3
    max_length: int = 30
    extra_stopwords: list[str] = field(default_factory=list)  # more words to drop, e.g. corpus boilerplate


_LATEX_COMMAND = re.compile(r"\\[A-Za-z@]+\*?")
_WORD = re.compile(r"[a-z]+")


def fold_ascii(text: str) -> str:
    """Lower case with accents removed: "Schrödinger" -> "schrodinger"."""
    text = unicodedata.normalize("NFKD", text)
    return text.encode("ascii", "ignore").decode("ascii").lower()


class Tokenizer:
    """Callable: text -> list of tokens. Build once per config (the stop-word set is compiled once)."""

    def __init__(self, config: TokenConfig | None = None):
        self.config = config or TokenConfig()
        self.stopwords = frozenset(GENSIM_STOPWORDS) | EXTRA_STOPWORDS | {w.lower() for w in self.config.extra_stopwords}

    def words(self, text: str) -> list[str]:
        """Every alphabetic word of the text (lower case, ASCII), before stop words and length limits."""
        return _WORD.findall(fold_ascii(_LATEX_COMMAND.sub(" ", text or "")))

    def __call__(self, text: str) -> list[str]:
        lo, hi, stop = self.config.min_length, self.config.max_length, self.stopwords
        return [w for w in self.words(text) if lo <= len(w) <= hi and w not in stop]

    def many(self, texts: Iterable[str]) -> list[list[str]]:
        return [self(t) for t in texts]
