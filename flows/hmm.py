"""The `hmm` flow: the lecture's two HMM experiments (topicrnn.hmm_experiments) with their figures as artifacts.

    letters/       letters.png (P(state = 1 | letter) across EM iterations), letters.json, letters_posterior.csv
    instability/   instability.png (log-likelihood heatmaps after iterations 1, 2, 3, 4, 10, 15), .json, .npz
    report.md, summary.json

Both tasks are cached by the content of their inputs (flows/caching.py) and run side by side.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.caching import stage_task
from flows.reporting import RunReport, format_summary
from topicrnn.hmm_config import InstabilityConfig, LettersConfig

HMM_CODE = ("topicrnn.hmm_experiments", "topicrnn.hmm", "topicrnn.hmm_config")


@stage_task("hmm-letters", input_arg="text", outputs=("out_dir",), code=HMM_CODE)
def letters_experiment(text: Path, out_dir: Path, config: LettersConfig) -> dict[str, Any]:
    """`run_letters`: the 2-state letters HMM; returns its summary."""
    from topicrnn.hmm_experiments import run_letters

    return run_letters(text, out_dir, config)


@stage_task("hmm-instability", input_arg="out_dir", outputs=("out_dir",), code=HMM_CODE)
def instability_experiment(out_dir: Path, config: InstabilityConfig) -> dict[str, Any]:
    """`run_instability`: EM from every grid point at once; returns its summary."""
    from topicrnn.hmm_experiments import run_instability

    return run_instability(out_dir, config)


@flow(name="hmm", log_prints=True)
def hmm_flow(text: str, out: str, chars: int | None = None, iterations: int | None = None, grid: int | None = None,
             instability_iterations: int | None = None, bits: int | None = None, seed: int = 0, device: str = "cpu",
             refresh: bool = False, artifacts: bool = True) -> dict[str, Any]:
    """Run the letters experiment on `text` and the instability grid; figures, tables and a report in `out`.
    A size left None is the experiment config's own default (LettersConfig, InstabilityConfig)."""
    logger = get_run_logger()
    run_dir = Path(out).resolve()
    text_path = Path(text).resolve()
    if not text_path.is_file():
        raise FileNotFoundError(f"hmm: text file {text_path} does not exist")
    opts = {"refresh_cache": True} if refresh else {}
    letters_cfg = LettersConfig(**_given(chars=chars, iterations=iterations), seed=seed, device=device)
    grid_cfg = InstabilityConfig(**_given(grid=grid, iterations=instability_iterations, bits=bits), seed=seed,
                                 device=device)
    letters = letters_experiment.with_options(**opts).submit(text_path, run_dir / "letters", letters_cfg)
    unstable = instability_experiment.with_options(**opts).submit(run_dir / "instability", grid_cfg)
    letters, unstable = letters.result(), unstable.result()
    pt, split = letters["phase_transition"], letters["final_split"]
    logger.info("letters: phase transition at iteration %d; split %s | %s", pt["iteration"], split["state_0"],
                split["state_1"])

    report = RunReport(run_dir, "hmm", prefect_artifacts=artifacts)
    report.table("letters", "Letters HMM (2 states, 26 letters)", [{
        "letters": letters["letters"], "EM iterations": letters["iterations"],
        "phase transition (iteration)": pt["iteration"], "steepest rise": pt["steepest_rise_iteration"],
        "state 0": split["state_0"], "state 1": split["state_1"], "vowel state": split["vowel_state"],
        "bits/letter before": letters["initial_bits_per_letter"], "after": letters["final_bits_per_letter"],
        "seconds": letters["seconds"]}])
    report.figure("letters-figure", "P(state = 1 | letter) across EM iterations", Path(letters["outputs"]["figure"]))
    report.table("instability", "Instability of EM (two-parameter bit HMM)", [
        {"after iterations": k, **v} for k, v in unstable["panels"].items()])
    report.figure("instability-figure", "Training log-likelihood by starting point",
                  Path(unstable["outputs"]["figure"]))
    summary = {"flow": "hmm", "text": str(text_path), "phase_transition_iteration": pt["iteration"],
               "letters_split": f"{split['state_0']} | {split['state_1']}",
               "letters_final_bits_per_letter": letters["final_bits_per_letter"],
               "instability_best_final_log_likelihood": unstable["best_final_log_likelihood"],
               "instability_fraction_at_best": unstable["fraction_within_0.1_nats_of_best"],
               "instability_seconds": unstable["seconds"],
               "config": {"letters": asdict(letters_cfg), "instability": asdict(grid_cfg)}}
    outputs = {**{f"letters {k}": v for k, v in letters["outputs"].items()},
               **{f"instability {k}": v for k, v in unstable["outputs"].items()}}
    outputs.update(report.write({**summary, "outputs": outputs}))
    summary["outputs"] = outputs
    print(format_summary(f"hmm run finished: {run_dir}", summary, outputs))
    return summary


def _given(**sizes: int | None) -> dict[str, int]:
    return {name: value for name, value in sizes.items() if value is not None}
