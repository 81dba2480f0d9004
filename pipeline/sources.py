"""Find papers in files, folders and archives, safely and in memory.

Inputs: `.tex`/`.ltx`/`.Rnw`; `.gz` (gzipped file or gzipped tar, decided by content); `.tar`, `.tar.gz`,
`.tgz`; arXiv bulk tarballs (a tar of per-paper `.gz` files); unarXive JSONL. Archives are never extracted:
members are read into memory with a byte cap, and links, devices, absolute or `..` paths are refused.

`iter_jobs` yields `PaperJob`s (one per paper, with the raw texts of its files) and reports what it skipped
through a callback; the heavy parsing happens in `pipeline.ingest.process_job`.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import posixpath
import re
import stat
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from pipeline.latex_clean import clean_source

TEX_EXTENSIONS = (".tex", ".ltx", ".rnw")
STY_EXTENSIONS = (".sty",)
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".gz")
JSONL_EXTENSIONS = (".jsonl",)

_ARXIV_NEW = re.compile(r"^(?:arxiv[-_:])?(\d{4}\.\d{4,5})(?:v\d+)?$", re.I)
_ARXIV_OLD = re.compile(r"^(?:arxiv[-_:])?([a-z-]+(?:\.[a-z]{2})?)[/_]?(\d{7})(?:v\d+)?$", re.I)
_INPUT_RE = re.compile(r"\\(input|include|subfile|subfileinclude)(?![a-zA-Z@])\s*(?:\{([^{}\n]{1,300})\}|"
                       r"([^\s{}\\%]{1,300}))")
_USEPACKAGE_RE = re.compile(r"\\(?:usepackage|RequirePackage)\s*(?:\[[^\]]{0,300}\])?\s*\{([^{}]{1,300})\}")
_DOCCLASS_RE = re.compile(r"\\documentclass\s*(?:\[([^\]]{0,300})\])?\s*\{\s*([^{}\s]{1,100})\s*\}")


Skip = Callable[[str, str], None]   # (input label, reason)


@dataclass
class IngestLimits:
    max_paper_bytes: int = 50 * 2**20     # bytes of LaTeX per paper (and per archive member)
    max_archive_bytes: int = 400 * 2**20  # decompressed bytes streamed through one archive


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
    for ext in TEX_EXTENSIONS:
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
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


def decode_text(data: bytes) -> str | None:
    """UTF-8 (with BOM), else latin-1; None for binary data (many control bytes) or empty input."""
    if not data.strip():
        return None
    head = data[:65536]
    control = sum(1 for b in head if b < 9 or 13 < b < 32 and b != 27)
    if control > max(8, len(head) // 50):
        return None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return text.replace("\x00", "")


def _is_tex_name(name: str) -> bool:
    return name.lower().endswith(TEX_EXTENSIONS)


# ----------------------------------------------------------------------------------------------- grouping

@dataclass
class _FileInfo:
    path: str
    is_root: bool
    is_subfile: bool
    refs: list[str]
    packages: list[str]


def _scan_file(path: str, text: str) -> _FileInfo:
    cleaned, _ = clean_source(text, rnw=path.lower().endswith(".rnw"))
    dc = _DOCCLASS_RE.search(cleaned)
    is_subfile = bool(dc and dc.group(2) == "subfiles")
    refs = [(m.group(2) or m.group(3) or "").strip() for m in _INPUT_RE.finditer(cleaned)]
    packages = []
    for m in _USEPACKAGE_RE.finditer(cleaned):
        packages.extend(p.strip() for p in m.group(1).split(",") if p.strip())
    return _FileInfo(path, bool(dc) and not is_subfile, is_subfile, [r for r in refs if r], packages)


def resolve_ref(ref: str, including: str, root: str, known: set[str]) -> str | None:
    """Path of the file `\\input{ref}` means, among `known` container paths (relative to the root, then to
    the including file), or None. Never leaves the container."""
    ref = ref.strip().strip('"')
    if not ref or ref.startswith("/"):
        return None
    for base in (posixpath.dirname(root), posixpath.dirname(including)):
        p = posixpath.normpath(posixpath.join(base, ref)) if base else posixpath.normpath(ref)
        if p.startswith("../") or p == "..":
            continue
        for cand in (p, p + ".tex", p + ".ltx", p + ".Rnw"):
            if cand in known:
                return cand
    return None


def resolve_package(name: str, including: str, known: set[str]) -> str | None:
    for base in ("", posixpath.dirname(including)):
        p = posixpath.normpath(posixpath.join(base, name + ".sty")) if base else name + ".sty"
        if p in known:
            return p
    return None


def group_papers(infos: dict[str, _FileInfo], known: set[str]) -> list[tuple[str, list[str]]]:
    """[(root path, [member paths reachable through \\input/\\include/\\subfile and local .sty])], sorted.

    Roots are files with `\\documentclass` (not `subfiles`); a file that no other file reaches is a paper of
    its own; files only reached from inside a cycle are picked up at the end so nothing is lost."""
    tex = sorted(p for p in infos if _is_tex_name(p))

    def reach(start: str) -> list[str]:
        seen = [start]
        stack = [start]
        while stack:
            cur = stack.pop()
            info = infos.get(cur)
            if info is None:
                continue
            for ref in info.refs:
                tgt = resolve_ref(ref, cur, start, known)
                if tgt and tgt not in seen:
                    seen.append(tgt)
                    stack.append(tgt)
            for pkg in info.packages:
                tgt = resolve_package(pkg, cur, known)
                if tgt and tgt not in seen:
                    seen.append(tgt)
        return seen

    reached_by_other: set[str] = set()
    for p in tex:
        for r in reach(p)[1:]:
            reached_by_other.add(r)
    papers = []
    covered: set[str] = set()
    for p in tex:
        if infos[p].is_root or p not in reached_by_other:
            members = reach(p)
            papers.append((p, members))
            covered.update(members)
    for p in tex:  # files only reachable from a cycle of non-roots
        if p not in covered:
            members = reach(p)
            papers.append((p, members))
            covered.update(members)
    return papers


# ----------------------------------------------------------------------------------------------- archives

class _CappedReader(io.RawIOBase):
    """Reads from `raw` but raises after `cap` bytes (decompression bombs stop here)."""

    def __init__(self, raw, cap: int) -> None:
        self.raw = raw
        self.cap = cap
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self.raw.read(len(b))
        self.count += len(data)
        if self.count > self.cap:
            raise _TooLarge(f"more than {self.cap // 2**20} MB decompressed")
        b[: len(data)] = data
        return len(data)


class _TooLarge(Exception):
    pass


def gunzip_capped(data: bytes, cap: int) -> bytes:
    """Decompress gzip data (all members) into at most `cap` bytes; raises _TooLarge / zlib.error / EOFError."""
    out = []
    total = 0
    while data:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        while True:
            chunk = d.decompress(data, max(1, cap + 1 - total))
            out.append(chunk)
            total += len(chunk)
            if total > cap:
                raise _TooLarge(f"more than {cap // 2**20} MB after decompression")
            if d.eof:
                data = d.unused_data
                break
            if not d.unconsumed_tail:
                raise EOFError("truncated gzip data")
            data = d.unconsumed_tail
        if data and not data.startswith(b"\x1f\x8b"):
            break  # trailing garbage after the last member is ignored, as gzip does
    return b"".join(out)


def _looks_like_tar(data: bytes) -> bool:
    if len(data) >= 262 and data[257:262] == b"ustar":
        return True
    if len(data) < 512:
        return False
    try:  # old v7 tars have no magic: let tarfile parse the first header
        with tarfile.open(fileobj=io.BytesIO(data[:10240]), mode="r:") as tf:
            return tf.next() is not None
    except Exception:
        return False


def _read_tar_members(fileobj, label: str, limits: IngestLimits, skip: Skip,
                      want: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
    """Stream a tar (`r|*`), yielding (safe member path, bytes) for wanted regular files; unsafe members are
    skipped with a reason. Truncation/corruption ends the stream with a reason (what was read is kept)."""
    try:
        tf = tarfile.open(fileobj=fileobj, mode="r|*")
    except (tarfile.TarError, OSError, EOFError, zlib.error, _TooLarge) as exc:
        skip(label, f"not a readable tar archive: {exc}")
        return
    try:
        for member in tf:
            name = member.name
            base = posixpath.basename(name)
            if not (member.isfile()):
                kind = ("symlink" if member.issym() else "hard link" if member.islnk() else
                        "device" if (member.ischr() or member.isblk() or member.isfifo()) else
                        "directory" if member.isdir() else "special file")
                if kind != "directory" and want(name):
                    skip(f"{label}:{name}", f"tar member is a {kind}: not read")
                elif kind in ("symlink", "hard link", "device"):
                    skip(f"{label}:{name}", f"tar member is a {kind}: not read")
                continue
            norm = posixpath.normpath(name.lstrip("./") if name.startswith("./") else name)
            if name.startswith("/") or norm.startswith("..") or "/../" in f"/{norm}/" or re.match(r"^[A-Za-z]:", name):
                skip(f"{label}:{name}", "tar member path is absolute or leaves the archive: not read")
                continue
            if base.startswith("._") or "__MACOSX/" in name:
                continue  # macOS resource forks (AppleDouble), not LaTeX
            if not want(norm):
                continue
            if member.size > limits.max_paper_bytes:
                skip(f"{label}:{name}", f"member larger than {limits.max_paper_bytes // 2**20} MB: not read")
                continue
            f = tf.extractfile(member)
            if f is None:
                continue
            data = f.read(limits.max_paper_bytes + 1)
            if len(data) < member.size:
                skip(f"{label}:{name}", "tar member truncated: partly read")
            yield norm, data
    except _TooLarge as exc:
        skip(label, f"archive stopped: {exc} (decompression bomb?); partly read")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        skip(label, f"archive truncated or corrupt: {exc}; partly read")


def _wanted_member(name: str) -> bool:
    low = name.lower()
    return low.endswith(TEX_EXTENSIONS + STY_EXTENSIONS) or low.endswith(ARCHIVE_SUFFIXES)


# ----------------------------------------------------------------------------------------------- walking

@dataclass
class _Ctx:
    limits: IngestLimits
    skip: Skip
    used_ids: set[str]
    sources_root: Path | None = None


def unique_id(ctx: _Ctx, paper: str) -> str:
    if paper not in ctx.used_ids:
        ctx.used_ids.add(paper)
        return paper
    k = 2
    while f"{paper}~{k}" in ctx.used_ids:
        k += 1
    ctx.used_ids.add(f"{paper}~{k}")
    return f"{paper}~{k}"


def _papers_from_container(files: dict[str, str], container_id: str, single_id: bool, area: str, source: str,
                           ctx: _Ctx, arxiv_id: str | None) -> Iterator[PaperJob]:
    """Group the texts of one archive into papers (all in memory; the archive is already capped)."""
    infos = {p: _scan_file(p, t) for p, t in files.items()}
    known = set(files)
    groups = group_papers(infos, known)
    for root, members in groups:
        if single_id and len(groups) == 1:
            pid = arxiv_id or container_id
        else:
            pid = f"{arxiv_id or container_id}/{_strip_tex_ext(root)}"
        yield PaperJob(paper=unique_id(ctx, pid), area=area, source=source, root=root,
                       files={m: files[m] for m in members if m in files}, arxiv_id=arxiv_id)


def _strip_tex_ext(path: str) -> str:
    low = path.lower()
    for ext in TEX_EXTENSIONS:
        if low.endswith(ext):
            return path[: -len(ext)]
    return path


def _jobs_from_bytes(data: bytes, name: str, container_id: str, area: str, source: str, ctx: _Ctx,
                     depth: int = 0) -> Iterator[PaperJob]:
    """A file's bytes, decided by content: gzip (of a tar or of one file), tar, or LaTeX text."""
    label = source if name == source else f"{source}:{name}" if name else source
    arxiv_id = arxiv_id_from_name(name or source)
    if data[:2] == b"\x1f\x8b":
        try:
            data = gunzip_capped(data, ctx.limits.max_archive_bytes)
        except _TooLarge as exc:
            ctx.skip(label, f"gzip: {exc} (decompression bomb?): not read")
            return
        except (zlib.error, EOFError, OSError) as exc:
            ctx.skip(label, f"corrupt or truncated gzip: {exc}: not read")
            return
        if not data:
            ctx.skip(label, "empty after decompression")
            return
        inner = strip_archive_suffix(name)
        yield from _jobs_from_decoded(data, inner, container_id, area, source, label, ctx, arxiv_id, depth)
        return
    if name.lower().endswith((".gz", ".tgz")):
        if _looks_like_tar(data):
            yield from _jobs_from_decoded(data, name, container_id, area, source, label, ctx, arxiv_id, depth)
            return
        text_guess = decode_text(data[:4096])
        if text_guess is None or "\\" not in data[:65536].decode("latin-1"):
            ctx.skip(label, "named .gz but is not gzip data (nor a tar or LaTeX): not read")
            return
    yield from _jobs_from_decoded(data, name, container_id, area, source, label, ctx, arxiv_id, depth)


def _jobs_from_decoded(data: bytes, name: str, container_id: str, area: str, source: str, label: str,
                       ctx: _Ctx, arxiv_id: str | None, depth: int) -> Iterator[PaperJob]:
    if _looks_like_tar(data):
        yield from _jobs_from_tar(io.BytesIO(data), container_id, area, source, label, ctx, arxiv_id, depth)
        return
    if len(data) > ctx.limits.max_paper_bytes:
        ctx.skip(label, f"larger than {ctx.limits.max_paper_bytes // 2**20} MB: not read")
        return
    text = decode_text(data)
    if text is None:
        ctx.skip(label, "empty" if not data.strip() else "binary data, not LaTeX: not read")
        return
    if "\\" not in text:
        ctx.skip(label, "no LaTeX commands in it: not read")
        return
    fname = posixpath.basename(name) or "main.tex"
    if not _is_tex_name(fname):
        fname = fname + ".tex"
    yield PaperJob(paper=unique_id(ctx, arxiv_id or container_id), area=area, source=source, root=fname,
                   files={fname: text}, arxiv_id=arxiv_id)


def _jobs_from_tar(fileobj, container_id: str, area: str, source: str, label: str, ctx: _Ctx,
                   arxiv_id: str | None, depth: int) -> Iterator[PaperJob]:
    files: dict[str, str] = {}
    nested: list[tuple[str, bytes]] = []
    total = 0
    capped = _CappedReader(fileobj, ctx.limits.max_archive_bytes)
    for path, data in _read_tar_members(io.BufferedReader(capped, 1 << 16), label, ctx.limits, ctx.skip,
                                        _wanted_member):
        low = path.lower()
        if low.endswith(ARCHIVE_SUFFIXES) and not low.endswith(TEX_EXTENSIONS):
            if depth >= 1:
                ctx.skip(f"{label}:{path}", "archive nested more than two levels: not read")
                continue
            # arXiv bulk tarball: a tar of per-paper .gz files; each becomes its own paper(s)
            nested.append((path, data))
            if len(nested) >= 1:
                for npath, ndata in nested:
                    nid = arxiv_id_from_name(npath) or f"{container_id}/{strip_archive_suffix(npath)}"
                    yield from _jobs_from_bytes(ndata, npath, nid, area, source, ctx, depth + 1)
                nested.clear()
            continue
        total += len(data)
        if total > ctx.limits.max_paper_bytes * 4:
            ctx.skip(f"{label}:{path}", "archive holds too much LaTeX: rest not read")
            break
        text = decode_text(data)
        if text is None:
            ctx.skip(f"{label}:{path}", "empty" if not data.strip() else "binary data named like LaTeX: not read")
            continue
        files[path] = text
    if files:
        yield from _papers_from_container(files, container_id, True, area, source, ctx, arxiv_id)


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
    """First-level folders that hold only folders, some named like a folder of another first-level folder
    (e.g. `sample/astro-ph` and `demo/astro-ph`): their subfolders are the areas."""
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
        only_dirs[d.name] = all(not (e.is_file() and _is_input_name(e.name)) for e in entries)
    out = set()
    for name, kids in children.items():
        others = set().union(*(v for k, v in children.items() if k != name)) if len(children) > 1 else set()
        if only_dirs.get(name) and kids and kids & others:
            out.add(name)
    return out


def _is_input_name(name: str) -> bool:
    low = name.lower()
    return low.endswith(TEX_EXTENSIONS) or low.endswith(ARCHIVE_SUFFIXES) or low.endswith(JSONL_EXTENSIONS)


def iter_jobs(sources: list[str | Path], limits: IngestLimits, skip: Skip) -> Iterator[PaperJob]:
    """Every paper of every SOURCE, in a deterministic order (sorted walk)."""
    ctx = _Ctx(limits=limits, skip=skip, used_ids=set())
    for src in sources:
        src_path = Path(src)
        label = str(src)
        if src_path.is_symlink() and not src_path.exists():
            skip(label, "broken symlink: not read")
            continue
        if not src_path.exists():
            skip(label, "does not exist")
            continue
        if src_path.is_dir():
            yield from _jobs_from_folder(src_path, label, ctx)
        elif src_path.is_file():
            area = src_path.resolve().parent.name
            yield from _jobs_from_file(src_path, src_path.name, label, strip_archive_suffix(src_path.name),
                                       area, ctx)
        else:
            skip(label, "not a regular file or folder: not read")


def _jobs_from_file(path: Path, name: str, label: str, container_id: str, area: str,
                    ctx: _Ctx) -> Iterator[PaperJob]:
    low = name.lower()
    if low.endswith(JSONL_EXTENSIONS):
        yield from _jobs_from_jsonl(path, label, area, ctx)
        return
    if _is_tex_name(low):
        # a lone LaTeX file: read it as a folder of one
        container_id = _strip_tex_ext(container_id)
    try:
        st = path.stat()
    except OSError as exc:
        ctx.skip(label, f"cannot stat: {exc}")
        return
    if not stat.S_ISREG(st.st_mode):
        ctx.skip(label, "not a regular file: not read")
        return
    if low.endswith((".tar",)):
        try:
            with open(path, "rb") as fh:
                yield from _jobs_from_tar(fh, container_id, area, label, label, ctx, arxiv_id_from_name(name), 0)
        except OSError as exc:
            ctx.skip(label, f"cannot read: {exc}")
        return
    cap = ctx.limits.max_archive_bytes if low.endswith(ARCHIVE_SUFFIXES) else ctx.limits.max_paper_bytes
    if st.st_size > cap:
        ctx.skip(label, f"larger than {cap // 2**20} MB: not read")
        return
    try:
        data = path.read_bytes()
    except OSError as exc:
        ctx.skip(label, f"cannot read: {exc}")
        return
    if not data.strip():
        ctx.skip(label, "empty file")
        return
    yield from _jobs_from_bytes(data, name, container_id, area, label, ctx)


def _jobs_from_folder(root: Path, label: str, ctx: _Ctx) -> Iterator[PaperJob]:
    """Walk a folder (no symlinked folders followed; symlinked files only when they stay inside SOURCE).

    LaTeX files are grouped into papers over the whole folder. Two passes keep memory flat: the first reads
    each file only to note roots, `\\input`s and packages; the second re-reads one paper's files at a time."""
    root_resolved = root.resolve()
    collections = find_collections(root)
    tex_files: dict[str, Path] = {}
    sty_files: dict[str, Path] = {}
    others: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for fn in sorted(filenames) + sorted(d for d in dirnames if Path(dirpath, d).is_symlink()):
            p = Path(dirpath) / fn
            rel = p.relative_to(root).as_posix()
            if not _is_input_name(fn) and not fn.lower().endswith(STY_EXTENSIONS):
                continue
            shown = f"{label.rstrip('/')}/{rel}"
            if p.is_symlink():
                try:
                    target = p.resolve(strict=True)
                except (OSError, RuntimeError):
                    ctx.skip(shown, "broken symlink: not read")
                    continue
                if not target.is_relative_to(root_resolved):
                    ctx.skip(shown, "symlink points outside SOURCE: not read")
                    continue
                if target.is_dir():
                    ctx.skip(shown, "symlink to a folder: not followed")
                    continue
            if p.is_dir():
                continue  # a folder named like `x.tex` is walked as a folder
            try:
                mode = p.stat().st_mode
            except OSError as exc:
                ctx.skip(shown, f"cannot stat: {exc}")
                continue
            if not stat.S_ISREG(mode):
                ctx.skip(shown, "not a regular file: not read")
                continue
            low = fn.lower()
            if _is_tex_name(low):
                tex_files[rel] = p
            elif low.endswith(STY_EXTENSIONS):
                sty_files[rel] = p
            else:
                others.append((rel, p))
        # folders named like inputs (`x.tex/`) are walked as folders by os.walk itself

    def read_text(rel: str, p: Path) -> str | None:
        shown = f"{label.rstrip('/')}/{rel}"
        try:
            size = p.stat().st_size
            if size > ctx.limits.max_paper_bytes:
                ctx.skip(shown, f"larger than {ctx.limits.max_paper_bytes // 2**20} MB: not read")
                return None
            data = p.read_bytes()
        except OSError as exc:
            ctx.skip(shown, f"cannot read: {exc}")
            return None
        text = decode_text(data)
        if text is None:
            ctx.skip(shown, "empty file" if not data.strip() else "binary data named like LaTeX: not read")
        return text

    infos: dict[str, _FileInfo] = {}
    for rel, p in tex_files.items():
        text = read_text(rel, p)
        if text is not None:
            infos[rel] = _scan_file(rel, text)
    known = set(infos) | set(sty_files)
    groups = group_papers(infos, known)
    jobs_in_order: list[tuple[str, object]] = [(r, ("tex", r, m)) for r, m in groups]
    jobs_in_order += [(rel, ("other", rel, p)) for rel, p in others]
    jobs_in_order.sort(key=lambda x: x[0])
    for _, item in jobs_in_order:
        if item[0] == "tex":
            _, r, members = item
            files: dict[str, str] = {}
            for m in members:
                p = tex_files.get(m) or sty_files.get(m)
                if p is None:
                    continue
                text = read_text(m, p) if m not in files else files[m]
                if text is not None:
                    files[m] = text
            if r not in files:
                continue
            parts = tuple(r.split("/"))
            area = _area_for(parts, collections, root_resolved.name)
            pid = arxiv_id_from_name(r) or _strip_tex_ext(r)
            yield PaperJob(paper=unique_id(ctx, pid), area=area, source=f"{label.rstrip('/')}/{r}", root=r,
                           files=files, arxiv_id=arxiv_id_from_name(r))
        else:
            _, rel, p = item
            parts = tuple(rel.split("/"))
            area = _area_for(parts, collections, root_resolved.name)
            yield from _jobs_from_file(p, p.name, f"{label.rstrip('/')}/{rel}", strip_archive_suffix(rel), area,
                                       ctx)


# ----------------------------------------------------------------------------------------------- one paper

_BEGIN_DOC = "\\begin{document}"
_END_DOC = "\\end{document}"


def flatten_paper(job: PaperJob, max_bytes: int, max_depth: int = 20) -> tuple[str, str, list[str]]:
    """The paper as one text: comments etc. removed, `\\input`/`\\include`/`\\subfile` inlined (cycles and
    missing targets noted), cut at `\\end{document}`. Returns (document, text of local .sty files, problems)."""
    problems: list[str] = []
    cleaned: dict[str, str] = {}
    for path, text in job.files.items():
        c, probs = clean_source(text, rnw=path.lower().endswith(".rnw"))
        cleaned[path] = c
        problems.extend(f"{path}: {p}" for p in probs)
    known = set(cleaned)
    sty_text = "\n".join(t for p, t in cleaned.items() if p.lower().endswith(STY_EXTENSIONS))
    out: list[str] = []
    total = 0
    stopped = False

    def emit(s: str) -> None:
        nonlocal total, stopped
        if stopped:
            return
        if total + len(s) > max_bytes:
            s = s[: max(0, max_bytes - total)]
            stopped = True
            problems.append(f"paper larger than {max_bytes // 2**20} MB: partly read")
        out.append(s)
        total += len(s)

    def inline(path: str, stack: list[str]) -> None:
        text = cleaned[path]
        if path != job.root:
            b = text.find(_BEGIN_DOC)
            if b != -1:  # a subfile: only its body belongs to the paper
                e = text.find(_END_DOC, b)
                text = text[b + len(_BEGIN_DOC): e if e != -1 else len(text)]
        pos = 0
        for m in _INPUT_RE.finditer(text):
            if stopped:
                return
            emit(text[pos:m.start()])
            pos = m.end()
            ref = (m.group(2) or m.group(3) or "").strip()
            tgt = resolve_ref(ref, path, job.root, known)
            if tgt is None:
                if not ref.lower().endswith((".pdf_tex", ".pgf", ".tikz", ".bbl")):
                    problems.append(f"missing \\{m.group(1)} target {ref!r} in {path}")
                emit(" ")
            elif tgt in stack:
                problems.append(f"recursive \\{m.group(1)}{{{ref}}} in {path}: not inlined again")
                emit(" ")
            elif len(stack) >= max_depth:
                problems.append(f"\\input nested deeper than {max_depth} in {path}")
                emit(" ")
            else:
                emit("\n")
                inline(tgt, stack + [tgt])
                emit("\n")
        emit(text[pos:])

    if job.root in cleaned:
        inline(job.root, [job.root])
    doc = "".join(out)
    b = doc.find(_BEGIN_DOC)
    e = doc.find(_END_DOC, b if b != -1 else 0)
    if e != -1:
        doc = doc[:e]
    return doc, sty_text, problems
