"""The one sampler, for every `SequenceModel` (torch RNN/GRU/LSTM, n-gram, numpy RNN, HMM).

All n sequences advance together; the state is carried step by step, so the prefix is never re-run.
Temperature, top-k / top-p, θ (one row per sequence or one for all) and an optional per-sequence
`constraint` (e.g. topicrnn.latex_syntax: it masks the next-token distribution so the prefix stays
completable, and says what to append to sequences cut off at `max_len`) are applied here once, for every kind.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import torch

from .scoring import forward_block
from .theta import theta_batch
from .tokenizers import Tokenizer

if TYPE_CHECKING:  # the protocol lives in interface.py, which imports this module
    from .interface import SequenceModel


class SequenceConstraint(Protocol):
    def start(self, batch_size: int) -> None: ...
    def allowed_mask(self) -> torch.Tensor: ...  # bool [B, V]
    def advance(self, token_ids: list[int]) -> None: ...
    def closing(self) -> list[str]: ...


def filter_logits(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None) -> torch.Tensor:
    """Temperature, then top-k, then nucleus (top-p) filtering; removed entries become -inf."""
    if temperature != 1.0:
        logits = logits / max(float(temperature), 1e-8)
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0.0 < top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        drop_sorted = cum - torch.softmax(sorted_logits, dim=-1) >= top_p  # keep the token that crosses p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


@torch.no_grad()
def sample(model: "SequenceModel", tokenizer: Tokenizer, *, n: int = 1, max_len: int = 300,
           temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
           greedy: bool = False, prime: str = "", theta=None, stop_at_eos: bool = True,
           seed: int | None = None, constraint: SequenceConstraint | None = None) -> list[str]:
    """Generate n texts; each is `prime` + the continuation (at most `max_len` new tokens).

    temperature <= 0 means greedy. Special tokens other than <eos> are never emitted; <eos> only when
    stop_at_eos. A sequence stops at <eos>; one cut at max_len gets `constraint.closing()[i]` appended.
    """
    if n < 1 or max_len < 0:
        raise ValueError("n must be >= 1 and max_len >= 0")
    device = model.device
    was_training = bool(getattr(model, "training", False))
    if was_training:  # dropout off while sampling
        model.eval()
    greedy = greedy or temperature <= 0
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed) if seed is not None else int(torch.randint(0, 2**62, (1,)).item()))

    vocab = tokenizer.vocab_size
    if model.vocab_size != vocab:
        raise ValueError(f"tokenizer has {vocab} tokens but the model {model.vocab_size}")
    theta_t = theta_batch(theta, n, model.topic_dim, device)
    # Tokens never sampled: <pad>, <bos>, <unk> always; <eos> unless we stop on it. As an additive -inf bias,
    # so that banning and temperature are one kernel a step (on a GPU the loop is bound by kernel launches).
    ban_bias = torch.zeros(vocab, dtype=torch.float32, device=device)
    ban_bias[[tokenizer.pad_id, tokenizer.bos_id, tokenizer.unk_id]] = float("-inf")
    if not stop_at_eos:
        ban_bias[tokenizer.eos_id] = float("-inf")
    inv_temperature = 1.0 if greedy else 1.0 / max(float(temperature), 1e-8)

    prime_ids = tokenizer.encode(prime) if prime else []
    if tokenizer.unk_id in prime_ids:
        raise ValueError(f"the prime {prime!r} holds symbols the model never saw")
    prefix = torch.tensor([tokenizer.bos_id] + prime_ids, dtype=torch.long, device=device)
    logits, state = forward_block(model, prefix.unsqueeze(0).expand(n, -1), theta_t, None)
    logits = logits[:, -1].float()
    if constraint is not None:
        constraint.start(n)
        for tid in prime_ids:
            constraint.advance([tid] * n)

    eos = tokenizer.eos_id
    picked: list[torch.Tensor] = []  # one [n] tensor a step, stacked once at the end
    finished = torch.zeros(n, dtype=torch.bool, device=device)
    sync_every = 1 if device.type == "cpu" else 16  # avoid a GPU sync on every step
    for t in range(max_len):
        logits = torch.add(ban_bias, logits, alpha=inv_temperature)  # bias + logits / T
        if constraint is not None:
            allowed = constraint.allowed_mask().to(device)
            logits = logits.masked_fill(~allowed, float("-inf"))
            dead = torch.isinf(logits).all(dim=-1)
            if bool(dead.any()):  # a constraint that allows nothing: end the sequence (closing() completes it)
                logits[dead, eos] = 0.0
        if greedy:
            nxt = logits.argmax(dim=-1)
        else:
            probs = torch.softmax(filter_logits(logits, top_k=top_k, top_p=top_p), -1)
            nxt = torch.multinomial(probs, 1, generator=gen).squeeze(1)
        if stop_at_eos:
            nxt = nxt.masked_fill_(finished, eos)  # finished rows keep writing <eos>
        picked.append(nxt)
        if constraint is not None:
            constraint.advance(nxt.tolist())
        if stop_at_eos:
            finished |= nxt == eos
            if (t + 1) % sync_every == 0 and bool(finished.all()):
                break
        if t + 1 < max_len:
            logits, state = model.step(nxt, theta_t, state)
            logits = logits.float()

    rows = torch.stack(picked, 1).tolist() if picked else [[] for _ in range(n)]
    closing = constraint.closing() if constraint is not None else None
    texts = []
    for i, row in enumerate(rows):
        ended = eos in row
        if ended:
            row = row[: row.index(eos)]
        text = tokenizer.detokenize([tokenizer.tokens[j] for j in prime_ids + row])
        if not ended and closing is not None:
            text += closing[i]
        texts.append(text)
    if was_training:
        model.train()
    return texts
