"""Syntax-aware decoding (topicrnn.latex_syntax): rules, closing, and a property test under real pdflatex.

The property tests walk many random sequences under the constraint's mask (uniformly random tokens, and
random tokens biased towards structure: braces, scripts, \\left/\\right, environments, `&`, `\\\\`), cut each
at a random length, append `closing()` and check with the real compile rule (pipeline.compile_check, batched
pdflatex) that every one compiles — for the LaTeX tokenizer and the character tokenizer. A random
(untrained) LSTM sampled through topicrnn.sampling with the constraint must also give only compiling text.
"""
from __future__ import annotations

import random

import pytest
import torch

from topicrnn.latex_syntax import (LatexConstraint, SyntaxAutomaton, SyntaxConfig, SyntaxVocabulary,
                                   TokenAutomaton, START)
from topicrnn.tokenizers import CharTokenizer, LatexTokenizer

# Small training set written for the tests: the constraint learns which control sequences exist from it.
EQUATIONS = [
    r"A_{R/L} = \frac{\left( 1 \pm x \right)^2}{d}",
    r"\sum_{i=1}^{n} x_i^2 \leq \sqrt[3]{\alpha + \beta'}",
    r"f(x) = \begin{cases} 1 & x > 0 \\ 0 & \text{otherwise} \end{cases}",
    r"\begin{aligned} a &= b + c \\ &= \hat{d} \cdot \mathbf{v} \end{aligned}",
    r"M = \begin{pmatrix} a & b \\ c & d \end{pmatrix}, \quad \det M \neq 0",
    r"\left\langle \psi \middle| H \middle| \psi \right\rangle = E",
    r"\begin{array}{c|l} x & y \\ \hline 1 & 2 \end{array}",
    r"\lim\limits_{n \to \infty} \left[ 1 + \tfrac{1}{n} \right]^n = e",
    r"\mathcal{L} = \int \mathrm{d}^4x \, \bar{\psi} (i \gamma^\mu \partial_\mu - m) \psi",
    r"\begin{split} a &= b \\ &= c \end{split}",
    r"\begin{gathered} x \\ y \end{gathered} \Big( \mathbb{R}^n \Big)",
    r"\begin{alignedat}{2} a &= b &\quad c &= d \end{alignedat}",
    r"x \xrightarrow[a]{b} y, \operatorname*{arg\,max}_\theta p(\theta) \;!",
    r"{n \choose k} = \binom{n}{k}, \ \vec{v} = \tilde{w}, \; a \over b",
    r"\bm{x}^\top \boldsymbol{\Sigma}^{-1} \bm{x} \geq 0 \\ \{ a, b \} \| c \|",
    r"\begin{bmatrix} 1 \\ 2 \end{bmatrix} \begin{vmatrix} a \end{vmatrix} \begin{smallmatrix} a & b \end{smallmatrix}",
    r"\overline{z} \underbrace{a+b}_{c} \displaystyle \phantom{x} \ldots \cdots \Rightarrow \mapsto",
    r"x' + y'' = \nabla \times \mathbf{E} \quad \forall\, t \in [0, T)",
    r"\begin{multlined} a + b \\ c \end{multlined} \begin{psmallmatrix} a & b \end{psmallmatrix}",
]
# Strings that put forbidden or unseen symbols into the tokenizer's vocabulary (never into the syntax).
POISON = [r"$x$ % comment", r"\end{document} \#", r"\hspace{1cm} \mathscr{A} \begin{align} \undefinedmacro",
          r"\sqrt x & \\ \\", "\u00e9"]

STRUCT = set("{}^_&[]'~* \n|") | {
    r"\left", r"\right", r"\middle", r"\frac", r"\sqrt", r"\text", r"\over", r"\limits", r"\hat", r"\\",
    r"\operatorname", r"\xrightarrow", r"\Big", r"\sum", r"\begin", r"\end", r"\hline", r"\,", r"\bm"}


def syntax() -> SyntaxVocabulary:
    return SyntaxVocabulary.from_equations(EQUATIONS)


def tokenizer(kind: str):
    tok = LatexTokenizer() if kind == "latex" else CharTokenizer()
    return tok.fit(EQUATIONS + POISON)


def constraint(kind: str) -> tuple[LatexConstraint, object]:
    tok = tokenizer(kind)
    return LatexConstraint.for_tokenizer(tok, syntax()), tok


def accepts(text: str, syn: SyntaxVocabulary | None = None) -> bool:
    auto = SyntaxAutomaton(syn or syntax())
    state = auto.text(START, text)
    return state is not None and auto.complete(state)


def random_walk(kind: str, n: int, steps: int, seed: int, structure_bias: float):
    """n sequences of random allowed tokens; each is cut at a random step and closed there.
    Returns (texts, cut prefixes' token ids, tokenizer, constraint, offered-token sets per step)."""
    c, tok = constraint(kind)
    auto = c.automaton
    rng = random.Random(seed)
    struct_ids = {i for i, t in enumerate(tok.tokens) if t in STRUCT or t.startswith(("\\begin{", "\\end{"))}
    c.start(n)
    ids: list[list[int]] = [[] for _ in range(n)]
    cut = [rng.randint(0, steps) for _ in range(n)]
    texts: list[str | None] = [None] * n
    offered: set[int] = set()
    eos_offered_incomplete = 0
    for step in range(steps + 1):
        mask = c.allowed_mask()
        assert mask.dtype == torch.bool and mask.shape == (n, len(tok.tokens))
        complete = c.complete()
        for i in range(n):
            if texts[i] is None and (step == cut[i] or c.finished[i]):
                closing = "" if c.finished[i] else auto.closing(c.sids[i])
                texts[i] = tok.detokenize([tok.tokens[j] for j in ids[i]]) + closing
        nxt = []
        for i in range(n):
            allowed = mask[i].nonzero().flatten().tolist()
            assert allowed, "the constraint allows nothing"
            if not c.finished[i]:
                offered.update(allowed)
                if bool(mask[i, tok.eos_id]) and not complete[i]:
                    eos_offered_incomplete += 1
            pool = [t for t in allowed if t != tok.eos_id] or allowed
            biased = [t for t in pool if t in struct_ids]
            if biased and rng.random() < structure_bias:
                pool = biased
            t = rng.choice(pool) if rng.random() > 0.03 else rng.choice(allowed)
            nxt.append(t)
            if not c.finished[i] and t != tok.eos_id:
                ids[i].append(t)
        c.advance(nxt)
    assert eos_offered_incomplete == 0
    return [t for t in texts if t is not None], tok, c, offered


# ------------------------------------------------------------------------------------------ rules
@pytest.mark.parametrize("text", [
    r"x^2_3", r"x'^2", r"x_1'", r"\frac12", r"\frac{a}{b}", r"\sqrt[n]{x}", r"\left( x \middle| y \right)",
    r"\begin{cases} a & b \\ c & d \end{cases}", r"\begin{array}{cc} \hline a & b \end{array}",
    r"\text{a b}", r"x^\mathrm{T}", r"\sum\limits_{i}", r"{a \over b}", r"\begin{aligned} &a \end{aligned}",
    r"\operatorname*{arg\,max}", r"\xrightarrow[a]{b}", "a\nb", r"\begin{split} a &= b \end{split}",
    r"x^{\begin{multlined} a \\ b \end{multlined}}",
])
def test_accepts_well_formed(text):
    assert accepts(text), text


@pytest.mark.parametrize("text", [
    r"x^2^3", r"x^2'", r"x_1_2", r"x^", r"\frac{a}", r"{", r"}", r"a & b", r"\left( x", r"x \right)",
    r"\begin{cases} a & b & c \end{cases}", r"\begin{gathered} a & b \end{gathered}", r"$x$", r"x % c",
    r"\#", r"\end{document}", r"\begin{align} a \end{align}", r"\undefinedmacro", r"\hspace{1cm}",
    r"x\limits", r"a \over b \over c", r"\text{x^2}", r"\begin{aligned} {a \\ b} \end{aligned}",
    r"\begin{aligned} a \\[2pt] b \end{aligned}", "a\n\nb", "\na", "", " ", r"x^\ldots", r"\big x",
    r"\hline", r"\begin{array}{cc} a & \hline b \end{array}", r"\frac a{\over b}", "\u00e9",
    r"\begin{aligned}&\begin{cases} a \end{cases}\end{aligned}", r"\left( a & b \right)",
    r"\begin{multlined} a & b \end{multlined}",
])
def test_rejects_ill_formed(text):
    assert not accepts(text), text


def test_closing_completes_prefixes():
    auto = SyntaxAutomaton(syntax())
    cases = {
        r"\frac{a": "}{}", r"\left(": r"\right.", r"\left": r".\right.", r"\begin{cases} a": r"\end{cases}",
        r"x^": "{}", r"\sqrt[3": "]{}", r"\text{ab": "}", r"\begin{array}": "{c}\\end{array}",
        r"\fr": "ac{}{}", r"\begin{ca": r"ses}\end{cases}", "": "{}", r"\left\lang": r"le\right.",
    }
    for prefix, want in cases.items():
        state = auto.text(START, prefix)
        assert state is not None, prefix
        assert auto.closing(state) == want, prefix
        assert auto.complete(auto.text(state, want, end_word=True))


def test_unseen_control_sequences_are_never_offered():
    syn = SyntaxVocabulary.from_equations([r"\frac{a}{b} + \alpha"])
    tok = LatexTokenizer().fit(EQUATIONS + POISON)
    auto = TokenAutomaton(tok.tokens, syn, eos_id=tok.eos_id, special_ids=tok.special_ids)
    allowed_words = {r"\frac", r"\alpha"}
    c = LatexConstraint(auto)
    rng = random.Random(0)
    c.start(20)
    for _ in range(30):
        mask = c.allowed_mask()
        for i in mask.any(0).nonzero().flatten().tolist():
            t = tok.tokens[i]
            if t.startswith("\\") and len(t) > 2:
                assert t in allowed_words, t
        c.advance([rng.choice(row.nonzero().flatten().tolist()) for row in mask])
    # character level: after `\` only letters that continue a seen name
    ctok = CharTokenizer().fit(EQUATIONS)
    cauto = TokenAutomaton(ctok.tokens, syn, eos_id=ctok.eos_id, special_ids=ctok.special_ids)
    sid = cauto.step(cauto.start_id, ctok.stoi["\\"])
    letters = {ctok.tokens[i] for i in cauto.mask_rows([sid])[0].nonzero().flatten().tolist()}
    assert letters == {"f", "a"}


def test_syntax_vocabulary_round_trip_and_unsupported():
    syn = syntax()
    again = SyntaxVocabulary.from_dict(syn.to_dict())
    assert again == syn
    assert "frac" in syn.control_words and "cases" in syn.environments
    odd = SyntaxVocabulary.from_equations([r"\hspace{1cm} \begin{tikzcd} \end{tikzcd}"]).unsupported()
    assert "hspace" in odd["control_words"] and "tikzcd" in odd["environments"]


def test_masks_are_cached_by_state_key():
    c, tok = constraint("latex")
    c.start(64)
    rng = random.Random(1)
    for _ in range(40):
        mask = c.allowed_mask()
        c.advance([rng.choice(row.nonzero().flatten().tolist()) for row in mask])
    auto = c.automaton
    assert auto.n_keys < auto.n_states  # shared rows: fewer masks than states
    # a state's mask row is exactly what stepping each token says
    for sid in range(0, len(auto._states), max(1, len(auto._states) // 25)):
        row = auto.mask_rows([sid])[0]
        for ti in range(len(tok.tokens)):
            if ti in tok.special_ids:
                continue
            assert bool(row[ti]) == (auto._apply(auto.state(sid), ti) is not None)
        assert bool(row[tok.eos_id]) == auto.is_complete(sid)


def test_unparsable_prime_leaves_sequence_unconstrained():
    c, tok = constraint("latex")
    c.start(2)
    c.advance([tok.stoi["$"], tok.stoi["x"]])
    mask = c.allowed_mask()
    assert c.broken == [True, False]
    assert bool(mask[0, tok.stoi["$"]]) and not bool(mask[1, tok.stoi["$"]])
    assert c.closing()[0] == ""


# ------------------------------------------------------------------------------- property, pdflatex
@pytest.fixture(scope="module")
def compile_check(tmp_path_factory):
    from pipeline.compile_check import check

    cache = tmp_path_factory.mktemp("compile-cache")

    def run(texts):
        return check(texts, cache_dir=cache)

    return run


@pytest.mark.parametrize("kind,n,steps,bias,seed", [
    ("latex", 80, 50, 0.6, 11), ("latex", 30, 40, 0.0, 12), ("char", 80, 100, 0.6, 13), ("char", 30, 80, 0.0, 14),
])
def test_random_walk_closings_compile(pdflatex, compile_check, one_torch_thread, kind, n, steps, bias, seed):
    texts, tok, c, offered = random_walk(kind, n, steps, seed, bias)
    forbidden = {i for i, t in enumerate(tok.tokens) if t in ("$", "%", "#", "\u00e9", r"\end{document}",
                                                                r"\undefinedmacro", r"\hspace", r"\mathscr",
                                                                r"\begin{align}")}
    assert not offered & forbidden
    assert len(texts) == n
    verdicts = compile_check(texts)
    bad = [(t, v.error) for t, v in zip(texts, verdicts) if not v.ok]
    assert not bad, bad[:5]


def test_random_lstm_with_constraint_only_writes_compiling_equations(pdflatex, compile_check, one_torch_thread):
    from topicrnn.models import ModelConfig, RecurrentLM
    from topicrnn.sampling import sample

    outs = []
    for kind in ("latex", "char"):
        tok = tokenizer(kind)
        torch.manual_seed(0)
        model = RecurrentLM(ModelConfig(cell="lstm", layers=1, hidden=32, embedding=16, dropout=0.0,
                                        vocab_size=len(tok.tokens)))
        proto = LatexConstraint.for_tokenizer(tok, syntax())
        outs += sample(model, tok, n=30, max_len=50 if kind == "latex" else 90, temperature=1.5, seed=3,
                       constraint=proto.fresh())
        # without the constraint the same random model writes equations that do not compile
        if kind == "latex":
            free = sample(model, tok, n=30, max_len=50, temperature=1.5, seed=3)
            assert sum(not accepts(t) for t in free) > 20
    verdicts = compile_check(outs)
    bad = [(t, v.error) for t, v in zip(outs, verdicts) if not v.ok]
    assert not bad, bad[:5]
