"""Ingest on hostile input: every case ends as "skipped or partly read, reason in report.json, run goes on,
nothing written outside --out". Archives are generated here with tarfile/gzip."""
from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from pipeline.ingest import IngestConfig, ingest, read_records

GOOD = (b"\\documentclass{article}\\begin{document}Good words here. "
        b"\\begin{equation} a + b = c \\end{equation} More words.\\end{document}\n")


def _tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(info)
    return buf.getvalue()


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _snapshot(root: Path) -> dict[str, bytes | None]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath, n)
            out[str(p.relative_to(root))] = p.read_bytes() if p.is_file() and not p.is_symlink() else None
    return out


def run_case(tmp_path: Path, files: dict[str, bytes], **cfg) -> tuple[dict, list[dict]]:
    """Write `files` under tmp/src next to one good paper, ingest from an unrelated cwd, check that only
    --out changed, and return (report, records)."""
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "good.tex").write_bytes(GOOD)
    for name, data in files.items():
        p = src / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    work = tmp_path / "cwd"
    work.mkdir(exist_ok=True)
    before = _snapshot(tmp_path)
    cwd = os.getcwd()
    os.chdir(work)
    try:
        cfg.setdefault("workers", 1)
        cfg.setdefault("progress", False)
        report = ingest([src], tmp_path / "out", IngestConfig(**cfg))
    finally:
        os.chdir(cwd)
    after = _snapshot(tmp_path)
    changed = {k for k in set(before) | set(after) if before.get(k, b"?") != after.get(k, b"?")}
    assert all(k == "out" or k.startswith("out/") for k in changed), changed
    assert list(work.iterdir()) == []
    records = list(read_records(tmp_path / "out"))
    assert any(r["paper"] == "good" and r["equation"] == "a + b = c" for r in records)  # the run went on
    return report, records


def reasons(report: dict) -> str:
    return json.dumps(report["skipped"]) + json.dumps(report["partly_read"])


def test_truncated_gzip(tmp_path):
    data = gzip.compress(GOOD * 50)
    report, _ = run_case(tmp_path, {"cut.gz": data[: len(data) // 2]})
    assert "truncated gzip" in reasons(report)


def test_corrupt_tar_gz_keeps_what_was_read(tmp_path):
    big = b"%" + os.urandom(60000).hex().encode() + b"\n"
    tar = _tar_bytes([_file("a.tex", GOOD.replace(b"a + b", b"x + y")), _file("z.tex", big)], mode="w")
    broken = gzip.compress(tar[:-30000])  # tar stream ends inside the second member
    report, records = run_case(tmp_path, {"paper.tar.gz": broken})
    assert "truncated" in reasons(report) or "corrupt" in reasons(report)
    assert any(r["equation"] == "x + y = c" for r in records)  # partly read


def test_gz_that_is_not_gzip(tmp_path):
    report, _ = run_case(tmp_path, {"fake.gz": b"\x00\x01\x02 plain binary junk" * 10})
    assert "not gzip" in reasons(report)


def test_decompression_bomb_is_capped(tmp_path):
    bomb = gzip.compress(b"\0" * (12 * 2**20), compresslevel=9)  # 12 MB of zeros in ~12 KB
    tar_bomb = _tar_bytes([_file("main.tex", b"A" * (3 * 2**20))])
    report, _ = run_case(tmp_path, {"bomb.gz": bomb, "bomb2.tar.gz": tar_bomb},
                         max_paper_mb=1, max_archive_mb=8)
    text = reasons(report)
    assert "bomb" in text and "larger than 1 MB" in text


def test_unsafe_tar_members_are_never_extracted(tmp_path):
    def link(name, kind, target):
        ti = tarfile.TarInfo(name)
        ti.type = kind
        ti.linkname = target
        return ti, None

    dev = tarfile.TarInfo("dev.tex")
    dev.type = tarfile.CHRTYPE
    dev.devmajor, dev.devminor = 1, 3
    tar = _tar_bytes([
        _file("../escape.tex", GOOD), _file("/abs/path.tex", GOOD),
        link("sym.tex", tarfile.SYMTYPE, "/etc/passwd"), link("hard.tex", tarfile.LNKTYPE, "good-member.tex"),
        (dev, None), _file("good-member.tex", GOOD.replace(b"a + b", b"p + q")),
    ])
    report, records = run_case(tmp_path, {"evil.tar.gz": tar})
    text = reasons(report)
    assert text.count("leaves the archive") == 2
    assert "symlink" in text and "hard link" in text and "device" in text
    assert not (tmp_path / "escape.tex").exists() and not Path("/abs/path.tex").exists()
    assert [r["equation"] for r in records if r["source"].endswith("evil.tar.gz")] == ["p + q = c"]


def test_non_utf8_nul_bytes_binary_and_empty_files(tmp_path):
    latin = "\\documentclass{article}\\begin{document}Caf\xe9 na\xefve \\[ \\alpha \\] end\\end{document}"
    files = {
        "latin1.tex": latin.encode("latin-1"),
        "nul.tex": GOOD.replace(b"Good words", b"Nul\x00words").replace(b"a + b", b"n + m"),
        "binary.tex": bytes(range(256)) * 40,
        "empty.tex": b"",
        "blank.tex": b"   \n\n",
    }
    report, records = run_case(tmp_path, files)
    by_paper = {r["paper"]: r for r in records}
    assert "Café naïve" in by_paper["latin1"]["context"]
    assert by_paper["nul"]["equation"] == "n + m = c" and "\x00" not in by_paper["nul"]["context"]
    skipped = {Path(s["input"]).name: s["reason"] for s in report["skipped"]}
    assert "binary" in skipped["binary.tex"]
    assert skipped["empty.tex"] == "empty file" and skipped["blank.tex"] == "empty file"


def test_folder_named_tex_and_symlink_out_of_source(tmp_path):
    outside = tmp_path / "secret.tex"
    outside.write_bytes(GOOD.replace(b"a + b", b"secret"))
    src = tmp_path / "src"
    (src / "x.tex").mkdir(parents=True)
    (src / "x.tex" / "inner.tex").write_bytes(GOOD.replace(b"a + b", b"i + j"))
    (src / "link.tex").symlink_to(outside)
    (src / "dirlink").symlink_to(tmp_path)
    report, records = run_case(tmp_path, {})
    assert not any("secret" in r["equation"] for r in records)
    assert any(r["equation"] == "i + j = c" and r["paper"] == "x.tex/inner" for r in records)
    assert "symlink points outside SOURCE" in reasons(report)


def test_recursive_and_missing_inputs(tmp_path):
    files = {
        "book/main.tex": b"\\documentclass{book}\\begin{document}\\input{a}\\input{nothere}\\end{document}",
        "book/a.tex": b"Words \\[ a_1 \\] \\input{b}",
        "book/b.tex": b"More \\[ b_1 \\] \\input{a} \\input{main}",
    }
    report, records = run_case(tmp_path, files)
    eqs = [r["equation"] for r in records if r["paper"] == "book/main"]
    assert eqs == ["a_1", "b_1"]
    text = reasons(report)
    assert "recursive \\\\input{a}" in text and "missing \\\\input target 'nothere'" in text


def test_recursive_and_exploding_macros(tmp_path):
    doc = (b"\\documentclass{article}\\def\\a{\\a}\\def\\b{\\b\\b}\\newcommand{\\c}[1]{\\c{#1}}"
           b"\\def\\d{\\e\\e\\e\\e}\\def\\e{\\f\\f\\f\\f}\\def\\f{\\g\\g\\g\\g}\\def\\g{" + b"x" * 100 + b"}"
           b"\\begin{document}\\[\\a\\] \\[\\b\\] \\[\\c{1}\\] \\[\\d\\d\\d\\d\\d\\d\\] \\[ ok \\]\\end{document}")
    report, records = run_case(tmp_path, {"macros.tex": doc})
    assert [r["equation"] for r in records if r["paper"] == "macros"] == ["ok"]
    assert report["dropped"]["macro expansion limit (recursive or exploding macro)"] == 4


def test_unclosed_environment_and_huge_line(tmp_path):
    unclosed = (b"\\documentclass{article}\\begin{document}\\begin{equation} lost "
                b"\\[ x^2 \\] text \\begin{align} never closed\\end{document}")
    huge = (b"\\documentclass{article}\\begin{document}" + b"word " * (2 * 2**20)
            + b"\\[ h = 1 \\]" + b"$y$ " * 100000 + b"\\end{document}")
    assert len(huge) > 10 * 2**20
    report, records = run_case(tmp_path, {"unclosed.tex": unclosed, "huge.tex": huge}, max_paper_mb=20)
    assert [r["equation"] for r in records if r["paper"] == "unclosed"] == ["x^2"]
    assert "unclosed environment equation" in reasons(report)
    (h,) = [r for r in records if r["paper"] == "huge"]
    assert h["equation"] == "h = 1" and h["context_before"].split() == ["word"] * 50


def test_nothing_readable_raises(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "empty.tex").write_bytes(b"")
    (src / "junk.gz").write_bytes(b"not gzip at all")
    with pytest.raises(RuntimeError, match="no input could be read"):
        ingest([src], tmp_path / "out", IngestConfig(workers=1, progress=False))
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["papers_read"] == 0 and report["skipped_count"] == 2
    with pytest.raises(RuntimeError, match="does not exist"):
        ingest([tmp_path / "missing"], tmp_path / "out2", IngestConfig(workers=1, progress=False))


def test_bulk_tarball_of_gz_papers(tmp_path):
    single = gzip.compress(GOOD.replace(b"a + b", b"s + t"))
    multi = gzip.compress(_tar_bytes([_file("ms.tex", b"\\documentclass{article}\\begin{document}\\input{sec}"
                                                       b"\\end{document}"),
                                      _file("sec.tex", b"In the section \\[ u + v \\] done.")], mode="w"))
    bulk = _tar_bytes([_file("1801/1801.00001.gz", single), _file("1801/1801.00002.gz", multi),
                       _file("1801/1801.00003.gz", b"garbage")], mode="w")
    report, records = run_case(tmp_path, {"arXiv_src_1801_001.tar": bulk})
    by_paper = {r["paper"]: r["equation"] for r in records if r["source"].endswith(".tar")}
    assert by_paper == {"1801.00001": "s + t = c", "1801.00002": "u + v"}
    assert "not gzip" in reasons(report) or "not read" in reasons(report)
