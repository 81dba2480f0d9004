"""One training loop for every torch language model (long text or short records, with or without θ).

AdamW, gradient clipping, warmup + cosine learning rate, dropout (in the model), validation every N steps in
nats/char and bits/char (total nats / number of characters, whatever the tokenizer), `best.pt` (best
validation) and `last.pt`, written atomically and self-contained, `resume=True` continues exactly where
`last.pt` stopped (weights, optimizer, step, data position, carried state, RNG). bf16 autocast on CUDA.
A loss-curve PNG (`loss_curve.png`) is written to the out dir.
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from tqdm import tqdm

from pipeline.topics import read_theta

from .checkpoint import read_checkpoint, save_checkpoint
from .configs import DictConfig
from .context_encoder import lda_topic_words, topic_word_matrix
from .context_lm import build_model, context_conditioning
from .device import resolve_device
from .data import (ContextVocab, RecordBatches, TextStreams, load_equation_split, make_records, read_text,
                   split_text)
from .interface import LN2
from .models import ModelConfig, RecurrentLM, detach_state
from .tokenizers import Tokenizer, make_tokenizer


@dataclass
class TrainConfig(DictConfig):
    data_kind: str = "text"  # text (one long file, truncated BPTT) | records (equations; --data INGESTDIR)
    tokenizer: str = "char"  # char | latex
    batch_size: int = 64  # streams (text) or records per batch
    seq_len: int = 256  # text: tokens per chunk (BPTT length)
    max_steps: int = 2000
    lr: float = 2e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio at max_steps
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0  # max global gradient norm (0 = off)
    eval_every: int = 200
    eval_max_batches: int = 0  # 0 = the whole validation set
    eval_batch_size: int = 16  # text: validation streams
    eval_seq_len: int = 512  # text: validation chunk length (state carried)
    save_every: int = 0  # also write last.pt every N steps (0 = at validations only)
    early_stop_evals: int = 0  # stop after N validations without a new best (0 = never)
    max_seconds: float = 0.0  # stop (validate, save) once the run has trained this long, resumes included
    #                           (0 = no limit); the cosine ends at whichever comes first, max_steps or max_seconds
    log_every: int = 10  # record the training loss every N steps (each record syncs the GPU)
    seed: int = 1337
    bf16: bool = True  # autocast to bfloat16 on CUDA (ignored elsewhere)
    val_fraction: float = 0.1  # text: last fraction held out
    max_record_tokens: int = 0  # records: drop longer ones (0 = keep all)
    min_count: int = 1  # tokenizer: symbols seen fewer times -> <unk>
    threads: int = 0  # CPU: torch intra-op threads (0 = torch's default); 1 suits tiny models on a busy machine
    # Context-encoder models (ModelConfig.context_encoder, issue 20): the topic model's loss weight and what
    # keeps θ from memorising papers (each applies to training only; scoring uses the whole context's θ).
    ntm_weight: float = 1.0  # weight of the topic model's (reconstruction + KL) nats per context word
    cond_dropout: float = 0.0  # share of rows that see no context (the encoder's no-context θ)
    context_keep: float = 1.0  # share of each context's words the encoder sees (a fresh random part each step)
    theta_noise: float = 0.0  # std of Gaussian noise on the logits of the LSTM's θ (the posterior mean's)
    kl_weight: float = 0.01  # weight of the topic model's KL term against its reconstruction (β; at 1 every
    #                          context got the same θ: bench/context_encoder_bench.py, docs/results.md)
    kl_warmup_steps: int = 200  # ... reached after rising linearly from 0 over these steps
    encoder_lm_grad: float = 1.0  # scale of the LSTM's gradient into the encoder through θ (0: topic model only)
    context_vocab_max: int = 2000  # context words kept (the most frequent of the training contexts)
    context_min_df: int = 3  # ... that are in at least this many training contexts
    context_max_df: float = 0.3  # ... and in at most this share of them


def lr_at(step: int, cfg: TrainConfig, time_fraction: float = 0.0) -> float:
    """Linear warmup, then cosine from lr to lr*min_lr_ratio at max_steps — or earlier, when a time budget
    (max_seconds) runs out first: `time_fraction` is the share of it spent, and the cosine follows whichever
    of steps and time is further along, so a timed run still ends annealed."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, max((step - cfg.warmup_steps) / span, time_fraction))
    ratio = cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.lr * ratio


# ----------------------------------------------------------------------------- data preparation

@dataclass
class PreparedData:
    tokenizer: Tokenizer
    train: TextStreams | RecordBatches
    val: TextStreams | RecordBatches
    topic: dict | None  # {"k", "dir"} when θ is used
    info: dict  # counts for the metadata
    context_vocab: ContextVocab | None = None  # context-encoder models: the training contexts' vocabulary


def prepare_data(cfg: TrainConfig, data_path, topics_dir=None, tokenizer: Tokenizer | None = None,
                 use_topics: bool = True, use_context: bool = False,
                 context_vocab: ContextVocab | None = None) -> PreparedData:
    """Build tokenizer (fitted on the training part unless given) and train/val batchers. `use_context`:
    records also carry their context word ids (vocabulary fitted on the training contexts unless given)."""
    if data_path is None:
        raise ValueError("no training data: pass --data (a text file, or an ingest dir for equation models)")
    if cfg.data_kind == "text":
        if Path(data_path).is_dir():
            raise ValueError(f"{data_path} is a folder; this preset trains on one text file "
                             "(use an eq-* preset for an ingest dir)")
        train_text, val_text = split_text(read_text(data_path), cfg.val_fraction)
        tok = tokenizer or make_tokenizer(cfg.tokenizer).fit(train_text, min_count=cfg.min_count)
        train_ids, val_ids = tok.encode(train_text), tok.encode(val_text)
        eval_bs = max(1, min(cfg.eval_batch_size, len(val_ids) // 4))
        return PreparedData(tok, TextStreams(train_ids, cfg.batch_size, cfg.seq_len, tok.bos_id),
                            TextStreams(val_ids, eval_bs, cfg.eval_seq_len, tok.bos_id), None,
                            {"train_chars": len(train_text), "val_chars": len(val_text)})
    if cfg.data_kind != "records":
        raise ValueError(f"data_kind must be text or records, not {cfg.data_kind!r}")
    if not Path(data_path).is_dir():
        raise ValueError(f"{data_path} is not an ingest dir (equation presets read INGESTDIR/equations.jsonl)")
    topic_dir = topics_dir if use_topics else None
    tr = load_equation_split(data_path, topic_dir, "train")
    va = load_equation_split(data_path, topic_dir, "val")
    if not tr.texts or not va.texts:
        raise ValueError(f"{data_path}: need equations in both the train and the val split "
                         f"(found {len(tr.texts)} and {len(va.texts)})")
    tok = tokenizer or make_tokenizer(cfg.tokenizer).fit(tr.texts, min_count=cfg.min_count)
    ctx_tr = ctx_va = None
    if use_context:
        context_vocab = context_vocab or ContextVocab.fit(tr.contexts, max_words=cfg.context_vocab_max,
                                                          min_df=cfg.context_min_df, max_df=cfg.context_max_df)
        ctx_tr = [context_vocab.encode(t) for t in tr.contexts]
        ctx_va = [context_vocab.encode(t) for t in va.contexts]
    train_recs, drop_tr = make_records(tr.texts, tok, tr.theta, tr.ids, cfg.max_record_tokens, ctx_tr)
    val_recs, drop_va = make_records(va.texts, tok, va.theta, va.ids, cfg.max_record_tokens, ctx_va)
    ids = dict(pad_id=tok.pad_id, bos_id=tok.bos_id, eos_id=tok.eos_id)
    topic = None
    if topic_dir is not None:
        topic = {"k": int(tr.theta.shape[1]), "dir": str(Path(topic_dir).resolve())}
    info = {"train_records": len(train_recs), "val_records": len(val_recs),
            "dropped_too_long": drop_tr + drop_va, "missing_theta": tr.missing_theta + va.missing_theta}
    if use_context:
        info["context_words"] = context_vocab.size - 1
    return PreparedData(tok, RecordBatches(train_recs, cfg.batch_size, **ids),
                        RecordBatches(val_recs, cfg.batch_size, **ids), topic, info,
                        context_vocab if use_context else None)


# ----------------------------------------------------------------------------- loss + evaluation

def _autocast(device: torch.device, cfg: TrainConfig):
    enabled = bool(cfg.bf16) and device.type == "cuda"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def batch_loss(model: RecurrentLM, batch, state, *, reduction: str = "mean", cond=None):
    """Cross-entropy (nats) of the batch's targets; returns (loss, new state). `cond`: θ inside a ContextLM
    (from the batch's contexts, see context_lm.context_conditioning)."""
    logits, state = model(batch.x, batch.theta, state) if cond is None else model(batch.x, None, state, cond=cond)
    logits = logits.float()
    if batch.mask is None:
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.y.reshape(-1), reduction=reduction)
    else:
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.y.reshape(-1), reduction="none")
        nll = nll * batch.mask.reshape(-1)
        loss = nll.sum() if reduction == "sum" else nll.sum() / batch.mask.sum()
    return loss, state


@torch.no_grad()
def evaluate(model: RecurrentLM, batches, device, cfg: TrainConfig, max_batches: int = 0) -> dict:
    """-> {"nats_per_char", "bits_per_char", "nats_per_token", "chars", "tokens"} over the batches."""
    was_training = model.training
    model.eval()
    total, chars, tokens, state = 0.0, 0, 0, None
    for i, batch in enumerate(batches):
        if max_batches and i >= max_batches:
            break
        batch = batch.to(device)
        with _autocast(device, cfg):
            cond, _ = context_conditioning(model, batch)
            loss, state = batch_loss(model, batch, None if batch.reset else state, reduction="sum", cond=cond)
        total += float(loss)
        chars += batch.n_chars
        tokens += batch.n_tokens
    if was_training:
        model.train()
    npc = total / max(1, chars)
    return {"nats_per_char": npc, "bits_per_char": npc / LN2, "nats_per_token": total / max(1, tokens),
            "chars": chars, "tokens": tokens}


# ----------------------------------------------------------------------------- the loop

def train_step(model: RecurrentLM, opt, batch, carry, cfg: TrainConfig, dev: torch.device, lr: float):
    """One optimisation step on a batch already on `dev`; -> (loss tensor, state to carry or None)."""
    for g in opt.param_groups:
        g["lr"] = lr
    with _autocast(dev, cfg):
        cond, topic_loss = context_conditioning(model, batch, cfg)
        loss, new_state = batch_loss(model, batch, None if batch.reset else carry, cond=cond)
    objective = loss if topic_loss is None else loss + cfg.ntm_weight * topic_loss
    opt.zero_grad(set_to_none=True)
    objective.backward()
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    return loss, (detach_state(new_state) if cfg.data_kind == "text" else None)


def make_optimizer(model: RecurrentLM, cfg: TrainConfig, dev: torch.device):
    """AdamW; no weight decay on biases and embeddings."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed" not in n)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, fused=dev.type == "cuda")


def _rng_state() -> dict:
    st = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"].cpu())
    if st.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in st["cuda"]])


def plot_loss_curve(history: dict, path: Path, title: str = "") -> None:
    fig = Figure(figsize=(6, 3.6), dpi=100)  # no pyplot: no global backend, no figure registry to close
    ax = fig.subplots()
    if history["step"]:
        ax.plot(history["step"], history["train_loss"], lw=0.8, alpha=0.6, label="train (nats/token)")
    if history["val_step"]:
        ax.plot(history["val_step"], history["val_nats_per_char"], "o-", ms=3, label="validation (nats/char)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    os.replace(tmp, path)


def train(model_config: ModelConfig, train_config: TrainConfig, out_dir, *, data_path=None, topics_dir=None,
          resume: bool = False, device: str = "auto", max_steps: int | None = None, progress: bool = True,
          preset: str = "", prepared: PreparedData | None = None) -> dict:
    """Train (or resume) into out_dir; returns a summary dict (step, best/last validation, history, speed).
    `prepared`: data already prepared by `prepare_data` for this config (a benchmark training several models
    on the same data prepares it once)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    for stale in out.glob(".*.pt.tmp*"):  # left by a run killed mid-write; the real files are intact
        stale.unlink(missing_ok=True)
    payload = None
    if resume:
        if not (out / "last.pt").is_file():
            raise FileNotFoundError(f"--resume: {out / 'last.pt'} not found (nothing to resume; drop --resume)")
        payload = read_checkpoint(out / "last.pt", device="cpu")
        model_config = ModelConfig.from_dict(payload["model_config"])
        train_config = TrainConfig.from_dict(payload["train_config"])
        preset = payload.get("preset", preset)
        if topics_dir is None and payload.get("topic"):
            topics_dir = payload["topic"]["dir"]
        if data_path is None:
            data_path = payload.get("data_path")
    cfg = train_config
    if max_steps is not None:
        cfg.max_steps = int(max_steps)
    torch.manual_seed(cfg.seed)
    if cfg.threads and dev.type == "cpu":
        torch.set_num_threads(cfg.threads)

    wants_topics = model_config.topic_dim != 0
    wants_context = bool(model_config.context_encoder)  # θ from the contexts; topic_dim = the LDA bridge's K
    if wants_context and cfg.data_kind != "records":
        raise ValueError("context_encoder needs equation records (an ingest dir), not a text file")
    if cfg.data_kind == "records" and wants_topics and topics_dir is None:
        raise ValueError("this preset is topic-conditioned: pass --topics TOPICDIR "
                         "(or --set topic_dim=0 for the unconditioned model)")
    if cfg.data_kind == "text" and wants_topics:
        raise ValueError("text data has no topic vectors: use topic_dim=0 for a text preset")
    tokenizer = Tokenizer.from_dict(payload["tokenizer"]) if payload else None
    context_vocab = ContextVocab.from_dict(payload["context_vocab"]) if payload and payload.get("context_vocab") else None
    data = prepared or prepare_data(cfg, data_path, topics_dir, tokenizer,
                                    use_topics=wants_topics and not wants_context, use_context=wants_context,
                                    context_vocab=context_vocab)
    model_config.vocab_size = data.tokenizer.vocab_size
    if wants_context:
        model_config.context_vocab_size = data.context_vocab.size
        if wants_topics:  # the LDA θ it can be asked with (generation by topic), not an input of training
            data = replace(data, topic={"k": read_theta(topics_dir)[1], "dir": str(Path(topics_dir).resolve())})
    if model_config.topic_dim == -1:  # "K of the topic dir"
        model_config.topic_dim = data.topic["k"]
    if data.topic and model_config.topic_dim != data.topic["k"]:
        raise ValueError(f"topic_dim={model_config.topic_dim} but {topics_dir} has K={data.topic['k']}")

    model = build_model(model_config).to(dev)
    if wants_context:
        model.context_vocab = data.context_vocab
        if not payload:  # (a resumed run has these in its weights)
            model.encoder.set_background(data.train.ctx_flat)
            if model_config.topic_dim:
                model.set_topic_words(topic_word_matrix(lda_topic_words(topics_dir), data.context_vocab))
    opt = make_optimizer(model, cfg, dev)
    history = {"step": [], "train_loss": [], "val_step": [], "val_nats_per_char": []}
    step, best_val, epoch, pos, carry, evals_since_best = 0, None, 0, 0, None, 0
    seconds_before = 0.0  # training seconds of earlier calls of this run (max_seconds counts across resumes)
    if payload:
        model.load_state_dict(payload["model"])
        opt.load_state_dict(payload["optimizer"])
        step, best_val = int(payload["step"]), payload.get("best_val")
        history = payload["history"]
        epoch, pos = int(payload["data_state"]["epoch"]), int(payload["data_state"]["pos"])
        evals_since_best = int(payload["data_state"].get("evals_since_best", 0))
        seconds_before = float(payload["data_state"].get("seconds", 0.0))
        if payload.get("carry") is not None:
            c = payload["carry"]
            carry = tuple(t.to(dev) for t in c) if isinstance(c, (list, tuple)) else c.to(dev)
        _set_rng_state(payload["rng"])

    t_run = time.perf_counter() - seconds_before  # the run's clock: "now" minus what earlier calls trained
    meta = {"preset": preset, "data_path": str(Path(data_path).resolve()), "topic": data.topic,
            "data_info": data.info, "tokenizer": data.tokenizer.to_dict()}
    if data.context_vocab is not None:
        meta["context_vocab"] = data.context_vocab.to_dict()

    def snapshot() -> dict:
        return {"kind": model_config.kind, "model_config": model_config.to_dict(), "train_config": cfg.to_dict(),
                "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "optimizer": opt.state_dict(), "step": step, "best_val": best_val, "history": history,
                "rng": _rng_state(), "data_state": {"epoch": epoch, "pos": pos, "evals_since_best": evals_since_best,
                                                    "seconds": time.perf_counter() - t_run},
                "carry": None if carry is None else (tuple(t.detach().cpu() for t in carry)
                                                     if isinstance(carry, tuple) else carry.detach().cpu()),
                **meta}

    def validate() -> dict:
        nonlocal best_val, evals_since_best
        res = evaluate(model, data.val.eval_batches(), dev, cfg, cfg.eval_max_batches)
        history["val_step"].append(step)
        history["val_nats_per_char"].append(res["nats_per_char"])
        improved = best_val is None or res["nats_per_char"] < best_val
        if improved:
            best_val, evals_since_best = res["nats_per_char"], 0
        else:
            evals_since_best += 1
        snap = snapshot()
        if improved:
            save_checkpoint(out / "best.pt", snap)
        save_checkpoint(out / "last.pt", snap)
        return res

    bar = tqdm(total=cfg.max_steps, initial=step, disable=not progress, file=sys.stderr, dynamic_ncols=True,
               desc=preset or "train")
    model.train()
    it = data.train.epoch_batches(epoch, cfg.seed, pos)
    tokens_done, t_train, last_val, last_plot = 0, 0.0, None, 0.0
    running, out_of_time = None, False
    while step < cfg.max_steps:
        t0 = time.perf_counter()
        batch = next(it, None)
        if batch is None:  # next epoch
            epoch, pos = epoch + 1, 0
            it = data.train.epoch_batches(epoch, cfg.seed, 0)
            continue
        batch = batch.to(dev)
        spent = (time.perf_counter() - t_run) / cfg.max_seconds if cfg.max_seconds else 0.0
        loss, carry = train_step(model, opt, batch, carry, cfg, dev, lr_at(step, cfg, spent))
        step, pos = step + 1, pos + 1
        tokens_done += batch.n_tokens
        if step % cfg.log_every == 0 or step == cfg.max_steps:
            lv = float(loss.detach())  # syncs
            history["step"].append(step)
            history["train_loss"].append(lv)
            running = lv if running is None else 0.9 * running + 0.1 * lv
        t_train += time.perf_counter() - t0
        bar.update(1)
        if running is not None and (step % cfg.log_every == 0):
            post = {"loss": f"{running:.3f}", "tok/s": f"{tokens_done / max(t_train, 1e-9):,.0f}"}
            if cfg.tokenizer == "char":
                post["bpc"] = f"{running / LN2:.3f}"
            if last_val is not None:
                post["val_bpc"] = f"{last_val['bits_per_char']:.3f}"
            bar.set_postfix(post, refresh=False)
        stop = False
        out_of_time = bool(cfg.max_seconds) and time.perf_counter() - t_run >= cfg.max_seconds
        if step % cfg.eval_every == 0 or step == cfg.max_steps or out_of_time:
            last_val = validate()
            if time.perf_counter() - last_plot > 120:  # matplotlib costs seconds; the final plot always comes
                plot_loss_curve(history, out / "loss_curve.png", f"{preset} {model_config.cell} "
                                f"{model_config.layers}x{model_config.hidden}")
                last_plot = time.perf_counter()
            stop = out_of_time or (bool(cfg.early_stop_evals) and evals_since_best >= cfg.early_stop_evals)
        elif cfg.save_every and step % cfg.save_every == 0:
            save_checkpoint(out / "last.pt", snapshot())
        if stop:
            break
    bar.close()
    if last_val is None:  # nothing trained this call (already at max_steps)
        last_val = evaluate(model, data.val.eval_batches(), dev, cfg, cfg.eval_max_batches)
    plot_loss_curve(history, out / "loss_curve.png",
                    f"{preset} {model_config.cell} {model_config.layers}x{model_config.hidden}")
    return {"step": step, "best_val_nats_per_char": best_val,
            "best_val_bits_per_char": None if best_val is None else best_val / LN2,
            "last_val": last_val, "tokens_per_s": tokens_done / max(t_train, 1e-9),
            "train_seconds": t_train, "device": str(dev), "out": str(out), "history": history,
            "stopped_for_time": out_of_time,
            "parameters": model.num_parameters(), "vocab_size": model_config.vocab_size}
