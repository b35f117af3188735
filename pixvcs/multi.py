"""The ``pixvcs-multi`` transfer: many media objects in one HTTP request.

git-lfs's basic transfer moves one object per request; for 20k images of 30 KB
that is 20k requests, each with its own connection, server thread and durable
write. ``pixvcs-multi`` is a transfer adapter that pixvcs (the client) offers
in the Batch API's ``transfers`` and ``pixvcs serve`` picks when it holds the
repository's media on disk; any other server answers ``basic`` and nothing
changes. The wire format (specified in docs/format.md, "The pixvcs-multi
transfer") is a stream of records, each an ASCII header line and the bytes::

    stream = "pixvcs-multi 1" LF *record
    record = OID SP SIZE LF <SIZE bytes>

Both sides verify every record against its oid before it is stored; bytes that
do not hash to their oid, a truncated stream, a malformed header or an object
over the size cap stop the whole request, and every temporary file of it is
removed: nothing of a bad request is stored.

This module holds the record format and its reader (shared by both sides),
the client's two requests, and the server's two handlers (called by
:mod:`pixvcs.server`, which does auth and routing).
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from . import fsutil
from .errors import CorruptObject
from .media import MediaStore
from .pointer import is_oid

if TYPE_CHECKING:
    import httpx

NAME = "pixvcs-multi"
MAGIC = b"pixvcs-multi 1\n"
CONTENT_TYPE = "application/x-pixvcs-multi"
#: Longest header line: 64 hex digits, a space, at most 19 digits, LF.
MAX_HEADER = 85
#: Records up to this size are verified in memory before a temp file is made.
IN_MEMORY = 16 << 20
CHUNK = 1 << 20
#: A refused upload's unread rest is read (and dropped) up to this size.
DRAIN_LIMIT = 64 << 20


class StreamError(Exception):
    """A pixvcs-multi stream that cannot be accepted. ``status`` is the HTTP
    status a server answers with (400: truncated or malformed framing, 413:
    over a limit, 422: bytes that do not hash to their oid or an object not
    asked for); ``oid`` and ``got`` are set for a hash mismatch."""

    def __init__(self, status: int, message: str, oid: str = "", got: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.oid = oid
        self.got = got


def header(oid: str, size: int) -> bytes:
    return b"%s %d\n" % (oid.encode("ascii"), size)


def stream_length(sizes: Iterable[tuple[str, int]]) -> int:
    """The exact byte length of a stream of records of these (oid, size)."""
    return len(MAGIC) + sum(len(header(o, n)) + n for o, n in sizes)


class _Raw(io.RawIOBase):
    """A raw stream over a ``read(n)`` function that may return fewer bytes than
    asked, or (an iterator of chunks) more; ``b""`` at the end."""

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._read = read
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._pending:
            self._pending = memoryview(self._read(len(buffer)))
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


class _Reader:
    """Exact reads and bounded lines over a ``read(n)`` function."""

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._buffered = io.BufferedReader(_Raw(read), buffer_size=CHUNK)

    def exact(self, n: int) -> bytes:
        """``n`` bytes, or fewer only at the end of the stream."""
        return self._buffered.read(n)

    def line(self, limit: int) -> bytes:
        """Up to and including LF, at most ``limit`` bytes (no LF: too long or the end)."""
        return self._buffered.readline(limit)


def _parse_header(line: bytes) -> tuple[str, int]:
    if not line.endswith(b"\n"):
        if len(line) >= MAX_HEADER:
            raise StreamError(400, "a record header is too long")
        raise StreamError(400, "the stream ended inside a record header (truncated)")
    parts = line[:-1].split(b" ")
    if len(parts) != 2 or not parts[1].isdigit() or len(parts[1]) > 19:
        raise StreamError(400, f"malformed record header {line[:MAX_HEADER]!r}")
    oid = parts[0].decode("ascii", "replace")
    if not is_oid(oid):  # before the oid names any file
        raise StreamError(400, f"invalid oid {oid[:80]!r} in a record header")
    return oid, int(parts[1])


def receive(
    read: Callable[[int], bytes],
    dest: MediaStore,
    *,
    max_size: int,
    max_records: int,
    wanted: Mapping[str, int | None] | None = None,
    keep: Callable[[str], bool] = lambda oid: True,
    received: Callable[[str, bytes], None] | None = None,
) -> list[tuple[str, str]]:
    """Read a whole stream; return ``(temp file, oid)`` of every verified record
    ``keep`` says to store (not yet durable: the caller syncs and publishes).
    ``received`` is called with each verified record that was read in memory
    (up to :data:`IN_MEMORY` bytes), so a reader need not read and hash it again.

    ``wanted`` (a download): the oids asked for, with the size each must have
    (None: any); every one must come, once, and nothing else. Without it (an
    upload) any oid may come, each at most once. On any error every temp file
    made so far is removed and :class:`StreamError` raised."""
    reader = _Reader(read)
    temps: list[tuple[str, str]] = []
    seen: set[str] = set()
    try:
        if reader.exact(len(MAGIC)) != MAGIC:
            raise StreamError(400, "not a pixvcs-multi stream (bad or missing first line)")
        while True:
            line = reader.line(MAX_HEADER)
            if not line:
                break
            oid, size = _parse_header(line)
            if oid in seen:
                raise StreamError(422, f"object {oid} comes twice")
            if wanted is not None:
                if oid not in wanted:
                    raise StreamError(422, f"object {oid} was not asked for")
                expected = wanted[oid]
                if expected is not None and size != expected:
                    raise StreamError(422, f"object {oid} has size {size}, not {expected}")
            seen.add(oid)
            if len(seen) > max_records:
                raise StreamError(413, f"more than {max_records} objects in one request")
            if size > max_size:
                raise StreamError(413, f"object {oid} is larger than the cap ({max_size} bytes)")
            tmp = _receive_one(reader, dest, oid, size, keep(oid), received)
            if tmp is not None:
                temps.append((tmp, oid))
        if wanted is not None and len(seen) < len(wanted):
            absent = [o for o in wanted if o not in seen]
            raise StreamError(
                400, f"the stream ended without {len(absent)} object(s), first {absent[0]}"
            )
    except BaseException:
        discard(temps)
        raise
    return temps


def _receive_one(
    reader: _Reader,
    dest: MediaStore,
    oid: str,
    size: int,
    keep: bool,
    received: Callable[[str, bytes], None] | None,
) -> str | None:
    truncated = f"the stream ended inside object {oid} (truncated)"
    if size <= IN_MEMORY:
        data = reader.exact(size)
        if len(data) != size:
            raise StreamError(400, truncated)
        got = hashlib.sha256(data).hexdigest()
        if got != oid:
            raise StreamError(422, f"object {oid}: the bytes hash to {got}", oid, got)
        if received is not None:
            received(oid, data)
        return dest.write_temp(data, oid) if keep else None
    digest = hashlib.sha256()
    tmp = fsutil.unique_tmp(dest.tmp_dir, "multi-") if keep else None
    try:
        with open(tmp, "wb") if tmp else open(os.devnull, "wb") as f:
            left = size
            while left:
                chunk = reader.exact(min(CHUNK, left))
                if not chunk:
                    raise StreamError(400, truncated)
                digest.update(chunk)
                f.write(chunk)
                left -= len(chunk)
        got = digest.hexdigest()
        if got != oid:
            raise StreamError(422, f"object {oid}: the bytes hash to {got}", oid, got)
    except BaseException:
        if tmp is not None:
            with suppress(FileNotFoundError):  # never created
                os.unlink(tmp)
        raise
    return tmp


def discard(temps: Iterable[tuple[str, str]]) -> None:
    for tmp, _oid in temps:
        with suppress(FileNotFoundError):  # gone already: fine
            os.unlink(tmp)


def gather(futures: Iterable[Future[tuple[str, str]]]) -> list[tuple[str, str]]:
    """``(temp file, oid)`` of every future, waiting for all of them so that no
    temp file is left behind; if any failed, the others' temp files are removed
    and the first failure is raised."""
    temps: list[tuple[str, str]] = []
    failures: list[BaseException] = []
    for future in futures:
        try:
            temps.append(future.result())
        except BaseException as e:  # re-raised below, after the clean-up
            failures.append(e)
    if failures:
        discard(temps)
        raise failures[0]
    return temps


def publish(dest: MediaStore, temps: Sequence[tuple[str, str]], *, sync_names: bool = True) -> None:
    """Make verified temp files durable (one sync), rename them into place, and
    make the renames durable (a second sync) before anyone is told. With
    ``sync_names=False`` the caller makes the renames durable itself, once for
    many batches (a rename lost in a crash loses a complete object's name, never
    its bytes: it is fetched again). On an error, the temp files not yet
    renamed are removed."""
    if not temps:
        return
    done = 0
    try:
        dest.sync()
        for tmp, oid in temps:
            dest.publish(tmp, oid)
            done += 1
    except BaseException:  # what is not in place yet leaves no temp file
        discard(temps[done:])
        raise
    if sync_names:
        dest.sync()


def records(
    oids: Sequence[str], sizes: Mapping[str, int], read: Callable[[str], bytes]
) -> Iterator[bytes]:
    """The stream of ``oids`` (``read`` returns an object's bytes). An object
    whose bytes are not ``sizes[oid]`` long stops the stream short."""
    yield MAGIC
    for oid in oids:
        data = read(oid)
        if len(data) != sizes[oid]:
            raise CorruptObject(oid, hashlib.sha256(data).hexdigest(), "(size changed)")
        yield header(oid, len(data)) + data


# -- server side ----------------------------------------------------------------------------
def serve_upload(
    stream: Any, length: int, media: MediaStore, *, max_size: int, max_records: int
) -> dict[str, int]:
    """Receive an upload body of ``length`` bytes into ``media``; every record
    is verified, then all of them are made durable at once. Returns
    ``{"stored": N, "present": M}``. Raises :class:`StreamError`."""
    left = length

    def read(n: int) -> bytes:
        nonlocal left
        if left <= 0:
            return b""
        chunk: bytes = stream.read(min(n, left))
        if not chunk:  # the connection ended before the Content-Length: even on a record boundary
            raise StreamError(400, f"the body ended {left} bytes before its Content-Length")
        left -= len(chunk)
        return chunk

    os.makedirs(media.tmp_dir, exist_ok=True)
    present = 0

    def keep(oid: str) -> bool:
        nonlocal present
        if media.has(oid):
            present += 1
            return False
        return True

    try:
        temps = receive(read, media, max_size=max_size, max_records=max_records, keep=keep)
    except StreamError:
        # read the rest of a modest body, so the client (still sending) gets the answer
        if left <= DRAIN_LIMIT:
            with suppress(StreamError):  # the body ended early: nothing more to read
                while read(CHUNK):
                    pass
        raise
    publish(media, temps)
    return {"stored": len(temps), "present": present}


def parse_download_request(body: Any, max_records: int) -> list[str]:
    """The oids of a download request ``{"oids": [...]}``, validated."""
    oids = body.get("oids") if isinstance(body, dict) else None
    if not isinstance(oids, list):
        raise StreamError(422, 'the request must be {"oids": [...]}')
    if len(oids) > max_records:
        raise StreamError(413, f"at most {max_records} objects per request")
    for oid in oids:
        if not isinstance(oid, str) or not is_oid(oid):
            shown = oid[:80] if isinstance(oid, str) else type(oid).__name__
            raise StreamError(422, f"invalid oid {shown!r}: expected 64 lowercase hex digits")
    if len(set(oids)) != len(oids):
        raise StreamError(422, "an oid is asked for twice")
    return oids


def download_stream(media: MediaStore, oids: Sequence[str]) -> tuple[int, Iterator[bytes]]:
    """(Content-Length, body) of the answer to a download request. The objects
    are sent as stored, not hashed: the client verifies every one (it MUST),
    and names a corrupt one, which a check here would only turn into a
    truncated stream. One gone (or resized) meanwhile ends the body short,
    which the client sees as a truncated stream."""
    sizes: dict[str, int] = {}
    for oid in oids:
        try:
            sizes[oid] = media.size(oid)
        except FileNotFoundError:
            raise StreamError(404, f"object {oid} not found") from None

    def body() -> Iterator[bytes]:
        try:
            yield from records(oids, sizes, media.read_unverified)
        except (OSError, CorruptObject):  # the client sees a short body and refuses it
            return

    return stream_length(sizes.items()), body()


# -- client side ----------------------------------------------------------------------------
def upload(
    http: httpx.Client,
    href: str,
    headers: dict[str, str],
    oids: Sequence[str],
    src: MediaStore,
) -> httpx.Response:
    """One upload request carrying ``oids`` (read verified from ``src``)."""
    sizes = {oid: src.size(oid) for oid in oids}
    return http.post(
        href,
        content=records(oids, sizes, src.read),
        headers={
            **headers,
            "Content-Type": CONTENT_TYPE,
            "Content-Length": str(stream_length(sizes.items())),
        },
    )
