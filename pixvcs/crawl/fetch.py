"""Fetching politely with httpx: per-host concurrency and rate limits, robots.txt,
bounded redirects, timeouts, retries with exponential backoff (network errors, 429,
5xx, honouring Retry-After up to a cap), a byte limit per response (streamed: the
download stops there), and content sniffed rather than trusting Content-Type.

The network is an injectable seam: pass an ``httpx.BaseTransport`` (tests use
``httpx.MockTransport``) and a ``sleep`` function. Nothing here prints.

Every fetch ends in a :class:`Fetched` whose ``kind`` is ``"ok"``, ``"failed"`` (the
server or network did not give us the bytes: ``reason`` is ``robots``, ``bad-url``,
``too-many-redirects``, ``http-<code>``, ``timeout`` or ``network``) or
``"invalid"`` (we got bytes, and they are not an acceptable image: ``not-an-image``,
``too-large``).
"""

from __future__ import annotations

import email.utils
import threading
import time
import urllib.request
import urllib.robotparser
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from ..imageinfo import sniff
from .limits import Limits, LocalLimits
from .options import CrawlOptions

#: The token matched against robots.txt ``User-agent`` lines.
ROBOTS_AGENT = "pixvcs"
#: Bytes of a robots.txt that are parsed (RFC 9309 asks for at least 500 KiB).
ROBOTS_MAX_BYTES = 512 * 1024
#: Bytes looked at to recognise an image.
SNIFF_BYTES = 32


@dataclass(slots=True)
class Fetched:
    url: str
    kind: str  # "ok" | "failed" | "invalid"
    reason: str | None = None
    detail: str | None = None
    final_url: str | None = None
    status: int | None = None
    content_type: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    data: bytes | None = None
    fetched_at: str | None = None
    attempts: int = 0

    def http_facts(self) -> dict[str, Any]:
        return {
            "final_url": self.final_url,
            "status": self.status,
            "content_type": self.content_type,
            "etag": self.etag,
            "last_modified": self.last_modified,
            "fetched_at": self.fetched_at,
        }


@dataclass(slots=True)
class _Host:
    key: str  # scheme://netloc: what the limits count by
    lock: threading.Lock = field(default_factory=threading.Lock)
    robots_lock: threading.Lock = field(default_factory=threading.Lock)  # one reader at a time
    robots: urllib.robotparser.RobotFileParser | None = None
    robots_checked: bool = False
    robots_error: str | None = None
    delay: float = 0.0


class _Retry(Exception):
    def __init__(self, reason: str, status: int | None, retry_after: float | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):  # malformed header: ignore it, as browsers do
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class Fetcher:
    """One per crawl (thread-safe): shares connections, per-host limits and robots.txt."""

    def __init__(
        self,
        options: CrawlOptions,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        version: str = "0",
        limits: Limits | None = None,
    ) -> None:
        self.options = options
        self._given = (transport, sleep, clock, version)  # for forked()
        # per-host slots and pace: this process's own, or shared by a job's workers
        self.limits: Limits = limits or LocalLimits(
            options.per_host_concurrency, sleep=sleep, clock=clock
        )
        self.sleep = sleep
        self.clock = clock
        self.user_agent = options.user_agent(version)
        timeout = httpx.Timeout(
            connect=options.connect_timeout,
            read=options.read_timeout,
            write=options.read_timeout,
            pool=None,
        )
        # as many kept open between requests as may be open: httpcore (1.0.9) closes
        # an idle connection whenever the pool holds more than the keep-alive limit
        # in all, so with httpx's usual 20 a thread busy examining what it fetched
        # loses its connection (tests/crawl/test_fetch.py)
        pool = max(10, options.workers * 2)
        limits_ = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
        if transport is None and not urllib.request.getproxies():
            # what httpx.Client would make itself; with proxies in the environment
            # the client's own transports (one per proxy) are used instead
            transport = httpx.HTTPTransport(limits=limits_)
        self.client = httpx.Client(
            transport=transport,
            timeout=timeout,
            follow_redirects=False,
            headers={"User-Agent": self.user_agent, "Accept": "*/*"},
            limits=limits_,
        )
        # Requests go straight to the transport when there is one: the client's
        # per-request work (URL merging, the cookie jar, auth and redirect hooks) is
        # a third of the CPU of a small image's fetch, and the crawler needs none
        # of it (redirects are followed here; a crawl sends no cookies).
        self._transport = transport
        self._headers = self.client.headers
        self._timeout = timeout.as_dict()
        self._hosts: dict[str, _Host] = {}
        self._lock = threading.Lock()
        self.requests = 0

    def close(self) -> None:
        self.client.close()

    def forked(self, options: CrawlOptions) -> Fetcher:
        """A new fetcher like this one, with ``options``, for a forked process:
        its own connections, limits and robots.txt (a connection the parent may
        hold is not shared); a transport given to this one (a test's) is kept."""
        transport, sleep, clock, version = self._given
        return Fetcher(options, transport=transport, sleep=sleep, clock=clock, version=version)

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public -----------------------------------------------------------------------
    def fetch_image(self, url: str) -> Fetched:
        return self.fetch(url, limit=self.options.max_bytes, image=True)

    def fetch_page(self, url: str) -> Fetched:
        return self.fetch(url, limit=self.options.max_page_bytes, image=False)

    def fetch(self, url: str, *, limit: int, image: bool) -> Fetched:
        """GET ``url`` following at most ``max_redirects`` redirects, retrying what
        may be transient. Never raises for what the network or server does."""
        opts = self.options
        current = url
        redirects = 0
        attempts = 0
        start = self.clock()
        while True:
            parts = urlsplit(current)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                return Fetched(url, "failed", "bad-url", f"not an http(s) URL: {current}")
            host = self._host(parts)
            if opts.respect_robots:
                why = self._disallowed(host, parts, current)
                if why:
                    return Fetched(url, "failed", "robots", why, final_url=current)
            attempts += 1
            try:
                with self._slot(host):
                    result = self._get(url, current, limit, image, start)
            except _Retry as r:
                if attempts > opts.retries:
                    detail = f"gave up after {attempts} attempts"
                    return Fetched(
                        url, "failed", r.reason, detail, current, r.status, attempts=attempts
                    )
                wait = opts.backoff * (2 ** (attempts - 1))
                if r.retry_after is not None:
                    wait = max(wait, r.retry_after)
                self.sleep(min(wait, opts.max_retry_after))
                continue
            if isinstance(result, str):  # a redirect
                redirects += 1
                if redirects > opts.max_redirects:
                    return Fetched(
                        url, "failed", "too-many-redirects",
                        f"more than {opts.max_redirects} redirects", current, attempts=attempts,
                    )  # fmt: skip
                current = result
                continue
            result.attempts = attempts
            return result

    # -- one request ------------------------------------------------------------------
    def _get(self, url: str, current: str, limit: int, image: bool, start: float) -> Fetched | str:
        """A Fetched, or the next URL of a redirect; raises _Retry for transient trouble."""
        opts = self.options
        with self._lock:
            self.requests += 1
        try:
            with self._open(current) as r:
                status = r.status_code
                if status in (301, 302, 303, 307, 308) and r.headers.get("location"):
                    return urljoin(current, r.headers["location"].strip())
                if status == 429 or 500 <= status <= 599:
                    raise _Retry(
                        f"http-{status}", status, parse_retry_after(r.headers.get("retry-after"))
                    )
                out = Fetched(
                    url,
                    "ok",
                    final_url=current,
                    status=status,
                    content_type=r.headers.get("content-type"),
                    etag=r.headers.get("etag"),
                    last_modified=r.headers.get("last-modified"),
                    fetched_at=_now_iso(),
                )
                if not 200 <= status <= 299:
                    out.kind, out.reason = "failed", f"http-{status}"
                    return out
                length = r.headers.get("content-length", "")
                if length.isdigit() and int(length) > limit:
                    out.kind, out.reason = "invalid", "too-large"
                    out.detail = f"Content-Length {length} exceeds the limit of {limit} bytes"
                    return out
                buf = bytearray()
                sniffed = not image
                for chunk in r.iter_bytes():
                    buf += chunk
                    if len(buf) > limit:
                        out.kind, out.reason = "invalid", "too-large"
                        out.detail = f"more than {limit} bytes"
                        return out
                    if not sniffed and len(buf) >= SNIFF_BYTES:
                        if not self._is_image(buf, out):
                            return out
                        sniffed = True
                    if self.clock() - start > opts.fetch_deadline:
                        out.kind, out.reason = "failed", "timeout"
                        out.detail = f"took longer than {opts.fetch_deadline:g} s"
                        return out
                if not sniffed and not self._is_image(buf, out):
                    return out
                if not buf:
                    out.kind, out.reason, out.detail = "invalid", "empty", "empty body"
                    return out
                out.data = bytes(buf)
                return out
        except httpx.TimeoutException as e:
            raise _Retry("timeout", None, None) from e
        except (httpx.TransportError, httpx.DecodingError) as e:
            # connection refused or reset, truncated body (RemoteProtocolError), bad
            # compression: all may be transient, all are retried and then reported
            raise _Retry("network", None, None) from e

    @contextmanager
    def _open(self, url: str) -> Iterator[httpx.Response]:
        """GET ``url``: the response, its body not read yet (closed on exit)."""
        request = httpx.Request(
            "GET", url, headers=self._headers, extensions={"timeout": self._timeout}
        )
        if self._transport is None:  # proxies from the environment: the client decides
            response = self.client.send(request, stream=True)
        else:
            response = self._transport.handle_request(request)
            response.request = request
        try:
            yield response
        finally:
            response.close()

    @staticmethod
    def _is_image(buf: bytearray, out: Fetched) -> bool:
        fmt = sniff(bytes(buf[:SNIFF_BYTES]))
        if fmt is None:
            out.kind, out.reason = "invalid", "not-an-image"
            out.detail = f"content is not an image (served as {out.content_type or 'no type'})"
            return False
        return True

    # -- politeness -------------------------------------------------------------------
    def _host(self, parts: Any) -> _Host:
        key = f"{parts.scheme}://{parts.netloc.lower()}"
        with self._lock:
            host = self._hosts.get(key)
            if host is None:
                host = self._hosts[key] = _Host(key)
            return host

    def _slot(self, host: _Host) -> _HostSlot:
        return _HostSlot(self, host)

    def _wait_turn(self, host: _Host) -> None:
        rate = self.options.per_host_rate
        interval = max(1.0 / rate if rate > 0 else 0.0, host.delay)
        self.limits.wait_turn(host.key, interval)

    def _disallowed(self, host: _Host, parts: Any, url: str) -> str | None:
        with host.lock:
            checked = host.robots_checked
        if not checked:
            with host.robots_lock:  # the other threads wait for the one reading it
                if not host.robots_checked:
                    self._load_robots(host, f"{parts.scheme}://{parts.netloc}/robots.txt")
        if host.robots_error:
            return host.robots_error
        if host.robots is not None and not host.robots.can_fetch(ROBOTS_AGENT, url):
            return "disallowed by robots.txt"
        return None

    def _load_robots(self, host: _Host, robots_url: str) -> None:
        """RFC 9309: a 4xx robots.txt means no rules; a 5xx or an unreachable
        server means "disallow everything" for this crawl."""
        parser: urllib.robotparser.RobotFileParser | None = None
        text, error = self.fetch_robots(robots_url)
        if text is not None:
            parser = urllib.robotparser.RobotFileParser(robots_url)
            parser.parse(text.splitlines())
        with host.lock:
            if host.robots_checked:
                return
            host.robots, host.robots_error, host.robots_checked = parser, error, True
            if parser is not None:
                delay = parser.crawl_delay(ROBOTS_AGENT)
                if delay:
                    host.delay = min(float(delay), 60.0)

    def fetch_robots(self, robots_url: str) -> tuple[str | None, str | None]:
        """``(text, None)`` (text "" when there is none), or ``(None, why)`` when the
        crawl must stay away from the host."""
        current = robots_url
        for _ in range(self.options.max_redirects + 1):
            with self._lock:
                self.requests += 1
            try:
                with self.client.stream("GET", current) as r:
                    if r.is_redirect and r.headers.get("location"):
                        current = urljoin(current, r.headers["location"])
                        continue
                    if r.status_code >= 500:
                        return None, f"robots.txt answered {r.status_code}: staying away"
                    if r.status_code >= 400:
                        return "", None
                    body = bytearray()
                    for chunk in r.iter_bytes():
                        body += chunk
                        if len(body) >= ROBOTS_MAX_BYTES:  # RFC 9309: parse the first 500 KiB
                            break
            except httpx.HTTPError as e:
                return None, f"robots.txt unreachable ({type(e).__name__}): staying away"
            return bytes(body[:ROBOTS_MAX_BYTES]).decode("utf-8", "replace"), None
        return "", None


class _HostSlot:
    """Holds one of a host's concurrency slots, and waits for the host's next turn."""

    def __init__(self, fetcher: Fetcher, host: _Host) -> None:
        self.fetcher = fetcher
        self.host = host
        self.token = ""

    def __enter__(self) -> None:
        limits = self.fetcher.limits
        self.token = limits.acquire(self.host.key)
        try:
            self.fetcher._wait_turn(self.host)
        except BaseException:
            limits.release(self.host.key, self.token)
            raise

    def __exit__(self, *exc: object) -> None:
        self.fetcher.limits.release(self.host.key, self.token)
