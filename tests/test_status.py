"""status against the stat cache: what must be seen although no file is read
unless its stat changed, and what must not cost a thing (imports, ignore rules)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from pixvcs import Repo
from pixvcs.index import RACY_NS
from tests.conftest import AUTHOR


def _write(repo: Repo, rel: str, data: bytes, *, age_s: float = 0.0) -> str:
    """Write a file; with ``age_s``, back-date its mtime (a stat cache entry
    recorded now is then not racy, so only the stat comparison protects it)."""
    p = os.path.join(repo.root, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(data)
    if age_s:
        t = time.time_ns() - int(age_s * 1e9)
        os.utime(p, ns=(t, t))
    return p


def _commit_all(repo: Repo) -> None:
    repo.add([repo.root])
    repo.commit("v", author=AUTHOR)


def _cache_row(repo: Repo, rel: str) -> tuple[int, int, int]:
    e = repo.index.get(rel)
    assert e is not None
    return e.mtime_ns, e.ino, e.stamp_ns


def test_change_within_the_same_second_as_the_index_write_is_seen(repo: Repo) -> None:
    """Racy git: the index was written in the same tick as the file, so a second
    write with the same size and mtime would look unchanged by stat alone."""
    p = _write(repo, "a.txt", b"aaaa")
    _commit_all(repo)
    mtime, _, stamp = _cache_row(repo, "a.txt")
    assert stamp - mtime < RACY_NS, "the test needs a racy row"
    st = os.stat(p)
    with open(p, "wb") as f:  # same inode, same size
        f.write(b"bbbb")
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(p).st_ino == st.st_ino
    assert repo.status().modified == ["a.txt"]


def test_racy_clean_row_is_rehashed_then_refreshed(repo: Repo) -> None:
    _write(repo, "a.txt", b"aaaa")
    _commit_all(repo)
    mtime, _, stamp = _cache_row(repo, "a.txt")
    assert stamp - mtime < RACY_NS
    time.sleep(0.01)
    assert repo.status().clean  # re-hashed: same content
    _, _, new_stamp = _cache_row(repo, "a.txt")
    assert new_stamp > stamp  # the stat was recorded again, at a later time


def test_chmod_plus_x_and_minus_x_are_seen(repo: Repo) -> None:
    p = _write(repo, "run.sh", b"#!/bin/sh\n", age_s=10)
    _commit_all(repo)
    repo.status()  # settle the stat cache
    st = os.stat(p)
    os.chmod(p, 0o755)  # changes ctime only: size, mtime and inode stay
    assert (os.stat(p).st_mtime_ns, os.stat(p).st_ino) == (st.st_mtime_ns, st.st_ino)
    assert repo.status().modified == ["run.sh"]
    repo.add([p])
    repo.commit("exec", author=AUTHOR)
    assert repo.status().clean
    os.chmod(p, 0o644)
    assert repo.status().modified == ["run.sh"]


def test_replaced_file_same_size_and_mtime_other_inode_is_seen(repo: Repo) -> None:
    p = _write(repo, "d/a.txt", b"aaaa", age_s=10)
    _commit_all(repo)
    assert repo.status().clean
    mtime, ino, stamp = _cache_row(repo, "d/a.txt")
    assert stamp - mtime >= RACY_NS, "a non-racy row: only the inode tells"
    tmp = _write(repo, "d/.a.tmp", b"bbbb")
    os.utime(tmp, ns=(mtime, mtime))
    os.replace(tmp, p)
    st = os.stat(p)
    assert (st.st_size, st.st_mtime_ns) == (4, mtime) and st.st_ino != ino
    assert repo.status().modified == ["d/a.txt"]


def test_replaced_by_identical_copy_is_clean_and_refreshed(repo: Repo) -> None:
    p = _write(repo, "a.txt", b"aaaa", age_s=10)
    _commit_all(repo)
    repo.status()
    tmp = _write(repo, ".a.tmp", b"aaaa", age_s=10)
    os.replace(tmp, p)
    assert repo.status().clean
    assert _cache_row(repo, "a.txt")[1] == os.stat(p).st_ino


def test_touch_outside_the_racy_window_is_not_read(repo: Repo) -> None:
    """A stat-clean, non-racy file is trusted: content swapped behind an
    identical stat is (by design) not looked at -- the cache is what is compared."""
    p = _write(repo, "a.txt", b"aaaa", age_s=10)
    _commit_all(repo)
    st = os.stat(p)
    with open(p, "wb") as f:
        f.write(b"bbbb")
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert repo.status().clean


def test_deleted_untracked_and_type_changes(repo: Repo) -> None:
    _write(repo, "a/b/c.txt", b"c", age_s=10)
    _write(repo, "a/keep.txt", b"k", age_s=10)
    _write(repo, "link-me.txt", b"l", age_s=10)
    _write(repo, "dir-me", b"d", age_s=10)
    _commit_all(repo)
    os.unlink(os.path.join(repo.root, "a/b/c.txt"))
    _write(repo, "a/b/new.txt", b"n")
    _write(repo, "z/deep/new.txt", b"n")
    os.unlink(os.path.join(repo.root, "link-me.txt"))
    os.symlink("a/keep.txt", os.path.join(repo.root, "link-me.txt"))
    os.symlink("a", os.path.join(repo.root, "dirlink"))
    os.unlink(os.path.join(repo.root, "dir-me"))
    _write(repo, "dir-me/inside.txt", b"i")
    st = repo.status()
    assert st.deleted == ["a/b/c.txt", "dir-me", "link-me.txt"]
    assert st.untracked == ["a/b/new.txt", "dir-me/inside.txt", "z/deep/new.txt"]
    assert st.modified == []


def test_ignore_rules_apply_to_untracked_files_only(repo: Repo) -> None:
    _write(repo, ".pixvcsignore", b"build/\n*.log\n")
    _write(repo, "build/tracked.txt", b"t", age_s=10)
    _write(repo, "tracked.log", b"t", age_s=10)
    repo.add(
        [os.path.join(repo.root, "build/tracked.txt"), os.path.join(repo.root, "tracked.log")],
        force=True,
    )
    _commit_all(repo)
    _write(repo, "build/tracked.txt", b"changed")
    _write(repo, "tracked.log", b"changed")
    _write(repo, "build/untracked.txt", b"u")
    _write(repo, "build/sub/untracked.txt", b"u")
    _write(repo, "other/untracked.log", b"u")
    _write(repo, "other/untracked.txt", b"u")
    st = repo.status()
    assert st.modified == ["build/tracked.txt", "tracked.log"]
    assert st.untracked == ["other/untracked.txt"]
    repo.add([repo.root])
    st = repo.status()
    assert st.staged_added == ["other/untracked.txt"]
    assert st.staged_modified == ["build/tracked.txt", "tracked.log"]


def test_only_paths_check(repo: Repo) -> None:
    _write(repo, "a.txt", b"a", age_s=10)
    _write(repo, "b.txt", b"b", age_s=10)
    _write(repo, "c.txt", b"c", age_s=10)
    _commit_all(repo)
    _write(repo, "a.txt", b"A2")
    os.unlink(os.path.join(repo.root, "b.txt"))
    changes = repo._worktree_changes(
        progress=lambda *a: None, only=["a.txt", "b.txt", "c.txt", "nope.txt"]
    )
    assert set(changes) == {"a.txt", "b.txt"}
    assert changes["b.txt"] is None and changes["a.txt"] is not None


def test_clean_status_imports_nothing_it_does_not_need(repo: Repo) -> None:
    """``pixvcs status`` on a clean tree: no dulwich ignore machinery without an
    ignore file, no commands kept in other modules, no image/HTTP libraries."""
    _write(repo, "a.txt", b"a", age_s=10)
    _commit_all(repo)
    code = (
        "import json, sys\n"
        "from pixvcs.cli import main\n"
        f"sys.argv = ['pixvcs', '-C', {repo.root!r}, 'status']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "nothing to commit" in out
    modules = set(json.loads(out.splitlines()[-1]))
    for name in (
        "dulwich.ignore",
        "dulwich.repo",
        "pixvcs.export",
        "pixvcs.cli_export",
        "pixvcs.cli_crawl",
        "pixvcs.cli_check",
        "pixvcs.cli_serve",
        "PIL",
        "httpx",
        "sqlite_utils",
    ):
        assert name not in modules, name


def test_lazily_registered_commands_are_all_listed() -> None:
    from pixvcs import cli

    names = set(cli.main.commands)
    assert {"check", "crawl", "worker", "export", "serve", "status"} <= names
    assert cli.main.commands.get("export") is not None


def test_a_symlinked_work_tree_subdir_is_not_followed(repo: Repo, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.txt").write_bytes(b"x")
    os.symlink(outside, os.path.join(repo.root, "ext"))
    assert repo.status().untracked == []
