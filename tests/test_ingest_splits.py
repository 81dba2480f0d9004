"""Splits by paper identity (issue 21): one paper is never in two splits, the same paper is read once, and an
equation that a train paper holds is kept out of val and test. Papers are built here; arXiv ids are chosen
by the split their identity hashes to, so each case is the one it names."""
from __future__ import annotations

import gzip
import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest

from pipeline.ingest import IngestConfig, ingest, merge_shards, read_records
from pipeline.splits import content_fingerprint, paper_identity, paper_keys, split_for

FILLER = "Prose about the problem at hand. " * 10


def _doc(*equations: str, words: str = "") -> bytes:
    body = FILLER + words + " ".join(f"Then \\begin{{equation}} {e} \\end{{equation}} holds." for e in equations)
    return ("\\documentclass{article}\\begin{document}" + body + "\\end{document}\n").encode()


def _ids(split: str, n: int) -> list[str]:
    """n arXiv ids whose identity falls in `split`."""
    out = [f"2101.{i:05d}" for i in range(1, 500) if split_for(f"arxiv:2101.{i:05d}") == split]
    return out[:n]


def _run(src: Path, out: Path, **cfg) -> tuple[dict, list[dict]]:
    cfg.setdefault("workers", 1)
    cfg.setdefault("progress", False)
    report = ingest([src], out, IngestConfig(**cfg))
    return report, list(read_records(out))


def _tgz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_paper_identity_is_the_arxiv_id_else_the_content():
    assert paper_identity("1801.03879v2", "anything") == paper_identity("1801.03879", "") == "arxiv:1801.03879"
    doc = "\\documentclass{article}\\begin{document}" + FILLER + "\\end{document}"
    spaced = doc.replace(" ", "  \n ")
    assert paper_identity(None, doc) == paper_identity(None, spaced) == content_fingerprint(doc)
    assert paper_identity(None, doc).startswith("sha1:") and paper_identity(None, doc + "x") != paper_identity(None, doc)
    # too little text to tell papers apart: the paper's own name
    assert paper_identity(None, "\\begin{document}short\\end{document}", "a/b") == "paper:a/b"
    assert paper_keys("2101.00001", doc) == ["arxiv:2101.00001", content_fingerprint(doc)]


def test_the_same_paper_under_other_names_is_read_once_in_one_split(tmp_path):
    ms = _doc("x^2 + y^2 = z^2", "e^{i\\pi} = -1")
    src = tmp_path / "src"
    (src / "folder").mkdir(parents=True)
    (src / "folder" / "ms.tex").write_bytes(ms)
    (src / "upload-1.tar.gz").write_bytes(_tgz({"ms.tex": ms, "fig.pdf": b"%PDF-1.4\n"}))
    (src / "copy.gz").write_bytes(gzip.compress(ms.replace(b"Prose about", b"Prose  about")))  # blanks differ
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("sub/ms.tex", ms)
    (src / "zz.zip").write_bytes(buf.getvalue())
    report, records = _run(src, tmp_path / "out")
    assert {r["source"].rsplit("/", 1)[-1] for r in records} == {"copy.gz"}  # first in walk order
    assert len(records) == 2 and len({r["split"] for r in records}) == 1
    assert sorted(d["source"].rsplit("/", 1)[-1] for d in report["duplicate_papers"]) == \
        ["ms.tex", "upload-1.tar.gz", "zz.zip"]
    assert {d["same_as"] for d in report["duplicate_papers"]} == {"copy"}
    assert report["dropped"]["same paper as an earlier input (read once)"] == 6
    assert report["paper_identities"] == 1


def test_arxiv_versions_are_one_paper(tmp_path):
    (pid,) = _ids("test", 1)
    src = tmp_path / "src"
    src.mkdir()
    (src / f"{pid}v1.tar.gz").write_bytes(_tgz({"main.tex": _doc("a = 1")}))
    (src / f"{pid}v2.gz").write_bytes(gzip.compress(_doc("a = 1", "b = 2", words="Revised. ")))
    report, records = _run(src, tmp_path / "out")
    assert [(r["paper"], r["equation"], r["identity"], r["split"]) for r in records] == \
        [(pid, "a = 1", f"arxiv:{pid}", "test")]
    assert report["duplicate_papers"][0]["same_as"] == pid


def test_equations_of_a_train_paper_are_kept_out_of_val_and_test(tmp_path):
    (train,), (test_a, test_b) = _ids("train", 1), _ids("test", 2)
    src = tmp_path / "src"
    src.mkdir()
    (src / f"{train}.tex").write_bytes(_doc("E = mc^2", "t = 1"))
    (src / f"{test_a}.tex").write_bytes(_doc("E = mc^2", "p = q", "s = 1"))
    (src / f"{test_b}.tex").write_bytes(_doc("p = q", "u = 1"))
    report, records = _run(src, tmp_path / "out")
    got = {(r["paper"], r["equation"]): r["split"] for r in records}
    assert got == {(train, "E = mc^2"): "train", (train, "t = 1"): "train", (test_a, "p = q"): "test",
                   (test_a, "s = 1"): "test", (test_b, "p = q"): "test", (test_b, "u = 1"): "test"}
    assert report["dropped"]["also in a train paper (kept out of val/test)"] == 1
    # found in more than one paper: E = mc^2 twice, p = q twice (kept: no train paper holds it)
    assert report["cross_paper_duplicate_equations"] == 4
    assert report["equations_per_split"] == {"test": 4, "train": 2}


@pytest.mark.parametrize("count", [2, 3])
def test_shards_merged_decide_splits_and_duplicates_like_one_run(tmp_path, count):
    (train,), tests = _ids("train", 1), _ids("test", 2)
    src = tmp_path / "src"
    src.mkdir()
    (src / f"{train}.tex").write_bytes(_doc("E = mc^2"))
    for pid in tests:
        (src / f"{pid}.tex").write_bytes(_doc("E = mc^2", f"k_{pid[-1]} = 0"))
    (src / "copy.tar.gz").write_bytes(_tgz({"x.tex": (src / f"{tests[0]}.tex").read_bytes()}))
    one, _ = _run(src, tmp_path / "one")
    shard_dirs = []
    for i in range(count):
        _run(src, tmp_path / f"s{i}", shard_index=i, shard_count=count)
        shard_dirs.append(tmp_path / f"s{i}")
    merged = merge_shards(shard_dirs, tmp_path / "merged")
    assert (tmp_path / "merged" / "equations.jsonl").read_bytes() == (tmp_path / "one" / "equations.jsonl").read_bytes()
    for key in ("equations", "dropped", "duplicate_papers", "cross_paper_duplicate_equations", "inputs",
                "equations_per_split", "paper_identities"):
        assert merged[key] == one[key], key
    assert not list((tmp_path / "merged").glob("*.part"))
    assert json.loads((tmp_path / "one" / "report.json").read_text())["duplicate_papers_count"] == 1
