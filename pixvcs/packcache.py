"""The media store of a cache directory: objects appended to pack files.

A reader's cache differs from a repository's media store: it is derived data
(every object is re-hashed on every read, and one that reads wrong is fetched
again), it is written in bulk (a cold read of 20,000 images), and it is
evicted in bulk. One file per object costs an inode, a directory entry and a
rename per object written and an unlink per object evicted; on a filesystem
that has deleted many files recently (ext4 skips recently freed inodes when
it allocates), that is most of what a cold read costs. So a cache appends
objects to a few pack files and keeps an index of where each one is::

    <root>/index.sqlite     objects(oid, pack, offset, size), packs(name, bytes, used, writer)
    <root>/packs/<name>     "pixvcs-cache-pack 1" LF, then records: OID SP SIZE LF <SIZE bytes>
    <root>/tmp/             large downloads in progress (streamed to a file first)

Each process appends to a pack of its own (named by its pid, the time and
random bytes) and rotates to a new one at :attr:`PackStore.pack_limit` bytes.
The index (SQLite, WAL, ``synchronous=OFF``) is shared by every process of the
cache directory. A pack's ``used`` is the last time one of its objects was
read; eviction removes whole packs, least recently used first (see
:class:`pixvcs.cache.MediaCache`).

Nothing here is made durable: a crash may leave index rows pointing at bytes
that never reached the disk, which read as corrupt (their hash is wrong) and
are fetched again. The record headers make a pack self-describing, so a lost
index could be rebuilt from the packs (today it is simply started afresh).

:class:`PackStore` is a :class:`~pixvcs.media.MediaStore`, so every download
path (pixvcs-multi, basic transfer, directory and S3 remotes) writes into it
unchanged: :meth:`PackStore.write_temp` appends the record and returns a
token that names no file, :meth:`PackStore.publish` queues its index row and
:meth:`PackStore.sync` commits the queued rows in one transaction.
"""

from __future__ import annotations

import errno
import hashlib
import os
import sqlite3
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import suppress

from .errors import CorruptObject
from .media import CHUNK, MediaStore

MAGIC = b"pixvcs-cache-pack 1\n"
#: Index schema version (``PRAGMA user_version``); another one is started afresh.
SCHEMA = 1
#: Largest pack a process appends to before it starts a new one.
PACK_LIMIT = 64 << 20
#: Pack files a process keeps open for reading.
OPEN_PACKS = 64
#: Marks a :meth:`PackStore.write_temp` token (a path that is never created).
_TOKEN = "#record#"

_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS objects (
    oid TEXT PRIMARY KEY,
    pack TEXT NOT NULL,
    offset INTEGER NOT NULL,
    size INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS objects_pack ON objects(pack);
CREATE TABLE IF NOT EXISTS packs (
    name TEXT PRIMARY KEY,
    bytes INTEGER NOT NULL,
    used REAL NOT NULL,
    writer INTEGER
);
"""


class PackStore(MediaStore):
    """Objects in pack files under ``root`` (see the module docstring).
    Thread-safe; a forked child starts afresh (its own connection and pack)."""

    def __init__(self, root: str, pack_limit: int = PACK_LIMIT) -> None:
        super().__init__(root)
        self.packs_dir = os.path.join(root, "packs")
        self.objects_dir = self.packs_dir  # what download paths create: harmless
        self.db_path = os.path.join(root, "index.sqlite")
        self.pack_limit = max(1, pack_limit)
        self._lock = threading.RLock()
        self._pid = -1
        self._reset()
        _stores.add(self)

    @classmethod
    def create(cls, root: str, pack_limit: int = PACK_LIMIT) -> PackStore:
        os.makedirs(os.path.join(root, "packs"), exist_ok=True)
        os.makedirs(os.path.join(root, "tmp"), exist_ok=True)
        return cls(root, pack_limit)

    def _reset(self) -> None:
        self._db: sqlite3.Connection | None = None
        self._writer: tuple[str, int] | None = None  # (pack name, fd)
        self._inflight: dict[str, int] = {}  # pack -> writes reserved, not yet done
        self._retired: dict[str, int] = {}  # rotated packs' fds, closed once idle
        self._end = 0  # the writer pack's length, records reserved included
        self._pending: list[tuple[str, str, int, int]] = []  # index rows to commit
        self._fds: OrderedDict[str, int] = OrderedDict()  # packs open for reading
        self._used: dict[str, float] = {}  # pack -> last read, not yet recorded
        self._pid = os.getpid()

    # -- the index ------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        # a forked child has been reset by _after_fork (no getpid() per call: it
        # is a system call, and this runs several times per object)
        if self._db is None:
            self._db = self._connect()
        return self._db

    def _connect(self) -> sqlite3.Connection:
        os.makedirs(self.packs_dir, exist_ok=True)
        for attempt in range(2):
            db = sqlite3.connect(self.db_path, timeout=60.0, check_same_thread=False)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=OFF")
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version not in (0, SCHEMA):
                    raise sqlite3.DatabaseError(f"index schema {version}, not {SCHEMA}")
                with db:
                    db.executescript(_SCHEMA_SQL)
                    db.execute(f"PRAGMA user_version={SCHEMA}")
                return db
            except sqlite3.DatabaseError:
                db.close()
                if attempt:
                    raise
                self._start_afresh()
        raise AssertionError("unreachable")

    def _start_afresh(self) -> None:
        """An unreadable index (or another schema): the cache is derived data,
        so drop the index and every pack it described."""
        for suffix in ("", "-wal", "-shm"):
            with suppress(FileNotFoundError):
                os.unlink(self.db_path + suffix)
        with suppress(FileNotFoundError):
            for name in os.listdir(self.packs_dir):
                with suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.packs_dir, name))

    def _row(self, oid: str) -> tuple[str, int, int]:
        """(pack name, offset, size) from the index; FileNotFoundError if none."""
        with self._lock:
            row = (
                self._conn()
                .execute("SELECT pack, offset, size FROM objects WHERE oid = ?", (oid,))
                .fetchone()
            )
        if row is None:
            raise FileNotFoundError(errno.ENOENT, "not in the cache", oid)
        return str(row[0]), int(row[1]), int(row[2])

    def locate(self, oid: str) -> tuple[str, int, int]:
        """(pack file, offset, size) of a cached object; FileNotFoundError if none."""
        name, offset, size = self._row(oid)
        return os.path.join(self.packs_dir, name), offset, size

    def has(self, oid: str) -> bool:
        with self._lock:
            row = self._conn().execute("SELECT 1 FROM objects WHERE oid = ?", (oid,)).fetchone()
        return row is not None

    def absent(self, oids: Iterable[str]) -> list[str]:
        wanted = list(oids)
        have: set[str] = set()
        with self._lock:
            db = self._conn()
            for i in range(0, len(wanted), 500):
                part = wanted[i : i + 500]
                marks = ",".join("?" * len(part))
                have.update(
                    r[0]
                    for r in db.execute(f"SELECT oid FROM objects WHERE oid IN ({marks})", part)
                )
        return [o for o in wanted if o not in have]

    def size(self, oid: str) -> int:
        return self.locate(oid)[2]

    def bytes_of(self, oids: Sequence[str]) -> int:
        """Total size of those of ``oids`` that are cached."""
        total = 0
        with self._lock:
            db = self._conn()
            for i in range(0, len(oids), 500):
                part = list(oids[i : i + 500])
                marks = ",".join("?" * len(part))
                row = db.execute(
                    f"SELECT coalesce(sum(size), 0) FROM objects WHERE oid IN ({marks})", part
                ).fetchone()
                total += int(row[0])
        return total

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            rows = self._conn().execute("SELECT oid FROM objects ORDER BY oid").fetchall()
        return iter([r[0] for r in rows])

    def path(self, oid: str) -> str:
        raise NotImplementedError("a cached object has no file of its own (see locate)")

    # -- writing --------------------------------------------------------------------------
    def write_temp(self, data: bytes, oid: str | None = None) -> str:
        """Append a record (the caller verified ``data`` against ``oid``); the
        returned token names no file: :meth:`publish` indexes the record."""
        if oid is None:
            oid = hashlib.sha256(data).hexdigest()
        head = b"%s %d\n" % (oid.encode("ascii"), len(data))
        name, fd, start = self._reserve(len(head) + len(data))
        try:
            if os.pwritev(fd, [head, data], start) != len(head) + len(data):
                _pwrite_all(fd, [head + data], start)  # a short write: finish it plainly
        finally:
            self._written(name)
        return os.path.join(self.packs_dir, f"{name}{_TOKEN}{start + len(head)}#{len(data)}")

    def _reserve(self, n: int) -> tuple[str, int, int]:
        """Room for ``n`` bytes in this process's pack: (name, fd, offset)."""
        with self._lock:
            db = self._conn()
            if self._writer is not None and self._end >= self.pack_limit:
                self._close_writer(db)
            if self._writer is None:
                name = f"{os.getpid()}-{time.time_ns()}-{os.urandom(4).hex()}.pack"
                with db:  # the row first: a pack file is never unknown to the index
                    db.execute(
                        "INSERT INTO packs (name, bytes, used, writer) VALUES (?, ?, ?, ?)",
                        (name, len(MAGIC), time.time(), os.getpid()),
                    )
                fd = os.open(
                    os.path.join(self.packs_dir, name),
                    os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                    0o644,
                )
                os.write(fd, MAGIC)
                self._writer, self._end = (name, fd), len(MAGIC)
            name, fd = self._writer
            start, self._end = self._end, self._end + n
            self._inflight[name] = self._inflight.get(name, 0) + 1
            return name, fd, start

    def _written(self, name: str) -> None:
        """A reserved write is done; a rotated pack's fd closes once idle."""
        with self._lock:
            left = self._inflight[name] = self._inflight.get(name, 1) - 1
            if left <= 0:
                del self._inflight[name]
                fd = self._retired.pop(name, None)
                if fd is not None:
                    os.close(fd)

    def _close_writer(self, db: sqlite3.Connection) -> None:
        if self._writer is None:
            return
        name, fd = self._writer
        self._writer = None
        self._flush(db)
        with db:
            db.execute(
                "UPDATE packs SET bytes = ?, writer = NULL WHERE name = ?", (self._end, name)
            )
        if self._inflight.get(name):
            self._retired[name] = fd  # other threads still write into it
        else:
            os.close(fd)

    def publish(self, tmp: str, oid: str) -> None:
        """Index a record :meth:`write_temp` appended (at the next :meth:`sync`),
        or append a downloaded temp file (a large object) and index that."""
        base = os.path.basename(tmp)
        if _TOKEN in base:
            pack, _, rest = base.partition(_TOKEN)
            at_text, _, size_text = rest.partition("#")
            with self._lock:
                self._pending.append((oid, pack, int(at_text), int(size_text)))
            return
        try:
            size = os.path.getsize(tmp)
            head = b"%s %d\n" % (oid.encode("ascii"), size)
            name, fd, start = self._reserve(len(head) + size)
            try:
                _pwrite_all(fd, [head], start)
                with open(tmp, "rb") as f:
                    at = start + len(head)
                    while chunk := f.read(CHUNK):
                        _pwrite_all(fd, [chunk], at)
                        at += len(chunk)
            finally:
                self._written(name)
        finally:
            with suppress(FileNotFoundError):
                os.unlink(tmp)
        with self._lock:
            self._pending.append((oid, name, start + len(head), size))

    def sync(self) -> None:
        """Commit the queued index rows (no ``fsync``: see the module docstring)."""
        with self._lock:
            db = self._conn()
            self._flush(db)
            if self._writer is not None:
                with db:
                    db.execute(
                        "UPDATE packs SET bytes = ? WHERE name = ?", (self._end, self._writer[0])
                    )

    def _flush(self, db: sqlite3.Connection) -> None:
        if not self._pending:
            return
        rows, self._pending = self._pending, []
        with db:  # never a row for a pack another process evicted meanwhile
            db.executemany(
                "INSERT OR REPLACE INTO objects (oid, pack, offset, size) "
                "SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM packs WHERE name = ?)",
                [(*row, row[1]) for row in rows],
            )

    def add_bytes(self, data: bytes, *, oid: str | None = None, durable: bool = True) -> str:
        if oid is None:
            oid = hashlib.sha256(data).hexdigest()
        if not self.has(oid):
            self.publish(self.write_temp(data, oid), oid)
            self.sync()
        return oid

    def link_from(self, path: str, oid: str) -> None:
        raise OSError(errno.ENOTSUP, "a cache never links objects", path)

    # -- reading --------------------------------------------------------------------------
    def read(self, oid: str) -> bytes:
        """The object's bytes, verified; FileNotFoundError (not cached, or its
        pack evicted) or CorruptObject."""
        with self._lock:  # re-entrant: the row and the read under one hold
            name, offset, size = self._row(oid)
            try:
                fd = self._reading_fd(name)
            except FileNotFoundError:
                self.drop_pack(name)  # evicted under a stale row: forget it all
                raise
            self._used[name] = time.time()
            # under the lock: another thread may close the fd (eviction, trimming)
            data = os.pread(fd, size, offset) if size else b""
        got = hashlib.sha256(data).hexdigest()
        if got != oid:
            raise CorruptObject(oid, got, self.root)
        return data

    def verify(self, oid: str) -> str:
        try:
            self.read(oid)
        except CorruptObject as e:
            return e.got
        return oid

    def _reading_fd(self, name: str) -> int:
        fd = self._fds.get(name)
        if fd is not None:
            self._fds.move_to_end(name)
            return fd
        fd = os.open(os.path.join(self.packs_dir, name), os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        self._fds[name] = fd
        while len(self._fds) > OPEN_PACKS:
            _, old = self._fds.popitem(last=False)
            os.close(old)
        return fd

    def remove(self, oid: str) -> None:
        """Forget one object (its bytes stay in the pack until the pack goes)."""
        with self._lock:
            db = self._conn()
            self._pending = [p for p in self._pending if p[0] != oid]
            with db:
                db.execute("DELETE FROM objects WHERE oid = ?", (oid,))

    # -- eviction (called by MediaCache under its own lock) --------------------------------
    def record_use(self) -> None:
        """Write the packs' last-use times this process noted since the last call."""
        with self._lock:
            if not self._used:
                return
            used, self._used = self._used, {}
            with self._conn() as db:
                db.executemany(
                    "UPDATE packs SET used = max(used, ?) WHERE name = ?",
                    [(t, n) for n, t in used.items()],
                )

    def total(self) -> int:
        with self._lock:
            row = self._conn().execute("SELECT coalesce(sum(bytes), 0) FROM packs").fetchone()
        return int(row[0])

    def packs(self) -> list[tuple[str, int, float, int | None]]:
        """(name, bytes, last use, writer pid or None) of every pack, oldest use first."""
        with self._lock:
            rows = (
                self._conn()
                .execute("SELECT name, bytes, used, writer FROM packs ORDER BY used, name")
                .fetchall()
            )
        return [(r[0], int(r[1]), float(r[2]), r[3]) for r in rows]

    def packs_of(self, oids: Iterable[str]) -> set[str]:
        with self._lock:
            db = self._conn()
            out: set[str] = set()
            for oid in oids:
                row = db.execute("SELECT pack FROM objects WHERE oid = ?", (oid,)).fetchone()
                if row is not None:
                    out.add(row[0])
            return out

    def unindexed(self) -> set[str]:
        """Packs this process is writing or has records of not yet indexed."""
        with self._lock:
            if self._pid != os.getpid():
                return set()
            out = {p[1] for p in self._pending} | set(self._inflight) | set(self._retired)
            if self._writer is not None:
                out.add(self._writer[0])
            return out

    def drop_pack(self, name: str) -> None:
        """Forget a pack and every object in it, then unlink it."""
        with self._lock:
            with self._conn() as db:
                db.execute("DELETE FROM objects WHERE pack = ?", (name,))
                db.execute("DELETE FROM packs WHERE name = ?", (name,))
            fd = self._fds.pop(name, None)
            if fd is not None:
                os.close(fd)
            self._used.pop(name, None)
        with suppress(FileNotFoundError):  # dropped by another process meanwhile
            os.unlink(os.path.join(self.packs_dir, name))

    def close(self) -> None:
        with self._lock:
            if self._pid != os.getpid():
                self._reset()
                return
            if self._db is not None:
                self._close_writer(self._db)
                self._db.close()
            for fd in self._fds.values():
                os.close(fd)
            self._reset()


_stores: weakref.WeakSet[PackStore] = weakref.WeakSet()
_inherited: list[sqlite3.Connection] = []


def _after_fork() -> None:
    """A forked child starts afresh: its own lock (a parent thread may have held
    the old one at the fork), connection, pack and file descriptors."""
    for store in list(_stores):
        if store._db is not None:
            # never closed here: closing a connection the parent still uses may
            # checkpoint or unlink its WAL (SQLite: do not carry one across fork)
            _inherited.append(store._db)
        store._lock = threading.RLock()
        store._reset()


os.register_at_fork(after_in_child=_after_fork)


def writer_alive(pid: int | None) -> bool:
    """Whether the process that appends to a pack may still be running."""
    if pid is None:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _pwrite_all(fd: int, parts: Sequence[bytes], offset: int) -> None:
    for part in parts:
        view = memoryview(part)
        while view:
            n = os.pwrite(fd, view, offset)
            view, offset = view[n:], offset + n
