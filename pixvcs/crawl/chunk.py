"""One unit of crawl work: fetch, validate, identify and store a chunk of URLs.

:func:`process_chunk` is a function of (options, items) alone, apart from the
network and the content-addressed media store it writes to (writes that are
idempotent: the same bytes land under the same name). That is what makes it a
Celery task in waiting: a worker that receives ``(options.to_json(), [item.to_json()
...])`` can run it, and running it twice stores nothing twice. Its result is plain
JSON-able data, one :class:`Outcome` per item, in the chunk's order.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from ..fsutil import worker_init
from ..imageinfo import ImageInfo, InvalidImage, inspect_image, sniff
from ..media import MediaStore
from .fetch import Fetcher
from .options import CrawlOptions
from .sources import Item

#: What an outcome's ``status`` may be.
STORED, INVALID, FAILED = "stored", "invalid", "failed"


@dataclass(slots=True)
class Outcome:
    """What became of one URL. ``stored`` outcomes carry the image's facts."""

    url: str
    status: str  # "stored" | "invalid" | "failed"
    reason: str | None = None
    detail: str | None = None
    oid: str | None = None
    size: int | None = None
    format: str | None = None
    width: int | None = None
    height: int | None = None
    mode: str | None = None
    phash: str | None = None
    http: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"url": self.url, "status": self.status}
        for key in (
            "reason",
            "detail",
            "oid",
            "size",
            "format",
            "width",
            "height",
            "mode",
            "phash",
        ):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.http:
            out["http"] = self.http
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Outcome:
        return cls(
            data["url"],
            data["status"],
            data.get("reason"),
            data.get("detail"),
            data.get("oid"),
            data.get("size"),
            data.get("format"),
            data.get("width"),
            data.get("height"),
            data.get("mode"),
            data.get("phash"),
            dict(data.get("http") or {}),
        )

    def info(self) -> ImageInfo | None:
        if self.status != STORED or self.width is None or self.height is None:
            return None
        return ImageInfo(
            self.width, self.height, self.format or "", self.mode or "", self.phash or ""
        )


def classify_invalid(message: str) -> str:
    """The reason code of an :class:`InvalidImage` message."""
    m = message.lower()
    if m.startswith("decompression bomb") or "frames exceeds" in m:
        return "decompression-bomb"
    if m.startswith("empty"):
        return "empty"
    if m.startswith("not an image"):
        return "not-an-image"
    return "does-not-decode"


def validate(data: bytes, options: CrawlOptions) -> tuple[ImageInfo | None, str | None, str | None]:
    """``(info, None, None)`` for an acceptable image, else ``(None, reason, detail)``.
    The format is checked from the magic bytes before anything is decoded; bombs are
    refused from the header (:func:`pixvcs.imageinfo.inspect_image`)."""
    if len(data) > options.max_bytes:
        return None, "too-large", f"{len(data)} bytes exceeds the limit of {options.max_bytes}"
    fmt = sniff(data[:32])
    if fmt is None:
        return None, "not-an-image", "unrecognised content"
    if fmt not in options.formats:
        return None, "format-not-allowed", f"{fmt} is not one of {', '.join(options.formats)}"
    try:
        info = inspect_image(data, max_pixels=options.max_pixels)
    except InvalidImage as e:
        return None, classify_invalid(str(e)), str(e)
    if info.width < options.min_width or info.height < options.min_height:
        return (
            None,
            "too-small",
            f"{info.width}x{info.height} is below {options.min_width}x{options.min_height}",
        )
    return info, None, None


@dataclass(frozen=True, slots=True)
class Examined:
    """What a downloaded body turned out to be: an image (``info``), stored under
    ``oid``, or not one (``reason``, ``detail``)."""

    info: ImageInfo | None
    oid: str | None = None
    reason: str | None = None
    detail: str | None = None


#: Examines a downloaded body: validates, hashes and (when it is an image) stores it.
Examiner = Callable[[bytes], Examined]


def examine(data: bytes, options: CrawlOptions, store: Callable[[bytes, str], None]) -> Examined:
    """Validate ``data`` (:func:`validate`: a full decode), hash it, and store it
    with ``store(data, oid)`` when it is an acceptable image."""
    info, reason, detail = validate(data, options)
    if info is None:
        return Examined(None, None, reason, detail)
    oid = hashlib.sha256(data).hexdigest()
    store(data, oid)
    return Examined(info, oid)


def process_item(
    item: Item,
    options: CrawlOptions,
    fetcher: Fetcher,
    store: Callable[[bytes, str], None],
    examiner: Examiner | None = None,
) -> Outcome:
    """Fetch one URL and examine what came back (``examiner``, by default
    :func:`examine` in this thread, storing with ``store``)."""
    fetched = fetcher.fetch_image(item.url)
    http = {k: v for k, v in fetched.http_facts().items() if v is not None}
    if fetched.kind != "ok" or fetched.data is None:
        status = INVALID if fetched.kind == "invalid" else FAILED
        return Outcome(item.url, status, fetched.reason, fetched.detail, http=http)
    data = fetched.data
    found = examine(data, options, store) if examiner is None else examiner(data)
    info = found.info
    if info is None:
        return Outcome(item.url, INVALID, found.reason, found.detail, size=len(data), http=http)
    return Outcome(
        item.url,
        STORED,
        oid=found.oid,
        size=len(data),
        format=info.format,
        width=info.width,
        height=info.height,
        mode=info.mode,
        phash=info.phash,
        http=http,
    )


def process_chunk(
    options: CrawlOptions,
    items: Sequence[Item],
    *,
    fetcher: Fetcher,
    store: Callable[[bytes, str], None],
    report: Callable[[Outcome], None] | None = None,
    examiner: Examiner | None = None,
) -> list[Outcome]:
    """Fetch, validate, hash and store each item of the chunk, in order.
    ``store(data, oid)`` must put the bytes in the media store (idempotently);
    ``report(outcome)``, if given, hears of each item as soon as it is done (so a
    job can record progress within a chunk). ``examiner`` (e.g. a
    :class:`ProcessExaminer`) replaces the validating, hashing and storing done
    in this thread."""
    out = []
    for item in items:
        outcome = process_item(item, options, fetcher, store, examiner)
        if report is not None:
            report(outcome)
        out.append(outcome)
    return out


# -- examining in worker processes ------------------------------------------------------
def _serve_examiner(
    conn: Connection, options: dict[str, Any], lfs_dir: str, inherited: list[int]
) -> None:
    """A worker process of :class:`ProcessExaminer`: bodies in, verdicts out, until
    the other end closes. ``inherited``: descriptors of the parent's ends of the
    pipes, which a forked worker must close (or no worker would ever read EOF)."""
    forked_worker_init(inherited)
    opts = CrawlOptions.from_json(options)
    media = MediaStore(lfs_dir)

    def store(data: bytes, oid: str) -> None:
        # durable later: the crawl syncs the filesystem (syncfs) before it commits
        media.add_bytes(data, oid=oid, durable=False)

    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):  # the crawl is over (or gone)
            return
        try:
            reply: tuple[str, Any] = ("ok", examine(data, opts, store))
        except Exception as e:  # noqa: BLE001 - sent back, raised by the caller
            reply = ("error", e)
        try:
            conn.send(reply)
        except Exception as e:  # noqa: BLE001 - an exception that does not pickle
            conn.send(("error", ExaminerError(f"{type(e).__name__}: {e}")))


def start_forked(
    ctx: Any,
    target: Callable[..., None],
    args: tuple[Any, ...],
    name: str,
    open_ends: list[Connection],
) -> tuple[Connection, BaseProcess]:
    """Fork ``target(conn, *args, inherited)`` with a pipe to it: returns this
    side's end and the process. ``open_ends``: this process's ends of the
    pipes to the other workers; the new worker closes its copies of them and of
    its own parent end (``inherited``, see :func:`forked_worker_init`)."""
    mine, theirs = ctx.Pipe()
    inherited = [c.fileno() for c in [*open_ends, mine]]
    proc = ctx.Process(target=target, args=(theirs, *args, inherited), name=name, daemon=True)
    proc.start()
    theirs.close()
    return mine, proc


def forked_worker_init(inherited: list[int]) -> None:
    """First steps of a worker forked by :func:`start_forked`: no inherited
    repository lock, death with the parent, ^C left to the crawl (it stops its
    threads, then closes the pipes), and the parent's pipe ends closed (or no
    worker would ever read EOF)."""
    worker_init()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for fd in inherited:
        with contextlib.suppress(OSError):  # not open here: nothing to close
            os.close(fd)


def can_fork() -> bool:
    """Can :class:`ProcessExaminer` start its workers here (is there fork)?"""
    import multiprocessing

    return "fork" in multiprocessing.get_all_start_methods()


class ExaminerError(RuntimeError):
    """A worker process of a :class:`ProcessExaminer` died or failed unexpectedly."""


class ProcessExaminer:
    """An :data:`Examiner` that decodes, hashes and stores in worker processes.

    Fetching is I/O and stays on the crawl's threads; examining is CPU (a full
    decode, SHA-256, the perceptual hash) and, on threads, all of it would queue
    for one interpreter lock. A thread takes an idle worker, writes the body to
    its pipe and waits for the verdict: no broker thread in between (a
    ``ProcessPoolExecutor``'s management thread, competing with the fetching
    threads for the lock, made the round trip slower than the decode). The worker
    examines with the same :func:`examine` and stores in the media store at
    ``lfs_dir`` without ``fsync`` (the caller syncs the filesystem before it
    commits, as for images stored on its own threads).

    The workers are forked at once: create it before starting threads (a fork
    copies the locks other threads hold), where there is fork (:func:`can_fork`).
    It is not for Celery workers: ``multiprocessing`` refuses children to their
    pool processes, and measured with two workers on two cores, a third and
    fourth busy process cost more CPU per image than they saved."""

    def __init__(self, options: CrawlOptions, lfs_dir: str, processes: int) -> None:
        import multiprocessing

        self._ctx = multiprocessing.get_context("fork")
        self._idle: queue.SimpleQueue[Connection] = queue.SimpleQueue()
        self._conns: list[Connection] = []
        self._procs: list[BaseProcess] = []
        try:
            for _ in range(processes):
                self._start(options, lfs_dir)
        except BaseException:
            self.close()
            raise

    def _start(self, options: CrawlOptions, lfs_dir: str) -> None:
        mine, proc = start_forked(
            self._ctx, _serve_examiner, (options.to_json(), lfs_dir), "pixvcs-examine", self._conns
        )
        self._conns.append(mine)
        self._procs.append(proc)
        self._idle.put(mine)

    def __call__(self, data: bytes) -> Examined:
        conn = self._idle.get()
        try:
            conn.send_bytes(data)
            status, value = conn.recv()
        except (EOFError, OSError) as e:  # the worker died (or close() was called)
            raise ExaminerError(f"an image-examining worker process died ({e!r})") from None
        finally:
            # back even when dead: the next caller fails at once instead of waiting
            # for a worker forever
            self._idle.put(conn)
        if status != "ok":
            raise value
        assert isinstance(value, Examined)
        return value

    @property
    def alive(self) -> bool:
        """Every worker is still running (a dead one fails every later call)."""
        return bool(self._procs) and all(p.is_alive() for p in self._procs)

    def close(self) -> None:
        for conn in self._conns:
            conn.close()  # the worker reads EOF and ends
        for proc in self._procs:
            proc.join(timeout=10)
            if proc.is_alive():  # stuck on an image: it holds nothing worth waiting for
                proc.kill()
                proc.join()
        self._conns, self._procs = [], []

    def __enter__(self) -> ProcessExaminer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
