"""A neural topic model over an equation's context words, trained jointly with the equation LSTM (issue 20).

After TopicEq (Yasunaga & Lafferty 2019), whose θ comes from a VAE inference network over the context, and
ProdLDA (Srivastava & Sutton 2017): bag of context words -> encoder -> logistic-normal θ over K topics; a
product-of-experts decoder reconstructs the bag from a posterior sample, on top of a fixed background (the
log-frequency of each word in the training contexts, as in SAGE / Scholar). Its loss — reconstruction
+ kl_weight x KL to the Laplace approximation of a symmetric Dirichlet(1) prior, in nats per context word —
is added to the LSTM's with the weight TrainConfig.ntm_weight.

As in ProdLDA, the posterior mean is batch-normalised (each topic's logit keeps unit spread over the
contexts of a training batch; running statistics when scoring). Three measured reasons for that shape
(docs/results.md, issue 20): with a learned decoder bias, the encoder put every context on one topic (θ
one-hot and the same for all: the fastest way to learn word frequencies is through θ, and a saturated softmax
then passes no gradient); with the KL at full weight, every context got the same θ (posterior collapse:
contexts of ~30 words gain too little from a topic to pay the KL of 50 logistic-normal dimensions), with or
without the normalisation; without the normalisation, θ of a smaller KL weight used 2 of 50 topics, with it
all 50 (bench/context_encoder_bench.py). Hence the background, the normalisation and a small kl_weight. (Batches are bucketed by length:
where length gave the subject away, batch statistics would remove what θ should carry — the planted test
mixes lengths for that reason.)

The bag enters as the mean of its words' embeddings (= a linear layer over normalised counts), so a context
with half its words dropped (training, `context_keep`) looks like a shorter context, not a smaller one; an
empty bag gives the encoder's learned "no context" θ (the conditioning-dropout θ, and that of an equation
without a known context word). An LDA θ enters the same way, as the expected bag of its topics' top words
(`lda_topic_words` -> `ContextLM.topic_words`).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.topics import MODEL_FILE, TOPICS_FILE, TopicModel

PRIOR_ALPHA = 1.0  # symmetric Dirichlet prior of ProdLDA
LOGVAR_INIT_SCALE = 0.01  # the posterior starts narrow (its variance is 1% of the prior's)


class ContextEncoder(nn.Module):
    def __init__(self, vocab_size: int, topics: int, hidden: int):
        super().__init__()
        self.topics = topics
        self.embed = nn.Embedding(vocab_size, hidden, padding_idx=0)  # word -> first-layer column
        self.in_bias = nn.Parameter(torch.zeros(hidden))
        self.body = nn.Sequential(nn.Softplus(), nn.Linear(hidden, hidden), nn.Softplus())
        self.mu = nn.Linear(hidden, topics)
        self.logvar = nn.Linear(hidden, topics)
        self.mu_norm = nn.BatchNorm1d(topics, affine=False)  # ProdLDA's normalisation of the posterior mean

        self.decoder = nn.Linear(topics, vocab_size, bias=False)  # topic -> word logits; the loss only
        self.register_buffer("background", torch.zeros(vocab_size))  # log word frequency (set_background)
        var0 = (1.0 / PRIOR_ALPHA) * (1.0 - 1.0 / topics)  # Laplace approximation: mean 0, this variance
        self.register_buffer("prior_var", torch.tensor(var0), persistent=False)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # training calls (KL warm-up)
        nn.init.zeros_(self.logvar.weight)
        nn.init.constant_(self.logvar.bias, float(np.log(var0 * LOGVAR_INIT_SCALE)))

    def set_background(self, word_ids: np.ndarray) -> None:
        """The decoder's fixed background: log frequency of each context word id in `word_ids` (the training
        contexts), with half a count added so that no word is impossible."""
        counts = np.bincount(np.asarray(word_ids, dtype=np.int64), minlength=self.background.numel())[1:] + 0.5
        bg = np.concatenate([[-30.0], np.log(counts / counts.sum())])  # id 0 (padding) is never a word
        self.background.copy_(torch.as_tensor(bg, dtype=torch.float32))

    # -------------------------------------------------------------------------------------- encoding
    def _head(self, pooled: torch.Tensor, batch_stats: bool) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(pooled + self.in_bias)
        n = self.mu_norm
        mu = F.batch_norm(self.mu(h).float(), n.running_mean, n.running_var, training=batch_stats and self.training,
                          momentum=n.momentum, eps=n.eps)
        return mu, self.logvar(h).float().clamp(-8.0, 8.0)

    def encode(self, ids: torch.Tensor, batch_stats: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """ids [B, L] (0 = padding) -> (mu, logvar) [B, K] of the logistic-normal posterior (mu normalised
        with the batch's statistics while training a batch, else with the running ones)."""
        mask = (ids > 0).unsqueeze(-1).to(self.embed.weight.dtype)
        pooled = (self.embed(ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self._head(pooled, batch_stats and ids.shape[0] > 1)

    def encode_weights(self, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A weighted bag [B, V] (each row summing to 1, or 0 = empty) -> (mu, logvar): for expected bags."""
        return self._head(weights.to(self.embed.weight.dtype) @ self.embed.weight, batch_stats=False)

    def theta(self, ids: torch.Tensor) -> torch.Tensor:
        """The posterior mean's θ (used for scoring and generation): softmax(mu)."""
        return torch.softmax(self.encode(ids)[0], dim=-1)

    def empty_theta(self, batch: int, device) -> torch.Tensor:
        mu = self.encode(torch.zeros(1, 1, dtype=torch.long, device=device), batch_stats=False)[0]
        return torch.softmax(mu, dim=-1).expand(batch, -1)

    # -------------------------------------------------------------------------------------- training
    def topic_model_loss(self, ids: torch.Tensor, z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
                         kl_weight: float | torch.Tensor = 1.0) -> torch.Tensor:
        """(reconstruction of the whole bag `ids` from θ = softmax(z) + kl_weight * KL) in nats per context word."""
        valid = ids > 0
        logits = self.decoder(torch.softmax(z, -1)).float() + self.background
        recon = -(F.log_softmax(logits, dim=-1).gather(1, ids) * valid).sum()
        var = logvar.exp()
        var0 = self.prior_var
        kl = 0.5 * (var / var0 + mu.pow(2) / var0 - 1.0 - logvar + torch.log(var0)).sum()
        return (recon + kl_weight * kl) / valid.sum().clamp(min=1)

    def regularised_theta(self, ids: torch.Tensor, *, keep: float = 1.0, drop: float = 0.0, noise: float = 0.0,
                          kl_weight: float = 1.0, kl_warmup: int = 0,
                          lm_grad: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Training: -> (θ for the LSTM [B, K], topic-model loss). The encoder sees a random share `keep` of
        each context's words; the LSTM's θ is the posterior mean's with Gaussian noise of std `noise` on its
        logits; a random share `drop` of the rows gets the no-context θ instead (conditioning dropout). The
        topic model reconstructs every word of the context from a posterior sample; the KL's weight rises
        linearly to `kl_weight` over the first `kl_warmup` calls (counted in `steps`, a buffer that travels
        with the weights). `lm_grad` scales the gradient the LSTM sends back through θ into the encoder
        (0: the encoder learns from the topic model alone; the LSTM still learns to read its θ)."""
        self.steps += 1
        # a tensor, not a float: reading the step count back would sync the GPU every step
        ramp = (self.steps.float() / kl_warmup).clamp(max=1.0) if kl_warmup > 0 else 1.0
        seen = ids
        if keep < 1.0:
            seen = ids * (torch.rand(ids.shape, device=ids.device) < keep)
        mu, logvar = self.encode(seen)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        loss = self.topic_model_loss(ids, z, mu, logvar, kl_weight * ramp)
        theta = torch.softmax(mu + noise * torch.randn_like(mu) if noise > 0 else mu, dim=-1)
        if lm_grad != 1.0:  # same value, gradient scaled
            theta = theta.detach() + lm_grad * (theta - theta.detach()) if lm_grad else theta.detach()
        if drop > 0:
            rows = torch.rand(ids.shape[0], 1, device=ids.device) < drop
            theta = torch.where(rows, self.empty_theta(1, ids.device), theta)
        return theta, loss


def lda_topic_words(topic_dir: str | Path, n: int = 30) -> list[list[tuple[str, float]]]:
    """Each LDA topic's top `n` words with their weights: from the gensim model when gensim is there (the CPU
    machine), else the 10 per topic that TOPICDIR/topics.json lists (the GPU image has no gensim)."""
    topic_dir = Path(topic_dir)
    if (topic_dir / MODEL_FILE).is_file():
        try:
            model = TopicModel.load(topic_dir)
            return [list(model.top_word_weights(k, n)) for k in range(model.k)]
        except ImportError:
            pass
    path = topic_dir / TOPICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: fit topics first (topiceq topics fit --out {topic_dir})")
    topics = json.loads(path.read_text())["topics"]
    return [[(w["word"], float(w.get("weight", 1.0))) for w in t.get("top_words", [])][:n] for t in topics]


def topic_word_matrix(topic_words: list[list[tuple[str, float]]], vocab) -> np.ndarray:
    """[K, V]: row k = LDA topic k's top words that the context vocabulary knows, weights normalised to sum 1
    (a topic with none of them gets a zero row: the no-context θ)."""
    out = np.zeros((len(topic_words), vocab.size), dtype=np.float32)
    for k, words in enumerate(topic_words):
        for w, weight in words:
            i = vocab.index.get(w)
            if i is not None:
                out[k, i] += weight
        total = out[k].sum()
        if total > 0:
            out[k] /= total
    return out
