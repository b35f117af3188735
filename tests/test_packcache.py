"""The cache's pack store: records appended to pack files, indexed in SQLite."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pixvcs.cache import MediaCache
from pixvcs.errors import CorruptObject
from pixvcs.packcache import MAGIC, PackStore


def _obj(i: int, size: int = 3000) -> tuple[str, bytes]:
    data = (b"%d-" % i) * (size // 3)
    return hashlib.sha256(data).hexdigest(), data


def test_records_written_by_many_threads_read_back_verified(tmp_path: Path) -> None:
    store = PackStore.create(str(tmp_path / "media"), pack_limit=50_000)
    objects = dict(_obj(i) for i in range(200))

    def put(item: tuple[str, bytes]) -> None:
        oid, data = item
        store.publish(store.write_temp(data, oid), oid)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, objects.items()))
    store.sync()
    for oid, data in objects.items():
        assert store.read(oid) == data
    packs = os.listdir(tmp_path / "media" / "packs")
    assert 1 < len(packs) < 200, "rotated at the limit, not one pack per object"
    for name in packs:  # every pack is self-describing
        with open(tmp_path / "media" / "packs" / name, "rb") as f:
            assert f.read(len(MAGIC)) == MAGIC
    other = PackStore(str(tmp_path / "media"))  # another reader of the same directory
    assert sorted(other) == sorted(objects)


def test_a_large_download_is_appended_from_its_temp_file(tmp_path: Path) -> None:
    store = PackStore.create(str(tmp_path / "media"))
    oid, data = _obj(7, 3 << 20)
    tmp = tmp_path / "media" / "tmp" / "download-1"
    tmp.write_bytes(data)
    store.publish(str(tmp), oid)
    store.sync()
    assert not tmp.exists()
    assert store.read(oid) == data and store.size(oid) == len(data)


def test_rotten_bytes_are_refused_and_forgotten(tmp_path: Path) -> None:
    store = PackStore.create(str(tmp_path / "media"))
    oid, data = _obj(1)
    store.add_bytes(data, oid=oid)
    pack, offset, _ = store.locate(oid)
    with open(pack, "r+b") as f:
        f.seek(offset + 10)
        f.write(b"X")
    with pytest.raises(CorruptObject):
        store.read(oid)
    store.remove(oid)
    assert not store.has(oid)
    with pytest.raises(FileNotFoundError):
        store.read(oid)


def test_a_pack_gone_under_its_rows_reads_as_absent(tmp_path: Path) -> None:
    store = PackStore.create(str(tmp_path / "media"), pack_limit=1)
    oid, data = _obj(2)
    store.add_bytes(data, oid=oid)
    pack, _, _ = store.locate(oid)
    store.close()
    os.unlink(pack)  # deleted by hand (or by a crashed evictor)
    fresh = PackStore(str(tmp_path / "media"))
    with pytest.raises(FileNotFoundError):
        fresh.read(oid)
    assert not fresh.has(oid), "the stale rows went with the pack"


def test_rows_for_an_evicted_pack_are_never_written(tmp_path: Path) -> None:
    store = PackStore.create(str(tmp_path / "media"))
    oid, data = _obj(3)
    token = store.write_temp(data, oid)
    pack = os.path.basename(token).split("#")[0]
    PackStore(str(tmp_path / "media")).drop_pack(pack)  # another process evicts it
    store.publish(token, oid)
    store.sync()
    assert not store.has(oid)


def test_an_unreadable_index_starts_the_cache_afresh(tmp_path: Path) -> None:
    root = tmp_path / "media"
    store = PackStore.create(str(root))
    oid, data = _obj(4)
    store.add_bytes(data, oid=oid)
    store.close()
    (root / "index.sqlite").write_bytes(b"not a database" * 100)
    for suffix in ("-wal", "-shm"):
        (root / f"index.sqlite{suffix}").unlink(missing_ok=True)
    fresh = PackStore(str(root))
    assert not fresh.has(oid)
    assert os.listdir(root / "packs") == []
    fresh.add_bytes(data, oid=oid)
    assert fresh.read(oid) == data


def test_eviction_removes_least_recently_used_packs(tmp_path: Path) -> None:
    cache = MediaCache(str(tmp_path / "media"), size=40_000)
    objects = [_obj(i) for i in range(30)]
    for oid, data in objects:
        cache.store.add_bytes(data, oid=oid)
        cache.added(1, len(data))
        cache.maybe_evict()
    assert cache.total() <= 40_000
    kept = set(cache.store)
    assert objects[-1][0] in kept and objects[0][0] not in kept
    for oid in kept:
        assert cache.read(oid) == dict(objects)[oid]


def test_the_old_one_file_per_object_layout_is_removed(tmp_path: Path) -> None:
    legacy = tmp_path / "media" / "objects" / "ab" / "cd"
    legacy.mkdir(parents=True)
    (legacy / ("abcd" + "0" * 60)).write_bytes(b"old")
    MediaCache(str(tmp_path / "media"))
    assert not (tmp_path / "media" / "objects").exists()


def test_a_forked_child_starts_afresh_and_the_parent_goes_on(tmp_path: Path) -> None:
    store = PackStore.create(str(tmp_path / "media"))
    parent_oid, parent_data = _obj(10)
    store.add_bytes(parent_data, oid=parent_oid)
    child_oid, child_data = _obj(11)
    pid = os.fork()
    if pid == 0:  # the child: its own connection and pack, the parent's object readable
        code = 0
        try:
            assert store.read(parent_oid) == parent_data
            store.add_bytes(child_data, oid=child_oid)
            assert store.read(child_oid) == child_data
            store.close()
        except BaseException:  # noqa: BLE001 - reported through the exit status
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.read(parent_oid) == parent_data
    assert store.read(child_oid) == child_data, "the child's rows reach the shared index"
    store.add_bytes(_obj(12)[1], oid=_obj(12)[0])  # the parent still writes its own pack
    assert store.read(_obj(12)[0]) == _obj(12)[1]
