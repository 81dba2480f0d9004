"""Fitting the topic model: gensim LDA on the ingest dir's train split (capped per paper and per source),
θ of every equation, the topic table and the metrics (coherence, held-out perplexity, NMI with the area).
What the fit writes and how it is read back is pipeline/topics.py.
"""
from __future__ import annotations

import hashlib
import sys
import time
from collections import Counter, defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from tqdm import tqdm

from pipeline.topic_tokens import Tokenizer, plural_map
from pipeline.topics import (CONFIG_FILE, DICTIONARY_FILE, METRICS_FILE, MODEL_FILE, PHRASES_FILE, PLURALS_FILE,
                             THETA_FILE, TOPICS_FILE, TopicConfig, TopicModel, _write_json, auto_labels, coarse_area,
                             load_labels, read_equations, source_group)


def _stable_key(seed: int, text: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}\0{text}".encode(), digest_size=8).digest(), "big")


def select_training(records: Sequence[dict], tokens: Sequence[list[str]], config: TopicConfig,
                    splits: Iterable[str] = ("train",)) -> list[int]:
    """Indices of records (of the given splits) used to fit: enough tokens, at most max_per_paper per paper and
    max_per_source per source, chosen by a seeded hash of the id (independent of file order). Returned in
    file order. The same caps on val+test give the balanced held-out set the metrics use."""
    splits = set(splits)
    by_paper: dict[str, list[int]] = defaultdict(list)
    for i, rec in enumerate(records):
        if rec["split"] in splits and len(tokens[i]) >= config.min_tokens:
            by_paper[rec["paper"]].append(i)
    keep_paper: list[int] = []
    for idxs in by_paper.values():
        idxs = sorted(idxs, key=lambda i: _stable_key(config.seed, records[i]["id"]))
        keep_paper.extend(idxs[: config.max_per_paper] if config.max_per_paper else idxs)
    by_source: dict[str, list[int]] = defaultdict(list)
    for i in keep_paper:
        by_source[source_group(records[i])].append(i)
    keep: list[int] = []
    for idxs in by_source.values():
        idxs = sorted(idxs, key=lambda i: _stable_key(config.seed + 1, records[i]["id"]))
        keep.extend(idxs[: config.max_per_source] if config.max_per_source else idxs)
    return sorted(keep)


def _lda_documents(records, train_idx, bows, config: TopicConfig) -> list[list[tuple[int, int]]]:
    if config.documents == "contexts":
        return [bows[i] for i in train_idx]
    joined: dict[str, Counter] = {}
    for i in train_idx:
        joined.setdefault(records[i]["paper"], Counter()).update(dict(bows[i]))
    return [sorted(c.items()) for c in joined.values()]


def train_lda(corpus, dictionary, config: TopicConfig):
    """gensim LdaModel (reproducible with random_state) or LdaMulticore when config.multicore."""
    from gensim.models import LdaModel, LdaMulticore

    common = dict(corpus=corpus, id2word=dictionary, num_topics=config.k, passes=config.passes,
                  iterations=config.iterations, chunksize=config.chunksize, random_state=config.seed,
                  eval_every=None, eta=config.eta)
    if config.multicore:
        alpha = "symmetric" if config.alpha == "auto" else config.alpha
        return LdaMulticore(workers=config.workers, alpha=alpha, **common)
    return LdaModel(alpha=config.alpha, update_every=1, **common)


def coherence_scores(model: TopicModel, texts: list[list[str]], topn: int = 10) -> dict:
    """c_npmi (window 10) and c_v of the top-n words of each topic, against the given tokenised texts."""
    from gensim.models.coherencemodel import CoherenceModel

    topics = [model.top_words(t, topn) for t in range(model.k)]
    out = {}
    for measure, window in (("c_npmi", 10), ("c_v", None)):
        cm = CoherenceModel(topics=topics, texts=texts, dictionary=model.dictionary, coherence=measure,
                            window_size=window, topn=topn, processes=1)
        per_topic = [float(x) for x in cm.get_coherence_per_topic()]
        out[measure] = float(np.mean(per_topic))
        out[f"{measure}_per_topic"] = per_topic
    return out


def heldout_perplexity(model: TopicModel, token_lists: list[list[str]]) -> dict:
    """Held-out perplexity by document completion: θ is inferred from every other known token of a held-out
    context (positions 0, 2, 4, ...) and the remaining tokens are scored, exp(-Σ log Σ_k θ_k β_kw / N).
    Comparable across K and across document modes (gensim's log_perplexity bound is not: it adds a global
    topic term divided by the held-out word count). gensim's bound is reported beside it."""
    token2id = model.dictionary.token2id
    known = [[token2id[w] for w in toks if w in token2id] for toks in token_lists]
    known = [ids for ids in known if len(ids) >= 2]
    if not known:
        return {"heldout_docs": 0, "heldout_perplexity": None, "heldout_perplexity_gensim_bound": None}
    half_bows = [sorted(Counter(ids[0::2]).items()) for ids in known]
    theta = model.theta_of_bows(half_bows).astype(np.float64)
    beta = model.lda.get_topics().astype(np.float64)  # [K, V], rows sum to 1
    log_lik, n_words = 0.0, 0
    for d, ids in enumerate(known):
        rest = np.asarray(ids[1::2])
        log_lik += float(np.log(theta[d] @ beta[:, rest]).sum())
        n_words += len(rest)
    full_bows = [sorted(Counter(ids).items()) for ids in known]
    saved = model.lda.random_state
    model.lda.random_state = np.random.RandomState(model.config.seed)
    try:
        bound = float(model.lda.log_perplexity(full_bows))
    finally:
        model.lda.random_state = saved
    return {"heldout_docs": len(known), "heldout_words_scored": n_words,
            "heldout_perplexity": float(np.exp(-log_lik / n_words)),
            "heldout_perplexity_gensim_bound": 2.0 ** (-bound)}


def area_nmi(theta: np.ndarray, areas: Sequence[str], mask: np.ndarray) -> float | None:
    """Normalised mutual information between each equation's dominant topic and its (coarse) area."""
    from sklearn.metrics import normalized_mutual_info_score

    mask = mask & np.array([coarse_area(a) is not None for a in areas], dtype=bool)
    labels = [coarse_area(areas[i]) for i in np.flatnonzero(mask)]
    if len(set(labels)) < 2:
        return None
    return float(normalized_mutual_info_score(labels, theta[mask].argmax(axis=1)))


def topic_area_shares(theta: np.ndarray, areas: Sequence[str]) -> list[dict[str, float]]:
    """Per topic, the share of its mass (the sum of θ_k over the equations) in each area (`coarse_area`: math,
    astro-ph, physics, stat, cs-ml), largest first; equations without an area are left out ({} for every
    topic when none has one)."""
    coarse = [coarse_area(a) for a in areas]
    names = sorted({a for a in coarse if a is not None})
    k = theta.shape[1]
    if not names:
        return [{} for _ in range(k)]
    mass = np.zeros((len(names), k))
    for j, name in enumerate(names):
        rows = [i for i, a in enumerate(coarse) if a == name]
        mass[j] = theta[rows].sum(axis=0)
    total = mass.sum(axis=0)
    out = []
    for t in range(k):
        shares = {names[j]: float(mass[j, t] / total[t]) for j in range(len(names))} if total[t] > 0 else {}
        out.append(dict(sorted(shares.items(), key=lambda kv: -kv[1])))
    return out


def fit_topics(data_dir: str | Path, out_dir: str | Path, config: TopicConfig | None = None, *,
               labels_file: str | Path | None = None, progress: bool = False) -> TopicModel:
    """Fit LDA on the ingest dir's train split (capped), write TOPICDIR, return the model."""
    from gensim.corpora import Dictionary

    config = config or TopicConfig()
    t_start = time.perf_counter()
    records = read_equations(data_dir)
    tokenizer = Tokenizer(config.tokens)
    tokens = [tokenizer(r["context"]) for r in tqdm(records, desc="tokens", unit="ctx", disable=not progress,
                                                     file=sys.stderr, mininterval=1.0)]
    plurals = None
    if config.tokens.fold_plurals:
        plurals = plural_map(t for t, r in zip(tokens, records) if r["split"] == "train")
        tokens = [[plurals.get(w, w) for w in toks] for toks in tokens]
    phrases = None
    if config.bigrams:
        from gensim.models.phrases import Phrases

        phrases = Phrases([t for t, r in zip(tokens, records) if r["split"] == "train"],
                          min_count=config.bigram_min_count, threshold=config.bigram_threshold)
        phrases = phrases.freeze()
        tokens = [list(phrases[t]) for t in tokens]

    train_idx = select_training(records, tokens, config)
    if not train_idx:
        raise ValueError(f"no train-split context in {data_dir} has {config.min_tokens}+ words: "
                         "nothing to fit topics on")
    dictionary = Dictionary(tokens[i] for i in train_idx)
    dictionary.filter_extremes(no_below=config.no_below, no_above=config.no_above, keep_n=config.keep_n)
    if len(dictionary) < config.k:
        raise ValueError(f"only {len(dictionary)} words survive the vocabulary filter (no_below="
                         f"{config.no_below}, no_above={config.no_above}) for k={config.k} topics: use more data, "
                         "a lower no_below or fewer topics")
    bows = [dictionary.doc2bow(t) for t in tokens]
    corpus = _lda_documents(records, train_idx, bows, config)
    corpus = [d for d in corpus if d]
    t_fit, cpu_fit = time.perf_counter(), time.process_time()
    lda = train_lda(corpus, dictionary, config)
    fit_seconds, fit_cpu_seconds = time.perf_counter() - t_fit, time.process_time() - cpu_fit

    top = [[w for w, _ in lda.show_topic(t, topn=10)] for t in range(config.k)]
    autos = auto_labels(top)
    topics = [{"id": t, "auto_label": autos[t], "human_label": None,
               "top_words": [{"word": w, "weight": float(p)} for w, p in lda.show_topic(t, topn=10)]}
              for t in range(config.k)]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = TopicModel(lda, dictionary, config, topics, out_dir, phrases, plurals)
    if labels_file is not None:
        model.set_labels(load_labels(labels_file, config.k), labels_file)

    t_theta = time.perf_counter()
    theta = model.theta_of_bows(bows, progress=progress)
    theta_seconds = time.perf_counter() - t_theta
    # name each topic after the areas of the training contexts it was fitted on
    shares = topic_area_shares(theta[train_idx], [records[i]["area"] for i in train_idx])
    for topic, label, area_share in zip(model.topics, auto_labels(top, area_shares=shares), shares):
        topic["auto_label"], topic["areas"] = label, area_share
    n_known = np.fromiter((sum(c for _, c in b) for b in bows), dtype=np.int32, count=len(bows))
    ids = np.array([r["id"] for r in records])

    lda.save(str(out_dir / MODEL_FILE))
    dictionary.save(str(out_dir / DICTIONARY_FILE))
    if phrases is not None:
        phrases.save(str(out_dir / PHRASES_FILE))
    if plurals is not None:
        _write_json(out_dir / PLURALS_FILE, plurals)
    np.savez_compressed(out_dir / THETA_FILE, ids=ids, theta=theta, n_known=n_known)
    _write_json(out_dir / TOPICS_FILE, {"topics": model.topics})
    _write_json(out_dir / CONFIG_FILE, asdict(config))

    split_counts = Counter(r["split"] for r in records)
    source_before = Counter(source_group(r) for r in records if r["split"] == "train")
    source_after = Counter(source_group(records[i]) for i in train_idx)
    metrics: dict = {
        "data_dir": str(data_dir), "equations": len(records), "splits": dict(split_counts),
        "train_contexts_used": len(train_idx), "lda_documents": len(corpus), "documents": config.documents,
        "vocabulary": len(dictionary), "k": config.k,
        "empty_contexts": int((n_known == 0).sum()),
        "largest_sources_before_caps": source_before.most_common(5),
        "largest_sources_after_caps": source_after.most_common(5),
        "area_counts_used": dict(Counter(str(coarse_area(records[i]["area"])) for i in train_idx)),
        "fit_seconds": round(fit_seconds, 3), "fit_cpu_seconds": round(fit_cpu_seconds, 3),
        "theta_seconds": round(theta_seconds, 3),
        "theta_per_second": round(len(records) / theta_seconds, 1) if theta_seconds > 0 else None,
    }
    if config.metrics:
        t_metrics = time.perf_counter()
        ref = [tokens[i] for i in train_idx]
        if len(ref) > config.coherence_max_texts:
            rng = np.random.RandomState(config.seed)
            ref = [ref[i] for i in sorted(rng.choice(len(ref), config.coherence_max_texts, replace=False))]
        metrics.update(coherence_scores(model, ref))
        # Held-out = val+test contexts under the same caps as training (else the Stacks Project's chapters
        # would be most of it); the uncapped figures are kept too.
        held = select_training(records, tokens, config, splits=("val", "test"))
        metrics.update(heldout_perplexity(model, [tokens[i] for i in held]))
        held_all = [i for i, r in enumerate(records) if r["split"] in ("val", "test")]
        metrics["heldout_perplexity_uncapped"] = heldout_perplexity(model, [tokens[i] for i in held_all])[
            "heldout_perplexity"]
        areas = [r["area"] for r in records]
        known = n_known > 0

        def mask(idx):
            m = np.zeros(len(records), dtype=bool)
            m[idx] = True
            return m & known

        metrics["nmi_area_heldout"] = area_nmi(theta, areas, mask(held))
        metrics["nmi_area_train_used"] = area_nmi(theta, areas, mask(train_idx))
        metrics["nmi_area_all"] = area_nmi(theta, areas, known)
        metrics["heldout_area_counts"] = dict(Counter(str(coarse_area(records[i]["area"])) for i in held))
        metrics["metrics_seconds"] = round(time.perf_counter() - t_metrics, 3)
    metrics["total_seconds"] = round(time.perf_counter() - t_start, 3)
    _write_json(out_dir / METRICS_FILE, metrics)
    model.metrics = metrics
    return model
