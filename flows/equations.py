"""The `equations` flow: ingest -> topics -> train (topic model + unconditioned baseline) -> evaluate ->
generate by topic -> compile check -> quiz -> report.

Every task is a thin wrapper over one `pipeline/` or `topicrnn/` function, takes and returns paths and small
records, and is cached by the content of its inputs (flows/caching.py). Compile checks fan out in batches
over the task runner (threads, or Dask workers); on a Dask cluster ingest is dealt into one shard per
worker thread and merged back (same bytes as one ingest). Outputs, all under the run folder:

    ingest/        equations.jsonl, report.json            (pipeline.ingest.ingest, or merge_shards)
    ingest-shards/ NNN-of-MMM/ per shard (Dask runner only) (pipeline.ingest.ingest with shard_index)
    topics/        the topic model                         (pipeline.topic_fit.fit_topics)
    models/topic/  best.pt of the θ-conditioned LSTM       (topicrnn.train.train)
    models/plain/  best.pt of the unconditioned baseline   (same budget, topic_dim=0)
    generated/     equations.jsonl: topic, set, equation   (topicrnn.generation.generate_for_topics)
    compile/       verdicts.jsonl, one per generated line  (pipeline.compile_check.check)
                   + per set: balanced share and real-vs-fake detector accuracy, and the control of real
                   training equations (pipeline.judge)
    quiz/          quiz.json, answers.json, quiz.html, quiz.pdf (pipeline.quiz, pipeline.quiz_export)
    report.md, summary.json
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.caching import stage_task, started_with_same_key, take_warnings, write_atomic
from flows.reporting import RunReport, format_summary


# ------------------------------------------------------------------------------------------------ presets
@dataclass
class EquationsPreset:
    """Sizes and budgets of one `topiceq run --preset`."""

    model_preset: str                     # topicrnn preset of both equation models
    plain_overrides: tuple[str, ...] = ()  # more --set for the baseline (its width: equal scoring parameters)
    topics: dict[str, Any] = field(default_factory=dict)  # TopicConfig overrides
    max_steps: int | None = None          # None: the model preset's own budget
    per_set: int = 500                    # equations generated per generation set, spread evenly over topics
    temperature: float = 1.0              # topicrnn.generation.DEFAULT_TEMPERATURE (issue 20, measured)
    top_p: float | None = None            # nucleus sampling (None: off)
    length_control: str = "cap"           # constrained sets: topicrnn.generation.LENGTH_CONTROL (off|cap|target)
    eval_max_equations: int | None = 2000  # test equations scored for the bpc table (None: all)
    quiz_questions: int = 10
    compile_batch: int = 500              # equations per compile-check task


RUN_PRESETS: dict[str, EquationsPreset] = {
    # Tests and smoke runs on a handful of papers: a few topics, a few dozen training steps.
    "tiny": EquationsPreset("eq-tiny", topics=dict(k=4, passes=4, no_below=1, max_per_paper=None,
                                                   max_per_source=None, min_tokens=1, metrics=False),
                            per_set=24, eval_max_equations=200, quiz_questions=4, compile_batch=25),
    # `make run` on 2 CPU cores: the topic owner's defaults, 2 x 128 models, 3,000 steps each (issue 20: at
    # equal CPU time more steps beat a wider model or a larger batch; 5,000 steps lower bits/char but not the
    # detector). The topic model reads θ from its own context encoder with FiLM (eq-ctx-cpu): on unseen papers
    # it beat the plain model of equal scoring parameters where LDA θ joined to the input did not (bench/
    # conditioning_bench.py); the baseline is widened to 2 x 159 to match its 440 K scoring parameters.
    # Measured from a fresh clone on a quiet 2-core machine: docs/results.md, issue 20.
    "cpu": EquationsPreset("eq-ctx-cpu", plain_overrides=("hidden=159",), max_steps=3000, per_set=500,
                           eval_max_equations=2000, quiz_questions=10),
    # One GPU: the full 2 x 512 models; 1,000 equations per set (the compile-rate figure's sample size). The
    # topic model is the context encoder + FiLM with its regularisation (eq-ctx-lstm: 30 % of rows without
    # context, half of each context's words): LDA θ joined to the input lost to a plain 2 x 512 LSTM on unseen
    # papers on an H200 (+2.4 %, issue 20's table), the regularised learned context won there (−1.1 %), and on
    # the CPU (bench/conditioning_bench.py). Baseline widened to 2 x 552 for equal scoring parameters (4.24 M
    # against 4.19 M with the demo corpus's 2,001 context words). Its own GPU figure is still owed.
    "gpu": EquationsPreset("eq-ctx-lstm", plain_overrides=("hidden=552",), per_set=1000, eval_max_equations=None,
                           quiz_questions=20, compile_batch=1000),
}

PLAIN_OVERRIDES = ["topic_dim=0", "context_encoder=false", "film=none"]  # the baseline of any model preset

# Generation sets: (name, model, syntax-aware decoding). The quiz draws its fakes from "topic".
GENERATION_SETS = (("topic", "topic", True), ("topic-unconstrained", "topic", False),
                   ("plain", "plain", True))
CONTROL_SET = "control: real training equations"  # the judge's control row (judge_control)


# -------------------------------------------------------------------------------------------------- tasks
@stage_task("ingest", input_arg="corpus", outputs=("out_dir",), code=("pipeline.ingest",))
def ingest_corpus(corpus: list[Path], out_dir: Path, workers: int) -> dict[str, Any]:
    """`pipeline.ingest.ingest`: LaTeX sources -> out_dir/equations.jsonl + report.json."""
    from pipeline.ingest import IngestConfig, ingest

    report = ingest([str(c) for c in corpus], out_dir, IngestConfig(workers=workers, progress=True))
    return _corpus_stats(report)


@stage_task("ingest-shard", input_arg="corpus", outputs=("out_dir",), code=("pipeline.ingest",))
def ingest_corpus_shard(corpus: list[Path], out_dir: Path, shard_index: int, shard_count: int) -> dict[str, Any]:
    """`pipeline.ingest.ingest` of every shard_count-th paper (from shard_index) in this worker's process."""
    from pipeline.ingest import IngestConfig, ingest

    report = ingest([str(c) for c in corpus], out_dir,
                    IngestConfig(workers=1, progress=True, shard_index=shard_index, shard_count=shard_count))
    return {"shard": shard_index, "papers_read": report["papers_read"], "equations": report["equations"]}


@stage_task("ingest-merge", input_arg="shard_dirs", outputs=("out_dir",), code=("pipeline.ingest",))
def merge_ingest_shards(shard_dirs: list[Path], out_dir: Path) -> dict[str, Any]:
    """`pipeline.ingest.merge_shards`: the shards' folders -> out_dir as one unsharded ingest writes it."""
    from pipeline.ingest import merge_shards

    return _corpus_stats(merge_shards(shard_dirs, out_dir))


_CORPUS_STATS = ("papers_read", "papers_with_equations", "equations", "equations_per_area", "papers_per_area",
                 "equations_per_split", "equations_per_env", "dropped", "skipped_count", "partly_read_count",
                 "seconds")


def _corpus_stats(report: dict[str, Any]) -> dict[str, Any]:
    return {k: report.get(k) for k in _CORPUS_STATS}


def ingest_stage(corpus: list[Path], ingest_dir: Path, workers: int, task_options: dict[str, Any]) -> dict[str, Any]:
    """Ingest inside a flow: on threads one task (its own process pool of `workers`); on a Dask cluster one
    shard task per worker thread, then a merge task. Returns the corpus statistics of the ingest report."""
    from prefect.context import FlowRunContext

    from flows.runners import dask_thread_count

    context = FlowRunContext.get()
    shards = dask_thread_count(context.task_runner) if context is not None else None
    if not shards or shards < 2:
        return ingest_corpus.with_options(**task_options)(corpus, ingest_dir, workers)
    shard_root = ingest_dir.parent / "ingest-shards"
    shard_dirs = [shard_root / f"{i + 1:03d}-of-{shards:03d}" for i in range(shards)]
    futures = [ingest_corpus_shard.with_options(**task_options).submit(corpus, shard_dir, i, shards)
               for i, shard_dir in enumerate(shard_dirs)]
    for future in futures:
        future.result()  # raises the shard's StageFailed
    return merge_ingest_shards.with_options(**task_options)(shard_dirs, ingest_dir)


@stage_task("topics", input_arg="data_dir", outputs=("out_dir",), code=("pipeline.topic_fit",))
def fit_topic_model(data_dir: Path, out_dir: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """`pipeline.topic_fit.fit_topics` on the ingest dir's train split."""
    from pipeline.topic_fit import fit_topics
    from pipeline.topics import TopicConfig

    model = fit_topics(data_dir, out_dir, TopicConfig(**overrides), progress=True)
    return {"k": int(model.k), "labels": list(model.labels),
            "top_words": [model.top_words(t, 10) for t in range(int(model.k))],
            "metrics": _jsonable(getattr(model, "metrics", None) or {})}


@stage_task("train", input_arg="data_dir", outputs=("out_dir",), code=("topicrnn.trainers", "topicrnn.presets"),
            retries=1)
def train_equation_model(data_dir: Path, topics_dir: Path | None, out_dir: Path, preset: str,
                         overrides: list[str], max_steps: int | None, device: str) -> dict[str, Any]:
    """`topicrnn.trainers.train_preset` on the ingested equations (with θ from topics_dir, or none for the
    baseline); resumes a crashed attempt of the same key from its last.pt."""
    from topicrnn.presets import apply_overrides, get_preset
    from topicrnn.trainers import train_preset

    resume = started_with_same_key(out_dir) and (Path(out_dir) / "last.pt").is_file()
    p = apply_overrides(get_preset(preset), list(overrides))
    result = train_preset(p, out_dir, data_path=str(data_dir),
                          topics_dir=None if topics_dir is None else str(topics_dir), resume=resume, device=device,
                          max_steps=max_steps, progress=True)
    result = {k: v for k, v in result.items() if k != "history"}
    result["resumed"] = resume
    return result


@stage_task("evaluate", input_arg="checkpoints", outputs=(), code=("topicrnn.evaluation", "topicrnn.checkpoint"))
def evaluate_models(data_dir: Path, topics_dir: Path, checkpoints: list[Path], max_equations: int | None,
                    seed: int, device: str = "cpu") -> dict[str, Any]:
    """`topicrnn.evaluation.evaluate`: bits per character of the test split for each checkpoint (on
    `device`), overall and per area (where the topic helps is rarely uniform)."""
    from topicrnn.checkpoint import load_model
    from topicrnn.evaluation import evaluate
    from topicrnn.device import resolve_device

    models = [load_model(c, device=resolve_device(device)) for c in checkpoints]
    table = evaluate(data_dir, topics_dir, models, split="test", max_equations=max_equations, seed=seed,
                     by="area", progress=True)
    return {"json": table.to_json(), "markdown": table.to_markdown()}


@stage_task("generate", input_arg="checkpoint", outputs=("out_file",),
            code=("topicrnn.generation", "topicrnn.checkpoint", "topicrnn.train"))
def generate_by_topic(checkpoint: Path, data_dir: Path, topics_dir: Path, out_file: Path, set_name: str,
                      per_topic: int, temperature: float, constrained: bool, seed: int,
                      device: str, top_p: float | None = None, length_control: str = "off") -> dict[str, Any]:
    """`per_topic` equations for every topic (θ = the topic's prototype; ignored by an unconditioned model)
    with `topicrnn.generation.generate_for_topics`, under the syntax constraint with target lengths drawn from
    the topic's real training equations under `length_control` (topicrnn.generation.LENGTH_CONTROL); one JSON
    line each in out_file."""
    from pipeline.topics import ThetaTable
    from topicrnn.checkpoint import load_model
    from topicrnn.conditioning import topic_labels, topic_theta, training_prototypes
    from topicrnn.generation import allowed_control_sequences, generate_for_topics, length_settings
    from topicrnn.device import resolve_device

    lm = load_model(checkpoint, device=resolve_device(device))
    topic_model = ThetaTable(topics_dir)  # θ and labels only: no LDA needed
    prototypes = training_prototypes(topic_model, data_dir)
    generated = generate_for_topics(
        lm, {t: topic_theta(topic_model, t, prototypes=prototypes) for t in range(int(topic_model.k))}, per_topic,
        temperature=temperature, seed=seed, constrained=constrained, top_p=top_p,
        syntax=allowed_control_sequences(lm, data_dir) if constrained else None,
        **length_settings(lm, length_control, data_dir, topic_model, constrained))
    labels = topic_labels(topic_model)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(out_file.name + ".part")
    with open(tmp, "w", encoding="utf-8") as fh:
        for g in generated:
            fh.write(json.dumps({"set": set_name, "topic": g.topic, "label": labels[g.topic], "equation": g.equation},
                                ensure_ascii=False) + "\n")
    tmp.replace(out_file)
    return {"set": set_name, "equations": len(generated), "file": str(out_file)}


@stage_task("compile-check", input_arg="equations_file", outputs=(), code=("pipeline.compile_check",))
def compile_check_batch(equations_file: Path, start: int, stop: int, workers: int,
                        use_cache: bool = True) -> dict[str, list]:
    """`pipeline.compile_check.check` on lines [start, stop) of a JSONL file: {"verdicts": [[ok, error], ...]
    in order, "warnings": [...] (a verdict cache in trouble: the check went on without it)}."""
    from pipeline.compile_check import CheckStats, check

    with open(equations_file, encoding="utf-8") as fh:
        lines = [line for i, line in enumerate(fh) if start <= i < stop]
    equations = [json.loads(line)["equation"] for line in lines]
    stats = CheckStats()
    verdicts = check(equations, workers=workers, use_cache=use_cache, stats=stats)
    return {"verdicts": [[bool(v.ok), v.error] for v in verdicts], "warnings": list(stats.warnings)}


@stage_task("judge", input_arg="equations_file", outputs=(),
            code=("pipeline.detector", "pipeline.judge", "pipeline.quiz", "pipeline.topics", "pipeline.wellformed"))
def judge_generated(equations_file: Path, data_dir: Path, topics_dir: Path, seed: int) -> dict[str, Any]:
    """`pipeline.judge.judge` of a generated set (JSONL) against the real test equations: balanced share and
    the real-vs-fake detectors (papers held out; 0.5 = indistinguishable), pooled and per area of the topics."""
    from pipeline.judge import judge
    from pipeline.quiz import quiz_reals
    from pipeline.topics import ThetaTable

    generated = [json.loads(line) for line in equations_file.read_text(encoding="utf-8").splitlines()]
    table = ThetaTable(topics_dir)
    _, test = quiz_reals(data_dir, table.theta_by_id())  # test split, dominant topics
    return judge(generated, test, table, seed)


@stage_task("judge-control", input_arg="equations_file", outputs=(),
            code=("pipeline.detector", "pipeline.judge", "pipeline.quiz", "pipeline.topics", "pipeline.wellformed"))
def judge_control(equations_file: Path, data_dir: Path, topics_dir: Path, seed: int) -> dict[str, Any]:
    """The judge's control: real training equations drawn with the topics of a generated set (JSONL;
    `pipeline.judge.control_equations`), judged as that set is. What a model writing exactly like the
    training papers would reach."""
    from pipeline.judge import control_equations, judge
    from pipeline.quiz import attach_dominant_topics, quiz_reals
    from pipeline.topics import ThetaTable

    topics = [int(json.loads(line)["topic"]) for line in equations_file.read_text(encoding="utf-8").splitlines()]
    table = ThetaTable(topics_dir)
    theta_by_id = table.theta_by_id()
    records, test = quiz_reals(data_dir, theta_by_id)
    train = attach_dominant_topics(records, theta_by_id, split="train")
    return judge(control_equations(train, topics, seed), test, table, seed)


@stage_task("quiz", input_arg="fakes_file", outputs=("out_dir",),
            code=("pipeline.detector", "pipeline.quiz", "pipeline.quiz_export", "pipeline.topics"))
def export_quiz_files(data_dir: Path, topics_dir: Path, fakes_file: Path, verdicts_file: Path, out_dir: Path,
                      n: int, seed: int) -> dict[str, Any]:
    """`pipeline.quiz_export.assemble_quiz`: real test-split equations against the generated ones."""
    from pipeline.quiz import FakeEquation, quiz_reals
    from pipeline.quiz_export import assemble_quiz
    from pipeline.topics import ThetaTable

    topic_table = ThetaTable(topics_dir)
    records, reals = quiz_reals(data_dir, topic_table.theta_by_id())
    fakes = []
    with open(fakes_file, encoding="utf-8") as gf, open(verdicts_file, encoding="utf-8") as vf:
        for g_line, v_line in zip(gf, vf):
            g, v = json.loads(g_line), json.loads(v_line)
            fakes.append(FakeEquation(equation=g["equation"], topic=int(g["topic"]), compiles=bool(v["ok"]),
                                      error=v.get("error")))
    # a fake that is a verbatim copy of a corpus equation (memorised) is no fake: as in `topiceq quiz`
    return assemble_quiz(reals, fakes, n, seed, out_dir, topic_labels=topic_table.labels,
                         known_equations=(r["equation"] for r in records))[2]


# --------------------------------------------------------------------------------------------------- flow
@flow(name="equations", log_prints=True)
def equations_flow(corpus: list[str], out: str, preset: str = "cpu", device: str = "auto", seed: int = 0,
                   refresh: bool = False, workers: int | None = None, artifacts: bool = True,
                   max_steps: int | None = None) -> dict[str, Any]:
    """The whole pipeline on `corpus` (LaTeX files/folders) into the run folder `out`.

    `preset`: tiny | cpu | gpu (see RUN_PRESETS); `refresh` recomputes every task; `max_steps` overrides the
    training budget of both models.
    """
    import os

    logger = get_run_logger()
    take_warnings()  # from earlier flows in this process: not this run's
    if preset not in RUN_PRESETS:
        raise ValueError(f"unknown preset {preset!r}: choose one of {', '.join(RUN_PRESETS)}")
    cfg = RUN_PRESETS[preset]
    if max_steps is not None:
        cfg = replace(cfg, max_steps=max_steps)
    workers = workers or os.cpu_count() or 2
    run_dir = Path(out).resolve()
    corpus_paths = [Path(c).resolve() for c in corpus]
    for c in corpus_paths:
        if not c.exists():
            raise FileNotFoundError(f"corpus {c} does not exist")
    opts = {"refresh_cache": True} if refresh else {}

    def t(task_obj):
        return task_obj.with_options(**opts)

    ingest_dir, topics_dir = run_dir / "ingest", run_dir / "topics"
    corpus_stats = ingest_stage(corpus_paths, ingest_dir, workers, opts)
    if not corpus_stats["equations"]:
        raise ValueError(f"the corpus {', '.join(map(str, corpus_paths))} has no display equations "
                         f"({corpus_stats['papers_read']} papers read; see {ingest_dir / 'report.json'}): "
                         "give papers with \\[...\\], equation or align environments")
    logger.info("ingest: %s equations from %s papers", corpus_stats["equations"], corpus_stats["papers_read"])
    topics = t(fit_topic_model)(ingest_dir, topics_dir, dict(cfg.topics, seed=seed))
    logger.info("topics: K = %s", topics["k"])

    # Same data, tokenizer and budget; the baseline differs only by taking no θ at all (topic_dim = 0, and no
    # context encoder or FiLM when the model preset has them: issue 20's eq-ctx-* presets).
    models = {"topic": run_dir / "models" / "topic", "plain": run_dir / "models" / "plain"}
    trained = {
        "topic": t(train_equation_model)(ingest_dir, topics_dir, models["topic"], cfg.model_preset, [],
                                         cfg.max_steps, device),
        "plain": t(train_equation_model)(ingest_dir, None, models["plain"], cfg.model_preset,
                                         PLAIN_OVERRIDES + list(cfg.plain_overrides), cfg.max_steps, device),
    }
    bpc_future = t(evaluate_models).submit(ingest_dir, topics_dir, [models["plain"], models["topic"]],
                                           cfg.eval_max_equations, seed, device)

    generated: dict[str, dict[str, Any]] = {}
    for set_name, model_name, constrained in GENERATION_SETS:
        generated[set_name] = t(generate_by_topic)(
            models[model_name], ingest_dir, topics_dir, run_dir / "generated" / f"{set_name}.jsonl", set_name,
            max(1, math.ceil(cfg.per_set / topics["k"])), cfg.temperature, constrained, seed, device, cfg.top_p,
            cfg.length_control)
    judged = {set_name: t(judge_generated).submit(Path(info["file"]), ingest_dir, topics_dir, seed)
              for set_name, info in generated.items()}
    judged[CONTROL_SET] = t(judge_control).submit(Path(generated["topic"]["file"]), ingest_dir, topics_dir, seed)

    # Compile checks: fixed-size batches fanned out over the task runner (threads or Dask workers).
    verdict_futures: dict[str, list] = {}
    for set_name, info in generated.items():
        path, n = Path(info["file"]), info["equations"]
        verdict_futures[set_name] = [
            t(compile_check_batch).submit(path, start, min(start + cfg.compile_batch, n), 1)
            for start in range(0, n, cfg.compile_batch)]
    checked = {s: [f.result() for f in fs] for s, fs in verdict_futures.items()}
    verdicts: dict[str, list] = {s: [v for r in rs for v in r["verdicts"]] for s, rs in checked.items()}
    # Warnings of the checks made in this run (a result from the task cache repeats a past run's).
    cache_warnings = sorted({w for fs in verdict_futures.values() for f in fs if f.state.name != "Cached"
                             for w in f.result()["warnings"]})
    compile_dir = run_dir / "compile"
    compile_dir.mkdir(parents=True, exist_ok=True)
    verdict_files = {}
    for set_name, vs in verdicts.items():
        verdict_files[set_name] = write_atomic(compile_dir / f"{set_name}.verdicts.jsonl",
                                               "".join(json.dumps({"ok": ok, "error": err}) + "\n" for ok, err in vs))

    quiz = t(export_quiz_files)(ingest_dir, topics_dir, Path(generated["topic"]["file"]), verdict_files["topic"],
                                run_dir / "quiz", cfg.quiz_questions, seed)
    bpc = bpc_future.result()

    # ------------------------------------------------------------------------------------------- report
    report = RunReport(run_dir, "equations", prefect_artifacts=artifacts)
    report.table("corpus", "Corpus", [
        {"area": area, "papers": (corpus_stats.get("papers_per_area") or {}).get(area, 0), "equations": n}
        for area, n in (corpus_stats.get("equations_per_area") or {}).items()]
        + [{"area": "all", "papers": corpus_stats["papers_read"], "equations": corpus_stats["equations"]}])
    report.table("topics", f"Topics (K = {topics['k']})", [
        {"topic": i, "label": topics["labels"][i], "top words": " ".join(topics["top_words"][i])}
        for i in range(topics["k"])])
    report.markdown("bpc", "Bits per character on the test split", bpc["markdown"])
    rates = compile_rates(generated, verdicts, topics["labels"])
    report.table("compile-rates", "Generated equations that compile", rates)
    quality = {set_name: future.result() for set_name, future in judged.items()}
    control = quality.pop(CONTROL_SET)
    overall_rates = {r["set"]: r["rate"] for r in rates if r["topic"] == "all"}
    report.table("wellformed", "Well-formed and hard to tell from real (detectors: 0.5 = chance; each equation "
                 "classified by a model that never saw its test paper, the mean of "
                 f"{control['repeats']} matchings ± their spread; \"any fold\": stratified folds, where the "
                 "detector can learn the few test papers' own notation; the control row is real training "
                 "equations of the same topics; real test equations balanced: "
                 f"{control['real_balanced']:.1%})", [
        {"set": name, "balanced": round(q["balanced"], 4), "compile rate": overall_rates.get(name),
         "char n-gram detector": _plus_minus(q.get("detector_char"), q.get("detector_char_spread")),
         "bag-of-tokens detector": _rounded(q.get("detector_tokens")),
         "char, any fold": _plus_minus(q.get("detector_char_any_fold"), q.get("detector_char_any_fold_spread")),
         "pairs (same topic and length), test papers": (f"{q['detector_pairs']}, {q['detector_papers']}"
                                                        if "detector_pairs" in q else None),
         "char detector by area of the topic (pairs)": "; ".join(
             f"{area} {v['accuracy']:.3f} ({v['pairs']})" for area, v in (q.get("detector_char_by_area") or {}).items())}
        for name, q in {**quality, CONTROL_SET: control}.items()])
    report.markdown("samples", "Sample equations by topic (syntax-aware decoding, compiling)",
                    sample_markdown(Path(generated["topic"]["file"]), verdicts["topic"], per_topic=2))
    report.link("quiz", "Quiz", Path(quiz["files"]["quiz.html"]))
    warnings = cache_warnings + take_warnings()
    report.warnings(warnings)

    overall = {r["set"]: r for r in rates if r["topic"] == "all"}
    summary = {
        "flow": "equations", "preset": preset, "corpus": [str(c) for c in corpus_paths],
        "equations": corpus_stats["equations"], "papers": corpus_stats["papers_read"], "topics": topics["k"],
        "bpc_test": {row["name"]: row["bits_per_char"] for row in bpc["json"]["rows"]},
        "compile_rate": {s: overall[s]["rate"] for s in overall},
        "balanced_share": {s: q["balanced"] for s, q in quality.items()},
        "detector_accuracy": {s: q.get("detector_char") for s, q in quality.items()},
        "detector_by_area": {s: q.get("detector_char_by_area") or {} for s, q in quality.items()},
        "detector_any_fold": {s: q.get("detector_char_any_fold") for s, q in quality.items()},
        "detector_control": {"held_out": control.get("detector_char"),
                             "any_fold": control.get("detector_char_any_fold")},
        "quiz_questions": quiz["questions"],
        "train_steps": {m: r["step"] for m, r in trained.items()},
        "warnings": warnings,
    }
    outputs = {"ingest": str(ingest_dir / "equations.jsonl"), "topics": str(topics_dir),
               "topic model": str(models["topic"] / "best.pt"), "baseline": str(models["plain"] / "best.pt"),
               "generated": str(run_dir / "generated"), "verdicts": str(compile_dir),
               **{f"quiz {Path(p).suffix[1:]}" if name != "answers.json" else "quiz answers": p
                  for name, p in quiz["files"].items()}}
    outputs.update(report.write({**summary, "outputs": outputs}))
    summary["outputs"] = outputs
    headline = {k: v for k, v in summary.items() if not isinstance(v, (dict, list))}
    for name, value in summary["bpc_test"].items():
        headline[f"test bits/char {name}"] = value
    for name, value in summary["compile_rate"].items():
        headline[f"compile rate {name}"] = value
    for name, value in summary["balanced_share"].items():
        headline[f"balanced {name}"] = value
    for name, value in summary["detector_accuracy"].items():
        headline[f"detector accuracy {name}"] = value
    print(format_summary(f"equations run finished: {run_dir}", headline, outputs))
    return summary


# ------------------------------------------------------------------------------------------------ helpers
def compile_rates(generated: dict[str, dict], verdicts: dict[str, list], labels: list[str]) -> list[dict]:
    """Rows (set, topic, label, n, compiled, rate): per topic and overall, per generation set."""
    rows = []
    for set_name, info in generated.items():
        topics_of = [json.loads(line)["topic"] for line in Path(info["file"]).read_text(encoding="utf-8").splitlines()]
        per_topic: dict[int, list[int]] = {}
        for topic, (ok, _err) in zip(topics_of, verdicts[set_name]):
            per_topic.setdefault(topic, [0, 0])
            per_topic[topic][0] += 1
            per_topic[topic][1] += int(bool(ok))
        total = sum(v[0] for v in per_topic.values())
        compiled = sum(v[1] for v in per_topic.values())
        rows.append({"set": set_name, "topic": "all", "label": "", "n": total, "compiled": compiled,
                     "rate": compiled / total if total else math.nan})
        for topic in sorted(per_topic):
            n, c = per_topic[topic]
            rows.append({"set": set_name, "topic": topic, "label": labels[topic], "n": n, "compiled": c,
                         "rate": c / n if n else math.nan})
    return rows


def sample_markdown(generated_file: Path, verdicts: list, per_topic: int = 2) -> str:
    shown: dict[int, list[str]] = {}
    labels: dict[int, str] = {}
    for line, (ok, _err) in zip(generated_file.read_text(encoding="utf-8").splitlines(), verdicts):
        g = json.loads(line)
        labels[g["topic"]] = g["label"]
        if ok and len(shown.setdefault(g["topic"], [])) < per_topic:
            shown[g["topic"]].append(g["equation"])
    parts = []
    for topic in sorted(labels):
        eqs = shown.get(topic) or []
        body = "\n".join(f"$$ {e} $$" for e in eqs) if eqs else "(no compiling equation)"
        parts.append(f"**{topic}: {labels[topic]}**\n\n{body}\n")
    return "\n".join(parts)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 3)


def _plus_minus(value: float | None, spread: float | None) -> str | None:
    return None if value is None else f"{value:.3f} ± {spread or 0.0:.3f}"


def _jsonable(value: Any) -> Any:
    try:
        return json.loads(json.dumps(value, default=float))
    except (TypeError, ValueError):
        return str(value)
