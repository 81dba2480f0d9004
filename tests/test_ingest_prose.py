"""Contexts as prose (issue 21): labels however deeply wrapped, figures, tables, boxes, dimensions and the
bibliography never reach a context, and a context never crosses a section or the end of the document.
Every fixture is a small hand-written paper; each test checks the exact words or the exact absence."""
from __future__ import annotations

import json

from pipeline.ingest import IngestConfig, ingest, read_records
from pipeline.latex_groups import braces_balanced, find_top_level, group_end, split_top_level
from pipeline.latex_macros import collect_macros
from pipeline.latex_prose import ContextExtractor, ref_like_macros, simplify_prose

def _paper(tmp_path, body: str, preamble: str = "", name: str = "paper.tex", context_words: int = 50) -> list[dict]:
    src = tmp_path / "src"
    src.mkdir(parents=True, exist_ok=True)
    (src / name).write_text("\\documentclass{article}\n" + preamble + "\n\\begin{document}\n" + body
                            + "\n\\end{document}\n")
    ingest([src], tmp_path / "out", IngestConfig(workers=1, progress=False, context_words=context_words))
    return list(read_records(tmp_path / "out"))


def test_labels_wrapped_in_user_macros_never_reach_the_context(tmp_path):
    preamble = r"""
\def\eqn#1{Eq.~(\ref{#1})}
\newcommand{\Eqn}[1]{\eqn{#1}}
\newcommand{\EQN}[1]{see \Eqn{#1}}
\newcommand{\seefig}[2][see]{#1 Figure~\ref{fig:#2}}
\def\eqq(#1){(\eqref{#1})}
\newcommand{\gw}{gravitational wave}
\newcommand{\mycite}[1]{\citep{#1}}
\let\R\ref
\newcommand{\seeref}{see~\ref}
"""
    body = r"""Performing the integral \eqn{borelTransf} we find
\begin{equation} a = b \label{borelTransf} \end{equation}
and \EQN{deepKeyOne} with \seefig[compare]{lensMap} and \eqq(delimKey) and \cite{smithJones2020}
and \citep[p.~3]{keyTwo} and \mycite{wrappedCite} a \gw signal, \autoref{sec:intro} and \cref{eq:deep}
and \R{aliasKey} or \seeref{tailKey}.
\begin{equation} c = d \end{equation}
"""
    first, second = _paper(tmp_path, body, preamble)
    assert first["context_before"] == "Performing the integral we find"
    # (a ref-like call is cut whole: "see" and "compare" went with their labels)
    assert second["context_before"] == ("Performing the integral we find and with and and and and a gravitational "
                                        "wave signal and and or")
    text = json.dumps([first, second])
    for key in ("borelTransf", "deepKeyOne", "lensMap", "delimKey", "smithJones2020", "keyTwo", "wrappedCite",
                "intro", "deep", "aliasKey", "tailKey"):
        assert key not in text


def test_ref_like_macros_are_found_through_any_depth_and_delimited_parameters():
    table, _ = collect_macros(r"""\def\a#1{\ref{#1}}\newcommand{\b}[1]{\a{#1}}\newcommand{\c}[1]{x \b{#1}}
    \def\d(#1){\cite{#1}}\newcommand{\plain}[1]{\textbf{#1}}\newcommand{\pic}[1]{\includegraphics{#1}}""")
    assert ref_like_macros(table) == {"a", "b", "c", "d", "pic"}


def test_figures_tables_options_files_boxes_and_dimensions_are_cut(tmp_path):
    body = r"""Before the figure we discuss lensing.
\begin{figure}[ht]\centering
\includegraphics[width=0.8\linewidth]{figures/ogc4_events.pdf}
\caption{Events predicted by the model}\label{fig:ev}
\end{figure}
\epsfxsize=4.7cm \centerline{\epsfbox{lhbox4.eps}} \psfig{file=plot.ps,height=5cm}
\hbox to 5cm{\vbox{\hrule height 1.5cm}} \vskip 2mm plus 1mm \hspace*{-3pt}
\begin{table}[b]\begin{tabular}{cc} alpha & beta \\ gamma & delta \end{tabular}\caption{Numbers}\end{table}
\setlength{\unitlength}{1cm}\parindent=0pt \resizebox{0.5\textwidth}{!}{\includegraphics{fig2}}
\begin{wrapfigure}{r}{0.4\textwidth}\includegraphics{wrapped.png}\end{wrapfigure}
After the figure the mass grows.
\begin{equation} m = 1 \end{equation}
"""
    (rec,) = _paper(tmp_path, body)
    assert rec["context_before"] == "Before the figure we discuss lensing After the figure the mass grows"


def test_bibliography_is_cut_and_ends_the_context(tmp_path):
    body = r"""Words before the last equation.
\begin{equation} z = 1 \end{equation}
Closing words of the paper.
\begin{thebibliography}{9}
\bibitem{chay} J. Chay, H. Georgi and B. Grinstein, Phys. Lett. B 247 (1990) 399.
\end{thebibliography}
"""
    (rec,) = _paper(tmp_path, body)
    assert rec["context_after"] == "Closing words of the paper"
    # a "References" section of plain lines, and stray \bibitems, are a bibliography too
    body2 = r"""Intro words.
\begin{equation} y = 2 \end{equation}
Final remarks here.
\section*{References}
Chay J, Georgi H 1990 Phys Lett B 247 399
\appendix
\section{Details}
Appendix words.
"""
    (rec2,) = _paper(tmp_path / "two", body2)
    assert rec2["context_after"] == "Final remarks here"
    body3 = "Text.\n\\begin{equation} x = 3 \\end{equation}\nLast words.\n\\bibitem{a} A. Author, ApJ 500 (1998) 1."
    (rec3,) = _paper(tmp_path / "three", body3)
    assert rec3["context_after"] == "Last words"


def test_context_never_crosses_a_section_or_the_end_of_the_document(tmp_path):
    body = r"""Intro words about stars.
\section{Galaxies}
Galaxy words here.
\begin{equation} g = 1 \end{equation}
Closing galaxy words.
\section*{Clusters}
Cluster words.
\begin{equation} h = 2 \end{equation}
\chapter{Next}
Chapter words.
"""
    src = tmp_path / "src"
    src.mkdir()
    (src / "p.tex").write_text("\\documentclass{report}\\begin{document}\n" + body
                               + "\\end{document}\nAfter the end never read.\n")
    ingest([src], tmp_path / "out", IngestConfig(workers=1, progress=False))
    g, h = read_records(tmp_path / "out")
    assert (g["context_before"], g["context_after"]) == ("Galaxies Galaxy words here", "Closing galaxy words")
    assert (h["context_before"], h["context_after"]) == ("Clusters Cluster words", "")


def test_text_macros_and_accents_become_words():
    extractor = ContextExtractor()
    table, _ = collect_macros(r"\newcommand{\lcdm}{$\Lambda$CDM cosmology}\newcommand{\etal}{et al.}")
    words = extractor.words(r"the \lcdm{} model of Schr\"odinger, \'etale maps and Erd\H{o}s \etal", table.macros)
    assert words == ["the", "CDM", "cosmology", "model", "of", "Schrödinger", "étale", "maps", "and", "Erdős",
                     "et", "al"]
    assert extractor.pylatexenc_calls == 0
    assert "eq" not in simplify_prose(r"as in \eqref{eq:main} and \ref{fig:a}").split()


def test_one_brace_scanner_for_groups_separators_and_balance():
    text = r"\frac{a\}{b}}{c} & d \\ \begin{x} e & f \end{x} & {g & h}"
    assert group_end(text, 5) == len(r"\frac{a\}{b}}")
    assert find_top_level(text, 0, "&") == text.index(" & d") + 1
    assert split_top_level(r"a & \begin{m} b & c \end{m} & {d & e} \& f", "&") == \
        ["a ", r" \begin{m} b & c \end{m} ", r" {d & e} \& f"]
    assert split_top_level(r"a \\ {b \\ c} \\ d", "\\\\") == ["a ", r" {b \\ c} ", " d"]
    assert braces_balanced(r"{a\{}") and not braces_balanced("}{") and not braces_balanced("{a")
