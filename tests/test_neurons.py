"""Neuron viewer and search (issue 18): feature detectors, recording through the model's steps, the search on
a small LSTM trained here on text with a planted quote state, and the pages in real headless Chromium."""
from __future__ import annotations

import html
import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from test_quiz import _launch  # the real /usr/bin/chromium, launched as the quiz tests launch it
from topicrnn.checkpoint import load_model, save_checkpoint
from topicrnn.models import ModelConfig, RecurrentLM
from topicrnn.neuron_features import (brace_depth, c_comment, features_for, frac, if_block, if_condition,
                                      inline_math, left_right, line_position, quotes, subscript, wikilink)
from topicrnn.neuron_pages import COOL, HOT, NEGATIVE, colour
from topicrnn.neurons import (FeatureAbsent, correlations, describe_neuron, parse_unit, rank_neurons, record,
                              text_segments)
from topicrnn.tokenizers import CharTokenizer, LatexTokenizer
from topicrnn.train import TrainConfig, train
from topiceq.cli import main
from topiceq.commands.neurons import excerpt


def on(text: str, values) -> str:
    """The characters where a detector is on, as a string (readable assertions)."""
    return "".join(ch for ch, v in zip(text, values) if v > 0)


# --------------------------------------------------------------------------------------- detectors
def test_quotes_are_on_from_the_opening_quote_to_before_the_closing_one():
    assert list(quotes('a "bc" d')) == [0, 0, 1, 1, 1, 0, 0, 0]
    assert on("x “ab” y “c”", quotes("x “ab” y “c”")) == "“ab“c"
    assert on(r'"a\"b" c', quotes(r'"a\"b" c')) == r'"a\"b'  # an escaped quote does not close
    assert on("c = '\"'; \"s\"", quotes("c = '\"'; \"s\"")) == '"s'  # the C literal '"' opens nothing


def test_counting_and_bracket_detectors():
    assert list(brace_depth("a{b{c}}d")) == [0, 1, 1, 2, 2, 1, 0, 0]
    assert not brace_depth(r"\{x\}").any()
    assert list(inline_math("a $x$ b")) == [0, 0, 1, 1, 0, 0, 0]
    assert list(inline_math("$$x$$.")) == [1, 1, 1, 1, 0, 0]
    assert list(line_position("ab\ncd")) == [1, 2, 0, 1, 2]
    assert on("see [[Paris]] now", wikilink("see [[Paris]] now")) == "[[Paris]"


def test_c_detectors_skip_comments_and_strings():
    code = 'x = 1; /* if (a) { */ if (n > 0) {\n\tf("if (x)");\n} y; if (b)\n\tz();\nw;'
    assert on(code, if_block(code)) == '(n > 0) {\n\tf("if (x)");\n(b)\n\tz()'
    assert on(code, if_condition(code)) == "(n > 0(b"
    assert on(code, c_comment(code)) == "/* if (a) { *"
    nested = "if (a) { if (b) { c; } d; } e;"
    assert on(nested, if_block(nested)) == "(a) { if (b) { c; } d; "


def test_latex_detectors():
    eq = r"\frac{a_{1}}{b} + x_i^2 \left( y \right) z"
    assert on(eq, frac(eq)) == "c{a_{1}}{b"
    assert on(eq, subscript(eq)) == "_{1_"
    assert on(eq, left_right(eq)) == "( y \\right"
    assert on(r"\frac12 x", frac(r"\frac12 x")) == "c1"  # one-token arguments
    nested = r"\left[ \left( a \right) b \right]"
    assert on(nested, left_right(nested)) == nested[5:-1]


def test_features_suit_the_text():
    c_code = "int f(int x)\n{\n\tif (x > 0) {\n\t\treturn x;\n\t}\n\treturn -x;\n}\n" * 3
    prose = "“Well, Prince, so Genoa and Lucca are now just family estates,” she said; he smiled.\n" * 3
    assert "if_block" in features_for(c_code) and "subscript" not in features_for(c_code)
    assert "if_block" not in features_for(prose) and "quotes" in features_for(prose)
    assert "frac" in features_for("x", tokenizer_kind="latex")


def test_tokenizer_spans_cover_each_token():
    text = r"\alpha  x_{1} \\ \begin{pmatrix}a\end{pmatrix}"
    tok = LatexTokenizer()
    spans = tok.spans(text)
    assert len(spans) == len(tok.tokenize(text))
    assert [text[s:e] for s, e in spans][:4] == ["\\alpha  ", "x", "_", "{"]
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # every character belongs to one token
    assert CharTokenizer().spans("ab") == [(0, 1), (1, 2)]


# ------------------------------------------------------------------------------------------ ranking
def test_correlations_and_ranking_find_a_planted_column():
    rng = np.random.default_rng(0)
    feature = (rng.random(500) < 0.3).astype(float)
    acts = rng.normal(size=(500, 40))
    acts[:, 17] = -2.0 * feature + 0.3 * rng.normal(size=500)
    acts[:, 3] = 1.0  # a dead unit: r = 0, not nan
    r = correlations(acts, feature)
    assert np.allclose(r[[0, 17, 39]], [np.corrcoef(acts[:, i], feature)[0, 1] for i in (0, 17, 39)])
    assert r[3] == 0.0
    assert int(np.argmax(np.abs(r))) == 17 and r[17] < -0.9


def test_excerpts_of_equation_files_keep_whole_lines():
    text = "ab\ncd\nef"
    assert excerpt(text, 1, 5, records=True) == "cd"  # "b\ncd\n" without the cut first line
    assert excerpt(text, 1, 5, records=False) == "b\ncd\n"
    assert excerpt(text, 0, 0, records=True) == text
    assert text_segments("x\n\ny z\n", records=True) == [(0, "x"), (3, "y z")]


def test_parse_unit_errors_are_clear():
    assert parse_unit("c1:37") == ("c1", 37)
    with pytest.raises(ValueError, match="LAYER:INDEX"):
        parse_unit("c1-37")


# ------------------------------------------------------------------- recording through the steps
def _tiny_model(tok, topic_dim=0, hidden=6, layers=2, cell="lstm", seed=0):
    torch.manual_seed(seed)
    return RecurrentLM(ModelConfig(cell=cell, layers=layers, hidden=hidden, embedding=4, dropout=0.0,
                                   topic_dim=topic_dim, vocab_size=tok.vocab_size)).eval()


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_recording_row_i_is_the_state_after_token_i(cell, one_torch_thread):
    """The per-step recording matches one forward pass over <bos> + text: the top-5 after token i are the
    model's guesses for token i + 1, and the last recorded state is the state forward() returns."""
    text = "abcab cba\nbca"
    tok = CharTokenizer().fit(text)
    model = _tiny_model(tok, cell=cell)
    rec = record(model, tok, text_segments(text, False), text=text)
    assert len(rec) == len(text) and list(rec.layers) == (["h0", "c0", "h1", "c1"] if cell == "lstm" else ["h0", "h1"])
    ids = torch.tensor([tok.encode(text, bos=True)])
    with torch.no_grad():
        logits, state = model(ids)
    probs = torch.softmax(logits[0, 1:], -1)
    assert np.allclose(rec.top_probs, probs.topk(5).values.numpy(), atol=1e-5)
    h = state[0] if cell == "lstm" else state
    assert np.allclose(rec.layers["h1"][-1], h[1, 0].numpy(), atol=1e-5)
    if cell == "lstm":
        assert np.allclose(rec.layers["c0"][-1], state[1][0, 0].numpy(), atol=1e-5)


def test_equation_records_restart_from_bos_and_keep_token_characters(one_torch_thread):
    lines = [r"\frac{a}{b} = x_{1}", r"\alpha  + \beta"]
    text = "\n".join(lines)
    tok = LatexTokenizer().fit(text)
    model = _tiny_model(tok, topic_dim=3)
    theta = np.full(3, 1 / 3, dtype=np.float32)
    rec = record(model, tok, text_segments(text, records=True), text=text, theta=theta)
    first_line = len(tok.tokenize(lines[0]))
    alone = record(model, tok, text_segments(lines[1], records=True), text=lines[1], theta=theta)
    assert np.allclose(rec.layers["c1"][first_line:], alone.layers["c1"], atol=1e-6)  # fresh state per line
    assert [rec.token_text(i) for i in range(first_line, len(rec))][:2] == ["\\alpha  ", "+"]
    # \frac { a } { b } are inside the fraction; after its last } the rest of the line is not
    assert rec.feature("frac")[:first_line].tolist() == [1] * 6 + [0] * (first_line - 6)


# ------------------------------------------------------------------ a model with a planted quote state
def quote_text(n: int, seed: int) -> str:
    """Inside quotes only `a`/`b`; outside also `c`, `d` and spaces. What follows a `"` or a run of a/b
    depends on whether a quote is open, so a model that predicts well must carry that in its state."""
    rng = random.Random(seed)
    out, inside = [], False
    while len(out) < n:
        if inside:
            ch = '"' if rng.random() < 0.12 else rng.choice("ab")
        else:
            r = rng.random()
            ch = '"' if r < 0.06 else (" " if r < 0.3 else rng.choice("abcd"))
        inside ^= ch == '"'
        out.append(ch)
    return "".join(out)


@pytest.fixture(scope="module")
def quote_model(tmp_path_factory):
    """A 1 x 16 LSTM trained (300 steps, seconds on one thread) on quote_text."""
    root = tmp_path_factory.mktemp("quote-model")
    (root / "train.txt").write_text(quote_text(60000, seed=0))
    (root / "held-out.txt").write_text(quote_text(3000, seed=1))
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(ModelConfig(cell="lstm", layers=1, hidden=16, embedding=8, dropout=0.0),
              TrainConfig(batch_size=16, seq_len=64, max_steps=300, lr=1e-2, warmup_steps=10, eval_every=300,
                          eval_batch_size=8, eval_seq_len=256, threads=1, seed=0),
              root / "ckpt", data_path=root / "train.txt", device="cpu", progress=False)
    finally:
        torch.set_num_threads(old)
    return root


def test_search_finds_the_planted_quote_state(quote_model, one_torch_thread):
    lm = load_model(quote_model / "ckpt")
    model, tok = lm.model, lm.tokenizer
    text = (quote_model / "held-out.txt").read_text()
    rec = record(model, tok, text_segments(text, False), text=text)
    best = rank_neurons(rec, "quotes", top=3)
    assert abs(best[0].r) > 0.9, best
    # Control: the same network untrained. Its units see the characters (a/b only inside), not the state.
    torch.manual_seed(0)
    untrained = record(RecurrentLM(model.config).eval(), tok, text_segments(text, False), text=text)
    assert abs(best[0].r) > abs(rank_neurons(untrained, "quotes", top=1)[0].r) + 0.2
    # The reverse direction names the feature, and the best neuron really separates inside from outside.
    d = describe_neuron(rec, best[0].unit)
    assert d.features[0][0].name == "quotes" and "inside quotes" in d.summary
    with pytest.raises(FeatureAbsent, match="never changes"):
        rank_neurons(rec, "wikilink")


# ------------------------------------------------------------------------------- command and pages
def _neurons(*args) -> int:
    return main(["neurons", *map(str, args), "--no-progress"])


def test_command_errors_are_one_line(quote_model, tmp_path, capsys):
    ckpt, text = quote_model / "ckpt", quote_model / "held-out.txt"
    cases = [
        (["--neuron", "h0:99"], "layer h0 has units 0..15"),
        (["--neuron", "z3:1"], "the model has layers h0, c0"),
        (["--find", "colour"], "unknown feature"),
        (["--find", "wikilink"], "never changes along this text"),
        (["--neuron", "h0:1", "--words", "star"], "takes no topic vector"),
    ]
    for extra, message in cases:
        rc = _neurons("--checkpoint", ckpt, "--text", text, "--out", tmp_path / "p.html", "--chars", 300, *extra)
        err = capsys.readouterr().err
        assert rc == 1 and message in err and len(err.strip().splitlines()) == 1, (extra, err)
    assert _neurons("--checkpoint", ckpt, "--text", tmp_path / "missing.txt", "--neuron", "h0:1",
                    "--out", tmp_path / "p.html") == 1
    assert not (tmp_path / "p.html").exists()


def test_command_on_an_equation_model_reads_test_records(tmp_path, capsys):
    """An equation checkpoint (LaTeX tokens, θ of 3 topics, records): a .jsonl of ingest records, its test
    split only, one equation a line, each LaTeX token one coloured column."""
    records = [{"id": f"p{i}#0", "split": split, "equation": eq} for i, (split, eq) in enumerate([
        ("train", r"y = \sqrt{2}"), ("test", r"\frac{a}{b} = x_{1}"), ("test", r"\left( \alpha + \beta \right)^{2}")])]
    data = tmp_path / "equations.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    tok = LatexTokenizer().fit([r["equation"] for r in records])
    model = _tiny_model(tok, topic_dim=3)
    save_checkpoint(tmp_path / "eq" / "best.pt", {
        "model_config": model.config.to_dict(), "train_config": {"data_kind": "records", "tokenizer": "latex"},
        "tokenizer": tok.to_dict(), "model": model.state_dict()})
    out = tmp_path / "frac.html"
    assert _neurons("--checkpoint", tmp_path / "eq", "--text", data, "--split", "test", "--find", "frac",
                    "--topic", "1", "--theta", "onehot", "--out", out, "--json") == 0
    assert json.loads(capsys.readouterr().out)["tokens"] == sum(len(tok.tokenize(r["equation"])) for r in records[1:])
    page = out.read_text()
    assert "θ = topic 1 (onehot)" in page
    drawn = [html.unescape(t) for t in re.findall(r'<span class="t" [^>]*>(.*?)</span>', page)]
    n = len(drawn) // 3  # the text is drawn for each of the 3 best neurons
    assert "".join(drawn[:n]) == records[1]["equation"] + records[2]["equation"]  # the test split only
    assert "\\frac" in drawn and "\\left" in drawn  # one column for a whole control word
    assert len(re.findall(r'<div class="ln">', page)) == 2 * 3  # one line per equation
    assert _neurons("--checkpoint", tmp_path / "eq", "--text", data, "--find", "frac", "--words", "star",
                    "--out", out) == 1
    assert "--words needs the topic model" in capsys.readouterr().err


def _rgb_of(css: str) -> tuple[int, ...]:
    """'rgb(1, 2, 3)' or '#010203' -> (1, 2, 3)."""
    if css.startswith("#"):
        return tuple(int(css[i:i + 2], 16) for i in (1, 3, 5))
    return tuple(int(x) for x in re.findall(r"\d+", css)[:3])


def test_pages_in_chromium(quote_model, tmp_path, capsys):
    from playwright.sync_api import sync_playwright

    ckpt, text = quote_model / "ckpt", quote_model / "held-out.txt"
    assert _neurons("--checkpoint", ckpt, "--text", text, "--find", "all", "--out", tmp_path / "index.html",
                    "--show", "400", "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    best = summary["best"]["quotes"]["unit"]
    assert summary["best"]["wikilink"] is None and abs(summary["best"]["quotes"]["r"]) > 0.9
    assert (tmp_path / "index-quotes.html").is_file() and not (tmp_path / "index-wikilink.html").exists()
    assert _neurons("--checkpoint", ckpt, "--text", text, "--neuron", best, "--out", tmp_path / "neuron.html",
                    "--show", "400") == 0
    assert "inside quotes" in capsys.readouterr().out
    for page in tmp_path.glob("*.html"):
        assert not re.search(r"(src|href)=\"(https?:)?//", page.read_text())

    lm = load_model(ckpt)
    model, tok = lm.model, lm.tokenizer
    shown_text = text.read_text()[:400]
    rec = record(model, tok, text_segments(shown_text, False), text=shown_text)
    expected = rec.display_values(best)

    blocked = []
    with sync_playwright() as p:
        browser = _launch(p)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(("file:", "data:"))
                       else (blocked.append(r.request.url), r.abort()))
            page.goto((tmp_path / "index.html").as_uri())
            page.click("a[href='index-quotes.html']")  # the index links each feature's page
            assert page.url.endswith("index-quotes.html")
            page.goto((tmp_path / "neuron.html").as_uri())
            cells = page.eval_on_selector_all(
                ".k .t", "els => els.map(e => [e.textContent, e.dataset.v, getComputedStyle(e).backgroundColor])")
            assert "".join(c[0] for c in cells).replace("↵", "\n") == shown_text
            assert np.allclose([float(c[1]) for c in cells], expected, atol=2e-3)
            for _, v, bg in cells:  # the lecture's colours: |v| near 0 blue, near 1 green (v rounded on the page)
                assert np.abs(np.subtract(_rgb_of(bg), _rgb_of(colour(float(v))))).max() <= 1
            coolest = min(cells, key=lambda c: abs(float(c[1])))
            hottest = max(cells, key=lambda c: abs(float(c[1])))
            assert np.linalg.norm(np.subtract(_rgb_of(coolest[2]), COOL)) < 60
            assert np.linalg.norm(np.subtract(_rgb_of(hottest[2]), HOT)) < 60
            assert page.locator(".k b").count() == 5 * len(cells)  # top-5 guesses under every character
            assert page.locator(".k b").first.is_visible()
            page.screenshot(path=str(tmp_path / "neuron.png"))
            page.uncheck("#predictions")
            assert not page.locator(".k b").first.is_visible()
            page.check("#show-sign")
            negative = [i for i, c in enumerate(cells) if float(c[1]) < -0.8]
            if negative:
                bg = page.eval_on_selector_all(".k .t", f"els => getComputedStyle(els[{negative[0]}]).backgroundColor")
                assert np.linalg.norm(np.subtract(_rgb_of(bg), NEGATIVE)) < 60
            page.screenshot(path=str(tmp_path / "neuron-signed.png"))
        finally:
            browser.close()
    assert (tmp_path / "neuron.png").stat().st_size > 5000 and not blocked, blocked
