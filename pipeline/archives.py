"""What a file is, by its bytes, and the members of tar and zip archives, read safely in memory.

`sniff(name, head)` says what the first bytes of a file are (gzip, bzip2, xz, zip, tar, PDF, an image, LaTeX,
other text, binary) whatever its name says. Archives are never extracted: members are read into memory with
per-member and per-archive byte caps; links, devices, encrypted members and absolute or `..` paths are
refused with a reason. tar and zip yield the same `Member`s, so everything above treats them alike.
"""
from __future__ import annotations

import bz2
import io
import lzma
import posixpath
import re
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from typing import Callable, Iterator

Skip = Callable[[str, str], None]   # (input label, reason)

HEAD_BYTES = 8192                   # what sniff() looks at
TEX_EXTENSIONS = (".tex", ".ltx", ".rnw", ".latex")
STYLE_EXTENSIONS = (".sty", ".cls")
# Text that is surely not LaTeX prose even when it holds `\documentclass` (a plotting script's preamble).
NOT_LATEX_EXTENSIONS = (".py", ".ipynb", ".md", ".rst", ".html", ".htm", ".xml", ".json", ".yml", ".yaml",
                        ".toml", ".cfg", ".ini", ".sh", ".bat", ".c", ".h", ".cpp", ".hpp", ".js", ".r", ".m",
                        ".jl", ".csv", ".tsv", ".dat", ".bib", ".bst", ".log", ".aux", ".bbl", ".blg", ".out",
                        ".toc", ".idx", ".ind", ".mk", ".svg", ".eps_tex")
COMPRESSED = ("gzip", "bzip2", "xz")
ARCHIVES = ("tar", "zip")
_LATEX_LINE_RE = re.compile(rb"(?m)^[ \t]*\\(?:documentclass|documentstyle|begin\s*\{|section|chapter|input|"
                            rb"include|newcommand|renewcommand|def\\|usepackage|title|author|maketitle)")
_IMAGE_MAGIC = ((b"\x89PNG", "PNG image"), (b"\xff\xd8\xff", "JPEG image"), (b"GIF8", "GIF image"),
                (b"II*\x00", "TIFF image"), (b"MM\x00*", "TIFF image"), (b"\xc5\xd0\xd3\xc6", "EPS image"))


@dataclass
class IngestLimits:
    max_paper_bytes: int = 50 * 2**20     # bytes of LaTeX per paper (and per archive member)
    max_archive_bytes: int = 400 * 2**20  # decompressed bytes streamed through one archive


class TooLarge(Exception):
    """More bytes than a cap allows (decompression bombs stop here)."""


def sniff(name: str, head: bytes) -> str:
    """The kind of a file from its first bytes: "gzip" | "bzip2" | "xz" | "zip" | "tar" | "empty" | "pdf" |
    "postscript" | "<X> image" | "latex" | "style" | "text" | "binary". The name only tells LaTeX from other
    text (a `.py` file that mentions `\\documentclass` is still a script)."""
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:3] == b"BZh":
        return "bzip2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if looks_like_tar(head):
        return "tar"
    if not head.strip():
        return "empty"
    if head[:5] == b"%PDF-":
        return "pdf"
    for magic, kind in _IMAGE_MAGIC:
        if head.startswith(magic):
            return kind
    if head[:4] == b"%!PS":
        return "postscript"
    if not is_text(head):
        return "binary"
    low = name.lower()
    if low.endswith(STYLE_EXTENSIONS):
        return "style"
    if low.endswith(TEX_EXTENSIONS):
        return "latex"
    if low.endswith(NOT_LATEX_EXTENSIONS):
        return "text"
    return "latex" if _LATEX_LINE_RE.search(head) else "text"


def is_text(data: bytes) -> bool:
    """Few control bytes: UTF-8 or latin-1 text (NULs from broken editors are tolerated)."""
    head = data[:65536]
    control = sum(1 for b in head if b < 9 or 13 < b < 32 and b != 27)
    return control <= max(8, len(head) // 50)


def decode_text(data: bytes) -> str | None:
    """UTF-8 (with BOM), else latin-1; None for binary data (many control bytes) or empty input."""
    if not data.strip() or not is_text(data):
        return None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return text.replace("\x00", "")


def looks_like_tar(data: bytes) -> bool:
    if len(data) >= 262 and data[257:262] == b"ustar":
        return True
    if len(data) < 512:
        return False
    try:  # old v7 tars have no magic: let tarfile parse (and checksum) the first header
        tarfile.TarInfo.frombuf(data[:512], "utf-8", "surrogateescape")
        return True
    except Exception:
        return False


def decompress(data: bytes, kind: str, cap: int) -> bytes:
    """gzip (all members), bzip2 or xz data into at most `cap` bytes; raises TooLarge, or
    zlib.error / OSError / EOFError / lzma.LZMAError for corrupt or truncated data."""
    if kind == "gzip":
        return _gunzip(data, cap)
    d = bz2.BZ2Decompressor() if kind == "bzip2" else lzma.LZMADecompressor()
    out = d.decompress(data, max_length=cap + 1)
    if len(out) > cap:
        raise TooLarge(f"more than {cap // 2**20} MB after decompression")
    if not d.eof:
        raise EOFError(f"truncated {kind} data")
    return out


def _gunzip(data: bytes, cap: int) -> bytes:
    out = []
    total = 0
    while data:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        while True:
            chunk = d.decompress(data, max(1, cap + 1 - total))
            out.append(chunk)
            total += len(chunk)
            if total > cap:
                raise TooLarge(f"more than {cap // 2**20} MB after decompression")
            if d.eof:
                data = d.unused_data
                break
            if not d.unconsumed_tail:
                raise EOFError("truncated gzip data")
            data = d.unconsumed_tail
        if data and not data.startswith(b"\x1f\x8b"):
            break  # trailing garbage after the last member is ignored, as gzip does
    return b"".join(out)


class CappedReader(io.RawIOBase):
    """Reads from `raw` but raises TooLarge after `cap` bytes (decompression bombs stop here)."""

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
            raise TooLarge(f"more than {self.cap // 2**20} MB decompressed")
        b[: len(data)] = data
        return len(data)


# ----------------------------------------------------------------------------------------------- members

@dataclass
class Member:
    path: str               # safe, normalised path inside the archive
    kind: str               # sniff() of its first bytes
    data: bytes | None      # whole content for LaTeX, style, text and archives; None for the rest
    size: int


def safe_member_path(name: str) -> str | None:
    """The member's path normalised, or None when it is absolute or leaves the archive."""
    name = name.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return None
    norm = posixpath.normpath(name[2:] if name.startswith("./") else name)
    if norm == ".." or norm.startswith("../") or "/../" in f"/{norm}/":
        return None
    return norm


def _keep_data(kind: str) -> bool:
    return kind in ("latex", "style", "text") or kind in COMPRESSED or kind in ARCHIVES


def _is_resource_fork(path: str) -> bool:
    return posixpath.basename(path).startswith("._") or "__MACOSX/" in path


def iter_tar(fileobj, label: str, limits: IngestLimits, skip: Skip) -> Iterator[Member]:
    """Stream a tar (`r|*`, any compression), yielding its regular members; unsafe members are skipped with
    a reason. Truncation or corruption ends the stream with a reason (what was read is kept)."""
    capped = io.BufferedReader(CappedReader(fileobj, limits.max_archive_bytes), 1 << 16)
    try:
        tf = tarfile.open(fileobj=capped, mode="r|*")
    except (tarfile.TarError, OSError, EOFError, zlib.error, TooLarge) as exc:
        skip(label, f"not a readable tar archive: {exc}")
        return
    try:
        for info in tf:
            if not info.isfile():
                kind = ("symlink" if info.issym() else "hard link" if info.islnk() else
                        "device" if (info.ischr() or info.isblk() or info.isfifo()) else
                        "directory" if info.isdir() else "special file")
                if kind != "directory":
                    skip(f"{label}:{info.name}", f"tar member is a {kind}: not read")
                continue
            path = safe_member_path(info.name)
            if path is None:
                skip(f"{label}:{info.name}", "tar member path is absolute or leaves the archive: not read")
                continue
            if _is_resource_fork(path):
                continue  # macOS resource forks (AppleDouble), not LaTeX
            f = tf.extractfile(info)
            if f is None:
                continue
            member = _read_member(f, path, info.size, f"{label}:{info.name}", limits, skip, "tar")
            if member is not None:
                yield member
    except TooLarge as exc:
        skip(label, f"archive stopped: {exc} (decompression bomb?); partly read")
    except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
        skip(label, f"archive truncated or corrupt: {exc}; partly read")


def iter_zip(fileobj, label: str, limits: IngestLimits, skip: Skip) -> Iterator[Member]:
    """The regular members of a zip file (seekable `fileobj`), with the same caps and refusals as tar."""
    try:
        zf = zipfile.ZipFile(fileobj)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        skip(label, f"not a readable zip archive: {exc}")
        return
    total = 0
    with zf:
        for info in zf.infolist():
            mode = info.external_attr >> 16
            shown = f"{label}:{info.filename}"
            if info.is_dir() or stat.S_ISDIR(mode):
                continue
            if stat.S_ISLNK(mode):
                skip(shown, "zip member is a symlink: not read")
                continue
            if stat.S_IFMT(mode) and not stat.S_ISREG(mode):  # no type bits: a plain file (DOS zips, zipfile)
                skip(shown, "zip member is a special file: not read")
                continue
            path = safe_member_path(info.filename)
            if path is None:
                skip(shown, "zip member path is absolute or leaves the archive: not read")
                continue
            if _is_resource_fork(path):
                continue
            if info.flag_bits & 0x1:
                skip(shown, "zip member is encrypted: not read")
                continue
            if total + info.file_size > limits.max_archive_bytes:
                skip(label, f"archive stopped: more than {limits.max_archive_bytes // 2**20} MB decompressed "
                            "(decompression bomb?); partly read")
                return
            try:
                with zf.open(info) as f:
                    member = _read_member(f, path, info.file_size, shown, limits, skip, "zip")
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError, RuntimeError) as exc:
                skip(shown, f"zip member corrupt or unsupported: {exc}: not read")
                continue
            if member is None:
                continue
            total += member.size if member.data is None else len(member.data)
            yield member


def _read_member(f, path: str, size: int, shown: str, limits: IngestLimits, skip: Skip, what: str
                 ) -> Member | None:
    """Sniff the member's head; read the rest only for what may be LaTeX or an archive (within the cap)."""
    head = f.read(HEAD_BYTES)
    kind = sniff(path, head)
    if not _keep_data(kind):
        return Member(path, kind, None, size)
    cap = limits.max_paper_bytes
    if size > cap:
        skip(shown, f"member larger than {cap // 2**20} MB: not read")
        return None
    data = head + f.read(cap + 1 - len(head))
    if len(data) > cap:
        skip(shown, f"member larger than {cap // 2**20} MB: not read")
        return None
    if len(data) < size:
        skip(shown, f"{what} member truncated: partly read")
    return Member(path, kind, data, size)
