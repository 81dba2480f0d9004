"""Tokenizers: characters, words, or LaTeX tokens (a control sequence such as `\\frac` is one token).

Ids 0..3 are always the special tokens <pad>, <bos>, <eos>, <unk>; the rest is the vocabulary seen by
`fit`, in sorted order so that two fits on the same text give the same ids. The whole vocabulary travels in
the checkpoint (`to_dict` / `from_dict`). Symbols never seen by `fit` encode to <unk>.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Iterable

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = [PAD, BOS, EOS, UNK]


class Tokenizer:
    """Shared vocabulary handling; subclasses define `tokenize` and `detokenize`."""

    kind = "base"

    def __init__(self, tokens: list[str] | None = None):
        self.tokens: list[str] = list(SPECIALS)
        if tokens:
            if tokens[: len(SPECIALS)] != SPECIALS:
                raise ValueError(f"a vocabulary must start with the special tokens {SPECIALS}")
            self.tokens = list(tokens)
        self._index()

    def _index(self) -> None:
        self.stoi: dict[str, int] = {t: i for i, t in enumerate(self.tokens)}
        if len(self.stoi) != len(self.tokens):
            raise ValueError("the vocabulary holds a token twice")

    pad_id, bos_id, eos_id, unk_id = 0, 1, 2, 3
    special_ids = (0, 1, 2, 3)

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def __len__(self) -> int:
        return len(self.tokens)

    # --- text <-> token strings (subclasses) ---
    def tokenize(self, text: str) -> list[str]:
        raise NotImplementedError

    def detokenize(self, tokens: Iterable[str]) -> str:
        return "".join(tokens)

    def spans(self, text: str) -> list[tuple[int, int]]:
        """(start, end) in `text` of each token of `tokenize(text)`, for pages that colour a token's characters
        (a LaTeX control word's span includes the spaces its token dropped)."""
        raise NotImplementedError

    # --- vocabulary ---
    def fit(self, texts: Iterable[str] | str, min_count: int = 1) -> "Tokenizer":
        """Build the vocabulary from `texts` (a string or an iterable of strings); rarer symbols -> <unk>."""
        if isinstance(texts, str):
            texts = [texts]
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(self.tokenize(text))
        kept = sorted(t for t, c in counts.items() if c >= min_count and t not in SPECIALS)
        self.tokens = list(SPECIALS) + kept
        self._index()
        return self

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]:
        unk = self.unk_id
        ids = [self.stoi.get(t, unk) for t in self.tokenize(text)]
        if bos:
            ids.insert(0, self.bos_id)
        if eos:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Iterable[int], *, skip_special: bool = True) -> str:
        """Ids -> text. With skip_special, <pad>/<bos>/<eos>/<unk> are dropped."""
        out = []
        for i in ids:
            i = int(i)
            if skip_special and i in self.special_ids:
                continue
            out.append(self.tokens[i])
        return self.detokenize(out)

    def unknown_fraction(self, text: str) -> float:
        toks = self.tokenize(text)
        return sum(t not in self.stoi for t in toks) / max(1, len(toks))

    # --- persistence (plain lists/str so torch.load(weights_only=True) accepts it) ---
    def to_dict(self) -> dict:
        return {"kind": self.kind, "tokens": list(self.tokens)}

    @staticmethod
    def from_dict(d: dict) -> "Tokenizer":
        kind = d.get("kind")
        if kind not in TOKENIZERS:
            raise ValueError(f"unknown tokenizer kind {kind!r}; known: {sorted(TOKENIZERS)}")
        return TOKENIZERS[kind](list(d["tokens"]))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


class CharTokenizer(Tokenizer):
    """One token per character."""

    kind = "char"

    def tokenize(self, text: str) -> list[str]:
        return list(text)

    def spans(self, text: str) -> list[tuple[int, int]]:
        return [(i, i + 1) for i in range(len(text))]


_WORD = re.compile(r"\w+|\n|[^\w\s]")


class WordTokenizer(Tokenizer):
    """Words (`\\w+` runs), single punctuation marks and newlines; spaces are implied between words, so
    per-character figures of a word model are not comparable with a character model's (spaces are not
    predicted, and an unseen word costs one <unk>)."""

    kind = "word"

    def tokenize(self, text: str) -> list[str]:
        return _WORD.findall(text)

    def detokenize(self, tokens: Iterable[str]) -> str:
        out = ""
        for t in tokens:
            if out and not out.endswith("\n") and t != "\n" and (t[0].isalnum() or t[0] == "_"):
                out += " "
            out += t
        return out


# \begin{NAME} / \end{NAME} as one token; control words (trailing spaces dropped, as TeX does);
# control symbols (backslash + one non-letter, newline included); whitespace runs; any other character.
_LATEX_TOKEN = re.compile(
    r"(\\(?:begin|end)\{[a-zA-Z]+\*?\})"  # 1: environment delimiters
    r"|(\\[a-zA-Z]+)[ \t\r\n]*"  # 2: control word, spaces after it dropped
    r"|(\\[^a-zA-Z])"  # 3: control symbol
    r"|(\s+)"  # 4: whitespace run -> " "
    r"|(.)",  # 5: any other single character (a lone trailing backslash too)
    re.DOTALL,
)
_CONTROL_WORD = re.compile(r"\\[a-zA-Z]+\Z")
# The spaces after a control word are dropped (TeX drops them too); detokenize writes one back where written
# equations have one: before a letter (needed), a digit, another command and most relation and binary
# symbols (demo corpus, training equations: 96-99 % before digits, `=`, `&`, `:`, 71 % before `\\`; but
# 3-28 % before `{`, `_`, `^`, `(`, `)`, `}`, `,`).
_SPACED_AFTER_WORD = frozenset("\\=&:+-<")  # (not `*`: `\operatorname*`)


class LatexTokenizer(Tokenizer):
    """LaTeX tokens: `\\frac`, `\\begin{pmatrix}`, `\\,`, `{`, `x`, ` ` ... (the units that
    topicrnn/latex_syntax.py constrains)."""

    kind = "latex"

    def tokenize(self, text: str) -> list[str]:
        out = []
        for m in _LATEX_TOKEN.finditer(text):
            env, word, symbol, space, other = m.groups()
            if space is not None:
                out.append(" ")
            else:
                out.append(env or word or symbol or other)
        return out

    def spans(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in _LATEX_TOKEN.finditer(text)]  # one token per match, as in tokenize

    def detokenize(self, tokens: Iterable[str]) -> str:
        parts: list[str] = []
        prev_is_word = False
        for t in tokens:
            if prev_is_word and t[:1].isascii() and (t[:1].isalnum() or t[:1] in _SPACED_AFTER_WORD):
                parts.append(" ")  # `\alpha x` (not `\alphax`), `\to 0`, `\to \mathcal`
            parts.append(t)
            prev_is_word = bool(_CONTROL_WORD.match(t))
        return "".join(parts)

    @staticmethod
    def is_control_word(token: str) -> bool:
        return bool(_CONTROL_WORD.match(token))


TOKENIZERS: dict[str, type[Tokenizer]] = {"char": CharTokenizer, "word": WordTokenizer, "latex": LatexTokenizer}


def make_tokenizer(kind: str) -> Tokenizer:
    if kind not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {kind!r}; choose one of {sorted(TOKENIZERS)}")
    return TOKENIZERS[kind]()
