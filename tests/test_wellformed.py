"""Well-formed output (issue 20): the decoding rules of topicrnn/latex_syntax/wellformed.py and the string
measures of pipeline/wellformed.py that check them from outside.

The property tests walk random sequences under the constraint's mask (any allowed token, or tokens biased
towards structure), for seeds drawn by hypothesis, and check every finished or closed text with the string
measures: delimiters balanced, no empty \\frac/\\sqrt argument, no operator without its operand, \\text words
from the training vocabulary. An untrained LSTM sampled under the constraint must write text that both
compiles (real pdflatex) and passes the measures.
"""
from __future__ import annotations

import random
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.wellformed import balanced_share, dangling_operator, delimiters_balanced, empty_argument
from topicrnn.latex_syntax import START, LatexConstraint, SyntaxAutomaton, SyntaxConfig, SyntaxVocabulary
from topicrnn.latex_syntax.tables import argument_words
from topicrnn.latex_syntax.wellformed import WellFormedAutomaton, make_automaton
from topicrnn.tokenizers import CharTokenizer, LatexTokenizer

TRAIN = [
    r"f(x) = \begin{cases} 1 & \text{if } x > 0 \\ 0 & \text{otherwise} \end{cases}",
    r"\mathrm{Hom}_A(M, N) \otimes_A N' = \mathrm{Hom}(-, M), \quad (-)^\vee",
    r"\int_0^1 g(x) \, \mathrm{d}x = \frac{a + b}{\sqrt[3]{c}} \leq [0, 1)",
    r"\left\{ x \in X : x^{2+} = \mathbb{R}_+ \right\} \cup \{ a, b \} \to \sum_{i=1}^{n} x_i",
    r"\begin{aligned} f(x &= a \\ &+ b) \\ a &= & b \end{aligned} \stackrel{d}{\to} \phantom{=} \xrightarrow{} y",
    r"\operatorname*{arg\,max}_\theta p(\theta) \sim \text{for all } t, \quad {}^{14}C \Big( \frac{1}{2} \Big)",
    r"U/\sim \quad \left( a \middle| b \right) \times \mathrm{Tr}\, \mathrm{d}\mu + \binom{n}{k}",
    r"a \over b",
]
STRUCT = {"{", "}", "(", ")", "[", "]", "^", "_", "&", "+", "=", " ", r"\frac", r"\sqrt", r"\text", r"\mathrm",
          r"\left", r"\right", r"\{", r"\}", r"\Big", r"\\", r"\sum", r"\to", r"\leq", r"\begin{aligned}",
          r"\end{aligned}", r"\operatorname", r"\over"}


def syntax() -> SyntaxVocabulary:
    return SyntaxVocabulary.from_equations(TRAIN)


def accepts(text: str, config: SyntaxConfig | None = None) -> bool:
    auto = make_automaton(syntax(), config)
    state = auto.text(START, text)
    return state is not None and auto.complete(state)


# ------------------------------------------------------------------------------------ string measures
@pytest.mark.parametrize("text,loose,strict", [
    (r"[0, 1)", True, False), (r"\left( a \right]", True, True), (r"f(x) = (a + [b])", True, True),
    (r"{(}a)", False, False), (r"(a", False, False), (r"a)", False, False), (r"\{ a )", False, False),
    (r"\text{(see below} x", True, True), (r"a \\[2pt] b", True, True), (r"\bigl( a \bigr)", True, True),
    (r"\begin{aligned} f(x &= a \\ &+ b) \end{aligned}", True, True), (r"\left( ( \right)", False, False),
    (r"\lbrace a \rbrace", True, True), (r"\begin{cases} ( \end{cases} )", False, False),
])
def test_delimiters_balanced(text, loose, strict):
    assert delimiters_balanced(text) is loose
    assert delimiters_balanced(text, strict=True) is strict


def test_empty_arguments_and_dangling_operators():
    assert empty_argument(r"\frac{}{x}") and empty_argument(r"\sqrt{ }") and empty_argument(r"\frac{a}{}")
    assert not empty_argument(r"\frac{a}{b} + \sqrt[3]{x} + {}^{14}C")
    for bad in (r"a +", r"(x =)", r"\frac{a+}{b}", r"\left( a \leq \right)", r"a = , b"):
        assert dangling_operator(bad), bad
    for good in (r"x^{2+}", r"\mathrm{Hom}(-, M)", r"\phantom{=}", r"a = -b", r"\stackrel{d}{\to}", r"U/\sim",
                 r"\mathbb{R}_+", r"a = b,"):
        assert not dangling_operator(good), good
    assert balanced_share([r"(a)", r"(a"]) == 0.5


def test_argument_words():
    assert argument_words(r"\text{if } x \quad \text{otherwise \quad for} \mathrm {Hom}_A \operatorname*{arg\,max}") \
        == ({"if", "otherwise", "for"}, {"Hom", "arg", "max"})


# ------------------------------------------------------------------------------------ the rules
@pytest.mark.parametrize("text", [
    r"[0, 1)", r"(a]", r"\left( (a) \right)", r"\mathrm{Hom}(-, M)", r"(-)^\vee", r"x^{2+} + \mathbb{R}_+",
    r"\sum_{i=1}^{n} x_i", r"\begin{aligned} f(x &= a \\ &+ b) \end{aligned}", r"\begin{aligned} a &= & b \end{aligned}",
    r"\stackrel{d}{\to} \phantom{=} \xrightarrow{} y", r"U/\sim", r"\text{if } x", r"\text{for all } t",
    r"\mathrm{d}x", r"{}^{14}C", r"\Big( \frac{1}{2} \Big)", r"\{ a, b \}", r"a = -b", r"\operatorname*{arg\,max} p",
    r"\left\{ x \right.", r"a \over b", r"\otimes_A N",
])
def test_accepts_what_people_write(text):
    assert accepts(text), text


@pytest.mark.parametrize("text", [
    r"(a", r"a)", r"\{ a )", r"{(}a)", r"\left( ( \right)", r"\frac{(}{)}", r"x^(", r"\frac{}{x}", r"\sqrt{}",
    r"x^{}", r"\text{ }", r"\sqrt[]{x}", r"a +", r"a + )", r"(a +)", r"a = = b", r"\frac{a+}{b}", r"\sum",
    r"a \leq", r"\text{zzqx}", r"\text{otherw}", r"\mathrm{Qq}", r"\left( a = \right)", r"\begin{aligned} a = \end{aligned}",
    r"{( a \over b)}", r"a = , b", r"-", r"\begin{aligned} - \end{aligned}", r"\mathrm\to", r"{-}",
])
def test_rejects_what_people_do_not_write(text):
    assert not accepts(text), text
    assert accepts(text, SyntaxConfig(balanced=False, operands=False, known_words=False)) or text in (
        r"a)", r"{(}a)", r"\frac{(}{)}", r"\left( ( \right)", r"\{ a )", r"a + )", r"(a +)", r"\left( a = \right)",
        r"a = = b")  # ill-formed for TeX too is fine; the rest TeX alone accepts


def test_each_rule_switches_alone():
    off = dict(balanced=False, operands=False, known_words=False)
    assert type(make_automaton(syntax(), SyntaxConfig(**off))) is SyntaxAutomaton
    assert isinstance(make_automaton(syntax(), SyntaxConfig()), WellFormedAutomaton)
    assert not accepts("(a", SyntaxConfig(**{**off, "balanced": True})) and accepts("(a", SyntaxConfig(**off))
    assert not accepts("a +", SyntaxConfig(**{**off, "operands": True})) and accepts("a +", SyntaxConfig(**off))
    assert not accepts(r"\text{zzqx}", SyntaxConfig(**{**off, "known_words": True}))
    assert accepts(r"\text{zzqx}", SyntaxConfig(**off))
    # no word seen: the word rule leaves the context free
    bare = SyntaxVocabulary.from_equations([r"\text{1} + \mathrm{2}"])
    auto = make_automaton(bare, SyntaxConfig())
    assert auto.complete(auto.text(START, r"\text{zzqx}"))


def test_closing_completes_prefixes_under_the_rules():
    auto = make_automaton(syntax(), SyntaxConfig())
    for prefix in (r"\frac{", r"(a +", r"\text{otherw", r"\sqrt[", r"\{ a", r"\left( (a", r"a =", r"\sum_{i",
                   r"\mathrm{H", r"\begin{aligned} f(x &= a", r"x^", r"\text{", r"\left\{ [0, 1", r"\Big( a"):
        state = auto.text(START, prefix)
        assert state is not None, prefix
        closed = prefix + auto.closing(state)
        assert accepts(closed), (prefix, closed)
        assert delimiters_balanced(closed) and not empty_argument(closed) and not dangling_operator(closed), closed


def test_constraint_closing_reports_failures_per_sequence(monkeypatch):
    tok = LatexTokenizer().fit(TRAIN)
    c = LatexConstraint.for_tokenizer(tok, syntax())
    c.start(2)
    c.advance([tok.stoi["("], tok.stoi["("]])
    c.advance([tok.stoi["a"], tok.stoi["("]])
    assert c.closing() == [")", "))"] and c.closing_failures == 0
    bad, real = c.automaton.state(c.sids[0]), c.automaton.auto.closing

    def flaky(state):
        if state == bad:
            raise AssertionError("a bug in the rules")
        return real(state)

    c.automaton._closing.clear()
    monkeypatch.setattr(c.automaton.auto, "closing", flaky)
    assert c.closing() == ["", "))"] and c.closing_failures == 1


# ------------------------------------------------------------------------------------ property tests
_CONSTRAINTS: dict = {}


def _constraint(kind: str):
    if kind not in _CONSTRAINTS:
        tok = (LatexTokenizer() if kind == "latex" else CharTokenizer()).fit(TRAIN + [r"$x$ \undefinedmacro"])
        _CONSTRAINTS[kind] = (LatexConstraint.for_tokenizer(tok, syntax()), tok)
    return _CONSTRAINTS[kind]


def walk(kind: str, seed: int, bias: float, n: int = 12, steps: int = 60) -> list[str]:
    """n random walks under the mask; each ends at <eos> or is cut at a random step and closed there."""
    proto, tok = _constraint(kind)
    c = proto.fresh()
    rng = random.Random(seed)
    struct = {i for i, t in enumerate(tok.tokens) if t in STRUCT}
    c.start(n)
    ids: list[list[int]] = [[] for _ in range(n)]
    cut = [rng.randint(1, steps) for _ in range(n)]
    texts: list[str | None] = [None] * n
    for step in range(steps + 1):
        mask = c.allowed_mask()
        for i in range(n):
            if texts[i] is None and (c.finished[i] or step == cut[i]):
                texts[i] = tok.detokenize([tok.tokens[j] for j in ids[i]]) + ("" if c.finished[i] else
                                                                                   c.automaton.closing(c.sids[i]))
        nxt = []
        for i in range(n):
            allowed = mask[i].nonzero().flatten().tolist()
            pool = [t for t in allowed if t != tok.eos_id] or allowed
            biased = [t for t in pool if t in struct]
            t = rng.choice(biased if biased and rng.random() < bias else pool)
            t = t if rng.random() > 0.05 else rng.choice(allowed)
            nxt.append(t)
            if not c.finished[i] and t != tok.eos_id:
                ids[i].append(t)
        c.advance(nxt)
    assert not any(c.broken)
    return [t for t in texts if t is not None]


_WORD = re.compile(r"\\(text|mathrm|operatorname)\*?\{([^{}\\]*)\}")  # (only arguments of plain words)


def check_wellformed(texts: list[str]) -> None:
    voc = syntax()
    for t in texts:
        assert delimiters_balanced(t), t
        assert not empty_argument(t), t
        assert not dangling_operator(t), t
        for m in _WORD.finditer(t):
            words = set(re.findall(r"(?<![\\a-zA-Z_^])[a-zA-Z]+", m.group(2)))
            known = voc.text_words if m.group(1) == "text" else voc.roman_words
            assert words <= known, (t, words - known)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), bias=st.floats(0.0, 0.9), kind=st.sampled_from(["latex", "char"]))
def test_random_walks_under_the_constraint_are_wellformed(seed, bias, kind):
    check_wellformed(walk(kind, seed, bias, steps=60 if kind == "latex" else 110))


@pytest.fixture(scope="module")
def compile_check(tmp_path_factory):
    from pipeline.compile_check import check

    cache = tmp_path_factory.mktemp("compile-cache")
    return lambda texts: check(texts, cache_dir=cache)


def test_random_lstm_under_the_constraint_writes_wellformed_compiling_text(pdflatex, compile_check,
                                                                            one_torch_thread):
    from topicrnn.models import ModelConfig, RecurrentLM
    from topicrnn.sampling import sample

    outs: list[str] = []
    for kind in ("latex", "char"):
        proto, tok = _constraint(kind)
        torch.manual_seed(1)
        model = RecurrentLM(ModelConfig(cell="lstm", layers=1, hidden=32, embedding=16, dropout=0.0,
                                        vocab_size=len(tok.tokens)))
        outs += sample(model, tok, n=30, max_len=50 if kind == "latex" else 100, temperature=1.5, seed=5,
                       constraint=proto.fresh())
        free = sample(model, tok, n=30, max_len=50 if kind == "latex" else 100, temperature=1.5, seed=5)
        assert balanced_share(free) < 0.9  # the same model without the rules: the measures can fail
    check_wellformed(outs)
    bad = [(t, v.error) for t, v in zip(outs, compile_check(outs)) if not v.ok]
    assert not bad, bad[:5]


@pytest.mark.parametrize("kind", ["latex", "char"])
def test_mask_rows_match_the_transition_for_every_state(kind):
    """States that share a mask row (same key) must allow exactly the same tokens (with the word row of a
    word in progress ANDed in)."""
    for seed in range(4):
        walk(kind, 1000 + seed, 0.5, steps=60 if kind == "latex" else 110)
    proto, tok = _constraint(kind)
    auto = proto.automaton
    for sid in range(0, auto.n_states, max(1, auto.n_states // 300)):
        row = auto.mask_rows([sid])[0]
        for ti in range(len(tok.tokens)):
            if ti not in tok.special_ids:
                assert bool(row[ti]) == (auto._apply(auto.state(sid), ti) is not None), (auto.state(sid), tok.tokens[ti])
        assert bool(row[tok.eos_id]) == auto.is_complete(sid)


def test_length_control_ends_equations_near_their_target(one_torch_thread):
    """No <eos> before the target; after it, end as soon as complete, open nothing new, and past
    target x (1 + grace) write the closing: an untrained model at T = 1.5 ends within a few tokens of it."""
    from topicrnn.latex_syntax import LengthPrior
    from topicrnn.models import ModelConfig, RecurrentLM
    from topicrnn.sampling import sample

    proto, tok = _constraint("latex")
    torch.manual_seed(2)
    model = RecurrentLM(ModelConfig(cell="lstm", layers=1, hidden=32, embedding=16, dropout=0.0,
                                    vocab_size=len(tok.tokens)))
    targets = [4, 8, 12, 20, 30, 40] * 3
    out = sample(model, tok, n=len(targets), max_len=300, temperature=1.5, seed=7, constraint=proto.fresh(targets))
    free = sample(model, tok, n=len(targets), max_len=300, temperature=1.5, seed=7, constraint=proto.fresh())
    lengths = [len(tok.tokenize(t)) for t in out]
    for text, n, target in zip(out, lengths, targets):
        assert target <= n <= 1.25 * target + 8, (target, n, text)
    check_wellformed(out)
    assert sum(abs(n - t) for n, t in zip(lengths, targets)) < sum(abs(len(tok.tokenize(f)) - t)
                                                                 for f, t in zip(free, targets))
    prior = LengthPrior.from_equations(tok, TRAIN + TRAIN[:2], topics=[0] * 8 + [1, 1], min_count=3)
    assert set(prior.targets(0, 50, seed=1)) <= {len(tok.tokenize(e)) for e in TRAIN}
    assert prior.targets(1, 5, seed=1) == prior.targets(1, 5, seed=1)  # seeded; topic 1 has 2 < 3: all lengths
    with pytest.raises(ValueError, match="target lengths"):
        proto.fresh([3, 4]).start(3)
