"""The media store: image bytes under the SHA-256 of those bytes.

Layout (identical to git-lfs, so ``git lfs fsck`` reads it)::

    <git-dir>/lfs/objects/<oid[0:2]>/<oid[2:4]>/<oid>    read-only, never modified
    <git-dir>/lfs/tmp/                                     temporary files, same filesystem

Objects are written through a temporary file that is made durable before it is
renamed into place, so an object under its final name is always complete.
Readers verify: bytes that do not hash to their name are never returned.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from contextlib import suppress

from . import fsutil
from .errors import CorruptObject
from .pointer import is_oid

CHUNK = 1 << 20


class MediaStore:
    def __init__(self, lfs_dir: str) -> None:
        self.root = lfs_dir
        self.objects_dir = os.path.join(lfs_dir, "objects")
        self.tmp_dir = os.path.join(lfs_dir, "tmp")

    @classmethod
    def create(cls, lfs_dir: str) -> MediaStore:
        os.makedirs(os.path.join(lfs_dir, "objects"), exist_ok=True)
        os.makedirs(os.path.join(lfs_dir, "tmp"), exist_ok=True)
        return cls(lfs_dir)

    def path(self, oid: str) -> str:
        return os.path.join(self.objects_dir, oid[0:2], oid[2:4], oid)

    def has(self, oid: str) -> bool:
        return os.path.exists(self.path(oid))

    def absent(self, oids: Iterable[str]) -> list[str]:
        """The oids of ``oids`` the store lacks, in order."""
        return [o for o in oids if not self.has(o)]

    def add_bytes(self, data: bytes, *, oid: str | None = None, durable: bool = True) -> str:
        """Store ``data``; return its oid. ``durable=False`` leaves the final
        flush to a later :meth:`sync` (used by batched writers)."""
        if oid is None:
            oid = hashlib.sha256(data).hexdigest()
        dest = self.path(oid)
        if os.path.exists(dest):
            return oid
        fsutil.atomic_write(dest, data, self.tmp_dir, readonly=True, fsync=durable)
        return oid

    def write_temp(self, data: bytes, oid: str | None = None) -> str:
        """First half of a batched write: bytes in a temp file, not yet durable.

        Given the ``oid``, the temp file is made next to its final name
        (``objects/aa/bb/.tmp-<oid>-...``), already read-only, so that
        :meth:`publish` is one rename: the writers (parallel workers) create
        the fan-out directories, not the single process that publishes."""
        if oid is None:
            tmp = fsutil.unique_tmp(self.tmp_dir)
            with open(tmp, "wb") as f:
                f.write(data)
            return tmp
        dest_dir = os.path.dirname(self.path(oid))
        tmp = fsutil.unique_tmp(dest_dir, f".tmp-{oid[:16]}-")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        except FileNotFoundError:
            self._make_fanout(oid)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        return tmp

    def _make_fanout(self, oid: str) -> None:
        """Create ``objects/aa/bb/`` (a fresh store makes thousands: one mkdir
        each, not makedirs' walk up the path)."""
        top = os.path.join(self.objects_dir, oid[0:2])
        leaf = os.path.join(top, oid[2:4])
        try:
            os.mkdir(leaf)
            return
        except FileExistsError:  # made by another writer meanwhile: as good
            return
        except FileNotFoundError:  # objects/aa/ is missing too
            pass
        os.makedirs(top, exist_ok=True)
        with suppress(FileExistsError):  # made by another writer meanwhile
            os.mkdir(leaf)

    def link_from(self, path: str, oid: str) -> None:
        """Store the (verified, read-only) object file at ``path`` as ``oid`` by a
        hard link: no bytes are copied. Durable after the next :meth:`sync`.
        Raises OSError (EXDEV, EPERM, ...) when the filesystem cannot link it."""
        dest = self.path(oid)
        try:
            os.link(path, dest)
        except FileNotFoundError:
            if not os.path.exists(path):
                raise
            self._make_fanout(oid)
            with suppress(FileExistsError):  # stored meanwhile: the same bytes
                os.link(path, dest)
        except FileExistsError:  # stored already: the same bytes
            pass

    def publish(self, tmp: str, oid: str) -> None:
        """Second half: rename a temp file (made durable by :meth:`sync`) into place."""
        dest = self.path(oid)
        if os.path.exists(dest):
            os.unlink(tmp)
            return
        if os.path.dirname(tmp) == os.path.dirname(dest):
            os.rename(tmp, dest)  # made read-only when it was created
            return
        fsutil.atomic_rename(tmp, dest, readonly=True)

    def sync(self) -> None:
        fsutil.sync_filesystem(self.objects_dir)

    def read(self, oid: str) -> bytes:
        """The object's bytes, verified; raises FileNotFoundError or CorruptObject."""
        data = self.read_unverified(oid)
        got = hashlib.sha256(data).hexdigest()
        if got != oid:
            raise CorruptObject(oid, got, self.root)
        return data

    def verify(self, oid: str) -> str:
        """Hash the stored object; return the hash it actually has."""
        h = hashlib.sha256()
        with open(self.path(oid), "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        return h.hexdigest()

    def size(self, oid: str) -> int:
        return os.stat(self.path(oid)).st_size

    def read_unverified(self, oid: str) -> bytes:
        """The object's bytes as stored, not hashed: for a sender whose receiver
        verifies them (the pixvcs-multi download). Raises FileNotFoundError."""
        with open(self.path(oid), "rb") as f:
            return f.read()

    def remove(self, oid: str) -> None:
        os.unlink(self.path(oid))

    def __iter__(self) -> Iterator[str]:
        """Every oid in the store (names that are not oids are skipped)."""
        try:
            tops = os.scandir(self.objects_dir)
        except FileNotFoundError:
            return
        with tops:
            for a in tops:
                if not a.is_dir() or len(a.name) != 2:
                    continue
                with os.scandir(a.path) as mids:
                    for b in mids:
                        if not b.is_dir() or len(b.name) != 2:
                            continue
                        with os.scandir(b.path) as leaves:
                            for leaf in leaves:
                                if is_oid(leaf.name) and leaf.name.startswith(a.name + b.name):
                                    yield leaf.name

    def stray_temp_files(self) -> list[str]:
        """Temporary files left by interrupted writers: in ``tmp/`` and, named
        ``.tmp-*``, in the fan-out directories (a full walk of the store)."""
        out: list[str] = []
        try:
            out.extend(e.path for e in os.scandir(self.tmp_dir) if e.is_file())
        except FileNotFoundError:
            pass
        for dirpath, _dirs, files in os.walk(self.objects_dir):
            out.extend(os.path.join(dirpath, f) for f in files if f.startswith(".tmp-"))
        return out
