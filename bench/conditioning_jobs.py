"""The jobs of bench/conditioning_bench.py: variants, their training and their scoring (one worker process
runs a queue of them; the parent in conditioning_bench.py deals the queues out and makes the table)."""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LN2 = math.log(2.0)
# Base presets and the context encoder's size per scale (2 x 512 GPU, 2 x 128 CPU, 1 x 32 smoke test).
SIZES = {
    "gpu": ("eq-lstm", ["context_hidden=128"]),
    "cpu": ("eq-cpu", ["context_hidden=32", "threads=1"]),
    "tiny": ("eq-tiny", ["context_topics=8", "context_hidden=16", "context_min_df=1", "threads=1"]),
}
_CTX = ["context_encoder=true", "topic_dim=0", "topic_mode=input"]
_REG = ["cond_dropout=0.3", "context_keep=0.5"]
VARIANTS = {
    "plain": ["topic_dim=0"],  # hidden raised to the largest conditioned variant's parameter count
    "plain-same": ["topic_dim=0"],  # the plain model of the base hidden size (not raised)
    "lda-input": ["topic_dim=-1", "topic_mode=input"],  # the LDA θ of the context joined to every input
    "lda-film": ["topic_dim=-1", "topic_mode=input", "film=io"],
    "ctx-input": _CTX + _REG + ["film=none"],  # learned θ joined to every input
    "ctx-input-noreg": _CTX + ["film=none", "cond_dropout=0", "context_keep=1"],
    "ctx-film": _CTX + _REG + ["film=io"],  # + FiLM of each layer's input and output (cuDNN)
    "ctx-film-bias": _CTX + _REG + ["film=io", "topic_mode=input+bias"],
    "ctx-cell": _CTX + _REG + ["film=cell"],  # + gate pre-activations scaled in the cell (scripted loop)
    "ctx-film-noreg": _CTX + ["film=io", "cond_dropout=0", "context_keep=1"],
    "ctx-film-mild": _CTX + ["film=io", "cond_dropout=0.1", "context_keep=0.8"],
    "ctx-film-strong": _CTX + ["film=io", "cond_dropout=0.5", "context_keep=0.3", "theta_noise=0.5"],
    "ctx-film-lm": _CTX + _REG + ["film=io", "ntm_weight=0.1"],  # the topic model's loss weighted less
}
DEFAULT_VARIANTS = ["plain", "lda-input", "ctx-input", "ctx-film", "ctx-film-noreg"]
BUCKETS = [(1, 1, "1"), (2, 5, "2-5"), (6, 20, "6-20"), (21, 10**9, "21+")]
TRAIN_SAMPLE = 1000


def kind_of(variant: str) -> str:
    """The data a variant trains on: plain records, records with LDA θ, records with context word ids."""
    return "ctx" if "context_encoder=true" in VARIANTS[variant] else "lda" if variant.startswith("lda") else "plain"


# --------------------------------------------------------------------------------------------- configs
def job_preset(size: str, variant: str, steps: int, plain_hidden: int | None = None, seed: int = 0):
    from topicrnn.presets import apply_overrides, get_preset

    base, size_set = SIZES[size]
    extra = [f"max_steps={steps}", f"eval_every={max(1, steps // 4)}", "early_stop_evals=0",
             f"log_every={max(1, min(50, steps // 10))}", f"seed={seed}", "save_every=0"]
    if variant == "plain" and plain_hidden:
        extra.append(f"hidden={plain_hidden}")
    return apply_overrides(get_preset(base), size_set + VARIANTS[variant] + extra)


def scoring_parameters(model) -> int:
    fn = getattr(model, "scoring_parameters", None)
    return int(fn()) if fn else int(model.num_parameters())


# ---------------------------------------------------------------------------------------------- scoring
def cross_paper_permutation(papers: list[str], seed: int = 12345) -> np.ndarray:
    """perm[i] = the equation whose context equation i gets: always one of another paper when no paper has
    more than half of the equations (groups laid out largest first, then shifted by the largest group's size),
    else a plain random permutation."""
    rng = np.random.default_rng(seed)
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(papers):
        groups.setdefault(p, []).append(i)
    n = len(papers)
    biggest = max(len(g) for g in groups.values())
    if biggest * 2 > n:
        return rng.permutation(n)
    order = sorted(groups, key=lambda p: (-len(groups[p]), rng.random()))
    layout = np.concatenate([rng.permutation(groups[p]) for p in order])
    perm = np.empty(n, dtype=np.int64)
    perm[layout] = layout[(np.arange(n) + biggest) % n]
    return perm


def score_records(model, tokenizer, records: list[dict], *, thetas=None) -> dict:
    """Per-record nats (with <eos>) and bits per token by position bucket, through the one scoring path
    (topicrnn.scoring.token_logprobs). `thetas` [n, K]: an LDA θ, or (a context model's `with_context_theta()`
    view) θ inside the network from each record's context; None for the plain model."""
    from topicrnn.scoring import token_logprobs

    seqs = [tokenizer.encode(r["equation"], bos=True, eos=True) for r in records]
    per_position = token_logprobs(model, seqs, thetas, pad_id=tokenizer.pad_id)
    nats = np.array([-float(lp.sum()) for lp in per_position])
    flat = np.concatenate(per_position) if per_position else np.zeros(0)
    pos = np.concatenate([np.arange(1, len(lp) + 1) for lp in per_position]) if per_position else flat
    bucket_nats = np.array([-float(flat[(pos >= lo) & (pos <= hi)].sum()) for lo, hi, _ in BUCKETS])
    bucket_tokens = np.array([int(((pos >= lo) & (pos <= hi)).sum()) for lo, hi, _ in BUCKETS], dtype=np.int64)
    return {"nats": nats, "bucket_nats": bucket_nats, "bucket_tokens": bucket_tokens}


def summarise(scored: dict, records: list[dict]) -> dict:
    from pipeline.topics import coarse_area

    chars = np.array([len(r["equation"]) + 1 for r in records], dtype=np.float64)
    areas: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        areas.setdefault(coarse_area(r.get("area") or "") or "other", []).append(i)
    return {"bpc": float(scored["nats"].sum() / chars.sum() / LN2),
            "areas": {a: {"n": len(ix), "bpc": float(scored["nats"][ix].sum() / chars[ix].sum() / LN2)}
                      for a, ix in areas.items()},
            "positions": {name: float(scored["bucket_nats"][b] / max(1, scored["bucket_tokens"][b]) / LN2)
                          for b, (_, _, name) in enumerate(BUCKETS)}}


# ---------------------------------------------------------------------------------------------- worker
class Worker:
    """Runs a queue of (variant, seed) jobs in one process: data prepared once per data kind."""

    def __init__(self, args):
        import torch

        from topicrnn.device import resolve_device

        self.args = args
        self.bundle = Path(args.bundle)
        self.out = Path(args.out)
        self.device = resolve_device(args.device)
        self.prepared: dict = {}
        torch.set_num_threads(max(1, args.threads))

    def data(self, variant: str, cfg):
        from topicrnn.train import prepare_data

        kind = kind_of(variant)
        if kind not in self.prepared:
            self.prepared[kind] = prepare_data(cfg, self.bundle / "ingest", self.bundle / "topics",
                                               use_topics=kind == "lda", use_context=kind == "ctx")
        return self.prepared[kind]

    def probe(self, variant: str) -> dict:
        """Seconds per training step (30 steps after 5 warm-up) and per validation pass, on real batches."""
        import itertools

        import torch

        from topicrnn.context_lm import build_model
        from topicrnn.train import evaluate, make_optimizer, train_step

        p = job_preset(self.args.size, variant, 100, self.args.plain_hidden)
        t0 = time.perf_counter()
        data = self.data(variant, p.train)
        prep_s = time.perf_counter() - t0
        mc = p.model
        mc.vocab_size = data.tokenizer.vocab_size
        if data.context_vocab is not None:
            mc.context_vocab_size = data.context_vocab.size
        if mc.topic_dim == -1:
            mc.topic_dim = data.topic["k"]
        model = build_model(mc).to(self.device).train()
        opt = make_optimizer(model, p.train, self.device)
        batches = list(itertools.islice(data.train.epoch_batches(0, 0), 35))
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        for i, b in enumerate(batches):
            if i == 5:
                sync()
                t0 = time.perf_counter()
            train_step(model, opt, b.to(self.device), None, p.train, self.device, 1e-3)
        sync()
        step_s = (time.perf_counter() - t0) / (len(batches) - 5)
        t0 = time.perf_counter()
        evaluate(model, data.val.eval_batches(), self.device, p.train)
        return {"variant": variant, "step_s": step_s, "val_s": time.perf_counter() - t0, "prep_s": prep_s}

    def run_job(self, variant: str, seed: int, steps: int) -> dict:
        import shutil

        from pipeline.ingest import read_records
        from pipeline.topics import read_theta
        from topicrnn.checkpoint import load_model
        from topicrnn.context_lm import context_theta_rows
        from topicrnn.train import train

        p = job_preset(self.args.size, variant, steps, self.args.plain_hidden, seed)
        if self.args.job_cap_s:
            p.train.max_seconds = self.args.job_cap_s
        data = self.data(variant, p.train)
        ckpt = self.out / "jobs" / f"{variant}-s{seed}"
        t0 = time.perf_counter()
        res = train(p.model, p.train, ckpt, data_path=self.bundle / "ingest", topics_dir=self.bundle / "topics",
                    device=str(self.device), progress=False, preset=f"{variant}:s{seed}", prepared=data)
        train_s = time.perf_counter() - t0
        lm = load_model(ckpt / "best.pt", device=str(self.device))
        out = {"variant": variant, "seed": seed, "steps": res["step"], "stopped_for_time": res["stopped_for_time"],
               "parameters": res["parameters"], "scoring_parameters": scoring_parameters(lm.model),
               "hidden": p.model.hidden, "best_val_bpc": res["best_val_bits_per_char"],
               "tokens_per_s": res["tokens_per_s"], "train_wall_s": train_s}
        test = list(read_records(self.bundle / "ingest", "test"))
        rng = np.random.default_rng(0)
        train_all = list(read_records(self.bundle / "ingest", "train"))
        seen = [train_all[i] for i in sorted(rng.choice(len(train_all), min(TRAIN_SAMPLE, len(train_all)),
                                                        replace=False))]
        kind = kind_of(variant)
        model = lm.model.with_context_theta() if kind == "ctx" else lm.model
        for name, recs in (("test", test), ("seen", seen)):
            perm = cross_paper_permutation([r.get("paper", "") for r in recs])
            thetas = None
            if kind == "lda":
                by_id, _ = read_theta(self.bundle / "topics")
                thetas = np.stack([by_id[str(r["id"])] for r in recs])
            elif kind == "ctx":  # θ is the encoder's posterior mean of the context: shuffling rows = contexts
                thetas = context_theta_rows(lm.model, [r.get("context") or "" for r in recs])
            out[name] = summarise(score_records(model, lm.tokenizer, recs, thetas=thetas), recs)
            if thetas is not None:
                out[name + "_shuffled"] = summarise(score_records(model, lm.tokenizer, recs, thetas=thetas[perm]),
                                                    recs)
            out[name + "_same_paper_after_shuffle"] = float(np.mean(
                [recs[i].get("paper") == recs[j].get("paper") for i, j in enumerate(perm)]))
        out["wall_s"] = time.perf_counter() - t0
        shutil.rmtree(ckpt, ignore_errors=True)  # weights are not needed back; the figures are
        return out


def cmd_worker(args) -> int:
    w = Worker(args)
    jobs = [(v, int(s)) for v, s in (j.split(":") for j in args.jobs.split(","))]
    out = Path(args.out)
    steps = args.steps
    if steps == "auto":
        probe = w.probe(jobs[0][0])
        (out / f"probe-{args.worker_id}.json").write_text(json.dumps(probe))
        go = out / "steps.json"
        deadline = time.time() + 600
        while not go.is_file():
            if time.time() > deadline:
                raise SystemExit("no steps.json from the parent within 600 s")
            time.sleep(0.3)
        steps = json.loads(go.read_text())["steps"]
    steps = int(steps)
    for variant, seed in jobs:
        print(f"[worker {args.worker_id}] {variant} seed {seed}: {steps} steps", flush=True)
        t0 = time.perf_counter()
        try:
            res = w.run_job(variant, seed, steps)
        except Exception as e:  # noqa: BLE001 - one failed job must not cost the others; kept in results
            res = {"variant": variant, "seed": seed, "error": repr(e)}
        (out / "results" / f"{variant}-s{seed}.json").write_text(json.dumps(res))
        print(f"[worker {args.worker_id}] {variant} seed {seed}: {time.perf_counter() - t0:.0f} s "
              f"{res.get('error') or ''}", flush=True)
    return 0
