"""Per-host limits shared through a real Redis server: however many processes (worker
stand-ins here, real `pixvcs worker`s in the last test) crawl one host, it sees at
most --per-host requests in flight and --rate requests a second."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pixvcs.crawl.limits import REUSE_FOR, SPARE_FOR, LocalLimits, RedisLimits
from tests.crawl.site import pattern_image
from tests.e2e.conftest import Tools


class InFlight:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.starts: list[float] = []

    def enter(self) -> None:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
            self.starts.append(time.monotonic())

    def leave(self) -> None:
        with self.lock:
            self.now -= 1


def _hammer(limits: list[RedisLimits], threads_each: int, hold: float, seen: InFlight) -> None:
    def work(lim: RedisLimits) -> None:
        token = lim.acquire("http://h")
        try:
            seen.enter()
            time.sleep(hold)
            seen.leave()
        finally:
            lim.release("http://h", token)

    ts = [threading.Thread(target=work, args=(lim,)) for lim in limits for _ in range(threads_each)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=60)


@pytest.mark.e2e
def test_slots_are_shared_by_every_process_of_a_job(redis_url: str) -> None:
    a, b = (RedisLimits(redis_url, "job-slots", 2) for _ in range(2))  # two "workers"
    seen = InFlight()
    _hammer([a, b], threads_each=4, hold=0.15, seen=seen)
    assert seen.peak == 2 and len(seen.starts) == 8
    # another job has its own slots
    other = RedisLimits(redis_url, "job-other", 2)
    token = other.acquire("http://h")
    other.release("http://h", token)


@pytest.mark.e2e
def test_a_released_slot_serves_the_process_a_moment_then_goes_back(redis_url: str) -> None:
    a, b = (RedisLimits(redis_url, "job-spare", 1) for _ in range(2))
    token = a.acquire("http://h")
    a.release("http://h", token)
    assert a.acquire("http://h") == token  # kept: no round trip to Redis
    a.release("http://h", token)
    got: list[str] = []
    waiter = threading.Thread(target=lambda: got.append(b.acquire("http://h")))
    released = time.monotonic()
    waiter.start()
    waiter.join(timeout=5)
    assert got and got[0] != token, "a spare slot was never given back"
    assert time.monotonic() - released >= SPARE_FOR * 0.9  # held for a moment...
    assert time.monotonic() - released < 2.0  # ...not for long
    b.release("http://h", got[0])


@pytest.mark.e2e
def test_a_busy_process_gives_its_slots_back_to_redis_now_and_then(redis_url: str) -> None:
    a = RedisLimits(redis_url, "job-busy", 1)
    tokens: set[str] = set()
    end = time.monotonic() + REUSE_FOR * 2.5
    while time.monotonic() < end:  # one request after another, never a pause
        t = a.acquire("http://h")
        tokens.add(t)
        time.sleep(0.005)
        a.release("http://h", t)
    # reused for REUSE_FOR seconds, then given back (and another taken): the other
    # workers of the job get their chance at the host each time
    assert 2 <= len(tokens) <= 4


@pytest.mark.e2e
def test_a_live_holder_keeps_its_slot_and_a_killed_ones_frees_itself(redis_url: str) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys, time\n"
            "from pixvcs.crawl.limits import RedisLimits\n"
            f"lim = RedisLimits({redis_url!r}, 'job-lease', 1, lease=1.0)\n"
            "lim.acquire('http://h')\n"
            "print('held', flush=True)\n"
            "time.sleep(120)\n"
        )],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        other = RedisLimits(redis_url, "job-lease", 1, lease=1.0)
        got: list[str] = []
        waiter = threading.Thread(target=lambda: got.append(other.acquire("http://h")))
        waiter.start()
        waiter.join(timeout=2.5)  # 2.5 leases: the live holder renewed its slot
        assert not got, "a live holder's slot was taken"
        killed_at = time.monotonic()
        holder.kill()  # a worker killed mid-fetch never releases its slot
        waiter.join(timeout=10)
        assert got, "the killed holder's slot never freed"
        assert time.monotonic() - killed_at < 3.0
        other.release("http://h", got[0])
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.e2e
def test_the_pace_is_shared(redis_url: str) -> None:
    limits = [RedisLimits(redis_url, "job-pace", 8) for _ in range(2)]
    starts: list[float] = []
    lock = threading.Lock()

    def turn(lim: RedisLimits) -> None:
        lim.wait_turn("http://h", 0.1)
        with lock:
            starts.append(time.monotonic())

    ts = [threading.Thread(target=turn, args=(limits[i % 2],)) for i in range(10)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=30)
    starts.sort()
    assert starts[-1] - starts[0] >= 0.8  # 10 turns, 0.1 s apart, whoever asks
    # the local limiter paces one process the same way
    local = LocalLimits(1)
    t0 = time.monotonic()
    for _ in range(4):
        local.wait_turn("http://h", 0.05)
    assert time.monotonic() - t0 >= 0.14


@contextmanager
def counting_server(seen: InFlight, delay: float, n: int) -> Iterator[str]:
    images = {f"/i/{k}.png": pattern_image(7000 + k) for k in range(n)}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path not in images:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            seen.enter()
            try:
                time.sleep(delay)
                body = images[self.path]
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            finally:
                seen.leave()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


@pytest.mark.e2e
def test_two_workers_keep_one_hosts_limit(
    tools: Tools, workers_for: object, redis_url: str, tmp_path: Path
) -> None:
    ds = tmp_path / "ds"
    tools.pixvcs(tmp_path, "init", str(ds))
    workers = workers_for(ds)  # type: ignore[operator]
    workers.start(2)
    seen = InFlight()
    n = 24
    with counting_server(seen, 0.15, n) as origin:
        urls = tmp_path / "urls.txt"
        urls.write_text("".join(f"{origin}/i/{k}.png\n" for k in range(n)))
        out = tools.pixvcs(
            ds, "crawl", "--broker", redis_url, "--urls", str(urls), "--label", "x",
            "--per-host", "2", "--rate", "0", "--workers", "8", "--json", timeout=180,
        )  # fmt: skip
    assert json.loads(out.stdout)["added"] == n
    # 2 workers x 8 threads, yet never more than --per-host 2 in flight at the host
    assert seen.peak == 2, seen.peak
