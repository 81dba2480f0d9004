"""Shared pdflatex runs of the compile check: what an equation leaves behind is put back, so the next one gets
the verdict it gets alone (the one-document rule), without being re-checked alone."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import compile_batch
from pipeline.compile_check import (DEFAULT_PREAMBLE, CompileConfig, _Checker, check, check_one_document,
                                    last_stats)

# The first use of \mathsf / \mathfrak / \mathit / \mathtt allocates a math family and redefines the alphabet
# globally: an error inside the argument reads `\select@group` on first use and `\math@egroup` after it.
ALPHABETS = [
    r"\mathsf{x}",
    r"\mathsf{a",
    r"\mathfrak{g} \mathsf{y}",
    r"\mathsf{\frac{a}{b}",
    r"\mathit{\mathsf{x}}}",
    r"\bm{\mathsf{a}",
    r"\mathbf{x} \mathsf{",
    r"\text{\Large $\mathsf{a}$} \mathsf{b",
    r"\mathtt{a} \mathsf{b} \mathfrak{c} \mathit{d}",
    r"\mathsf{\mathfrak{x}",
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("compile-cache")


@pytest.fixture(scope="module")
def checker(pdflatex, cache_dir) -> _Checker:
    return _Checker(DEFAULT_PREAMBLE, cache_dir, 10.0, CompileConfig(), use_cache=False)


@pytest.fixture(scope="module")
def alphabet_reference(pdflatex) -> list:
    return [check_one_document(eq) for eq in ALPHABETS]


def test_math_versions_read_from_the_preamble(checker):
    assert checker.versions() == ["normal", "bold"]
    assert compile_batch.math_versions(None) is None
    assert compile_batch.math_versions(r"macro:->\aftergroup \mv@normal@reset \aftergroup \mv@sans@reset ") \
        == ["normal", "sans"]


def test_alphabet_first_use_put_back_after_every_equation(checker, alphabet_reference):
    fmt = checker.format(DEFAULT_PREAMBLE)
    with_reset, used = compile_batch.run_batch(ALPHABETS, DEFAULT_PREAMBLE, fmt, 10.0, checker.config.sandbox,
                                               state_tex=checker.state_tex(), versions=checker.versions())
    assert used == len(ALPHABETS)  # no restart
    for eq, ref, got in zip(ALPHABETS, alphabet_reference, with_reset):
        assert (got.ok, got.error) == (ref.ok, ref.error), eq  # a verdict, not a doubt, and the rule's
    # Without it, the errors after a first use in the same run read differently and must be re-checked alone.
    without, _ = compile_batch.run_batch(ALPHABETS, DEFAULT_PREAMBLE, fmt, 10.0, checker.config.sandbox,
                                         state_tex=checker.state_tex(), versions=None)
    assert any(got.ok is None for got in without)


def test_alphabet_equations_through_check(cache_dir, alphabet_reference):
    order = ALPHABETS[::-1]  # another order than above: other first uses
    got = check(order, use_cache=False, cache_dir=cache_dir, workers=1)
    for eq, ref, v in zip(order, alphabet_reference[::-1], got):
        assert (v.ok, v.error) == (ref.ok, ref.error), eq
    stats = last_stats()
    assert stats.in_doubt == 0 and stats.alone == 0


# Share a run since the reviewed list and the environment-name reading were widened: local parameters,
# counter formatting, \vspace, and \begin/\end arguments that are not plain names (odd characters, a blank
# line, no closing brace at all). Each must get the rule's verdict from a shared run.
WIDENED = [
    r"\begin{alig^ned} x \end{alig^ned}", "\\begin{ali\n\ngned} x \\end{aligned}", r"\begin{aligned} a &= b \end{",
    r"\begin{ aligned} x \end{ aligned}", "\\begin{a b}\n x \\end{a  b}",
    r"\begin{cases} a \end{ca", r"\begin{matrix", r"\begin{x_y} \end{x_y}", r"\begin{aligned}a\\b\end{aligned",
    r"a \time\hats b", r"\the\nulldelimiterspace", r"\time=5 \the\time", r"x \] \time=3 \[ y", r"\year=-5 \the\year",
    r"\smallskip x", r"x \vspace{1pt} y", r"x \vspace*{2pt} \bigskip \medskip", r"\vbox{\vspace{3pt} x}",
    r"\alph{foo}", r"\alph{page}", r"\arabic\eqdef", r"\Roman{equation}", r"\the", r"\the\frac", r"\the\alpha",
    r"\nulldelimiterspace=\foo x", r"\left. x \right| \delimiterfactor=2000 \left( \frac{a}{b} \right)",
    r"g_{\mathchoice{\mbox{\boldmath$\displaystyle\bf\theta$}}{\mbox{\boldmath$\textstyle\bf\theta$}}"
    r"{\mbox{\boldmath$\scriptstyle\bf\theta$}}{\mbox{\boldmath$\scriptscriptstyle\bf\theta$}}}",
    r"\boldmath x", r"\mathsf{a} \text{\boldmath $\mathsf{b} \mathfrak{c}$} \mathsf{d", r"x \] \boldmath \[ \mathsf{y}",
    r"\text{\boldmath $x$ \unboldmath $y$}", r"\mbox{\boldmath $\mathit{x}$} \mathit{\frac{a}",
]
# Still checked alone: \end{X} runs \endX, defined here although X is not (\endgroup, \endgraf = \par); "(" names
# LaTeX's \( ; "matrix " (with the space) is defined, as the inner command of a robust \matrix.
STILL_ALONE = [r"\end{group}", r"\end{graf} x", r"\begin{(} a \end{)}", r"\begin{matrix } a \end{matrix }"]


def test_widened_batch_rules_keep_the_rules_verdicts(cache_dir):
    equations = WIDENED + STILL_ALONE
    got = check(equations, use_cache=False, cache_dir=cache_dir, workers=2)
    stats = last_stats()
    for eq, v in zip(equations, got):
        ref = check_one_document(eq)
        assert (v.ok, v.error) == (ref.ok, ref.error), eq
    assert stats.alone == len(STILL_ALONE) and stats.in_doubt == 0


def test_alone_runs_start_from_an_uncompressed_copy_of_pdflatex_format(checker):
    import gzip
    import subprocess
    std = checker.formats.standard()
    assert std is not None and std.read_bytes()[:2] != b"\x1f\x8b"
    src = subprocess.run(["kpsewhich", "-engine=pdftex", "pdflatex.fmt"], capture_output=True, text=True).stdout
    assert gzip.decompress(Path(src.strip()).read_bytes()) == std.read_bytes()  # the bytes pdftex undumps
    for eq in [r"x^2", r"\foo", r"\input{/etc/passwd}", r"\label{a} x \label{a}", r"\end{document}",
               r"\makeatletter \@tempa", r"\csname jobname\endcsname"]:
        got, ref = checker.alone(eq), check_one_document(eq)
        assert (got.ok, got.error) == (ref.ok, ref.error), eq


def test_broken_alignment_is_closed_or_the_run_restarts(checker):
    fmt = checker.format(DEFAULT_PREAMBLE)
    # A runaway argument inside a matrix leaves an alignment open: closed with \crcr and a brace, the run
    # goes on and the equations after it get the rule's verdicts.
    equations = [r"\begin{matrix} a & \frac{", "x", r"\begin{aligned} a &= b \end{aligned}", r"\mathsf{y",
                 r"\begin{pmatrix} 1 \\ 2 & \left( 3 \end{pmatrix}", r"\foo"]
    got, used = compile_batch.run_batch(equations, DEFAULT_PREAMBLE, fmt, 10.0, checker.config.sandbox,
                                        state_tex=checker.state_tex(), versions=checker.versions())
    assert used == len(equations)
    for eq, v in zip(equations, got):
        ref = check_one_document(eq)
        assert (v.ok, v.error) == (ref.ok, ref.error), eq
    # Inside `aligned` the cell's template groups are closed first and the alignment cannot be ended: the
    # bounded retries give up and the run stops right after that equation (the caller restarts the rest).
    equations = [r"\begin{aligned} a & \frac{", "x"]
    got, used = compile_batch.run_batch(equations, DEFAULT_PREAMBLE, fmt, 10.0, checker.config.sandbox,
                                        state_tex=checker.state_tex(), versions=checker.versions())
    assert used == 1 and got[0].error == check_one_document(equations[0]).error
    assert [(v.ok, v.error) for v in check(equations, use_cache=False, cache_dir=checker.cache_dir)] == \
        [(v.ok, v.error) for v in map(check_one_document, equations)]


def test_names_defined_by_a_broken_equation_are_made_undefined_again(checker):
    # Each of these breaks off after defining a watched name that is undefined after \begin{document}
    # (amsmath's \macc@kerna, NFSS's \last@fontshape): the state check makes it undefined again and the run
    # goes on; the equations after them (accents, font substitution) read as they do alone.
    equations = [r"\mathcal{G}_n = \widetilde{M/I^nM} \end{matrix}", r"\hat{x} \widetilde{ab}",
                 r"T_x(I) \times \text{Lift}(x, A') \t", r"\text{\bfseries\scshape a} \hat{\hat{y}}", r"\acute"]
    log: list[str] = []
    got, used = compile_batch.run_batch(equations, DEFAULT_PREAMBLE, checker.format(DEFAULT_PREAMBLE), 10.0,
                                        checker.config.sandbox, state_tex=checker.state_tex(),
                                        versions=checker.versions(), raw_log=log)
    assert used == len(equations)
    assert any(line.startswith("@@NONCE U ") for line in log)  # the mechanism was used
    for eq, v in zip(equations, got):
        ref = check_one_document(eq)
        assert (v.ok, v.error) == (ref.ok, ref.error), eq


def test_unbalanced_equations_go_last_in_their_chunk():
    from pipeline.compile_safety import may_break_off
    assert may_break_off(r"\frac{a") and may_break_off(r"a}") and may_break_off(r"\begin{matrix} a")
    assert may_break_off(r"\left( x") and not may_break_off(r"\left( x \right) \{ \lefteqn{y}")
    assert not may_break_off(r"\begin{cases} a \end{cases}")


def test_equation_that_hangs_only_in_a_shared_run_becomes_a_doubt(checker, cache_dir):
    # Cut off inside `aligned`, \bm's token loop reads past the equation's file into the batch driver and
    # never ends (alone, the file's end stops pdflatex at once): the run is killed after its short budget,
    # the equation is in doubt and checked alone, its neighbours keep their verdicts.
    hang = r"\begin{aligned}H(\textrm{y} \,|\, \textrm{x}, \bm"
    got, used = compile_batch.run_batch([hang, "x"], DEFAULT_PREAMBLE, checker.format(DEFAULT_PREAMBLE), 10.0,
                                        checker.config.sandbox, state_tex=checker.state_tex(),
                                        versions=checker.versions())
    assert used == 1 and got[0].ok is None
    # Through check() it is unbalanced, so it goes last in its run, where the driver's final \@@end ends \bm's
    # loop: no hang there at all.
    equations = ["a + b", hang, r"\foo", r"\frac{1}{2}"]
    verdicts = check(equations, use_cache=False, cache_dir=cache_dir, workers=1)
    for eq, v in zip(equations, verdicts):
        ref = check_one_document(eq)
        assert (v.ok, v.error) == (ref.ok, ref.error), eq
