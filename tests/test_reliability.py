"""Issue 15: caches shared by threads and processes, caches in trouble, one run per folder, bad input.

Real parts throughout: several processes x several threads checking equations with real pdflatex into one
real sqlite file while every core is kept busy; a damaged cache file, a cache folder that cannot be written,
a file-size limit (what a full disk looks like to a writer), a lock held past the busy timeout; a second
`topiceq run` on a folder in use; and the command line's answers to bad input (one line, no traceback).
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipeline.compile_check import CheckStats, check
from topiceq.cli import main

REPO = Path(__file__).resolve().parents[1]

# Valid ones, errors, and ones that must be checked alone (they may leave a trace in a shared run).
EQUATIONS = [
    r"x^2 + y^2 = z^2", r"\frac{a}{b} \sqrt[3]{x}", r"\foo + 1", r"\frac{a", r"\left( x",
    r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}", r"\begin{split} a &= b", r"x \end{matrix}",
    r"f(x) = \begin{cases} 1 & x > 0 \\ 0 & \text{otherwise} \end{cases}", r"\mathbb{R}^n \times \bm{x}",
    r"\makeatletter \def\@tempa{x} \makeatother y", r"\global\let\end\relax", r"}",
    r"\operatorname{Tr}(A) \coloneqq \sum_{i} a_{ii}", r"\begin{aligned} a &= b \\ c &= d \end{aligned}",
] + [rf"\sum_{{i=1}}^{{{n}}} i = \frac{{{n}({n}+1)}}{{2}}" for n in range(9)]


def env_for_children(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


@pytest.fixture(scope="module")
def uncached(pdflatex, tmp_path_factory) -> dict[str, list]:
    """The verdicts with the verdict cache off (in a cache folder of their own)."""
    verdicts = check(EQUATIONS, use_cache=False, cache_dir=tmp_path_factory.mktemp("reference"))
    return {eq: [v.ok, v.error] for eq, v in zip(EQUATIONS, verdicts)}


# --------------------------------------------------------------------------------------- the verdict cache
STRESS_WORKER = textwrap.dedent(r"""
    import json, random, sys, threading, time
    from pathlib import Path
    from pipeline.compile_cache import VerdictCache
    from pipeline.compile_check import CheckStats, check

    cache_dir, go, seed, equations = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
    errors, warnings, seen = [], [], []
    lock = threading.Lock()

    def checker(t):
        rng = random.Random(seed * 10 + t)
        for _ in range(2):
            chosen = rng.sample(equations, k=len(equations) * 2 // 3)
            stats = CheckStats()
            try:
                verdicts = check(chosen, workers=2, cache_dir=cache_dir, stats=stats)
            except Exception as exc:
                with lock: errors.append(f"check: {type(exc).__name__}: {exc}")
                continue
            with lock:
                warnings.extend(stats.warnings)
                seen.extend([eq, v.ok, v.error] for eq, v in zip(chosen, verdicts))

    def hammer(t):
        # New cache objects on new files, at the same moment in every process: the creation race.
        rng = random.Random(seed * 100 + t)
        for i in range(12):
            try:
                cache = VerdictCache(cache_dir / f"fresh-{i}")
                keys = [f"k{rng.randrange(40)}" for _ in range(8)]
                cache.get_verdicts(keys)
                cache.put_verdicts([(k, True, None, 0.0) for k in keys])
                cache.put_meanings("p", {k: "x" for k in keys})
                with lock: warnings.extend(cache.warnings)
                cache.close()
            except Exception as exc:
                with lock: errors.append(f"hammer: {type(exc).__name__}: {exc}")

    while not go.exists():
        time.sleep(0.01)
    threads = [threading.Thread(target=checker, args=(t,)) for t in range(3)]
    threads += [threading.Thread(target=hammer, args=(t,)) for t in range(3)]
    for th in threads: th.start()
    for th in threads: th.join()
    print(json.dumps({"errors": errors, "warnings": warnings, "seen": seen}))
""")


def busy_cores() -> list[subprocess.Popen]:
    """One busy loop per core, at normal priority: the checks compete for every CPU."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]


def stop(processes: list[subprocess.Popen]) -> None:
    for p in processes:
        p.kill()
        p.wait()


def test_processes_and_threads_share_one_cache_under_cpu_load(uncached, tmp_path):
    """3 processes x (3 checking threads + 3 threads opening new cache files at once), all cores busy:
    0 errors, 0 warnings, every verdict equal to the uncached one."""
    cache_dir, go = tmp_path / "cache", tmp_path / "go"
    load = busy_cores()
    try:
        workers = [subprocess.Popen([sys.executable, "-c", STRESS_WORKER, str(cache_dir), str(go), str(seed),
                                     json.dumps(EQUATIONS)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, env=env_for_children()) for seed in range(3)]
        time.sleep(1.0)  # every worker imported and waiting: they start together
        go.touch()
        results = [p.communicate(timeout=240) for p in workers]
    finally:
        stop(load)
    for p, (out, err) in zip(workers, results):
        assert p.returncode == 0, err[-3000:]
        report = json.loads(out.strip().splitlines()[-1])
        assert report["errors"] == [] and report["warnings"] == [], (report["errors"], report["warnings"])
        assert len(report["seen"]) == 3 * 2 * (len(EQUATIONS) * 2 // 3)
        wrong = [(eq, ok, error) for eq, ok, error in report["seen"] if [ok, error] != uncached[eq]]
        assert wrong == []
    with sqlite3.connect(cache_dir / "verdicts.sqlite") as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert con.execute("SELECT count(*) FROM verdicts").fetchone()[0] == len(EQUATIONS)


def test_a_damaged_cache_file_is_set_aside_and_rebuilt(uncached, tmp_path):
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    (cache_dir / "verdicts.sqlite").write_bytes(b"this is not a database\n" * 200)
    stats = CheckStats()
    verdicts = check(EQUATIONS, cache_dir=cache_dir, stats=stats)
    assert [[v.ok, v.error] for v in verdicts] == [uncached[eq] for eq in EQUATIONS]
    assert any("damaged" in w and "set aside" in w for w in stats.warnings), stats.warnings
    assert len(list(cache_dir.glob("verdicts.sqlite.corrupt-*"))) == 1
    again = CheckStats()
    check(EQUATIONS, cache_dir=cache_dir, stats=again)
    assert again.cache_hits == len(EQUATIONS) and again.warnings == []  # rebuilt, and filled

    # A damaged preloaded format would make every verdict wrong: set aside and built again.
    formats = [f for f in (cache_dir / "formats").glob("*-u.fmt")]
    assert formats
    for fmt in formats:
        data = bytearray(fmt.read_bytes())
        data[len(data) // 2] ^= 0xFF
        fmt.write_bytes(bytes(data))
    stats = CheckStats()
    verdicts = check(EQUATIONS, cache_dir=cache_dir, use_cache=False, stats=stats)
    assert [[v.ok, v.error] for v in verdicts] == [uncached[eq] for eq in EQUATIONS]
    assert any("preloaded format" in w and "damaged" in w for w in stats.warnings), stats.warnings


def test_a_cache_folder_that_cannot_be_written_degrades_to_checking(uncached, tmp_path):
    """A file where the cache folder should be (as for root, whom a read-only mode does not stop)."""
    (tmp_path / "file").write_text("x")
    stats = CheckStats()
    verdicts = check(EQUATIONS, cache_dir=tmp_path / "file" / "compile", stats=stats)
    assert [[v.ok, v.error] for v in verdicts] == [uncached[eq] for eq in EQUATIONS]
    assert any("cannot be used" in w for w in stats.warnings), stats.warnings


DEGRADED_CHECK = textwrap.dedent(r"""
    import json, resource, signal, sys
    from pathlib import Path
    from pipeline import compile_cache
    from pipeline.compile_check import CheckStats, check

    cache_dir, equations, file_limit, busy_s = Path(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    compile_cache.BUSY_TIMEOUT_S = busy_s
    if file_limit:
        # What a full disk looks like to this process: writes past the limit fail (EFBIG). Soft limit only,
        # so the sandbox's `ulimit -f` still gives pdflatex its own limit.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    stats = CheckStats()
    verdicts = check(equations, cache_dir=cache_dir, stats=stats)
    print(json.dumps({"verdicts": [[v.ok, v.error] for v in verdicts], "warnings": stats.warnings}))
""")


def degraded_check(cache_dir: Path, file_limit: int = 0, busy_s: float = 30.0) -> dict:
    done = subprocess.run([sys.executable, "-c", DEGRADED_CHECK, str(cache_dir), json.dumps(EQUATIONS),
                           str(file_limit), str(busy_s)], capture_output=True, text=True, timeout=300,
                          env=env_for_children())
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_full_disk_degrades_to_checking(uncached, tmp_path):
    """Writes past 640 KB fail: no preloaded format (18 MB), no verdict cache (the control-sequence meanings
    it keeps take more); the scratch files of a run (the state check is ~430 KB) still fit."""
    result = degraded_check(tmp_path / "cache", file_limit=640 * 1024)
    assert result["verdicts"] == [uncached[eq] for eq in EQUATIONS]
    warnings = " | ".join(result["warnings"])
    assert "preloaded format" in warnings and "compile cache" in warnings, warnings


def test_a_cache_locked_past_the_busy_timeout_degrades_to_checking(uncached, tmp_path):
    cache_dir = tmp_path / "cache"
    check(EQUATIONS[:3], cache_dir=cache_dir)  # the file exists, in WAL mode
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sqlite3, time
        con = sqlite3.connect({str(cache_dir / 'verdicts.sqlite')!r}, isolation_level=None)
        con.execute("BEGIN EXCLUSIVE")
        print("locked", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = degraded_check(cache_dir, busy_s=0.5)
    finally:
        holder.kill()
        holder.wait()
    assert result["verdicts"] == [uncached[eq] for eq in EQUATIONS]
    assert any("cannot be used" in w and "locked" in w for w in result["warnings"]), result["warnings"]


# ------------------------------------------------------------------------------- Prefect's task records
def test_task_records_damaged_or_unwritable_never_fail_a_run(tmp_path):
    from flows.caching import RunResultStorage, set_aside_if_damaged, take_warnings, write_atomic

    take_warnings()
    storage = RunResultStorage(basepath=str(tmp_path / "results"))
    storage.write_path("stage-key", b"a record", _sync=True)
    assert (tmp_path / "results" / "stage-key").read_bytes() == b"a record"
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["stage-key"]  # no temporary left behind

    set_aside_if_damaged(tmp_path / "results" / "stage-key")  # not a record Prefect can read back
    assert not (tmp_path / "results" / "stage-key").exists()
    assert len(list((tmp_path / "results").glob("stage-key.damaged-*"))) == 1

    (tmp_path / "file").write_text("x")  # results folder impossible: a file is in the way
    blocked = RunResultStorage(basepath=str(tmp_path / "file" / "results"))
    blocked.write_path("stage-key", b"a record", _sync=True)  # no exception: the next run computes again
    warnings = take_warnings()
    assert any("was damaged" in w for w in warnings) and any("could not keep a task result" in w for w in warnings)

    write_atomic(tmp_path / "out.txt", "whole")
    assert (tmp_path / "out.txt").read_text() == "whole" and len(list(tmp_path.glob("*.part"))) == 0


# --------------------------------------------------------------------------------------------- run folders
def test_a_second_run_on_a_folder_in_use_stops_and_says_so(tmp_path, shared_arxiv):
    """A real second process: `topiceq run` on a folder whose lock another process holds."""
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from flows.launch import hold_run_folder
        with hold_run_folder({str(run_dir)!r}):
            print("holding", flush=True)
            time.sleep(120)
    """)], stdout=subprocess.PIPE, text=True, env=env_for_children())
    try:
        assert holder.stdout.readline().strip() == "holding"
        env = env_for_children()
        env.pop("PREFECT_HOME", None)  # as `make run` has it: the run folder's own
        second = subprocess.run([sys.executable, "-m", "topiceq.cli", "run", "--preset", "tiny", "--corpus",
                                 str(shared_arxiv / "sample"), "--out", str(run_dir)],
                                capture_output=True, text=True, timeout=180, env=env)
    finally:
        holder.kill()
        holder.wait()
    assert second.returncode == 2
    last = [line for line in second.stderr.splitlines() if line.startswith("topiceq run: error: ")][-1]
    assert last.startswith(f"topiceq run: error: {run_dir} is in use by another topiceq run (pid {holder.pid}, "
                           "started "), second.stderr[-2000:]
    assert last.endswith("wait for it to finish, or pass another --out")
    assert "Traceback" not in second.stderr
    assert not (run_dir / ".prefect-results").exists()  # nothing of the run was started


def test_the_next_run_stops_a_killed_runs_server_and_nothing_else(tmp_path):
    """Stand-ins carrying the server's command-line mark: the one with the folder's PREFECT_HOME is stopped,
    one with another home is left alone."""
    from flows.launch import SERVER_COMMAND, hold_run_folder, servers_of

    run_dir = tmp_path / "run"
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)", SERVER_COMMAND.decode()]
    orphan = subprocess.Popen(sleeper, env={**os.environ, "PREFECT_HOME": str(run_dir / ".prefect")})
    other = subprocess.Popen(sleeper, env={**os.environ, "PREFECT_HOME": str(tmp_path / "elsewhere")})
    try:
        time.sleep(0.5)
        assert servers_of(run_dir) == [orphan.pid]
        with hold_run_folder(run_dir):
            assert orphan.wait(timeout=10) == -signal.SIGTERM
        assert other.poll() is None
    finally:
        for p in (orphan, other):
            p.kill()
            p.wait()


# ---------------------------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def trained(tmp_path_factory, shared_text, one_torch_thread_module):
    """A tiny equation model with its ingest and topics, a tiny character model, and another ingest's topics."""
    from test_flows import write_corpus

    root = tmp_path_factory.mktemp("bad-input")
    corpus = write_corpus(root / "corpus", papers=24)
    other = write_corpus(root / "other-corpus", papers=24, seed=1)
    for paper in other.rglob("*.tex"):  # other papers (equation ids name the paper)
        paper.rename(paper.with_name("other-" + paper.name))
    text = root / "text.txt"
    text.write_text((shared_text / "tinyshakespeare.txt").read_text()[:20000])
    steps = [["ingest", str(corpus), "--out", str(root / "ingest")],
             ["ingest", str(other), "--out", str(root / "other-ingest")],
             ["topics", "fit", "--data", str(root / "ingest"), "--out", str(root / "topics"), "--k", "2"],
             ["topics", "fit", "--data", str(root / "other-ingest"), "--out", str(root / "other-topics"), "--k", "2"],
             ["train", "--preset", "eq-tiny", "--data", str(root / "ingest"), "--topics", str(root / "topics"),
              "--out", str(root / "eq"), "--max-steps", "2", "--no-progress"],
             ["train", "--preset", "tiny", "--data", str(text), "--out", str(root / "char"), "--max-steps", "2",
              "--no-progress"]]
    for argv in steps:
        assert main(argv) == 0, argv
    return root


@pytest.fixture(scope="module")
def one_torch_thread_module():
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def one_line_error(capsys, argv: list[str], expect_code: int | None = None) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and (expect_code is None or code == expect_code), (code, err)
    assert err and "Traceback" not in "\n".join(err)
    last = err[-1]
    assert last.startswith(f"topiceq {argv[0]}: error: "), err
    return last


def test_bad_checkpoints_get_one_line(trained, capsys, tmp_path):
    good = (trained / "eq" / "best.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(good[: len(good) // 3])
    (tmp_path / "garbage.pt").write_bytes(b"\x80\x02garbage" * 100)
    topics = str(trained / "topics")
    msg = one_line_error(capsys, ["generate", "--checkpoint", str(tmp_path / "truncated.pt"), "--topics", topics,
                                  "--words", "energy"])
    assert "truncated or damaged" in msg and "--checkpoint" in msg
    msg = one_line_error(capsys, ["score", "--checkpoint", str(tmp_path / "garbage.pt"), "hello"])
    assert "not a checkpoint written by `topiceq train`" in msg
    msg = one_line_error(capsys, ["generate", "--checkpoint", str(trained / "char"), "--topics", topics,
                                  "--words", "energy"])
    assert "is a character model" in msg and "needs an equation model" in msg
    msg = one_line_error(capsys, ["quiz", "--checkpoint", str(trained / "char"), "--data", str(trained / "ingest"),
                                  "--topics", topics, "-n", "2", "--out", str(tmp_path / "quiz")])
    assert "is a character model" in msg
    assert not (tmp_path / "quiz").exists()


def test_topics_of_another_ingest_get_one_line(trained, capsys, tmp_path):
    msg = one_line_error(capsys, ["train", "--preset", "eq-tiny", "--data", str(trained / "ingest"), "--topics",
                                  str(trained / "other-topics"), "--out", str(tmp_path / "m"), "--max-steps", "1"])
    assert "was fitted on another ingest" in msg and "topiceq topics fit --data" in msg
    msg = one_line_error(capsys, ["generate", "--checkpoint", str(trained / "eq"), "--topics",
                                  str(trained / "other-topics"), "--topic", "0", "-n", "1", "--no-check"])
    assert "pass the --topics folder the model was trained with" in msg


def test_words_without_a_known_word_get_one_line(trained, capsys):
    msg = one_line_error(capsys, ["generate", "--checkpoint", str(trained / "eq"), "--topics",
                                  str(trained / "topics"), "--words", "qqqzzz", "xxyyq", "--no-check"])
    assert "qqqzzz" in msg


def test_a_corpus_without_display_equations_stops_the_run_with_one_line(tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "p.tex").write_text("\\documentclass{article}\\begin{document}Only $x$ inline."
                                              "\\end{document}\n")
    env = env_for_children()
    env.pop("PREFECT_HOME", None)
    done = subprocess.run([sys.executable, "-m", "topiceq.cli", "run", "--preset", "tiny", "--corpus",
                           str(tmp_path / "plain"), "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("topiceq run: error: ")]
    assert len(errors) == 1 and "has no display equations" in errors[0], done.stderr[-3000:]


def test_corpus_and_output_trouble_get_one_line(capsys, tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    msg = one_line_error(capsys, ["run", "--corpus", str(tmp_path / "empty"), "--out", str(tmp_path / "r1")])
    assert "is empty" in msg
    msg = one_line_error(capsys, ["ingest", str(tmp_path / "empty"), "--out", str(tmp_path / "i1")])
    assert "no input could be read" in msg
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "p.tex").write_text("\\documentclass{article}\\begin{document}Only $x$ inline."
                                              "\\end{document}\n")
    assert main(["ingest", str(tmp_path / "plain"), "--out", str(tmp_path / "i2")]) == 0
    capsys.readouterr()
    msg = one_line_error(capsys, ["topics", "fit", "--data", str(tmp_path / "i2"), "--out", str(tmp_path / "t2")])
    assert "holds no equations" in msg
    (tmp_path / "a-file").write_text("x")
    msg = one_line_error(capsys, ["run", "--corpus", str(tmp_path / "plain"), "--out", str(tmp_path / "a-file" / "run")])
    assert "cannot write to --out" in msg
    monkeypatch.setenv("PATH", str(tmp_path / "no-tex-here"))
    msg = one_line_error(capsys, ["run", "--corpus", str(tmp_path / "plain"), "--out", str(tmp_path / "r3")])
    assert "pdflatex not found" in msg and "apt-get install texlive-latex-base" in msg
    msg = one_line_error(capsys, ["compile-check", str(tmp_path / "plain" / "p.tex")])
    assert "pdflatex not found" in msg
