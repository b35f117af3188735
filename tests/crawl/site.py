"""A fake web site for crawl tests: generated images and pages, served either through
``httpx.MockTransport`` (unit tests) or by a real threaded ``http.server`` on
127.0.0.1 (the end-to-end test). Every request is logged."""

from __future__ import annotations

import io
import random
import struct
import threading
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
from PIL import Image, ImageDraw


def pattern_image(
    seed: int, size: tuple[int, int] = (128, 128), fmt: str = "PNG", quality: int = 90
) -> bytes:
    """A structured image (shapes on a background) whose perceptual hash survives
    resizing and re-encoding, and differs between seeds."""
    rng = random.Random(seed)
    im = Image.new("RGB", (128, 128), tuple(rng.randrange(256) for _ in range(3)))  # type: ignore[arg-type]
    draw = ImageDraw.Draw(im)
    for _ in range(8):
        x0, y0 = rng.randrange(0, 100), rng.randrange(0, 100)
        x1, y1 = x0 + rng.randrange(10, 60), y0 + rng.randrange(10, 60)
        colour = tuple(rng.randrange(256) for _ in range(3))
        if rng.random() < 0.5:
            draw.rectangle((x0, y0, x1, y1), fill=colour)  # type: ignore[arg-type]
        else:
            draw.ellipse((x0, y0, x1, y1), fill=colour)  # type: ignore[arg-type]
    if size != (128, 128):
        im = im.resize(size, Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    if fmt == "JPEG":
        im.save(buf, format="JPEG", quality=quality)
    else:
        im.save(buf, format=fmt)
    return buf.getvalue()


def resized_copy(data: bytes, size: tuple[int, int], fmt: str = "JPEG") -> bytes:
    im = Image.open(io.BytesIO(data)).convert("RGB").resize(size, Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format=fmt, quality=80)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A PNG whose header claims width x height pixels, with a tiny (bogus) IDAT:
    only a decoder that trusts the header would try to allocate it."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


@dataclass
class Resp:
    status: int = 200
    body: bytes | Callable[[], Iterator[bytes]] = b""
    headers: dict[str, str] = field(default_factory=dict)
    error: type[Exception] | None = None  # MockTransport: raise this instead
    delay: float = 0.0  # real server: sleep before answering
    truncate: int | None = None  # real server: claim the full length, send this many bytes


Route = Callable[[int], Resp]  # argument: how many times this path was requested before


def always(resp: Resp) -> Route:
    return lambda n: resp


def sequence(*resps: Resp) -> Route:
    """The n-th request gets the n-th response (the last one repeats)."""
    return lambda n: resps[min(n, len(resps) - 1)]


def image(data: bytes, ctype: str = "image/png", **headers: str) -> Route:
    return always(Resp(200, data, {"content-type": ctype, **headers}))


def html(text: str) -> Route:
    return always(Resp(200, text.encode(), {"content-type": "text/html; charset=utf-8"}))


class Site:
    """Routes by path (query included). Unknown paths are 404; /robots.txt is 404
    (no rules) unless routed."""

    def __init__(self, routes: dict[str, Route] | None = None) -> None:
        self.routes: dict[str, Route] = dict(routes or {})
        self.log: list[str] = []
        self.connections: set[tuple[str, int]] = set()  # real server: clients' addresses
        self._lock = threading.Lock()

    def __setitem__(self, path: str, route: Route) -> None:
        self.routes[path] = route

    def respond(self, path: str) -> Resp:
        with self._lock:
            n = self.log.count(path)
            self.log.append(path)
        route = self.routes.get(path)
        return route(n) if route else Resp(404, b"not found", {"content-type": "text/plain"})

    def hits(self, prefix: str = "/") -> Counter[str]:
        with self._lock:
            return Counter(p for p in self.log if p.startswith(prefix) and p != "/robots.txt")

    # -- as a MockTransport ---------------------------------------------------------
    def transport(self) -> httpx.MockTransport:
        def handler(request: httpx.Request) -> httpx.Response:
            path = request.url.raw_path.decode()
            resp = self.respond(path)
            if resp.error is not None:
                raise resp.error("simulated", request=request)  # type: ignore[call-arg]
            body = resp.body
            if callable(body):
                return httpx.Response(resp.status, headers=resp.headers, content=body())
            return httpx.Response(resp.status, headers=resp.headers, content=body)

        return httpx.MockTransport(handler)

    # -- as a real server ---------------------------------------------------------------
    @contextmanager
    def serve(self) -> Iterator[str]:
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                with site._lock:
                    site.connections.add(self.client_address)
                resp = site.respond(self.path)
                if resp.delay:
                    threading.Event().wait(resp.delay)
                body = resp.body() if callable(resp.body) else resp.body
                data = body if isinstance(body, bytes) else b"".join(body)
                self.send_response(resp.status)
                for k, v in resp.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                if resp.truncate is not None:
                    self.send_header("Connection", "close")
                self.end_headers()
                try:
                    self.wfile.write(data if resp.truncate is None else data[: resp.truncate])
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):  # the client gave up first
                    pass
                if resp.truncate is not None:
                    self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                return None

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                # a client that gave up first (a timeout, a refused bomb) resets the
                # connection: expected here, and not worth a traceback on stderr
                return None

        server = Server(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)
