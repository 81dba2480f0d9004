"""The automaton lifted to a tokenizer's vocabulary (`TokenAutomaton`: interned states, cached masks and
transitions), the per-batch constraint the sampler calls (`LatexConstraint`), and its length control.

Length control (`LengthPrior`, `LatexConstraint(targets=...)`): each sequence gets a target length in tokens,
drawn from the lengths of the real training equations of its topic. Before target × `floor`, <eos> is
masked out (`floor` 0: the model ends where it likes, the target only caps); from the target on, a complete equation may only end, an incomplete one may not open anything new (groups,
arguments, delimiters, environments, scripts); past target × (1 + `grace`), the constraint writes the closing
text token by token. So the lengths follow the topic's real distribution instead of the model's own, which
sampling at T < 1 and the syntax mask both distort.
"""
from __future__ import annotations

import re
from typing import Iterable, Mapping, Sequence

import numpy as np

import torch

from .automaton import START, SyntaxConfig
from .tables import (ACCENTS, BINARY_WORDS, CLOSE_WORDS, CLOSING_WORDS, LONE_OPERATOR_MACROS, MARKS, NOT_ARGSAFE,
                     OP_RESULT, OPEN_WORDS, RELATION_WORDS, ROMAN_MACROS, SCRIPT_MACROS, SIGN_WORDS, SPACE_CHARS,
                     SyntaxVocabulary)
from .wellformed import make_automaton

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
        self.auto = make_automaton(syntax, config)
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
        # A word in progress (\text{..}, \mathrm{..}) refines its key's row: state id -> row of _word_table
        # (row 0: no word rule, all ones), one row per (context, word so far).
        self._word_of: list[int] = []
        self._word_rows: dict = {None: 0}
        self._word_table = torch.ones(16, self.V, dtype=torch.bool)
        self._trans: dict[tuple[int, int], int] = {}
        self._closing: dict[int, str] = {}
        self.start_id = self.intern(START)
        self.unconstrained_row = torch.ones(self.V, dtype=torch.bool)
        for i in self.special - {self.eos_id}:
            self.unconstrained_row[i] = False
        self.finished_row = torch.zeros(self.V, dtype=torch.bool)
        self.finished_row[self.eos_id] = True
        # tokens that open something (a group, an argument, a delimiter, an environment, a script)
        self.opener_row = torch.tensor([self._opens(plan) for plan in self._plan], dtype=torch.bool)
        self._token_ids = {t: i for i, t in enumerate(self.vocab) if i not in self.special}
        self._longest_token = max((len(t) for t in self._token_ids), default=1)
        self._closing_token: dict[int, int] = {}

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
        if m and (m.group(1) not in SPACE_CHARS or m.group(1) == " "):
            # (`\ ` as a lexeme: spelling it would look up every legal control word of the context)
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
                mask = self._compute_mask(self.auto.representative(state))
                self.n_keys += 1
                if row >= self._table.shape[0]:
                    grown = torch.zeros(2 * self._table.shape[0], self.V, dtype=torch.bool)
                    grown[:row] = self._table[:row]
                    self._table = grown
                self._table[row] = mask
            self._key_of.append(row)
            self._word_of.append(self._word_row(self.auto.word_of(state)))
            self._complete.append(self.auto.complete(state))
        return sid

    def _opens(self, plan) -> bool:
        if plan[0] == "special":
            return False
        if plan[0] == "chars":
            return plan[3] in ("{", "(", "[", "^", "_")
        kind, value = plan[1][0], plan[1][1]
        if kind == "b":
            return True
        if kind == "y":
            return value == "{"
        a = self.auto
        return kind == "w" and (value in a.arg_macros or value in a.bigs or value in ("left", "begin")
                                or value in OPEN_WORDS)

    def closing_token(self, sid: int) -> int:
        """The first token of the closing text of state `sid` (longest vocabulary match), -1 if none."""
        hit = self._closing_token.get(sid)
        if hit is None:
            hit = -1
            try:
                text = self.closing(sid)
            except AssertionError:
                text = ""
            for n in range(min(len(text), self._longest_token), 0, -1):
                ti = self._token_ids.get(text[:n])
                if ti is not None and not (_WORD_TOKEN.match(text[:n]) and text[n:n + 1].isalpha()):
                    hit = ti
                    break
            self._closing_token[sid] = hit
        return hit

    def _word_row(self, word) -> int:
        row = self._word_rows.get(word)
        if row is None:
            row = len(self._word_rows)
            self._word_rows[word] = row
            if row >= self._word_table.shape[0]:
                grown = torch.ones(2 * self._word_table.shape[0], self.V, dtype=torch.bool)
                grown[:row] = self._word_table[:row]
                self._word_table = grown
            ctx, so_far = word
            self._word_table[row] = torch.tensor(
                [plan[0] == "special" or self.auto.word_allows(ctx, so_far, plan[3]) for plan in self._plan],
                dtype=torch.bool)
        return row

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
                name in ACCENTS, MARKS.get(name), name in SCRIPT_MACROS, name in BINARY_WORDS, name in RELATION_WORDS,
                name in SIGN_WORDS, name in CLOSING_WORDS, OPEN_WORDS.get(name), CLOSE_WORDS.get(name),
                name in ROMAN_MACROS, name in LONE_OPERATOR_MACROS)

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
        key_of, word_of = self._key_of, self._word_of
        rows = self._table[torch.tensor([key_of[s] for s in sids], dtype=torch.long)]
        words = [word_of[s] for s in sids]
        if any(words):
            rows &= self._word_table[torch.tensor(words, dtype=torch.long)]
        return rows

    def closing(self, sid: int) -> str:
        """Text that completes state `sid`; raises AssertionError where the automaton cannot close it (a bug
        in the rules: `LatexConstraint.closing` turns it into an empty closing and counts it)."""
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


class LengthPrior:
    """Lengths in tokens of real training equations, per topic (and all together), to draw targets from.

    `from_equations(tokenizer, equations, topics)`: `topics[i]` is the dominant topic of equations[i] (None
    for unknown); `targets(topic, n, seed)` draws n lengths of that topic's equations (of all equations for a
    topic with fewer than `min_count`, or for topic None)."""

    def __init__(self, lengths: Mapping[int | None, Sequence[int]], min_count: int = 20):
        self.lengths = {k: np.asarray(v, dtype=np.int64) for k, v in lengths.items()}
        self.min_count = min_count

    @classmethod
    def from_equations(cls, tokenizer, equations: Sequence[str], topics: Sequence[int | None] | None = None,
                       min_count: int = 20) -> "LengthPrior":
        by_topic: dict[int | None, list[int]] = {None: []}
        for i, eq in enumerate(equations):
            n = len(tokenizer.tokenize(eq))
            by_topic[None].append(n)
            topic = topics[i] if topics is not None else None
            if topic is not None:
                by_topic.setdefault(int(topic), []).append(n)
        if not by_topic[None]:
            raise ValueError("a length prior needs at least one equation")
        return cls(by_topic, min_count)

    def targets(self, topic: int | None, n: int, seed: int) -> list[int]:
        pool = self.lengths.get(topic)
        if pool is None or len(pool) < self.min_count:
            pool = self.lengths[None]
        return [int(x) for x in np.random.default_rng(seed).choice(pool, size=n)]


class LatexConstraint:
    """Per-batch syntax constraint (SequenceConstraint). Make one per sampler call; share the automaton.

    `targets`: one target length in tokens per sequence (see the module's length control), or None."""

    def __init__(self, automaton: TokenAutomaton, targets: Sequence[int] | None = None, grace: float = 0.25,
                 floor: float = 1.0):
        self.automaton = automaton
        self.sids: list[int] = []
        self.finished: list[bool] = []
        self.broken: list[bool] = []
        self.closing_failures = 0  # prefixes closing() could not complete (see closing)
        self.targets = None if targets is None else torch.as_tensor(list(targets), dtype=torch.long)
        self.grace, self.floor = grace, floor
        self.steps = torch.zeros(0, dtype=torch.long)

    @classmethod
    def from_equations(cls, equations: Iterable[str], vocab: Sequence[str], eos_id: int, *,
                       special_ids: Iterable[int] = (), config: SyntaxConfig | None = None) -> "LatexConstraint":
        syntax = SyntaxVocabulary.from_equations(equations)
        return cls(TokenAutomaton(vocab, syntax, eos_id=eos_id, special_ids=special_ids, config=config))

    @classmethod
    def for_tokenizer(cls, tokenizer, syntax: SyntaxVocabulary, config: SyntaxConfig | None = None) -> "LatexConstraint":
        return cls(TokenAutomaton(tokenizer.tokens, syntax, eos_id=tokenizer.eos_id,
                                  special_ids=tokenizer.special_ids, config=config))

    def fresh(self, targets: Sequence[int] | None = None, floor: float | None = None) -> "LatexConstraint":
        """A new constraint on the same automaton (caches shared), with its own target lengths."""
        return LatexConstraint(self.automaton, targets, self.grace, self.floor if floor is None else floor)

    # --- protocol ---
    def start(self, batch_size: int) -> None:
        a = self.automaton
        self.sids = [a.start_id] * batch_size
        self.finished = [False] * batch_size
        self.broken = [False] * batch_size
        self.steps = torch.zeros(batch_size, dtype=torch.long)
        if self.targets is not None and len(self.targets) != batch_size:
            raise ValueError(f"{len(self.targets)} target lengths for a batch of {batch_size}")

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
        if self.targets is not None:
            mask = self._steer(mask)
        return mask

    def _steer(self, mask: torch.Tensor) -> torch.Tensor:
        """Length control (see the module): no <eos> before the target, then end, close, or be closed."""
        a = self.automaton
        eos = a.eos_id
        live = ~torch.tensor([f or b for f, b in zip(self.finished, self.broken)], dtype=torch.bool)
        late = live & (self.steps >= self.targets)
        mask = mask.clone()
        has_other = mask.clone()
        has_other[:, eos] = False
        early = live & (self.steps.float() < self.targets.float() * self.floor)
        mask[early & has_other.any(1), eos] = False
        if bool(late.any()):
            complete = torch.tensor([a.is_complete(max(s, 0)) for s in self.sids], dtype=torch.bool)
            mask[late & complete] = a.finished_row
            overdue = self.steps.float() >= self.targets.float() * (1 + self.grace)
            closing = late & ~complete & ~overdue
            calm = mask & ~a.opener_row
            keep = closing & calm.any(1)
            mask[keep] = calm[keep]
            for i in (late & ~complete & overdue).nonzero().flatten().tolist():
                ti = a.closing_token(self.sids[i])
                if ti >= 0 and bool(mask[i, ti]):
                    mask[i] = False
                    mask[i, ti] = True
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
            self.steps[i] += 1
            nxt = a.step(sids[i], t)
            if nxt < 0:  # e.g. a prime the constraint cannot parse: stop constraining this sequence
                self.broken[i] = True
            else:
                sids[i] = nxt

    def closing(self) -> list[str]:
        """Per sequence, the text that completes it ("" once finished or broken). Where the automaton cannot
        close one prefix (an AssertionError in the rules: a bug, never expected), that sequence gets "" (it
        most likely fails the compile check and is counted there) and `closing_failures` counts it, instead
        of the whole batch being lost."""
        a = self.automaton
        out = []
        for s, f, b in zip(self.sids, self.finished, self.broken):
            if f or b:
                out.append("")
                continue
            try:
                out.append(a.closing(s))
            except AssertionError:
                self.closing_failures += 1
                out.append("")
        return out

    # --- extras ---
    def complete(self) -> list[bool]:
        """Per sequence: is the prefix a complete equation as it stands?"""
        a = self.automaton
        return [f or (not b and a.is_complete(s)) for s, f, b in zip(self.sids, self.finished, self.broken)]
