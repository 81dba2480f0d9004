"""Flows on tiny data inside `prefect_test_harness` (temporary PREFECT_HOME from conftest): results, the
content-keyed cache (second run all Cached, --refresh and changed input recompute), retries for transient
failures only, and a failure that names the stage and the input."""
from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import pytest

from flows.caching import StageFailed, TransientError, content_hash, is_transient, stage_policy, stage_task

WORDS = ("to be or not to be that is the question whether tis nobler in the mind to suffer the slings "
         "and arrows of outrageous fortune or to take arms against a sea of troubles\n")


# ------------------------------------------------------------------------------------- keys, no Prefect run
def test_content_hash_follows_content_not_time(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("one")
    h1 = content_hash(f)
    f.write_text("one")  # same bytes, new mtime
    assert content_hash(f) == h1
    f.write_text("two")
    assert content_hash(f) != h1
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "x").write_text("x")
    hd = content_hash(d)
    (d / ".topiceq-task.json").write_text("{}")  # markers are not content
    assert content_hash(d) == hd
    (d / "sub" / "y").write_text("y")
    assert content_hash(d) != hd
    with pytest.raises(FileNotFoundError, match="missing"):
        content_hash(tmp_path / "missing")


@dataclass
class _Cfg:
    k: int = 3
    name: str = "x"


def test_stage_key_uses_config_and_input_content_but_only_the_path_of_outputs(tmp_path):
    """Prefect's INPUTS and TASK_SOURCE composed with PathContent and RepoCode (no task context here, so
    TASK_SOURCE adds nothing)."""
    src = tmp_path / "in.txt"
    src.write_text("data")
    out = tmp_path / "out"

    def key(stage="s", code=(), **changes):
        inputs = {"src": src, "out": out, "cfg": _Cfg(), **changes}
        return stage_policy(stage, ("out",), code).compute_key(task_ctx=None, inputs=inputs, flow_parameters={})

    first = key()
    assert first == key() and first.startswith("s-")
    assert first != key(cfg=_Cfg(k=4))
    assert first != key(stage="s2")
    assert first != key(code=("pipeline.compile_safety",))
    out.mkdir()
    (out / "result").write_text("whatever the task wrote")
    assert key() == first  # an output's content is not part of the key
    src.write_text("other data")
    assert key() != first  # an input's content is
    assert key(src=tmp_path / "missing") != first  # a missing input: a key all the same (the task reports it)


def test_stage_failed_message_pickles_and_transient_classification():
    err = StageFailed("ingest", "/data/corpus", "ValueError: bad", transient=False)
    assert str(err) == "stage 'ingest' failed on input /data/corpus: ValueError: bad"
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and again.stage == "ingest"
    assert is_transient(TransientError("busy")) and is_transient(TimeoutError()) and is_transient(OSError(28, "full"))
    assert not is_transient(ValueError("bad input")) and not is_transient(FileNotFoundError("x"))
    assert not is_transient(StageFailed("a", "b", "c", transient=False))


# ------------------------------------------------------------------------------------------ Prefect runs
@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=None):
        yield


def task_states(flow_state, timeout: float = 30.0) -> dict[str, list[str]]:
    """{task name: [state names]} of one flow run, read back from the Prefect API.

    Task runs report their states to the server through events, which land a moment after the flow
    returns: poll until every task run has a final state."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    flow_run_id = flow_state.state_details.flow_run_id
    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        settled = all(tr.state is not None and tr.state.is_final() for tr in runs)
        if settled or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    states: dict[str, list[str]] = {}
    for tr in runs:
        states.setdefault(tr.name.rsplit("-", 1)[0], []).append(tr.state.name if tr.state else "None")
    return states


def test_charlm_flow_then_cache_then_refresh_then_changed_input(harness, tmp_path):
    from flows.charlm import charlm_flow
    from flows.launch import run_flow

    text = tmp_path / "text.txt"
    text.write_text(WORDS * 60)
    run_dir = tmp_path / "run"
    params = dict(text=str(text), preset="tiny", max_steps=6, n_samples=2, sample_length=40, score_chars=2000,
                  artifacts=True)

    first = run_flow(charlm_flow, run_dir, return_state=True, **params)
    summary = first.result()
    assert summary["steps"] == 6
    assert len(summary["samples"]) == 2
    assert 0 < summary["held_out_bits_per_char"] < 10
    for name in ("checkpoint", "samples", "report", "summary"):
        assert Path(summary["outputs"][name]).is_file(), name
    assert "Bits per character" in (run_dir / "report.md").read_text()
    states = task_states(first)
    assert set(states) == {"charlm-train", "charlm-sample", "charlm-score"}
    assert all(s == ["Completed"] for s in states.values()), states

    best = run_dir / "model" / "best.pt"
    stamp = best.stat().st_mtime_ns
    second = run_flow(charlm_flow, run_dir, return_state=True, **params)
    assert second.result()["samples"] == summary["samples"]
    assert all(s == ["Cached"] for s in task_states(second).values()), task_states(second)
    assert best.stat().st_mtime_ns == stamp  # nothing was retrained

    refreshed = run_flow(charlm_flow, run_dir, return_state=True, refresh=True, **params)
    assert all(s == ["Completed"] for s in task_states(refreshed).values()), task_states(refreshed)

    (run_dir / "samples.txt").unlink()  # an output deleted by hand: that task alone recomputes
    again = run_flow(charlm_flow, run_dir, return_state=True, **params)
    states = task_states(again)
    assert states["charlm-sample"] == ["Completed"] and states["charlm-train"] == ["Cached"], states
    assert (run_dir / "samples.txt").is_file()

    text.write_text(WORDS.upper() * 60)  # new content: everything downstream of it recomputes
    changed = run_flow(charlm_flow, run_dir, return_state=True, **params)
    assert all(s == ["Completed"] for s in task_states(changed).values()), task_states(changed)


def test_a_task_failure_names_the_stage_and_the_input(harness, tmp_path):
    from flows.charlm import charlm_flow
    from flows.launch import run_flow

    text = tmp_path / "short.txt"
    text.write_text(WORDS * 20)
    with pytest.raises(StageFailed) as info:
        # A real failure of the training stage: `--set` of a setting that does not exist.
        run_flow(charlm_flow, tmp_path / "run", text=str(text), preset="tiny", max_steps=2,
                 overrides=["no_such_setting=1"], artifacts=False)
    message = str(info.value)
    assert message.startswith(f"stage 'charlm-train' failed on input {text}")
    assert "no_such_setting" in message


_attempts: dict[str, int] = {}


@stage_task("flaky", input_arg="name", outputs=(), code=(), retries=2, retry_delay_seconds=0)
def _flaky(name: str, fail_times: int, exc: str) -> str:
    _attempts[name] = _attempts.get(name, 0) + 1
    if _attempts[name] <= fail_times:
        raise {"transient": TransientError, "bad": ValueError}[exc](f"attempt {_attempts[name]}")
    return f"{name} ok after {_attempts[name]}"


def test_retries_only_for_transient_failures(harness):
    from prefect import flow

    @flow
    def run_flaky(name: str, fail_times: int, exc: str) -> str:
        return _flaky(name, fail_times, exc)

    assert run_flaky("t", 2, "transient") == "t ok after 3"
    with pytest.raises(StageFailed, match="stage 'flaky' failed on input b: ValueError: attempt 1"):
        run_flaky("b", 1, "bad")
    assert _attempts["b"] == 1  # bad input: never retried


# ------------------------------------------------------------------------------- equations flow, tiny
PHYSICS = ("energy mass particle field quantum momentum wave photon electron spin gravity star galaxy "
           "orbit relativity").split()
STATS = ("probability variance estimator likelihood prior posterior sample regression bayesian random "
         "distribution inference model data noise").split()
EQS_PHYS = [r"E = m c^2", r"p = \hbar k", r"\nabla \cdot E = \rho", r"F = G \frac{m_1 m_2}{r^2}",
            r"H \psi = E \psi", r"\omega = 2 \pi f", r"L = T - V", r"S = \int L \, dt"]
EQS_STAT = [r"\mu = \frac{1}{n} \sum_{i=1}^{n} x_i", r"\sigma^2 = E[(X - \mu)^2]",
            r"p(\theta | x) \propto p(x | \theta) p(\theta)", r"y = \beta_0 + \beta_1 x + \epsilon",
            r"\hat{\theta} = \arg\max_\theta L(\theta)", r"P(A | B) = \frac{P(B | A) P(A)}{P(B)}"]


def write_corpus(root: Path, papers: int = 50, seed: int = 0) -> Path:
    """Small LaTeX papers in two areas, each equation surrounded by words of its area."""
    import random

    rng = random.Random(seed)
    for i in range(papers):
        area, words, eqs = (("physics", PHYSICS, EQS_PHYS) if i % 2 == 0 else ("stat", STATS, EQS_STAT))
        body = []
        for j in range(6):
            before = " ".join(rng.choice(words) for _ in range(30))
            after = " ".join(rng.choice(words) for _ in range(30))
            eq = rng.choice(eqs) + ("" if j % 2 else f" + {rng.randint(1, 9)}")
            body.append(f"{before}\n\\begin{{equation}}\n{eq}\n\\end{{equation}}\n{after}\n")
        folder = root / area
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"paper{i:02d}.tex").write_text(
            "\\documentclass{article}\n\\begin{document}\n" + "\n".join(body) + "\\end{document}\n")
    return root


@pytest.mark.slow
def test_equations_flow_tiny_then_cached(harness, tmp_path):
    from flows.equations import equations_flow
    from flows.launch import run_flow

    corpus = write_corpus(tmp_path / "corpus")
    run_dir = tmp_path / "run"
    params = dict(corpus=[str(corpus)], preset="tiny", max_steps=120, workers=2)
    first = run_flow(equations_flow, run_dir, return_state=True, **params)
    summary = first.result()
    assert summary["equations"] > 200 and summary["papers"] == 50
    assert summary["topics"] == 4
    assert set(summary["bpc_test"]) and all(0 < v < 20 for v in summary["bpc_test"].values())
    assert set(summary["compile_rate"]) == {"topic", "topic-unconstrained", "plain"}
    generated = (run_dir / "generated" / "topic.jsonl").read_text().splitlines()
    verdicts = (run_dir / "compile" / "topic.verdicts.jsonl").read_text().splitlines()
    assert len(generated) == len(verdicts) == 4 * 6
    rate = sum(json.loads(v)["ok"] for v in verdicts) / len(verdicts)
    assert summary["compile_rate"]["topic"] == pytest.approx(rate)
    # issue 20: the constrained sets are balanced; the detectors' accuracy is a figure of the run
    assert summary["balanced_share"]["topic"] == 1.0 and summary["balanced_share"]["plain"] == 1.0
    assert set(summary["detector_accuracy"]) == set(summary["detector_by_area"]) == {"topic", "topic-unconstrained", "plain"}
    for name in ("quiz json", "quiz html", "quiz pdf", "quiz answers", "report"):
        assert Path(summary["outputs"][name]).is_file(), name
    report = (run_dir / "report.md").read_text()
    for title in ("Corpus", "Topics", "Bits per character", "compile", "Sample equations", "Quiz", "Well-formed"):
        assert title in report
    assert "| area | equations |" in report  # the bits/char table per area

    # The same tables as Prefect artifacts of this flow run, read back from the API.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[first.state_details.flow_run_id])))
    keys = {a.key: a for a in artifacts}
    assert {"equations-corpus", "equations-topics", "equations-bpc", "equations-compile-rates",
            "equations-samples", "equations-quiz", "equations-wellformed"} <= set(keys), sorted(keys)
    assert "quiz.html" in str(keys["equations-quiz"].data)  # Prefect stores a link artifact as markdown

    # A "fake" that is a verbatim training equation (memorised) never enters the flow's quiz
    from flows.equations import export_quiz_files

    train_eq = next(json.loads(line)["equation"] for line in (run_dir / "ingest" / "equations.jsonl").open()
                    if json.loads(line)["split"] == "train")
    fakes, checked = tmp_path / "copy.jsonl", tmp_path / "copy.verdicts.jsonl"
    fakes.write_text(json.dumps({"equation": train_eq, "topic": 0}) + "\n" + "\n".join(generated) + "\n")
    checked.write_text(json.dumps({"ok": True}) + "\n" + "\n".join(verdicts) + "\n")
    copied = export_quiz_files.fn(run_dir / "ingest", run_dir / "topics", fakes, checked, tmp_path / "quiz", 4, 0)
    assert copied["counts"]["fakes_copy_of_real"] == 1

    second = run_flow(equations_flow, run_dir, return_state=True, **params)
    assert second.result()["compile_rate"] == summary["compile_rate"]
    states = task_states(second)
    assert all(set(s) == {"Cached"} for s in states.values()), states


# ------------------------------------------------------------------------------------ Dask scale-out
def write_equations(path: Path, n: int = 60) -> Path:
    """Real and broken equations, one JSON line each."""
    good = EQS_PHYS + EQS_STAT
    bad = [r"\frac{a", r"x^", r"\undefinedmacro x", r"\left( x", r"a }", r"\begin{matrix} a"]
    lines = []
    for i in range(n):
        eq = good[i % len(good)] + f" + {i}" if i % 3 else bad[i % len(bad)]
        lines.append(json.dumps({"equation": eq}))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
@pytest.mark.network
def test_ingest_shards_and_compile_checks_on_dask_equal_threads(harness, tmp_path):
    """The equations flow's ingest stage and compile-check batches on a LocalCluster of 2 worker processes
    (127.0.0.1): ingest runs as 2 shard tasks and a merge, and gives the same equations.jsonl, byte for byte,
    and the same corpus statistics as the single ingest task on threads; the compile checks give the same
    verdicts, in the same order (the verdict cache is bypassed: real pdflatex)."""
    from prefect import flow

    from flows.equations import compile_check_batch, ingest_stage
    from flows.launch import configured

    eq_file = write_equations(tmp_path / "eqs.jsonl")
    corpus = write_corpus(tmp_path / "corpus", papers=12)

    @flow
    def ingest_and_check(corpus: str, equations_file: str, out: str, batch: int = 15) -> dict:
        stats = ingest_stage([Path(corpus)], Path(out) / "ingest", 2, {})
        futures = [compile_check_batch.submit(Path(equations_file), start, start + batch, 1, False)
                   for start in range(0, 60, batch)]
        return {"stats": stats, "verdicts": [v for f in futures for v in f.result()["verdicts"]]}

    runs = {}
    for runner in ("threads", "dask"):
        state = configured(ingest_and_check, tmp_path / runner, task_runner=runner, workers=2)(
            str(corpus), str(eq_file), str(tmp_path / runner), return_state=True)
        runs[runner] = (state.result(), task_states(state))
    (on_threads, threads_tasks), (on_dask, dask_tasks) = runs["threads"], runs["dask"]

    assert threads_tasks["ingest"] == ["Completed"] and "ingest-shard" not in threads_tasks, threads_tasks
    assert dask_tasks["ingest-shard"] == ["Completed"] * 2 and dask_tasks["ingest-merge"] == ["Completed"], dask_tasks
    assert "ingest" not in dask_tasks
    shards = sorted(p.name for p in (tmp_path / "dask" / "ingest-shards").iterdir())
    assert shards == ["001-of-002", "002-of-002"]
    assert not (tmp_path / "threads" / "ingest-shards").exists()
    ingested = (tmp_path / "threads" / "ingest" / "equations.jsonl").read_bytes()
    assert ingested and (tmp_path / "dask" / "ingest" / "equations.jsonl").read_bytes() == ingested
    drop_time = lambda stats: {k: v for k, v in stats.items() if k != "seconds"}  # noqa: E731
    assert drop_time(on_dask["stats"]) == drop_time(on_threads["stats"])
    assert on_threads["stats"]["papers_read"] == 12 and on_threads["stats"]["equations"] > 12

    assert len(on_threads["verdicts"]) == 60
    assert on_dask["verdicts"] == on_threads["verdicts"]
    oks = [ok for ok, _ in on_threads["verdicts"]]
    assert sum(oks) == 40 and not any(oks[i] for i in range(0, 60, 3))  # the broken ones fail, the rest compile


# ------------------------------------------------------------------------------------- crash and resume
@pytest.mark.slow
def test_a_killed_run_resumes_training_from_its_last_checkpoint(tmp_path):
    """`topiceq run` killed with SIGKILL mid-training; the next run resumes the training task from last.pt
    (same key) and finishes it, instead of starting over."""
    import os
    import signal
    import subprocess
    import sys
    import time

    text = tmp_path / "text.txt"
    text.write_text(WORDS * 400)
    run_dir = tmp_path / "run"
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect-home"))
    cmd = [str(Path(sys.executable).parent / "topiceq"), "run", "--flow", "charlm", "--text", str(text),
           "--preset", "tiny", "--out", str(run_dir), "--json"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    last = run_dir / "model" / "last.pt"
    deadline = time.monotonic() + 240
    while not last.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert last.exists() and proc.poll() is None, "training never wrote last.pt before the run ended"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["resumed_training"] is True
    assert summary["steps"] == 200  # the tiny preset's budget, reached across the two runs


def test_code_part_of_the_key_follows_imports_only():
    from flows.caching import code_closure

    files = {p.name for p in code_closure(("flows.charlm",))}
    assert {"charlm.py", "caching.py", "reporting.py"} <= files
    assert "deploy.py" not in files and "equations.py" not in files


@pytest.mark.slow
def test_hmm_flow_runs_both_experiments_then_comes_from_the_cache(harness, tmp_path):
    from flows.hmm import hmm_flow
    from flows.launch import run_flow

    book = tmp_path / "book.txt"
    book.write_text("*** START OF THIS PROJECT GUTENBERG EBOOK X ***\n\n" + (WORDS * 8 + "\n\n") * 4)
    params = dict(text=str(book), chars=800, iterations=8, grid=3, instability_iterations=2, bits=100)
    first = run_flow(hmm_flow, tmp_path / "run", **params)
    report = (tmp_path / "run" / "report.md").read_text()
    assert "![P(state = 1 | letter) across EM iterations](letters/letters.png)" in report
    assert "![Training log-likelihood by starting point](instability/instability.png)" in report
    figure = Path(first["outputs"]["letters figure"])
    for name in ("letters figure", "instability figure"):
        assert Path(first["outputs"][name]).read_bytes()[:4] == b"\x89PNG"
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[
            "hmm-letters-figure", "hmm-instability-figure"])))
    assert {a.key for a in artifacts} == {"hmm-letters-figure", "hmm-instability-figure"}
    assert all("data:image/png;base64," in a.data for a in artifacts)  # the figure itself, not a path
    stamp = figure.stat().st_mtime_ns
    second = run_flow(hmm_flow, tmp_path / "run", **params)
    assert second["phase_transition_iteration"] == first["phase_transition_iteration"]
    assert figure.stat().st_mtime_ns == stamp  # both tasks came from the cache


def test_judge_reports_the_detector_pooled_and_per_area_of_the_topics(tmp_path):
    """Two topics, one per area: the "math" fakes are another style than its real equations, the "physics"
    fakes are the same style as its reals; the judge's per-area figures say which area gives itself away, with
    the test papers held out. The control (real training equations of the generated set's topics) is at
    chance."""
    import random

    import numpy as np

    from flows.equations import judge_control, judge_generated

    rng = random.Random(0)

    def equation(style: str) -> str:
        a, b = rng.choice("abcxyz"), rng.choice("uvw")
        return (rf"\sum_{{{a}=1}}^{{{rng.randint(2, 99)}}} {b}_{a}" if style == "sum"
                else rf"\frac{{{a} + {b}}}{{\sqrt{{{rng.randint(2, 9)}}}}}")

    data, topics = tmp_path / "ingest", tmp_path / "topics"
    data.mkdir()
    topics.mkdir()
    records = [{"id": f"{split}{t}#{i}", "paper": f"{split}{t}-{i % 4}", "area": area, "split": split,
                "equation": equation(style), "context": ""}
               for split in ("test", "train")
               for t, (area, style) in enumerate((("math", "sum"), ("physics", "frac"))) for i in range(80)]
    (data / "equations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    np.savez(topics / "theta.npz", ids=np.array([r["id"] for r in records]),
             theta=np.array([[0.9, 0.1] if "0#" in r["id"] else [0.1, 0.9] for r in records], np.float32))
    (topics / "topics.json").write_text(json.dumps({"topics": [
        {"auto_label": "math: sum", "areas": {"math": 0.9, "physics": 0.1}},
        {"auto_label": "physics: frac", "areas": {"physics": 0.8, "math": 0.2}}]}))
    fakes = tmp_path / "fakes.jsonl"
    fakes.write_text("".join(json.dumps({"topic": t, "equation": equation("frac")}) + "\n"
                             for t in (0, 1) for _ in range(40)))

    out = judge_generated.fn(fakes, data, topics, seed=0)
    by_area = out["detector_char_by_area"]
    assert set(by_area) == {"math", "physics"} and all(v["pairs"] == 40 and v["papers"] == 4
                                                       for v in by_area.values())
    assert by_area["math"]["accuracy"] > 0.95 and by_area["physics"]["accuracy"] < 0.75
    assert by_area["physics"]["accuracy"] < out["detector_char"] < by_area["math"]["accuracy"]
    assert out["detector_pairs"] == 80 and out["detector_papers"] == 8 and out["detector_char_spread"] >= 0.0
    assert out["repeats"] >= 2 and 0.5 < out["detector_char_any_fold"] < 1.0
    assert out["balanced"] == out["real_balanced"] == 1.0
    control = judge_control.fn(fakes, data, topics, seed=0)
    assert control["detector_pairs"] == 80 and control["detector_char"] < 0.65
