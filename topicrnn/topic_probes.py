"""Topic probes of an equation model: does it know which topic an equation belongs to, and what it writes for
a topic?

* `infer_equation_topics`  p(k | eq) ∝ p(eq | θ = e_k) p(k), scored against the context's dominant topic,
                           next to chance and a bag-of-tokens classifier (scikit-learn).
* `topic_awareness`        equations generated for topic k (`generation.generate_for_topics`), classified back.
* `symbol_word_alignment`  per topic, the LaTeX tokens whose probability rises most under it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from pipeline.ingest import read_records

from .conditioning import default_data_dir, thetas_for, topic_labels, topic_theta, training_prototypes
from .evaluation import encode_equation
from .generation import allowed_control_sequences, generate_for_topics
from .interface import LoadedModel
from .scoring import mean_next_token_probs, sequence_logprobs


def topic_top_words(topic_model: Any, topic: int, n: int = 8) -> list[str]:
    words = topic_model.top_words(topic, n=n)
    return [w[0] if isinstance(w, (tuple, list)) else str(w) for w in words]


# ----------------------------------------------------------------------------- equation -> topic
def topic_log_likelihoods(lm: LoadedModel, equations: Sequence[str], k: int, *, batch_size: int = 64) -> np.ndarray:
    """[n, K]: log p(eq | θ = e_k) for every equation and topic."""
    if not lm.conditioned:
        raise ValueError(f"{lm.path} takes no topic vector: equation→topic inference needs a topic-conditioned model")
    seqs = [encode_equation(lm.tokenizer, e) for e in equations]
    eye = np.eye(k, dtype=np.float32)
    all_seqs = [s for s in seqs for _ in range(k)]
    all_theta = np.tile(eye, (len(seqs), 1))
    ll = sequence_logprobs(lm.model, all_seqs, all_theta, batch_size=batch_size * k // max(1, min(k, 8)),
                           pad_id=lm.tokenizer.pad_id)
    return ll.reshape(len(seqs), k)


def topic_posterior(log_lik: np.ndarray, prior: np.ndarray) -> np.ndarray:
    logpost = log_lik + np.log(np.clip(prior, 1e-12, None))[None, :]
    logpost -= logpost.max(axis=1, keepdims=True)
    post = np.exp(logpost)
    return post / post.sum(axis=1, keepdims=True)


class BagOfTokensClassifier:
    """Logistic regression on LaTeX-token counts (scikit-learn): the plain baseline for eq→topic."""

    def __init__(self, tokenize, seed: int = 0, c: float = 1.0):
        self.pipeline = make_pipeline(
            CountVectorizer(analyzer=lambda s: [t for t in tokenize(s) if not t.isspace()], min_df=2),
            TfidfTransformer(sublinear_tf=True),
            LogisticRegression(C=c, max_iter=2000, random_state=seed),
        )

    def fit(self, equations: Sequence[str], labels: Sequence[int]) -> "BagOfTokensClassifier":
        self.pipeline.fit(list(equations), list(labels))
        return self

    def predict(self, equations: Sequence[str]) -> np.ndarray:
        return np.asarray(self.pipeline.predict(list(equations)))


@dataclass
class InferenceReport:
    equations: int
    k: int
    accuracy: float                 # p(k|eq) argmax == context's dominant topic
    top3_accuracy: float
    chance_uniform: float           # 1/K
    chance_majority: float          # always the most frequent training topic
    prior_only: float               # argmax of the prior alone
    bag_of_tokens: float            # scikit-learn classifier on the same test equations
    per_topic: list[dict] = field(default_factory=list)

    def to_markdown(self) -> str:
        return ("| classifier | accuracy on test equations |\n|---|---|\n"
                f"| p(k\\|eq) ∝ p(eq\\|θ=e_k) p(k), LSTM | **{self.accuracy:.3f}** (top-3 {self.top3_accuracy:.3f}) |\n"
                f"| bag of LaTeX tokens (tf-idf + logistic regression) | {self.bag_of_tokens:.3f} |\n"
                f"| majority topic | {self.chance_majority:.3f} |\n"
                f"| uniform chance 1/K | {self.chance_uniform:.3f} |\n"
                f"\n{self.equations} test equations, K = {self.k}")


def infer_equation_topics(lm: LoadedModel, topic_model: Any, data_dir: str | Path, *, max_equations: int = 400,
                          seed: int = 0, split: str = "test") -> InferenceReport:
    k = int(topic_model.k)
    table = topic_model.theta_by_id()
    train = list(read_records(data_dir, "train"))
    test = list(read_records(data_dir, split))
    train_theta = thetas_for(train, topic_model, table)
    prior = train_theta.mean(axis=0)
    prior = prior / prior.sum()
    rng = np.random.default_rng(seed)
    if len(test) > max_equations:
        test = [test[i] for i in sorted(rng.choice(len(test), size=max_equations, replace=False))]
    test_theta = thetas_for(test, topic_model, table)
    truth = test_theta.argmax(axis=1)
    eqs = [r["equation"] for r in test]
    ll = topic_log_likelihoods(lm, eqs, k)
    post = topic_posterior(ll, prior)
    pred = post.argmax(axis=1)
    top3 = np.argsort(-post, axis=1)[:, :3]
    train_labels = train_theta.argmax(axis=1)
    majority = np.bincount(train_labels, minlength=k).argmax()
    bot = BagOfTokensClassifier(lm.tokenizer.tokenize, seed=seed)
    bot.fit([r["equation"] for r in train], train_labels)
    bot_pred = bot.predict(eqs)
    per_topic = []
    labels = topic_labels(topic_model)
    for t in range(k):
        sel = truth == t
        per_topic.append({"id": t, "label": labels[t], "n": int(sel.sum()),
                          "accuracy": float((pred[sel] == t).mean()) if sel.any() else None})
    return InferenceReport(
        equations=len(test), k=k, accuracy=float((pred == truth).mean()),
        top3_accuracy=float((top3 == truth[:, None]).any(axis=1).mean()),
        chance_uniform=1.0 / k, chance_majority=float((truth == majority).mean()),
        prior_only=float((truth == prior.argmax()).mean()),
        bag_of_tokens=float((bot_pred == truth).mean()), per_topic=per_topic)


# ------------------------------------------------------------------------------------- topic awareness
@dataclass
class AwarenessReport:
    per_topic: list[dict]
    accuracy: float
    chance: float
    temperature: float
    per_topic_n: int
    theta_mode: str

    def to_markdown(self) -> str:
        lines = ["| topic | label | generated | classified back to it |", "|---|---|---|---|"]
        for row in self.per_topic:
            lines.append(f"| {row['id']} | {row['label']} | {row['n']} | {row['accuracy']:.2f} |")
        lines.append(f"\noverall {self.accuracy:.3f} vs chance {self.chance:.3f} "
                     f"(T = {self.temperature}, θ = {self.theta_mode}, {self.per_topic_n} per topic)")
        return "\n".join(lines)


def topic_awareness(lm: LoadedModel, topic_model: Any, *, per_topic: int = 20, temperature: float = 0.8,
                    seed: int = 0, data_dir: str | Path | None = None, theta_mode: str = "prototype",
                    constrained: bool = True, topics: Sequence[int] | None = None) -> AwarenessReport:
    """Generate `per_topic` equations for each topic and classify them back with p(k|eq) (uniform prior,
    so only the equation speaks)."""
    k = int(topic_model.k)
    data_dir = default_data_dir(lm, topic_model, data_dir)
    protos = training_prototypes(topic_model, data_dir)
    chosen = list(topics) if topics is not None else list(range(k))
    generated = generate_for_topics(
        lm, {t: topic_theta(topic_model, t, mode=theta_mode, prototypes=protos) for t in chosen}, per_topic,
        temperature=temperature, seed=seed, constrained=constrained,
        syntax=allowed_control_sequences(lm, data_dir) if constrained else None)
    labels = topic_labels(topic_model)
    rows = []
    hits = total = 0
    for t in chosen:
        eqs = [g.equation for g in generated if g.topic == t]
        pred = topic_log_likelihoods(lm, eqs, k).argmax(axis=1)
        rows.append({"id": int(t), "label": labels[t], "n": len(eqs), "accuracy": float((pred == t).mean())})
        hits += int((pred == t).sum())
        total += len(eqs)
    return AwarenessReport(per_topic=rows, accuracy=hits / max(total, 1), chance=1.0 / k,
                           temperature=temperature, per_topic_n=per_topic, theta_mode=theta_mode)


# ------------------------------------------------------------------------------ symbol–word alignment
@dataclass
class AlignmentRow:
    id: int
    label: str
    top_words: list[str]
    tokens: list[tuple[str, float]]     # (token, log2 lift)


def symbol_word_alignment(lm: LoadedModel, topic_model: Any, data_dir: str | Path, *,
                          baseline: LoadedModel | None = None, n_equations: int = 200, top: int = 8,
                          min_prob: float = 2e-4, seed: int = 0, split: str = "test") -> list[AlignmentRow]:
    """Per topic k: the tokens whose average next-token probability on real `split` equations (teacher
    forcing) rises most under θ = e_k, as log2 lift over the unconditioned `baseline` model (or, without
    one, over the same model with θ = the training prior). Whitespace and specials are left out; tokens
    rarer than `min_prob` under the reference are left out (a lift of a near-zero probability is noise)."""
    k = int(topic_model.k)
    recs = list(read_records(data_dir, split))
    rng = np.random.default_rng(seed)
    if len(recs) > n_equations:
        recs = [recs[i] for i in sorted(rng.choice(len(recs), size=n_equations, replace=False))]
    seqs = [encode_equation(lm.tokenizer, r["equation"]) for r in recs]
    if baseline is not None:
        if list(baseline.tokenizer.tokens) != list(lm.tokenizer.tokens):
            raise ValueError("the baseline model has another vocabulary: train both with the same tokenizer")
        ref = mean_next_token_probs(baseline.model, seqs, None, pad_id=lm.tokenizer.pad_id)
    else:
        prior = thetas_for(list(read_records(data_dir, "train")), topic_model).mean(axis=0)
        ref = mean_next_token_probs(lm.model, seqs, prior / prior.sum(), pad_id=lm.tokenizer.pad_id)
    vocab = list(lm.tokenizer.tokens)
    specials = {getattr(lm.tokenizer, a, None) for a in ("eos_id", "bos_id", "pad_id", "unk_id")}
    keep = np.array([i not in specials and not vocab[i].isspace() and ref[i] >= min_prob
                     for i in range(len(vocab))])
    labels = topic_labels(topic_model)
    rows = []
    for t in range(k):
        theta = np.zeros(k, dtype=np.float32)
        theta[t] = 1.0
        p = mean_next_token_probs(lm.model, seqs, theta, pad_id=lm.tokenizer.pad_id)
        lift = np.where(keep, np.log2(np.clip(p, 1e-12, None) / np.clip(ref, 1e-12, None)), -np.inf)
        best = np.argsort(-lift)[:top]
        rows.append(AlignmentRow(id=t, label=labels[t], top_words=topic_top_words(topic_model, t, 8),
                                 tokens=[(vocab[i], float(lift[i])) for i in best if np.isfinite(lift[i])]))
    return rows


def alignment_markdown(rows: Sequence[AlignmentRow]) -> str:
    lines = ["| topic | top words | LaTeX tokens with the highest lift (log2) |", "|---|---|---|"]
    for r in rows:
        toks = ", ".join(f"`{t.strip() or repr(t)}` {v:+.1f}" for t, v in r.tokens)
        lines.append(f"| {r.id} {r.label} | {', '.join(r.top_words)} | {toks} |")
    return "\n".join(lines)
