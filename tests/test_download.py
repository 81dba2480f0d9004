"""`topiceq download` against a real HTTP server on 127.0.0.1 (tests/arxiv_server.py) serving an Atom listing and
the real source archives of ../shared/data/arxiv/formats/arxiv-source, with faults. No other address is used."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from arxiv_server import FakeArxiv, FakePaper
from pipeline.arxiv_api import category_query, parse_feed
from pipeline.arxiv_download import (DownloadConfig, SourceCheck, bulk_member_id, download_category, download_ids,
                                     import_bulk)
from pipeline.arxiv_meta import MANIFEST_FILE, expand_download_folders, file_stem, parse_arxiv_id, read_manifest
from pipeline.ingest import IngestConfig, ingest, read_records
from pipeline.polite_http import HTTPFailure, PoliteConfig, Retryable, retry_after_seconds, user_agent

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.network


@pytest.fixture(scope="module")
def sources(shared_arxiv) -> Path:
    return shared_arxiv / "formats" / "arxiv-source"


def _cfg(out: Path, srv: FakeArxiv, **http) -> DownloadConfig:
    opts = dict(delay_s=0.0, backoff_s=0.05, retries=3, timeout_s=10.0)
    opts.update(http)
    return DownloadConfig(out=out, base_url=srv.base_url, api_url=srv.api_url, progress=False,
                          http=PoliteConfig(**opts))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------------------------- end to end

def test_download_with_faults_then_ingest_uses_categories(tmp_path, sources):
    papers = [
        FakePaper.from_file("1801.03879", sources / "1801.03879-1.tar.gz", categories=["cs.DS", "math.CO"],
                            title="Defective coloring", faults=["500", "500"]),
        FakePaper.from_file("1801.00002", sources / "ccl-paper.tar.gz", categories=["astro-ph.CO", "astro-ph.IM"],
                            faults=["429:1"]),
        # arXiv's older headers for a single gzipped file; the connection is cut mid-file once
        FakePaper.from_file("hep-th/9901001", sources / "limbdark-analytic-transits.gz", version=2,
                            categories=["astro-ph.EP"], content_type="application/x-eprint",
                            content_encoding="x-gzip", faults=["cut"], license=None),
        FakePaper.from_file("1801.00004", sources / "pymablock.tar.gz", categories=["quant-ph", "cond-mat.mes-hall"]),
        FakePaper("1801.00005", body=b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", content_type="application/pdf"),
        FakePaper("1801.00006", body=b"<!DOCTYPE html><html>Access denied</html>", content_type="text/html"),
    ]
    out = tmp_path / "dl"
    with FakeArxiv(papers) as srv:
        summary = download_ids(["1801.03879", "arXiv:1801.00002", "hep-th/9901001", "1801.00004", "1801.00005",
                                "1801.00006"], _cfg(out, srv))
        log = list(srv.log)
    assert (summary.ok, summary.pdf_only, summary.failed) == (4, 1, 1)
    manifest = read_manifest(out)
    assert manifest["1801.00006"]["status"] == "failed"
    assert "wrong content type text/html" in manifest["1801.00006"]["reason"]
    assert manifest["1801.00005"]["status"] == "pdf-only" and manifest["1801.00005"]["file"] is None
    # byte for byte as served, named by id and version, format from the content
    for pid, name, src in [("1801.03879", "1801.03879v1.tar.gz", "1801.03879-1.tar.gz"),
                           ("1801.00002", "1801.00002v1.tar.gz", "ccl-paper.tar.gz"),
                           ("hep-th/9901001", "hep-th_9901001v2.gz", "limbdark-analytic-transits.gz"),
                           ("1801.00004", "1801.00004v1.tar.gz", "pymablock.tar.gz")]:
        assert manifest[pid]["file"] == name and manifest[pid]["status"] == "ok"
        assert _sha(out / name) == _sha(sources / src) == manifest[pid]["sha256"]
    assert manifest["1801.03879"]["attempts"] == 3 and manifest["hep-th/9901001"]["attempts"] == 2
    assert manifest["1801.03879"]["categories"] == ["cs.DS", "math.CO"]
    assert manifest["1801.03879"]["title"] == "Defective coloring"
    assert manifest["1801.03879"]["license"] == "http://creativecommons.org/licenses/by/4.0/"
    assert manifest["hep-th/9901001"]["license"] is None
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MANIFEST_FILE, "1801.03879v1.tar.gz", "1801.00002v1.tar.gz", "hep-th_9901001v2.gz", "1801.00004v1.tar.gz"])
    # Retry-After: 1 was honoured
    times = [t for t, path, _ in log if path == "/e-print/1801.00002v1"]
    assert len(times) == 2 and times[1] - times[0] >= 0.95
    # one request at a time, in order: the API listing first, then each paper
    assert log[0][1].startswith("/api/query?id_list=")

    # ingest uses the primary category as area and the arXiv id as the paper's identity
    report = ingest([out], tmp_path / "ing", IngestConfig(workers=1, progress=False))
    assert set(report["papers_per_area"]) == {"cs.DS", "astro-ph.CO", "astro-ph.EP", "quant-ph"}
    assert report["skipped"] == []
    records = list(read_records(tmp_path / "ing"))
    assert {r["area"] for r in records} == {"astro-ph.CO", "astro-ph.EP", "quant-ph"}
    by_area = {r["area"]: r for r in records}
    assert by_area["astro-ph.EP"]["arxiv_id"] == "hep-th/9901001"
    assert by_area["astro-ph.EP"]["paper"] == "hep-th/9901001"
    assert by_area["quant-ph"]["categories"] == ["quant-ph", "cond-mat.mes-hall"]


def test_second_run_skips_complete_and_retries_failed(tmp_path, sources):
    papers = [FakePaper.from_file("1801.00001", sources / "limbdark-analytic-transits.gz"),
              FakePaper.from_file("1801.00002", sources / "gw-memory-population.tar.gz", faults=["500"] * 3)]
    out = tmp_path / "dl"
    with FakeArxiv(papers) as srv:
        first = download_ids(["1801.00001", "1801.00002"], _cfg(out, srv, retries=2))
        assert (first.ok, first.failed) == (1, 1)
        assert "gave up after 3 attempts; last: HTTP 500" in first.failures[0]["reason"]
        (out / "1801.00003v1.part").write_bytes(b"\x1f\x8b half")   # left by a run cut short
        n_before = len(srv.log)
        second = download_ids(["1801.00001", "1801.00002"], _cfg(out, srv, retries=2))
        again = [path for _, path, _ in srv.log[n_before:]]
    assert (second.already_complete, second.ok, second.failed) == (1, 1, 0)
    assert "/e-print/1801.00001v1" not in again and again.count("/e-print/1801.00002v1") == 1
    assert "1801.00001" not in again[0]          # the API is asked only about what is still missing
    assert not list(out.glob("*.part"))
    assert _sha(out / "1801.00002v1.tar.gz") == _sha(sources / "gw-memory-population.tar.gz")


def test_a_new_version_replaces_the_old_file(tmp_path, sources):
    paper = FakePaper.from_file("1801.00001", sources / "limbdark-analytic-transits.gz")
    out = tmp_path / "dl"
    with FakeArxiv([paper]) as srv:
        assert download_category("cs.DS", 1, _cfg(out, srv)).ok == 1
        assert download_category("cs.DS", 1, _cfg(out, srv)).already_complete == 1
        paper.version, paper.body = 2, (sources / "pymablock.tar.gz").read_bytes()
        assert download_category("cs.DS", 1, _cfg(out, srv)).ok == 1
    assert sorted(p.name for p in out.iterdir()) == ["1801.00001v2.tar.gz", MANIFEST_FILE]
    assert read_manifest(out)["1801.00001"]["version"] == 2


def test_resume_after_the_process_is_killed_mid_file(tmp_path, sources):
    """A real interruption: the CLI is killed (SIGKILL) while a source is half received; the next run keeps
    what was complete, never counts the partial file, and fetches only what is missing."""
    papers = [FakePaper.from_file("1801.00001", sources / "limbdark-analytic-transits.gz"),
              FakePaper.from_file("1801.00002", sources / "gw-memory-population.tar.gz"),
              FakePaper.from_file("1801.00003", sources / "ccl-paper.tar.gz", faults=["stall"])]
    out = tmp_path / "dl"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with FakeArxiv(papers) as srv:
        cmd = [sys.executable, "-m", "topiceq.cli", "download", "--ids", "1801.00001", "1801.00002", "1801.00003",
               "--out", str(out), "--delay", "0", "--backoff", "0.05", "--no-progress",
               "--base-url", srv.base_url, "--api-url", srv.api_url]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert srv.stalled.wait(60), "the client never reached the third paper"
            deadline = time.monotonic() + 10
            while not list(out.glob("*.part")) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert [p.name for p in out.glob("*.part")] == ["1801.00003v1.part"]
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
        manifest = read_manifest(out)
        assert sorted(manifest) == ["1801.00001", "1801.00002"]
        assert not (out / "1801.00003v1.tar.gz").exists()
        srv.release.set()
        n_before = len(srv.log)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        again = [path for _, path, _ in srv.log[n_before:] if path.startswith("/e-print/")]
    assert done.returncode == 0, done.stderr
    assert "1 sources saved" in done.stdout and "2 already complete" in done.stdout
    assert again == ["/e-print/1801.00003v1"]
    assert not list(out.glob("*.part"))
    assert _sha(out / "1801.00003v1.tar.gz") == _sha(sources / "ccl-paper.tar.gz")


# ----------------------------------------------------------------------------------------------- listing

def test_category_listing_pages_dates_and_delay(tmp_path, sources):
    papers = [FakePaper.from_file(f"1801.0000{i}", sources / "limbdark-analytic-transits.gz",
                                  categories=["math.AG"] if i != 4 else ["hep-th", "math.AG"],
                                  submitted=f"2018-01-0{i}T10:00:00Z") for i in range(1, 8)]
    papers.append(FakePaper.from_file("1801.00009", sources / "limbdark-analytic-transits.gz",
                                      categories=["cs.LG"], submitted="2018-01-05T10:00:00Z"))
    out = tmp_path / "dl"
    from datetime import date
    with FakeArxiv(papers, api_faults=["rate", "503:0"]) as srv:
        cfg = _cfg(out, srv, delay_s=0.2)
        cfg.page_size = 3
        summary = download_category("math.AG", 4, cfg, date_from=date(2018, 1, 2), date_until=date(2018, 1, 6))
        log = list(srv.log)
    api = [path for _, path, _ in log if path.startswith("/api/")]
    # throttled twice (a plain-text "Rate exceeded." and a 503), then pages of 3 (page size) and 1
    assert len(api) == 4 and "start=0" in api[2] and "max_results=3" in api[2] and "start=3" in api[3]
    assert "max_results=1" in api[3]
    assert summary.listed == 4 and summary.ok == 4
    manifest = read_manifest(out)
    # newest first within 2018-01-02 .. 2018-01-06, cross-listed papers included
    assert sorted(manifest) == ["1801.00003", "1801.00004", "1801.00005", "1801.00006"]
    assert manifest["1801.00004"]["primary_category"] == "hep-th"
    # the delay holds between every two requests (end of one to start of the next, so start-to-start too)
    starts = [t for t, _, _ in log]
    assert min(b - a for a, b in zip(starts, starts[1:])) >= 0.19


def test_page_size_is_configurable(tmp_path, sources):
    papers = [FakePaper.from_file(f"1801.0000{i}", sources / "limbdark-analytic-transits.gz",
                                  submitted=f"2018-01-0{i}T10:00:00Z") for i in range(1, 6)]
    with FakeArxiv(papers) as srv:
        cfg = _cfg(tmp_path / "dl", srv)
        cfg.page_size = 2
        summary = download_category("cs.DS", 10, cfg)
        api = [path for _, path, _ in srv.log if path.startswith("/api/")]
    assert summary.listed == 5 and len(api) == 3       # 2 + 2 + 1, then totalResults says done


def test_api_error_entry_is_a_clear_error():
    body = (b'<?xml version="1.0" encoding="UTF-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
            b'<entry><id>http://arxiv.org/api/errors#incorrect_id_format_for_1234</id><title>Error</title>'
            b'<summary>incorrect id format for 1234</summary></entry></feed>')
    with pytest.raises(ValueError, match="rejected the query: incorrect id format"):
        parse_feed(body)
    with pytest.raises(Retryable, match="not an Atom feed"):
        parse_feed(b"Rate exceeded.")
    assert category_query("math.AG") == "cat:math.AG"
    with pytest.raises(ValueError, match="not an arXiv category"):
        category_query("math.AG OR cat:cs.LG")


# ----------------------------------------------------------------------------------------------- safety

def test_ids_are_validated_before_any_request(tmp_path):
    with FakeArxiv([]) as srv:
        for bad in ["../../etc/passwd", "1801.03879/../../x", "1801.03879v1.tar", "hep-th/../9901001", ""]:
            with pytest.raises(ValueError, match="is not an arXiv id"):
                download_ids(["1801.03879", bad], _cfg(tmp_path / "dl", srv))
        assert srv.log == []
    assert parse_arxiv_id("https://arxiv.org/abs/math.GT/0309136v3") == ("math.GT/0309136", 3)
    assert parse_arxiv_id("arXiv:2101.00001") == ("2101.00001", None)
    assert file_stem("hep-th/9901001", 2) == "hep-th_9901001v2"


def test_caps_magic_and_truncation(tmp_path, sources):
    whole = (sources / "limbdark-analytic-transits.gz").read_bytes()
    big = (sources / "1801.03879-1.tar.gz").read_bytes()
    papers = [FakePaper("1801.00001", body=big),                                           # over the cap
              FakePaper("1801.00002", body=b"<html>not a source</html>" * 40),           # wrong magic
              FakePaper("1801.00003", body=whole[: len(whole) // 2]),                    # gzip ends early
              FakePaper("1801.00004", body=gzip.compress(b"%!PS-Adobe-2.0\n" * 100)),    # PostScript only
              FakePaper("1801.00005", body=b"", content_type="application/postscript"),
              FakePaper("1801.00006", body=whole, faults=["429:100000"])]                 # asks to wait too long
    out = tmp_path / "dl"
    with FakeArxiv(papers) as srv:
        t0 = time.monotonic()
        summary = download_ids([p.id for p in papers], DownloadConfig(
            out=out, base_url=srv.base_url, api_url=srv.api_url, progress=False, max_mb=0.05,
            http=PoliteConfig(delay_s=0, backoff_s=0.01, retries=1, max_wait_s=5)))
        took = time.monotonic() - t0
    m = read_manifest(out)
    assert "larger than the 0.05 MB cap" in m["1801.00001"]["reason"]
    assert "not a gzip or tar file (starts with '<html>not a source</html')" in m["1801.00002"]["reason"]
    assert "gzip data ends early" in m["1801.00003"]["reason"]
    assert m["1801.00004"]["status"] == "no-source" and m["1801.00004"]["reason"] == "PostScript only"
    assert m["1801.00005"]["status"] == "no-source"
    assert "asks to wait 100000 s" in m["1801.00006"]["reason"] and took < 5
    assert summary.failed == 4 and sorted(p.name for p in out.iterdir()) == [MANIFEST_FILE]


def test_source_check_reads_multi_member_gzip_and_bombs():
    data = gzip.compress(b"\\documentclass{article}") + gzip.compress(b"\\begin{document}x\\end{document}")
    check = SourceCheck(10_000)
    for i in range(0, len(data), 7):
        check.feed(data[i:i + 7])
    assert check.finish() == ("gz", None) and check.unpacked == 54
    bomb = SourceCheck(1 << 20)
    with pytest.raises(HTTPFailure, match="decompression bomb"):
        bomb.feed(gzip.compress(b"\0" * (2 << 20)))


def test_retry_after_forms_and_user_agent():
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None
    assert "me@example.org" in user_agent("me@example.org") and "topiceq/" in user_agent("")


# ----------------------------------------------------------------------------------------------- bulk

def _bulk_tar(path: Path, members: dict[str, bytes], link: str | None = None) -> None:
    with tarfile.open(path, "w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo(link)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tf.addfile(info)


def test_bulk_tarball_with_metadata_then_ingest(tmp_path, sources):
    bulk = tmp_path / "arXiv_src_1801_001.tar"
    _bulk_tar(bulk, {"1801/1801.03879.gz": (sources / "1801.03879-1.tar.gz").read_bytes(),
                     "1801/1801.00002.gz": (sources / "limbdark-analytic-transits.gz").read_bytes(),
                     "1801/1801.00003.pdf": b"%PDF-1.4\n",
                     "1801/1801.00004.gz": b"\x1f\x8b\x08\x00 cut",
                     "../1801.00005.gz": (sources / "pymablock.tar.gz").read_bytes(),
                     "arXiv_src_1801_001.manifest.xml": b"<manifest/>"}, link="1801/1801.00006.gz")
    papers = [FakePaper("1801.03879", categories=["cs.DS"]), FakePaper("1801.00002", categories=["astro-ph.EP"]),
              FakePaper("1801.00003", categories=["math.PR"]), FakePaper("1801.00005", categories=["quant-ph"])]
    out = tmp_path / "dl"
    with FakeArxiv(papers) as srv:
        summary = import_bulk(bulk, _cfg(out, srv))
        again = import_bulk(bulk, _cfg(out, srv))
        api_calls = [p for _, p, _ in srv.log if p.startswith("/api/")]
        e_prints = [p for _, p, _ in srv.log if p.startswith("/e-print/")]
    assert (summary.ok, summary.pdf_only, summary.failed) == (3, 1, 1)
    assert summary.failures[0]["id"] == "1801.00004" and "ends early" in summary.failures[0]["reason"]
    assert (again.already_complete, again.ok, again.failed) == (4, 0, 1)
    assert len(api_calls) == 1 and e_prints == []      # the second run has no metadata left to ask for
    m = read_manifest(out)
    # the `../` member is read by its name only: the file lands in OUT like any other
    assert m["1801.00005"]["file"] == "1801.00005.tar.gz" and (out / "1801.00005.tar.gz").is_file()
    assert m["1801.00002"]["categories"] == ["astro-ph.EP"] and m["1801.00002"]["version"] is None
    assert m["1801.00003"]["status"] == "pdf-only" and m["1801.00003"]["primary_category"] == "math.PR"
    assert "1801.00006" not in m and any("1801.00006.gz: a link" in n for n in summary.notes)
    assert any("manifest.xml: not a per-paper" in n for n in summary.notes)
    assert not (tmp_path / "1801.00005.gz").exists()
    assert bulk_member_id("9901/hep-th9901001.gz") == ("hep-th/9901001", None, "gz")
    assert bulk_member_id("1801/README") is None

    files, papers_meta = expand_download_folders([out])
    assert sorted(Path(f).name for f in files) == ["1801.00002.gz", "1801.00005.tar.gz", "1801.03879.tar.gz"]
    report = ingest([out], tmp_path / "ing", IngestConfig(workers=1, progress=False))
    assert set(report["papers_per_area"]) == {"cs.DS", "astro-ph.EP", "quant-ph"}


def test_bulk_without_metadata_keeps_folder_area(tmp_path, sources):
    bulk = tmp_path / "arXiv_src_1801_002.tar"
    _bulk_tar(bulk, {"1801/1801.00002.gz": (sources / "limbdark-analytic-transits.gz").read_bytes()})
    out = tmp_path / "astro"
    summary = import_bulk(bulk, DownloadConfig(out=out, api_url="http://127.0.0.1:9/api/query", progress=False),
                          metadata=False)
    assert summary.ok == 1 and summary.requests == 0
    report = ingest([out], tmp_path / "ing", IngestConfig(workers=1, progress=False))
    assert set(report["papers_per_area"]) == {"astro"}


# ----------------------------------------------------------------------------------------------- CLI

def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "topiceq.cli", "download", *args], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120)


def test_cli_help_errors_and_json(tmp_path, sources):
    helped = _cli("--help")
    assert helped.returncode == 0 and "--bulk FILE.tar" in helped.stdout and "(default: 3.0)" in helped.stdout
    bad = _cli("--ids", "../x", "--out", str(tmp_path / "o"))
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "is not an arXiv id" in bad.stderr
    assert not (tmp_path / "o").exists()
    usage = _cli("--category", "cs.LG", "--out", str(tmp_path / "o"))
    assert usage.returncode == 1 and "--category needs --max" in usage.stderr
    papers = [FakePaper.from_file("1801.00001", sources / "limbdark-analytic-transits.gz"),
              FakePaper("1801.00002", body=b"<html/>", content_type="text/html")]
    with FakeArxiv(papers) as srv:
        done = _cli("--ids", "1801.00001", "1801.00002", "--out", str(tmp_path / "o"), "--delay", "0", "--json",
                    "--no-progress", "--base-url", srv.base_url, "--api-url", srv.api_url)
    assert done.returncode == 1 and "1 of 2 papers failed" in done.stderr and "run the same command again" in done.stderr
    summary = json.loads(done.stdout)
    assert summary["ok"] == 1 and summary["failures"][0]["id"] == "1801.00002"
