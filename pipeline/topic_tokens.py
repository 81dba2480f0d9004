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
assume assumed assumes assumption exists exist existence hand conclude concludes claim claims suppose fact
choose chosen finally compute computed computing prove proves proved holds hold holding apply applying applied
suffices suffice observe know known notation lemma lemmas proof proofs implies imply implied satisfies satisfy
satisfying satisfied corresponding correspond equal equals property properties condition conditions associated
theorem theorems proposition propositions corollary remark remarks step steps hint properly jointly giving
immediate immediately instance true false clearly obvious obviously indeed furthermore moreover namely certain
exactly precisely actually usually typically called say said sure want wanted look looks find finds found
""".split())


@dataclass
class TokenConfig:
    """How context words become LDA tokens (stored with the model so inference tokenises identically)."""

    min_length: int = 3
    max_length: int = 30
    extra_stopwords: list[str] = field(default_factory=list)  # more words to drop, e.g. corpus boilerplate
    fold_plurals: bool = True  # "galaxies" -> "galaxy" when the singular occurs in the training contexts


_LATEX_COMMAND = re.compile(r"\\[A-Za-z@]+\*?")
_WORD = re.compile(r"[a-z]+")


def plain_words(text: str) -> list[str]:
    """Every alphabetic word of a text (lower case, ASCII, LaTeX commands removed), before stop words and length
    limits: the LDA's and the context encoder's (topicrnn.data.context_words) reading of prose."""
    return _WORD.findall(fold_ascii(_LATEX_COMMAND.sub(" ", text or "")))


def fold_ascii(text: str) -> str:
    """Lower case with accents removed: "Schrödinger" -> "schrodinger"."""
    text = unicodedata.normalize("NFKD", text)
    return text.encode("ascii", "ignore").decode("ascii").lower()


class Tokenizer:
    """Callable: text -> list of tokens. Build once per config (the stop-word set is compiled once)."""

    def __init__(self, config: TokenConfig | None = None, plurals: dict[str, str] | None = None):
        self.config = config or TokenConfig()
        # gensim here, not at import: the modules that only read topic outputs run without gensim (GPU image)
        from gensim.parsing.preprocessing import STOPWORDS as GENSIM_STOPWORDS

        self.stopwords = frozenset(GENSIM_STOPWORDS) | EXTRA_STOPWORDS | {w.lower() for w in self.config.extra_stopwords}
        self.plurals = plurals or {}  # learned from a corpus by plural_map(); empty = no folding

    def words(self, text: str) -> list[str]:
        """Every alphabetic word of the text (`plain_words`)."""
        return plain_words(text)

    def __call__(self, text: str) -> list[str]:
        lo, hi, stop, plurals = self.config.min_length, self.config.max_length, self.stopwords, self.plurals
        return [plurals.get(w, w) for w in self.words(text) if lo <= len(w) <= hi and w not in stop]

    def many(self, texts: Iterable[str]) -> list[list[str]]:
        return [self(t) for t in texts]


def plural_map(token_lists: Iterable[list[str]], min_count: int = 2) -> dict[str, str]:
    """Plural -> singular for words whose singular also occurs in the corpus: "galaxies" -> "galaxy",
    "morphisms" -> "morphism", "classes" -> "class"; never a word ending in "ss", "us" or "is" ("process",
    "radius", "analysis"). Learned from the training tokens (no stemmer: top words stay readable)."""
    from collections import Counter

    counts = Counter(w for toks in token_lists for w in toks)
    out: dict[str, str] = {}
    for w in counts:
        if len(w) < 4 or not w.endswith("s") or w.endswith(("ss", "us", "is")):
            continue
        for cand in (w[:-3] + "y" if w.endswith("ies") else None, w[:-2] if w.endswith("es") else None, w[:-1]):
            if cand and len(cand) >= 3 and counts.get(cand, 0) >= min_count:
                out[w] = cand
                break
    return out
