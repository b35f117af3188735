"""pixvcs/packreuse.py: push pack data that copies stored compressed bytes."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from dulwich.objects import sha_to_hex
from dulwich.pack import PackData, write_pack_data

from pixvcs import Repo
from pixvcs.packreuse import reused_objects
from tests.conftest import AUTHOR
from tests.imagegen import make_dataset, snapshot


def _all_ids(repo: Repo) -> list[bytes]:
    return sorted(set(repo.git.object_store))  # an object may be both packed and loose


def test_reused_pack_data_is_a_valid_pack_of_the_same_objects(tmp_path: Path) -> None:
    repo = Repo.init(str(tmp_path / "a"))
    make_dataset(repo.root, {"cat": 4})
    Path(repo.root, "labels.csv").write_text("path,label\n" * 50)
    repo.add([repo.root])
    repo.commit("v1", author=AUTHOR)
    store = repo.git.object_store
    assert store.pack_loose_objects() > 0  # v1: packed whole
    Path(repo.root, "labels.csv").write_text("path,label\n" * 51)
    repo.add([repo.root])
    repo.commit("v2", author=AUTHOR)  # v2's new objects: loose
    ids = _all_ids(repo)
    reused = list(reused_objects(store, ids, repo.git.object_format))
    assert any(u.comp_chunks is not None for u in reused), "stored compressed bytes reused"
    buf = io.BytesIO()
    write_pack_data(buf.write, iter(reused), repo.git.object_format, num_records=len(reused))
    path = tmp_path / "out.pack"
    path.write_bytes(buf.getvalue())
    data = PackData(str(path), object_format=repo.git.object_format)
    got: dict[bytes, bytes] = {}
    try:
        data.check()  # the trailing checksum
        for unpacked in data.iter_unpacked():
            got[sha_to_hex(unpacked.sha())] = b"".join(unpacked.decomp_chunks)
    finally:
        data.close()
    assert sorted(got) == ids
    for oid in ids:
        assert got[oid] == store[oid].as_raw_string()
    repo.close()


def _with_remote(tmp_path: Path) -> tuple[Repo, str]:
    """A repository with a bare directory remote ``origin``."""
    remote = str(tmp_path / "shared.git")
    Repo.init(remote, bare=True).close()
    repo = Repo.init(str(tmp_path / "a"))
    repo.add_remote("origin", remote)
    return repo, remote


def _commit(repo: Repo, msg: str) -> None:
    repo.add([repo.root])
    repo.commit(msg, author=AUTHOR)


def test_push_with_reused_pack_data_round_trips(tmp_path: Path) -> None:
    a, remote = _with_remote(tmp_path)
    make_dataset(a.root, {"cat": 3, "dog": 2})
    _commit(a, "v1")
    a.git.object_store.pack_loose_objects()
    a.push()
    Path(a.root, "notes.txt").write_text("second version\n")
    _commit(a, "v2")
    a.push()
    with Repo.open(remote) as r:
        assert r.fsck().ok
    b = Repo.clone(remote, str(tmp_path / "b"))
    assert snapshot(b.root) == snapshot(a.root) and b.head_commit() == a.head_commit()
    b.close()
    a.close()


def test_damaged_compressed_bytes_stop_the_push_and_move_no_ref(tmp_path: Path) -> None:
    repo, remote = _with_remote(tmp_path)
    Path(repo.root, "notes.txt").write_text("hello pack reuse\n" * 200)
    _commit(repo, "v1")
    store = repo.git.object_store
    store.pack_loose_objects()
    blob = next(o for o in store if store[o].type_name == b"blob")
    (pack,) = store.packs
    offset = pack.index.object_offset(blob)
    pack_path = os.path.join(store.pack_dir, os.path.basename(pack.data.filename))
    repo.close()
    with open(pack_path, "r+b") as f:  # inside the blob's zlib stream
        f.seek(offset + 12)
        byte = f.read(1)
        f.seek(offset + 12)
        f.write(bytes([byte[0] ^ 0xFF]))
    with Repo.open(str(tmp_path / "a")) as again, pytest.raises(Exception):  # noqa: B017
        again.push()  # dulwich's or zlib's error, as without reuse
    with Repo.open(remote) as r:
        assert r.branches() == {}, "no ref moved"
