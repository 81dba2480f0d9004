"""Looking inside a recurrent language model (issue 18): record every layer's state along a text, rank neurons
by how well they track a feature of the text, and describe what one neuron tracks.

Recording goes through the model interface only: `model.step(ids, theta, state)` one token at a time and
`state_layers(state)` for the named per-step vectors ("h0", "c0", "h1", ... for an LSTM), so any model of
the interface can be looked at without a forward pass written for the viewer. Row i of a recording is the
state after reading token i, next to the model's top-k guesses for token i + 1 (as in Karpathy, Johnson and
Fei-Fei, "Visualizing and understanding recurrent networks", 2015).
A neuron is named LAYER:INDEX ("c1:37" = unit 37 of layer 1's cell state).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from .neuron_features import Feature, features_for, get_feature


# ------------------------------------------------------------------------------------------- recording
@dataclass
class Recording:
    """Every layer's state after each token of a text, and the model's top-k next tokens there."""

    text: str
    spans: np.ndarray  # int [N, 2]: characters of token i in `text`
    token_ids: np.ndarray  # int [N]
    layers: dict[str, np.ndarray]  # name -> float32 [N, H]
    top_ids: np.ndarray  # int [N, k]: most probable next tokens after token i
    top_probs: np.ndarray  # float32 [N, k]
    vocabulary: list[str]  # token strings of the ids
    segments: list[tuple[int, int]] = field(default_factory=list)  # token ranges run from a fresh state
    tokenizer_kind: str = "char"
    _cache: dict = field(default_factory=dict, repr=False)  # feature values and the unit matrix, computed once

    def __len__(self) -> int:
        return len(self.token_ids)

    def units(self) -> list[str]:
        return [f"{name}:{i}" for name, a in self.layers.items() for i in range(a.shape[1])]

    def matrix(self) -> np.ndarray:
        """[N, D]: every unit of every layer, in the order of `units()`."""
        if "matrix" not in self._cache:
            self._cache["matrix"] = np.concatenate(list(self.layers.values()), axis=1)
        return self._cache["matrix"]

    def activation(self, unit: str) -> np.ndarray:
        layer, index = parse_unit(unit, self)
        return self.layers[layer][:, index]

    def display_values(self, unit: str) -> np.ndarray:
        """The values pages colour, in [-1, 1]: h as it is (tanh-bounded), an LSTM cell state through tanh
        (as the lecture shows c), anything else clipped."""
        layer, _ = parse_unit(unit, self)
        a = self.activation(unit).astype(np.float64)
        return np.tanh(a) if layer.startswith("c") else np.clip(a, -1.0, 1.0)

    def feature(self, name: str) -> np.ndarray:
        """The feature's value at each token's last character, [N]."""
        key = ("feature", name)
        if key not in self._cache:
            values = get_feature(name).detect(self.text)
            self._cache[key] = values[self.spans[:, 1] - 1] if len(self) else np.zeros(0)
        return self._cache[key]

    def token_text(self, i: int) -> str:
        """The characters of token i in the text."""
        start, end = self.spans[i]
        return self.text[start:end]

    def features(self) -> list[str]:
        """The features that suit this text (neuron_features.features_for)."""
        if "features" not in self._cache:
            self._cache["features"] = features_for(self.text, self.tokenizer_kind)
        return self._cache["features"]


def parse_unit(unit: str, recording: Recording | None = None) -> tuple[str, int]:
    """'c1:37' -> ('c1', 37), checked against the recording's layers when one is given."""
    m = re.fullmatch(r"\s*([A-Za-z_]+\d*):(\d+)\s*", unit)
    if not m:
        raise ValueError(f"neuron {unit!r}: write LAYER:INDEX, e.g. h0:12 or c1:37")
    layer, index = m.group(1), int(m.group(2))
    if recording is not None:
        if layer not in recording.layers:
            raise ValueError(f"neuron {unit!r}: the model has layers {', '.join(recording.layers)}")
        size = recording.layers[layer].shape[1]
        if index >= size:
            raise ValueError(f"neuron {unit!r}: layer {layer} has units 0..{size - 1}")
    return layer, index


@torch.no_grad()
def record(model, tokenizer, segments: list[tuple[int, str]], *, text: str, theta=None, top_k: int = 5,
           progress: bool = False) -> Recording:
    """Step `model` through each segment (offset into `text`, segment text) from a fresh state and <bos>.

    A long text is one segment; a file of equations for an equation model has one segment per equation
    (the model was trained on `<bos> equation <eos>` records). `theta`: [K] or None.
    """
    device = model.device
    if hasattr(model, "eval"):
        model.eval()
    theta_t = None if theta is None else torch.as_tensor(np.asarray(theta, np.float32), device=device).view(1, -1)
    spans, ids, seg_ranges = [], [], []
    for offset, seg in segments:
        seg_spans = tokenizer.spans(seg)
        seg_ids = tokenizer.encode(seg)
        if len(seg_spans) != len(seg_ids):
            raise RuntimeError("tokenizer spans and tokens disagree")  # a tokenizer bug, not bad input
        seg_ranges.append((len(ids), len(ids) + len(seg_ids)))
        spans += [(offset + s, offset + e) for s, e in seg_spans]
        ids += seg_ids
    if not ids:
        raise ValueError("the text holds no tokens to record")
    layers: dict[str, list[torch.Tensor]] = {}
    top_ids, top_probs = [], []
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)  # one token a step: more threads only spin (and slow a shared machine down)
    try:
        with tqdm(total=len(ids), desc="recording states", unit="tok", disable=not progress, leave=False) as bar:
            for start, end in seg_ranges:
                _, state = model.step(torch.tensor([tokenizer.bos_id], device=device), theta_t, None)
                for tid in ids[start:end]:
                    logits, state = model.step(torch.tensor([tid], device=device), theta_t, state)
                    for name, vec in model.state_layers(state).items():
                        layers.setdefault(name, []).append(vec[0].float().cpu())
                    probs, top = torch.softmax(logits[0].float(), -1).topk(top_k)
                    top_ids.append(top.cpu())
                    top_probs.append(probs.cpu())
                bar.update(end - start)
    finally:
        torch.set_num_threads(threads)
    return Recording(
        text=text, spans=np.asarray(spans, dtype=np.int64), token_ids=np.asarray(ids, dtype=np.int64),
        layers={name: torch.stack(v).numpy() for name, v in layers.items()},
        top_ids=torch.stack(top_ids).numpy(), top_probs=torch.stack(top_probs).numpy(),
        vocabulary=list(tokenizer.tokens), segments=seg_ranges, tokenizer_kind=tokenizer.kind)


def text_segments(text: str, records: bool) -> list[tuple[int, str]]:
    """The whole text as one segment, or (records) each non-empty line as its own segment."""
    if not records:
        return [(0, text)]
    out, offset = [], 0
    for line in text.split("\n"):
        if line.strip():
            out.append((offset, line))
        offset += len(line) + 1
    return out


# --------------------------------------------------------------------------------------------- ranking
def correlations(matrix: np.ndarray, feature: np.ndarray) -> np.ndarray:
    """Pearson r of every column of `matrix` [N, D] with `feature` [N]; 0 for a constant column."""
    a = matrix.astype(np.float64) - matrix.mean(axis=0)
    f = feature.astype(np.float64) - feature.mean()
    denom = np.sqrt((a * a).sum(axis=0) * (f * f).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * f[:, None]).sum(axis=0) / denom
    return np.nan_to_num(r, nan=0.0)


@dataclass(frozen=True)
class NeuronScore:
    unit: str
    r: float  # Pearson correlation of the unit with the feature over all recorded tokens


class FeatureAbsent(ValueError):
    """The feature never changes along the text, so no neuron can be said to track it."""


def rank_neurons(recording: Recording, feature: str, top: int = 10) -> list[NeuronScore]:
    """The `top` units by |r| with the feature, best first."""
    values = recording.feature(feature)
    if len(values) < 2 or np.ptp(values) == 0:
        raise FeatureAbsent(f"the feature {feature!r} ({get_feature(feature).description}) never changes along "
                            "this text: pick a text where it occurs, or another feature")
    r = correlations(recording.matrix(), values)
    units = recording.units()
    order = np.argsort(-np.abs(r), kind="stable")[:top]
    return [NeuronScore(units[i], float(r[i])) for i in order]


def best_per_feature(recording: Recording, features=None) -> dict[str, NeuronScore | None]:
    """Each feature's best neuron (None where the feature does not occur in the text)."""
    out = {}
    for name in features or recording.features():
        try:
            out[name] = rank_neurons(recording, name, top=1)[0]
        except FeatureAbsent:
            out[name] = None
    return out


# ------------------------------------------------------------------------------------------ description
@dataclass(frozen=True)
class Span:
    start: int  # first token
    end: int  # one past the last token
    sign: int  # +1: the unit is above its usual value here, -1: below
    strength: float  # summed distance from the usual value (display scale)
    text: str


@dataclass
class NeuronDescription:
    unit: str
    features: list[tuple[Feature, float]]  # features present in the text, by |r|
    spans: list[Span]  # the strongest runs of unusual activation
    summary: str  # one sentence


def describe_neuron(recording: Recording, unit: str, *, n_spans: int = 5, quantile: float = 0.9) -> NeuronDescription:
    """What one neuron tracks: its correlation with every feature present in the text, and the text spans
    where it departs most from its usual (median) value."""
    parse_unit(unit, recording)
    activation = recording.activation(unit)
    scored = []
    for feature in map(get_feature, recording.features()):
        values = recording.feature(feature.name)
        if len(values) > 1 and np.ptp(values) > 0:
            scored.append((feature, float(correlations(activation[:, None], values)[0])))
    scored.sort(key=lambda fr: -abs(fr[1]))

    shown = recording.display_values(unit)
    deviation = shown - np.median(shown)
    threshold = max(float(np.quantile(np.abs(deviation), quantile)), 0.1)
    strong = np.abs(deviation) >= threshold
    spans = []
    i = 0
    while i < len(shown):
        if not strong[i]:
            i += 1
            continue
        sign = 1 if deviation[i] > 0 else -1
        j = i
        while j < len(shown) and strong[j] and (deviation[j] > 0) == (sign > 0):
            j += 1
        chars = recording.text[recording.spans[i, 0]:recording.spans[j - 1, 1]]
        spans.append(Span(i, j, sign, float(np.abs(deviation[i:j]).sum()), chars))
        i = j
    spans.sort(key=lambda s: -s.strength)
    return NeuronDescription(unit, scored, spans[:n_spans], _summary(unit, scored, spans[:n_spans]))


def _summary(unit: str, scored: list[tuple[Feature, float]], spans: list[Span]) -> str:
    if scored and abs(scored[0][1]) >= 0.3:
        feature, r = scored[0]
        direction = "rises" if r > 0 else "falls"
        lead = f"{unit} tracks “{feature.description}” (r = {r:+.2f}: it {direction} with it)"
        if len(scored) > 1 and abs(scored[1][1]) >= 0.3:
            lead += f", and “{scored[1][0].description}” (r = {scored[1][1]:+.2f})"
    elif scored:
        lead = (f"{unit} tracks none of the features well (best: “{scored[0][0].description}”, "
                f"r = {scored[0][1]:+.2f})")
    else:
        lead = f"{unit}: none of the features occurs in this text"
    if spans:
        examples = ", ".join(f"‘{_snippet(s.text)}’" for s in spans[:3])
        lead += f"; it departs most from its usual value on {examples}"
    return lead + "."


def _snippet(text: str, limit: int = 40) -> str:
    text = text.replace("\n", "↵")
    return text if len(text) <= limit else text[: limit - 1] + "…"
