"""Listing papers through arXiv's public API (an Atom feed): by category and date range with paging, or by id.

The feed is parsed with `feedparser`. arXiv's traps are handled: a malformed query answers HTTP 200 with one
entry titled "Error" (raised as ValueError here), throttling may answer with a plain-text body instead of a
feed (retried), and a page can come back empty in the middle of a listing (asked once more, then the listing
ends with a note). The API does not always report a licence (`<arxiv:license>`): it is recorded as None then.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from typing import Iterator
from urllib.parse import urlencode

import feedparser

from pipeline.arxiv_meta import PaperMeta, parse_arxiv_id, versioned
from pipeline.polite_http import PoliteClient, Retryable

DEFAULT_API_URL = "https://export.arxiv.org/api/query"
MAX_PAGE = 2000                       # arXiv's largest max_results per call
_CATEGORY = re.compile(r"^[a-z]+(?:-[a-z]+)*(?:\.[A-Za-z]+(?:-[A-Za-z]+)*)?$")


def check_category(category: str) -> str:
    if not _CATEGORY.match(category):
        raise ValueError(f"{category!r} is not an arXiv category: give e.g. hep-th, math.AG or cs.LG")
    return category


def category_query(category: str, date_from: date | None = None, date_until: date | None = None) -> str:
    """`search_query` for one category, optionally submitted within [date_from, date_until] (whole days)."""
    query = f"cat:{check_category(category)}"
    if date_from or date_until:
        lo = (date_from or date(1991, 1, 1)).strftime("%Y%m%d") + "0000"
        hi = (date_until or date.today()).strftime("%Y%m%d") + "2359"
        if lo > hi:
            raise ValueError(f"date range {date_from} .. {date_until} is empty: --from must not be after --until")
        query += f" AND submittedDate:[{lo} TO {hi}]"
    return query


def query_url(api_url: str, **params) -> str:
    return f"{api_url}?{urlencode(params)}"


@dataclass
class FeedPage:
    papers: list[PaperMeta]
    total: int | None                 # opensearch:totalResults
    problems: list[str] = field(default_factory=list)


def parse_feed(body: bytes) -> FeedPage:
    """One Atom page of the API. Raises Retryable when the body is not a feed (throttling page, cut body) and
    ValueError when arXiv answers with its "Error" entry."""
    parsed = feedparser.parse(body)
    version = getattr(parsed, "version", "") or ""
    if not version.startswith("atom"):
        head = body[:80].decode("utf-8", "replace").strip().replace("\n", " ")
        raise Retryable(f"the API answered something that is not an Atom feed: {head!r}")
    papers: list[PaperMeta] = []
    problems: list[str] = []
    for entry in parsed.entries:
        entry_id = str(entry.get("id", ""))
        if "/api/errors" in entry_id or (entry.get("title") == "Error" and "arxiv.org/abs/" not in entry_id):
            raise ValueError(f"the arXiv API rejected the query: {' '.join(str(entry.get('summary', '')).split())}")
        try:
            arxiv_id, version_no = parse_arxiv_id(entry_id)
        except ValueError:
            problems.append(f"entry with an unreadable id {entry_id[:100]!r} skipped")
            continue
        categories = [str(t.get("term")) for t in entry.get("tags", []) if t.get("term")]
        primary = (entry.get("arxiv_primary_category") or {}).get("term") or (categories[0] if categories else None)
        if primary and primary not in categories:
            categories.insert(0, primary)
        licence = entry.get("arxiv_license")
        if isinstance(licence, dict):   # <arxiv:license href="..."/>
            licence = licence.get("href") or licence.get("uri")
        papers.append(PaperMeta(id=arxiv_id, version=version_no, title=" ".join(str(entry.get("title", "")).split()),
                                categories=categories, primary_category=primary,
                                license=str(licence).strip() or None if licence else None,
                                published=entry.get("published")))
    total = parsed.feed.get("opensearch_totalresults")
    try:
        total_n = int(total) if total is not None else None
    except ValueError:
        total_n = None
    return FeedPage(papers, total_n, problems)


def _get_page(client: PoliteClient, url: str) -> FeedPage:
    return client.fetch(url, lambda resp: parse_feed(resp.content))


def list_category(client: PoliteClient, api_url: str, category: str, max_papers: int, page_size: int = 100,
                  date_from: date | None = None, date_until: date | None = None,
                  notes: list[str] | None = None) -> Iterator[PaperMeta]:
    """Up to `max_papers` papers of `category` (newest submissions first), paging with start/max_results."""
    if max_papers < 1:
        raise ValueError("--max must be at least 1")
    page_size = max(1, min(page_size, MAX_PAGE))
    query = category_query(category, date_from, date_until)
    notes = notes if notes is not None else []
    seen: set[str] = set()
    start = 0
    empty_in_a_row = 0
    while len(seen) < max_papers:
        url = query_url(api_url, search_query=query, start=start, max_results=min(page_size, max_papers - len(seen)),
                        sortBy="submittedDate", sortOrder="descending")
        page = _get_page(client, url)
        notes.extend(page.problems)
        if not page.papers:
            if page.total is not None and start < page.total and empty_in_a_row == 0:
                empty_in_a_row += 1      # arXiv sometimes answers a page empty: ask once more
                continue
            if page.total is not None and start < page.total:
                notes.append(f"the API answered empty pages at start={start} of {page.total}: listing ended early")
            return
        empty_in_a_row = 0
        start += len(page.papers)
        for paper in page.papers:
            if paper.id not in seen and len(seen) < max_papers:
                seen.add(paper.id)
                yield paper
        if page.total is not None and start >= page.total:
            return


def lookup_ids(client: PoliteClient, api_url: str, ids: list[tuple[str, int | None]], batch: int = 100,
               notes: list[str] | None = None) -> dict[str, PaperMeta]:
    """Metadata for (id, version) pairs through `id_list` (`batch` ids per request), by id without version.
    Ids the API does not know are missing from the result."""
    found: dict[str, PaperMeta] = {}
    for i in range(0, len(ids), batch):
        chunk = ids[i:i + batch]
        id_list = ",".join(versioned(a, v) for a, v in chunk)
        page = _get_page(client, query_url(api_url, id_list=id_list, start=0, max_results=len(chunk)))
        if notes is not None:
            notes.extend(page.problems)
        for paper in page.papers:
            found.setdefault(paper.id, paper)
    return found
