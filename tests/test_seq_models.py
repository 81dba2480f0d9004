"""Sequence models: tokenizers, RecurrentLM (rnn/gru/lstm, topic modes), sampler, numpy RNN, n-gram."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from topicrnn.interface import LoadedModel, Score, SequenceModel
from topicrnn.models import ModelConfig, RecurrentLM
from topicrnn.ngram import NGramConfig, NGramLM
from topicrnn.numpy_rnn import NumpyRNN, numerical_gradient_check
from topicrnn.sampling import filter_logits, sample
from topicrnn.tokenizers import CharTokenizer, LatexTokenizer, Tokenizer, WordTokenizer, make_tokenizer

TEXT = "the cat sat on the mat. the dog sat on the log.\n" * 4


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_model(vocab: int, cell="lstm", topic_dim=0, topic_mode="input", hidden=24, layers=2, seed=0):
    torch.manual_seed(seed)
    m = RecurrentLM(ModelConfig(cell=cell, layers=layers, hidden=hidden, embedding=8, dropout=0.0,
                                topic_dim=topic_dim, topic_mode=topic_mode, vocab_size=vocab))
    return m.eval()


# ----------------------------------------------------------------------------- tokenizers

def test_char_tokenizer_roundtrip_unknown_and_dict():
    tok = CharTokenizer().fit(TEXT)
    assert tok.tokens[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert tok.decode(tok.encode(TEXT)) == TEXT
    ids = tok.encode("cat!", bos=True, eos=True)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id and ids[-2] == tok.unk_id
    assert tok.decode(ids) == "cat"  # specials (including <unk>) dropped
    again = Tokenizer.from_dict(tok.to_dict())
    assert isinstance(again, CharTokenizer) and again.tokens == tok.tokens


def test_latex_tokenizer_rules():
    tok = LatexTokenizer()
    s = r"\frac{a}{b} + \alpha  x\,\begin{pmatrix*} 1 \\ 2\end{pmatrix*}\alpha1"
    assert tok.tokenize(s) == ["\\frac", "{", "a", "}", "{", "b", "}", " ", "+", " ", "\\alpha", "x", "\\,",
                               "\\begin{pmatrix*}", " ", "1", " ", "\\\\", " ", "2", "\\end{pmatrix*}",
                               "\\alpha", "1"]
    # a control word gets a space back before a letter, a digit, a command and most relations, as equations
    # are written; before braces, scripts and brackets it does not
    assert tok.detokenize(tok.tokenize(r"\alpha   x + \beta_1")) == r"\alpha x + \beta_1"
    assert tok.detokenize(["\\alpha", "x"]) == "\\alpha x"
    assert tok.detokenize(["\\alpha", "1"]) == "\\alpha 1"
    assert tok.detokenize(["\\to", "\\mathcal", "{", "F", "}", "(", "\\cdot", ")", "\\le", "="]) \
        == r"\to \mathcal{F}(\cdot)\le ="
    assert tok.tokenize("\\ a\\") == ["\\ ", "a", "\\"]
    tok.fit([s])
    assert tok.encode(r"\gamma")[0] == tok.unk_id
    assert Tokenizer.from_dict(tok.to_dict()).tokens == tok.tokens


def test_latex_detokenize_is_a_fixed_point():
    tok = LatexTokenizer()
    for s in [r"\sum_{i=1}^n x_i", r"\left( \frac{\partial f}{\partial x} \right)", r"a \cdot b\quad c"]:
        once = tok.detokenize(tok.tokenize(s))
        assert tok.tokenize(once) == tok.tokenize(s)


# ----------------------------------------------------------------------------- RecurrentLM

def test_loss_at_init_is_about_ln_v():
    v = 50
    m = tiny_model(v, hidden=32)
    x = torch.randint(0, v, (8, 40), generator=torch.Generator().manual_seed(0))
    logits, _ = m(x[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, v), x[:, 1:].reshape(-1))
    assert abs(loss.item() - math.log(v)) < 0.1


def test_overfits_one_batch():
    v = 12
    m = tiny_model(v, hidden=64, layers=1).train()
    x = torch.randint(0, v, (4, 21), generator=torch.Generator().manual_seed(1))
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(150):
        logits, _ = m(x[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, v), x[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05 * math.log(v)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("topic_mode", ["input", "init", "bias", "input+bias", "input+init+bias"])
def test_chunked_state_equals_full_forward_and_step(cell, topic_mode):
    v, k = 20, 3
    m = tiny_model(v, cell=cell, topic_dim=k, topic_mode=topic_mode)
    x = torch.randint(0, v, (3, 17), generator=torch.Generator().manual_seed(2))
    theta = torch.softmax(torch.randn(3, k), -1)
    with torch.no_grad():
        full, _ = m(x, theta)
        a, st = m(x[:, :9], theta)
        b, _ = m(x[:, 9:], theta, st)
        torch.testing.assert_close(torch.cat([a, b], 1), full, rtol=1e-5, atol=1e-5)
        st, outs = None, []
        for t in range(x.shape[1]):
            lg, st = m.step(x[:, t], theta, st)
            outs.append(lg)
        torch.testing.assert_close(torch.stack(outs, 1), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("topic_mode", ["input", "init", "bias", "input+bias", "init+bias+input"])
def test_theta_changes_distribution_and_gradients_reach_topic_path(topic_mode):
    v, k = 20, 4
    m = tiny_model(v, topic_dim=k, topic_mode=topic_mode)
    x = torch.randint(0, v, (2, 10), generator=torch.Generator().manual_seed(3))
    t1 = torch.tensor([[1.0, 0, 0, 0]] * 2)
    t2 = torch.tensor([[0, 0, 0, 1.0]] * 2)
    with torch.no_grad():
        p1 = torch.softmax(m(x, t1)[0], -1)
        p2 = torch.softmax(m(x, t2)[0], -1)
    assert (p1 - p2).abs().max() > 1e-4
    theta = torch.full((2, k), 0.25, requires_grad=True)
    logits, _ = m(x[:, :-1], theta)
    torch.nn.functional.cross_entropy(logits.reshape(-1, v), x[:, 1:].reshape(-1)).backward()
    assert theta.grad is not None and theta.grad.abs().sum() > 0
    paths = {"input": lambda: m.rnn.weight_ih_l0.grad[:, -m.config.topic_dim:],
             "init": lambda: m.topic_init.weight.grad, "bias": lambda: m.topic_bias.weight.grad}
    for mode in topic_mode.split("+"):  # every named path is built and trained
        assert paths[mode]().abs().sum() > 0, mode
    for mode in set(paths) - set(topic_mode.split("+")):  # and no other
        assert mode == "input" and m.rnn.weight_ih_l0.shape[1] == m.config.embedding or \
            getattr(m, "topic_" + mode) is None, mode


@pytest.mark.parametrize("bad", ["", "input+", "bias+bias", "input+topic", "Input"])
def test_topic_mode_rejects_unknown_or_repeated_parts(bad):
    with pytest.raises(ValueError, match="topic_mode"):
        tiny_model(10, topic_dim=3, topic_mode=bad)


def test_topic_model_requires_theta():
    m = tiny_model(10, topic_dim=3)
    with pytest.raises(ValueError, match="theta"):
        m(torch.zeros(1, 4, dtype=torch.long))


# ----------------------------------------------------------------------------- sampler

def _trained_char_lm():
    tok = CharTokenizer().fit(TEXT)
    m = tiny_model(tok.vocab_size, hidden=32, layers=1).train()
    ids = torch.tensor([tok.encode(TEXT, bos=True)])
    opt = torch.optim.Adam(m.parameters(), lr=2e-2)
    for _ in range(60):
        logits, _ = m(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits[0], ids[0, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval(), tok


@pytest.fixture(scope="module")
def char_lm():
    old = torch.get_num_threads()  # module-scoped: set up before the per-test one-thread fixture
    torch.set_num_threads(1)
    try:
        return _trained_char_lm()
    finally:
        torch.set_num_threads(old)


def test_temperature_to_zero_is_argmax(char_lm):
    m, tok = char_lm
    greedy = sample(m, tok, n=2, max_len=40, greedy=True, prime="the ")
    cold = sample(m, tok, n=2, max_len=40, temperature=1e-6, prime="the ", seed=5)
    assert cold == greedy
    # greedy really is the argmax chain
    ids = [tok.bos_id] + tok.encode("the ")
    with torch.no_grad():
        for _ in range(40):
            logits, _ = m(torch.tensor([ids]))
            lg = logits[0, -1].clone()
            lg[[tok.pad_id, tok.bos_id, tok.unk_id, tok.eos_id]] = -float("inf")
            ids.append(int(lg.argmax()))
    assert greedy[0] == tok.decode(ids)
    assert sample(m, tok, n=1, max_len=40, top_k=1, prime="the ", seed=9) == greedy[:1]


def test_same_seed_same_sample_and_batched_rows_differ(char_lm):
    m, tok = char_lm
    a = sample(m, tok, n=4, max_len=50, seed=11, temperature=1.5)
    b = sample(m, tok, n=4, max_len=50, seed=11, temperature=1.5)
    c = sample(m, tok, n=4, max_len=50, seed=12, temperature=1.5)
    assert a == b and a != c and len(set(a)) > 1


def test_prime_is_kept_and_eos_stops(char_lm):
    m, tok = char_lm
    out = sample(m, tok, n=3, max_len=30, prime="the d", seed=1)
    assert all(o.startswith("the d") and len(o) <= 35 for o in out)


def test_filter_logits_top_p_keeps_the_crossing_token():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(filter_logits(logits, top_p=0.7))
    assert kept.tolist() == [[True, True, False, False]]
    kept = torch.isfinite(filter_logits(logits, top_k=3))
    assert kept.tolist() == [[True, True, True, False]]


class OnlyVowelsThenStop:
    """A test constraint per the contract: only 'a'/'e' may follow; <eos> once 3 tokens are out."""

    def __init__(self, tok):
        self.tok = tok

    def start(self, batch_size):
        self.n = [0] * batch_size
        self.started = True
        self.prime_seen = []

    def allowed_mask(self):
        v = self.tok.vocab_size
        mask = torch.zeros(len(self.n), v, dtype=torch.bool)
        for i, n in enumerate(self.n):
            mask[i, self.tok.stoi["a"]] = mask[i, self.tok.stoi["e"]] = True
            mask[i, self.tok.eos_id] = n >= 3
        return mask

    def advance(self, token_ids):
        self.prime_seen.append(token_ids)
        for i, t in enumerate(token_ids):
            self.n[i] += 1

    def closing(self):
        return ["|closed"] * len(self.n)


def test_sampler_applies_constraint_and_closing(char_lm):
    m, tok = char_lm
    con = OnlyVowelsThenStop(tok)
    out = sample(m, tok, n=5, max_len=6, prime="t", seed=3, constraint=con, temperature=2.0)
    assert con.prime_seen[0] == [tok.stoi["t"]] * 5  # prime fed through advance
    for o in out:
        body = o[1:]
        if body.endswith("|closed"):
            body = body[: -len("|closed")]
            assert len(body) == 6
        else:
            assert len(body) >= 2  # eos allowed only after 3 tokens counted (prime included)
        assert set(body) <= {"a", "e"}


def test_loaded_model_score_matches_stepwise_logprobs(char_lm):
    m, tok = char_lm
    lm = LoadedModel(m, tok, add_eos=True, chunk=3)
    text = "the cat sat"
    s = lm.score(text)
    ids = tok.encode(text, bos=True, eos=True)
    total, st = 0.0, None
    with torch.no_grad():
        for a, b in zip(ids[:-1], ids[1:]):
            lg, st = m.step(torch.tensor([a]), None, st)
            total += float(torch.log_softmax(lg, -1)[0, b])
    assert s.n_chars == len(text) + 1
    assert s.logprob_nats == pytest.approx(total, abs=1e-4)
    assert s.bits_per_char == pytest.approx(-total / (len(text) + 1) / math.log(2), rel=1e-5)


# ----------------------------------------------------------------------------- numpy RNN

def test_numpy_rnn_gradient_check():
    m = NumpyRNN(7, 5, seed=1, init_scale=0.5)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 7, (3, 6)), rng.integers(0, 7, (3, 6))
    h = rng.standard_normal((3, 5)) * 0.3
    assert numerical_gradient_check(m, x, y, h, n_checks=8) < 1e-6
    assert numerical_gradient_check(m, x[0], y[0], h[0], n_checks=8) < 1e-6


def test_numpy_rnn_equals_torch_rnn_on_same_weights():
    m = NumpyRNN(9, 6, seed=2, init_scale=0.4)
    ids = np.array([1, 4, 2, 8, 0, 3, 3])
    h0 = np.linspace(-0.5, 0.5, 6)
    state, rows = torch.from_numpy(h0)[None], []
    for i in ids:  # the step protocol, one id at a time
        logits, state = m.step(torch.tensor([i]), None, state)
        rows.append(logits[0].numpy())
    lp, h_last = np.stack(rows), state[0].numpy()
    rnn, head = m.to_torch()
    with torch.no_grad():
        out, hn = rnn(torch.nn.functional.one_hot(torch.from_numpy(ids), 9).double()[None],
                      torch.from_numpy(h0)[None, None])
        lt = torch.log_softmax(head(out), -1)[0].numpy()
    np.testing.assert_allclose(lp, lt, atol=1e-12)
    np.testing.assert_allclose(h_last, hn[0, 0].numpy(), atol=1e-12)
    # the training loss of one chunk equals the summed -log p of the same forward pass
    loss, _, _ = m.loss_and_grads(ids[:-1], ids[1:], h0)
    assert loss == pytest.approx(-lp[np.arange(6), ids[1:]].sum(), rel=1e-12)


def test_numpy_rnn_learns_and_scores():
    tok = CharTokenizer().fit(TEXT)
    m = NumpyRNN(tok.vocab_size, hidden=32, seed=0)
    lm = LoadedModel(m, tok)
    before = lm.score(TEXT).nats_per_char
    m.fit(tok.encode(TEXT), steps=300, seq_length=16, batch_size=2, lr=0.1)
    after = lm.score(TEXT).nats_per_char
    assert after < before - 1.0
    s = lm.sample(2, 20, seed=1, prime="the")
    assert len(s) == 2 and all(x.startswith("the") and len(x) == 23 for x in s)
    assert s == lm.sample(2, 20, seed=1, prime="the") and s != lm.sample(2, 20, seed=2, prime="the")


# ----------------------------------------------------------------------------- n-gram

def ngram(order: int, unit: str = "char", smoothing: str = "kn") -> LoadedModel:
    tok = make_tokenizer(unit).fit(TEXT)
    return LoadedModel(NGramLM(tok, NGramConfig(order, unit, smoothing)).fit(TEXT), tok)


def reference_prob(lm: NGramLM, w: int, context: tuple) -> float:
    """p(w | context) by the textbook recursion, one symbol at a time (the vectorised `distribution` must
    agree with it)."""
    n, cfg = lm.order, lm.config
    if not lm.predictable[w]:
        return 0.0
    if cfg.smoothing == "addk":
        ctx = context[len(context) - (n - 1):] if n > 1 else ()
        nxt = lm.counts[n - 1].get(ctx) or {}
        return (nxt.get(w, 0) + cfg.k) / (sum(nxt.values()) + cfg.k * lm.n_predictable)
    p = 1.0 / lm.n_predictable
    for m in range(n):
        ctx = context[len(context) - m:] if m else ()
        nxt = lm.counts[m].get(ctx)
        if nxt:
            d = lm.discount[m]
            p = (max(nxt.get(w, 0) - d, 0.0) + d * len(nxt) * p) / sum(nxt.values())
    return p


@pytest.mark.parametrize("smoothing", ["kn", "addk"])
@pytest.mark.parametrize("unit", ["char", "word"])
def test_ngram_distribution_sums_to_one_and_score_is_consistent(smoothing, unit):
    lm = ngram(3, unit, smoothing)
    model, tok = lm.model, lm.tokenizer
    for ctx_text in ["the c", "on the ", "zz"]:
        ctx = tuple(([tok.bos_id] * 2 + tok.encode(ctx_text))[-2:])
        p = model.distribution(ctx)
        assert p.sum() == pytest.approx(1.0, abs=1e-9)
        assert all(p[w] == pytest.approx(reference_prob(model, w, ctx), rel=1e-9) for w in range(len(p)))
    text = "the cat sat on the log."
    s = lm.score(text)
    ids = [tok.bos_id] * 2 + tok.encode(text)  # the text's log-probability, symbol by symbol
    expected = sum(math.log(reference_prob(model, ids[i], tuple(ids[i - 2:i]))) for i in range(2, len(ids)))
    assert isinstance(s, Score) and s.n_chars == len(text) and s.logprob_nats == pytest.approx(expected, rel=1e-9)


def test_ngram_viability_and_order():
    real, scrambled = "the dog sat on the mat.", "mat the on sat dog the."
    for unit in ("char", "word"):
        lm = ngram(3, unit)
        assert lm.score(real).probability > lm.score(scrambled).probability
    low = ngram(1).score(TEXT).nats_per_char
    high = ngram(4).score(TEXT).nats_per_char
    assert high < low
    out = ngram(4).sample(2, 30, seed=0, prime="the ")
    assert out == ngram(4).sample(2, 30, seed=0, prime="the ")
    assert all(o.startswith("the ") and len(o) == 34 for o in out)
    words = ngram(2, "word").sample(1, 5, seed=0, prime="the cat")[0]
    assert words.startswith("the cat ") and len(WordTokenizer().tokenize(words)) == 7


# ----------------------------------------------------------------------------- the step protocol

def _kinds() -> dict[str, LoadedModel]:
    tok = CharTokenizer().fit(TEXT)
    torch_lm = RecurrentLM(ModelConfig(cell="lstm", layers=2, hidden=8, embedding=4, dropout=0.0,
                                       vocab_size=tok.vocab_size)).eval()
    gru = RecurrentLM(ModelConfig(cell="gru", layers=1, hidden=8, embedding=4, dropout=0.0, topic_dim=3,
                                  vocab_size=tok.vocab_size)).eval()
    return {"lstm": LoadedModel(torch_lm, tok), "gru": LoadedModel(gru, tok), "ngram": ngram(3),
            "numpy-rnn": LoadedModel(NumpyRNN(tok.vocab_size, 8, seed=0), tok)}


@pytest.mark.parametrize("kind", ["lstm", "gru", "ngram", "numpy-rnn"])
def test_every_kind_implements_the_step_protocol(kind):
    lm = _kinds()[kind]
    model = lm.model
    assert isinstance(model, SequenceModel) and model.kind == kind
    assert model.vocab_size == lm.tokenizer.vocab_size and model.device == torch.device("cpu")
    theta = torch.full((2, 3), 1 / 3) if model.topic_dim else None
    ids = torch.tensor([lm.tokenizer.bos_id] * 2)
    logits, state = model.step(ids, theta, None)
    assert logits.shape == (2, model.vocab_size)
    again, _ = model.step(ids, theta, model.initial_state(2, theta))  # None = the start of a sequence
    torch.testing.assert_close(again, logits)
    assert torch.exp(torch.log_softmax(logits, -1)).sum(-1).allclose(torch.ones(2, dtype=logits.dtype))
    layers = model.state_layers(state)
    expected = {"lstm": {"h0", "c0", "h1", "c1"}, "gru": {"h0"}, "ngram": set(), "numpy-rnn": {"h0"}}[kind]
    assert set(layers) == expected and all(v.shape[0] == 2 for v in layers.values())
    # the one sampler and the one scoring path serve every kind
    th = np.full(3, 1 / 3, dtype=np.float32) if model.topic_dim else None
    out = lm.sample(3, 12, seed=1, theta=th)
    assert len(out) == 3 and out == lm.sample(3, 12, seed=1, theta=th)
    s = lm.score("the cat", theta=th)
    assert s.n_chars == 7 and s.logprob_nats < 0
