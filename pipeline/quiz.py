"""Real-vs-fake quizzes: pair a real test-split equation with a generated one that compiles, export them.

`build_quiz` pairs, per topic, one generated equation that compiles with the unused real test-split equation
whose length is closest to it (within `QuizConfig.max_length_ratio`, so length never gives the answer away),
puts the fake at A or B and shuffles the questions, all with one seed. Every equation that enters a question
is re-checked with `pipeline.compile_check.check` (the project's compile rule), so no question ever holds an
equation that does not compile.

`export_quiz` writes `quiz.json` (questions only), `answers.json`, `quiz.html` (self-contained: equations
typeset by pdflatex under the compile rule's preamble, cropped and inlined as SVG data URIs, vanilla JS for
clicks and score, a Content-Security-Policy that forbids any network access) and `quiz.pdf` (a LaTeX handout
with the answer key on its last page). TeX runs in a fresh temporary folder with paranoid file access, no
shell escape and a timeout, as in docs/compile-rule.md.
"""
from __future__ import annotations

import base64
import html
import json
import math
import random
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from pipeline.detector import detect

ASSETS = Path(__file__).resolve().parent / "quiz_assets"

# Wide page so that long equations are not clipped; the picture is cropped to its ink afterwards.
_RENDER_PAGE = r"\usepackage[paperwidth=50cm,paperheight=30cm,margin=2cm]{geometry}"
_RENDER_DPI = 72  # 1 pixel = 1 bp: the ink box found on the bitmap is directly a PDF viewport
_CROP_PAD_BP = 2.0

# Handout layout (a4, 2 cm margins): widest and tallest an equation picture may be before it is scaled down.
_HANDOUT_MAX_WIDTH_BP = 440.0
_HANDOUT_MAX_HEIGHT_BP = 220.0
# On screen: 10 pt TeX at 2 px per bp reads like 20 px text (1.33 would be true size, small next to UI text).
_HTML_PX_PER_BP = 2.0


@dataclass
class QuizConfig:
    """How a quiz is put together and rendered."""

    max_length_ratio: float = 1.3  # longer/shorter equation (characters) allowed within one question
    title: str = "Which is fake?"
    tex_timeout: float = 10.0  # seconds per pdflatex run, as in the compile rule
    render_workers: int = 2  # pdflatex runs at once while rendering


@dataclass(frozen=True)
class FakeEquation:
    """A generated equation, the topic it was generated for and its compile verdict."""

    equation: str
    topic: int
    compiles: bool
    error: str | None = None


@dataclass
class Question:
    number: int  # 1-based, in quiz order
    topic: int
    topic_label: str
    options: dict[str, str]  # "A"/"B" -> LaTeX of the equation
    fake: str  # "A" or "B"
    real_id: str
    real_paper: str | None = None

    @property
    def real(self) -> str:
        return "B" if self.fake == "A" else "A"


@dataclass
class Quiz:
    questions: list[Question]
    requested: int
    seed: int
    title: str = "Which is fake?"
    # Why the quiz is smaller than requested (empty when it is not); printed to stderr by build_quiz.
    shortfall: str | None = None
    counts: dict[str, int] = field(default_factory=dict)

    def questions_json(self) -> dict:
        """`quiz.json`: what a student sees, with nothing that tells which equation is fake."""
        return {
            "title": self.title,
            "n": len(self.questions),
            "questions": [
                {"number": q.number, "topic": q.topic, "topic_label": q.topic_label,
                 "options": {"A": q.options["A"], "B": q.options["B"]}}
                for q in self.questions
            ],
        }

    def answers_json(self) -> dict:
        """`answers.json`: the key, with where each real equation came from."""
        return {
            "title": self.title,
            "seed": self.seed,
            "requested": self.requested,
            "n": len(self.questions),
            "shortfall": self.shortfall,
            "counts": self.counts,
            "answers": [
                {"number": q.number, "fake": q.fake, "real": q.real, "topic": q.topic,
                 "topic_label": q.topic_label, "real_id": q.real_id, "real_paper": q.real_paper}
                for q in self.questions
            ],
        }


# ----------------------------------------------------------------------------------------------- pairing

def equation_length(equation: str) -> int:
    """Characters with runs of white space counted once: what a reader perceives as length."""
    return len(" ".join(equation.split()))


def equation_rows(equation: str) -> int:
    """Rows the equation is typeset in: line breaks (`\\\\`, in aligned, cases, matrices) + 1."""
    return equation.count("\\\\") + 1


def _normalised(equation: str) -> str:
    return "".join(equation.split())


def attach_dominant_topics(records: Iterable[Mapping], theta_by_id: Mapping[str, np.ndarray],
                           split: str | None = "test") -> list[dict]:
    """Records of `split` (all when None) that have a θ, each copied with `topic` = argmax θ."""
    out = []
    for record in records:
        if split is not None and record.get("split") != split:
            continue
        theta = theta_by_id.get(record["id"])
        if theta is None:
            continue
        out.append({**record, "topic": int(np.argmax(theta))})
    return out


def _as_fake(item) -> FakeEquation:
    if isinstance(item, FakeEquation):
        return item
    if isinstance(item, Mapping):
        return FakeEquation(equation=item["equation"], topic=int(item["topic"]),
                            compiles=bool(item["compiles"]), error=item.get("error"))
    raise TypeError(f"a fake equation must be a FakeEquation or a mapping, not {type(item).__name__}")


def _default_check(equations: list[str]) -> list:
    from pipeline.compile_check import check  # another stage's module: imported when first needed

    return check(equations)


def _length_ratio(a: int, b: int) -> float:
    return max(a, b) / max(1, min(a, b))


def build_quiz(real_records: Iterable[Mapping], fake_equations: Iterable, n: int, seed: int, *,
               topic_labels: Sequence[str] | Mapping[int, str] | None = None,
               config: QuizConfig | None = None,
               check: Callable[[list[str]], list] | None = None,
               known_equations: Iterable[str] = ()) -> Quiz:
    """Pair real test-split equations with generated ones that compile; at most `n` questions.

    real_records: ingest records with `id`, `equation` and `topic` (their dominant topic, see
      `attach_dominant_topics`); records whose `split` is present and not "test" are ignored.
    fake_equations: `FakeEquation`s (or mappings with `equation`, `topic`, `compiles`).
    check: the compile check (default `pipeline.compile_check.check`); every equation that enters a
      question is checked with it, whatever verdict the fake came with.
    known_equations: other real equations (e.g. the training split); a fake that repeats one verbatim is
      a memorised real equation, not a fake, and is dropped like a copy of a test equation.
    Fewer than `n` possible questions: the quiz is smaller and `quiz.shortfall` (also printed to stderr)
    says why. None possible: ValueError.
    """
    if n < 1:
        raise ValueError(f"-n must be at least 1, got {n}")
    config = config or QuizConfig()
    check = check or _default_check

    def label(topic: int) -> str:
        if topic_labels is None:
            return f"topic {topic}"
        try:
            return str(topic_labels[topic])
        except (IndexError, KeyError):
            return f"topic {topic}"

    counts = {"fakes_given": 0, "fakes_not_compiling": 0, "fakes_duplicate": 0, "fakes_copy_of_real": 0,
              "fakes_failed_recheck": 0, "fakes_without_real_match": 0, "fakes_unused": 0,
              "reals_given": 0, "reals_failed_recheck": 0}

    reals_by_topic: dict[int, list[dict]] = {}
    real_texts: set[str] = set()
    for record in real_records:
        if record.get("split", "test") != "test" or not str(record.get("equation", "")).strip():
            continue
        counts["reals_given"] += 1
        reals_by_topic.setdefault(int(record["topic"]), []).append(dict(record))
        real_texts.add(_normalised(record["equation"]))
    real_texts.update(_normalised(eq) for eq in known_equations)

    # Fakes: claimed to compile, distinct, not a verbatim copy of a real equation, and compiling on re-check.
    fakes: list[FakeEquation] = []
    seen: set[str] = set()
    for item in fake_equations:
        fake = _as_fake(item)
        counts["fakes_given"] += 1
        key = _normalised(fake.equation)
        if not fake.compiles or not key:
            counts["fakes_not_compiling"] += 1
        elif key in seen:
            counts["fakes_duplicate"] += 1
        elif key in real_texts:
            counts["fakes_copy_of_real"] += 1
        else:
            seen.add(key)
            fakes.append(fake)
    if fakes:
        verdicts = check([f.equation for f in fakes])
        kept = [f for f, v in zip(fakes, verdicts) if v.ok]
        counts["fakes_failed_recheck"] = len(fakes) - len(kept)
        fakes = kept

    # Pair, re-check the reals chosen, and pair again without the ones that fail (rare: ingest drops
    # equations with undefined commands, not every fault). Each attempt restarts from the seed, so the
    # result depends only on it.
    bad_reals: set[str] = set()
    good_reals: set[str] = set()
    while True:
        pairs, unmatched, unused = _pair(reals_by_topic, fakes, n, seed, config.max_length_ratio, bad_reals)
        unchecked = [real for _, real in pairs if real["id"] not in good_reals]
        if not unchecked:
            break
        verdicts = check([r["equation"] for r in unchecked])
        for real, verdict in zip(unchecked, verdicts):
            (good_reals if verdict.ok else bad_reals).add(real["id"])
        if all(v.ok for v in verdicts):
            break
    counts["reals_failed_recheck"] = len(bad_reals)
    counts["fakes_without_real_match"] = unmatched
    counts["fakes_unused"] = unused

    if not pairs:
        raise ValueError(
            f"no quiz question could be made: {_shortfall_reasons(counts, len(fakes), config)}; "
            "generate more candidates (--candidates), keep syntax-aware decoding on (--constrained), train "
            "the model longer, or use a topic model whose topics have test-split equations")

    rng = random.Random(seed)
    order = list(range(len(pairs)))
    rng.shuffle(order)
    questions = []
    for number, index in enumerate(order, start=1):
        fake, real = pairs[index]
        fake_slot = rng.choice("AB")
        real_slot = "B" if fake_slot == "A" else "A"
        questions.append(Question(
            number=number, topic=fake.topic, topic_label=label(fake.topic),
            options={fake_slot: fake.equation, real_slot: real["equation"]}, fake=fake_slot,
            real_id=str(real["id"]), real_paper=real.get("paper")))

    shortfall = None
    if len(questions) < n:
        shortfall = (f"quiz has {len(questions)} of the {n} questions asked for: "
                     f"{_shortfall_reasons(counts, len(fakes), config)}")
        print(f"topiceq quiz: {shortfall}", file=sys.stderr)
    return Quiz(questions=questions, requested=n, seed=seed, title=config.title, shortfall=shortfall,
                counts=counts)


def _shortfall_reasons(counts: dict[str, int], usable_fakes: int, config: QuizConfig) -> str:
    parts = [f"{usable_fakes} usable generated equations of {counts['fakes_given']}"]
    for key, text in [("fakes_not_compiling", "did not compile"),
                      ("fakes_failed_recheck", "failed the compile re-check"),
                      ("fakes_duplicate", "were duplicates"),
                      ("fakes_copy_of_real", "repeated a real equation verbatim"),
                      ("fakes_without_real_match",
                       f"had no real test equation of their topic within a length ratio of "
                       f"{config.max_length_ratio:g}")]:
        if counts.get(key):
            parts.append(f"{counts[key]} {text}")
    if counts.get("reals_failed_recheck"):
        parts.append(f"{counts['reals_failed_recheck']} real equations failed the compile re-check")
    if not counts.get("reals_given"):
        parts.append("no real test-split equation was given")
    return ", ".join(parts)


def _pair(reals_by_topic: dict[int, list[dict]], fakes: list[FakeEquation], n: int, seed: int,
          max_ratio: float, bad_reals: set[str]) -> tuple[list[tuple[FakeEquation, dict]], int, int]:
    """Round-robin over topics (so topics share the quiz), each fake with an unused real of its topic within
    the length ratio bound: on the longer or shorter side by a seeded coin, then the same number of rows,
    then the closest length."""
    rng = random.Random(seed)
    fakes_by_topic: dict[int, list[FakeEquation]] = {}
    for fake in fakes:
        fakes_by_topic.setdefault(fake.topic, []).append(fake)
    topics = sorted(fakes_by_topic)
    rng.shuffle(topics)
    pools: dict[int, list[tuple[int, int, dict]]] = {}
    for topic in topics:
        fakes_by_topic[topic] = sorted(fakes_by_topic[topic], key=lambda f: f.equation)
        rng.shuffle(fakes_by_topic[topic])
        pool = sorted((r for r in reals_by_topic.get(topic, []) if r["id"] not in bad_reals),
                      key=lambda r: str(r["id"]))
        rng.shuffle(pool)  # ties in length go to a seeded random real, not the first in the file
        pools[topic] = [(equation_length(r["equation"]), equation_rows(r["equation"]), r) for r in pool]

    pairs: list[tuple[FakeEquation, dict]] = []
    unmatched = 0
    active = list(topics)
    while len(pairs) < n and active:
        for topic in list(active):
            if len(pairs) >= n:
                break
            if not fakes_by_topic[topic]:
                active.remove(topic)
                continue
            fake = fakes_by_topic[topic].pop()
            length, rows = equation_length(fake.equation), equation_rows(fake.equation)
            pool = pools[topic]
            # Within the length bound, the same number of rows first (a one-line fake next to a four-line
            # real would look different at a glance), then the closest length.
            fitting = [i for i in range(len(pool)) if _length_ratio(pool[i][0], length) <= max_ratio]
            if not fitting:
                unmatched += 1
                continue
            # A seeded coin says whether the real should be the longer or the shorter one, so that "the
            # longer one is fake" stays a coin toss even when the model writes longer equations than papers.
            real_longer = rng.random() < 0.5
            side = [i for i in fitting if (pool[i][0] >= length) == real_longer] or fitting
            best = min(side, key=lambda i: (abs(pool[i][1] - rows), _length_ratio(pool[i][0], length)))
            pairs.append((fake, pool.pop(best)[2]))
    unused = sum(len(v) for v in fakes_by_topic.values())
    return pairs, unmatched, unused


# --------------------------------------------------------------------------------------------- rendering

def run_pdflatex(tex_file: Path, timeout: float) -> str | None:
    """pdflatex on TEX_FILE in its own folder, in the compile check's sandbox (pipeline.compile_tex: paranoid
    file access, no shell escape, no font generation, resource caps, timeout). Returns None when the PDF was
    written, else the first TeX error line."""
    from pipeline.compile_tex import run_tex

    result = run_tex(["-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape", tex_file.name],
                     tex_file.parent, timeout)
    if result.timed_out:
        return f"pdflatex took more than {timeout:g} s"
    pdf = tex_file.with_suffix(".pdf")
    if result.returncode == 0 and pdf.exists() and pdf.stat().st_size > 0:
        return None
    log = tex_file.with_suffix(".log")
    return _tex_error(log.read_text(encoding="utf-8", errors="replace") if log.exists() else "")


def _tex_error(log: str) -> str:
    lines = [line for line in log.splitlines() if line.startswith("!")]
    return lines[0] if lines else "pdflatex failed (no error line in the log)"


@dataclass
class RenderedEquation:
    pdf: Path  # one-page PDF holding the equation on a large page
    viewport: tuple[float, float, float, float]  # ink box in bp, PDF coordinates (x0, y0, x1, y1)
    svg: str  # cropped SVG document

    @property
    def width_bp(self) -> float:
        return self.viewport[2] - self.viewport[0]

    @property
    def height_bp(self) -> float:
        return self.viewport[3] - self.viewport[1]


def _read_pgm(path: Path) -> np.ndarray:
    data = path.read_bytes()
    # P5 header: magic, width, height, maxval, each separated by white space (no comments from poppler).
    match = re.match(rb"P5\s+(\d+)\s+(\d+)\s+(\d+)\s", data)
    if not match:
        raise RuntimeError(f"{path.name}: not a binary PGM")
    width, height, maxval = (int(g) for g in match.groups())
    dtype = np.uint8 if maxval < 256 else np.dtype(">u2")
    return np.frombuffer(data, dtype=dtype, count=width * height, offset=match.end()).reshape(height, width)


def render_equation(equation: str, workdir: Path, name: str, timeout: float = 10.0) -> RenderedEquation:
    """Typeset one equation as in the compile rule and crop it to its ink; SVG by pdftocairo."""
    from pipeline.compile_check import DEFAULT_PREAMBLE  # the compile rule's preamble; we add page layout only

    workdir.mkdir(parents=True, exist_ok=True)
    tex = workdir / f"{name}.tex"
    tex.write_text(DEFAULT_PREAMBLE + _RENDER_PAGE
                   + "\n\\pagestyle{empty}\n\\begin{document}\n\\[\n" + equation + "\n\\]\n\\end{document}\n",
                   encoding="utf-8")
    error = run_pdflatex(tex, timeout)
    pdf = workdir / f"{name}.pdf"
    if error is not None:
        raise RuntimeError(f"could not typeset equation {equation[:60]!r}: {error}")
    subprocess.run(["pdftoppm", "-gray", "-r", str(_RENDER_DPI), "-singlefile", pdf.name, name],
                   cwd=workdir, check=True, capture_output=True, timeout=timeout)
    pixels = _read_pgm(workdir / f"{name}.pgm")
    page_h, page_w = pixels.shape
    ink = np.argwhere(pixels < pixels.max() * 0.9) if pixels.size else np.empty((0, 2))
    if len(ink):
        (top, left), (bottom, right) = ink.min(axis=0), ink.max(axis=0) + 1
    else:  # nothing visible (e.g. only \phantom): a small empty box at the centre
        top, left, bottom, right = page_h // 2 - 5, page_w // 2 - 5, page_h // 2 + 5, page_w // 2 + 5
    scale = 72.0 / _RENDER_DPI
    x0 = max(0.0, left * scale - _CROP_PAD_BP)
    x1 = min(page_w * scale, right * scale + _CROP_PAD_BP)
    y_top = max(0.0, top * scale - _CROP_PAD_BP)
    y_bottom = min(page_h * scale, bottom * scale + _CROP_PAD_BP)
    viewport = (x0, page_h * scale - y_bottom, x1, page_h * scale - y_top)

    subprocess.run(["pdftocairo", "-svg", pdf.name, f"{name}.svg"], cwd=workdir, check=True,
                   capture_output=True, timeout=timeout)
    svg = (workdir / f"{name}.svg").read_text(encoding="utf-8")
    w, h = x1 - x0, y_bottom - y_top
    svg, count = re.subn(r'width="[^"]*" height="[^"]*" viewBox="[^"]*"',
                         f'width="{w:.2f}pt" height="{h:.2f}pt" viewBox="{x0:.3f} {y_top:.3f} {w:.3f} {h:.3f}"',
                         svg, count=1)
    if count != 1:
        raise RuntimeError("pdftocairo wrote an SVG without the expected width/height/viewBox")
    return RenderedEquation(pdf=pdf, viewport=viewport, svg=svg)


def render_equations(equations: Sequence[str], workdir: Path, config: QuizConfig | None = None,
                     progress: bool = False) -> list[RenderedEquation]:
    """Render each equation in its own TeX run (equations cannot affect each other), in input order."""
    config = config or QuizConfig()
    names = [f"eq{i:04d}" for i in range(len(equations))]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(equations), desc="typesetting", unit="eq", file=sys.stderr)

    def one(args):
        out = render_equation(args[0], workdir, args[1], config.tex_timeout)
        if bar is not None:
            bar.update(1)
        return out

    try:
        with ThreadPoolExecutor(max_workers=max(1, config.render_workers)) as pool:
            return list(pool.map(one, zip(equations, names)))
    finally:
        if bar is not None:
            bar.close()


# ----------------------------------------------------------------------------------------------- export

def tex_escape(text: str) -> str:
    """Plain text into LaTeX text mode."""
    replacements = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                    "\u00b7": r"$\cdot$"}  # the middle dot of topic labels (its text font is not always there)
    return "".join(replacements.get(ch, ch) for ch in text)


def _svg_data_uri(svg: str) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")


def _html_page(quiz: Quiz, rendered: dict[tuple[int, str], RenderedEquation]) -> str:
    template = (ASSETS / "quiz.html").read_text(encoding="utf-8")
    blocks = []
    for q in quiz.questions:
        options = []
        for slot in "AB":
            r = rendered[(q.number, slot)]
            options.append(
                f'<button type="button" class="option" data-slot="{slot}" '
                f'aria-label="equation {slot}"><span class="slot">{slot}</span>'
                f'<img src="{_svg_data_uri(r.svg)}" alt="equation {slot}" '
                f'style="width:{r.width_bp * _HTML_PX_PER_BP:.1f}px"></button>')
        blocks.append(
            f'<section class="question" id="q{q.number}" data-number="{q.number}">\n'
            f'<h2>Question {q.number} <span class="topic">{html.escape(q.topic_label)}</span></h2>\n'
            f'<div class="options">{"".join(options)}</div>\n'
            f'<p class="feedback" aria-live="polite"></p>\n</section>')
    # The page must know the key to give feedback; it is kept out of quiz.json, not hidden from a reader of
    # the HTML source.
    key = [{"number": q.number, "fake": q.fake, "real_id": q.real_id} for q in quiz.questions]
    return (template.replace("@@TITLE@@", html.escape(quiz.title))
            .replace("@@N@@", str(len(quiz.questions)))
            .replace("@@QUESTIONS@@", "\n".join(blocks))
            .replace("@@ANSWERS_JSON@@", json.dumps(key).replace("</", "<\\/")))


def _handout_tex(quiz: Quiz, rendered: dict[tuple[int, str], RenderedEquation]) -> str:
    template = (ASSETS / "handout.tex").read_text(encoding="utf-8")

    def picture(r: RenderedEquation) -> str:
        scale = min(1.0, _HANDOUT_MAX_WIDTH_BP / max(r.width_bp, 1e-3), _HANDOUT_MAX_HEIGHT_BP / max(r.height_bp, 1e-3))
        x0, y0, x1, y1 = r.viewport
        return (f"\\includegraphics[viewport={x0:.2f} {y0:.2f} {x1:.2f} {y1:.2f},clip,scale={scale:.4f}]"
                f"{{{r.pdf.name}}}")

    blocks = []
    for q in quiz.questions:
        blocks.append(
            "\\noindent\\begin{minipage}{\\linewidth}\n"
            f"\\textbf{{Question {q.number}}}\\hfill Topic: \\emph{{{tex_escape(q.topic_label)}}}\\par\\medskip\n"
            f"\\textbf{{A}}\\quad\\raisebox{{-0.5\\height}}{{{picture(rendered[(q.number, 'A')])}}}\\par\\medskip\n"
            f"\\textbf{{B}}\\quad\\raisebox{{-0.5\\height}}{{{picture(rendered[(q.number, 'B')])}}}\\par\n"
            "\\end{minipage}\\par\\bigskip\\hrule\\bigskip\n")
    rows = [f"{q.number} & {tex_escape(q.topic_label)} & {q.fake} & {tex_escape(q.real_id)} \\\\"
            for q in quiz.questions]
    return (template.replace("@@TITLE@@", tex_escape(quiz.title))
            .replace("@@N@@", str(len(quiz.questions)))
            .replace("@@QUESTIONS@@", "\n".join(blocks))
            .replace("@@KEY_ROWS@@", "\n".join(rows)))


def export_quiz(quiz: Quiz, out_dir: str | Path, config: QuizConfig | None = None,
                progress: bool = False) -> dict[str, Path]:
    """Write quiz.json, answers.json, quiz.html and quiz.pdf into `out_dir`; returns their paths."""
    config = config or QuizConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in ("quiz.json", "answers.json", "quiz.html", "quiz.pdf")}
    paths["quiz.json"].write_text(json.dumps(quiz.questions_json(), indent=2, ensure_ascii=False) + "\n",
                                  encoding="utf-8")
    paths["answers.json"].write_text(json.dumps(quiz.answers_json(), indent=2, ensure_ascii=False) + "\n",
                                     encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="topiceq-quiz-") as tmp:
        workdir = Path(tmp)
        slots = [(q.number, slot) for q in quiz.questions for slot in "AB"]
        by_number = {q.number: q for q in quiz.questions}
        pictures = render_equations([by_number[num].options[slot] for num, slot in slots], workdir, config,
                                    progress=progress)
        rendered = dict(zip(slots, pictures))
        paths["quiz.html"].write_text(_html_page(quiz, rendered), encoding="utf-8")

        handout = workdir / "handout.tex"
        handout.write_text(_handout_tex(quiz, rendered), encoding="utf-8")
        timeout = config.tex_timeout + 0.5 * len(quiz.questions)
        for _ in range(2):  # longtable settles its column widths on the second run
            error = run_pdflatex(handout, timeout)
            if error is not None:
                raise RuntimeError(f"the quiz handout did not compile: {error}")
        shutil.copyfile(workdir / "handout.pdf", paths["quiz.pdf"])
    return paths


# ------------------------------------------------------------------------------- from a checkpoint

@dataclass
class GenerationConfig:
    """How `make_quiz` asks the equation model for fakes."""

    candidates_per_question: float = 3.0  # some do not compile, some find no real of similar length
    temperature: float = 0.8
    constrained: bool = True  # syntax-aware decoding (topicrnn.latex_syntax)
    max_len: int = 300  # tokens per equation at most
    batch_size: int = 250  # sequences per sampler call
    device: str = "cpu"


def choose_topics(available: Iterable[int], n: int, seed: int) -> list[int]:
    """The topics a quiz of n questions draws from: all of them, or a seeded sample of n when more exist."""
    topics = sorted(set(available))
    if len(topics) <= n:
        return topics
    return sorted(random.Random(seed).sample(topics, n))


def generate_fakes(lm, topic_model, topics: Sequence[int], per_topic: int, *, data_dir: str | Path, seed: int,
                   generation: GenerationConfig | None = None) -> list[FakeEquation]:
    """`per_topic` equations for each topic (θ = the topic's prototype), each with its compile verdict.

    lm: `topicrnn.equation_model.LoadedModel`; topic_model: `pipeline.topics.TopicModel`. All topics share
    one sampler call per batch (one θ row per sequence): a sampler call has a large fixed cost (the syntax
    constraint), so one call per topic would be K times slower.
    """
    import torch

    from pipeline.compile_check import check
    from topicrnn import equation_model as em  # the model side, imported only when generating
    from topicrnn.sampling import sample

    generation = generation or GenerationConfig()
    prototypes = em.topic_prototypes(topic_model, em.read_split(data_dir, "train"))
    controls = em.allowed_control_sequences(lm, data_dir) if generation.constrained else None
    row_topics = [topic for topic in topics for _ in range(per_topic)]
    thetas = np.stack([em.topic_theta(topic_model, topic, prototypes=prototypes) for topic in row_topics])
    equations: list[str] = []
    batches = range(0, len(row_topics), generation.batch_size)
    for b, start in enumerate(batches):
        stop = min(start + generation.batch_size, len(row_topics))
        print(f"generating equations {start + 1}-{stop} of {len(row_topics)} ({len(topics)} topics)",
              file=sys.stderr)
        theta = torch.as_tensor(thetas[start:stop]) if lm.conditioned else None
        constraint = em.make_constraint(lm, controls) if generation.constrained else None
        texts = sample(lm.model, lm.tokenizer, n=stop - start, max_len=generation.max_len,
                       temperature=generation.temperature, theta=theta, seed=seed + 1000003 * b,
                       constraint=constraint, device=lm.device)
        equations.extend(t.strip() for t in texts)
    verdicts = check(equations, progress=True)
    return [FakeEquation(equation=eq, topic=topic, compiles=bool(v.ok), error=v.error)
            for topic, eq, v in zip(row_topics, equations, verdicts)]


def make_quiz(checkpoint: str | Path, data_dir: str | Path, topic_dir: str | Path, out_dir: str | Path, n: int,
              seed: int = 0, config: QuizConfig | None = None,
              generation: GenerationConfig | None = None) -> tuple[Quiz, dict[str, Path], dict]:
    """The whole stage: real test-split equations of `data_dir` with their dominant topic in `topic_dir`,
    fakes generated by `checkpoint` for those topics, paired, exported to `out_dir`.

    Returns (quiz, paths of the four files, summary)."""
    from pipeline.ingest import read_records
    from topicrnn import equation_model as em

    if n < 1:
        raise ValueError(f"-n must be at least 1, got {n}")
    config = config or QuizConfig()
    generation = generation or GenerationConfig()
    data_dir = Path(data_dir)
    if not (data_dir / "equations.jsonl").is_file():
        raise FileNotFoundError(f"{data_dir}/equations.jsonl is missing: run `topiceq ingest SOURCE --out "
                                f"{data_dir}` first")
    topic_model = em.load_topic_model(topic_dir)
    records = list(read_records(data_dir))
    reals = attach_dominant_topics(records, topic_model.theta_by_id(), split="test")
    if not reals:
        raise ValueError(f"no test-split equation of {data_dir} has a topic in {topic_dir}: pass the --data "
                         "folder the topic model was fitted on")
    lm = em.load_model(checkpoint, device=generation.device)
    if lm.conditioned and lm.n_topics != int(topic_model.k):
        raise ValueError(f"{lm.path} was trained with {lm.n_topics} topics but {topic_dir} has "
                         f"{topic_model.k}: pass the --topics folder the model was trained with")
    topics = choose_topics((r["topic"] for r in reals), n, seed)
    per_topic = max(1, math.ceil(n * generation.candidates_per_question / len(topics)))
    fakes = generate_fakes(lm, topic_model, topics, per_topic, data_dir=data_dir, seed=seed,
                           generation=generation)
    quiz = build_quiz(reals, fakes, n, seed, topic_labels=em.topic_labels(topic_model), config=config,
                      known_equations=(r["equation"] for r in records))
    paths = export_quiz(quiz, out_dir, config, progress=True)
    summary = quiz_summary(quiz)
    summary.update(generated=len(fakes), generated_compiling=sum(f.compiles for f in fakes),
                   files={name: str(path) for name, path in paths.items()},
                   detector=quiz_difficulty([f.equation for f in fakes if f.compiles], [r["equation"] for r in reals],
                                            seed, [f.topic for f in fakes if f.compiles], [r["topic"] for r in reals]))
    return quiz, paths, summary


def quiz_difficulty(fakes: Sequence[str], reals: Sequence[str], seed: int = 0, fake_topics: Sequence[int] | None = None,
                    real_topics: Sequence[int] | None = None) -> dict | None:
    """How hard the quiz is: the cross-validated accuracy of the real-vs-fake detectors (pipeline.detector:
    character n-grams, bag of LaTeX tokens) on the generated equations against real test equations of the same
    length (and topic, given topics); 0.5 = indistinguishable. None with fewer than 2 matched pairs."""
    try:
        result = detect(list(fakes), list(reals), seed=seed, fake_topics=fake_topics, real_topics=real_topics)
    except ValueError:
        return None
    return {"char_ngram_accuracy": result["char"].accuracy, "tokens_accuracy": result["tokens"].accuracy,
            "equations": result["char"].n_fake}


def quiz_summary(quiz: Quiz) -> dict:
    """A small machine-readable summary (for --json and flows)."""
    topics: dict[str, int] = {}
    for q in quiz.questions:
        topics[q.topic_label] = topics.get(q.topic_label, 0) + 1
    return {"requested": quiz.requested, "questions": len(quiz.questions), "topics": topics,
            "fake_is_A": sum(q.fake == "A" for q in quiz.questions), "shortfall": quiz.shortfall,
            "counts": dict(quiz.counts)}


__all__ = ["QuizConfig", "GenerationConfig", "FakeEquation", "Question", "Quiz", "attach_dominant_topics", "build_quiz",
           "equation_length", "equation_rows", "export_quiz", "render_equation", "render_equations", "run_pdflatex",
           "tex_escape", "quiz_summary", "quiz_difficulty", "choose_topics", "generate_fakes", "make_quiz"]
