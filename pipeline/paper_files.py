"""Which files make one paper, and that paper as one text.

A paper is a root LaTeX file plus what it reaches: `\\input`/`\\include`/`\\subfile` targets (any text file)
and the paper's own class and packages (`\\documentclass{x}` -> `x.cls`, `\\usepackage{y}` -> `y.sty`, also
from inside those files). `group_papers` finds the papers among a container's files (a folder or an archive);
`flatten_paper` inlines the inputs into one document and returns the style files' text for their macros.
An input that the paper lacks but the TeX installation has (`\\input epsf`) is not missing.
"""
from __future__ import annotations

import posixpath
import re
import subprocess
from dataclasses import dataclass

from pipeline.archives import STYLE_EXTENSIONS
from pipeline.latex_clean import clean_source

INPUT_RE = re.compile(r"\\(input|include|subfile|subfileinclude)(?![a-zA-Z@])\s*(?:\{([^{}\n]{1,300})\}|"
                      r"([^\s{}\\%]{1,300}))")
_USEPACKAGE_RE = re.compile(r"\\(?:usepackage|RequirePackage|RequirePackageWithOptions)\s*(?:\[[^\]]{0,300}\])?"
                            r"\s*\{([^{}]{1,300})\}")
_CLASS_RE = re.compile(r"\\(documentclass|LoadClass|LoadClassWithOptions)\s*(?:\[([^\]]{0,300})\])?\s*"
                       r"\{\s*([^{}\s]{1,100})\s*\}")
# Inputs that are produced by tools and never shipped as LaTeX: their absence is not a problem.
_GENERATED_INPUTS = (".pdf_tex", ".pgf", ".tikz", ".bbl")
_BEGIN_DOC = "\\begin{document}"
_END_DOC = "\\end{document}"


@dataclass
class FileInfo:
    path: str
    is_root: bool                  # has \documentclass (not `subfiles`)
    refs: list[str]                # \input-like targets as written
    styles: list[str]              # "name.cls" / "name.sty" files it loads


def scan_file(path: str, text: str) -> FileInfo:
    cleaned, _ = clean_source(text, rnw=path.lower().endswith(".rnw"))
    refs = [(m.group(2) or m.group(3) or "").strip() for m in INPUT_RE.finditer(cleaned)]
    styles = []
    is_root = False
    for m in _CLASS_RE.finditer(cleaned):
        if m.group(1) == "documentclass":
            if m.group(3) == "subfiles":
                continue
            if path.lower().endswith(STYLE_EXTENSIONS):
                continue
            is_root = True
        styles.append(m.group(3) + ".cls")
    for m in _USEPACKAGE_RE.finditer(cleaned):
        styles.extend(p.strip() + ".sty" for p in m.group(1).split(",") if p.strip())
    return FileInfo(path, is_root, [r for r in refs if r], styles)


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


def resolve_style(name: str, including: str, known: set[str]) -> str | None:
    """The container path of a class or package file (`x.cls`, `y.sty`) next to the root or the includer."""
    for base in ("", posixpath.dirname(including)):
        p = posixpath.normpath(posixpath.join(base, name)) if base else name
        if p in known:
            return p
    return None


def group_papers(infos: dict[str, FileInfo], latex: set[str], known: set[str]) -> list[tuple[str, list[str]]]:
    """[(root path, [member paths it reaches])], sorted by root. `latex`: the paths that may be papers;
    `infos`: scanned files (LaTeX and style files); `known`: every path an input may name.

    Roots are files with `\\documentclass` (not `subfiles`); a LaTeX file that no other file reaches is a
    paper of its own; files only reached from inside a cycle are picked up at the end so nothing is lost."""
    tex = sorted(latex)

    def reach(start: str) -> list[str]:
        seen = [start]
        stack = [start]
        while stack:
            cur = stack.pop()
            info = infos.get(cur)
            if info is None:
                continue
            targets = [resolve_ref(ref, cur, start, known) for ref in info.refs]
            targets += [resolve_style(name, cur, known) for name in info.styles]
            for tgt in targets:
                if tgt and tgt not in seen:
                    seen.append(tgt)
                    stack.append(tgt)
        return seen

    reached_by_other: set[str] = set()
    for p in tex:
        reached_by_other.update(reach(p)[1:])
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


_TEX_INSTALLATION: dict[str, bool] = {}   # per process: input name -> found by kpsewhich


def in_tex_installation(refs: list[str]) -> set[str]:
    """The refs that `kpsewhich` finds (as written, or with `.tex`) in the TeX installation, e.g. `epsf` of
    `\\input epsf`. One kpsewhich call for all names not asked before; none found when TeX is not there."""
    def names(ref: str) -> list[str]:
        return [ref] if posixpath.splitext(ref)[1] else [ref + ".tex", ref]

    ask = sorted({n for r in refs for n in names(r) if n not in _TEX_INSTALLATION and not n.startswith("-")})
    if ask:
        try:
            done = subprocess.run(["kpsewhich", *ask], capture_output=True, text=True, timeout=30, check=False)
            found = {posixpath.basename(line.strip()) for line in done.stdout.splitlines() if line.strip()}
        except (OSError, subprocess.SubprocessError):
            found = set()  # no TeX installation to ask: those inputs stay missing
        for n in ask:
            _TEX_INSTALLATION[n] = posixpath.basename(n) in found
    return {r for r in refs if any(_TEX_INSTALLATION.get(n, False) for n in names(r))}


def flatten_paper(files: dict[str, str], root: str, max_bytes: int, max_depth: int = 20
                  ) -> tuple[str, str, list[str]]:
    """The paper as one text: comments etc. removed, `\\input`/`\\include`/`\\subfile` inlined (cycles and
    missing targets noted), cut at `\\end{document}`. Returns (document, text of the paper's own class and
    package files, class first, problems)."""
    problems: list[str] = []
    cleaned: dict[str, str] = {}
    for path, text in files.items():
        c, probs = clean_source(text, rnw=path.lower().endswith(".rnw"))
        cleaned[path] = c
        problems.extend(f"{path}: {p}" for p in probs)
    known = set(cleaned)
    styles = sorted((p for p in cleaned if p.lower().endswith(STYLE_EXTENSIONS)),
                    key=lambda p: not p.lower().endswith(".cls"))
    style_text = "\n".join(cleaned[p] for p in styles)
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
        if path != root:
            b = text.find(_BEGIN_DOC)
            if b != -1:  # a subfile: only its body belongs to the paper
                e = text.find(_END_DOC, b)
                text = text[b + len(_BEGIN_DOC): e if e != -1 else len(text)]
        pos = 0
        for m in INPUT_RE.finditer(text):
            if stopped:
                return
            emit(text[pos:m.start()])
            pos = m.end()
            ref = (m.group(2) or m.group(3) or "").strip()
            tgt = resolve_ref(ref, path, root, known)
            if tgt is None:
                if not ref.lower().endswith(_GENERATED_INPUTS):
                    missing.append((m.group(1), ref, path))
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

    missing: list[tuple[str, str, str]] = []
    if root in cleaned:
        inline(root, [root])
    if missing:
        installed = in_tex_installation([ref for _, ref, _ in missing])
        problems.extend(f"missing \\{cmd} target {ref!r} in {path}" for cmd, ref, path in missing
                        if ref not in installed)
    doc = "".join(out)
    b = doc.find(_BEGIN_DOC)
    e = doc.find(_END_DOC, b if b != -1 else 0)
    if e != -1:
        doc = doc[:e]
    return doc, style_text, problems
