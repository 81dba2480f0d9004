"""The `charlm` flow: a text file -> train a character language model (any kind) -> sample -> score held-out text.

Tasks are thin wrappers over `topicrnn` (presets, the trainers, the sampler, the model interface);
each is cached by the content of its inputs (see flows/caching.py). A training run that crashed is resumed
from its `last.pt` when the next run has the same key.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.caching import stage_task, started_with_same_key, take_warnings, write_atomic
from flows.reporting import RunReport, format_summary

# `topiceq run --preset` -> the topicrnn preset of the character model.
CHARLM_PRESETS = {"tiny": "tiny", "cpu": "cpu-lstm", "gpu": "shakespeare-lstm"}


@stage_task("charlm-train", input_arg="text", outputs=("out_dir",),
            code=("topicrnn.trainers", "topicrnn.presets"), retries=1)
def train_charlm(text: Path, out_dir: Path, preset: str, overrides: list[str], max_steps: int | None,
                 device: str = "auto") -> dict[str, Any]:
    """`topicrnn.trainers.train_preset` on one text file; resumes a crashed attempt of the same key from
    last.pt (the torch loop writes one)."""
    from topicrnn.presets import apply_overrides, get_preset
    from topicrnn.trainers import train_preset

    resume = started_with_same_key(out_dir) and (Path(out_dir) / "last.pt").is_file()
    p = apply_overrides(get_preset(preset), list(overrides))
    if p.train.data_kind != "text":
        raise ValueError(f"preset {preset!r} is not a character-text preset")
    result = train_preset(p, out_dir, data_path=str(text), resume=resume, device=device, max_steps=max_steps,
                          progress=True)
    result = {k: v for k, v in result.items() if k != "history"}
    result["resumed"] = resume
    return result


@stage_task("charlm-sample", input_arg="checkpoint_dir", outputs=("out_file",), code=("topicrnn.checkpoint",))
def sample_charlm(checkpoint_dir: Path, out_file: Path, n: int, length: int, temperature: float, prime: str,
                  seed: int) -> list[str]:
    """n samples from the trained model (`LoadedModel.sample`), written one block per sample to out_file."""
    from topicrnn.checkpoint import load_model

    lm = load_model(checkpoint_dir, device="cpu")
    texts = lm.sample(n=n, max_len=length, temperature=temperature, prime=prime, seed=seed)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out_file, "".join(f"--- sample {i + 1}\n{t}\n" for i, t in enumerate(texts)))
    return texts


@stage_task("charlm-score", input_arg="text", outputs=(), code=("topicrnn.checkpoint", "topicrnn.data"))
def score_charlm(checkpoint_dir: Path, text: Path, max_chars: int) -> dict[str, Any]:
    """Bits per character (`LoadedModel.score`) of the held-out end of the text (the training run's val split)."""
    from topicrnn.checkpoint import load_model
    from topicrnn.data import read_text, split_text

    lm = load_model(checkpoint_dir, device="cpu")
    val_fraction = float(lm.metadata.get("train_config", {}).get("val_fraction", 0.1))
    _, held_out = split_text(read_text(text), val_fraction)
    held_out = held_out[:max_chars] if max_chars else held_out
    score = lm.score(held_out)
    return {"chars": score.n_chars, "nats_per_char": score.nats_per_char, "bits_per_char": score.bits_per_char}


@flow(name="charlm", log_prints=True)
def charlm_flow(text: str, out: str, preset: str = "tiny", max_steps: int | None = None,
                overrides: list[str] | None = None, device: str = "auto", n_samples: int = 3,
                sample_length: int = 300, temperature: float = 0.8, prime: str = "", seed: int = 0,
                score_chars: int = 20000, refresh: bool = False, artifacts: bool = True) -> dict[str, Any]:
    """Train a character model on `text`, sample from it and score its held-out part; outputs in `out`.

    `preset` is a run preset (tiny|cpu|gpu) or any topicrnn preset name; `refresh` recomputes every task.
    """
    logger = get_run_logger()
    take_warnings()  # from earlier flows in this process: not this run's
    run_dir = Path(out).resolve()
    text_path = Path(text).resolve()
    if not text_path.is_file():
        raise FileNotFoundError(f"charlm: text file {text_path} does not exist")
    model_preset = CHARLM_PRESETS.get(preset, preset)
    opts = {"refresh_cache": True} if refresh else {}

    ckpt_dir = run_dir / "model"
    trained = train_charlm.with_options(**opts)(text_path, ckpt_dir, model_preset, list(overrides or []),
                                                max_steps, device)
    logger.info("trained %s to step %s: best validation %.4f bits/char", model_preset, trained["step"],
                trained["best_val_bits_per_char"] or float("nan"))
    samples_file = run_dir / "samples.txt"
    samples = sample_charlm.with_options(**opts).submit(ckpt_dir, samples_file, n_samples, sample_length,
                                                        temperature, prime, seed)
    scored = score_charlm.with_options(**opts).submit(ckpt_dir, text_path, score_chars)
    samples, scored = samples.result(), scored.result()

    report = RunReport(run_dir, "charlm", prefect_artifacts=artifacts)
    report.table("bpc", "Bits per character", [
        {"model": model_preset, "steps": trained["step"], "parameters": trained["parameters"],
         "best validation bits/char": trained["best_val_bits_per_char"],
         "held-out bits/char (scored)": scored["bits_per_char"], "held-out chars": scored["chars"],
         "train tokens/s": trained["tokens_per_s"], "device": trained["device"]}])
    report.markdown("samples", "Samples", "\n\n".join(f"```\n{t}\n```" for t in samples))
    warnings = take_warnings()
    report.warnings(warnings)
    summary = {"flow": "charlm", "text": str(text_path), "preset": model_preset, "steps": trained["step"],
               "best_val_bits_per_char": trained["best_val_bits_per_char"],
               "held_out_bits_per_char": scored["bits_per_char"], "resumed_training": trained["resumed"],
               "samples": samples, "warnings": warnings}
    outputs = {"checkpoint": str(ckpt_dir / "best.pt"), "loss curve": str(ckpt_dir / "loss_curve.png"),
               "samples": str(samples_file)}
    outputs.update(report.write({**summary, "outputs": outputs}))
    summary["outputs"] = outputs
    print(format_summary(f"charlm run finished: {run_dir}", summary, outputs))
    return summary
