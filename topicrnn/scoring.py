"""The one scoring path: log-probabilities of token sequences under any `SequenceModel`.

`sequence_logprobs` scores many sequences at once (batched by length, so padding costs little; each starts
from a fresh state) and long ones in chunks that carry the state; `LoadedModel.score`, the evaluation
tables, the topic probes and the trainers' validation of non-torch models all go through it.
`token_logprobs` keeps the same figures per position; `mean_next_token_probs` averages the same pass into one
next-token distribution (the alignment probe).

A model with `forward(tokens [B, T], theta, state)` (the torch models: one cuDNN call) runs a block in one
call; any other model is stepped through it (`forward_block`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np
import torch
from tqdm import tqdm

if TYPE_CHECKING:  # the protocol lives in interface.py, which imports this module
    from .interface import SequenceModel, State


def forward_block(model: "SequenceModel", tokens: torch.Tensor, theta: torch.Tensor | None,
                  state: "State | None") -> tuple[torch.Tensor, "State"]:
    """tokens [B, T] -> (logits [B, T, V], state after the block)."""
    forward = getattr(model, "forward", None)
    if forward is not None:
        return forward(tokens, theta, state)
    steps = []
    for t in range(tokens.shape[1]):
        logits, state = model.step(tokens[:, t], theta, state)
        steps.append(logits)
    return torch.stack(steps, 1), state


def _as_float(logits: torch.Tensor) -> torch.Tensor:
    """float32 for softmax (bf16 models), but float64 kept where a model computes in it (numpy models)."""
    return logits if logits.dtype == torch.float64 else logits.float()


def _padded(sequences: Sequence[Sequence[int]], batch: Sequence[int], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids [b, longest] padded with `pad`, and the mask [b, longest - 1] of the predicted positions."""
    longest = max(len(sequences[i]) for i in batch)
    ids = torch.full((len(batch), longest), pad, dtype=torch.long)
    mask = torch.zeros((len(batch), max(longest - 1, 0)), dtype=torch.bool)
    for row, i in enumerate(batch):
        s = sequences[i]
        ids[row, :len(s)] = torch.as_tensor(s, dtype=torch.long)
        mask[row, :len(s) - 1] = True
    return ids, mask


def _predicted(model: "SequenceModel", ids: torch.Tensor, theta: torch.Tensor | None, chunk: int | None,
               pick: str) -> torch.Tensor:
    """log p of each target ([b, T-1], pick="logprob") or the next-token distribution ([b, T-1, V], "probs"),
    the inputs run in chunks of `chunk` steps (None: one block) with the state carried."""
    inputs, targets = ids[:, :-1], ids[:, 1:]
    step = chunk or max(1, inputs.shape[1])
    parts, state = [], None
    for s in range(0, inputs.shape[1], step):
        logits, state = forward_block(model, inputs[:, s:s + step], theta, state)
        logits = _as_float(logits)
        if pick == "probs":
            parts.append(torch.softmax(logits, dim=-1))
        else:
            logp = torch.log_softmax(logits, dim=-1)
            parts.append(logp.gather(-1, targets[:, s:s + step].unsqueeze(-1)).squeeze(-1))
    return torch.cat(parts, 1)


class _EvalMode:
    """Dropout off while scoring; a model that was training is put back."""

    def __init__(self, model):
        self.model, self.was_training = model, bool(getattr(model, "training", False))

    def __enter__(self):
        if self.was_training:
            self.model.eval()

    def __exit__(self, *exc):
        if self.was_training:
            self.model.train()


def _theta_rows(model: "SequenceModel", thetas, batch: Sequence[int]) -> torch.Tensor | None:
    if not model.topic_dim or thetas is None:
        return None
    rows = np.asarray(thetas, dtype=np.float32)
    rows = rows[batch] if rows.ndim == 2 else np.tile(rows, (len(batch), 1))
    return torch.as_tensor(rows, dtype=torch.float32, device=model.device)


def _scored_batches(model: "SequenceModel", sequences: Sequence[Sequence[int]], thetas, *, batch_size: int,
                    pad_id: int, chunk: int | None, progress: bool, desc: str):
    """(batch indices, log p of every target [b, T-1] with padding at 0) for length-sorted batches."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    batches: Iterable = [order[i:i + batch_size] for i in range(0, len(sequences), batch_size)]
    if progress:
        batches = tqdm(batches, desc=desc, unit="batch", leave=False)
    with _EvalMode(model):
        for batch in batches:
            ids, mask = _padded(sequences, batch, pad_id)
            if ids.shape[1] < 2:
                continue
            picked = _predicted(model, ids.to(model.device), _theta_rows(model, thetas, batch), chunk, "logprob")
            yield batch, picked.masked_fill(~mask.to(picked.device), 0.0)


@torch.no_grad()
def sequence_logprobs(model: "SequenceModel", sequences: Sequence[Sequence[int]], thetas: np.ndarray | None, *,
                      batch_size: int = 64, pad_id: int = 0, chunk: int | None = None, progress: bool = False,
                      desc: str = "scoring") -> np.ndarray:
    """Natural-log probability of each framed id sequence (the first id is given, the rest are predicted).

    `thetas` is [n, K] (one θ per sequence) or None; θ is ignored by a model that takes none. `chunk` runs long
    sequences in blocks of that many steps with the state carried (None: one block).
    """
    out = np.zeros(len(sequences), dtype=np.float64)
    for batch, picked in _scored_batches(model, sequences, thetas, batch_size=batch_size, pad_id=pad_id,
                                         chunk=chunk, progress=progress, desc=desc):
        out[batch] = picked.sum(dim=1).double().cpu().numpy()
    return out


@torch.no_grad()
def token_logprobs(model: "SequenceModel", sequences: Sequence[Sequence[int]], thetas: np.ndarray | None, *,
                   batch_size: int = 64, pad_id: int = 0) -> list[np.ndarray]:
    """log p of every predicted token of each sequence (len(sequence) - 1 values each): the same pass as
    `sequence_logprobs`, kept per position (e.g. where in an equation a topic helps)."""
    out = [np.zeros(max(len(s) - 1, 0)) for s in sequences]
    for batch, picked in _scored_batches(model, sequences, thetas, batch_size=batch_size, pad_id=pad_id,
                                         chunk=None, progress=False, desc=""):
        rows = picked.double().cpu().numpy()
        for row, i in enumerate(batch):
            out[i] = rows[row, :len(sequences[i]) - 1]
    return out


@torch.no_grad()
def mean_next_token_probs(model: "SequenceModel", sequences: Sequence[Sequence[int]], theta: np.ndarray | None, *,
                          batch_size: int = 64, pad_id: int = 0) -> np.ndarray:
    """Average next-token distribution [V] over every predicted position of `sequences`, with one θ [K]
    shared by all of them (teacher forcing: the prefixes are the real sequences)."""
    total, count = np.zeros(model.vocab_size), 0
    with _EvalMode(model):
        for start in range(0, len(sequences), batch_size):
            batch = list(range(start, min(start + batch_size, len(sequences))))
            ids, mask = _padded(sequences, batch, pad_id)
            if ids.shape[1] < 2:
                continue
            probs = _predicted(model, ids.to(model.device), _theta_rows(model, theta, batch), None, "probs")
            probs = probs * mask.to(probs.device).unsqueeze(-1)
            total += probs.sum(dim=(0, 1)).double().cpu().numpy()
            count += int(mask.sum())
    return total / max(count, 1)
