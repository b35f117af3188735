from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from pixvcs.crawl.chunk import process_chunk, validate
from pixvcs.crawl.fetch import Fetcher, parse_retry_after
from pixvcs.crawl.options import CrawlOptions
from pixvcs.crawl.sources import Item
from tests.crawl.site import Resp, Site, always, bomb_png, image, pattern_image, sequence

PNG = pattern_image(1)
FAST = CrawlOptions(per_host_rate=0)


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, s: float) -> None:
        self.calls.append(s)


def fetcher(site: Site, options: CrawlOptions = FAST, sleep: Sleeps | None = None) -> Fetcher:
    return Fetcher(options, transport=site.transport(), sleep=sleep or Sleeps())


def test_ok_records_http_facts_and_user_agent() -> None:
    seen: list[str] = []
    site = Site(
        {"/a.png": image(PNG, ETag='"v1"', **{"Last-Modified": "Tue, 01 Jan 2030 00:00:00 GMT"})}
    )
    transport = site.transport()

    def spy(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["user-agent"])
        return transport.handle_request(request)

    opts = FAST.replace(contact="ops@example.org")
    with Fetcher(opts, transport=httpx.MockTransport(spy), version="9.9") as f:
        got = f.fetch_image("http://h.example/a.png")
    assert got.kind == "ok" and got.data == PNG and got.status == 200
    assert (
        got.etag == '"v1"'
        and got.last_modified.startswith("Tue")
        and got.content_type == "image/png"
    )  # type: ignore[union-attr]
    assert all(ua.startswith("pixvcs/9.9 ") and "contact: ops@example.org" in ua for ua in seen)
    assert len(seen) == 2  # robots.txt, then the image


def test_robots_txt_is_respected_and_can_be_ignored() -> None:
    site = Site(
        {
            "/robots.txt": always(Resp(200, b"User-agent: *\nDisallow: /private/\n")),
            "/private/x.png": image(PNG),
            "/ok.png": image(PNG),
            "/jump": always(Resp(302, headers={"location": "/private/x.png"})),
        }
    )
    with fetcher(site) as f:
        assert f.fetch_image("http://h.example/private/x.png").reason == "robots"
        assert f.fetch_image("http://h.example/jump").reason == "robots"  # checked at every hop
        assert f.fetch_image("http://h.example/ok.png").kind == "ok"
    assert "/private/x.png" not in site.log and site.log.count("/robots.txt") == 1
    with fetcher(site, FAST.replace(respect_robots=False)) as f:
        assert f.fetch_image("http://h.example/private/x.png").kind == "ok"
    assert site.log.count("/robots.txt") == 1


def test_robots_txt_is_read_once_by_many_threads_at_once() -> None:
    """Threads that meet a new host together wait for the one reading its robots.txt."""
    site = Site(
        {
            "/robots.txt": always(Resp(200, b"User-agent: *\nDisallow: /private/\n")),
            **{f"/{k}.png": image(PNG) for k in range(16)},
        }
    )
    slow = site.transport()

    def robots_take_time(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/robots.txt":
            time.sleep(0.2)  # every thread arrives while the first is still reading it
        return slow.handle_request(request)

    from concurrent.futures import ThreadPoolExecutor

    urls = [f"http://h.example/{k}.png" for k in range(16)]
    transport = httpx.MockTransport(robots_take_time)
    with Fetcher(FAST, transport=transport) as f, ThreadPoolExecutor(16) as pool:
        got = list(pool.map(f.fetch_image, urls))
    assert all(g.kind == "ok" for g in got)
    assert site.log.count("/robots.txt") == 1


def test_robots_rules_for_pixvcs_and_unreachable_robots() -> None:
    site = Site(
        {
            "/robots.txt": always(
                Resp(200, b"User-agent: pixvcs\nDisallow: /\n\nUser-agent: *\nAllow: /\n")
            )
        }
    )
    with fetcher(site) as f:
        assert f.fetch_image("http://h.example/a.png").reason == "robots"
    site = Site({"/robots.txt": always(Resp(503)), "/a.png": image(PNG)})
    with fetcher(site) as f:
        got = f.fetch_image("http://h.example/a.png")
    assert got.reason == "robots" and "503" in (got.detail or "") and "/a.png" not in site.log


def test_redirects_are_followed_and_bounded() -> None:
    site = Site(
        {
            "/r": always(Resp(301, headers={"location": "/img.png"})),
            "/img.png": image(PNG),
            "/loop1": always(Resp(302, headers={"location": "/loop2"})),
            "/loop2": always(Resp(302, headers={"location": "/loop1"})),
        }
    )
    with fetcher(site, FAST.replace(max_redirects=3)) as f:
        ok = f.fetch_image("http://h.example/r")
        loop = f.fetch_image("http://h.example/loop1")
    assert ok.kind == "ok" and ok.final_url == "http://h.example/img.png"
    assert loop.kind == "failed" and loop.reason == "too-many-redirects"
    assert site.hits("/loop") == {"/loop1": 2, "/loop2": 2}  # 1 request + 3 redirects


def test_429_honours_retry_after_capped() -> None:
    site = Site({"/a.png": sequence(Resp(429, headers={"retry-after": "120"}), Resp(200, PNG))})
    sleeps = Sleeps()
    with fetcher(site, FAST.replace(max_retry_after=7), sleeps) as f:
        got = f.fetch_image("http://h.example/a.png")
    assert got.kind == "ok" and got.attempts == 2 and sleeps.calls == [7]
    assert parse_retry_after("3") == 3
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("soon") is None


def test_5xx_retries_with_backoff_then_succeeds_or_gives_up() -> None:
    site = Site(
        {
            "/flaky.png": sequence(Resp(500), Resp(502), Resp(200, PNG)),
            "/down.png": always(Resp(503)),
        }
    )
    sleeps = Sleeps()
    with fetcher(site, FAST.replace(retries=2, backoff=0.25), sleeps) as f:
        assert f.fetch_image("http://h.example/flaky.png").kind == "ok"
        assert sleeps.calls == [0.25, 0.5]
        down = f.fetch_image("http://h.example/down.png")
    assert down.kind == "failed" and down.reason == "http-503" and down.status == 503
    assert site.hits()["/down.png"] == 3


def test_4xx_is_not_retried() -> None:
    site = Site()
    with fetcher(site) as f:
        got = f.fetch_image("http://h.example/nothing.png")
    assert (got.kind, got.reason, got.status) == ("failed", "http-404", 404)
    assert site.hits()["/nothing.png"] == 1


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (httpx.ReadTimeout, "timeout"),
        (httpx.ConnectError, "network"),
        (httpx.RemoteProtocolError, "network"),
    ],
)
def test_network_errors_are_retried_then_reported(error: type[Exception], reason: str) -> None:
    site = Site({"/a.png": always(Resp(error=error))})
    with fetcher(site, FAST.replace(retries=1)) as f:
        got = f.fetch_image("http://h.example/a.png")
    assert got.kind == "failed" and got.reason == reason
    assert site.hits()["/a.png"] == 2


def test_byte_limit_from_content_length_and_while_streaming() -> None:
    yielded: list[int] = []

    def endless() -> Iterator[bytes]:
        yield PNG[:64]
        while True:
            yielded.append(1)
            yield b"\0" * 1024

    site = Site(
        {
            "/big.png": image(PNG),
            "/endless.png": always(Resp(200, endless, {"content-type": "image/png"})),
        }
    )
    with fetcher(site, FAST.replace(max_bytes=len(PNG) - 1)) as f:
        big = f.fetch_image("http://h.example/big.png")
    assert (big.kind, big.reason) == ("invalid", "too-large") and "Content-Length" in (
        big.detail or ""
    )
    with fetcher(site, FAST.replace(max_bytes=10_000)) as f:
        endless_got = f.fetch_image("http://h.example/endless.png")
    assert (endless_got.kind, endless_got.reason) == ("invalid", "too-large")
    assert len(yielded) <= 11  # stopped at the limit, not at the end (there is none)


def test_content_is_sniffed_not_trusted() -> None:
    site = Site(
        {
            "/fake.jpg": always(
                Resp(200, b"<html><body>hello</body></html>" * 3, {"content-type": "image/jpeg"})
            ),
            "/real": always(Resp(200, PNG, {"content-type": "text/html"})),
            "/empty.png": always(Resp(200, b"", {"content-type": "image/png"})),
        }
    )
    with fetcher(site) as f:
        fake = f.fetch_image("http://h.example/fake.jpg")
        real = f.fetch_image("http://h.example/real")
        empty = f.fetch_image("http://h.example/empty.png")
    assert (fake.kind, fake.reason) == ("invalid", "not-an-image") and "image/jpeg" in (
        fake.detail or ""
    )
    assert real.kind == "ok"
    assert (empty.kind, empty.reason) == ("invalid", "not-an-image")


def test_decompression_bomb_is_refused_from_the_header(monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import ImageFile

    def no_decoding(self: object) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    info, reason, detail = validate(bomb_png(), CrawlOptions())
    assert info is None and reason == "decompression-bomb" and "pixels" in (detail or "")


def test_validation_reasons() -> None:
    opts = CrawlOptions(min_width=64, min_height=64, formats=("PNG", "JPEG"))
    assert validate(pattern_image(1), opts)[0] is not None
    assert validate(pattern_image(1, (40, 80)), opts)[1] == "too-small"
    assert validate(pattern_image(1, fmt="GIF"), opts)[1] == "format-not-allowed"
    assert validate(PNG[: len(PNG) // 2], opts)[1] == "does-not-decode"
    assert validate(b"GIF89a" + b"\0" * 40, CrawlOptions())[1] == "does-not-decode"
    assert validate(PNG, CrawlOptions(max_bytes=10))[1] == "too-large"


def test_per_host_concurrency_limit() -> None:
    active = {"now": 0, "max": 0}
    lock = threading.Lock()
    both = threading.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/robots.txt":
            return httpx.Response(404)
        with lock:
            active["now"] += 1
            active["max"] = max(active["max"], active["now"])
            if active["now"] == 2:
                both.set()
        both.wait(5)  # the first two overlap for sure; a third would have to get in too
        time.sleep(0.02)
        with lock:
            active["now"] -= 1
        return httpx.Response(200, content=PNG)

    opts = FAST.replace(per_host_concurrency=2)
    with Fetcher(opts, transport=httpx.MockTransport(handler)) as f:
        threads = [
            threading.Thread(target=f.fetch_image, args=(f"http://h.example/{i}.png",))
            for i in range(6)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert active["max"] == 2


def test_per_host_rate_limit() -> None:
    site = Site({f"/{i}.png": image(PNG) for i in range(3)} | {"/x.png": image(PNG)})
    clock = {"t": 100.0}
    sleeps: list[float] = []

    def sleep(s: float) -> None:
        sleeps.append(round(s, 6))
        clock["t"] += s

    opts = CrawlOptions(per_host_rate=2.0)
    with Fetcher(opts, transport=site.transport(), sleep=sleep, clock=lambda: clock["t"]) as f:
        for i in range(3):
            assert f.fetch_image(f"http://h.example/{i}.png").kind == "ok"
        assert f.fetch_image("http://other.example/x.png").kind == "ok"  # another host: no wait
    assert sleeps == [0.5, 0.5]


def test_process_chunk_stores_valid_images_only() -> None:
    site = Site(
        {"/a.png": image(PNG), "/b.png": always(Resp(200, b"not an image at all, honestly" * 2))}
    )
    stored: dict[str, bytes] = {}
    with fetcher(site) as f:
        out = process_chunk(
            FAST,
            [
                Item("http://h.example/a.png"),
                Item("http://h.example/b.png"),
                Item("http://h.example/c.png"),
            ],
            fetcher=f,
            store=lambda data, oid: stored.__setitem__(oid, data),
        )
    assert [(o.status, o.reason) for o in out] == [
        ("stored", None),
        ("invalid", "not-an-image"),
        ("failed", "http-404"),
    ]
    assert stored == {out[0].oid: PNG} and out[0].width == 128 and out[0].phash
    assert out[0].http["status"] == 200


def test_an_endless_robots_txt_is_read_up_to_its_limit() -> None:
    def endless() -> Iterator[bytes]:
        yield b"User-agent: *\nDisallow: /x/\n"
        while True:
            yield b"# padding\n" * 100

    site = Site({"/robots.txt": always(Resp(200, endless)), "/ok.png": image(PNG)})
    with fetcher(site) as f:
        assert f.fetch_image("http://h.example/x/a.png").reason == "robots"
        assert f.fetch_image("http://h.example/ok.png").kind == "ok"


def test_connections_stay_open_while_their_threads_examine_images() -> None:
    """A thread's connection is idle while the thread examines what it fetched.
    httpcore (1.0.9) closes an idle connection whenever the pool holds more than
    ``max_keepalive_connections`` in all, idle or not: with httpx's usual 20, 32
    threads would reconnect for most of their requests. The fetcher keeps as many
    as it may open."""
    threads = 32
    slow = Resp(200, PNG, {"content-type": "image/png"}, delay=0.05)  # they overlap
    site = Site({f"/{k}.png": always(slow) for k in range(threads * 4)})
    opts = FAST.replace(workers=threads, per_host_concurrency=threads, respect_robots=False)

    def fetch_and_examine(k: int) -> str:
        got = f.fetch_image(f"{base}/{k}.png").kind
        time.sleep(0.05)  # decoding and hashing it: the connection is idle meanwhile
        return got

    from concurrent.futures import ThreadPoolExecutor

    with site.serve() as base, Fetcher(opts) as f, ThreadPoolExecutor(threads) as pool:
        assert set(pool.map(fetch_and_examine, range(threads * 4))) == {"ok"}
    # 68 with a keep-alive limit of 20
    assert len(site.connections) <= threads, f"{len(site.connections)} connections"
