"""Writing a quiz: typeset every equation with pdflatex, export quiz.json, answers.json, quiz.html, quiz.pdf.

`export_quiz` writes `quiz.json` (questions only), `answers.json`, `quiz.html` (self-contained: equations
typeset by pdflatex under the compile rule's preamble, cropped and inlined as SVG data URIs, vanilla JS for
clicks and score, a Content-Security-Policy that forbids any network access) and `quiz.pdf` (a LaTeX handout
with the answer key on its last page). TeX runs in a fresh temporary folder with paranoid file access, no
shell escape and a timeout, as in docs/compile-rule.md.

`assemble_quiz` is the whole stage after generation: `build_quiz` (pipeline.quiz) + `export_quiz`.
"""
from __future__ import annotations

import base64
import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from pipeline import compile_check
from pipeline.compile_tex import first_error, read_log, run_tex
from pipeline.detector import detect
from pipeline.judge import paper_groups
from pipeline.quiz import Quiz, QuizConfig, as_fake_equation, build_quiz, quiz_summary

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


# --------------------------------------------------------------------------------------------- rendering

def run_pdflatex(tex_file: Path, timeout: float) -> str | None:
    """pdflatex on TEX_FILE in its own folder, in the compile check's sandbox (pipeline.compile_tex: paranoid
    file access, no shell escape, no font generation, resource caps, timeout). Returns None when the PDF was
    written, else the first TeX error line."""
    result = run_tex(["-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape", tex_file.name],
                     tex_file.parent, timeout)
    if result.timed_out:
        return f"pdflatex took more than {timeout:g} s"
    pdf = tex_file.with_suffix(".pdf")
    if result.returncode == 0 and pdf.exists() and pdf.stat().st_size > 0:
        return None
    return first_error(read_log(tex_file.with_suffix(".log"))) or "pdflatex failed (no error line in the log)"


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
    workdir.mkdir(parents=True, exist_ok=True)
    tex = workdir / f"{name}.tex"
    # The compile rule's preamble; only the page layout is added.
    tex.write_text(compile_check.DEFAULT_PREAMBLE + _RENDER_PAGE
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
    bar = tqdm(total=len(equations), desc="typesetting", unit="eq", file=sys.stderr, disable=not progress)

    def one(args):
        out = render_equation(args[0], workdir, args[1], config.tex_timeout)
        bar.update(1)
        return out

    try:
        with ThreadPoolExecutor(max_workers=max(1, config.render_workers)) as pool:
            return list(pool.map(one, zip(equations, names)))
    finally:
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


# ------------------------------------------------------------------------------------- the quiz stage

def quiz_difficulty(fakes: Iterable, reals: Sequence[Mapping], seed: int = 0) -> dict | None:
    """How hard the quiz is: the cross-validated accuracy of the real-vs-fake detectors (pipeline.detector:
    character n-grams, bag of LaTeX tokens) on the compiling generated equations (FakeEquation or mappings)
    against real test equations (records with their dominant `topic`) of the same topic and length, with the
    test papers held out where every real names its paper or id (`pipeline.judge.paper_groups`;
    `papers_held_out`); 0.5 = indistinguishable.
    None with fewer than 2 matched pairs (or 2 papers)."""
    usable = [f for f in map(as_fake_equation, fakes) if f.compiles]
    papers = paper_groups(reals)
    try:
        result = detect([f.equation for f in usable], [r["equation"] for r in reals], seed=seed,
                        fake_topics=[f.topic for f in usable], real_topics=[int(r["topic"]) for r in reals],
                        real_groups=papers)
    except ValueError:
        return None
    return {"char_ngram_accuracy": result["char"].accuracy, "tokens_accuracy": result["tokens"].accuracy,
            "equations": result["char"].n_fake, "papers_held_out": papers is not None}


def assemble_quiz(reals: list[dict], fakes: Iterable, n: int, seed: int, out_dir: str | Path, *,
                  topic_labels: Sequence[str] | Mapping[int, str] | None = None, config: QuizConfig | None = None,
                  known_equations: Iterable[str] = ()) -> tuple[Quiz, dict[str, Path], dict]:
    """`build_quiz` + `export_quiz` into out_dir; returns (quiz, paths of the four files, summary with the
    detectors' accuracy on all compiling fakes: `quiz_difficulty`)."""
    config = config or QuizConfig()
    fakes = list(fakes)
    quiz = build_quiz(reals, fakes, n, seed, topic_labels=topic_labels, config=config,
                      known_equations=known_equations)
    paths = export_quiz(quiz, out_dir, config, progress=True)
    summary = quiz_summary(quiz)
    summary["files"] = {name: str(path) for name, path in paths.items()}
    summary["detector"] = quiz_difficulty(fakes, reals, seed)
    return quiz, paths, summary
