"""Crawling in several processes: each forked process fetches, examines and
stores its share of the URLs on its own threads.

One process fetching for everyone spends most of its interpreter lock on the
HTTP client (about 0.6 ms of CPU an image with httpx) and on handing each body
to the examining processes through a pipe; with two cores it was the crawl's
bottleneck. Here every process does the whole of :func:`process_item` for the
URLs it is given, and the crawl's own process only hands out chunks and
journals the outcomes that come back (one message a finished chunk).

Politeness holds across the processes: this mode is used only when no pace is
set (``per_host_rate`` 0) and each process can have at least one of a host's
slots; each gets ``per_host_concurrency // processes`` of them (see
:func:`split_options`). Each process reads a host's robots.txt itself, once.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from ..media import MediaStore
from .chunk import ExaminerError, Outcome, forked_worker_init, process_item, start_forked
from .fetch import Fetcher
from .options import CrawlOptions
from .sources import Item


class CrawlProcessError(ExaminerError):
    """A crawling process died, or failed in a way that is not an outcome."""


def split_options(options: CrawlOptions, processes: int) -> CrawlOptions | None:
    """The options of each of ``processes`` crawling processes, or None when the
    politeness settings cannot be split between them: a pace per host (the
    processes would have to share one clock) or fewer slots per host than
    processes. ``workers`` stays the threads of each process."""
    if options.per_host_rate > 0 or options.per_host_concurrency < processes:
        return None
    return options.replace(per_host_concurrency=options.per_host_concurrency // processes)


def _serve(
    conn: Connection,
    parent: Fetcher,
    options: dict[str, Any],
    lfs_dir: str,
    inherited: list[int],
) -> None:
    """A crawling process: chunks in, their outcomes out (all of a chunk's in one
    message, when its last URL is done), until told to end (it then says how
    many requests it made) or its pipe closes (the crawl is over or gone: it
    stops at once)."""
    forked_worker_init(inherited)
    opts = CrawlOptions.from_json(options)
    fetcher = parent.forked(opts)
    media = MediaStore(lfs_dir)

    def store(data: bytes, oid: str) -> None:
        # durable later: the crawl syncs the filesystem (syncfs) before it commits
        media.add_bytes(data, oid=oid, durable=False)

    lock = threading.Lock()
    chunks: dict[int, tuple[int, list[dict[str, Any]]]] = {}  # index -> (expected, outcomes)

    def done(index: int, future: Future[Outcome]) -> None:
        try:
            outcome = future.result()
        except BaseException as e:  # noqa: BLE001 - a bug or a full disk: the crawl stops
            with lock, contextlib.suppress(OSError):
                conn.send(("error", f"{type(e).__name__}: {e}"))
            return
        with lock:
            expected, outcomes = chunks[index]
            outcomes.append(outcome.to_json())
            if len(outcomes) == expected:  # one message a chunk, not one a URL
                del chunks[index]
                with contextlib.suppress(OSError):  # the crawl is gone: nothing to tell
                    conn.send(("chunk", index, outcomes))

    pool = ThreadPoolExecutor(max_workers=opts.workers, thread_name_prefix="pixvcs-crawl")
    try:
        while True:
            message = conn.recv()
            if message[0] == "end":
                break
            _, index, items = message
            with lock:
                chunks[index] = (len(items), [])
            for raw in items:
                future = pool.submit(process_item, Item.from_json(raw), opts, fetcher, store)
                future.add_done_callback(partial(done, index))
        pool.shutdown(wait=True)
        with lock:
            conn.send(("bye", fetcher.requests))
    except (EOFError, OSError):  # the crawl ended without us: drop what is queued
        pool.shutdown(wait=False, cancel_futures=True)
        os._exit(0)
    finally:
        fetcher.close()


class CrawlProcesses:
    """Forked crawling processes (create it before starting threads: a fork
    copies the locks other threads hold), each with ``options`` (see
    :func:`split_options`) and its own :meth:`Fetcher.forked` of ``fetcher``.
    Images go into the media store at ``lfs_dir`` without ``fsync``: the crawl
    syncs the filesystem before it commits."""

    def __init__(
        self, fetcher: Fetcher, options: CrawlOptions, lfs_dir: str, processes: int
    ) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("fork")
        self.options = options
        self.requests = 0  # made by the processes, known once they have ended
        self._conns: list[Connection] = []
        self._procs: list[BaseProcess] = []
        try:
            for _ in range(processes):
                args = (fetcher, options.to_json(), lfs_dir)
                mine, proc = start_forked(ctx, _serve, args, "pixvcs-crawl", self._conns)
                self._conns.append(mine)
                self._procs.append(proc)
        except BaseException:
            self.kill()
            raise

    def run(
        self,
        chunks: Sequence[tuple[int, Sequence[Item]]],
        report: Callable[[int, list[Outcome]], None],
        tick: Callable[[], None],
        interval: float,
    ) -> None:
        """Process ``chunks`` ((journal index, items)); ``report(index, outcomes)``
        for each chunk as it is done, ``tick()`` at least every ``interval`` seconds.
        Each process is kept about two threads' worth of URLs ahead; a chunk goes
        to the first process with room, so a slow one gets fewer."""
        todo = deque((index, list(items)) for index, items in chunks if items)
        sizes = {index: len(items) for index, items in todo}
        queued = dict.fromkeys(self._conns, 0)
        room = 2 * self.options.workers

        def feed(conn: Connection) -> None:
            while todo and queued[conn] < room:
                index, items = todo.popleft()
                conn.send(("chunk", index, [it.to_json() for it in items]))
                queued[conn] += len(items)

        for conn in self._conns:
            feed(conn)
        left = len(sizes)
        while left:
            for ready in wait(self._conns, timeout=interval):
                assert isinstance(ready, Connection)
                conn = ready
                try:
                    message = conn.recv()
                except (EOFError, OSError):
                    raise CrawlProcessError(
                        f"a crawling process died ({self._exit_codes()}); "
                        "run the crawl again to resume it"
                    ) from None
                if message[0] == "chunk":
                    left -= 1
                    queued[conn] -= sizes[message[1]]
                    feed(conn)
                    report(message[1], [Outcome.from_json(o) for o in message[2]])
                elif message[0] == "error":
                    raise CrawlProcessError(f"a crawling process failed: {message[1]}")
            tick()

    def _exit_codes(self) -> str:
        codes = []
        for proc in self._procs:
            proc.join(timeout=1)
            codes.append("running" if proc.exitcode is None else f"exit code {proc.exitcode}")
        return ", ".join(codes)

    def close(self) -> None:
        """Let the processes finish and end; adds up their requests."""
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.send(("end",))
        for conn, proc in zip(self._conns, self._procs, strict=True):
            with contextlib.suppress(EOFError, OSError):
                while conn.poll(30):
                    message = conn.recv()
                    if message[0] == "bye":
                        self.requests += int(message[1])
                        break
            proc.join(timeout=10)
        self.kill()

    def kill(self) -> None:
        """End the processes now (a failing crawl): what they stored is whole
        (written through temp files), what they were fetching is dropped."""
        for conn in self._conns:
            conn.close()
        for proc in self._procs:
            if proc.is_alive():
                proc.kill()
            proc.join()
        self._conns, self._procs = [], []
