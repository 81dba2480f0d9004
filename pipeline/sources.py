"""Find papers in files, folders and archives, safely and in memory, and account for every input.

Every file is recognised by its content (`pipeline.archives.sniff`), not its name: gzip, bzip2 and xz (of a
tar or of one file), tar, zip, arXiv bulk tarballs (a tar of per-paper `.gz` files), LaTeX with or without
an extension, and unarXive JSONL. Archives are never extracted (see `pipeline.archives`).

`iter_jobs` yields `PaperJob`s (one per paper, with the raw texts of its files). It reports two things
through callbacks: `skip(label, reason)` for everything it could not read (an input, or a member of one),
and `account(input, status, reasons)` exactly once for every input (each file given, or found in a folder
given): "read", "partly_read" (with the reasons) or "skipped" (with the reasons). The heavy parsing happens
in `pipeline.ingest.process_job`.
"""
from __future__ import annotations

import io
import json
import os
import posixpath
import re
import stat
import zlib
import lzma
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from pipeline.archives import (ARCHIVES, COMPRESSED, HEAD_BYTES, STYLE_EXTENSIONS, TEX_EXTENSIONS, IngestLimits,
                               Member, Skip, TooLarge, decode_text, decompress, iter_tar, iter_zip, sniff)
from pipeline.paper_files import FileInfo, group_papers, scan_file

__all__ = ["IngestLimits", "PaperJob", "arxiv_id_from_name", "iter_jobs"]

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar", ".gz", ".bz2", ".xz",
                    ".zip")
_ARXIV_NEW = re.compile(r"^(?:arxiv[-_:])?(\d{4}\.\d{4,5})(?:v\d+)?$", re.I)
_ARXIV_OLD = re.compile(r"^(?:arxiv[-_:])?([a-z-]+(?:\.[a-z]{2})?)[/_]?(\d{7})(?:v\d+)?$", re.I)

Account = Callable[[str, str, list[str]], None]   # (input label, "read" | "partly_read" | "skipped", reasons)


@dataclass
class PaperJob:
    paper: str                           # paper id: arXiv id when known, else path under SOURCE w/o extension
    area: str
    source: str                          # input file / archive it came from (as given on the command line)
    root: str = ""                       # root file's path inside its container
    files: dict[str, str] = field(default_factory=dict)  # container path -> decoded raw text
    kind: str = "latex"                  # "latex" | "unarxive"
    payload: str = ""                    # the JSON line for unarXive papers
    categories: list[str] = field(default_factory=list)
    arxiv_id: str | None = None
    problems: list[str] = field(default_factory=list)     # partly-read notes found while gathering

    def size(self) -> int:
        return len(self.payload) + sum(len(t) for t in self.files.values())


def arxiv_id_from_name(name: str) -> str | None:
    """`1801.03879v2.tar.gz` -> `1801.03879`; `hep-th9901001.gz` -> `hep-th/9901001`; else None."""
    stem = strip_archive_suffix(posixpath.basename(name))
    stem = _strip_tex_ext(stem)
    m = _ARXIV_NEW.match(stem)
    if m:
        return m.group(1)
    m = _ARXIV_OLD.match(stem)
    if m and not stem.isdigit():
        return f"{m.group(1)}/{m.group(2)}"
    return None


def strip_archive_suffix(name: str) -> str:
    low = name.lower()
    for suf in ARCHIVE_SUFFIXES:
        if low.endswith(suf):
            return name[: -len(suf)]
    return name


def _strip_tex_ext(path: str) -> str:
    low = path.lower()
    for ext in TEX_EXTENSIONS:
        if low.endswith(ext):
            return path[: -len(ext)]
    return path


def not_latex_reason(name: str, kind: str) -> str:
    """Why a file of this kind is not read: what its name promised and what its bytes are."""
    if kind == "empty":
        return "empty file"
    low = name.lower()
    for suffix, what in ((".zip", "zip"), (".tar", "tar"), (".gz", "gzip"), (".tgz", "gzip"), (".bz2", "bzip2"),
                         (".xz", "xz")):
        if low.endswith(suffix) and kind not in ARCHIVES + COMPRESSED:
            return f"named {suffix} but is not {what} data (nor a tar or LaTeX): not read"
    if low.endswith(TEX_EXTENSIONS) and kind == "binary":
        return "binary data named like LaTeX: not read"
    return f"not LaTeX source ({kind}): not read"


def _is_unarxive_jsonl(name: str, head: bytes) -> bool:
    return name.lower().endswith(".jsonl") or (head.lstrip()[:1] == b"{" and (b'"body_text"' in head
                                                                                  or b'"paper_id"' in head))


# ----------------------------------------------------------------------------------------------- walking

@dataclass
class _Ctx:
    limits: IngestLimits
    report_skip: Skip
    account: Account
    used_ids: set[str]
    problems: list[str] = field(default_factory=list)   # reasons noted for the input being read

    def skip(self, label: str, reason: str) -> None:
        self.report_skip(label, reason)
        self.problems.append(reason if label.count(":") == 0 else f"{label.rsplit(':', 1)[-1]}: {reason}")


def unique_id(ctx: _Ctx, paper: str) -> str:
    if paper not in ctx.used_ids:
        ctx.used_ids.add(paper)
        return paper
    k = 2
    while f"{paper}~{k}" in ctx.used_ids:
        k += 1
    ctx.used_ids.add(f"{paper}~{k}")
    return f"{paper}~{k}"


def _accounted(ctx: _Ctx, label: str, jobs: Iterator[PaperJob]) -> Iterator[PaperJob]:
    """Yield `jobs` of one input, then account for that input from what it gave and what was noted."""
    start = len(ctx.problems)
    count = 0
    for job in jobs:
        count += 1
        yield job
    reasons = ctx.problems[start:]
    del ctx.problems[start:]
    if count:
        ctx.account(label, "partly_read" if reasons else "read", reasons)
    else:
        ctx.account(label, "skipped", reasons or ["no paper in it: not read"])


def iter_jobs(sources: list[str | Path], limits: IngestLimits, skip: Skip,
              account: Account | None = None) -> Iterator[PaperJob]:
    """Every paper of every SOURCE, in a deterministic order (sorted walk)."""
    ctx = _Ctx(limits=limits, report_skip=skip, account=account or (lambda *_: None), used_ids=set())
    for src in sources:
        src_path = Path(src)
        label = str(src)
        if src_path.is_symlink() and not src_path.exists():
            ctx.skip(label, "broken symlink: not read")
            ctx.account(label, "skipped", ctx.problems[-1:])
            ctx.problems.clear()
            continue
        if not src_path.exists():
            ctx.skip(label, "does not exist")
            ctx.account(label, "skipped", ctx.problems[-1:])
            ctx.problems.clear()
            continue
        if src_path.is_dir():
            yield from _jobs_from_folder(src_path, label, ctx)
        else:
            area = src_path.resolve().parent.name
            yield from _accounted(ctx, label, _jobs_from_file(src_path, src_path.name, label,
                                                             strip_archive_suffix(src_path.name), area, ctx))


def _jobs_from_file(path: Path, name: str, label: str, container_id: str, area: str,
                    ctx: _Ctx) -> Iterator[PaperJob]:
    """One file, whatever it holds (decided by its bytes)."""
    try:
        st = path.stat()
    except OSError as exc:
        ctx.skip(label, f"cannot stat: {exc}")
        return
    if not stat.S_ISREG(st.st_mode):
        ctx.skip(label, "not a regular file: not read")
        return
    try:
        with open(path, "rb") as fh:
            head = fh.read(HEAD_BYTES)
            kind = sniff(name, head)
            if kind == "text" and _is_unarxive_jsonl(name, head):
                yield from _jobs_from_jsonl(path, label, area, ctx)
                return
            if kind == "tar":  # streamed: a bulk tarball may be larger than memory
                fh.seek(0)
                yield from _jobs_from_members(iter_tar(fh, label, ctx.limits, ctx.skip), container_id, area,
                                              label, label, ctx, arxiv_id_from_name(name), 0)
                return
            if kind == "zip":
                if st.st_size > ctx.limits.max_archive_bytes:
                    ctx.skip(label, f"larger than {ctx.limits.max_archive_bytes // 2**20} MB: not read")
                    return
                fh.seek(0)
                yield from _jobs_from_members(iter_zip(fh, label, ctx.limits, ctx.skip), container_id, area,
                                              label, label, ctx, arxiv_id_from_name(name), 0)
                return
            cap = ctx.limits.max_archive_bytes if kind in COMPRESSED else ctx.limits.max_paper_bytes
            if st.st_size > cap:
                ctx.skip(label, f"larger than {cap // 2**20} MB: not read")
                return
            data = head + fh.read()
    except OSError as exc:
        ctx.skip(label, f"cannot read: {exc}")
        return
    yield from _jobs_from_bytes(data, name, _strip_tex_ext(container_id), area, label, ctx, label=label)


def _jobs_from_bytes(data: bytes, name: str, container_id: str, area: str, source: str, ctx: _Ctx,
                     depth: int = 0, label: str | None = None) -> Iterator[PaperJob]:
    """A file's bytes, decided by content: compressed (of a tar, a zip or one file), tar, zip, or LaTeX.
    `label`: how problems name it (default `source:name`, a member of `source`)."""
    label = label or (f"{source}:{name}" if name else source)
    arxiv_id = arxiv_id_from_name(name or source)
    kind = sniff(name, data[:HEAD_BYTES])
    if kind in COMPRESSED:
        try:
            data = decompress(data, kind, ctx.limits.max_archive_bytes)
        except TooLarge as exc:
            ctx.skip(label, f"{kind}: {exc} (decompression bomb?): not read")
            return
        except (zlib.error, EOFError, OSError, lzma.LZMAError) as exc:
            ctx.skip(label, f"corrupt or truncated {kind}: {exc}: not read")
            return
        if not data.strip():
            ctx.skip(label, "empty after decompression")
            return
        name = strip_archive_suffix(name)
        kind = sniff(name, data[:HEAD_BYTES])
        if kind in COMPRESSED:
            ctx.skip(label, f"{kind} inside compressed data: not read")
            return
    if kind == "tar":
        yield from _jobs_from_members(iter_tar(io.BytesIO(data), label, ctx.limits, ctx.skip), container_id, area,
                                      source, label, ctx, arxiv_id, depth)
        return
    if kind == "zip":
        yield from _jobs_from_members(iter_zip(io.BytesIO(data), label, ctx.limits, ctx.skip), container_id, area,
                                      source, label, ctx, arxiv_id, depth)
        return
    if kind not in ("latex", "text"):
        ctx.skip(label, not_latex_reason(name or source, kind))
        return
    if len(data) > ctx.limits.max_paper_bytes:
        ctx.skip(label, f"larger than {ctx.limits.max_paper_bytes // 2**20} MB: not read")
        return
    text = decode_text(data)
    if text is None:
        ctx.skip(label, not_latex_reason(name or source, "binary"))
        return
    if "\\" not in text:
        ctx.skip(label, not_latex_reason(name or source, "text without LaTeX commands")
                 if name.lower().endswith(ARCHIVE_SUFFIXES) else "no LaTeX commands in it: not read")
        return
    fname = posixpath.basename(name) or "main.tex"
    if not fname.lower().endswith(TEX_EXTENSIONS):
        fname = fname + ".tex"
    yield PaperJob(paper=unique_id(ctx, arxiv_id or container_id), area=area, source=source, root=fname,
                   files={fname: text}, arxiv_id=arxiv_id)


def _jobs_from_members(members: Iterator[Member], container_id: str, area: str, source: str, label: str,
                       ctx: _Ctx, arxiv_id: str | None, depth: int) -> Iterator[PaperJob]:
    """The papers of one archive (tar or zip): its LaTeX grouped into papers, nested archives (arXiv bulk
    tarballs) read as papers of their own; an archive that gives no paper is skipped with what it held."""
    files: dict[str, str] = {}
    latex: set[str] = set()
    other: Counter = Counter()
    total = 0
    nested_jobs = 0
    for m in members:
        shown = f"{label}:{m.path}"
        if m.kind in ARCHIVES or m.kind in COMPRESSED:
            if depth >= 1:
                ctx.skip(shown, "archive nested more than two levels: not read")
                continue
            nid = arxiv_id_from_name(m.path) or f"{container_id}/{strip_archive_suffix(m.path)}"
            for job in _jobs_from_bytes(m.data or b"", m.path, nid, area, source, ctx, depth + 1):
                nested_jobs += 1
                yield job
            continue
        if m.path.lower().endswith(ARCHIVE_SUFFIXES):  # named like an archive, but its bytes are not one
            ctx.skip(shown, not_latex_reason(m.path, m.kind))
            continue
        if m.data is None:
            other[m.kind] += 1
            if m.path.lower().endswith(TEX_EXTENSIONS):
                ctx.skip(shown, not_latex_reason(m.path, m.kind))
            continue
        total += len(m.data)
        if total > ctx.limits.max_paper_bytes * 4:
            ctx.skip(shown, "archive holds too much LaTeX: rest not read")
            break
        text = decode_text(m.data)
        if text is None:
            ctx.skip(shown, not_latex_reason(m.path, "empty" if not m.data.strip() else "binary"))
            continue
        files[m.path] = text
        if m.kind == "latex":
            latex.add(m.path)
    if latex:
        yield from _papers_from_container(files, latex, container_id, area, source, ctx, arxiv_id)
    elif not nested_jobs:
        other.update("style" if p.lower().endswith(STYLE_EXTENSIONS) else "text" for p in files)
        held = ", ".join(f"{n} {k}" for k, n in sorted(other.items())) or "nothing"
        ctx.skip(label, f"no LaTeX paper in it ({held}): not read")


def _papers_from_container(files: dict[str, str], latex: set[str], container_id: str, area: str, source: str,
                           ctx: _Ctx, arxiv_id: str | None) -> Iterator[PaperJob]:
    """Group the texts of one archive into papers (all in memory; the archive is already capped)."""
    infos = {p: scan_file(p, t) for p, t in files.items() if p in latex or p.lower().endswith(STYLE_EXTENSIONS)}
    groups = group_papers(infos, latex, set(files))
    for root, members in groups:
        pid = arxiv_id or container_id
        if len(groups) > 1:
            pid = f"{pid}/{_strip_tex_ext(root)}"
        yield PaperJob(paper=unique_id(ctx, pid), area=area, source=source, root=root,
                       files={m: files[m] for m in members if m in files}, arxiv_id=arxiv_id)


def _jobs_from_jsonl(path: Path, label: str, area: str, ctx: _Ctx) -> Iterator[PaperJob]:
    try:
        fh = open(path, "rb")
    except OSError as exc:
        ctx.skip(label, f"cannot open: {exc}")
        return
    with fh:
        for lineno, raw in enumerate(fh, 1):
            if len(raw) > ctx.limits.max_paper_bytes:
                ctx.skip(f"{label}:{lineno}", "JSON line larger than the paper limit: not read")
                continue
            line = raw.decode("utf-8", errors="replace").strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                ctx.skip(f"{label}:{lineno}", f"not JSON: {exc.msg}")
                continue
            if not isinstance(obj, dict) or "body_text" not in obj or "ref_entries" not in obj:
                ctx.skip(f"{label}:{lineno}", "JSON line is not an unarXive paper (no body_text/ref_entries)")
                continue
            meta = obj.get("metadata") or {}
            pid = str(obj.get("paper_id") or meta.get("id") or f"{Path(label).stem}:{lineno}")
            cats = str(meta.get("categories") or "").split()
            yield PaperJob(paper=unique_id(ctx, pid), area=cats[0] if cats else area, source=label,
                           kind="unarxive", payload=line, categories=cats, arxiv_id=pid)


def _area_for(rel_parts: tuple[str, ...], collections: set[str], fallback: str) -> str:
    """First folder under SOURCE, or the second when the first is a collection of area folders."""
    if len(rel_parts) <= 1:
        return fallback
    first = rel_parts[0]
    if first in collections and len(rel_parts) > 2:
        return rel_parts[1]
    return first


def find_collections(source: Path) -> set[str]:
    """First-level folders that hold only folders (and files that are not papers), some named like a folder of
    another first-level folder (e.g. `sample/astro-ph` and `demo/astro-ph`): their subfolders are the areas."""
    try:
        firsts = [p for p in sorted(source.iterdir()) if p.is_dir() and not p.is_symlink()]
    except OSError:
        return set()
    children: dict[str, set[str]] = {}
    only_dirs: dict[str, bool] = {}
    for d in firsts:
        try:
            entries = list(d.iterdir())
        except OSError:
            continue
        children[d.name] = {e.name for e in entries if e.is_dir() and not e.is_symlink()}
        only_dirs[d.name] = all(not (e.is_file() and _may_be_paper_name(e.name)) for e in entries)
    out = set()
    for name, kids in children.items():
        others = set().union(*(v for k, v in children.items() if k != name)) if len(children) > 1 else set()
        if only_dirs.get(name) and kids and kids & others:
            out.add(name)
    return out


def _may_be_paper_name(name: str) -> bool:
    low = name.lower()
    return low.endswith(TEX_EXTENSIONS) or low.endswith(ARCHIVE_SUFFIXES) or low.endswith(".jsonl")


@dataclass
class _FolderFile:
    rel: str
    path: Path
    kind: str


def _jobs_from_folder(root: Path, label: str, ctx: _Ctx) -> Iterator[PaperJob]:
    """Walk a folder (no symlinked folders followed; symlinked files only when they stay inside SOURCE).

    Every file is an input, sniffed by its first bytes. LaTeX files are grouped into papers over the whole
    folder; class, package and other text files join a paper that loads or inputs them. Two passes keep
    memory flat: the first reads each LaTeX file only to note roots, inputs and packages; the second re-reads
    one paper's files at a time. Archives and JSONL files are inputs of their own."""
    root_resolved = root.resolve()
    collections = find_collections(root)
    base = label.rstrip("/")
    tex: dict[str, _FolderFile] = {}
    support: dict[str, _FolderFile] = {}     # class/package files and other text, read when a paper uses them
    others: list[_FolderFile] = []

    def skipped(rel: str, reason: str) -> None:
        ctx.report_skip(f"{base}/{rel}", reason)
        ctx.account(f"{base}/{rel}", "skipped", [reason])

    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for fn in sorted(filenames) + sorted(d for d in dirnames if Path(dirpath, d).is_symlink()):
            p = Path(dirpath) / fn
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                try:
                    target = p.resolve(strict=True)
                except (OSError, RuntimeError):
                    skipped(rel, "broken symlink: not read")
                    continue
                if not target.is_relative_to(root_resolved):
                    skipped(rel, "symlink points outside SOURCE: not read")
                    continue
                if target.is_dir():
                    skipped(rel, "symlink to a folder: not followed")
                    continue
            try:
                mode = p.stat().st_mode
                if not stat.S_ISREG(mode):
                    skipped(rel, "not a regular file: not read")
                    continue
                with open(p, "rb") as fh:
                    head = fh.read(HEAD_BYTES)
            except OSError as exc:
                skipped(rel, f"cannot read: {exc}")
                continue
            kind = sniff(fn, head)
            entry = _FolderFile(rel, p, kind)
            if kind in ARCHIVES or kind in COMPRESSED or (kind == "text" and _is_unarxive_jsonl(fn, head)):
                others.append(entry)
            elif kind == "latex":
                tex[rel] = entry
            elif kind in ("style", "text"):
                support[rel] = entry
            else:
                skipped(rel, not_latex_reason(fn, kind))

    reasons: dict[str, list[str]] = {}

    def read_text(rel: str, p: Path) -> str | None:
        try:
            size = p.stat().st_size
            if size > ctx.limits.max_paper_bytes:
                reasons.setdefault(rel, []).append(f"larger than {ctx.limits.max_paper_bytes // 2**20} MB: not read")
                return None
            data = p.read_bytes()
        except OSError as exc:
            reasons.setdefault(rel, []).append(f"cannot read: {exc}")
            return None
        text = decode_text(data)
        if text is None:
            note = not_latex_reason(rel, "empty" if not data.strip() else "binary")
            if note not in reasons.setdefault(rel, []):
                reasons[rel].append(note)
        return text

    infos: dict[str, FileInfo] = {}
    for rel, f in list(tex.items()) + [(r, f) for r, f in support.items() if f.kind == "style"]:
        text = read_text(rel, f.path)
        if text is not None:
            infos[rel] = scan_file(rel, text)
    latex = {rel for rel in tex if rel in infos}
    groups = group_papers(infos, latex, latex | set(support))
    used: set[str] = set()
    order: list[tuple[str, object]] = [(r, (r, m)) for r, m in groups] + [(f.rel, f) for f in others]
    order.sort(key=lambda x: x[0])
    for _, item in order:
        if isinstance(item, _FolderFile):
            area = _area_for(tuple(item.rel.split("/")), collections, root_resolved.name)
            yield from _accounted(ctx, f"{base}/{item.rel}",
                                  _jobs_from_file(item.path, item.path.name, f"{base}/{item.rel}",
                                                  strip_archive_suffix(item.rel), area, ctx))
            continue
        r, members = item
        files: dict[str, str] = {}
        for m in members:
            f = tex.get(m) or support.get(m)
            if f is None or m in files:
                continue
            text = read_text(m, f.path)
            if text is not None:
                files[m] = text
        if r not in files:
            continue
        used.update(files)
        area = _area_for(tuple(r.split("/")), collections, root_resolved.name)
        pid = arxiv_id_from_name(r) or _strip_tex_ext(r)
        yield PaperJob(paper=unique_id(ctx, pid), area=area, source=f"{base}/{r}", root=r, files=files,
                       arxiv_id=arxiv_id_from_name(r))
    # every LaTeX, class, package and text file of the folder, in walk order: read by a paper, or why not
    for rel in sorted(set(tex) | set(support)):
        notes = reasons.get(rel, [])
        for reason in notes:
            ctx.report_skip(f"{base}/{rel}", reason)
        if rel in used:
            ctx.account(f"{base}/{rel}", "partly_read" if notes else "read", notes)
        elif notes:
            ctx.account(f"{base}/{rel}", "skipped", notes)
        elif rel in tex:
            skipped(rel, "LaTeX file of a paper whose root could not be read: not read")
        elif support[rel].kind == "style":
            skipped(rel, "class or package file that no paper loads: not read")
        else:
            skipped(rel, not_latex_reason(rel, "text"))
