"""pixvcs.ingest.materialise_batch: the checkout's copies of media objects."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from pixvcs import ingest
from pixvcs.media import MediaStore


def _store(tmp_path: Path, blobs: list[bytes]) -> tuple[MediaStore, list[str]]:
    store = MediaStore(str(tmp_path / "lfs"))
    os.makedirs(store.tmp_dir, exist_ok=True)
    oids = []
    for data in blobs:
        oid = hashlib.sha256(data).hexdigest()
        store.publish(store.write_temp(data, oid), oid)
        oids.append(oid)
    return store, oids


@pytest.mark.parametrize("verified", [True, False])
def test_copies_have_the_bytes_and_exactly_the_mode(tmp_path: Path, verified: bool) -> None:
    blobs = [os.urandom(70_000), b"", b"small"]
    store, oids = _store(tmp_path, blobs)
    work = tmp_path / "tmp"
    work.mkdir()
    old = os.umask(0o077)  # the mode must not depend on the umask
    try:
        items = [(oids[0], 0o100644, verified), (oids[1], 0o100755, verified)]
        items.append((oids[2], 0o100644, verified))
        out = ingest.materialise_batch(store.root, str(work), items, False)
    finally:
        os.umask(old)
    assert [err for _t, err in out] == [None, None, None]
    for (tmp, _e), data, (_o, mode, _v) in zip(out, blobs, items, strict=True):
        assert tmp is not None and Path(tmp).read_bytes() == data
        assert os.stat(tmp).st_mode & 0o777 == (0o755 if mode == 0o100755 else 0o644)


def test_a_corrupt_or_missing_object_is_reported_and_leaves_no_file(tmp_path: Path) -> None:
    store, oids = _store(tmp_path, [b"good bytes", b"will rot"])
    path = store.path(oids[1])
    os.chmod(path, 0o644)
    Path(path).write_bytes(b"rotten bytes")
    work = tmp_path / "tmp"
    work.mkdir()
    items = [(oids[1], 0o100644, False), ("0" * 64, 0o100644, False), (oids[0], 0o100644, False)]
    out = ingest.materialise_batch(store.root, str(work), items, False)
    assert out[0] == (None, hashlib.sha256(b"rotten bytes").hexdigest())
    assert out[1] == (None, "missing")
    assert out[2][1] is None and Path(str(out[2][0])).read_bytes() == b"good bytes"
    assert sorted(os.listdir(work)) == [os.path.basename(str(out[2][0]))]
