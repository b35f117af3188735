"""atomic_rename when another writer creates the destination's directory first."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from pixvcs import fsutil


def test_parent_created_by_another_writer_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp = tmp_path / "tmpfile"
    tmp.write_bytes(b"x")
    dest = tmp_path / "ab" / "cd" / "obj"
    real_rename = os.rename
    calls = {"n": 0}

    def racing_rename(src: str, dst: str) -> None:
        calls["n"] += 1
        if calls["n"] == 1:  # our rename fails: no parent yet; then the other writer makes it
            os.makedirs(os.path.dirname(dst))
            raise FileNotFoundError(dst)
        real_rename(src, dst)

    monkeypatch.setattr(fsutil.os, "rename", racing_rename)
    fsutil.atomic_rename(str(tmp), str(dest), readonly=True)
    assert dest.read_bytes() == b"x"


def test_many_threads_into_new_fanout_directories(tmp_path: Path) -> None:
    tmp_dir = tmp_path / "tmp"
    tmp_dir.mkdir()
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            dest = tmp_path / "objects" / f"{i % 3:02d}" / f"{i % 2:02d}" / f"obj{i}"
            fsutil.atomic_write(str(dest), b"data", str(tmp_dir), readonly=True, fsync=False)
        except BaseException as e:  # collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(list((tmp_path / "objects").rglob("obj*"))) == 32
