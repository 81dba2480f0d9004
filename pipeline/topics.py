"""Topics: gensim LDA over the words around display equations, and θ (topic mixture) for any words.

Fit on the train split of an ingest dir (``equations.jsonl``), with caps per paper and per source (a book such
as the Stacks Project, whose ~120 chapters are separate "papers", counts as ONE source) so that no single
source takes over the topics. LDA's documents are either the equation contexts or whole papers (the paper's
selected contexts joined); either way each equation's θ is inferred from its own context words only.

TOPICDIR holds: ``lda.model*`` (gensim LdaModel), ``dictionary.gensim``, ``plurals.json`` (plural -> singular
learned from the training contexts), ``phrases.pkl`` (when bigrams are on),
``theta.npz`` (``ids``, dense ``theta`` [N, K] float32 for every equation of the ingest dir, all splits,
``n_known`` = known tokens per context), ``topics.json``, ``config.json``, ``metrics.json``, ``labels.toml``
(when human labels were given).
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
import tomllib
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from pipeline.topic_tokens import TokenConfig, Tokenizer, plural_map

MODEL_FILE = "lda.model"
DICTIONARY_FILE = "dictionary.gensim"
PHRASES_FILE = "phrases.pkl"
PLURALS_FILE = "plurals.json"
THETA_FILE = "theta.npz"
TOPICS_FILE = "topics.json"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
LABELS_FILE = "labels.toml"


@dataclass
class TopicConfig:
    """Everything that decides the topics. Stored as TOPICDIR/config.json."""

    k: int = 50                      # number of topics: best c_npmi, c_v and perplexity in the sweep (results.md)
    seed: int = 0                    # LdaModel random_state, cap sampling, inference initialisation
    documents: str = "papers"        # LDA documents: "papers" (a paper's selected contexts joined; measured
    #                                  better on every K: docs/results.md) or "contexts" (one per equation)
    passes: int = 10
    iterations: int = 50             # cap on per-document E-step iterations while training (gensim default)
    infer_iterations: int = 50       # same cap when inferring θ (converges well before on short contexts)
    chunksize: int = 2000
    alpha: str = "auto"              # learned asymmetric prior (LdaMulticore cannot: it uses "symmetric")
    eta: str | None = None           # None = symmetric 1/K
    no_below: int = 5                # Dictionary.filter_extremes: keep words in >= no_below training contexts
    no_above: float = 0.5            # ... and in <= this fraction of them
    keep_n: int = 20000
    bigrams: bool = False            # gensim Phrases over the training contexts
    bigram_min_count: int = 10
    bigram_threshold: float = 10.0
    max_per_paper: int | None = 400  # training contexts kept per paper (seeded random choice)
    max_per_source: int | None = 1500  # ... and per source (book/collection); None = no cap
    min_tokens: int = 3              # training contexts with fewer tokens are left out of the fit
    multicore: bool = False          # LdaMulticore: not reproducible and not faster on 2 cores (anchors.md)
    workers: int | None = None
    metrics: bool = True             # coherence, held-out perplexity, NMI (costs a few seconds)
    coherence_max_texts: int = 20000  # reference texts for coherence (seeded subsample above this)
    tokens: TokenConfig = field(default_factory=TokenConfig)

    def __post_init__(self):
        if isinstance(self.tokens, dict):
            self.tokens = TokenConfig(**self.tokens)
        if self.documents not in ("contexts", "papers"):
            raise ValueError(f"documents must be 'contexts' or 'papers', not {self.documents!r}")
        if self.k < 2:
            raise ValueError(f"k must be at least 2 topics, not {self.k}")

    @classmethod
    def from_dict(cls, data: dict) -> "TopicConfig":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


# ----------------------------------------------------------------------------------------------- reading

def read_equations(data_dir: str | Path) -> list[dict]:
    """The fields topics need from ``DATA_DIR/equations.jsonl`` (id, paper, area, source, context, split)."""
    path = Path(data_dir) / "equations.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `topiceq ingest SOURCE --out {data_dir}` first")
    records = []
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{line_no}: not JSON ({exc}); re-run ingest") from exc
            records.append({
                "id": str(rec["id"]),
                "paper": str(rec.get("paper") or str(rec["id"]).split("#")[0]),
                "area": rec.get("area") or "",
                "source": rec.get("source") or "",
                "context": rec.get("context") or "",
                "split": rec.get("split") or "train",
            })
    if not records:
        raise ValueError(f"{path} holds no equations: nothing to fit topics on")
    return records


def source_group(record: dict) -> str:
    """The source an equation counts against for the per-source cap: its book or collection.

    Paper ids are paths relative to the ingest SOURCE (``demo/math/stacks-project/algebra``) or arXiv ids. The
    first folder below the area folder names the collection (``demo/math/stacks-project``: all 119 chapters;
    ``demo/stat/r-vignettes``); a paper that is a file directly in its area folder, or an arXiv id, is its own
    source. Without the area in the path, the paper's parent folder is used when it has one below the top.
    """
    paper = record["paper"]
    parts = paper.split("/")
    area = record.get("area") or ""
    if area and area in parts[:-1]:
        i = parts.index(area)
        return "/".join(parts[: i + 2])
    if len(parts) >= 3:
        return "/".join(parts[:-1])
    return paper


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


# ----------------------------------------------------------------------------------------------- labels

def load_labels(path: str | Path, k: int) -> dict[int, str]:
    """Human topic labels from a TOML file: ``3 = "Quantum physics"`` lines, at top level or under
    ``[labels]``. Keys are topic ids 0..K-1."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"labels file {path} not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path} is not valid TOML ({exc}); write lines like: 3 = \"Quantum physics\"") from exc
    table = data.get("labels", data)
    labels: dict[int, str] = {}
    for key, value in table.items():
        if not str(key).isdigit() or not 0 <= int(key) < k:
            raise ValueError(f"{path}: label key {key!r} is not a topic id 0..{k - 1}")
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{path}: label for topic {key} must be a non-empty string")
        labels[int(key)] = value.strip()
    return labels


AREA_LABEL_SHARE = 0.5  # a topic is named after one area when it holds this share of the topic's mass


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


def area_prefix(shares: dict[str, float]) -> str:
    """"astro-ph" when one area holds AREA_LABEL_SHARE of the topic, else the two largest ("math/physics");
    "" without areas."""
    ranked = list(shares)
    if not ranked:
        return ""
    if shares[ranked[0]] >= AREA_LABEL_SHARE or len(ranked) == 1:
        return ranked[0]
    return "/".join(ranked[:2])


def auto_labels(top_words: list[list[str]], n_words: int = 3, area_shares: list[dict[str, float]] | None = None) -> list[str]:
    """"astro-ph: halo · galaxy · power" from each topic's areas and top words ("halo · galaxy · power" where the
    corpus gives no areas); made unique with the topic id if two collide."""
    raw = []
    for t, words in enumerate(top_words):
        label = " · ".join(words[:n_words]) or f"topic{t}"
        prefix = area_prefix(area_shares[t]) if area_shares else ""
        raw.append(f"{prefix}: {label}" if prefix else label)
    counts = Counter(raw)
    return [f"{lab}#{t}" if counts[lab] > 1 else lab for t, lab in enumerate(raw)]


# ----------------------------------------------------------------------------------------------- inference

def batch_gamma(lda, bows: Sequence[list[tuple[int, int]]], *, iterations: int | None = None,
                init: np.ndarray | None = None, batch_size: int = 4096, progress: bool = False) -> np.ndarray:
    """γ [n, K] for bags of words: gensim LdaModel.inference's per-document updates (Hoffman's online-LDA
    E-step, the same update, the same per-document stop rule: mean |Δγ| < lda.gamma_threshold), run on a
    sparse batch of documents at once instead of one Python loop per document (about 1-2 ms per context in
    gensim). `init` is the starting γ (gensim draws Gamma(100, 1/100) at random; the default here is its mean,
    1, so the result is a function of the words alone). Equality with gensim is a test."""
    from scipy.sparse import csr_matrix
    from scipy.special import psi
    from tqdm import tqdm

    k = int(lda.num_topics)
    iterations = int(iterations or lda.iterations)
    alpha = np.asarray(lda.alpha, dtype=np.float64)
    beta_t = np.ascontiguousarray(np.asarray(lda.expElogbeta, dtype=np.float32).T)  # [V, K]
    eps = np.finfo(np.float32).eps  # the epsilon gensim adds to phinorm (its dtype is float32)
    out = np.ones((len(bows), k), dtype=np.float64) if init is None else np.array(init, dtype=np.float64)
    starts = range(0, len(bows), batch_size)
    for start in tqdm(starts, desc="theta", unit="batch", disable=not progress or len(starts) < 2,
                      file=sys.stderr):
        chunk = bows[start:start + batch_size]
        lengths = np.fromiter((len(b) for b in chunk), dtype=np.int64, count=len(chunk))
        nnz = int(lengths.sum())
        cols = np.fromiter((w for b in chunk for w, _ in b), dtype=np.int64, count=nnz)
        cts = np.fromiter((c for b in chunk for _, c in b), dtype=np.float32, count=nnz)
        gamma = out[start:start + len(chunk)]
        # State of the documents still iterating, compacted as they converge: their rows, their words' ids,
        # exp E[log beta] gathered once ([nnz, K]), and counts.
        docs = np.flatnonzero(lengths > 0)
        keep = np.repeat(lengths > 0, lengths)
        lens, cols_w, cts_w = lengths[docs], cols[keep], cts[keep]
        beta_w = beta_t[cols_w]
        rows, indptr = np.repeat(np.arange(len(docs)), lens), np.concatenate([[0], np.cumsum(lens)])
        for _ in range(iterations):
            if not len(docs):
                break
            g = gamma[docs]
            exp_elog_theta = np.exp(psi(g) - psi(g.sum(axis=1, keepdims=True))).astype(np.float32)
            phinorm = np.einsum("nk,nk->n", exp_elog_theta[rows], beta_w) + eps
            weighted = csr_matrix((cts_w / phinorm, cols_w, indptr), shape=(len(docs), beta_t.shape[0]))
            new = alpha + exp_elog_theta * (weighted @ beta_t)
            going = np.abs(new - g).mean(axis=1) >= lda.gamma_threshold
            gamma[docs] = new
            if not going.all():
                word_going = np.repeat(going, lens)
                docs, lens = docs[going], lens[going]
                cols_w, cts_w, beta_w = cols_w[word_going], cts_w[word_going], beta_w[word_going]
                rows, indptr = np.repeat(np.arange(len(docs)), lens), np.concatenate([[0], np.cumsum(lens)])
    return out


# ----------------------------------------------------------------------------------------------- model

class TopicModel:
    """A fitted topic model: θ for any words, the topic table, θ of every ingested equation."""

    def __init__(self, lda, dictionary, config: TopicConfig, topics: list[dict], directory: Path | None = None,
                 phrases=None, plurals: dict[str, str] | None = None):
        self.lda = lda
        self.dictionary = dictionary
        self.config = config
        self.topics = topics
        self.directory = Path(directory) if directory else None
        self.phrases = phrases
        self.tokenizer = Tokenizer(config.tokens, plurals)
        self._theta_cache: dict[str, np.ndarray] | None = None
        self.metrics: dict = {}
        alpha = np.asarray(lda.alpha, dtype=np.float64)
        self.prior = (alpha / alpha.sum()).astype(np.float32)  # θ LDA gives a text with no known word

    # --- loading
    @classmethod
    def load(cls, topic_dir: str | Path) -> "TopicModel":
        from gensim.corpora import Dictionary
        from gensim.models import LdaModel

        topic_dir = Path(topic_dir)
        if not (topic_dir / MODEL_FILE).is_file():
            raise FileNotFoundError(
                f"no topic model in {topic_dir}: run `topiceq topics fit --data INGESTDIR --out {topic_dir}`")
        config = TopicConfig.from_dict(json.loads((topic_dir / CONFIG_FILE).read_text()))
        lda = LdaModel.load(str(topic_dir / MODEL_FILE))
        dictionary = Dictionary.load(str(topic_dir / DICTIONARY_FILE))
        phrases = None
        if (topic_dir / PHRASES_FILE).is_file():
            from gensim.models.phrases import Phrases
            phrases = Phrases.load(str(topic_dir / PHRASES_FILE))
        topics = json.loads((topic_dir / TOPICS_FILE).read_text())["topics"]
        plurals = json.loads((topic_dir / PLURALS_FILE).read_text()) if (topic_dir / PLURALS_FILE).is_file() else None
        model = cls(lda, dictionary, config, topics, topic_dir, phrases, plurals)
        if (topic_dir / METRICS_FILE).is_file():
            model.metrics = json.loads((topic_dir / METRICS_FILE).read_text())
        return model

    # --- the topic table
    @property
    def k(self) -> int:
        return int(self.lda.num_topics)

    @property
    def labels(self) -> list[str]:
        """Human label where one was given, else the automatic one."""
        return [t.get("human_label") or t["auto_label"] for t in self.topics]

    def areas(self, topic: int) -> dict[str, float]:
        """Share of the topic's mass per corpus area, largest first ({} for a model fitted without areas)."""
        return dict(self.topics[topic].get("areas") or {})

    def top_words(self, topic: int, n: int = 10) -> list[str]:
        return [w for w, _ in self.top_word_weights(topic, n)]

    def top_word_weights(self, topic: int, n: int = 10) -> list[tuple[str, float]]:
        if not 0 <= topic < self.k:
            raise ValueError(f"topic {topic} does not exist: topics are 0..{self.k - 1}")
        return [(w, float(p)) for w, p in self.lda.show_topic(topic, topn=n)]

    def resolve_topic(self, key: str | int) -> int:
        """Topic id from "3", 3, a human label or an automatic label (case-insensitive)."""
        text = str(key).strip()
        if text.lstrip("-").isdigit():
            t = int(text)
            if not 0 <= t < self.k:
                raise ValueError(f"topic {t} does not exist: topics are 0..{self.k - 1}")
            return t
        low = text.lower()
        for field_name in ("human_label", "auto_label"):
            for t, topic in enumerate(self.topics):
                if (topic.get(field_name) or "").lower() == low:
                    return t
        raise ValueError(f"no topic labelled {text!r}; give an id 0..{self.k - 1} or one of: "
                         + ", ".join(self.labels) + " (see `topiceq topics show`)")

    # --- inference
    def tokens(self, text: str) -> list[str]:
        toks = self.tokenizer(text)
        if self.phrases is not None:
            toks = list(self.phrases[toks])
        return toks

    def bows(self, texts: Sequence[str]) -> tuple[list[list[tuple[int, int]]], np.ndarray]:
        """Bags of known words, and how many known tokens each text has."""
        token2id = self.dictionary.token2id
        # = dictionary.doc2bow(tokens), without its per-call overhead (a third of the inference time)
        bows = [sorted(Counter(token2id[w] for w in self.tokens(t) if w in token2id).items()) for t in texts]
        n_known = np.fromiter((sum(c for _, c in b) for b in bows), dtype=np.int32, count=len(bows))
        return bows, n_known

    def theta_of_bows(self, bows: Sequence[list[tuple[int, int]]], progress: bool = False) -> np.ndarray:
        """Dense θ rows (sum to 1) for bags of words, by gensim's variational E-step run on many texts at once
        (`batch_gamma`). Every text starts from the same γ, so its θ depends on its words only, not on the batch
        it came in. An empty bag gets the prior (normalised alpha): LDA's answer for no evidence."""
        gamma = batch_gamma(self.lda, bows, iterations=self.config.infer_iterations, progress=progress)
        theta = np.empty((len(bows), self.k), dtype=np.float32)
        empty = np.array([not b for b in bows], dtype=bool)
        theta[~empty] = (gamma[~empty] / gamma[~empty].sum(axis=1, keepdims=True)).astype(np.float32)
        theta[empty] = self.prior
        return theta

    def infer_many(self, texts: Sequence[str], progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """θ [n, K] float32 for many texts at once, plus the number of known tokens in each. A text with no
        known word gets the prior θ and n_known 0: the caller decides what to do with it."""
        bows, n_known = self.bows(texts)
        return self.theta_of_bows(bows, progress=progress), n_known

    def infer(self, texts: Sequence[str] | str) -> np.ndarray:
        """θ [n, K] float32, dense, rows sum to 1. ValueError if a text has no word the model knows."""
        if isinstance(texts, str):
            texts = [texts]
        theta, n_known = self.infer_many(texts)
        empty = np.flatnonzero(n_known == 0)
        if len(empty):
            i = int(empty[0])
            snippet = texts[i][:60] + ("..." if len(texts[i]) > 60 else "")
            raise ValueError(
                f"text {i} ({snippet!r}) has no word the topic model knows"
                + (f" ({len(empty)} such texts)" if len(empty) > 1 else "")
                + " (only stop words or words outside its vocabulary); give content words like those listed by "
                  "`topiceq topics show` (infer_many() returns a fallback θ instead)")
        return theta

    def unknown_words(self, text: str) -> list[str]:
        """Words of the text that play no part in θ (stop words, too short, or not in the vocabulary)."""
        known = set(self.dictionary.token2id)
        used = {w for tok in self.tokens(text) if tok in known for w in tok.split("_")}
        seen, out = set(), []
        plurals = self.tokenizer.plurals
        for w in self.tokenizer.words(text):
            if plurals.get(w, w) not in used and w not in seen:
                seen.add(w)
                out.append(w)
        return out

    def weighted_topics(self, theta_row: np.ndarray, top: int | None = None) -> list[dict]:
        """[{"id", "label", "weight"}] sorted by weight, for printing and --json."""
        order = np.argsort(-theta_row, kind="stable")[: top or self.k]
        return [{"id": int(t), "label": self.labels[t], "weight": float(theta_row[t])} for t in order]

    # --- θ of the ingested equations
    def theta_by_id(self) -> dict[str, np.ndarray]:
        """θ of every equation id of the ingest dir the model was fitted on (all splits, own context only)."""
        if self._theta_cache is None:
            if self.directory is None or not (self.directory / THETA_FILE).is_file():
                raise FileNotFoundError("this topic model has no theta.npz: fit it with fit_topics()")
            with np.load(self.directory / THETA_FILE) as z:
                ids, theta = z["ids"], z["theta"]
            self._theta_cache = {str(i): theta[n] for n, i in enumerate(ids)}
        return self._theta_cache

    def set_labels(self, labels: dict[int, str], labels_file: str | Path | None = None) -> None:
        """Attach human labels (replacing earlier ones) and store them in TOPICDIR."""
        for t, topic in enumerate(self.topics):
            topic["human_label"] = labels.get(t)
        if self.directory is not None:
            if labels_file is not None and Path(labels_file).resolve() != (self.directory / LABELS_FILE).resolve():
                shutil.copyfile(labels_file, self.directory / LABELS_FILE)
            _write_json(self.directory / TOPICS_FILE, {"topics": self.topics})


# ----------------------------------------------------------------------------------------------- fitting

def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


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


def coarse_area(area: str) -> str | None:
    """The corpus folder areas (math, astro-ph, physics, stat, cs-ml) for arXiv categories too ("math.GT" ->
    math, "hep-th" -> physics); None for what has no subject ("formats": LaTeX class samples) or none known."""
    a = (area or "").strip()
    if not a or a == "formats":
        return None
    head = a.split(".")[0]
    if head in ("math", "astro-ph", "physics", "stat"):
        return head
    if head in ("cs", "cs-ml", "eess"):
        return "cs-ml"
    if head in ("hep-th", "hep-ph", "hep-lat", "hep-ex", "gr-qc", "quant-ph", "nucl-th", "nucl-ex", "cond-mat",
                "nlin", "math-ph"):
        return "physics"
    return head


def area_nmi(theta: np.ndarray, areas: Sequence[str], mask: np.ndarray) -> float | None:
    """Normalised mutual information between each equation's dominant topic and its (coarse) area."""
    from sklearn.metrics import normalized_mutual_info_score

    mask = mask & np.array([coarse_area(a) is not None for a in areas], dtype=bool)
    labels = [coarse_area(areas[i]) for i in np.flatnonzero(mask)]
    if len(set(labels)) < 2:
        return None
    return float(normalized_mutual_info_score(labels, theta[mask].argmax(axis=1)))


def fit_topics(data_dir: str | Path, out_dir: str | Path, config: TopicConfig | None = None, *,
               labels_file: str | Path | None = None, progress: bool = False) -> TopicModel:
    """Fit LDA on the ingest dir's train split (capped), write TOPICDIR, return the model."""
    from gensim.corpora import Dictionary
    from tqdm import tqdm

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
