"""How hard is it to tell generated equations from real ones? A cross-validated real-vs-fake classifier.

Two detectors, both a logistic regression scored by cross-validation (each equation is classified by a model
that never saw it), on strings only:

* ``"char"``: TF-IDF of character n-grams (1–4 by default): spelling, spacing, short token runs;
* ``"tokens"``: counts of LaTeX-token unigrams and bigrams (`\\frac`, `{`, `x`, ...), the quiz's old figure.

The real set is matched to the fakes first (`length_matched`): for every fake, an unused real equation of the
closest length, and of the same topic when topics are given, so that neither length nor subject matter (the
test split is mostly one book) says which is which. Accuracy 0.5 means indistinguishable; lower is better
for the model.

Hold the papers out (`real_groups`: the paper of each real equation). The real side comes from a few test
papers, each with its own notation and spacing; with plain stratified folds the classifier learns "written
like one of these papers", which no model of other papers can imitate: real *training* equations of the same
topics are told from the test equations 0.77 of the time that way (docs/results.md, issue 20). With
`real_groups` the folds are grouped by paper (each fake goes with its matched real's paper), so every
equation is classified by a model that never saw its paper, and real-vs-real is back at 0.5. Example::

    from pipeline.detector import detect
    result = detect(fakes, real_test_equations, seed=0, fake_topics=topics, real_topics=real_topics,
                    real_groups=papers)
    result["char"].accuracy, result["tokens"].accuracy
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from typing import Sequence

import numpy as np
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import make_pipeline

FEATURES = ("char", "tokens")
# LaTeX tokens: control words, control symbols, then single non-space characters.
_LATEX_TOKEN = re.compile(r"\\[A-Za-z]+\*?|\\.|\S")


def latex_tokens(equation: str) -> list[str]:
    return _LATEX_TOKEN.findall(equation)


@dataclass
class DetectorConfig:
    folds: int = 5                     # stratified k-fold (fewer when a class has fewer equations)
    seed: int = 0                      # fold shuffling and length-matching ties
    char_ngrams: tuple[int, int] = (1, 4)
    token_ngrams: tuple[int, int] = (1, 2)
    c: float = 1.0                     # inverse regularisation of the logistic regression
    max_equations: int | None = 2000   # per class at most (seeded subsample): the CV cost grows with it
    repeats: int = 1                   # `detect`: matchings and fold splits with seeds seed, seed + 1, ...


@dataclass
class DetectorResult:
    features: str
    accuracy: float  # mean held-out accuracy over the folds
    std: float       # its standard deviation over the folds
    n_real: int
    n_fake: int
    folds: int
    repeats: int = 1     # `detect` with DetectorConfig.repeats: accuracy is the mean over the repeats
    spread: float = 0.0  # the standard deviation of the repeats' accuracies (another matching, other folds)
    groups: int = 0      # papers the folds held out (0: stratified folds, papers not held out)

    def to_json(self) -> dict:
        return asdict(self)


def length_matched(fakes: Sequence[str], reals: Sequence[str], seed: int = 0,
                   fake_topics: Sequence[object] | None = None,
                   real_topics: Sequence[object] | None = None) -> list[tuple[str, str]]:
    """(fake, real) pairs: each fake with an unused real equation of the closest length in characters (ties
    and the order fakes are served in come from the seed). With topics (one label per fake and per real),
    only a real of the fake's topic; fakes left without one are dropped, as are fakes beyond the reals."""
    return [(fakes[i], reals[j]) for i, j in matched_indices(fakes, reals, seed, fake_topics, real_topics)]


def matched_indices(fakes: Sequence[str], reals: Sequence[str], seed: int = 0,
                    fake_topics: Sequence[object] | None = None,
                    real_topics: Sequence[object] | None = None) -> list[tuple[int, int]]:
    """`length_matched` as (fake index, real index) pairs."""
    if fake_topics is not None or real_topics is not None:
        if fake_topics is None or real_topics is None or len(fake_topics) != len(fakes) \
                or len(real_topics) != len(reals):
            raise ValueError("give one topic per fake and one per real equation, or none")
        pairs: list[tuple[int, int]] = []
        for j, topic in enumerate(sorted(set(fake_topics), key=str)):
            fake_ids = [i for i, t in enumerate(fake_topics) if t == topic]
            real_ids = [i for i, t in enumerate(real_topics) if t == topic]
            if real_ids:
                pairs += [(fake_ids[a], real_ids[b]) for a, b in matched_indices(
                    [fakes[i] for i in fake_ids], [reals[i] for i in real_ids], seed + j)]
        return pairs
    rng = np.random.default_rng(seed)
    real_lengths = np.array([len(r) for r in reals], dtype=np.int64)
    order = np.argsort(real_lengths + rng.random(len(reals)), kind="stable")  # random ties
    sorted_lengths = real_lengths[order]
    used = np.zeros(len(reals), dtype=bool)
    pairs = []
    for i in rng.permutation(len(fakes))[:len(reals)]:
        n = len(fakes[i])
        lo = hi = int(np.searchsorted(sorted_lengths, n))
        lo -= 1
        while lo >= 0 and used[order[lo]]:  # walk outwards to the nearest unused real
            lo -= 1
        while hi < len(order) and used[order[hi]]:
            hi += 1
        below = lo >= 0 and (hi >= len(order) or n - sorted_lengths[lo] <= sorted_lengths[hi] - n)
        pick = order[lo] if below else order[hi]
        used[pick] = True
        pairs.append((int(i), int(pick)))
    return pairs


def _classifier(features: str, config: DetectorConfig):
    if features == "char":
        vectorizer = TfidfVectorizer(analyzer="char", ngram_range=config.char_ngrams, sublinear_tf=True,
                                     lowercase=False, min_df=1)
    elif features == "tokens":
        vectorizer = CountVectorizer(tokenizer=latex_tokens, token_pattern=None, lowercase=False,
                                     ngram_range=config.token_ngrams)
    else:
        raise ValueError(f"unknown detector features {features!r}: choose one of {', '.join(FEATURES)}")
    return make_pipeline(vectorizer, LogisticRegression(C=config.c, max_iter=2000))


def detector_accuracy(reals: Sequence[str], fakes: Sequence[str], features: str = "char",
                      config: DetectorConfig | None = None,
                      groups: Sequence[object] | None = None) -> DetectorResult:
    """Cross-validated accuracy of telling `fakes` from `reals` (use the sets as given: match lengths first
    with `length_matched`, or call `detect`): the share of equations classified right by a model fitted on the
    other folds. `groups` (one per equation, reals then fakes, e.g. the paper of each real and of each fake's
    matched real) holds whole groups out: stratified group k-fold. ValueError when either set has fewer than 2
    equations, or `groups` fewer than 2 groups."""
    config = config or DetectorConfig()
    rng = np.random.default_rng(config.seed)
    reals, fakes = list(reals), list(fakes)
    if groups is not None and len(groups) != len(reals) + len(fakes):
        raise ValueError(f"give one group per equation ({len(reals) + len(fakes)}), got {len(groups)}")
    real_groups = list(groups[:len(reals)]) if groups is not None else None
    fake_groups = list(groups[len(reals):]) if groups is not None else None
    if config.max_equations is not None:
        if len(reals) > config.max_equations:
            keep = sorted(rng.choice(len(reals), config.max_equations, replace=False))
            reals = [reals[i] for i in keep]
            real_groups = [real_groups[i] for i in keep] if groups is not None else None
        if len(fakes) > config.max_equations:
            keep = sorted(rng.choice(len(fakes), config.max_equations, replace=False))
            fakes = [fakes[i] for i in keep]
            fake_groups = [fake_groups[i] for i in keep] if groups is not None else None
    if min(len(reals), len(fakes)) < 2:
        raise ValueError(f"the detector needs at least 2 real and 2 generated equations, got {len(reals)} and "
                         f"{len(fakes)}: generate more equations")
    texts = reals + fakes
    labels = np.array([0] * len(reals) + [1] * len(fakes))
    folds = max(2, min(config.folds, len(reals), len(fakes)))
    if groups is None:
        n_groups = 0
        splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=config.seed).split(texts, labels)
    else:
        group_ids = np.unique(np.array([str(g) for g in real_groups + fake_groups]), return_inverse=True)[1]
        n_groups = int(group_ids.max()) + 1
        if n_groups < 2:
            raise ValueError("holding papers out needs real equations from at least 2 papers, got 1")
        folds = min(folds, n_groups)
        splits = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=config.seed).split(
            texts, labels, group_ids)
    correct = np.zeros(len(texts), dtype=bool)
    tested = np.zeros(len(texts), dtype=bool)
    scores = []
    for train, test in splits:
        if len(test) == 0 or len(set(labels[train])) < 2:  # a fold that cannot be fitted or scored
            continue
        model = _classifier(features, config).fit([texts[i] for i in train], labels[train])
        correct[test] = model.predict([texts[i] for i in test]) == labels[test]
        tested[test] = True
        scores.append(float(np.mean(correct[test])))
    if not scores:
        raise ValueError("no fold held both real and generated equations to learn from: give equations from "
                         "more papers")
    # the share of equations classified right, each once: group folds differ in size, and a mean of the folds
    # would weigh an equation of a small fold more
    return DetectorResult(features, float(np.mean(correct[tested])), float(np.std(scores)), len(reals),
                          len(fakes), len(scores), groups=n_groups)


def detect(fakes: Sequence[str], reals: Sequence[str], *, seed: int = 0, config: DetectorConfig | None = None,
           fake_topics: Sequence[object] | None = None, real_topics: Sequence[object] | None = None,
           real_groups: Sequence[object] | None = None, features: Sequence[str] = FEATURES) -> dict[str, DetectorResult]:
    """The detectors of `features` (default both) on `fakes` against matched equations drawn from `reals`
    (real test equations): of the same length, and of the same topic when topics are given (see
    `length_matched`); with `real_groups` (the paper of each real), folds that hold whole papers out. With
    `config.repeats` > 1, the matching and the folds are redrawn with seeds seed, seed + 1, ... and the
    accuracies averaged (`spread`: their standard deviation; a few hundred pairs move by ±0.01-0.02)."""
    config = config or DetectorConfig(seed=seed)
    if real_groups is not None and len(real_groups) != len(reals):
        raise ValueError(f"give one group per real equation ({len(reals)}), got {len(real_groups)}")
    runs: dict[str, list[DetectorResult]] = {name: [] for name in features}
    for repeat in range(max(1, config.repeats)):
        pairs = matched_indices(fakes, reals, seed=seed + repeat, fake_topics=fake_topics, real_topics=real_topics)
        matched_fakes, matched_reals = [fakes[i] for i, _ in pairs], [reals[j] for _, j in pairs]
        groups = None if real_groups is None else [real_groups[j] for _, j in pairs] * 2  # a fake: its real's
        repeat_config = replace(config, seed=config.seed + repeat)
        for name in features:
            runs[name].append(detector_accuracy(matched_reals, matched_fakes, name, repeat_config, groups))
    return {name: _averaged(results) for name, results in runs.items()}


def _averaged(results: list[DetectorResult]) -> DetectorResult:
    first = results[0]
    accuracies = [r.accuracy for r in results]
    return DetectorResult(first.features, float(np.mean(accuracies)), float(np.mean([r.std for r in results])),
                          first.n_real, first.n_fake, first.folds, len(results), float(np.std(accuracies)),
                          first.groups)


def telltale_features(reals: Sequence[str], fakes: Sequence[str], features: str = "tokens", n: int = 8,
                      config: DetectorConfig | None = None) -> dict[str, list[str]]:
    """The features with the largest weights towards "fake" and towards "real", fitted on all equations."""
    config = config or DetectorConfig()
    model = _classifier(features, config).fit(list(reals) + list(fakes), [0] * len(reals) + [1] * len(fakes))
    names = model[0].get_feature_names_out()
    order = np.argsort(model[-1].coef_[0])
    return {"fake": [str(names[i]) for i in order[::-1][:n]], "real": [str(names[i]) for i in order[:n]]}
