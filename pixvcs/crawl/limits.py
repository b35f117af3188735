"""Per-host politeness limits: requests in flight, and the pace of requests.

A :class:`Fetcher` asks its limiter for a *slot* on a host (at most
``per_host_concurrency`` requests in flight) and then for its *turn* (requests
at least ``interval`` seconds apart). :class:`LocalLimits` keeps both in this
process, for the in-process crawl. :class:`RedisLimits` keeps them in Redis, so
that every ``pixvcs worker`` of a job shares them: with N workers a host still
sees at most ``--per-host`` requests in flight and ``--rate`` requests a second,
not N times that.

In Redis (keys expire on their own; a job's keys are prefixed with its id):

* ``pixvcs:crawl:<job>:slots:<host>`` — a sorted set of slot holders, scored by
  the time their lease ends. A live holder renews its leases every third of the
  lease (a daemon thread per process); a holder that dies (a killed worker) stops
  counting when its lease ends, ``lease`` seconds (15) later.
* ``pixvcs:crawl:<job>:next:<host>`` — the earliest time (Redis server clock, ms)
  the next request may start.

A slot a thread releases is kept by its process for :data:`SPARE_FOR` seconds
(renewed like any other): the next request of the process to that host takes it
without a round trip to Redis, and a slot nobody took is given back then. So
slots held are never fewer than requests in flight (the limit holds), while a
busy worker pays Redis two round trips per slot and :data:`REUSE_FOR` seconds,
not per request (a tenth of a millisecond of CPU each, on every image, before).
A slot is reused for :data:`REUSE_FOR` seconds at most, then goes back to Redis,
where the other workers of the job may take it (the limit is what is shared;
who gets a freed slot first is a race, as it always was).

Both are changed by Lua scripts, so each step is atomic on the server and the
clocks of the workers never matter.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol


class Limits(Protocol):
    def acquire(self, host: str) -> str:
        """Wait for a slot on ``host``; returns a token for :meth:`release`."""

    def release(self, host: str, token: str) -> None: ...

    def wait_turn(self, host: str, interval: float) -> None:
        """Wait until a request to ``host`` may start, ``interval`` after the last."""


class LocalLimits:
    """Slots and turns of one process (threads share them)."""

    def __init__(
        self,
        per_host: int,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_host = per_host
        self.sleep = sleep
        self.clock = clock
        self._lock = threading.Lock()
        self._slots: dict[str, threading.Semaphore] = {}
        self._next: dict[str, float] = {}

    def acquire(self, host: str) -> str:
        with self._lock:
            sem = self._slots.get(host)
            if sem is None:
                sem = self._slots[host] = threading.Semaphore(self.per_host)
        sem.acquire()
        return ""

    def release(self, host: str, token: str) -> None:
        self._slots[host].release()

    def wait_turn(self, host: str, interval: float) -> None:
        if interval <= 0:
            return
        with self._lock:
            now = self.clock()
            at = max(now, self._next.get(host, 0.0))
            self._next[host] = at + interval
        if at > now:
            self.sleep(at - now)


# KEYS[1] slots zset; ARGV: now is taken from the server; limit, lease_ms, token
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
  return 1
end
return 0
"""

# KEYS[1] slots zset; ARGV: lease_ms, tokens... (renews the leases still held)
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 2)
return 1
"""

# KEYS[1] next-time key; ARGV: interval_ms, ttl_ms. Returns ms to wait.
_TURN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local nxt = tonumber(redis.call('GET', KEYS[1]) or '0')
local at = math.max(now, nxt)
redis.call('SET', KEYS[1], at + tonumber(ARGV[1]), 'PX', tonumber(ARGV[2]))
return at - now
"""


#: Seconds a released slot is kept for this process's next request to the host.
SPARE_FOR = 0.05
#: Seconds after it was taken from Redis that a slot may still be reused.
REUSE_FOR = 1.0
#: Seconds between the lease thread's looks at spare slots.
_TICK = 0.02


class RedisLimits:
    """Slots and turns shared by every process of a job, through Redis."""

    def __init__(
        self,
        url: str,
        job: str,
        per_host: int,
        *,
        lease: float = 15.0,
        poll: float = 0.005,
        sleep: Callable[[float], None] = time.sleep,
        client: Any = None,
    ) -> None:
        import redis

        self.redis = client if client is not None else redis.Redis.from_url(url)
        self.prefix = f"pixvcs:crawl:{job}"
        self.per_host = per_host
        self.lease_ms = int(lease * 1000)
        self.poll = poll
        self.sleep = sleep
        self._acquire = self.redis.register_script(_ACQUIRE)
        self._renew = self.redis.register_script(_RENEW)
        self._turn = self.redis.register_script(_TURN)
        self._held: dict[str, set[str]] = {}  # host -> tokens held by this process
        self._spare: dict[str, list[tuple[str, float]]] = {}  # host -> (token, released at)
        self._count: dict[str, int] = {}  # host -> slots held or being asked for here
        self._taken: dict[str, float] = {}  # token -> when it was taken from Redis
        self._held_lock = threading.Condition()
        self._renewer: threading.Thread | None = None

    def acquire(self, host: str) -> str:
        # this process's own threads queue here first: only as many as could hold a
        # slot ask Redis (and poll it briefly); the others wait for a spare slot
        with self._held_lock:
            while True:
                spare = self._spare.get(host)
                if spare:  # released a moment ago by another request of this process
                    return spare.pop()[0]
                if self._count.get(host, 0) < self.per_host:
                    self._count[host] = self._count.get(host, 0) + 1
                    break
                self._held_lock.wait()
        try:
            token = secrets.token_hex(8)
            key = f"{self.prefix}:slots:{host}"
            delay = self.poll
            while not self._acquire(keys=[key], args=[self.per_host, self.lease_ms, token]):
                self.sleep(delay)
                delay = min(delay * 1.5, 0.05)
        except BaseException:
            with self._held_lock:
                self._count[host] -= 1
                self._held_lock.notify_all()
            raise
        with self._held_lock:
            self._held.setdefault(host, set()).add(token)
            self._taken[token] = time.monotonic()
            if self._renewer is None:
                self._renewer = threading.Thread(
                    target=self._renew_forever, name="pixvcs-lease", daemon=True
                )
                self._renewer.start()
        return token

    def release(self, host: str, token: str) -> None:
        """Keep the slot for this process's next request to ``host`` (a thread
        waiting for one takes it now; the lease thread gives it back
        :data:`SPARE_FOR` seconds later if none took it), or, once it has served
        :data:`REUSE_FOR` seconds, give it back now."""
        now = time.monotonic()
        with self._held_lock:
            if now - self._taken.get(token, 0.0) < REUSE_FOR:
                self._spare.setdefault(host, []).append((token, now))
                self._held_lock.notify_all()
                return
        self._give(host, token)

    def _give(self, host: str, token: str) -> None:
        """Give a slot back to Redis."""
        with self._held_lock:
            self._held.get(host, set()).discard(token)
            self._taken.pop(token, None)
        try:
            self.redis.zrem(f"{self.prefix}:slots:{host}", token)
        finally:
            with self._held_lock:
                self._count[host] -= 1
                self._held_lock.notify_all()

    def _give_back(self, now: float) -> None:
        """Release the spare slots kept for longer than :data:`SPARE_FOR`."""
        with self._held_lock:
            old: list[tuple[str, str]] = []
            for host, spare in self._spare.items():
                old += [(host, t) for t, at in spare if now - at >= SPARE_FOR]
                spare[:] = [(t, at) for t, at in spare if now - at < SPARE_FOR]
        for host, token in old:
            try:
                self._give(host, token)
            except Exception:  # noqa: BLE001 - Redis away: the slot's lease ends on its own
                continue

    def _renew_forever(self) -> None:
        renew_at = time.monotonic() + self.lease_ms / 3000
        while True:
            time.sleep(_TICK)
            now = time.monotonic()
            self._give_back(now)
            if now < renew_at:
                continue
            renew_at = now + self.lease_ms / 3000
            with self._held_lock:
                held = {h: sorted(t) for h, t in self._held.items() if t}
            for host, tokens in held.items():
                try:
                    self._renew(keys=[f"{self.prefix}:slots:{host}"], args=[self.lease_ms, *tokens])
                except Exception:  # noqa: BLE001 - Redis away for a moment: the next round
                    continue

    def wait_turn(self, host: str, interval: float) -> None:
        if interval <= 0:
            return
        ms = int(interval * 1000)
        wait = int(self._turn(keys=[f"{self.prefix}:next:{host}"], args=[ms, max(ms * 4, 60_000)]))
        if wait > 0:
            self.sleep(wait / 1000)
