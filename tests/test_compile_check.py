"""Compile check: real pdflatex, batched verdicts identical to the one-document rule, sandbox, cache, CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import compile_safety
from pipeline.compile_check import (CompileConfig, Verdict, check, check_one_document, last_stats,
                                    pdflatex_runs)
from pipeline.compile_tex import SandboxConfig

REPO = Path(__file__).resolve().parents[1]

# Valid, invalid and broken-in-the-middle equations. The broken ones leave TeX's state half-changed
# (open groups, amsmath's alignment counters, \if@ignore, a \begin{split} that eats \end{document}): the
# valid ones after them in the same shared run must still get their own verdicts.
HAND_MADE = [
    r"x^2 + y^2 = z^2",
    r"\foo + 1",
    r"\frac{a}{b} \sqrt[3]{x}",
    r"\begin{split} a &= b",  # eats \end{document}
    r"\begin{aligned} a &= b \\ c &= d \end{aligned}",
    r"x \end{matrix}",
    r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}",
    r"\frac{a",  # runaway argument
    r"\left( \frac{1}{2} \right)",
    r"\left( x",
    r"f(x) = \begin{cases} 1 & x > 0 \\ 0 & \text{otherwise} \end{cases}",
    "a\n\nb",  # a paragraph break inside the display
    r"\mathbb{R}^n \times \mathcal{O} \bm{x}",
    r"x \] \[ y",
    r"\frac",
    r"\text{\foo}",
    r"}",
    r"\operatorname{Tr}(A) \coloneqq \sum_{i} a_{ii}",
    "",
    r"\begin{foo} x \end{foo}",
    r"x_1, \dots, x_n \\",
    r"\alpha \beta \Hom(A, B)",
]

HOSTILE = [
    r"\end{document}",
    r"\input{/etc/passwd}",
    r"\global\let\end\relax",  # would break every later equation of a shared run
    r"\makeatletter \def\@tempa{x} \makeatother y",
    r"\catcode`\%=12 x % y",
    r"\expandafter\def\csname teq@do\endcsname#1{} x",  # the batch's own driver macro
    r"\immediate\write17{@@B1} x",
    "a\x00b",
    "x^^5cfoo",
]


@pytest.fixture(scope="module")
def xdg(tmp_path_factory) -> Path:
    """One cache for the module: the preamble format and control-sequence meanings are built once."""
    return tmp_path_factory.mktemp("xdg")


@pytest.fixture(scope="module")
def cache_dir(xdg) -> Path:
    return xdg / "topiceq" / "compile"


@pytest.fixture(scope="module")
def reference(pdflatex) -> list[Verdict]:
    return [check_one_document(eq) for eq in HAND_MADE + HOSTILE]


def test_scan_finds_names_and_rules_out_lexical_tricks():
    s = compile_safety.scan(r"\frac{a}{b} \begin{matrix} x \end{matrix} \foo")
    assert s.unsafe_reason is None
    assert s.names == {"frac", "begin", "end", "foo"}
    assert s.environments == {"matrix"}
    assert compile_safety.scan("x^^5cdef").unsafe_reason == "^^ notation"
    assert compile_safety.scan("a\x00b").unsafe_reason == "control character"
    assert compile_safety.scan("α").unsafe_reason == "non-ASCII character"
    assert compile_safety.scan(r"\begin{\foo}").unsafe_reason is not None
    assert compile_safety.scan(r"\@tempa").unsafe_reason is not None  # \@ is not a reviewed symbol
    assert compile_safety.meaning_is_char('\\mathchar"3221')
    assert compile_safety.meaning_is_char('\\protected macro:->\\delimiter "426830A ')
    assert not compile_safety.meaning_is_char("macro:->\\global \\let \\x \\y ")


def test_batched_verdicts_equal_one_document_rule(reference, cache_dir):
    equations = HAND_MADE + HOSTILE
    got = check(equations, use_cache=False, cache_dir=cache_dir)
    stats = last_stats()
    for eq, ref, v in zip(equations, reference, got):
        assert (v.ok, v.error) == (ref.ok, ref.error), eq
    # The hand-made set really went through shared runs, and the hostile ones were checked alone.
    assert stats.batch_safe >= len(HAND_MADE) - 1
    assert stats.batch_runs < stats.batch_safe
    assert stats.alone >= len(HOSTILE) - 1


def test_reference_rule_verdicts(reference):
    by_eq = dict(zip(HAND_MADE + HOSTILE, reference))
    assert by_eq[r"x^2 + y^2 = z^2"].ok
    assert by_eq[r"\foo + 1"].error == r"! Undefined control sequence. \foo"
    assert not by_eq["a\n\nb"].ok
    assert not by_eq[""].ok  # amsmath refuses an empty display
    assert not by_eq[r"\end{document}"].ok
    assert not by_eq[r"\input{/etc/passwd}"].ok and "not found" in by_eq[r"\input{/etc/passwd}"].error
    assert not by_eq[r"\global\let\end\relax"].ok


def test_shell_escape_runs_nothing(pdflatex, tmp_path, cache_dir):
    target = tmp_path / "pwned"
    v = check_one_document(rf"\write18{{touch {target}}} x")
    assert v.ok  # compiles, as the rule says, and runs nothing
    assert not target.exists()
    verdicts = check([rf"\immediate\write18{{touch {target}}} x"], use_cache=False, cache_dir=cache_dir)
    assert not target.exists() and verdicts[0].ok


def test_no_file_written_outside_the_folder(pdflatex, tmp_path, cache_dir):
    target = tmp_path / "written.tex"
    eq = rf"\newwrite\w \immediate\openout\w={target} \immediate\write\w{{x}} \immediate\closeout\w x"
    v = check([eq], use_cache=False, cache_dir=cache_dir)[0]
    assert not target.exists()
    assert not v.ok and "write" in v.error  # paranoid openout_any: an error, not a write


def test_loop_times_out_alone_and_neighbours_keep_their_verdicts(pdflatex, cache_dir):
    equations = [r"a + b", r"\def\x{\x}\x", r"\frac{1}{2}", r"\loop\iftrue\repeat", r"\foo"]
    got = check(equations, use_cache=False, cache_dir=cache_dir, timeout=2.0)
    assert [v.ok for v in got] == [True, False, True, False, False]
    assert got[1].error.startswith("timeout") and got[3].error.startswith("timeout")
    assert got[4].error == r"! Undefined control sequence. \foo"


def test_large_and_strange_inputs_get_a_verdict(pdflatex, cache_dir):
    big = " + ".join(f"x_{{{i}}}" for i in range(14000))  # about 100 KB
    assert len(big) > 100_000
    equations = [big, "a\x00b", r"\end{document}", "", "x^2"]
    got = check(equations, use_cache=False, cache_dir=cache_dir)
    assert len(got) == len(equations)
    ref = check_one_document(big)
    assert (got[0].ok, got[0].error) == (ref.ok, ref.error)
    assert got[4].ok and not got[2].ok and not got[3].ok


def test_memory_cap_applies(pdflatex):
    # pdflatex cannot even start in 20 MB of address space: the cap is really set on the process.
    assert not check_one_document("x", config=CompileConfig(sandbox=SandboxConfig(memory_mb=20))).ok


def test_order_kept_and_duplicates(pdflatex, cache_dir):
    equations = [r"\bad", "a", r"\bad", "b^2", "a", r"\frac{"]
    got = check(equations, use_cache=False, cache_dir=cache_dir, workers=2)
    assert [v.ok for v in got] == [False, True, False, True, True, False]
    assert got[0].error == got[2].error == r"! Undefined control sequence. \bad"


def test_cache_hit_runs_no_pdflatex(pdflatex, cache_dir, tmp_path):
    nonce = tmp_path.name.replace("_", "")  # equations this test is the first to see
    equations = [f"x_{{{nonce}}} + 1", rf"\nope{nonce}", rf"\begin{{matrix}} {nonce} \end{{matrix}}"]
    first = check(equations, cache_dir=cache_dir)
    assert last_stats().cache_hits == 0
    before = pdflatex_runs()
    second = check(equations, cache_dir=cache_dir)
    assert pdflatex_runs() == before
    assert last_stats().cache_hits == len(equations)
    assert [(v.ok, v.error) for v in first] == [(v.ok, v.error) for v in second]
    check(equations, cache_dir=cache_dir, use_cache=False)  # --no-cache really runs pdflatex again
    assert pdflatex_runs() > before


def test_cli_json_lines_in_input_order(pdflatex, tmp_path, xdg):
    src = tmp_path / "eqs.jsonl"
    src.write_text("\n".join(json.dumps({"id": i, "eq": e}) for i, e in enumerate(["x", r"\zzz", "y"])) + "\n")
    env_cache = {"XDG_CACHE_HOME": str(xdg)}
    proc = subprocess.run([sys.executable, "-m", "topiceq.cli", "compile-check", str(src), "--field", "eq",
                           "--json", "--workers", "1"], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **env_cache}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines == [{"ok": True, "error": None}, {"ok": False, "error": r"! Undefined control sequence. \zzz"},
                     {"ok": True, "error": None}]
    assert "n=3 compiled=2" in proc.stderr and "Undefined control sequence" in proc.stderr
    assert (xdg / "topiceq" / "compile" / "verdicts.sqlite").is_file()
    bad = subprocess.run([sys.executable, "-m", "topiceq.cli", "compile-check", str(src)], capture_output=True,
                         text=True, cwd=REPO, env={**os.environ, **env_cache}, timeout=60)
    assert bad.returncode != 0 and "field" in bad.stderr
