"""pixvcs/packingest.py: a received pack indexed in one pass."""

from __future__ import annotations

import hashlib
import os
import random
import struct
import zlib
from pathlib import Path

import pytest
from dulwich.object_format import SHA1
from dulwich.objects import Blob, ShaFile
from dulwich.pack import PackData, load_pack_index, write_pack_objects
from dulwich.repo import Repo as GitRepo

from pixvcs.packingest import MalformedPack, ingest
from pixvcs.packs import object_header
from pixvcs.pointer import format_pointer


def _objects(n_pointers: int = 30) -> list[ShaFile]:
    rng = random.Random(3)
    objs: list[ShaFile] = []
    for i in range(n_pointers):
        data = rng.randbytes(100)
        oid = hashlib.sha256(data).hexdigest()
        objs.append(Blob.from_string(format_pointer(oid, 1000 + i)))
    objs.append(Blob.from_string(b"label,path\n" * 40))
    objs.append(Blob.from_string(rng.randbytes(3 << 20)))  # hashed in pieces
    objs.append(Blob.from_string(b""))
    return objs


def _store(tmp_path: Path) -> GitRepo:
    return GitRepo.init_bare(str(tmp_path / "store.git"), mkdir=True)


def _pack_bytes(objs: list[ShaFile], *, deltify: bool = False) -> bytes:
    path = Path(f"/tmp/pixvcs-test-pack-{os.getpid()}-{random.random()}")
    try:
        with open(path, "wb") as f:
            write_pack_objects(f.write, objs, object_format=SHA1, deltify=deltify)
        return path.read_bytes()
    finally:
        path.unlink(missing_ok=True)


def _received(repo: GitRepo, data: bytes) -> str:
    path = os.path.join(repo.object_store.pack_dir, "tmp-fetch-test")
    Path(path).write_bytes(data)
    return path


def _published(repo: GitRepo) -> list[str]:
    return sorted(
        n for n in os.listdir(repo.object_store.pack_dir) if n.endswith((".pack", ".idx"))
    )


def test_a_pack_of_whole_objects_is_indexed_as_git_indexes_it(tmp_path: Path) -> None:
    repo = _store(tmp_path)
    objs = _objects()
    data = _pack_bytes(objs)
    got = ingest(repo.object_store, _received(repo, data))
    assert got is not None and got.objects == len(objs)
    name = got.name
    assert _published(repo) == [f"{name}.idx", f"{name}.pack"]
    assert name == "pack-" + data[-20:].hex()
    store = repo.object_store
    for obj in objs:
        assert store[obj.id].as_raw_string() == obj.as_raw_string()
    # the index matches the one dulwich builds from the same pack, CRCs included
    pack_dir = store.pack_dir
    ours = load_pack_index(os.path.join(pack_dir, name + ".idx"), SHA1)
    theirs_data = PackData(os.path.join(pack_dir, name + ".pack"), object_format=SHA1)
    try:
        theirs = sorted(theirs_data.iterentries())
    finally:
        theirs_data.close()
    assert sorted(ours.iterentries()) == theirs
    ours.close()
    # the pointer blobs, by id, with their bytes; nothing else
    pointers = {o.id.decode(): o.as_raw_string() for o in objs[:30]}
    assert got.pointers == pointers
    repo.close()


def test_a_pack_with_a_delta_is_left_to_dulwich(tmp_path: Path) -> None:
    repo = _store(tmp_path)
    base = random.Random(5).randbytes(20_000)
    objs: list[ShaFile] = [Blob.from_string(base), Blob.from_string(base + b"x")]
    data = _pack_bytes(objs, deltify=True)
    path = _received(repo, data)
    assert ingest(repo.object_store, path) is None
    assert _published(repo) == [] and os.path.exists(path)
    repo.close()


def _pack(records: list[bytes], count: int | None = None, tail: bytes = b"") -> bytes:
    body = b"PACK" + struct.pack(">II", 2, len(records) if count is None else count)
    body += b"".join(records) + tail
    return body + hashlib.sha1(body).digest()


def _blob(data: bytes, *, declared: int | None = None, kind: int = 3) -> bytes:
    return object_header(kind, len(data) if declared is None else declared) + zlib.compress(data)


GOOD = _blob(b"hello\n")
BROKEN: dict[str, tuple[bytes, str]] = {
    "checksum": (_pack([GOOD])[:-1] + b"\0", "checksum"),
    "signature": (b"KCAP" + _pack([GOOD])[4:], "signature"),
    "version": (_pack([GOOD]).replace(b"\0\0\0\x02", b"\0\0\0\x09", 1), "version"),
    "too few objects": (_pack([GOOD], count=2), "ends after 1 of 2"),
    "trailing bytes": (_pack([GOOD], tail=b"junk"), "bytes after the last"),
    "size too small": (_pack([_blob(b"hello\n", declared=3)]), "more bytes than its size"),
    "size too large": (_pack([_blob(b"hello\n", declared=9)]), "header says 9"),
    "bad zlib": (_pack([object_header(3, 6) + b"\x78\x9c garbage"]), "zlib"),
    "cut zlib": (_pack([object_header(3, 6) + zlib.compress(b"hello\n")[:5]]), "cut short"),
    "unknown type": (_pack([_blob(b"hello\n", kind=5)]), "unknown type 5"),
    "tiny": (b"PACK", "too short"),
}


@pytest.mark.parametrize("what", sorted(BROKEN))
def test_a_malformed_pack_is_refused_by_name_and_nothing_is_published(
    tmp_path: Path, what: str
) -> None:
    repo = _store(tmp_path)
    data, message = BROKEN[what]
    path = _received(repo, data)
    with pytest.raises(MalformedPack, match=message):
        ingest(repo.object_store, path)
    assert _published(repo) == []
    repo.close()


def test_the_hand_built_pack_is_good_when_unbroken(tmp_path: Path) -> None:
    """The helpers above build valid packs: only the breakage makes them fail."""
    repo = _store(tmp_path)
    got = ingest(repo.object_store, _received(repo, _pack([GOOD, _blob(b"")])))
    assert got is not None and got.objects == 2
    assert repo.object_store[Blob.from_string(b"hello\n").id].data == b"hello\n"
    repo.close()
