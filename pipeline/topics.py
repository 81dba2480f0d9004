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

Fitting is pipeline/topic_fit.py (`fit_topics`); this module owns the folder: `TopicModel.load`, and
`read_theta` / `ThetaTable`, which read a topic dir with numpy alone; gensim, scipy and scikit-learn are imported
where the LDA is fitted or used, so machines without them (the GPU check) can still read θ.
"""
from __future__ import annotations

import json
import shutil
import sys
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from pipeline.ingest import read_records
from pipeline.topic_tokens import TokenConfig, Tokenizer

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
    """The fields topics need from the ingest dir's records (id, paper, area, source, context, split)."""
    records = [{"id": str(rec["id"]),
                "paper": str(rec.get("paper") or str(rec["id"]).split("#")[0]),
                "area": rec.get("area") or "",
                "source": rec.get("source") or "",
                "context": rec.get("context") or "",
                "split": rec.get("split") or "train"} for rec in read_records(data_dir)]
    if not records:
        raise ValueError(f"{Path(data_dir) / 'equations.jsonl'} holds no equations: nothing to fit topics on")
    return records


def read_theta(topic_dir: str | Path) -> tuple[dict[str, np.ndarray], int]:
    """TOPICDIR/theta.npz -> ({equation id: θ float32 [K]}, K): the one reader of the file `fit_topics` writes."""
    path = Path(topic_dir) / THETA_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: fit topics first (topiceq topics fit --data DIR --out {topic_dir})")
    with np.load(path) as z:
        ids, theta = z["ids"], np.asarray(z["theta"], dtype=np.float32)
    if theta.ndim != 2 or len(ids) != len(theta):
        raise ValueError(f"{path}: theta must be [n, K] with one row per id")
    return {str(i): theta[n] for n, i in enumerate(ids.tolist())}, int(theta.shape[1])


def topic_labels(topics: list[dict]) -> list[str]:
    """Human label where one was given, else the automatic one (else `topic N`)."""
    return [t.get("human_label") or t.get("auto_label") or f"topic {i}" for i, t in enumerate(topics)]


def resolve_topic(key: str | int, topics: list[dict]) -> int:
    """Topic id from "3", 3, a human label or an automatic label (case-insensitive)."""
    k = len(topics)
    text = str(key).strip()
    if text.lstrip("-").isdigit():
        t = int(text)
        if not 0 <= t < k:
            raise ValueError(f"topic {t} does not exist: topics are 0..{k - 1}")
        return t
    low = text.lower()
    for field_name in ("human_label", "auto_label"):
        for t, topic in enumerate(topics):
            if (topic.get(field_name) or "").lower() == low:
                return t
    raise ValueError(f"no topic labelled {text!r}; give an id 0..{k - 1} or one of: "
                     + ", ".join(topic_labels(topics)) + " (see `topiceq topics show`)")


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


def area_prefix(shares: dict[str, float]) -> str:
    """"astro-ph" when one area holds AREA_LABEL_SHARE of the topic, else the two largest ("math/physics");
    "" without areas."""
    ranked = list(shares)
    if not ranked:
        return ""
    if shares[ranked[0]] >= AREA_LABEL_SHARE or len(ranked) == 1:
        return ranked[0]
    return "/".join(ranked[:2])


def auto_labels(top_words: list[list[str]], n_words: int = 3,
                area_shares: list[dict[str, float]] | None = None) -> list[str]:
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
        return topic_labels(self.topics)

    def areas(self, topic: int) -> dict[str, float]:
        return topic_areas(self.topics, topic)

    def top_words(self, topic: int, n: int = 10) -> list[str]:
        return [w for w, _ in self.top_word_weights(topic, n)]

    def top_word_weights(self, topic: int, n: int = 10) -> list[tuple[str, float]]:
        if not 0 <= topic < self.k:
            raise ValueError(f"topic {topic} does not exist: topics are 0..{self.k - 1}")
        return [(w, float(p)) for w, p in self.lda.show_topic(topic, topn=n)]

    def resolve_topic(self, key: str | int) -> int:
        return resolve_topic(key, self.topics)

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
            self._theta_cache = read_theta(self.directory)[0]
        return self._theta_cache

    def set_labels(self, labels: dict[int, str], labels_file: str | Path | None = None) -> None:
        """Attach human labels (replacing earlier ones) and store them in TOPICDIR."""
        for t, topic in enumerate(self.topics):
            topic["human_label"] = labels.get(t)
        if self.directory is not None:
            if labels_file is not None and Path(labels_file).resolve() != (self.directory / LABELS_FILE).resolve():
                shutil.copyfile(labels_file, self.directory / LABELS_FILE)
            _write_json(self.directory / TOPICS_FILE, {"topics": self.topics})


class InferenceUnavailable(ValueError):
    """θ from words needs the LDA itself (gensim); a ThetaTable only holds θ of ingested equations."""


class ThetaTable:
    """What a topic dir offers without gensim: k, labels, top words (topics.json), θ of every ingested equation
    (theta.npz). For machines without gensim (the GPU check) and for planted θ in tests; turning words into
    θ needs the LDA (`TopicModel`)."""

    def __init__(self, topic_dir: str | Path):
        self.directory = Path(topic_dir)
        self._theta, self.k = read_theta(self.directory)
        topics_file = self.directory / TOPICS_FILE
        self.topics = (json.loads(topics_file.read_text())["topics"] if topics_file.is_file()
                       else [{"auto_label": f"topic {i}"} for i in range(self.k)])
        metrics_file = self.directory / METRICS_FILE
        self.metrics: dict = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}

    @property
    def labels(self) -> list[str]:
        return topic_labels(self.topics)

    def theta_by_id(self) -> dict[str, np.ndarray]:
        return self._theta

    def areas(self, topic: int) -> dict[str, float]:
        return topic_areas(self.topics, topic)

    def top_words(self, topic: int, n: int = 10) -> list[str]:
        return [w["word"] for w in self.topics[topic].get("top_words", [])][:n]

    def resolve_topic(self, key: str | int) -> int:
        return resolve_topic(key, self.topics)

    def infer_many(self, texts):
        raise InferenceUnavailable(f"{self.directory} is read without gensim: θ cannot be inferred from "
                                   "words; install gensim (pip install gensim) to use --words")

    def infer(self, texts):
        return self.infer_many(texts)


def topic_areas(topics: list[dict], topic: int) -> dict[str, float]:
    """Share of the topic's mass per corpus area, largest first ({} for a model fitted without areas)."""
    return dict(topics[topic].get("areas") or {})


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


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
