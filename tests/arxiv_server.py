"""A small arXiv look-alike on 127.0.0.1 for the download tests and bench: a real HTTP server (http.server in a
thread) that answers `/api/query` with an Atom feed (search_query `cat:X [AND submittedDate:[A TO B]]` or
`id_list`, paged with start/max_results) and `/e-print/ID[vN]` with the paper's bytes, plus faults on demand.

Faults are queued per paper (each request takes the next one) or for the API:
  "500"       HTTP 500
  "429:N"     HTTP 429 with `Retry-After: N`
  "503:N"     HTTP 503 with `Retry-After: N`
  "cut"       full Content-Length announced, half the body sent, connection closed
  "stall"     like "cut", but the connection stays open until `release` is set (a client killed mid-file)
  "rate"      (API) HTTP 200 with arXiv's plain-text "Rate exceeded." instead of a feed
  "empty"     (API) a page with no entries although totalResults says more
"""
from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape, quoteattr


@dataclass
class FakePaper:
    id: str                                   # without version
    version: int = 1
    body: bytes = b""
    content_type: str = "application/gzip"
    content_encoding: str | None = None
    categories: list[str] = field(default_factory=lambda: ["cs.DS"])
    title: str = "A paper"
    license: str | None = "http://creativecommons.org/licenses/by/4.0/"
    submitted: str = "2018-01-11T12:00:00Z"
    faults: list[str] = field(default_factory=list)

    @classmethod
    def from_file(cls, arxiv_id: str, path: Path, **kw) -> "FakePaper":
        return cls(id=arxiv_id, body=Path(path).read_bytes(), **kw)


class FakeArxiv:
    def __init__(self, papers: list[FakePaper], api_faults: list[str] | None = None) -> None:
        self.papers = {p.id: p for p in papers}
        self.api_faults = list(api_faults or [])
        self.log: list[tuple[float, str, int]] = []       # (monotonic time, path with query, status)
        self.lock = threading.Lock()
        self.release = threading.Event()                  # lets a "stall" fault end
        self.stalled = threading.Event()                  # set once a "stall" fault has sent its half body
        self.server: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "FakeArxiv":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True   # as real servers do; else keep-alive clients wait on delayed ACKs

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                fake.handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def __enter__(self) -> "FakeArxiv":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def api_url(self) -> str:
        return self.base_url + "/api/query"

    def requests_for(self, prefix: str) -> list[tuple[float, str, int]]:
        with self.lock:
            return [r for r in self.log if r[1].startswith(prefix)]

    # ------------------------------------------------------------------ responses
    def _note(self, path: str, status: int) -> None:
        with self.lock:
            self.log.append((time.monotonic(), path, status))

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        url = urlsplit(h.path)
        if url.path == "/api/query":
            with self.lock:
                fault = self.api_faults.pop(0) if self.api_faults else None
            self._note(h.path, 200 if fault in (None, "rate", "empty") else int(fault.split(":")[0]))
            if fault == "rate":
                return self._send(h, 200, b"Rate exceeded.", "text/plain")
            if fault and fault != "empty":
                return self._status_fault(h, fault)
            return self._send(h, 200, self.feed(parse_qs(url.query), empty=fault == "empty"),
                              "application/atom+xml; charset=utf-8")
        if url.path.startswith("/e-print/"):
            key = url.path[len("/e-print/"):]
            paper = self.papers.get(key) or self.papers.get(key.rsplit("v", 1)[0])
            if paper is None or (key != paper.id and key != f"{paper.id}v{paper.version}"):
                self._note(h.path, 404)
                return self._send(h, 404, b"not found", "text/plain")
            with self.lock:
                fault = paper.faults.pop(0) if paper.faults else None
            if fault in ("cut", "stall"):
                self._note(h.path, 200)
                return self._cut(h, paper, stall=fault == "stall")
            if fault:
                self._note(h.path, int(fault.split(":")[0]))
                return self._status_fault(h, fault)
            self._note(h.path, 200)
            extra = {"Content-Encoding": paper.content_encoding} if paper.content_encoding else {}
            return self._send(h, 200, paper.body, paper.content_type, extra)
        self._note(h.path, 404)
        self._send(h, 404, b"not found", "text/plain")

    def _send(self, h, status: int, body: bytes, ctype: str, extra: dict | None = None) -> None:
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)

    def _status_fault(self, h, fault: str) -> None:
        code, _, after = fault.partition(":")
        self._send(h, int(code), b"<html>busy</html>", "text/html", {"Retry-After": after} if after else None)

    def _cut(self, h, paper: FakePaper, stall: bool) -> None:
        h.send_response(200)
        h.send_header("Content-Type", paper.content_type)
        h.send_header("Content-Length", str(len(paper.body)))
        h.end_headers()
        h.wfile.write(paper.body[: len(paper.body) // 2])
        h.wfile.flush()
        if stall:
            self.stalled.set()
            self.release.wait(30)
        h.close_connection = True
        try:
            h.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # ------------------------------------------------------------------ the Atom feed
    def _matches(self, paper: FakePaper, query: str) -> bool:
        cat = date_lo = date_hi = None
        for part in query.split(" AND "):
            part = part.strip()
            if part.startswith("cat:"):
                cat = part[4:]
            elif part.startswith("submittedDate:["):
                date_lo, _, date_hi = part[len("submittedDate:["):-1].partition(" TO ")
        if cat and cat not in paper.categories:
            return False
        stamp = paper.submitted[:16].replace("-", "").replace("T", "").replace(":", "")
        return not (date_lo and stamp < date_lo or date_hi and stamp > date_hi)

    def feed(self, q: dict, empty: bool = False) -> bytes:
        start = int(q.get("start", ["0"])[0])
        size = int(q.get("max_results", ["10"])[0])
        if "id_list" in q:
            found = []
            for raw in q["id_list"][0].split(","):
                p = self.papers.get(raw) or self.papers.get(raw.rsplit("v", 1)[0])
                if p is not None:
                    found.append(p)
        else:
            query = q.get("search_query", [""])[0]
            found = sorted((p for p in self.papers.values() if self._matches(p, query)),
                           key=lambda p: p.submitted, reverse=True)
        page = [] if empty else found[start:start + size]
        entries = "".join(self._entry(p) for p in page)
        return (f'<?xml version="1.0" encoding="UTF-8"?>\n'
                f'<feed xmlns="http://www.w3.org/2005/Atom" xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/" '
                f'xmlns:arxiv="http://arxiv.org/schemas/atom">\n'
                f'<title type="html">ArXiv Query</title><id>http://arxiv.org/api/x</id>'
                f'<updated>{formatdate(usegmt=True)}</updated>\n'
                f'<opensearch:totalResults>{len(found)}</opensearch:totalResults>\n'
                f'<opensearch:startIndex>{start}</opensearch:startIndex>\n'
                f'<opensearch:itemsPerPage>{size}</opensearch:itemsPerPage>\n{entries}</feed>\n').encode()

    def _entry(self, p: FakePaper) -> str:
        cats = "".join(f'<category term={quoteattr(c)} scheme="http://arxiv.org/schemas/atom"/>' for c in p.categories)
        lic = f"<arxiv:license>{escape(p.license)}</arxiv:license>" if p.license else ""
        return (f"<entry><id>http://arxiv.org/abs/{p.id}v{p.version}</id>"
                f"<updated>{p.submitted}</updated><published>{p.submitted}</published>"
                f"<title>{escape(p.title)}</title><summary>An abstract.</summary>"
                f"<author><name>A. Author</name></author>"
                f'<link href="http://arxiv.org/abs/{p.id}v{p.version}" rel="alternate" type="text/html"/>'
                f'<link title="pdf" href="http://arxiv.org/pdf/{p.id}v{p.version}" rel="related" '
                f'type="application/pdf"/>'
                f'<arxiv:primary_category term={quoteattr(p.categories[0])} scheme="http://arxiv.org/schemas/atom"/>'
                f"{cats}{lic}</entry>\n")
