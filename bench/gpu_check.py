"""The equation model's GPU check (issue 6), prepared for one device call.

Three steps, two machines:

1. Here (CPU, has gensim and pdflatex): pack the ingest dir and the topic model's θ into a small bundle that
   needs only numpy/torch (no contexts, no gensim):
       .venv/bin/python bench/gpu_check.py bundle --data data/ingest-all --topics data/topics-all \\
           --out data/gpu-bundle
2. On the GPU machine, in ONE call (carry `data/gpu-bundle`; the image's python3 has torch, no gensim):
       python3 bench/gpu_check.py run --bundle data/gpu-bundle --out "$OUT" --max-steps 3000 --budget-s 420
   It trains `eq-lstm` (2 x 512, θ joined to every input) and the unconditioned model of equal capacity on
   the same data/tokenizer/step budget, times our training step against a bare cuDNN `nn.LSTM` step of the
   same shape (embedding + LSTM + linear, AdamW, clip, same batch), scores the test split (bits per char
   and per token), generates N equations per model with and without the syntax constraint, compile-checks
   them when pdflatex is there, and writes `summary.json`, `generated.jsonl` and the model-only
   checkpoints (<= 16 MB each; optimizer state dropped) to $OUT.
3. Back here, when the GPU machine had no pdflatex:
       .venv/bin/python bench/gpu_check.py check --generated FILES_AT/generated.jsonl
   compile-checks the generated equations with the project's compile rule and prints the rates.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


# ------------------------------------------------------------------------------------------ bundle
def write_bundle(data_dir, topics_dir, out, row=None) -> None:
    """INGESTDIR's records (each reduced by `row`: by default to what training, scoring and prototypes read)
    + TOPICDIR's theta.npz and topics.json -> OUT/ingest and OUT/topics, readable with numpy alone."""
    import numpy as np

    from pipeline.ingest import read_records
    from pipeline.topics import read_theta

    row = row or (lambda r: {k: r[k] for k in ("id", "paper", "area", "split", "equation")})
    out = Path(out)
    (out / "ingest").mkdir(parents=True, exist_ok=True)
    (out / "topics").mkdir(parents=True, exist_ok=True)
    recs = list(read_records(data_dir))
    with open(out / "ingest" / "equations.jsonl", "w", encoding="utf-8") as f:
        for r in recs:
            f.write(json.dumps(row(r)) + "\n")
    src = Path(topics_dir)
    theta_by_id, _ = read_theta(src)
    np.savez_compressed(out / "topics" / "theta.npz", ids=np.array(list(theta_by_id)),
                        theta=np.stack(list(theta_by_id.values())))
    if (src / "topics.json").is_file():
        shutil.copyfile(src / "topics.json", out / "topics" / "topics.json")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"bundle {out}: {len(recs)} equations, {size / 1e6:.1f} MB (carry it: must stay under 64 MiB)")


def cmd_bundle(args) -> int:
    write_bundle(args.data, args.topics, args.out)
    return 0


# ------------------------------------------------------------------------------------------ timing
def time_steps(step_fn, batches, n_warm: int, cuda: bool) -> float:
    """Seconds for one pass of step_fn over `batches` (after n_warm warm-up steps)."""
    import torch

    for b in batches[:n_warm]:
        step_fn(b)
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for b in batches:
        step_fn(b)
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def step_timing(model_config, train_config, batches, device, n_warm=10) -> dict:
    """Tokens/s of the training loop's own step (topicrnn.train.train_step: RecurrentLM, masked loss, AdamW,
    clip, bf16 autocast) vs a bare cuDNN nn.LSTM step (embedding + LSTM + linear, cross-entropy with
    ignore_index, fused AdamW, clip, same autocast) over the same real batches (same shapes, same order),
    already on the device: the model-and-optimizer cost alone, no data loading."""
    import torch
    from torch import nn

    from topicrnn.models import RecurrentLM
    from topicrnn.train import _autocast, make_optimizer, train_step

    cuda = device.type == "cuda"
    batches = [b.to(device) for b in batches]
    c = model_config
    ours = RecurrentLM(c).to(device).train()
    opt = make_optimizer(ours, train_config, device)

    def our_step(batch):
        train_step(ours, opt, batch, None, train_config, device, 1e-3)

    class Bare(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(c.vocab_size, c.embedding)
            self.lstm = nn.LSTM(c.embedding + c.topic_dim, c.hidden, num_layers=c.layers, batch_first=True,
                                dropout=c.dropout)
            self.head = nn.Linear(c.hidden, c.vocab_size)

        def forward(self, x, theta):
            e = self.embed(x)
            if theta is not None:
                e = torch.cat([e, theta.unsqueeze(1).expand(-1, x.shape[1], -1)], dim=-1)
            out, _ = self.lstm(e)
            return self.head(out)

    bare = Bare().to(device).train()
    bopt = torch.optim.AdamW(bare.parameters(), lr=1e-3, fused=cuda)

    def bare_step(batch):
        with _autocast(device, train_config):
            logits = bare(batch.x, batch.theta if c.topic_dim else None)
        loss = nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), batch.y.reshape(-1),
                                           ignore_index=0)
        bopt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(bare.parameters(), 1.0)
        bopt.step()

    t_bare = time_steps(bare_step, batches, n_warm, cuda)
    t_ours = time_steps(our_step, batches, n_warm, cuda)
    t_bare2 = time_steps(bare_step, batches, 2, cuda)  # again, to see drift
    tokens = sum(int(b.n_tokens) for b in batches)
    bare_s = min(t_bare, t_bare2)
    return {"batches": len(batches), "mean_batch_shape": [sum(b.x.shape[0] for b in batches) / len(batches),
                                                          sum(b.x.shape[1] for b in batches) / len(batches)],
            "tokens": tokens, "ours_tokens_per_s": tokens / t_ours, "bare_tokens_per_s": tokens / bare_s,
            "ratio_ours_over_bare": bare_s / t_ours, "bare_runs_s": [t_bare, t_bare2], "ours_s": t_ours,
            "ours_s_per_step": t_ours / len(batches)}


# ------------------------------------------------------------------------------------------ run
def cmd_run(args) -> int:
    import numpy as np
    import torch

    from pipeline.topics import ThetaTable
    from topicrnn.checkpoint import load_model, read_checkpoint, save_checkpoint
    from topicrnn.conditioning import training_prototypes
    from topicrnn.evaluation import evaluate
    from topicrnn.generation import allowed_control_sequences, sample_equations
    from topicrnn.presets import apply_overrides, get_preset
    from topicrnn.device import resolve_device
    from topicrnn.train import prepare_data, train

    t_start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bundle = Path(args.bundle)
    data, topics = bundle / "ingest", bundle / "topics"
    device = resolve_device(args.device)
    summary: dict = {"device": str(device), "torch": torch.__version__,
                     "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
                     "preset": args.preset, "max_steps": args.max_steps}

    def save_summary():
        summary["wall_s"] = time.perf_counter() - t_start
        (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))

    # 1. our step vs a bare cuDNN step, same shape (a typical training batch of the real data)
    preset = apply_overrides(get_preset(args.preset), list(args.set or []))
    cfg = preset.train
    prepared = prepare_data(cfg, data, topics)
    mc = preset.model
    mc.vocab_size = prepared.tokenizer.vocab_size
    mc.topic_dim = prepared.topic["k"]
    batches = list(itertools.islice(prepared.train.epoch_batches(0, cfg.seed), args.timing_batches))
    try:  # a failure here must not cost the training below
        summary["step_timing"] = step_timing(mc, cfg, batches, device)
    except Exception as e:  # noqa: BLE001 - recorded in the summary, the run goes on
        summary["step_timing_error"] = repr(e)
    print(f"[gpu] step timing: {summary.get('step_timing', summary.get('step_timing_error'))}", flush=True)
    save_summary()

    # 2. train input + unconditioned with the same budget (steps), each within half the time budget
    if args.modes[0] != "none" or "input" not in args.modes:
        raise SystemExit("--modes must start with none (the baseline) and include input (generation uses both)")
    runs = {mode: (["topic_dim=0"] if mode == "none" else [f"topic_mode={mode}"]) for mode in args.modes}
    per_model_s = args.budget_s / len(runs)
    trained = {}
    for mode, extra in runs.items():
        p = apply_overrides(get_preset(args.preset), list(args.set or []) + extra)
        if args.budget_s:  # a hard stop too (same steps for every mode is the plan; this only guards the call)
            p.train.max_seconds = per_model_s * 1.5
        steps = args.max_steps
        if device.type == "cuda" and args.budget_s and "step_timing" in summary:
            # estimate steps that fit the time budget from the measured step time (+30% for eval/saves)
            per_step = summary["step_timing"]["ours_s_per_step"] * 1.3
            steps = int(min(steps, per_model_s / max(per_step, 1e-6)))
        summary.setdefault("steps", {})[mode] = steps
        t0 = time.perf_counter()
        res = train(p.model, p.train, out / f"ckpt-{mode}", data_path=data, topics_dir=topics,
                    device=str(device), max_steps=steps, preset=f"{args.preset}:{mode}", progress=False)
        res.pop("history", None)
        res["wall_s"] = time.perf_counter() - t0
        summary.setdefault("train", {})[mode] = res
        bare = summary.get("step_timing", {}).get("bare_tokens_per_s")
        if bare:  # the whole loop (data, evals excluded) against the bare step on the same batches
            res["loop_over_bare"] = res["tokens_per_s"] / bare
        print(f"[gpu] trained {mode}: {res['step']} steps in {res['wall_s']:.0f} s"
              f"{' (stopped for time)' if res.get('stopped_for_time') else ''}, best val "
              f"{res['best_val_bits_per_char']:.4f} bits/char, {res['tokens_per_s']:,.0f} tokens/s"
              f" (loop/bare {res.get('loop_over_bare', float('nan')):.2f})", flush=True)
        trained[mode] = out / f"ckpt-{mode}"
        save_summary()

    # 3. test bits per char/token, same test equations and θ for both
    table_model = ThetaTable(topics)
    models = {m: load_model(trained[m], device=str(device), name=m) for m in args.modes}
    try:
        table = evaluate(data, table_model, [models[m] for m in args.modes], by="area")
    except Exception as e:  # noqa: BLE001 - same figures on the CPU, slower; the error is kept
        summary["evaluate_error"] = repr(e)
        models = {m: load_model(trained[m], device="cpu", name=m) for m in args.modes}
        table = evaluate(data, table_model, [models[m] for m in args.modes], by="area")
    summary["test_table"] = table.to_json()
    summary["test_table_md"] = table.to_markdown()
    print(table.to_markdown(), flush=True)
    save_summary()

    # 4. generation: N per (model, constrained), θ = per-topic prototypes; compile-check if pdflatex exists
    protos = training_prototypes(table_model, data)
    k = table_model.k
    gen_rows = []
    for mode in ("input", "none"):
        lm = models[mode]
        syntax = allowed_control_sequences(lm, data)
        for constrained in (True, False):
            t0 = time.perf_counter()
            owner = [t for t in range(k) for _ in range(args.n // k + (1 if t < args.n % k else 0))]
            # one batch of n on the GPU, each row with its topic's prototype θ
            try:
                eqs = sample_equations(lm, protos[owner], n=len(owner), temperature=args.temperature,
                                          seed=args.seed, syntax=syntax, constrained=constrained,
                                          batch_size=len(owner))
            except Exception as e:  # noqa: BLE001 - kept in the summary; retried on the CPU
                summary.setdefault("sampling_errors", []).append(f"{mode} constrained={constrained}: {e!r}")
                lm = load_model(trained[mode], device="cpu", name=mode)
                eqs = sample_equations(lm, protos[owner], n=len(owner), temperature=args.temperature,
                                          seed=args.seed, syntax=syntax, constrained=constrained,
                                          batch_size=250)
            gen_rows += [{"model": mode, "constrained": constrained, "topic": t, "equation": e}
                         for t, e in zip(owner, eqs)]
            summary.setdefault("sampling_s", {})[f"{mode}-{'c' if constrained else 'u'}"] = time.perf_counter() - t0
    with open(out / "generated.jsonl", "w", encoding="utf-8") as f:
        for r in gen_rows:
            f.write(json.dumps(r) + "\n")
    if shutil.which("pdflatex"):
        summary["compile"] = compile_summary(gen_rows)
    else:
        summary["compile"] = "no pdflatex here: run `bench/gpu_check.py check --generated generated.jsonl`"
    save_summary()

    # 5. model-only checkpoints (<= 16 MB to come back through $OUT)
    for mode, ck in trained.items():
        payload = read_checkpoint(ck / "best.pt")
        payload.pop("path", None)
        payload["optimizer"] = None
        payload["carry"] = None
        dst = out / f"eq-lstm-{mode.replace('+', '_')}.pt"  # plain names travel back from the device
        save_checkpoint(dst, payload)
        if dst.stat().st_size > 16 * 2**20:
            payload["model"] = {k_: v.half() if v.is_floating_point() else v for k_, v in payload["model"].items()}
            save_checkpoint(dst, payload)
        summary.setdefault("checkpoint_mb", {})[mode] = dst.stat().st_size / 2**20
        shutil.rmtree(ck, ignore_errors=True)  # keep $OUT small: only the model-only copy comes back
    save_summary()
    print(json.dumps({k_: v for k_, v in summary.items() if k_ not in ("train", "test_table")}, default=str)[:4000])
    return 0


def compile_summary(rows: list[dict]) -> dict:
    from pipeline.compile_check import check

    verdicts = check([r["equation"] for r in rows], progress=True)
    groups: dict = {}
    for r, v in zip(rows, verdicts):
        key = f"{r['model']}-{'constrained' if r['constrained'] else 'unconstrained'}"
        g = groups.setdefault(key, {"n": 0, "compiled": 0, "per_topic": {}})
        g["n"] += 1
        g["compiled"] += bool(v.ok)
        pt = g["per_topic"].setdefault(str(r["topic"]), [0, 0])
        pt[0] += bool(v.ok)
        pt[1] += 1
    for g in groups.values():
        g["rate"] = g["compiled"] / max(1, g["n"])
    return groups


def cmd_check(args) -> int:
    rows = [json.loads(line) for line in open(args.generated, encoding="utf-8") if line.strip()]
    res = compile_summary(rows)
    for key, g in sorted(res.items()):
        print(f"{key}: {g['compiled']}/{g['n']} compile ({g['rate'] * 100:.1f}%)")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(res, indent=1))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bundle", help="pack ingest + θ for the GPU machine (run here)")
    b.add_argument("--data", required=True)
    b.add_argument("--topics", required=True)
    b.add_argument("--out", default=str(REPO / "data" / "gpu-bundle"))
    r = sub.add_parser("run", help="train, time, score, generate (run on the GPU machine)")
    r.add_argument("--bundle", default=str(REPO / "data" / "gpu-bundle"))
    r.add_argument("--out", default=os.environ.get("OUT", str(REPO / "data" / "gpu-out")))
    r.add_argument("--preset", default="eq-lstm")
    r.add_argument("--set", action="append")
    r.add_argument("--max-steps", type=int, default=3000)
    r.add_argument("--modes", nargs="+", default=["none", "input"],
                   help="models to train with the same steps: none (the baseline, first) and topic modes "
                        "(input, init, bias, input+bias, ...); generation uses none and input")
    r.add_argument("--budget-s", type=float, default=420.0, help="training seconds for both models together")
    r.add_argument("--device", default="auto")
    r.add_argument("--timing-batches", type=int, default=60, help="real batches timed, ours vs bare")
    r.add_argument("--n", type=int, default=1000)
    r.add_argument("--temperature", type=float, default=0.8)
    r.add_argument("--seed", type=int, default=0)
    c = sub.add_parser("check", help="compile-check generated.jsonl (run here)")
    c.add_argument("--generated", required=True)
    c.add_argument("--json-out", default=None)
    args = p.parse_args(argv)
    return {"bundle": cmd_bundle, "run": cmd_run, "check": cmd_check}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
