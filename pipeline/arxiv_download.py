"""Download arXiv sources politely, resumably and safely; or take them from arXiv's bulk source tarballs.

`download_ids` / `download_category` list papers through the API (`pipeline.arxiv_api`), then fetch each
paper's source from `BASE/e-print/IDvN` through one `PoliteClient` (one request at a time, a delay, back-off).
Each source is kept byte for byte as arXiv serves it (a gzipped tar -> `ID.tar.gz`, a gzipped single file ->
`ID.gz`) in the output folder, with its metadata in `download-manifest.jsonl` (format owned by
`pipeline.arxiv_meta`). `import_bulk` reads a bulk tarball (`arXiv_src_*.tar`: per-paper `.gz` and `.pdf`
members) into the same layout.

Safety: ids are validated before they name a file, so every file lands directly in the output folder; a
source is written to a temporary name and renamed only after its checks pass: content type, a size cap, gzip
or tar magic, the whole gzip stream decompressed (capped) so that a cut transfer never counts. PDF-only and
PostScript-only papers are recorded as such, and nothing of them is kept.
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
import tarfile
import time
import zlib
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Iterable

from pipeline.archives import looks_like_tar
from pipeline.arxiv_api import DEFAULT_API_URL, list_category, lookup_ids
from pipeline.arxiv_meta import (MANIFEST_FILE, PART_SUFFIX, ManifestWriter, PaperMeta, file_stem, is_complete,
                                 parse_arxiv_id, read_manifest, versioned)
from pipeline.polite_http import HTTPFailure, PoliteClient, PoliteConfig, Retryable

DEFAULT_BASE_URL = "https://arxiv.org"
# What arXiv's e-print endpoint sends for LaTeX sources (old: x-eprint(-tar) with Content-Encoding x-gzip;
# now: application/gzip); octet-stream and tar are accepted too, the magic check decides.
SOURCE_TYPES = frozenset({"application/x-eprint", "application/x-eprint-tar", "application/gzip",
                          "application/x-gzip", "application/x-tar", "application/x-gtar",
                          "application/octet-stream"})
NO_SOURCE_TYPES = {"application/postscript": "PostScript only", "application/x-dvi": "DVI only",
                   "application/x-dvi-tar": "DVI only"}
_CHUNK = 1 << 16


@dataclass
class DownloadConfig:
    out: Path
    base_url: str = DEFAULT_BASE_URL      # sources at BASE/e-print/ID
    api_url: str = DEFAULT_API_URL
    max_mb: float = 100.0                 # bytes per paper as served (compressed)
    max_unpacked_mb: float = 1024.0       # bytes per paper after gunzip (decompression bombs stop here)
    page_size: int = 100                  # papers per API page
    progress: bool = True                 # tqdm bar on stderr
    http: PoliteConfig = field(default_factory=PoliteConfig)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        for name in ("base_url", "api_url"):
            if not getattr(self, name).startswith(("http://", "https://")):
                raise ValueError(f"--{name.replace('_', '-')} {getattr(self, name)!r} must start with http:// "
                                 "or https://")
        if self.max_mb <= 0 or self.max_unpacked_mb <= 0:
            raise ValueError("size caps must be positive")


@dataclass
class DownloadSummary:
    out: str
    listed: int = 0                       # papers asked for (ids, listing or bulk members)
    already_complete: int = 0             # skipped: complete from an earlier run
    ok: int = 0
    pdf_only: int = 0
    no_source: int = 0
    failed: int = 0
    failures: list[dict] = field(default_factory=list)     # {"id", "reason"}
    bytes: int = 0
    requests: int = 0
    retries: int = 0
    seconds_waited: float = 0.0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def count(self, entry: dict) -> None:
        status = entry["status"]
        if status == "ok":
            self.ok += 1
            self.bytes += entry.get("bytes") or 0
        elif status == "pdf-only":
            self.pdf_only += 1
        elif status == "no-source":
            self.no_source += 1
        else:
            self.failed += 1
            self.failures.append({"id": entry["id"], "reason": entry.get("reason")})


# ----------------------------------------------------------------------------------------------- checks

class SourceCheck:
    """Fed a source's bytes as they arrive: checks the magic (gzip, tar or PDF), decompresses gzip to the end
    (capped) and keeps the head of the content, so that `finish()` can say what the source is."""

    def __init__(self, max_unpacked: int) -> None:
        self.max_unpacked = max_unpacked
        self.kind: str | None = None          # "gzip" | "tar" | "pdf"
        self.unpacked = 0
        self.head = b""                       # first bytes of the (decompressed) content
        self._prefix = b""
        self._z = None

    def feed(self, data: bytes) -> None:
        if self.kind is None:
            self._prefix += data
            if len(self._prefix) < 512:
                return
            data, self._prefix = self._prefix, b""
            self._decide(data)
        self._consume(data)

    def _decide(self, data: bytes) -> None:
        if data[:2] == b"\x1f\x8b":
            self.kind = "gzip"
        elif data[:5] == b"%PDF-":
            self.kind = "pdf"
        elif looks_like_tar(data[:512]):
            self.kind = "tar"
        else:
            shown = data[:24].decode("latin-1").encode("unicode_escape").decode("ascii")
            raise HTTPFailure(f"not a gzip or tar file (starts with {shown!r})")

    def _consume(self, data: bytes) -> None:
        if self.kind != "gzip":
            if len(self.head) < 1024:
                self.head += data[:1024 - len(self.head)]
            return
        try:
            while data:
                if self._z is None or self._z.eof:
                    if self._z is not None and not data.startswith(b"\x1f\x8b"):
                        return  # bytes after the last gzip member are ignored, as gzip does
                    self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
                out = self._z.decompress(data, _CHUNK * 16)
                self.unpacked += len(out)
                if self.unpacked > self.max_unpacked:
                    raise HTTPFailure(f"more than {self.max_unpacked // 2**20} MB after decompression "
                                      "(decompression bomb?): not kept")
                if len(self.head) < 1024:
                    self.head += out[:1024 - len(self.head)]
                data = self._z.unused_data if self._z.eof else self._z.unconsumed_tail
        except zlib.error as exc:
            raise HTTPFailure(f"corrupt gzip data: {exc}") from None

    def finish(self) -> tuple[str, str | None]:
        """(format, note): format "tar.gz" | "gz" | "tar" | "pdf-only" | "no-source"; note for no-source."""
        if self.kind is None:
            if not self._prefix:
                raise Retryable("empty body")
            data, self._prefix = self._prefix, b""
            self._decide(data)
            self._consume(data)
        if self.kind == "pdf":
            return "pdf-only", None
        if self.kind == "tar":
            return "tar", None
        if self._z is None or not self._z.eof:
            raise Retryable("gzip data ends early: the transfer was cut")
        if self.head.startswith(b"%PDF-"):
            return "pdf-only", None
        if self.head.startswith(b"%!PS"):
            return "no-source", "PostScript only"
        return ("tar.gz" if looks_like_tar(self.head[:512]) else "gz"), None


@dataclass
class Received:
    status: str                            # "ok" | "pdf-only" | "no-source"
    file: str | None = None
    format: str | None = None
    bytes: int = 0
    sha256: str | None = None
    content_type: str | None = None
    reason: str | None = None


def _store(chunks: Iterable[bytes], stem: str, cfg: DownloadConfig, content_type: str | None) -> Received:
    """Write `chunks` to `OUT/STEM.part`, check them, rename to `OUT/STEM.tar.gz|.gz|.tar`. The temporary file
    is removed whatever happens; only a checked source gets its final name."""
    cap = int(cfg.max_mb * 2**20)
    out = cfg.out.resolve()
    tmp = out / f"{stem}{PART_SUFFIX}"
    check = SourceCheck(int(cfg.max_unpacked_mb * 2**20))
    sha = hashlib.sha256()
    size = 0
    try:
        with open(tmp, "wb") as fh:
            for chunk in chunks:
                size += len(chunk)
                if size > cap:
                    raise HTTPFailure(f"larger than the {cfg.max_mb:g} MB cap per paper (--max-mb): not kept")
                check.feed(chunk)
                if check.kind == "pdf":
                    break        # a PDF is not a source: no need to read it all
                sha.update(chunk)
                fh.write(chunk)
        fmt, note = check.finish()
        if fmt in ("pdf-only", "no-source"):
            return Received(fmt, content_type=content_type, reason=note)
        final = out / f"{stem}.{fmt}"
        if final.parent != out:    # ids are validated; this only guards the guard
            raise HTTPFailure(f"refusing to write {final}: outside {out}")
        os.replace(tmp, final)
        return Received("ok", final.name, fmt, size, sha.hexdigest(), content_type)
    finally:
        tmp.unlink(missing_ok=True)


def _receive(resp, stem: str, cfg: DownloadConfig) -> Received:
    content_type = (resp.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if content_type == "application/pdf":
        return Received("pdf-only", content_type=content_type)
    if content_type in NO_SOURCE_TYPES:
        return Received("no-source", content_type=content_type, reason=NO_SOURCE_TYPES[content_type])
    if content_type not in SOURCE_TYPES:
        raise HTTPFailure(f"wrong content type {content_type or '(none)'}: expected a gzip or tar source")
    length = resp.headers.get("Content-Length")
    if length and length.isdigit() and int(length) > cfg.max_mb * 2**20:
        raise HTTPFailure(f"{int(length) / 2**20:.0f} MB is larger than the {cfg.max_mb:g} MB cap per paper "
                          "(--max-mb): not downloaded")
    # raw bytes as served: a Content-Encoding of x-gzip is arXiv's way to say "this is a .gz", not ours to undo
    return _store(resp.raw.stream(_CHUNK, decode_content=False), stem, cfg, content_type)


# ----------------------------------------------------------------------------------------------- the runs

def _prepare(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(f"*{PART_SUFFIX}"):   # a run cut short leaves these; they never count
        if stale.is_file() and not stale.is_symlink():
            stale.unlink()


def _bar(cfg: DownloadConfig, total: int, desc: str):
    if not cfg.progress:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit=" papers", file=sys.stderr, dynamic_ncols=True)


def _finish(summary: DownloadSummary, client: PoliteClient, t0: float) -> DownloadSummary:
    summary.requests = client.requests_made
    summary.retries = client.retries_made
    summary.seconds_waited = round(client.seconds_waited, 3)
    summary.seconds = round(time.perf_counter() - t0, 3)
    return summary


def fetch_papers(papers: list[PaperMeta], cfg: DownloadConfig, client: PoliteClient,
                 summary: DownloadSummary) -> None:
    """Fetch the source of each paper not already complete in OUT's manifest, one at a time."""
    previous = read_manifest(cfg.out)
    todo = []
    for meta in papers:
        if is_complete(cfg.out, previous.get(meta.id), meta.version):
            summary.already_complete += 1
        else:
            todo.append(meta)
    bar = _bar(cfg, len(todo), "download")
    with ManifestWriter(cfg.out) as writer:
        for meta in todo:
            url = f"{cfg.base_url.rstrip('/')}/e-print/{versioned(meta.id, meta.version)}"
            stem = file_stem(meta.id, meta.version)
            before = client.requests_made
            try:
                got = client.fetch(url, lambda resp: _receive(resp, stem, cfg))
                entry = writer.write(meta, meta.id, got.status, file=got.file, format=got.format, bytes=got.bytes,
                                     sha256=got.sha256, content_type=got.content_type, url=url, reason=got.reason,
                                     attempts=client.requests_made - before)
            except HTTPFailure as exc:
                entry = writer.write(meta, meta.id, "failed", url=url, reason=str(exc),
                                     attempts=client.requests_made - before)
            summary.count(entry)
            old = previous.get(meta.id) or {}
            if entry["status"] == "ok" and old.get("file") and old["file"] != entry["file"]:
                (cfg.out / Path(old["file"]).name).unlink(missing_ok=True)   # an older version it replaces
            if bar is not None:
                bar.update(1)
                bar.set_postfix(ok=summary.ok, failed=summary.failed, refresh=False)
    if bar is not None:
        bar.close()


def download_ids(ids: list[str], cfg: DownloadConfig, client: PoliteClient | None = None) -> DownloadSummary:
    """Sources of the given arXiv ids (with or without version) into `cfg.out`, with their metadata."""
    wanted = list(dict.fromkeys(parse_arxiv_id(i) for i in ids))   # all ids checked before any request
    if not wanted:
        raise ValueError("no arXiv ids given")
    t0 = time.perf_counter()
    _prepare(cfg.out)
    summary = DownloadSummary(out=str(cfg.out), listed=len(wanted))
    own = client is None
    client = client or PoliteClient(cfg.http)
    try:
        previous = read_manifest(cfg.out)
        pending = [(a, v) for a, v in wanted if not is_complete(cfg.out, previous.get(a), v)]
        summary.already_complete = len(wanted) - len(pending)
        found = lookup_ids(client, cfg.api_url, pending, notes=summary.notes) if pending else {}
        papers = []
        with ManifestWriter(cfg.out) as writer:
            for a, v in pending:
                meta = found.get(a)
                if meta is None or (v is not None and meta.version not in (None, v)):
                    summary.count(writer.write(None, a, "failed", version=v,
                                               reason="the arXiv API does not list this id" +
                                               (f" in version {v}" if meta else "")))
                else:
                    papers.append(meta)
        fetch_papers(papers, cfg, client, summary)
    finally:
        if own:
            client.close()
    return _finish(summary, client, t0)


def download_category(category: str, max_papers: int, cfg: DownloadConfig, date_from: date | None = None,
                      date_until: date | None = None, client: PoliteClient | None = None) -> DownloadSummary:
    """The newest `max_papers` papers of `category` (submitted within the dates, when given) into `cfg.out`."""
    t0 = time.perf_counter()
    _prepare(cfg.out)
    summary = DownloadSummary(out=str(cfg.out))
    own = client is None
    client = client or PoliteClient(cfg.http)
    try:
        bar = _bar(cfg, max_papers, "list")
        papers = []
        for meta in list_category(client, cfg.api_url, category, max_papers, cfg.page_size, date_from, date_until,
                                  summary.notes):
            papers.append(meta)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        summary.listed = len(papers)
        fetch_papers(papers, cfg, client, summary)
    finally:
        if own:
            client.close()
    return _finish(summary, client, t0)


# ----------------------------------------------------------------------------------------------- bulk

_BULK_MEMBER = re.compile(r"^(?:(\d{4}\.\d{4,5})|([a-z]+(?:-[a-z]+)*(?:\.[A-Z]{2})?)(\d{7}))(?:v(\d+))?\.(gz|pdf)$")


def bulk_member_id(name: str) -> tuple[str, int | None, str] | None:
    """`1801/1801.03879.gz` -> ("1801.03879", None, "gz"); `9901/hep-th9901001.pdf` -> ("hep-th/9901001", None,
    "pdf"); None for anything else (the tarball's manifest file, folders)."""
    m = _BULK_MEMBER.match(name.rsplit("/", 1)[-1])
    if not m:
        return None
    arxiv_id = m.group(1) or f"{m.group(2)}/{m.group(3)}"
    return arxiv_id, int(m.group(4)) if m.group(4) else None, m.group(5)


def import_bulk(tar_path: str | os.PathLike, cfg: DownloadConfig, metadata: bool = True,
                client: PoliteClient | None = None) -> DownloadSummary:
    """Read an arXiv bulk source tarball (`arXiv_src_YYMM_NNN.tar`) into `cfg.out`: each per-paper `.gz`
    is checked like a download and kept as `ID.tar.gz` / `ID.gz`; `.pdf` members are recorded as PDF-only.
    With `metadata`, titles and categories come from the API (`id_list`, 100 ids a request); without it, or
    when the API cannot be reached, they stay empty and a later run with `metadata` fills them in."""
    t0 = time.perf_counter()
    tar_path = Path(tar_path)
    if not tar_path.is_file():
        raise FileNotFoundError(f"{tar_path} is not a file: give an arXiv bulk source tarball (arXiv_src_*.tar)")
    _prepare(cfg.out)
    summary = DownloadSummary(out=str(cfg.out))
    previous = read_manifest(cfg.out)
    cap = int(cfg.max_mb * 2**20)
    try:
        tf = tarfile.open(tar_path, mode="r|*")
    except (tarfile.TarError, OSError) as exc:
        raise ValueError(f"{tar_path} is not a readable tar archive ({exc}): give an arXiv_src_*.tar file")
    bar = _bar(cfg, 0, "bulk")
    with tf, ManifestWriter(cfg.out) as writer:
        try:
            for member in tf:
                if not member.isfile():
                    if not member.isdir():
                        summary.notes.append(f"{member.name}: a link or special file, not read")
                    continue
                parsed = bulk_member_id(member.name)
                if parsed is None:
                    summary.notes.append(f"{member.name}: not a per-paper .gz/.pdf file: skipped")
                    continue
                arxiv_id, version, ext = parsed
                summary.listed += 1
                if bar is not None:
                    bar.update(1)
                if is_complete(cfg.out, previous.get(arxiv_id)):
                    summary.already_complete += 1
                    continue
                meta = PaperMeta(arxiv_id, version)
                where = f"{tar_path.name}:{member.name}"
                if ext == "pdf":
                    summary.count(writer.write(meta, arxiv_id, "pdf-only", url=where))
                    continue
                if member.size > cap:
                    summary.count(writer.write(meta, arxiv_id, "failed", url=where, reason=f"larger than the "
                                               f"{cfg.max_mb:g} MB cap per paper (--max-mb): not kept"))
                    continue
                fh = tf.extractfile(member)
                try:
                    got = _store(iter(lambda: fh.read(_CHUNK), b""), file_stem(arxiv_id, version), cfg, None)
                    entry = writer.write(meta, arxiv_id, got.status, file=got.file, format=got.format,
                                         bytes=got.bytes, sha256=got.sha256, url=where, reason=got.reason)
                except (HTTPFailure, Retryable) as exc:
                    entry = writer.write(meta, arxiv_id, "failed", url=where, reason=str(exc))
                summary.count(entry)
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            summary.notes.append(f"{tar_path}: archive ends early or is corrupt ({exc}): the rest was not read")
    if bar is not None:
        bar.close()
    own = client is None
    client = client or PoliteClient(cfg.http)
    try:
        if metadata:
            _fill_metadata(cfg, client, summary)
    finally:
        if own:
            client.close()
    return _finish(summary, client, t0)


def _fill_metadata(cfg: DownloadConfig, client: PoliteClient, summary: DownloadSummary) -> None:
    """Titles and categories from the API for entries that have none (bulk imports): a new manifest line per id."""
    entries = read_manifest(cfg.out)
    missing = [(i, None) for i, e in entries.items() if e.get("status") in ("ok", "pdf-only", "no-source")
               and not e.get("categories")]
    if not missing:
        return
    try:
        found = lookup_ids(client, cfg.api_url, missing, notes=summary.notes)
    except (HTTPFailure, ValueError) as exc:
        summary.notes.append(f"metadata not fetched ({exc}): categories stay empty; run the same command again "
                             "to fill them in")
        return
    with ManifestWriter(cfg.out) as writer:
        for arxiv_id, _ in missing:
            meta = found.get(arxiv_id)
            if meta is None:
                continue
            old = dict(entries[arxiv_id])
            meta.version = old.get("version")       # the version in the tarball, not the newest one listed
            keep = {k: v for k, v in old.items() if k not in ("id", "status", "at", "version", "title", "categories",
                                                              "primary_category", "license", "published")}
            writer.write(meta, arxiv_id, old["status"], **keep)
    summary.notes.append(f"metadata from the API for {sum(1 for i, _ in missing if i in found)} of {len(missing)} "
                         "papers")


__all__ = ["DEFAULT_BASE_URL", "DEFAULT_API_URL", "DownloadConfig", "DownloadSummary", "MANIFEST_FILE",
           "download_ids", "download_category", "import_bulk", "fetch_papers", "bulk_member_id", "SourceCheck"]
