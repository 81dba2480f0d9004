"""One paper never falls in two splits: paper identity, read-once, splits and cross-paper duplicate equations.

A paper's identity is its arXiv id when known (`arxiv:1801.03879`, any version), otherwise a fingerprint of
its content (`sha1:...` of the document body with whitespace collapsed), so the same paper under two
archive names, or as a folder and as a tarball, is one paper. Papers that share any key (the id or the
fingerprint) are one paper: it is read once (the first copy in walk order; the others are reported as
duplicates), and its split (80/10/10) is a hash of that identity.

An equation found in a train paper is kept out of val and test even when another paper holds it too
(`x = 0` in two papers is one equation seen twice): held-out bits/char then measures new equations only.
`SplitPlan` decides all of this from the per-paper entries of a whole run (two passes over them; memory is
one key per paper and one 8-byte hash per distinct equation).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable

_VERSION_RE = re.compile(r"v\d+$")
MIN_FINGERPRINT_CHARS = 200   # shorter bodies (a root that only \inputs missing files) are no evidence


def split_for(identity: str) -> str:
    """80/10/10 train/val/test, deterministic from the paper's identity."""
    bucket = int.from_bytes(hashlib.sha1(identity.encode("utf-8")).digest()[:8], "big") % 10
    return "train" if bucket < 8 else "val" if bucket == 8 else "test"


def content_fingerprint(document: str) -> str | None:
    """`sha1:<16 hex>` of the document's body (after `\\begin{document}` when it has one) with whitespace
    collapsed; None when the body is too short to tell papers apart."""
    start = document.find("\\begin{document}")
    body = " ".join((document[start + len("\\begin{document}"):] if start != -1 else document).split())
    if len(body) < MIN_FINGERPRINT_CHARS:
        return None
    return "sha1:" + hashlib.sha1(body.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def paper_identity(arxiv_id: str | None, document: str = "", fallback: str = "") -> str:
    """A paper's identity: `arxiv:<id>` (version dropped) when the arXiv id is known, else the content
    fingerprint of `document`, else `paper:<fallback>` (the paper's own name).

    Readers that know the id from elsewhere (e.g. metadata saved next to downloaded sources) pass it here
    (or set `PaperJob.arxiv_id`, which ingest passes here)."""
    keys = paper_keys(arxiv_id, document, fallback)
    return keys[0]


def paper_keys(arxiv_id: str | None, document: str = "", fallback: str = "") -> list[str]:
    """Every key that identifies the paper, strongest first: the arXiv id, the content fingerprint; a paper
    with neither is keyed by its own name (never the same as another paper)."""
    keys = []
    if arxiv_id and arxiv_id.strip():
        keys.append("arxiv:" + _VERSION_RE.sub("", arxiv_id.strip().lower()))
    fp = content_fingerprint(document) if document else None
    if fp:
        keys.append(fp)
    return keys or ["paper:" + fallback]


def equation_key(equation: str) -> str:
    """16 hex digits that stand for the (normalised) equation text when comparing papers."""
    return hashlib.sha1(equation.encode("utf-8", "surrogatepass")).hexdigest()[:16]


@dataclass
class PaperDecision:
    identity: str
    split: str
    same_as: str | None      # the paper read instead of this one (same identity, earlier in walk order)


@dataclass
class SplitPlan:
    """Identity, split and read-once for every paper of a run, and the equations of train papers."""

    decisions: dict[str, PaperDecision] = field(default_factory=dict)    # paper id -> decision
    train_equations: set[int] = field(default_factory=set)
    paper_count_by_equation: dict[int, int] = field(default_factory=dict)  # kept papers holding it (capped 2)

    @classmethod
    def from_entries(cls, entries: Callable[[], Iterable[dict]]) -> "SplitPlan":
        """`entries()` yields, in walk order, dicts with "paper", "keys" and "equations" (equation keys)."""
        parent: dict[str, str] = {}

        def find(k: str) -> str:
            root = k
            while parent.setdefault(root, root) != root:
                root = parent[root]
            while parent[k] != root:  # path compression
                parent[k], k = root, parent[k]
            return root

        papers: list[tuple[str, list[str]]] = []
        for e in entries():
            keys = e["keys"]
            papers.append((e["paper"], keys))
            for k in keys[1:]:
                a, b = find(keys[0]), find(k)
                if a != b:
                    parent[max(a, b)] = min(a, b)
        # a group's identity: its arXiv id when any member has one, else its smallest fingerprint
        identity: dict[str, str] = {}
        for _, keys in papers:
            root = find(keys[0])
            best = min(keys, key=lambda k: (not k.startswith("arxiv:"), k))
            cur = identity.get(root)
            if cur is None or (not best.startswith("arxiv:"), best) < (not cur.startswith("arxiv:"), cur):
                identity[root] = best
        plan = cls()
        first: dict[str, str] = {}
        for paper, keys in papers:
            root = find(keys[0])
            ident = identity[root]
            plan.decisions[paper] = PaperDecision(ident, split_for(ident), first.get(root))
            first.setdefault(root, paper)
        for e in entries():
            d = plan.decisions[e["paper"]]
            if d.same_as is not None:
                continue
            for eq in set(e["equations"]):
                h = int(eq, 16)
                plan.paper_count_by_equation[h] = min(2, plan.paper_count_by_equation.get(h, 0) + 1)
                if d.split == "train":
                    plan.train_equations.add(h)
        return plan

    def in_other_paper(self, eq: str) -> bool:
        return self.paper_count_by_equation.get(int(eq, 16), 0) > 1

    def held_out_repeat(self, eq: str, split: str) -> bool:
        """True for a val/test equation that a train paper also holds."""
        return split != "train" and int(eq, 16) in self.train_equations
