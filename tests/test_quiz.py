"""Quiz pairing and export (issue 8): real compile checks, real pdflatex, real Chromium, real pdftotext.

Pairing tests use small equations written here; the export tests use equations ingested from the shared
sample papers, with real equations of other papers standing in for generated ones (the export layer does not
care who wrote an equation; `test_quiz_cli.py` runs the whole command with a trained checkpoint).
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.quiz import FakeEquation, QuizConfig, attach_dominant_topics, build_quiz, equation_length
from pipeline.quiz_export import export_quiz

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def sums(symbol: str, terms: int) -> str:
    """A compiling equation whose length grows with `terms`."""
    return f"{symbol} = " + " + ".join(f"{symbol}_{{{i}}}^{{2}}" for i in range(terms))


def real_record(topic: int, index: int, equation: str, split: str = "test") -> dict:
    return {"id": f"paper{topic}-{index}#0", "paper": f"paper{topic}-{index}", "split": split,
            "equation": equation, "topic": topic}


@pytest.fixture(scope="module")
def small_reals() -> list[dict]:
    records = []
    for topic, symbol in [(0, "x"), (1, "y")]:
        for index, terms in enumerate([1, 2, 3, 4, 5, 6, 8, 10, 13]):
            records.append(real_record(topic, index, sums(symbol, terms)))
    # A training-split record of the right topic and length: must never be used as the real equation.
    records.append(real_record(0, 99, sums("x", 4), split="train"))
    return records


def by_id(records):
    return {r["id"]: r for r in records}


def test_pairs_share_topic_and_length_within_bound(small_reals, capsys):
    fakes = [FakeEquation(r"\frac{a}{b} = " + sums("zw"[topic], t), topic, True)
             for topic in (0, 1) for t in (1, 3, 6)]
    fakes.append(FakeEquation(sums("s", 60), 0, True))  # far longer than any real of topic 0
    quiz = build_quiz(small_reals, fakes, 10, seed=3, topic_labels=["algebra", "geometry"])
    reals = by_id(small_reals)
    assert len(quiz.questions) == 6
    assert sorted(q.number for q in quiz.questions) == list(range(1, 7))
    for q in quiz.questions:
        real = reals[q.real_id]
        assert real["split"] == "test"
        assert q.options[q.real] == real["equation"]
        fake = next(f for f in fakes if f.equation == q.options[q.fake])
        assert fake.topic == real["topic"] == q.topic
        assert q.topic_label == ["algebra", "geometry"][q.topic]
        longer, shorter = sorted([equation_length(fake.equation), equation_length(real["equation"])],
                                 reverse=True)
        assert longer / shorter <= QuizConfig().max_length_ratio
    assert len({q.real_id for q in quiz.questions}) == 6  # each real equation is used once
    assert quiz.counts["fakes_without_real_match"] == 1
    err = capsys.readouterr().err
    assert "6 of the 10 questions" in err and "length ratio of 1.3" in err


def test_closest_length_real_on_a_seeded_side_is_chosen(small_reals):
    """The real is the closest one that is longer, or the closest one that is shorter (a seeded coin), so
    that "the longer one is fake" is no better than chance."""
    fake = FakeEquation(r"\alpha = " + sums("q", 5), 1, True)
    length = equation_length(fake.equation)
    candidates = [r for r in small_reals if r["topic"] == 1 and r["split"] == "test"]
    longer = min((r for r in candidates if equation_length(r["equation"]) >= length),
                 key=lambda r: equation_length(r["equation"]))
    shorter = max((r for r in candidates if equation_length(r["equation"]) < length),
                  key=lambda r: equation_length(r["equation"]))
    chosen = {build_quiz(small_reals, [fake], 1, seed=seed).questions[0].real_id for seed in range(8)}
    assert chosen == {longer["id"], shorter["id"]}


def test_same_number_of_rows_is_preferred_within_the_length_bound():
    one_line = real_record(0, 1, r"a + b + c + d + e + f + g + h + i + j + k + l + m + n + o + p + q")
    three_rows = real_record(0, 2, r"\begin{aligned} a &= b \\ d &= e \\ g &= h \end{aligned}")
    fake = FakeEquation(r"\begin{aligned} p &= q + r + s \\ t &= u \\ v &= w + x \end{aligned}", 0, True)
    assert abs(equation_length(one_line["equation"]) - equation_length(fake.equation)) < \
        abs(equation_length(three_rows["equation"]) - equation_length(fake.equation))
    (q,) = build_quiz([one_line, three_rows], [fake], 1, seed=0).questions
    assert q.real_id == three_rows["id"]


def test_never_a_question_with_a_non_compiling_equation(small_reals, capsys):
    broken_claimed_ok = FakeEquation(r"\frac{x_{1} + x_{2}}{", 0, True)  # claims to compile; does not
    undefined_claimed_ok = FakeEquation(r"x = \notAMacroAnywhere{2}", 1, True)
    honest_failure = FakeEquation(r"y = y_{0} + \undefinedthing", 1, False, "! Undefined control sequence.")
    good = FakeEquation(r"\sqrt{x} = " + sums("u", 2), 0, True)
    broken_real = real_record(1, 50, r"y = \left( y_{1} + y_{2}")  # an unbalanced \left in a "real" one
    reals = small_reals + [broken_real]
    quiz = build_quiz(reals, [broken_claimed_ok, undefined_claimed_ok, honest_failure, good,
                              FakeEquation(r"y + 1 = y_{1}", 1, True)], 5, seed=1)
    used = {eq for q in quiz.questions for eq in q.options.values()}
    for bad in (broken_claimed_ok, undefined_claimed_ok, honest_failure):
        assert bad.equation not in used
    assert broken_real["equation"] not in used
    assert good.equation in used
    assert quiz.counts["fakes_not_compiling"] == 1
    assert quiz.counts["fakes_failed_recheck"] == 2
    err = capsys.readouterr().err
    assert f"{len(quiz.questions)} of the 5 questions" in err
    assert "1 did not compile" in err and "2 failed the compile re-check" in err


def test_no_compiling_fake_is_a_clear_error(small_reals):
    with pytest.raises(ValueError, match="no quiz question could be made.*0 usable generated equations"):
        build_quiz(small_reals, [FakeEquation(r"x = \nope", 0, False)], 3, seed=0)


def test_fakes_copied_from_real_equations_are_dropped(small_reals):
    copy = FakeEquation(small_reals[2]["equation"], 0, True)
    quiz = build_quiz(small_reals, [copy, FakeEquation(r"\beta = " + sums("t", 3), 0, True)], 2, seed=0)
    assert quiz.counts["fakes_copy_of_real"] == 1
    assert [q.options[q.fake] for q in quiz.questions] == [r"\beta = " + sums("t", 3)]
    # a memorised training equation is a real equation, not a fake
    memorised = FakeEquation(r"\delta = " + sums("t", 2), 0, True)
    quiz = build_quiz(small_reals, [memorised, FakeEquation(r"\beta = " + sums("t", 3), 0, True)], 2, seed=0,
                      known_equations=["\\delta  =  " + sums("t", 2)])
    assert quiz.counts["fakes_copy_of_real"] == 1
    assert [q.options[q.fake] for q in quiz.questions] == [r"\beta = " + sums("t", 3)]


def test_seed_fixes_pairing_slots_and_order(small_reals):
    fakes = [FakeEquation(r"\gamma_{%d} = " % t + sums("uv"[topic], t), topic, True) for topic in (0, 1)
             for t in (1, 2, 3, 5, 8)]
    first = build_quiz(small_reals, fakes, 8, seed=11).answers_json()
    again = build_quiz(small_reals, fakes, 8, seed=11).answers_json()
    other = build_quiz(small_reals, fakes, 8, seed=12).answers_json()
    assert first == again
    assert [(a["real_id"], a["fake"]) for a in first["answers"]] != \
        [(a["real_id"], a["fake"]) for a in other["answers"]]
    # both topics share the quiz
    assert {a["topic"] for a in first["answers"]} == {0, 1}


def test_attach_dominant_topics_keeps_test_split_only():
    import numpy as np

    records = [{"id": "a#0", "split": "test"}, {"id": "b#0", "split": "train"}, {"id": "c#0", "split": "test"}]
    theta = {"a#0": np.array([0.1, 0.9]), "b#0": np.array([0.8, 0.2])}
    out = attach_dominant_topics(records, theta)
    assert [(r["id"], r["topic"]) for r in out] == [("a#0", 1)]


# ------------------------------------------------------------------------------------- export layer
@pytest.fixture(scope="module")
def sample_ingest(tmp_path_factory, shared_arxiv) -> Path:
    """The shared sample papers, ingested by the real `topiceq ingest`."""
    from topiceq.cli import main

    out = tmp_path_factory.mktemp("ingest")
    assert main(["ingest", str(shared_arxiv / "sample"), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory, sample_ingest):
    """A 5-question quiz: real test-split equations, topic = paper area; stand-in fakes = real equations of
    other splits of the same area (the export layer only needs equations that compile)."""
    from pipeline.ingest import read_records

    records = list(read_records(sample_ingest))
    areas = sorted({r["area"] for r in records})
    for r in records:
        r["topic"] = areas.index(r["area"])
    test_areas = {r["area"] for r in records if r["split"] == "test"}
    stand_ins = [FakeEquation(r["equation"], r["topic"], True) for r in records
                 if r["split"] != "test" and r["area"] in test_areas]
    stand_ins = random.Random(0).sample(stand_ins, min(30, len(stand_ins)))  # enough for 5 length matches
    quiz = build_quiz(records, stand_ins, 5, seed=5, topic_labels=areas)
    assert len(quiz.questions) == 5, quiz.shortfall
    out = tmp_path_factory.mktemp("quiz")
    paths = export_quiz(quiz, out)
    return quiz, paths


def test_quiz_json_has_questions_without_answers(exported):
    quiz, paths = exported
    questions = json.loads(paths["quiz.json"].read_text())
    answers = json.loads(paths["answers.json"].read_text())
    assert questions["n"] == answers["n"] == len(questions["questions"]) == 5
    text = paths["quiz.json"].read_text()
    for q, a in zip(questions["questions"], answers["answers"]):
        assert q["number"] == a["number"]
        assert set(q) == {"number", "topic", "topic_label", "options"}
        assert set(q["options"]) == {"A", "B"}
        assert a["fake"] in "AB" and a["real"] != a["fake"]
        assert a["real_id"] not in text  # where the real one came from would give it away
    # the key matches the quiz in memory
    assert [(a["number"], a["fake"]) for a in answers["answers"]] == [(q.number, q.fake) for q in quiz.questions]


def _launch(playwright):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install the Debian chromium package")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def test_html_page_works_offline_in_chromium(exported, tmp_path):
    from playwright.sync_api import sync_playwright

    quiz, paths = exported
    html_text = paths["quiz.html"].read_text()
    assert "http://" not in html_text.replace("http://www.w3.org/", "") and "https://" not in html_text
    for q in quiz.questions:  # typeset pictures, not LaTeX source, on the page
        for equation in q.options.values():
            assert len(equation) < 12 or equation not in html_text

    requests, blocked = [], []
    with sync_playwright() as p:
        browser = _launch(p)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 700})

            def route(r):
                requests.append(r.request.url)
                if r.request.url.startswith(("file:", "data:")):
                    r.continue_()
                else:
                    blocked.append(r.request.url)
                    r.abort()

            page.route("**/*", route)
            page.goto(paths["quiz.html"].as_uri())
            widths = page.eval_on_selector_all("img", "els => els.map(e => e.complete ? e.naturalWidth : 0)")
            assert len(widths) == 2 * len(quiz.questions) and min(widths) > 0
            assert page.inner_text("#score").startswith("Score: 0 / 0")
            first, second = quiz.questions[0], quiz.questions[1]

            page.click(f"#q{first.number} .option[data-slot={first.fake}]")
            feedback = page.inner_text(f"#q{first.number} .feedback")
            assert feedback.startswith("Right!")
            assert page.inner_text("#score").startswith("Score: 1 / 1")
            assert page.get_attribute(f"#q{first.number} .option[data-slot={first.fake}]", "class").split() \
                == ["option", "fake", "chosen"]
            page.screenshot(path=str(tmp_path / "quiz-after-click.png"))

            page.click(f"#q{second.number} .option[data-slot={second.real}]")
            assert page.inner_text(f"#q{second.number} .feedback").startswith("Wrong.")
            assert second.real_id in page.inner_text(f"#q{second.number} .feedback")
            assert page.inner_text("#score").startswith("Score: 1 / 2")
            # a second click on an answered question changes nothing
            page.click(f"#q{second.number} .option[data-slot={second.fake}]", force=True)
            assert page.inner_text("#score").startswith("Score: 1 / 2")
            page.screenshot(path=str(tmp_path / "quiz-after-two.png"))
            if os.environ.get("TOPICEQ_UPDATE_DOCS"):  # the copy kept in docs/ for the record
                page.screenshot(path=str(REPO / "docs" / "quiz-screenshot.png"))
        finally:
            browser.close()
    assert (tmp_path / "quiz-after-click.png").stat().st_size > 1000
    assert requests and not blocked, blocked


def _pdftotext(pdf: Path, *pages: str) -> str:
    return subprocess.run(["pdftotext", "-layout", *pages, str(pdf), "-"], check=True, capture_output=True,
                          text=True).stdout


def test_pdf_holds_the_questions_then_the_key(exported):
    quiz, paths = exported
    assert shutil.which("pdftotext"), "pdftotext (poppler-utils) is missing"
    info = subprocess.run(["pdfinfo", str(paths["quiz.pdf"])], capture_output=True, text=True, check=True).stdout
    pages = int(next(line.split()[-1] for line in info.splitlines() if line.startswith("Pages:")))
    text = _pdftotext(paths["quiz.pdf"])
    key_at = text.index("Answer key")
    for q in quiz.questions:
        assert f"Question {q.number}" in text[:key_at]
    assert f"Question {len(quiz.questions) + 1}" not in text
    last = _pdftotext(paths["quiz.pdf"], "-f", str(pages), "-l", str(pages))
    assert "Answer key" in last
    rows = [line.split() for line in last.splitlines() if line.strip()[:1].isdigit()]
    assert [(int(r[0]), r[-2]) for r in rows] == [(q.number, q.fake) for q in quiz.questions]


# ------------------------------------------------------------------------------------- the command
@pytest.mark.slow
def test_quiz_command_end_to_end_with_a_trained_checkpoint(sample_ingest, tmp_path, capsys):
    """ingest -> topics fit -> train eq-tiny (a few steps) -> `topiceq quiz`: every equation on the quiz
    compiles, the real ones are test-split equations of the ingest dir, the fakes are not."""
    from pipeline.compile_check import check
    from pipeline.ingest import read_records
    from topiceq.cli import main

    topics, ckpt, out = tmp_path / "topics", tmp_path / "ckpt", tmp_path / "quiz"
    assert main(["topics", "fit", "--data", str(sample_ingest), "--out", str(topics), "--k", "3",
                 "--seed", "0"]) == 0
    assert main(["train", "--preset", "eq-tiny", "--out", str(ckpt), "--data", str(sample_ingest),
                 "--topics", str(topics), "--max-steps", "6", "--device", "cpu", "--no-progress"]) == 0
    capsys.readouterr()
    n = 3
    rc = main(["quiz", "--checkpoint", str(ckpt), "--data", str(sample_ingest), "--topics", str(topics),
               "-n", str(n), "--out", str(out), "--seed", "1", "--candidates", "8", "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    summary = json.loads(captured.out.strip().splitlines()[-1])
    answers = json.loads((out / "answers.json").read_text())
    questions = json.loads((out / "quiz.json").read_text())["questions"]
    assert 1 <= len(questions) == summary["questions"] == answers["n"] <= n
    if len(questions) < n:  # a smaller quiz must say why
        assert answers["shortfall"] and "questions asked for" in captured.err
    assert summary["generated"] >= n and 0 < summary["generated_compiling"] <= summary["generated"]
    test_split = {r["id"]: r for r in read_records(sample_ingest) if r["split"] == "test"}
    shown = []
    for q, a in zip(questions, answers["answers"]):
        real, fake = q["options"][a["real"]], q["options"][a["fake"]]
        assert test_split[a["real_id"]]["equation"] == real
        assert fake not in {r["equation"] for r in test_split.values()}
        shown += [real, fake]
    assert all(v.ok for v in check(shown))
    assert all((out / name).stat().st_size > 0 for name in ("quiz.html", "quiz.pdf"))
