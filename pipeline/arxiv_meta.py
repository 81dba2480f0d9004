"""arXiv ids and the download folder's manifest: the one owner of `DIR/download-manifest.jsonl`.

A download folder (written by `pipeline.arxiv_download`) holds each paper's source as arXiv serves it
(`1801.03879v1.tar.gz`, `hep-th_9901001v2.gz`) next to `download-manifest.jsonl`, an append-only log with one
JSON line per outcome: {"id", "version", "status", "file", "format", "bytes", "sha256", "title", "categories",
"primary_category", "license", "content_type", "url", "reason", "attempts", "at"}. The last line of an id wins.
Statuses: "ok" (source saved), "pdf-only" and "no-source" (arXiv has no LaTeX for it: terminal, nothing saved),
"failed" (tried again on the next run; "reason" says why). Appending one line per outcome makes a run
resumable at any point: a cut last line is ignored, files are renamed into place before their line is written.

`expand_download_folders` + `DownloadedPapers.apply` are ingest's hook: a download folder given to
`topiceq ingest` is read as its papers, each with its primary arXiv category as `area`, its categories and its
arXiv id (the paper's identity). No network imports here: ingest workers import this module.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

MANIFEST_FILE = "download-manifest.jsonl"
PART_SUFFIX = ".part"                     # temporary names; never counted, removed at the start of a run
DONE_STATUSES = ("ok", "pdf-only", "no-source")

# New style (0704.0001 on): YYMM.NNNN(N); old style: archive[.SUBJ]/YYMMNNN. Optional version vN.
_NEW_ID = re.compile(r"^(\d{4}\.\d{4,5})(?:v(\d{1,4}))?$")
_OLD_ID = re.compile(r"^([a-z]+(?:-[a-z]+)*(?:\.[A-Z]{2})?)/(\d{7})(?:v(\d{1,4}))?$")
_ID_PREFIX = re.compile(r"^(?:arxiv:|https?://(?:export\.)?arxiv\.org/(?:abs|pdf|e-print|src)/)", re.I)


def parse_arxiv_id(text: str) -> tuple[str, int | None]:
    """`arXiv:1801.03879v2`, `1801.03879`, `hep-th/9901001v1`, `http://arxiv.org/abs/1801.03879v2` ->
    (id without version, version or None). Raises ValueError for anything else (so no id can name a path)."""
    raw = text.strip()
    s = _ID_PREFIX.sub("", raw)
    m = _NEW_ID.match(s)
    if m:
        return m.group(1), int(m.group(2)) if m.group(2) else None
    m = _OLD_ID.match(s)
    if m:
        return f"{m.group(1)}/{m.group(2)}", int(m.group(3)) if m.group(3) else None
    raise ValueError(f"{raw!r} is not an arXiv id: give e.g. 1801.03879, 1801.03879v2 or hep-th/9901001")


def versioned(arxiv_id: str, version: int | None) -> str:
    return f"{arxiv_id}v{version}" if version else arxiv_id


def file_stem(arxiv_id: str, version: int | None) -> str:
    """The file name (without suffix) a paper is saved under: `/` of old ids becomes `_` (ingest's
    `arxiv_id_from_name` reads both back). Only valid ids get here, so the name is one plain path part."""
    arxiv_id, _ = parse_arxiv_id(arxiv_id)
    return versioned(arxiv_id, version).replace("/", "_")


@dataclass
class PaperMeta:
    """What the arXiv API says about one paper."""
    id: str                                   # without version
    version: int | None = None
    title: str = ""
    categories: list[str] = field(default_factory=list)
    primary_category: str | None = None
    license: str | None = None                # None: the API did not report one
    published: str | None = None


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_manifest(out_dir: str | os.PathLike) -> dict[str, dict]:
    """id -> its latest manifest entry (empty when there is no manifest). Lines that do not parse (a run cut
    while writing its last line) are ignored."""
    path = Path(out_dir) / MANIFEST_FILE
    entries: dict[str, dict] = {}
    if not path.is_file():
        return entries
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(entry, dict) and isinstance(entry.get("id"), str):
                entries[entry["id"]] = entry
    return entries


def is_complete(out_dir: str | os.PathLike, entry: dict | None, version: int | None = None) -> bool:
    """True when `entry` needs no new download: a terminal status, and for "ok" its file is there with the
    recorded size. With `version`, only that version counts."""
    if not entry or entry.get("status") not in DONE_STATUSES:
        return False
    if version is not None and entry.get("version") not in (None, version):
        return False
    if entry["status"] != "ok":
        return True
    name = entry.get("file")
    if not isinstance(name, str) or not _plain_name(name):
        return False
    path = Path(out_dir) / name
    return path.is_file() and path.stat().st_size == entry.get("bytes")


def _plain_name(name: str) -> bool:
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")


class ManifestWriter:
    """Appends entries to `DIR/download-manifest.jsonl`, each flushed before the next paper, so a killed run
    loses nothing. Not fsynced (10 ms a line here): after a power cut the last lines may be gone, and their
    papers are fetched again; a file whose data was lost fails the size check in `is_complete`."""

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.path = Path(out_dir) / MANIFEST_FILE
        self._fh = open(self.path, "a", encoding="utf-8")
        if self._fh.tell():
            with open(self.path, "rb") as fh:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    self._fh.write("\n")  # a cut last line of an interrupted run stays a line of its own

    def write(self, meta: PaperMeta | None, arxiv_id: str, status: str, **fields) -> dict:
        entry = {**(asdict(meta) if meta else {"id": arxiv_id}), "id": arxiv_id, "status": status,
                 **fields, "at": now_iso()}
        self._fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self._fh.flush()
        return entry

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "ManifestWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def is_download_folder(path: str | os.PathLike) -> bool:
    return (Path(path) / MANIFEST_FILE).is_file()


# ----------------------------------------------------------------------------------------------- ingest hook

@dataclass
class DownloadedPapers:
    """Metadata of the papers in the download folders given to ingest, by file path and by arXiv id."""
    by_file: dict[str, dict] = field(default_factory=dict)
    by_id: dict[str, dict] = field(default_factory=dict)

    def apply(self, job) -> None:
        """Give a `pipeline.sources.PaperJob` read from a downloaded file its primary category as `area`, its
        categories and its arXiv id (the paper's identity). Jobs from elsewhere are left as they are."""
        entry = self.by_file.get(str(job.source))
        if entry is None and job.arxiv_id:
            entry = self.by_id.get(job.arxiv_id)
        if entry is None:
            return
        job.arxiv_id = entry["id"]
        if entry.get("categories"):
            job.categories = list(entry["categories"])
        area = entry.get("primary_category") or (entry.get("categories") or [None])[0]
        if area:
            job.area = area


def expand_download_folders(sources: Iterable[str | os.PathLike]) -> tuple[list[str], DownloadedPapers]:
    """Sources with every download folder replaced by the files in it (sorted; not the manifest, not
    temporary `.part` files), and the metadata of the files the manifest lists as "ok". Other sources pass
    through unchanged, so files a user added to a download folder are still read (with the folder's name as
    area)."""
    out: list[str] = []
    papers = DownloadedPapers()
    for src in sources:
        src = str(src)
        if not (Path(src).is_dir() and is_download_folder(src)):
            out.append(src)
            continue
        for entry in read_manifest(src).values():
            if entry.get("status") == "ok" and isinstance(entry.get("file"), str) and _plain_name(entry["file"]):
                papers.by_file[str(Path(src) / entry["file"])] = entry
                papers.by_id[entry["id"]] = entry
        for child in sorted(Path(src).iterdir()):
            if child.name == MANIFEST_FILE or child.name.endswith(PART_SUFFIX):
                continue
            out.append(str(child))
    return out, papers
