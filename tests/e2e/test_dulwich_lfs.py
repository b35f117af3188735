"""dulwich's reference servers as an independent peer: history through
dulwich's smart-HTTP application (:mod:`dulwich.web`) and media through
dulwich's git-lfs server (:mod:`dulwich.lfs_server`) on another port — a
deployment where the LFS endpoint is *not* ``<remote>.git/info/lfs``, so the
client is pointed at it the git-lfs way (``remote.<name>.lfsurl`` / ``lfs.url``;
``pixvcs clone --lfs-url``).

- pixvcs pushes a dataset there and clones it back byte for byte;
- the converse: stock git + git-lfs (configured with ``lfs.url``) push a
  dataset there, pixvcs clones it byte for byte, pushes a new version, and
  stock git + git-lfs pull that version byte for byte.

Both servers run in threads of the test process on free loopback ports."""

from __future__ import annotations

import hashlib
import socketserver
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from dulwich.lfs_server import run_lfs_server
from dulwich.repo import Repo as DulwichRepo
from dulwich.server import BackendRepo, DictBackend
from dulwich.web import make_wsgi_chain

from .conftest import Tools, sha256, worktree_hashes, write_file, write_images

pytestmark = pytest.mark.e2e


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        return None


@dataclass
class DulwichPeer:
    git_url: str  # http://127.0.0.1:PORT/data.git (dulwich.web)
    lfs_url: str  # http://127.0.0.1:PORT2 (dulwich.lfs_server: batch at /objects/batch)
    git_dir: Path  # the served bare repository
    lfs_dir: Path  # dulwich's LFS store: objects/<oid[0:2]>/<oid[2:4]>/<oid>

    def stored(self, oid: str) -> bytes:
        return (self.lfs_dir / "objects" / oid[:2] / oid[2:4] / oid).read_bytes()

    def ref(self, name: str) -> str:
        repo = DulwichRepo(str(self.git_dir))
        try:
            return repo.refs[name.encode()].decode()  # type: ignore[index]
        finally:
            repo.close()


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[DulwichPeer]:
    git_dir = tmp_path / "peer" / "data.git"
    git_dir.mkdir(parents=True)
    repo = DulwichRepo.init_bare(str(git_dir), default_branch=b"main")
    backend = DictBackend({"/data.git": cast(BackendRepo, repo)})
    git_server = make_server(
        "127.0.0.1",
        0,
        make_wsgi_chain(backend),
        server_class=_ThreadingWSGIServer,
        handler_class=_QuietHandler,
    )
    lfs_dir = tmp_path / "peer" / "lfs"
    lfs_server, lfs_url = run_lfs_server(host="127.0.0.1", port=0, lfs_dir=str(lfs_dir))
    threads = [
        threading.Thread(target=s.serve_forever, daemon=True) for s in (git_server, lfs_server)
    ]
    for t in threads:
        t.start()
    try:
        yield DulwichPeer(
            git_url=f"http://127.0.0.1:{git_server.server_port}/data.git",
            lfs_url=lfs_url,
            git_dir=git_dir,
            lfs_dir=lfs_dir,
        )
    finally:
        for s in (git_server, lfs_server):
            s.shutdown()
            s.server_close()
        for t in threads:
            t.join(timeout=10)
        repo.close()


def _dataset(tools: Tools, path: Path) -> dict[str, bytes]:
    tools.pixvcs(path.parent, "init", str(path))
    images = write_images(
        path, [f"cat/{i}.jpg" for i in range(4)] + ["dog/0.png", "dog/1.jpg"], seed=11
    )
    write_file(path, "labels.csv", b"path,label\ncat/0.jpg,cat\n")
    tools.pixvcs(path, "add", ".")
    tools.pixvcs(path, "commit", "-m", "v1")
    return images


def test_pixvcs_pushes_to_dulwich_and_clones_back(
    tools: Tools, tmp_path: Path, peer: DulwichPeer
) -> None:
    ds = tmp_path / "ds"
    images = _dataset(tools, ds)
    tools.pixvcs(ds, "remote", "add", "origin", peer.git_url)
    tools.git_dir(ds, "config", "remote.origin.lfsurl", peer.lfs_url)
    tools.pixvcs(ds, "push")

    for content in images.values():
        assert peer.stored(sha256(content)) == content, "the media went to dulwich's LFS server"
    head = tools.git_dir(ds, "rev-parse", "HEAD").stdout.strip()
    assert peer.ref("refs/heads/main") == head, "the history went to dulwich's git server"
    # nothing new: a second push moves nothing
    again = tools.pixvcs(ds, "push", "--json")
    assert '"media_sent": 0' in again.stdout

    copy = tmp_path / "copy"
    tools.pixvcs(tmp_path, "clone", "--lfs-url", peer.lfs_url, peer.git_url, str(copy))
    assert worktree_hashes(copy) == worktree_hashes(ds)
    for rel, content in images.items():
        assert (copy / rel).read_bytes() == content, rel
    assert tools.git_dir(copy, "rev-parse", "HEAD").stdout.strip() == head
    assert "ok" in tools.pixvcs(copy, "fsck").stdout


def test_git_lfs_pushes_to_dulwich_pixvcs_clones_pushes_and_git_lfs_pulls(
    tools: Tools, tmp_path: Path, peer: DulwichPeer
) -> None:
    tools.git("lfs", "install", "--skip-repo")
    # a stock git + git-lfs repository, its LFS endpoint configured the git-lfs way
    src = tmp_path / "src"
    src.mkdir()
    tools.git("init", "-q", "-b", "main", cwd=src)
    tools.git("config", "lfs.url", peer.lfs_url, cwd=src)
    tools.git("lfs", "track", "*.jpg", "*.png", cwd=src)
    images = write_images(src, [f"bird/{i}.jpg" for i in range(3)] + ["fish/0.png"], seed=12)
    write_file(src, "labels.csv", b"path,label\nbird/0.jpg,bird\n")
    tools.git("add", ".", cwd=src)
    tools.git("commit", "-q", "-m", "stock git-lfs commit", cwd=src)
    tools.git("push", "-q", peer.git_url, "main", cwd=src)
    for content in images.values():
        assert peer.stored(sha256(content)) == content, "git-lfs uploaded to dulwich's LFS server"

    # pixvcs clones it byte for byte
    copy = tmp_path / "copy"
    tools.pixvcs(tmp_path, "clone", "--lfs-url", peer.lfs_url, peer.git_url, str(copy))
    for rel, content in images.items():
        assert (copy / rel).read_bytes() == content, rel
    assert (copy / "labels.csv").read_bytes() == (src / "labels.csv").read_bytes()
    assert "ok" in tools.pixvcs(copy, "fsck").stdout

    # pixvcs pushes a new version: one image re-encoded, one added, one removed
    changed = write_images(copy, ["bird/1.jpg", "bird/9.jpg"], seed=13)
    (copy / "bird" / "2.jpg").unlink()
    tools.pixvcs(copy, "add", ".")  # stages the deletion too
    tools.pixvcs(copy, "commit", "-m", "v2 from pixvcs")
    tools.pixvcs(copy, "push")
    for content in changed.values():
        assert peer.stored(sha256(content)) == content

    # stock git + git-lfs see exactly pixvcs's version
    tools.git("pull", "-q", "--ff-only", peer.git_url, "main", cwd=src)
    tools.git("lfs", "pull", cwd=src)
    assert not (src / "bird" / "2.jpg").exists()
    for rel, content in changed.items():
        assert (src / rel).read_bytes() == content, rel
    assert worktree_hashes(src) == worktree_hashes(copy)
    assert tools.git("status", "--porcelain", cwd=src).stdout.strip() == ""
    assert hashlib.sha256((src / "fish" / "0.png").read_bytes()).hexdigest() == sha256(
        images["fish/0.png"]
    )
