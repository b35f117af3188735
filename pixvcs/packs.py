"""Writing git objects as one pack, the fast way.

dulwich's ``add_objects`` writes a pack and then reads it back to build the
index; for a commit of 100,000 pointer blobs that re-read is most of the cost.
dulwich's ``write_pack`` does not re-read, but it compresses every object
chunk by chunk (a tree of 10,000 entries is 10,000 ``compress`` calls) and
serialises it twice. Here each object is serialised once and compressed in
one call, the index is built from the entries recorded while writing, the
pack is written under a temporary name and published by renaming ``.pack``
before ``.idx`` (readers only see a pack once its index exists). Formats are
git's (pack version 2, whole objects only; index version 2).
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from collections.abc import Sequence
from typing import Any

from dulwich.object_format import SHA1
from dulwich.objects import ShaFile
from dulwich.pack import pack_object_header, write_pack_index

from . import fsutil

#: Fewer objects than this are written loose (a pack per tiny commit helps nobody).
MIN_PACK = 64


def add_objects(store: Any, objects: Sequence[tuple[ShaFile, str | None]]) -> None:
    """Store ``objects`` in ``store``: loose when few, else as one new pack."""
    if not objects:
        return
    sha1 = getattr(getattr(store, "object_format", None), "name", "sha1") == "sha1"
    if len(objects) < MIN_PACK or not hasattr(store, "pack_dir") or not sha1:
        for obj, _path in objects:
            store.add_object(obj)
        if hasattr(store, "path"):
            # dulwich fsyncs loose objects only under core.fsyncObjectFiles, which
            # stock git now warns about: one syncfs makes them durable instead
            fsutil.sync_filesystem(os.fspath(store.path))
        return
    unique = list({obj.id: obj for obj, _path in objects}.values())
    pack_dir = store.pack_dir
    os.makedirs(pack_dir, exist_ok=True)
    base = os.path.join(pack_dir, f"tmp-pixvcs-{os.getpid()}-{os.urandom(4).hex()}")
    try:
        checksum = write_pack(base, unique)
        final = os.path.join(pack_dir, f"pack-{checksum.hex()}")
        os.rename(base + ".pack", final + ".pack")
        os.rename(base + ".idx", final + ".idx")
        fsutil.fsync_dir(pack_dir)
    finally:
        for ext in (".pack", ".idx"):
            try:
                os.unlink(base + ext)
            except FileNotFoundError:  # renamed into place (or never written)
                pass


def object_header(type_num: int, size: int) -> bytes:
    """A pack entry's header for a whole object (git's variable-length size):
    dulwich's encoder, for a whole object of a SHA-1 pack."""
    return bytes(pack_object_header(type_num, None, size, SHA1))


def write_pack(base: str, objects: Sequence[ShaFile]) -> bytes:
    """Write ``objects`` whole as ``base.pack`` with its index ``base.idx``, both
    fsynced; returns the pack's checksum (its SHA-1, which names it)."""
    entries: list[tuple[bytes, int, int]] = []
    digest = hashlib.sha1()
    with open(base + ".pack", "wb") as f:
        head = b"PACK" + struct.pack(">LL", 2, len(objects))
        f.write(head)
        digest.update(head)
        offset = len(head)
        for obj in objects:
            raw = obj.as_raw_string()
            entry = object_header(obj.type_num, len(raw)) + zlib.compress(raw)
            f.write(entry)
            digest.update(entry)
            entries.append((obj.sha().digest(), offset, zlib.crc32(entry)))
            offset += len(entry)
        checksum = digest.digest()
        f.write(checksum)
        f.flush()
        os.fsync(f.fileno())
    entries.sort()
    with open(base + ".idx", "wb") as f:
        write_pack_index(f, entries, checksum)
        f.flush()
        os.fsync(f.fileno())
    return checksum


def guard_bitmaps(store: Any) -> None:
    """Make ``store`` use pack bitmaps only when every pack has one.

    ``git gc`` writes a bitmap beside the pack of a bare repository; the next
    push adds a pack without one. dulwich (1.2) then picks its bitmap
    reachability (some pack has a bitmap) and fails with FileNotFoundError on
    the pack that has none, so every fetch, clone and push of that repository
    failed. With this guard such a store walks the graph instead, as it does
    when no pack has a bitmap."""
    original = getattr(store, "get_reachability_provider", None)
    pack_dir = getattr(store, "pack_dir", None)
    if original is None or pack_dir is None:
        return

    def provider(prefer_bitmaps: bool = True) -> Any:
        return original(prefer_bitmaps=prefer_bitmaps and _every_pack_has_a_bitmap(pack_dir))

    store.get_reachability_provider = provider


def _every_pack_has_a_bitmap(pack_dir: str) -> bool:
    try:
        names = set(os.listdir(pack_dir))
    except FileNotFoundError:
        return False
    packs = [n[: -len(".pack")] for n in names if n.endswith(".pack")]
    return bool(packs) and all(f"{base}.bitmap" in names for base in packs)
