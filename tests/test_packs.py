"""pixvcs/packs.py: the pack a commit writes is git's format, read back by git and dulwich."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from dulwich.object_format import DEFAULT_OBJECT_FORMAT, SHA1
from dulwich.objects import Blob, Tree
from dulwich.pack import Pack, pack_object_header

from pixvcs import Repo
from pixvcs.packs import MIN_PACK, add_objects, object_header, write_pack
from tests.conftest import AUTHOR
from tests.imagegen import make_dataset


def _objects(n: int) -> list[Blob | Tree]:
    blobs = [Blob.from_string(b"object %d\n" % i * (1 + i % 300)) for i in range(n)]
    tree = Tree()
    for i, blob in enumerate(blobs):
        tree.add(b"f%05d" % i, 0o100644, blob.id)
    big = Blob.from_string(os.urandom(70_000))  # a size header of three bytes
    return [*blobs, tree, big, Blob.from_string(b"")]


def test_written_pack_holds_exactly_the_objects_and_verifies(tmp_path: Path) -> None:
    objects = _objects(150)
    base = str(tmp_path / "p")
    checksum = write_pack(base, objects)
    pack = Pack(base, object_format=DEFAULT_OBJECT_FORMAT)
    try:
        pack.check()  # pack checksum, index checksum, every object's SHA-1 and CRC32
        assert pack.data.get_stored_checksum() == checksum
        assert len(pack) == len(objects)
        for obj in objects:
            assert pack[obj.id].as_raw_string() == obj.as_raw_string()
    finally:
        pack.close()
    # stock git agrees, object by object
    out = subprocess.run(
        ["git", "verify-pack", "-v", base + ".idx"], capture_output=True, text=True, check=True
    ).stdout
    listed = {line.split()[0] for line in out.splitlines() if len(line.split()) >= 5}
    assert listed == {obj.id.decode() for obj in objects}


def test_object_header_is_gits_variable_length_size() -> None:
    assert object_header(3, 0) == b"\x30"
    assert object_header(3, 15) == b"\x3f"
    assert object_header(3, 16) == b"\xb0\x01"
    assert object_header(2, 70_000) == b"\xa0\x97\x22"  # 70000 = 0x11170: 0, 0x17, 0x22
    for size in (0, 1, 15, 16, 127, 128, 2047, 2048, 1 << 20, (1 << 35) + 5):
        assert object_header(1, size) == bytes(pack_object_header(1, None, size, SHA1))


def test_commit_of_many_objects_is_one_pack_git_fsck_accepts(tmp_path: Path) -> None:
    repo = Repo.init(str(tmp_path / "a"))
    make_dataset(repo.root, {"cat": MIN_PACK, "dog": 8})
    repo.add([repo.root])
    repo.commit("v1", author=AUTHOR)
    pack_dir = Path(repo.git_dir, "objects", "pack")
    packs = sorted(p.name for p in pack_dir.iterdir())
    assert [p.rsplit(".", 1)[1] for p in packs] == ["idx", "pack"]  # one pack, no temp left
    repo.close()
    subprocess.run(["git", "--git-dir", str(tmp_path / "a" / ".pixvcs"), "fsck", "--strict"],
                   check=True, capture_output=True)  # fmt: skip
    reopened = Repo.open(str(tmp_path / "a"))
    assert sum(e.kind == "media" for e in reopened.ls()) == MIN_PACK + 8
    reopened.close()


def test_few_objects_are_written_loose(tmp_path: Path) -> None:
    repo = Repo.init(str(tmp_path / "a"))
    add_objects(repo.store, [(obj, None) for obj in _objects(3)])
    assert not list(Path(repo.git_dir, "objects", "pack").glob("*.pack"))
    repo.close()
