"""A polite HTTP client for remote sources (arXiv's API and e-print server).

One request at a time, at least `delay_s` between the end of one request and the start of the next (arXiv
asks for 3 s), `Retry-After` honoured on 429/503, exponential back-off on 429/5xx and on connections that
fail or are cut mid-body, and a User-Agent that says who is asking.

Built on `requests` (connection reuse, streaming, timeouts). The retry loop is ours rather than urllib3's
`Retry`: that one cannot retry a body cut after the headers arrived, does not cap `Retry-After`, and would
not put the politeness delay in front of its own retries.
"""
from __future__ import annotations

import email.utils
import importlib.metadata
import time
from dataclasses import dataclass
from datetime import timezone
from typing import Callable, TypeVar

import requests
import urllib3


T = TypeVar("T")
try:
    _VERSION = importlib.metadata.version("topiceq")
except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
    _VERSION = "dev"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass
class PoliteConfig:
    delay_s: float = 3.0            # pause between requests (end of one to start of the next)
    retries: int = 4                # further attempts after a 429/5xx, a failed or cut connection
    backoff_s: float = 5.0          # first back-off when no Retry-After is given; doubles with each retry
    max_wait_s: float = 600.0       # longest single wait; a longer Retry-After makes that request fail
    timeout_s: float = 60.0         # connect and read timeout (per socket operation)
    contact: str = ""               # e-mail or URL for the User-Agent, so that arXiv can reach the operator


class HTTPFailure(RuntimeError):
    """The request cannot succeed in this run (after retries, or a permanent status): `str()` says why."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.status = status


class Retryable(Exception):
    """Raised by a response handler for a transient fault found in the body (e.g. a throttling page)."""


def user_agent(contact: str) -> str:
    who = contact.strip() or "no contact given: set --contact EMAIL"
    return f"topiceq/{_VERSION} (arXiv LaTeX sources for equation research; one request at a time; {who})"


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a `Retry-After` header: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


_TRANSIENT = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
              requests.exceptions.ContentDecodingError, urllib3.exceptions.HTTPError, ConnectionError,
              TimeoutError)


class PoliteClient:
    """`fetch(url, handle)`: GET `url` politely and return `handle(response)` (a streamed 200 response).

    Counts what it did in `requests_made`, `retries_made` and `seconds_waited` (delays and back-offs)."""

    def __init__(self, config: PoliteConfig | None = None, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or PoliteConfig()
        if self.config.delay_s < 0 or self.config.backoff_s < 0 or self.config.retries < 0:
            raise ValueError("delay, back-off and retries must be 0 or more")
        self.sleep = sleep
        self.clock = clock
        self.session = requests.Session()
        self.session.headers["User-Agent"] = user_agent(self.config.contact)
        self.session.headers["Accept-Encoding"] = "identity"   # sources are saved byte for byte as served
        self._last_end: float | None = None
        self.requests_made = 0
        self.retries_made = 0
        self.seconds_waited = 0.0

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> "PoliteClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _wait_turn(self, at_least: float) -> None:
        if self._last_end is None:
            pause = at_least
        else:
            pause = max(self.config.delay_s, at_least) - (self.clock() - self._last_end)
        if pause > 0:
            self.sleep(pause)
            self.seconds_waited += pause

    def _backoff(self, attempt: int) -> float:
        return min(self.config.max_wait_s, self.config.backoff_s * 2 ** attempt)

    def fetch(self, url: str, handle: Callable[[requests.Response], T]) -> T:
        if not url.startswith(("http://", "https://")):
            raise HTTPFailure(f"{url!r} is not an http(s) URL")
        wait = 0.0
        last = ""
        for attempt in range(self.config.retries + 1):
            if attempt:
                self.retries_made += 1
            self._wait_turn(wait)
            self.requests_made += 1
            try:
                with self.session.get(url, stream=True, timeout=self.config.timeout_s) as resp:
                    if resp.status_code in RETRY_STATUSES:
                        last = f"HTTP {resp.status_code} {resp.reason or ''}".strip()
                        asked = retry_after_seconds(resp.headers.get("Retry-After"))
                        if asked is not None and asked > self.config.max_wait_s:
                            raise HTTPFailure(f"{last}: the server asks to wait {asked:.0f} s, more than the "
                                              f"{self.config.max_wait_s:.0f} s allowed: try again later",
                                              resp.status_code)
                        wait = asked if asked is not None else self._backoff(attempt)
                        continue
                    if resp.status_code != 200:
                        raise HTTPFailure(f"HTTP {resp.status_code} {resp.reason or ''}".strip(), resp.status_code)
                    return handle(resp)
            except (Retryable, *_TRANSIENT) as exc:
                last = f"{type(exc).__name__}: {exc}" if not isinstance(exc, Retryable) else str(exc)
                wait = self._backoff(attempt)
            finally:
                self._last_end = self.clock()
        raise HTTPFailure(f"gave up after {self.config.retries + 1} attempts; last: {last}")
