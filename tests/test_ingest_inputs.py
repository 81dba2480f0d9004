"""Inputs as arXiv receives them (issue 21): zip uploads with the tar caps, files recognised by their bytes
(extensionless gzip, bzip2, xz, LaTeX without an extension), a paper's own class file read for macros,
TeX-installation inputs not missing, and report.json accounting for every input. Archives are built here."""
from __future__ import annotations

import bz2
import gzip
import io
import lzma
import shutil
import struct
import tarfile
import zipfile
from pathlib import Path

import pytest

from pipeline.ingest import IngestConfig, ingest, read_records

PAPER = (b"\\documentclass{article}\\begin{document}Words about orbits. "
         b"\\begin{equation} a + b = c \\end{equation} More words.\\end{document}\n")
CLS = rb"""\NeedsTeXFormat{LaTeX2e}\ProvidesClass{mycls}\LoadClass{article}
\newcommand{\co}{\mathcal{O}}
\def\wbar#1{\overline{#1}}
\RequirePackage{mysty}
"""
STY = rb"\newcommand{\Pf}{\mathrm{Pf}}"
CLS_PAPER = (b"\\documentclass{mycls}\\begin{document}Sheaves on schemes. " + b"Words of the paper. " * 12 +
             b"\\begin{equation} \\co_X \\to \\wbar{\\co_Y} \\end{equation} and "
             b"\\begin{equation} \\Pf(A) \\end{equation} done.\\end{document}\n")


def _run(tmp_path: Path, files: dict[str, bytes], **cfg) -> tuple[dict, list[dict]]:
    src = tmp_path / "src"
    for name, data in files.items():
        p = src / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    cfg.setdefault("workers", 1)
    cfg.setdefault("progress", False)
    report = ingest([src], tmp_path / "out", IngestConfig(**cfg))
    return report, list(read_records(tmp_path / "out"))


def _zip(members: dict[str, bytes], modes: dict[str, int] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (modes or {}).get(name, 0o100644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return buf.getvalue()


def _tar(members: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _status(report: dict) -> dict[str, tuple[str, list[str]]]:
    return {Path(e["input"]).name: (e["status"], e.get("reasons", [])) for e in report["inputs"]["listed"]}


def test_zip_upload_with_its_class_file_is_read(tmp_path):
    upload = _zip({"paper/ms.tex": CLS_PAPER, "paper/mycls.cls": CLS, "paper/mysty.sty": STY,
                   "paper/fig1.png": b"\x89PNG\r\n\x1a\n" + bytes(200), "__MACOSX/paper/._ms.tex": b"junk"})
    report, records = _run(tmp_path, {"upload.zip": upload, "renamed.gz": upload})
    # \co and \wbar come from the paper's own class, \Pf from a package that class loads
    assert {r["equation"] for r in records} == {r"\mathcal{O}_X \to \overline{\mathcal{O}_Y}", r"\mathrm{Pf}(A)"}
    assert report["dropped"].get("uses a command the compile rule's preamble does not define", 0) == 0
    assert _status(report)["upload.zip"] == _status(report)["renamed.gz"] == ("read", [])
    # the same bytes under a .gz name are still a zip, and the same paper: read once (the first in walk order)
    assert {r["source"].rsplit("/", 1)[-1] for r in records} == {"renamed.gz"}
    assert [d["source"].rsplit("/", 1)[-1] for d in report["duplicate_papers"]] == ["upload.zip"]


def test_class_macros_in_a_folder_paper(tmp_path):
    report, records = _run(tmp_path, {"p/ms.tex": CLS_PAPER, "p/mycls.cls": CLS, "p/mysty.sty": STY})
    assert len(records) == 2 and report["partly_read_count"] == 0
    assert {e: s for e, (s, _) in _status(report).items()} == {"ms.tex": "read", "mycls.cls": "read",
                                                              "mysty.sty": "read"}


def _set_encrypted_flag(data: bytes, name: bytes) -> bytes:
    """Mark one member as encrypted in the central directory (zipfile cannot write encrypted members)."""
    i = data.index(b"PK\x01\x02")
    while True:
        i = data.index(b"PK\x01\x02", i)
        name_len = struct.unpack("<H", data[i + 28:i + 30])[0]
        if data[i + 46:i + 46 + name_len] == name:
            flags = struct.unpack("<H", data[i + 8:i + 10])[0] | 0x1
            return data[:i + 8] + struct.pack("<H", flags) + data[i + 10:]
        i += 4


def test_zip_safety_caps_like_tar(tmp_path):
    inner = _zip({"deep.zip": _zip({"x.tex": PAPER})})
    evil = _zip({"../escape.tex": PAPER, "/abs/path.tex": PAPER, "link.tex": b"/etc/passwd",
                 "secret.tex": PAPER.replace(b"a + b", b"s"), "big.tex": PAPER + b"%" + b"x" * (2 * 2**20),
                 "nested.zip": inner, "ok/good.tex": PAPER.replace(b"a + b", b"z + w")},
                modes={"link.tex": 0o120777})
    evil = _set_encrypted_flag(evil, b"secret.tex")
    report, records = _run(tmp_path, {"evil.zip": evil}, max_paper_mb=1)
    assert [r["equation"] for r in records] == ["z + w = c"]
    reasons = {s["input"].split(":", 1)[1]: s["reason"] for s in report["skipped"]}
    assert reasons["../escape.tex"] == reasons["/abs/path.tex"] == \
        "zip member path is absolute or leaves the archive: not read"
    assert reasons["link.tex"] == "zip member is a symlink: not read"
    assert reasons["secret.tex"] == "zip member is encrypted: not read"
    assert reasons["big.tex"] == "member larger than 1 MB: not read"
    assert reasons["nested.zip:deep.zip"] == "archive nested more than two levels: not read"
    assert _status(report)["evil.zip"][0] == "partly_read"
    assert not (tmp_path / "escape.tex").exists() and not Path("/abs/path.tex").exists()


def test_zip_decompression_bomb_stops_at_the_archive_cap(tmp_path):
    bomb = _zip({f"part{i}.tex": b"%" + b"0" * (3 * 2**20) for i in range(4)} | {"main.tex": PAPER})
    assert len(bomb) < 200_000
    report, _ = _run(tmp_path, {"bomb.zip": bomb}, max_paper_mb=4, max_archive_mb=8)
    assert any("decompression bomb" in s["reason"] for s in report["skipped"])


def test_inputs_are_recognised_by_content_not_by_name(tmp_path):
    files = {
        "1801.00001": gzip.compress(PAPER.replace(b"a + b", b"g_1")),           # extensionless gzip (arXiv)
        "paper.tex": gzip.compress(PAPER.replace(b"a + b", b"g_2")),            # .tex that is gzip
        "ms": PAPER.replace(b"a + b", b"g_3"),                                  # LaTeX without an extension
        "p.bz2": bz2.compress(PAPER.replace(b"a + b", b"g_4")),
        "p.xz": lzma.compress(PAPER.replace(b"a + b", b"g_5")),
        "sub.tgz.zip": _tar({"m.tex": PAPER.replace(b"a + b", b"g_6")}),       # a tar.gz named .zip
        "notes.md": b"# notes\nSee the \\LaTeX source.\n",
        "plot.py": b"import matplotlib\nrc = r'\\documentclass{article}'\n",
    }
    report, records = _run(tmp_path, files)
    by_eq = {r["equation"]: r for r in records}
    assert set(by_eq) == {f"g_{i} = c" for i in range(1, 7)}
    assert by_eq["g_1 = c"]["paper"] == "1801.00001" and by_eq["g_1 = c"]["identity"] == "arxiv:1801.00001"
    status = _status(report)
    assert status["notes.md"] == ("skipped", ["not LaTeX source (text): not read"])
    assert status["plot.py"] == ("skipped", ["not LaTeX source (text): not read"])


def test_an_archive_without_latex_is_skipped_with_a_reason(tmp_path):
    nothing = _tar({"fig.pdf": b"%PDF-1.4\n" + bytes(100), "README": b"just words\n"})
    src = tmp_path / "upload.tar.gz"
    src.write_bytes(nothing)
    with pytest.raises(RuntimeError, match="no LaTeX paper in it"):
        ingest([src], tmp_path / "out", IngestConfig(workers=1, progress=False))
    import json

    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["skipped"] == [{"input": str(src), "reason": "no LaTeX paper in it (1 pdf, 1 text): not read"}]
    assert report["inputs"]["skipped"] == 1 and report["inputs"]["read"] == 0


def test_report_accounts_for_every_input(tmp_path):
    files = {
        "a/ms.tex": b"\\documentclass{mycls}\\usepackage{used}\\begin{document}\\input{numbers.txt} Text "
                    b"\\[ q = 1 \\] \\input{missing}\\end{document}",
        "a/mycls.cls": CLS, "a/used.sty": STY, "a/unused.sty": STY, "a/numbers.txt": b"forty two",
        "a/fig.png": b"\x89PNG\r\n\x1a\n" + bytes(100), "a/empty.tex": b"", "a/README.md": b"readme\n",
        "b.zip": _zip({"x.tex": PAPER}), "c.gz": b"not gzip at all", "d.tar": _tar({"img.jpg": b"\xff\xd8\xff"}, "w"),
    }
    report, records = _run(tmp_path, files)
    status = _status(report)
    assert len(status) == len(files) == sum(report["inputs"][k] for k in ("read", "partly_read", "skipped"))
    assert {k for k, (s, _) in status.items() if s == "read"} == {"ms.tex", "mycls.cls", "used.sty", "numbers.txt",
                                                                  "b.zip"}
    assert status["unused.sty"] == ("skipped", ["class or package file that no paper loads: not read"])
    assert status["fig.png"] == ("skipped", ["not LaTeX source (PNG image): not read"])
    assert status["empty.tex"] == ("skipped", ["empty file"])
    assert status["c.gz"] == ("skipped", ["named .gz but is not gzip data (nor a tar or LaTeX): not read"])
    assert status["d.tar"] == ("skipped", ["no LaTeX paper in it (1 JPEG image): not read"])
    assert [p["problems"] for p in report["partly_read"]] == [["missing \\input target 'missing' in a/ms.tex"]]
    assert "forty two" in next(r for r in records if r["equation"] == "q = 1")["context"]


def test_inputs_found_in_the_tex_installation_are_not_missing(tmp_path):
    kpsewhich = shutil.which("kpsewhich")
    assert kpsewhich, "kpsewhich is missing: run `make test`, which installs TeX Live"
    doc = (b"\\documentclass{article}\\input amssym.def \\input{amssym}\\begin{document}Text "
           b"\\[ r = 1 \\] \\input{surely-not-a-tex-file}\\end{document}")
    report, records = _run(tmp_path, {"k.tex": doc})
    assert [r["equation"] for r in records] == ["r = 1"]
    assert [p["problems"] for p in report["partly_read"]] == [
        ["missing \\input target 'surely-not-a-tex-file' in k.tex"]]
