"""Hostile input: trees, pointers, media, locks and configs that pixvcs must not trust.

DESIGN.md: "Nothing from outside is trusted: tree entries from a remote (``..``,
absolute paths, ``.pixvcs`` inside a tree), pointer files, ... configs. Bad input
gets a clear error naming what was wrong, and nothing already stored is lost."
Hostile commits are written with dulwich straight into ``DIR/.pixvcs``, as a
fetch from a malicious remote would leave them.
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import stat
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dulwich.config import ConfigFile
from dulwich.object_store import BaseObjectStore
from dulwich.objects import Blob, Commit, Tree
from dulwich.repo import Repo as GitRepo
from PIL import Image

from pixvcs import (
    FORMAT_VERSION,
    CorruptObject,
    InvalidPointer,
    LockTimeout,
    Repo,
    UnsafeTreeEntry,
    UnsupportedFormat,
)

AUTHOR = "Test <test@example.org>"
FILE = 0o100644
DIR = 0o040000
SYMLINK = 0o120000
GITLINK = 0o160000


def png(seed: int) -> bytes:
    im = Image.new("RGB", (32, 32), (seed * 37 % 256, seed * 91 % 256, seed * 53 % 256))
    im.putpixel((seed % 32, seed // 32 % 32), (255, 255, 255))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def pointer(data: bytes) -> bytes:
    oid = hashlib.sha256(data).hexdigest()
    return b"version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %d\n" % (
        oid.encode(),
        len(data),
    )


def media_path(root: Path, data: bytes) -> Path:
    oid = hashlib.sha256(data).hexdigest()
    return root / ".pixvcs" / "lfs" / "objects" / oid[0:2] / oid[2:4] / oid


def snapshot(top: Path, git_dir: Path) -> dict[str, tuple[str, bytes | str | None]]:
    """Everything under ``top`` except ``git_dir``: files with bytes and mode,
    directories, symlinks with their targets."""
    out: dict[str, tuple[str, bytes | str | None]] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if here / d != git_dir]
        for name in dirnames + filenames:
            full = here / name
            rel = full.relative_to(top).as_posix()
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", None)
            else:
                out[rel] = (f"file {st.st_mode & 0o777:o}", full.read_bytes())
    return out


@dataclass
class World:
    top: Path  # everything the test owns; the repository is top/outer/ds
    root: Path
    repo: Repo
    images: dict[str, bytes]

    def snapshot(self) -> dict[str, tuple[str, bytes | str | None]]:
        return snapshot(self.top, self.root / ".pixvcs")


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    root = tmp_path / "outer" / "ds"
    repo = Repo.init(str(root))
    images = {"cats/0.png": png(1), "cats/1.png": png(2), "dogs/0.png": png(3)}
    for rel, data in images.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / "labels.txt").write_bytes(b"cats\ndogs\n")
    repo.add(["."])
    repo.commit("v1", author=AUTHOR)
    try:
        yield World(tmp_path, root, repo, images)
    finally:
        repo.close()


# -- crafting hostile commits with dulwich ---------------------------------------------
@dataclass(frozen=True)
class Sha:
    """A tree entry pointing at an existing object by id."""

    id: bytes


Spec = dict[bytes, tuple[int, "bytes | Sha | Spec"]]


def _write_tree(store: BaseObjectStore, spec: Spec, base: Tree | None = None) -> bytes:
    tree = Tree()
    if base is not None:
        for entry in base.iteritems():
            tree.add(entry.path, entry.mode, entry.sha)
    for name, (mode, content) in spec.items():
        if isinstance(content, dict):
            sha = _write_tree(store, content)
        elif isinstance(content, Sha):
            sha = content.id
        else:
            blob = Blob.from_string(content)
            store.add_object(blob)
            sha = blob.id
        tree.add(name, mode, sha)
    store.add_object(tree)
    return tree.id


def hostile_commit(root: Path, make_spec: Callable[[GitRepo], Spec]) -> str:
    """A child of HEAD whose tree is HEAD's plus the entries of ``make_spec``."""
    git = GitRepo(str(root / ".pixvcs"), bare=True)
    try:
        head = git.refs[b"HEAD"]
        base = git[git[head].tree]
        assert isinstance(base, Tree)
        spec = make_spec(git)
        spec.setdefault(b"fresh.txt", (FILE, b"a harmless new file\n"))
        commit = Commit()
        commit.tree = _write_tree(git.object_store, spec, base)
        commit.parents = [head]
        commit.author = commit.committer = b"Mallory <mallory@example.org>"
        commit.author_time = commit.commit_time = int(time.time())
        commit.author_timezone = commit.commit_timezone = 0
        commit.message = b"hostile\n"
        git.object_store.add_object(commit)
        return commit.id.decode()
    finally:
        git.close()


CAT = png(1)  # the bytes of cats/0.png, whose media object is in the store


def _head_tree_sha(git: GitRepo) -> Sha:
    return Sha(git[git.refs[b"HEAD"]].tree)


def _a_blob_sha(git: GitRepo) -> Sha:
    blob = Blob.from_string(b"just a blob\n")
    git.object_store.add_object(blob)
    return Sha(blob.id)


UNSAFE_TREES: dict[str, Callable[[GitRepo], Spec]] = {
    "dotdot-file": lambda g: {b"..": (FILE, b"pwned\n")},
    "dotdot-dir": lambda g: {b"..": (DIR, {b"escaped.png": (FILE, pointer(CAT))})},
    "dotdot-nested": lambda g: {
        b"new": (DIR, {b"..": (DIR, {b"..": (DIR, {b"escaped.png": (FILE, pointer(CAT))})})})
    },
    "dot-dir": lambda g: {b".": (DIR, {b"labels.txt": (FILE, b"overwritten\n")})},
    "empty-name": lambda g: {b"": (FILE, b"nameless\n")},
    "pixvcs-dir": lambda g: {b".pixvcs": (DIR, {b"config": (FILE, b"[core]\n\tbare = true\n")})},
    "pixvcs-dir-other-case": lambda g: {b".PixVCS": (DIR, {b"HEAD": (FILE, b"ref: x\n")})},
    "git-dir": lambda g: {
        b".git": (DIR, {b"hooks": (DIR, {b"post-checkout": (FILE, b"#!/bin/sh\n")})})
    },
    "git-dir-nested": lambda g: {b"new": (DIR, {b".git": (DIR, {b"config": (FILE, b"[core]\n")})})},
    "git-dir-other-case": lambda g: {b".GIT": (DIR, {b"config": (FILE, b"[core]\n")})},
    "slash-escape": lambda g: {b"../escaped.png": (FILE, pointer(CAT))},
    "slash-deep-escape": lambda g: {b"cats/../../../escaped.png": (FILE, pointer(CAT))},
    "slash-absolute": lambda g: {b"/escaped.png": (FILE, pointer(CAT))},
    "slash-into-git-dir": lambda g: {b".pixvcs/config": (FILE, b"[core]\n")},
    "backslash": lambda g: {b"..\\escaped.png": (FILE, pointer(CAT))},
    "nul-byte": lambda g: {b"evil\x00.png": (FILE, pointer(CAT))},
    "symlink-file": lambda g: {b"link.png": (SYMLINK, b"../../escaped.png")},
    "symlink-dir": lambda g: {b"linkdir": (SYMLINK, b"/")},
    "submodule": lambda g: {b"sub": (GITLINK, _a_blob_sha(g))},
    "tree-mode-on-a-blob": lambda g: {b"notatree": (DIR, _a_blob_sha(g))},
    "file-mode-on-a-tree": lambda g: {b"notablob.png": (FILE, _head_tree_sha(g))},
}

BAD_POINTERS: dict[str, bytes] = {
    "uppercase-oid": pointer(CAT).replace(
        hashlib.sha256(CAT).hexdigest().encode(), hashlib.sha256(CAT).hexdigest().upper().encode()
    ),
    "short-oid": b"version https://git-lfs.github.com/spec/v1\noid sha256:abc123\nsize 3\n",
    "traversal-oid": (
        b"version https://git-lfs.github.com/spec/v1\n"
        b"oid sha256:../../../../../../../../etc/passwd\nsize 3\n"
    ),
    "oid-with-slash": b"version https://git-lfs.github.com/spec/v1\noid sha256:"
    + b"ab/" * 21
    + b"a\nsize 3\n",
    "sha1-oid": b"version https://git-lfs.github.com/spec/v1\noid sha1:"
    + b"a" * 40
    + b"\nsize 3\n",
    "no-size": b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"a" * 64 + b"\n",
    "negative-size": b"version https://git-lfs.github.com/spec/v1\noid sha256:"
    + b"a" * 64
    + b"\nsize -1\n",
}


def _checkout(w: World, cid: str) -> None:
    w.repo.checkout(cid)


def _checkout_force(w: World, cid: str) -> None:
    w.repo.checkout(cid, force=True)


def _checkout_branch(w: World, cid: str) -> None:
    w.repo.create_branch("evil", cid)
    w.repo.checkout("evil")


def _merge(w: World, cid: str) -> None:
    w.repo.merge(cid, author=AUTHOR)


def _rollback(w: World, cid: str) -> None:
    w.repo.rollback(cid, author=AUTHOR)


def _diff(w: World, cid: str) -> None:
    w.repo.diff("HEAD", cid)


OPERATIONS = {
    "diff": _diff,
    "checkout": _checkout,
    "checkout-force": _checkout_force,
    "checkout-branch": _checkout_branch,
    "merge": _merge,
    "rollback": _rollback,
}


def _assert_untouched(
    w: World, before: dict[str, tuple[str, bytes | str | None]], head: str
) -> None:
    after = w.snapshot()
    changed = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    assert not changed, f"refused operation still changed: {changed}"
    assert w.repo.head_commit() == head
    assert w.repo.current_branch() == "main"
    st = w.repo.status()
    assert st.clean and not st.untracked, st


@pytest.mark.parametrize("op", sorted(OPERATIONS))
@pytest.mark.parametrize("case", sorted(UNSAFE_TREES))
def test_unsafe_tree_entries_are_refused_before_anything_is_written(
    world: World, case: str, op: str
) -> None:
    _assert_refused(world, hostile_commit(world.root, UNSAFE_TREES[case]), op, UnsafeTreeEntry)


def _assert_refused(world: World, cid: str, op: str, error: type[Exception]) -> None:
    """``op`` on commit ``cid`` raises ``error`` and changes nothing."""
    head = world.repo.head_commit()
    assert head is not None
    before = world.snapshot()
    with pytest.raises(error):
        OPERATIONS[op](world, cid)
    _assert_untouched(world, before, head)


def _loose_object(git_dir: Path, kind: bytes, body: bytes) -> bytes:
    """Write a loose object with arbitrary (possibly malformed) contents."""
    raw = kind + b" %d\x00" % len(body) + body
    sha = hashlib.sha1(raw).hexdigest()
    path = git_dir / "objects" / sha[:2] / sha[2:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(zlib.compress(raw))
    return sha.encode()


@pytest.mark.parametrize(
    "body",
    [
        b"100644 cut.png\x00" + b"\x01" * 7,  # the entry's id is cut short
        b"10x644 bad-mode.png\x00" + b"\x01" * 20,
        b"100644 no-nul.png" + b"\x01" * 20,
    ],
)
@pytest.mark.parametrize("op", ["diff", "checkout"])
def test_malformed_tree_objects_are_refused(world: World, body: bytes, op: str) -> None:
    bad = _loose_object(world.root / ".pixvcs", b"tree", body)
    cid = hostile_commit(world.root, lambda g: {b"cats": (DIR, Sha(bad))})
    _assert_refused(world, cid, op, UnsafeTreeEntry)


@pytest.mark.parametrize("op", ["checkout", "checkout-force", "merge"])
@pytest.mark.parametrize("case", sorted(BAD_POINTERS))
def test_malformed_pointers_are_refused_before_anything_is_written(
    world: World, case: str, op: str
) -> None:
    data = BAD_POINTERS[case]
    cid = hostile_commit(world.root, lambda g: {b"cats": (DIR, {b"evil.png": (FILE, data)})})
    head = world.repo.head_commit()
    assert head is not None
    before = world.snapshot()
    with pytest.raises(InvalidPointer):
        OPERATIONS[op](world, cid)
    _assert_untouched(world, before, head)


@pytest.mark.parametrize(
    ("case", "path"),
    [
        ("dotdot-dir", ".."),
        ("pixvcs-dir", ".pixvcs"),
        ("git-dir-nested", "new/.git"),
        ("symlink-file", "link.png"),
        ("submodule", "sub"),
    ],
)
def test_fsck_reports_unsafe_entries_reachable_from_a_ref(
    world: World, case: str, path: str
) -> None:
    """fsck flags every entry that checkout would refuse, naming its path."""
    cid = hostile_commit(world.root, UNSAFE_TREES[case])
    assert world.repo.fsck().ok  # not reachable from any ref yet
    world.repo.create_branch("evil", cid)
    report = world.repo.fsck()
    assert not report.ok
    assert any(p.get("path") == path for p in report.problems), report.problems


# -- corrupt media ---------------------------------------------------------------------
def _corrupt(path: Path, how: str) -> None:
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[len(data) // 2] ^= 0x01
    elif how == "truncate":
        del data[len(data) // 2 :]
    else:
        data += b"\x00"
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["flip", "truncate", "append"])
def test_corrupt_media_is_never_materialised_and_fsck_names_it(world: World, how: str) -> None:
    repo, root = world.repo, world.root
    v1 = repo.head_commit()
    assert v1 is not None
    (root / "cats" / "1.png").unlink()
    repo.add(["cats"])
    v2 = repo.commit("v2: without cats/1.png", author=AUTHOR)
    victim = media_path(root, world.images["cats/1.png"])
    oid = victim.name
    _corrupt(victim, how)
    before = world.snapshot()

    with pytest.raises(CorruptObject) as excinfo:
        repo.checkout(v1)
    assert excinfo.value.expected == oid
    assert excinfo.value.got != oid
    assert world.snapshot() == before
    assert not (root / "cats" / "1.png").exists()
    assert repo.head_commit() == v2
    leftovers = [p for p in (root / ".pixvcs" / "pixvcs" / "tmp").iterdir() if p.is_file()]
    assert not leftovers, f"temporary copies of the corrupt object were left: {leftovers}"

    report = repo.fsck()
    assert not report.ok
    corrupt = [p for p in report.problems if p.get("oid") == oid]
    assert len(corrupt) == 1, report.problems
    assert corrupt[0]["path"] == "cats/1.png"
    assert "cats/1.png" in corrupt[0]["message"] and oid in corrupt[0]["message"]


def test_force_checkout_does_not_restore_a_file_from_a_corrupt_object(world: World) -> None:
    repo, root = world.repo, world.root
    head = repo.head_commit()
    (root / "dogs" / "0.png").unlink()
    _corrupt(media_path(root, world.images["dogs/0.png"]), "flip")
    before = world.snapshot()
    with pytest.raises(CorruptObject):
        repo.checkout("HEAD", force=True)
    assert world.snapshot() == before
    assert repo.head_commit() == head
    assert repo.status().deleted == ["dogs/0.png"]


# -- a lock left behind by a killed process -------------------------------------------
def test_a_lock_held_by_a_killed_process_does_not_block_the_next_writer(world: World) -> None:
    repo, root = world.repo, world.root
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: take the lock, report, wait to be killed
        try:
            os.close(ready_r)
            holder = Repo.open(str(root))
            with holder.lock(timeout=10):
                os.write(ready_w, b"L")
                time.sleep(120)
        finally:
            os._exit(1)
    try:
        os.close(ready_w)
        assert os.read(ready_r, 1) == b"L", "the child could not take the lock"
        os.close(ready_r)
        # it really is held: a writer that will not wait is refused, naming the holder
        with pytest.raises(LockTimeout) as excinfo, repo.lock(timeout=0.2):
            pass
        assert str(pid) in excinfo.value.holder
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # already killed and reaped above
            pass
        else:
            os.waitpid(pid, 0)
    assert (root / ".pixvcs" / "pixvcs" / "lock").exists()  # the file stays; the flock is gone

    (root / "cats" / "2.png").write_bytes(png(4))
    t0 = time.monotonic()
    repo.add(["cats"])
    cid = repo.commit("after the crash", author=AUTHOR)
    took = time.monotonic() - t0
    assert took < 10, f"add + commit waited {took:.1f}s for a dead process's lock"
    assert repo.head_commit() == cid
    assert repo.fsck().ok


# -- repository format -----------------------------------------------------------------
@pytest.mark.parametrize("version", [FORMAT_VERSION + 1, 99])
def test_a_newer_repository_format_is_refused(tmp_path: Path, version: int) -> None:
    root = tmp_path / "ds"
    Repo.init(str(root)).close()
    config_path = root / ".pixvcs" / "config"
    config = ConfigFile.from_path(str(config_path))
    config.set((b"pixvcs",), b"formatversion", str(version).encode())
    config.write_to_path(str(config_path))
    assert f"formatversion = {version}" in config_path.read_text()

    with pytest.raises(UnsupportedFormat) as excinfo:
        Repo.open(str(root))
    assert excinfo.value.found == version
    assert excinfo.value.supported == FORMAT_VERSION
    (root / "cats").mkdir()
    with pytest.raises(UnsupportedFormat):
        Repo.open(str(root / "cats"))  # found by searching parents: refused all the same
