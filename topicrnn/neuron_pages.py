"""HTML pages of the neuron viewer (issue 18): self-contained, offline files (template in neuron_assets/).

Each token of the text is a column: the token's characters, coloured by one neuron's value after reading it
(the lecture's colours: near 0 "cool" blue, near ±1 "excited" green), above the model's five most probable
next tokens, shaded by probability. Hovering a column shows the exact values. Three kinds of page: one
neuron (with its automatic description), one feature (neurons ranked by correlation, the best ones
rendered), and an index linking each feature's best neuron.
"""
from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .neuron_features import FEATURES, get_feature
from .neurons import NeuronScore, Recording, best_per_feature, describe_neuron, rank_neurons

ASSETS = Path(__file__).resolve().parent / "neuron_assets"
COOL, HOT, NEGATIVE = (189, 215, 238), (65, 171, 93), (158, 154, 200)  # blue, green, purple (signed view)
SHOWN_AS = {" ": "␣", "\n": "↵", "\t": "⇥", "<eos>": "■", "<bos>": "▶", "<unk>": "�", "<pad>": "·"}


@dataclass
class PageContext:
    """What every page says about where its figures come from."""

    model: str  # e.g. "lstm 2 × 128, char tokens"
    checkpoint: str
    text_name: str
    show_from: int = 0  # first character of the text shown
    show_chars: int = 3000  # characters shown (the statistics use the whole recording)
    theta_note: str = ""


def _rgb(c) -> str:
    return f"rgb({c[0]},{c[1]},{c[2]})"


def colour(value: float) -> str:
    """The lecture's colour of a value in [-1, 1]: |value| from cool blue (0) to excited green (1)."""
    w = min(1.0, abs(float(value)))
    return "#%02x%02x%02x" % tuple(round(a + (b - a) * w) for a, b in zip(COOL, HOT))


def _shown(token: str) -> str:
    if token in SHOWN_AS:
        return SHOWN_AS[token]
    return "".join(SHOWN_AS.get(ch, ch) if ch in "\n\t" else ch for ch in token)


def _token_cell_text(chars: str) -> str:
    """A token's characters as they sit in the text: spaces kept, a newline as ↵, a tab as four spaces."""
    return chars.replace("\n", "↵").replace("\t", "    ")


def _token_tails(recording: Recording) -> list[tuple[str, str, str]]:
    """Per token, what does not depend on the neuron: (its characters as HTML, the hover text of its top-k
    guesses, the guess cells). Built once per recording: a feature page draws the same text several times."""
    if "token_tails" not in recording._cache:
        tails = []
        for i, (start, end) in enumerate(recording.spans):
            guesses = [(recording.vocabulary[t], float(p)) for t, p in zip(recording.top_ids[i], recording.top_probs[i])]
            hover = "next: " + ", ".join(f"{_shown(t)} {p:.1%}" for t, p in guesses)
            cells = "".join(f'<b class="p{min(9, int(p * 10))}">{html.escape(_shown(t))}</b>' for t, p in guesses)
            tails.append((html.escape(_token_cell_text(recording.text[start:end])), html.escape(hover), cells))
        recording._cache["token_tails"] = tails
    return recording._cache["token_tails"]


def render_text(recording: Recording, unit: str, *, show_from: int = 0, show_chars: int = 3000,
                feature: str | None = None) -> str:
    """The coloured text of one neuron: lines of token columns (token over its top-5 next tokens)."""
    values = recording.display_values(unit)
    raw = recording.activation(unit)
    # a count (brace depth, position in the line) is not underlined: "on" would mark nearly everything
    marks = recording.feature(feature) if feature and not is_count(recording, feature) else None
    cell_state = unit.startswith("c")
    tails = _token_tails(recording)
    lines: list[list[str]] = [[]]
    prev_end = None
    stop = show_from + show_chars
    for i, (start, end) in enumerate(recording.spans):
        if end <= show_from:
            continue
        if start >= stop:
            break
        if prev_end is not None and "\n" in recording.text[prev_end:start]:
            lines.append([])  # a line break the tokenizer skipped (between equations)
        prev_end = end
        v = float(values[i])
        chars, hover, cells = tails[i]
        value = f"{unit} = {raw[i]:+.3f}" + (f" (tanh {v:+.3f})" if cell_state else "")
        on = " f" if marks is not None and marks[i] > 0 else ""
        lines[-1].append(f'<span class="k{on}" title="{value}&#10;{hover}"><span class="t" data-v="{v:.3f}" '
                         f'style="background:{colour(v)}">{chars}</span>{cells}</span>')
        if "\n" in recording.text[start:end]:
            lines.append([])
    return "\n".join(f'<div class="ln">{"".join(cells)}</div>' for cells in lines if cells)


def is_count(recording: Recording, name: str) -> bool:
    """Whether the feature counts (brace depth, position in the line) rather than being on or off."""
    return not np.isin(recording.feature(name), (0.0, 1.0)).all()


def feature_extent(recording: Recording, name: str) -> str:
    """How much of the text a feature covers: the share of tokens where it is on, or a count's mean and max."""
    values = recording.feature(name)
    if is_count(recording, name):
        return f"count: mean {values.mean():.1f}, max {values.max():.0f}"
    return f"on at {values.mean():.1%} of the tokens"


def _ramp(colours) -> str:
    return ", ".join(_rgb(c) for c in colours)


def _page(title: str, body: str) -> str:
    template = (ASSETS / "neurons.html").read_text(encoding="utf-8")
    return (template.replace("@@TITLE@@", html.escape(title))
            .replace("@@RAMP_SIGNED@@", _ramp([NEGATIVE, COOL, HOT]))
            .replace("@@RAMP@@", _ramp([HOT, COOL, HOT]))
            .replace("@@COOL@@", json.dumps(list(COOL))).replace("@@HOT@@", json.dumps(list(HOT)))
            .replace("@@NEG@@", json.dumps(list(NEGATIVE)))
            .replace("@@GUESS_SHADES@@", " ".join(f".k .p{q} {{ background: rgba(222,45,38,{0.6 * (q + 0.5) / 10:.3f}); }}"
                                                  for q in range(10)))
            .replace("@@BODY@@", body))


def _meta(ctx: PageContext, recording: Recording) -> str:
    shown = f"characters {ctx.show_from:,}–{min(len(recording.text), ctx.show_from + ctx.show_chars):,} shown"
    parts = [f"model: {html.escape(ctx.model)}", f"checkpoint: {html.escape(ctx.checkpoint)}",
             f"text: {html.escape(ctx.text_name)} ({len(recording):,} tokens recorded, {shown})"]
    if ctx.theta_note:
        parts.append(html.escape(ctx.theta_note))
    return f'<p class="meta">{" · ".join(parts)}</p>'


def _controls(with_features: bool = False) -> str:
    """Legend and toggles; `with_features`: also the key of the underline that marks where a 0/1 feature is on."""
    feature_key = ('<span class="key"><span style="box-shadow: inset 0 -3px 0 #e6550d">&nbsp;x&nbsp;</span> '
                   'the feature is on</span>') if with_features else ""
    return (
        '<div class="controls">'
        '<span class="legend"><span class="key">−1</span><span class="ramp"></span><span class="key">+1</span>'
        '<span class="key">blue: cool (near 0) · green: excited (near ±1)'
        '<span class="sign-key" hidden> · purple: negative</span></span></span>'
        '<label><input type="checkbox" id="predictions" checked> top-5 next tokens under each token</label>'
        '<label><input type="checkbox" id="show-sign"> show the sign</label>'
        f"{feature_key}</div>"
        '<p class="note">Each token is coloured by the neuron\'s value after reading it (an LSTM cell state c '
        "through tanh, as the lecture shows it); under it, the model's five most probable next tokens, darker = "
        "more probable. Hover a token for the exact numbers.</p>")


def _bar(r: float) -> str:
    return f'<span class="bar{" neg" if r < 0 else ""}" style="width:{abs(r) * 120:.0f}px"></span>'


def _description_html(recording: Recording, unit: str, *, details_open: bool) -> str:
    """The one-sentence description, then (folded on feature pages) r with every feature and the spans."""
    d = describe_neuron(recording, unit)
    rows = "".join(f"<tr><td>{html.escape(f.name)}</td><td>{html.escape(f.description)}</td>"
                   f'<td class="num">{r:+.3f}</td><td>{_bar(r)}</td></tr>' for f, r in d.features)
    absent = [name for name in recording.features() if name not in {g.name for g, _ in d.features}]
    spans = "".join(f'<li>{"above" if s.sign > 0 else "below"} its usual value on '
                    f"<code>{html.escape(_token_cell_text(s.text[:120]))}</code></li>" for s in d.spans)
    return (f'<div class="summary">{html.escape(d.summary)}</div>'
            f'<details{" open" if details_open else ""}><summary>its correlation with each feature, and the '
            "spans where it departs most from its usual value</summary>"
            f'<table class="rank"><tr><th>feature</th><th>on when</th><th>r</th><th></th></tr>{rows}</table>'
            + (f'<p class="note absent">not in this text: {", ".join(absent)}</p>' if absent else "")
            + f'<ul class="spans">{spans}</ul></details>')


def neuron_page(recording: Recording, unit: str, ctx: PageContext) -> str:
    body = (f"<h1>Neuron {html.escape(unit)}</h1>{_meta(ctx, recording)}"
            f"<h2>What it tracks (automatic description)</h2>{_description_html(recording, unit, details_open=True)}"
            f"<h2>The text, coloured by {html.escape(unit)}</h2>{_controls()}"
            f'<div class="text">{render_text(recording, unit, show_from=ctx.show_from, show_chars=ctx.show_chars)}</div>')
    return _page(f"Neuron {unit} — {ctx.text_name}", body)


def _anchor(unit: str) -> str:
    return "unit-" + unit.replace(":", "-")


def feature_page(recording: Recording, feature: str, ctx: PageContext, *, rendered: int = 3,
                 ranked: int = 10) -> str:
    """Neurons ranked by correlation with `feature`, the best `rendered` ones drawn over the text."""
    f = get_feature(feature)
    ranking = rank_neurons(recording, feature, top=max(ranked, rendered))
    links = "".join(f'<td><a href="#{_anchor(s.unit)}">{html.escape(s.unit)}</a></td>' if k < rendered else
                    f"<td>{html.escape(s.unit)}</td>" for k, s in enumerate(ranking))
    values = "".join(f'<td class="num">{s.r:+.3f}</td>' for s in ranking)
    sections = []
    for s in ranking[:rendered]:
        sections.append(
            f'<h2 id="{_anchor(s.unit)}">{html.escape(s.unit)} (r = {s.r:+.3f})</h2>'
            f"{_description_html(recording, s.unit, details_open=False)}"
            f'<div class="text">{render_text(recording, s.unit, show_from=ctx.show_from, show_chars=ctx.show_chars, feature=feature)}</div>')
    body = (f"<h1>Feature: {html.escape(f.description)} <small>({html.escape(feature)})</small></h1>{_meta(ctx, recording)}"
            f"<p>The feature: {feature_extent(recording, feature)}. Neurons ranked by Pearson correlation of their "
            f"value with the feature over all {len(recording):,} recorded tokens:</p>"
            f'<table class="rank"><tr><th>neuron</th>{links}</tr><tr><th>r</th>{values}</tr></table>'
            f"{_controls(with_features=not is_count(recording, feature))}" + "".join(sections))
    return _page(f"Feature {feature} — {ctx.text_name}", body)


def index_page(recording: Recording, best: dict[str, NeuronScore | None], links: dict[str, str],
               ctx: PageContext) -> str:
    """One row per feature: its best neuron and r, linked to the feature's page."""
    rows = []
    for name, score in best.items():
        f = get_feature(name)
        if score is None:
            rows.append(f'<tr class="absent"><td>{html.escape(name)}</td><td>{html.escape(f.description)}</td>'
                        "<td>—</td><td>not in this text</td><td></td></tr>")
            continue
        link = html.escape(links[name])
        rows.append(f'<tr><td><a href="{link}">{html.escape(name)}</a></td><td>{html.escape(f.description)}</td>'
                    f'<td>{feature_extent(recording, name)}</td><td><a href="{link}#{_anchor(score.unit)}">{html.escape(score.unit)}</a>'
                    f'</td><td class="num">{score.r:+.3f} {_bar(score.r)}</td></tr>')
    skipped = [name for name in FEATURES if name not in best]
    note = (f'<p class="note">Not looked for (they do not suit this kind of text): {", ".join(skipped)}. '
            "Ask for one with --find NAME.</p>") if skipped else ""
    body = (f"<h1>Neurons of {html.escape(ctx.checkpoint)}</h1>{_meta(ctx, recording)}"
            "<p>For each feature of the text, the neuron whose value correlates best with it (Pearson r over all "
            "recorded tokens). Follow a link for the ranking and the text coloured by the best neurons.</p>"
            '<table class="rank"><tr><th>feature</th><th>on when</th><th>in this text</th><th>best neuron</th>'
            f'<th>r</th></tr>{"".join(rows)}</table>{note}')
    return _page(f"Neurons — {ctx.text_name}", body)


def write_pages(recording: Recording, out: Path, ctx: PageContext, *, neuron: str | None = None,
                find: str | None = None, rendered: int = 3) -> dict:
    """Write the page(s) asked for; returns a summary (best neuron and r per feature looked at, paths).

    `find="all"`: `out` is the index page and each present feature gets `STEM-FEATURE.html` next to it.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if neuron is not None:
        d = describe_neuron(recording, neuron)
        out.write_text(neuron_page(recording, neuron, ctx), encoding="utf-8")
        return {"pages": [str(out)], "neuron": neuron, "summary": d.summary,
                "features": {f.name: r for f, r in d.features}}
    if find != "all":
        ranking = rank_neurons(recording, find, top=10)
        out.write_text(feature_page(recording, find, ctx, rendered=rendered), encoding="utf-8")
        return {"pages": [str(out)], "best": {find: {"unit": ranking[0].unit, "r": ranking[0].r}},
                "ranking": [{"unit": s.unit, "r": s.r} for s in ranking]}
    best = best_per_feature(recording)
    links, pages = {}, []
    for name in (name for name, score in best.items() if score is not None):
        page = out.with_name(f"{out.stem}-{name}.html")
        page.write_text(feature_page(recording, name, ctx, rendered=rendered), encoding="utf-8")
        links[name] = page.name
        pages.append(str(page))
    out.write_text(index_page(recording, best, links, ctx), encoding="utf-8")
    return {"pages": [str(out)] + pages,
            "best": {k: (None if v is None else {"unit": v.unit, "r": v.r}) for k, v in best.items()}}
