"""Topics stage: LDA over equation contexts, θ inference, the topic table, caps, the CLI."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.topic_tokens import Tokenizer
from pipeline.topic_fit import fit_topics, select_training
from pipeline.topics import ThetaTable, TopicConfig, TopicModel, load_labels, read_equations, source_group
from topicrnn.conditioning import theta_for_request

REPO = Path(__file__).resolve().parents[1]

# Three planted topics with disjoint vocabularies; each paper is mostly one of them.
PLANTED = {
    "astro-ph": "star galaxy gravity orbit planet stellar luminosity telescope redshift cosmology halo supernova "
                "photometry spectrum exoplanet stars galaxies".split(),
    "math": "scheme morphism sheaf module ring ideal functor cohomology category algebra prime noetherian "
            "homomorphism isomorphism topology".split(),
    "stat": "likelihood posterior prior sampling variance estimator regression bayesian inference gaussian "
            "covariance bootstrap hypothesis confidence predictor".split(),
}
FILLER = "the where we is of and equation let this in that".split()


def make_corpus(root: Path, seed: int = 0, papers_per_area: int = 6, eqs_per_paper: int = 40,
                words: int = 30, extra: list[dict] | None = None) -> Path:
    """An ingest dir with a planted-topic equations.jsonl: each context draws 85% of its content words from its
    paper's area vocabulary, the rest from the others, plus stop-word filler."""
    rng = np.random.default_rng(seed)
    areas = sorted(PLANTED)
    records = []
    for area in areas:
        others = [w for a in areas if a != area for w in PLANTED[a]]
        for p in range(papers_per_area):
            paper = f"demo/{area}/paper{p}"
            split = "train" if p < papers_per_area - 2 else ("val" if p == papers_per_area - 2 else "test")
            for e in range(eqs_per_paper):
                content = [rng.choice(PLANTED[area]) if rng.random() < 0.85 else rng.choice(others)
                           for _ in range(words)]
                filler = list(rng.choice(FILLER, size=words // 3))
                ctx = content + filler
                rng.shuffle(ctx)
                records.append({"id": f"{paper}#{e}", "paper": paper, "area": area, "source": paper + ".tex",
                                "env": "equation", "equation": "x^2", "context": " ".join(ctx), "split": split,
                                "offset": e * 100, "index": e})
    records.extend(extra or [])
    root.mkdir(parents=True, exist_ok=True)
    with (root / "equations.jsonl").open("w") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")
    return root


FAST = dict(k=3, passes=8, iterations=50, no_below=2, max_per_paper=None, max_per_source=None, chunksize=200,
            documents="contexts")  # many small documents: the planted fixture; papers mode has its own test


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Path, TopicModel]:
    root = tmp_path_factory.mktemp("topics")
    data = make_corpus(root / "ingest", extra=[
        {"id": "demo/math/empty#0", "paper": "demo/math/empty", "area": "math", "context": "the of 12 $x$",
         "split": "train"}])
    labels = root / "labels.toml"
    labels.write_text('[labels]\n0 = "First"\n')
    model = fit_topics(data, root / "model", TopicConfig(**FAST, seed=1), labels_file=labels)
    return data, model


def topic_of_area(model: TopicModel, area: str) -> int:
    """The topic whose top words are mostly the area's planted words."""
    overlap = [len(set(model.top_words(t, 10)) & set(PLANTED[area])) for t in range(model.k)]
    return int(np.argmax(overlap))


def test_tokenizer_drops_latex_numbers_stopwords_and_folds_accents():
    tok = Tokenizer()
    assert tok(r"The \mathbf{Schrödinger} equation, see Eq. 3 and x2 where galaxies") == ["schrodinger", "galaxies"]


def test_plural_folding_is_learned_from_the_corpus_and_kept_for_inference(planted):
    from pipeline.topic_tokens import plural_map

    folded = plural_map([["galaxies", "galaxy", "galaxy", "classes", "class", "class", "morphisms", "morphism",
                          "morphism", "process", "radius", "analysis", "lens"]])
    assert folded == {"galaxies": "galaxy", "classes": "class", "morphisms": "morphism"}
    _, model = planted
    assert model.tokens("stars galaxies") == ["star", "galaxy"]  # both singulars occur in the planted corpus
    assert TopicModel.load(model.directory).tokens("stars galaxies") == ["star", "galaxy"]


def test_coarse_area_maps_arxiv_categories():
    from pipeline.topics import coarse_area

    assert [coarse_area(a) for a in ("math.GT", "hep-th", "astro-ph.EP", "cs.LG", "stat", "formats", "")] == \
        ["math", "physics", "astro-ph", "cs-ml", "stat", None, None]


def test_planted_topics_are_recovered(planted):
    _, model = planted
    found = {area: topic_of_area(model, area) for area in PLANTED}
    assert sorted(found.values()) == [0, 1, 2], model.topics
    for area, t in found.items():
        assert len(set(model.top_words(t, 10)) & set(PLANTED[area])) >= 8


def test_infer_is_dense_normalised_and_finds_the_planted_topic(planted):
    _, model = planted
    texts = [" ".join(PLANTED[a][:5]) for a in sorted(PLANTED)]
    theta = model.infer(texts)
    assert theta.dtype == np.float32 and theta.shape == (3, model.k)
    assert np.all(theta > 0), "θ must be dense (minimum_probability=0)"
    np.testing.assert_allclose(theta.sum(axis=1), 1.0, atol=1e-5)
    for row, area in zip(theta, sorted(PLANTED)):
        assert row.argmax() == topic_of_area(model, area)
        assert row.max() > 0.6
    # the same text gives the same θ alone or in another batch
    np.testing.assert_array_equal(model.infer([texts[1]])[0], theta[1])


def test_batched_inference_equals_gensims_own(planted):
    """batch_gamma runs gensim's E-step on a batch: from the same start it must land where gensim does."""
    from pipeline.topics import batch_gamma

    data, model = planted
    texts = [r["context"] for r in read_equations(data)][:60] + ["star galaxy likelihood", "scheme"]
    bows, _ = model.bows(texts)
    init = np.random.RandomState(7).gamma(100.0, 1.0 / 100.0, (len(bows), model.k))
    saved = model.lda.random_state
    model.lda.random_state = np.random.RandomState(7)
    try:
        reference, _ = model.lda.inference(bows)
    finally:
        model.lda.random_state = saved
    ours = batch_gamma(model.lda, bows, init=init, iterations=model.lda.iterations, batch_size=16)
    np.testing.assert_allclose(ours, reference, rtol=2e-3, atol=2e-3)
    # and θ equals gensim's get_document_topics(minimum_probability=0) up to the start point's effect
    dense = np.zeros(model.k)
    for t, p in model.lda.get_document_topics(bows[0], minimum_probability=0):
        dense[t] = p
    np.testing.assert_allclose(model.theta_of_bows(bows[:1])[0], dense, atol=0.02)


def test_unknown_only_text_is_a_clear_error_and_infer_many_falls_back(planted):
    _, model = planted
    with pytest.raises(ValueError, match="no word the topic model knows"):
        model.infer(["star galaxy", "the of zzzunknown qqqword"])
    theta, n_known = model.infer_many(["star galaxy orbit", "zzzunknown"])
    assert n_known.tolist() == [3, 0]
    np.testing.assert_allclose(theta[1], model.prior)
    assert model.unknown_words("stars the zzzunknown galaxies") == ["the", "zzzunknown"]  # plurals count as known


def test_words_without_gensim_say_what_to_install(planted, tmp_path):
    """A topic dir read as a ThetaTable (no gensim, the GPU image) cannot turn words into θ: one clear error,
    not an AttributeError and not "none of the words is known"."""
    _, model = planted
    table = ThetaTable(model.directory)
    with pytest.raises(ValueError, match="install gensim"):
        theta_for_request(table, words="star galaxy")
    assert theta_for_request(table, topic=1, mode="onehot").argmax() == 1


def test_outputs_theta_by_id_labels_and_reload(planted, tmp_path):
    data, model = planted
    recs = read_equations(data)
    loaded = TopicModel.load(model.directory)
    by_id = loaded.theta_by_id()
    assert set(by_id) == {r["id"] for r in recs}  # every equation, all splits
    for r in recs[:: 37]:
        row = by_id[r["id"]]
        assert row.shape == (model.k,) and abs(float(row.sum()) - 1) < 1e-5
        if r["context"] != "the of 12 $x$":  # own context only: θ equals inferring that context now
            np.testing.assert_allclose(row, loaded.infer([r["context"]])[0], atol=1e-6)
    np.testing.assert_allclose(by_id["demo/math/empty#0"], model.prior)
    assert loaded.labels[0] == "First" and loaded.resolve_topic("first") == 0
    assert loaded.resolve_topic("2") == 2
    assert loaded.resolve_topic(loaded.topics[1]["auto_label"]) == 1
    with pytest.raises(ValueError, match="topics are 0..2"):
        loaded.resolve_topic("7")
    with pytest.raises(ValueError, match="no topic labelled"):
        loaded.resolve_topic("Quantum physics")
    assert (model.directory / "labels.toml").is_file()
    table = json.loads((model.directory / "topics.json").read_text())["topics"]
    assert len(table) == 3 and len(table[2]["top_words"]) == 10
    m = json.loads((model.directory / "metrics.json").read_text())
    for key in ("c_npmi", "c_v", "heldout_perplexity", "nmi_area_heldout", "fit_seconds"):
        assert m[key] is not None, key
    assert m["nmi_area_heldout"] > 0.7  # planted areas are separable
    assert m["empty_contexts"] == 1


def test_same_seed_same_topics_other_seed_differs(tmp_path):
    data = make_corpus(tmp_path / "ingest", papers_per_area=4, eqs_per_paper=20)
    cfg = dict(FAST, passes=2, metrics=False)
    a = fit_topics(data, tmp_path / "a", TopicConfig(**cfg, seed=5))
    b = fit_topics(data, tmp_path / "b", TopicConfig(**cfg, seed=5))
    c = fit_topics(data, tmp_path / "c", TopicConfig(**cfg, seed=6))
    np.testing.assert_array_equal(a.lda.get_topics(), b.lda.get_topics())
    assert [t["top_words"] for t in a.topics] == [t["top_words"] for t in b.topics]
    with np.load(tmp_path / "a" / "theta.npz") as za, np.load(tmp_path / "b" / "theta.npz") as zb:
        np.testing.assert_array_equal(za["theta"], zb["theta"])
    assert not np.array_equal(a.lda.get_topics(), c.lda.get_topics())


def test_papers_as_documents_and_bigrams_fit(tmp_path):
    data = make_corpus(tmp_path / "ingest", papers_per_area=4, eqs_per_paper=20)
    model = fit_topics(data, tmp_path / "m", TopicConfig(**dict(FAST, metrics=False, documents="papers"),
                                                         bigrams=True, bigram_min_count=2))
    assert model.metrics["lda_documents"] == 3 * 2  # train papers
    theta = model.infer(["likelihood posterior prior variance"])
    assert theta[0].argmax() == topic_of_area(model, "stat")
    assert TopicModel.load(tmp_path / "m").phrases is not None


def test_caps_per_paper_and_per_source():
    records, tokens = [], []
    for ch in range(10):  # one book of 10 chapters x 50 equations
        for e in range(50):
            records.append({"id": f"demo/math/book/ch{ch}#{e}", "paper": f"demo/math/book/ch{ch}", "area": "math",
                            "split": "train"})
    for p in range(3):  # three single-file papers of 30
        for e in range(30):
            records.append({"id": f"demo/astro-ph/p{p}#{e}", "paper": f"demo/astro-ph/p{p}", "area": "astro-ph",
                            "split": "train"})
    tokens = [["word"] * 5 for _ in records]
    assert source_group(records[0]) == "demo/math/book"
    assert source_group(records[-1]) == "demo/astro-ph/p2"
    assert source_group({"paper": "2101.00001", "area": "hep-th"}) == "2101.00001"
    keep = select_training(records, tokens, TopicConfig(max_per_paper=20, max_per_source=100))
    per_source = {}
    for i in keep:
        per_source[source_group(records[i])] = per_source.get(source_group(records[i]), 0) + 1
    assert per_source == {"demo/math/book": 100, "demo/astro-ph/p0": 20, "demo/astro-ph/p1": 20,
                          "demo/astro-ph/p2": 20}
    chapters = {records[i]["paper"] for i in keep if "book" in records[i]["paper"]}
    assert len(chapters) >= 8  # the book's quota is spread over its chapters
    assert keep == select_training(records, tokens, TopicConfig(max_per_paper=20, max_per_source=100))
    assert keep != select_training(records, tokens, TopicConfig(max_per_paper=20, max_per_source=100, seed=3))


def test_labels_file_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('5 = "Too big"\n')
    with pytest.raises(ValueError, match="not a topic id 0..2"):
        load_labels(bad, 3)
    good = tmp_path / "good.toml"
    good.write_text('0 = "Astrophysics"\n2 = "Statistics"\n')
    assert load_labels(good, 3) == {0: "Astrophysics", 2: "Statistics"}


def test_missing_data_dir_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="topiceq ingest"):
        fit_topics(tmp_path / "nothing", tmp_path / "out", TopicConfig(**FAST))


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    """The real dispatcher, in process (a subprocess per call would re-import gensim each time)."""
    from topiceq.cli import main

    capsys.readouterr()
    rc = main(["topics", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_fit_show_infer_json(tmp_path, capsys):
    data = make_corpus(tmp_path / "ingest", papers_per_area=4, eqs_per_paper=25)
    labels = tmp_path / "labels.toml"
    labels.write_text('1 = "Middle"\n')
    out = tmp_path / "model"
    rc, stdout, err = _cli(capsys, "fit", "--data", str(data), "--out", str(out), "--k", "3", "--seed", "2",
                           "--passes", "8", "--no-below", "2", "--no-metrics", "--labels", str(labels))
    assert rc == 0, err
    assert (out / "theta.npz").is_file() and "topics" in stdout
    rc, stdout, err = _cli(capsys, "show", "--model", str(out))
    assert rc == 0, err
    assert "Middle" in stdout and len([ln for ln in stdout.splitlines() if ln.strip()]) >= 3
    # the console entry point as a user runs it, in its own process
    r = subprocess.run([sys.executable, "-m", "topiceq.cli", "topics", "infer", "--model", str(out), "--json",
                        "likelihood", "posterior", "variance", "zzzqqq"], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    weights = [t["weight"] for t in result["topics"]]
    assert len(weights) == 3 and abs(sum(weights) - 1) < 1e-4 and weights == sorted(weights, reverse=True)
    assert set(result["topics"][0]) == {"id", "label", "weight"}
    model = TopicModel.load(out)
    assert result["topics"][0]["id"] == topic_of_area(model, "stat")
    assert "zzzqqq" in r.stderr  # the ignored word is noted
    rc, stdout, err = _cli(capsys, "infer", "--model", str(out), "star", "galaxy")
    assert rc == 0 and "%" in stdout
    rc, stdout, err = _cli(capsys, "infer", "--model", str(out), "--json", "zzzqqq", "the")
    assert rc != 0 and "no word the topic model knows" in err and stdout == ""
    assert len(err.strip().splitlines()) <= 2


def test_topics_are_named_after_their_dominant_area(planted, capsys):
    """Issue 20: `astro-ph: star · galaxy · halo`; `topics show` lists each topic's areas."""
    _, model = planted
    for area in PLANTED:
        t = topic_of_area(model, area)
        shares = model.areas(t)
        assert list(shares)[0] == area and shares[area] > 0.7 and abs(sum(shares.values()) - 1) < 1e-6
        assert model.topics[t]["auto_label"] == f"{area}: " + " · ".join(model.top_words(t, 3))
    again = TopicModel.load(model.directory)
    assert again.areas(topic_of_area(again, "stat")) == model.areas(topic_of_area(model, "stat"))
    assert again.resolve_topic(again.topics[2]["auto_label"].upper()) == 2
    rc, stdout, _ = _cli(capsys, "show", "--model", str(model.directory), "-n", "4")
    assert rc == 0 and all(f"[{area} " in stdout for area in PLANTED)
    rc, stdout, _ = _cli(capsys, "show", "--model", str(model.directory), "--json")
    assert {list(t["areas"])[0] for t in json.loads(stdout)["topics"]} == set(PLANTED)


def test_area_shares_and_prefixes():
    from pipeline.topic_fit import topic_area_shares
    from pipeline.topics import area_prefix, auto_labels

    theta = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.5, 0.5]])
    shares = topic_area_shares(theta, ["math.GT", "math", "hep-th", "formats"])  # formats: no area
    assert list(shares[0]) == ["math", "physics"] and abs(shares[0]["math"] - 1.7 / 1.8) < 1e-9
    assert list(shares[1]) == ["physics", "math"]
    assert area_prefix({"math": 0.45, "physics": 0.4, "stat": 0.15}) == "math/physics"
    assert area_prefix({"stat": 0.6, "math": 0.4}) == "stat" and area_prefix({}) == ""
    assert topic_area_shares(theta, ["", "formats", "", ""]) == [{}, {}]
    words = [["halo", "galaxy", "power", "x"], ["halo", "galaxy", "power"]]
    assert auto_labels(words, area_shares=[{"astro-ph": 1.0}, {}]) == ["astro-ph: halo · galaxy · power",
                                                                       "halo · galaxy · power"]
    assert auto_labels([["a"], ["a"]]) == ["a#0", "a#1"]
