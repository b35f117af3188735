"""Indexing a received pack in one pass, keeping the pointers it carries.

dulwich's ``add_thin_pack`` reads a fetched pack twice (a pass that checks
the stream, then a pass that resolves and hashes every object to build the
index), in per-object Python. A clone of 20,000 images receives 20,000
pointer blobs, and that was most of the history fetch; the clone then read
every pointer blob back from the new pack to learn the oids to download.

Here a pack whose objects are all stored whole (what ``pixvcs serve`` sends)
is checked and indexed in one sequential pass: its trailer checksum, then per
object its header, its zlib stream (decompressed in bounded pieces), its
declared size, its SHA-1 and its CRC32; the index is git's (written by
dulwich), the pack and its index are made durable and published (``.pack``
before ``.idx``: a reader sees a pack only once its index exists). Pointer
blobs are kept as they pass (blob id -> bytes), so the caller reads none of
them again. A pack with a delta in it is left to dulwich (the caller falls
back); anything malformed is refused by :class:`MalformedPack`, naming what,
before anything is published.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import zlib
from collections.abc import Callable
from contextlib import suppress
from typing import Any, BinaryIO

from . import fsutil
from .pointer import MAX_POINTER_SIZE, looks_like_pointer

#: Whole-object types (commit, tree, blob, tag) and their names in object ids.
TYPE_NAMES = {1: b"commit", 2: b"tree", 3: b"blob", 4: b"tag"}
DELTA_TYPES = (6, 7)  # OFS_DELTA, REF_DELTA: left to dulwich

#: Compressed bytes fed to zlib per step after the first, and the largest piece
#: of an object decompressed at once (a big ordinary blob is hashed in pieces).
FEED = 1 << 16
PIECE = 1 << 20


class MalformedPack(ValueError):
    """A received pack that is not what git's pack format says it must be."""


class Ingested:
    """What :func:`ingest` published: the pack's name and the pointers it carried."""

    def __init__(self, name: str, objects: int, pointers: dict[str, bytes]) -> None:
        self.name = name
        self.objects = objects
        self.pointers = pointers  # blob id (hex) -> pointer bytes


def add_pack_stream(
    store: Any,
    hint: str,
    write: Callable[[BinaryIO], object],
    dulwich_index: Callable[[Callable[[int], bytes]], object],
) -> dict[str, bytes]:
    """Add a pack that ``write(f)`` writes into ``f``, a new temporary file of
    ``store.pack_dir`` (named ``<hint><pid>-...``), by :func:`add_pack_file`;
    an empty one adds nothing. The temporary file never outlives the call
    (published under the pack's name, or removed, also when ``write`` or the
    indexing raises). Returns the pointer blobs seen. Used for every pack that
    arrives: an HTTP fetch, a push into ``pixvcs serve`` or into a directory."""
    os.makedirs(store.pack_dir, exist_ok=True)
    tmp = fsutil.unique_tmp(store.pack_dir, hint)
    try:
        with open(tmp, "xb") as f:
            write(f)
            empty = f.tell() == 0
        return {} if empty else add_pack_file(store, tmp, dulwich_index)
    finally:
        with suppress(FileNotFoundError):  # published, or never written
            os.unlink(tmp)


def add_pack_file(
    store: Any, path: str, dulwich_index: Callable[[Callable[[int], bytes]], object]
) -> dict[str, bytes]:
    """Add the complete received pack at ``path`` (inside ``store.pack_dir``)
    to ``store``: by :func:`ingest`, else (a delta in it) by
    ``dulwich_index(read)``, dulwich's indexer reading the file. Returns the
    pointer blobs seen (none when dulwich indexed it). Raises
    :class:`MalformedPack`; ``path`` is left for the caller to remove."""
    got = ingest(store, path)
    if got is not None:
        return got.pointers
    with open(path, "rb") as f:
        dulwich_index(f.read)
    return {}


def ingest(store: Any, path: str) -> Ingested | None:
    """Index the complete pack at ``path`` (inside ``store.pack_dir``) and
    publish it into ``store``. Returns None, publishing nothing, when the pack
    holds a delta (the caller hands it to dulwich) or the store is not a
    SHA-1 store on disk. Raises :class:`MalformedPack`. ``path`` is renamed
    into place or left for the caller to remove."""
    from dulwich.pack import write_pack_index

    pack_dir = getattr(store, "pack_dir", None)
    fmt = getattr(getattr(store, "object_format", None), "name", "sha1")
    if pack_dir is None or fmt != "sha1":
        return None
    with open(path, "rb") as f:
        length = os.fstat(f.fileno()).st_size
        if length < 32:
            raise MalformedPack(f"a pack of {length} bytes is too short")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            found = _scan(data, length)
            if found is None:
                return None
            entries, pointers = found
            checksum = bytes(data[length - 20 :])
            os.fsync(f.fileno())
    entries.sort()
    name = f"pack-{checksum.hex()}"
    final = os.path.join(pack_dir, name)
    tmp_idx = fsutil.unique_tmp(pack_dir, "tmp-idx-")
    try:
        with open(tmp_idx, "wb") as f:
            write_pack_index(f, entries, checksum)
            f.flush()
            os.fsync(f.fileno())
        os.rename(path, final + ".pack")  # the same name twice: the same bytes
        os.rename(tmp_idx, final + ".idx")
    finally:
        if os.path.exists(tmp_idx):
            os.unlink(tmp_idx)
    fsutil.fsync_dir(pack_dir)
    return Ingested(name, len(entries), pointers)


def pointers_in(path: str) -> dict[str, bytes]:
    """The pointer blobs of the pack file at ``path`` (blob id -> bytes), read
    in the same one pass as :func:`ingest` (each id is the SHA-1 of the bytes
    the pack holds, so a pointer is never credited to the wrong blob). Empty
    when the pack holds a delta or is not sound: these are hints, and whoever
    reads such a pack through dulwich meets its problems there."""
    try:
        with open(path, "rb") as f:
            length = os.fstat(f.fileno()).st_size
            if length < 32:
                return {}
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                found = _scan(data, length)
    except (OSError, MalformedPack):
        return {}
    return {} if found is None else found[1]


def _scan(
    data: mmap.mmap, length: int
) -> tuple[list[tuple[bytes, int, int | None]], dict[str, bytes]] | None:
    """(index entries, pointers) of a pack; None when it holds a delta."""
    if data[:4] != b"PACK":
        raise MalformedPack("no PACK signature")
    version = int.from_bytes(data[4:8], "big")
    if version not in (2, 3):
        raise MalformedPack(f"pack version {version} is not 2 or 3")
    count = int.from_bytes(data[8:12], "big")
    end = length - 20
    with memoryview(data)[:end] as body:
        if hashlib.sha1(body).digest() != data[end:length]:
            raise MalformedPack("the pack's checksum does not match its bytes")
    entries: list[tuple[bytes, int, int | None]] = []
    pointers: dict[str, bytes] = {}
    pos = 12
    for _ in range(count):
        start = pos
        if pos >= end:
            raise MalformedPack(f"the pack ends after {len(entries)} of {count} objects")
        c = data[pos]
        pos += 1
        kind = (c >> 4) & 7
        size = c & 15
        shift = 4
        while c & 0x80:
            if pos >= end or shift > 63:
                raise MalformedPack(f"object {len(entries)}: a malformed header")
            c = data[pos]
            pos += 1
            size |= (c & 0x7F) << shift
            shift += 7
        if kind in DELTA_TYPES:
            return None
        type_name = TYPE_NAMES.get(kind)
        if type_name is None:
            raise MalformedPack(f"object {len(entries)}: unknown type {kind}")
        h = hashlib.sha1(type_name + b" " + str(size).encode() + b"\0")
        d = zlib.decompressobj()
        keep = kind == 3 and size <= MAX_POINTER_SIZE
        kept = b""
        got = 0
        fed = pos
        # the first feed covers a whole small object's stream (deflate's
        # bound), so zlib copies only a few bytes past its end; a big one
        # comes FEED bytes at a time
        step = min(size + (size >> 12) + 64, FEED)
        pending = b""
        while not d.eof:
            if not pending:
                if fed >= end:
                    raise MalformedPack(f"object {len(entries)}: its data is cut short")
                pending = data[fed : min(fed + step, end)]
                fed += len(pending)
                step = FEED
            try:
                out = d.decompress(pending, PIECE)
            except zlib.error as e:
                raise MalformedPack(f"object {len(entries)}: bad zlib data ({e})") from None
            pending = d.unconsumed_tail
            got += len(out)
            if got > size:
                raise MalformedPack(f"object {len(entries)}: more bytes than its size")
            h.update(out)
            if keep:
                kept += out
        if got != size:
            raise MalformedPack(f"object {len(entries)}: {got} bytes, its header says {size}")
        pos = fed - len(d.unused_data)
        sha = h.digest()
        entries.append((sha, start, zlib.crc32(data[start:pos])))
        if keep and looks_like_pointer(kept):
            pointers[sha.hex()] = kept
    if pos != end:
        raise MalformedPack(f"{end - pos} bytes after the last of {count} objects")
    return entries, pointers
