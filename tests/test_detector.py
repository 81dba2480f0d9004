"""pipeline/detector.py: the real-vs-fake detector separates obviously different sets, finds nothing in two
samples of one distribution, and matches lengths before it looks."""
from __future__ import annotations

import random

import pytest

from pipeline.detector import DetectorConfig, detect, detector_accuracy, length_matched, telltale_features


def equations(rng: random.Random, n: int, style: str) -> list[str]:
    out = []
    for _ in range(n):
        a, b, c = (rng.choice("abcxyz") for _ in range(3))
        if style == "sum":
            out.append(rf"\sum_{{{a}=1}}^{{{rng.randint(2, 99)}}} {b}_{a} {c}^{{{rng.randint(1, 9)}}}")
        else:
            out.append(rf"\frac{{{a} + {b}}}{{\sqrt{{{c}}}}} = {rng.randint(0, 99)}")
    return out


def test_separates_obviously_different_sets():
    rng = random.Random(0)
    reals, fakes = equations(rng, 60, "sum"), equations(rng, 60, "frac")
    for features in ("char", "tokens"):
        result = detector_accuracy(reals, fakes, features, DetectorConfig(folds=5))
        assert result.accuracy > 0.95 and result.n_real == result.n_fake == 60 and result.folds == 5
    tells = telltale_features(reals, fakes, "tokens")
    assert "\\frac" in tells["fake"] and "\\sum" in tells["real"]


def test_chance_on_one_distribution():
    rng = random.Random(1)
    pool = equations(rng, 120, "sum") + equations(rng, 120, "frac")
    rng.shuffle(pool)
    for features in ("char", "tokens"):
        accs = [detector_accuracy(pool[:120], pool[120:], features, DetectorConfig(seed=s)).accuracy for s in range(2)]
        assert 0.35 < sum(accs) / 2 < 0.65, accs


def test_length_matching_pairs_each_fake_with_the_closest_unused_real():
    reals = ["a" * n for n in (1, 5, 10, 20, 40)]
    pairs = length_matched(["b" * 9, "b" * 11, "b" * 39], reals, seed=0)
    got = sorted((len(f), len(r)) for f, r in pairs)
    assert got == [(9, 10), (11, 5), (39, 40)] or got == [(9, 5), (11, 10), (39, 40)]
    assert len(length_matched(["b"] * 9, reals)) == 5  # never more pairs than reals
    # matched lengths: a length-only detector would be at chance
    rng = random.Random(2)
    fakes = [rf"\frac{{a}}{{{'x' * rng.randint(1, 30)}}}" for _ in range(100)]
    pool = [rf"\sum {'y' * rng.randint(1, 60)}" for _ in range(400)]
    diffs = [abs(len(f) - len(r)) for f, r in length_matched(fakes, pool, seed=3)]
    assert max(diffs) <= 2


def test_detect_runs_both_detectors_and_rejects_tiny_sets():
    rng = random.Random(3)
    out = detect(equations(rng, 40, "frac"), equations(rng, 80, "sum"), seed=0)
    assert set(out) == {"char", "tokens"} and all(r.accuracy > 0.9 and r.n_fake == 40 for r in out.values())
    with pytest.raises(ValueError, match="at least 2"):
        detector_accuracy(["x"], ["y", "z"])


def test_topic_matching_pairs_within_a_topic_and_drops_the_rest():
    fakes, fake_topics = ["aa", "bbbb", "cc", "dddddd"], [0, 0, 1, 2]
    reals, real_topics = ["xx", "yyy", "zz", "wwwww"], [0, 0, 1, 1]
    pairs = length_matched(fakes, reals, seed=0, fake_topics=fake_topics, real_topics=real_topics)
    assert sorted(pairs) == [("aa", "xx"), ("bbbb", "yyy"), ("cc", "zz")]  # topic 2 has no real: dropped
    with pytest.raises(ValueError, match="one topic per fake"):
        length_matched(fakes, reals, fake_topics=fake_topics)


def test_quiz_difficulty_uses_compiling_fakes_of_each_topic():
    from pipeline.quiz import FakeEquation
    from pipeline.quiz_export import quiz_difficulty

    reals = [{"equation": f"x_{i} + y_{i} = z", "topic": i % 2} for i in range(40)]
    fakes = [FakeEquation(f"\\alpha\\alpha {i}", i % 3, compiles=i % 5 != 0) for i in range(60)]
    out = quiz_difficulty(fakes, reals, seed=0)
    # pairs only within a topic (topic 2 has no real equation) and only of fakes that compile (4 in 5)
    pairs = sum(min(sum(f.compiles and f.topic == t for f in fakes), 20) for t in (0, 1))
    assert out["equations"] == pairs < 40 and out["char_ngram_accuracy"] > 0.9
    assert quiz_difficulty(fakes[:1], reals) is None and not out["papers_held_out"]
    with_papers = quiz_difficulty(fakes, [{**r, "paper": f"p{i % 4}"} for i, r in enumerate(reals)], seed=0)
    assert with_papers["papers_held_out"] and with_papers["equations"] == pairs
    assert with_papers["char_ngram_accuracy"] > 0.9


def test_repeats_average_matchings_and_folds_of_consecutive_seeds():
    rng = random.Random(4)
    pool = equations(rng, 60, "sum") + equations(rng, 60, "frac")
    rng.shuffle(pool)
    fakes, reals = pool[:40] + equations(rng, 20, "frac"), pool[40:]
    repeated = detect(fakes, reals, seed=5, config=DetectorConfig(seed=5, repeats=3))
    for features, result in repeated.items():
        singles = [detect(fakes, reals, seed=s, config=DetectorConfig(seed=s))[features].accuracy for s in (5, 6, 7)]
        assert len(set(singles)) > 1  # the matchings differ, so the repeats are not one run thrice
        assert result.repeats == 3
        assert result.accuracy == pytest.approx(sum(singles) / 3)
        assert result.spread == pytest.approx((sum((a - result.accuracy) ** 2 for a in singles) / 3) ** 0.5)
    assert detect(fakes, reals, seed=5)["char"].spread == 0.0


def test_holding_papers_out_keeps_the_detector_from_learning_the_test_papers_notation():
    """Real test equations from 6 papers, "fakes" of the same style from many other papers: each paper names
    its own operator, so stratified folds learn "one of these 6 papers" (as on the demo corpus, where real
    training equations were told from test ones 0.77 of the time); folds by paper are back at chance."""
    rng = random.Random(5)
    letters = "abcdefghijklmnopqrstuvwxyz"

    def equation(name: str) -> str:
        return rf"\operatorname{{{name}}}_{{{rng.randint(1, 9)}}} + \sum_{{i}} x^{{i}} = {rng.randint(0, 9)}"

    test_names = ["".join(rng.sample(letters, 3)) for _ in range(6)]
    reals = [equation(name) for name in test_names for _ in range(30)]
    papers = [f"test{p}" for p in range(6) for _ in range(30)]
    fakes = [equation("".join(rng.sample(letters, 3))) for _ in range(180)]  # one paper each
    any_fold = detect(fakes, reals, seed=0, features=("char",))["char"]
    held_out = detect(fakes, reals, seed=0, features=("char",), real_groups=papers)["char"]
    assert any_fold.accuracy > 0.8 and any_fold.groups == 0
    assert held_out.accuracy < 0.65 and held_out.groups == 6 and held_out.folds == 5
    # a real difference still shows with papers held out
    frac = detect(equations(rng, 180, "frac"), reals, seed=0, features=("char",), real_groups=papers)["char"]
    assert frac.accuracy > 0.95
    with pytest.raises(ValueError, match="at least 2 papers"):
        detect(fakes[:20], reals[:20], seed=0, real_groups=papers[:20])
    with pytest.raises(ValueError, match="one group per real"):
        detect(fakes, reals, seed=0, real_groups=papers[:5])
