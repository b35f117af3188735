"""``pixvcs serve`` as a real process, with Debian's git and git-lfs as clients:
stock git clones from it and git-lfs downloads byte-identical images; stock git
pushes a git-lfs repository into it (git-lfs uploads through the Batch API) and
pixvcs clones the result; a stock push that skips git-lfs's upload
(``--no-verify``) is refused by the server."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Tools, sha256, worktree_hashes, write_file, write_images

pytestmark = pytest.mark.e2e

TOKEN = "e2e-write-token-4242"


@pytest.fixture
def served(tools: Tools, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """ROOT with one bare repository ``animals``, served on a free port; yields
    (ROOT, base URL with the token as basic-auth password)."""
    root = tmp_path / "srv"
    root.mkdir()
    tools.pixvcs(tmp_path, "init", "--bare", str(root / "animals"))
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{TOKEN} write\n")
    argv = tools.pixvcs_argv(tmp_path, "serve", str(root), "--port", "0", "--auth", str(tokens))
    proc = subprocess.Popen(
        argv, env=tools.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert found, f"pixvcs serve did not print its URL: {line!r}"
        yield root, f"http://x:{TOKEN}@127.0.0.1:{found[1]}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _stock_lfs_repo(tools: Tools, path: Path) -> dict[str, bytes]:
    path.mkdir()
    tools.git("init", "-q", "-b", "main", cwd=path)
    tools.git("lfs", "track", "*.jpg", cwd=path)
    images = write_images(path, [f"cat/{i}.jpg" for i in range(3)], seed=5)
    write_file(path, "labels.csv", b"path,label\n")
    tools.git("add", ".", cwd=path)
    tools.git("commit", "-q", "-m", "stock git-lfs commit", cwd=path)
    return images


def test_stock_git_clone_and_lfs_pull_from_pixvcs_serve(
    tools: Tools, tmp_path: Path, served: tuple[Path, str]
) -> None:
    _root, base = served
    tools.git("lfs", "install", "--skip-repo")
    ds = tmp_path / "ds"
    tools.pixvcs(tmp_path, "init", str(ds))
    images = write_images(ds, [f"cat/{i}.jpg" for i in range(3)] + ["dog/0.png"], seed=1)
    tools.pixvcs(ds, "add", ".")
    tools.pixvcs(ds, "commit", "-m", "v1")
    tools.pixvcs(ds, "remote", "add", "origin", f"{base}/animals")
    tools.pixvcs(ds, "push")

    clone = tmp_path / "gitclone"
    tools.git("clone", "-q", f"{base}/animals", str(clone), extra_env={"GIT_LFS_SKIP_SMUDGE": "1"})
    pointer = (clone / "cat" / "0.jpg").read_bytes()
    assert pointer.startswith(b"version https://git-lfs.github.com/spec/v1")
    tools.git("lfs", "pull", cwd=clone)
    for rel, content in images.items():
        assert (clone / rel).read_bytes() == content, rel
    theirs = worktree_hashes(clone)
    ours = worktree_hashes(ds)
    assert theirs == ours


def test_stock_git_push_into_pixvcs_serve_then_pixvcs_clones_it(
    tools: Tools, tmp_path: Path, served: tuple[Path, str]
) -> None:
    root, base = served
    tools.git("lfs", "install", "--skip-repo")
    src = tmp_path / "src"
    images = _stock_lfs_repo(tools, src)
    tools.git("push", "-q", f"{base}/animals", "main", cwd=src)
    for content in images.values():
        oid = sha256(content)
        stored = root / "animals" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
        assert stored.read_bytes() == content, "git-lfs uploaded through the Batch API"
    tools.pixvcs(tmp_path, "clone", f"{base}/animals", "copy")
    for rel, content in images.items():
        assert (tmp_path / "copy" / rel).read_bytes() == content
    assert "ok" in tools.pixvcs(tmp_path / "copy", "fsck").stdout


def test_stock_push_without_its_media_is_refused_by_the_server(
    tools: Tools, tmp_path: Path, served: tuple[Path, str]
) -> None:
    root, base = served
    tools.git("lfs", "install", "--skip-repo")
    src = tmp_path / "src"
    images = _stock_lfs_repo(tools, src)
    # --no-verify skips git-lfs's pre-push hook: the pointers arrive, the media do not
    proc = tools.git("push", "--no-verify", f"{base}/animals", "main", cwd=src, check=False)
    assert proc.returncode != 0
    assert "not on this remote" in proc.stderr, proc.stderr
    assert any(sha256(c) in proc.stderr for c in images.values())
    refs = tools.git("--git-dir", str(root / "animals"), "for-each-ref", cwd=tmp_path).stdout
    assert "refs/heads/main" not in refs, "the ref was not updated"
    # with its media, the same push is accepted
    tools.git("push", "-q", f"{base}/animals", "main", cwd=src)
    refs = tools.git("--git-dir", str(root / "animals"), "for-each-ref", cwd=tmp_path).stdout
    assert "refs/heads/main" in refs


def _children(pid: int) -> set[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return {int(p) for p in f.read().split()}


def _wait_for_workers(pid: int, n: int, *, without: int = 0) -> set[int]:
    """The worker processes of the server ``pid`` once there are ``n`` (none of
    them ``without``), or as they are after 10 s."""
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = _children(pid)
        if len(found) == n and without not in found:
            return found
        time.sleep(0.05)
    return _children(pid)


def _gone(pid: int, timeout: float = 10.0) -> bool:
    import os
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ")[1].startswith("Z"):  # a zombie: exited
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return not os.path.exists(f"/proc/{pid}")


def _start_workers(tools: Tools, tmp_path: Path, n: int) -> tuple[subprocess.Popen[str], str]:
    root = tmp_path / "srv"
    root.mkdir()
    tools.pixvcs(tmp_path, "init", "--bare", str(root / "animals"))
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{TOKEN} write\n")
    argv = tools.pixvcs_argv(
        tmp_path, "serve", str(root), "--port", "0", "--auth", str(tokens), "--workers", str(n)
    )
    proc = subprocess.Popen(argv, env=tools.env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines = [proc.stdout.readline() for _ in range(3)]
    found = re.search(r"http://127\.0\.0\.1:(\d+)/", lines[0])
    assert found and f"{n} worker process(es)" in lines[2], lines
    return proc, f"http://127.0.0.1:{found[1]}/animals"


def _refs_ok(url: str) -> bool:
    import httpx

    got = httpx.get(
        f"{url}/info/refs?service=git-upload-pack",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    return got.status_code == 200 and b"git-upload-pack" in got.content


def test_serve_workers_share_the_port_are_replaced_and_stop_together(
    tools: Tools, tmp_path: Path
) -> None:
    import os
    import signal

    proc, url = _start_workers(tools, tmp_path, 3)
    try:
        first = _wait_for_workers(proc.pid, 3)
        assert len(first) == 3
        assert all(_refs_ok(url) for _ in range(12))
        victim = sorted(first)[0]
        os.kill(victim, signal.SIGKILL)
        now = _wait_for_workers(proc.pid, 3, without=victim)
        assert len(now) == 3 and victim not in now, "a dead worker is replaced"
        assert all(_refs_ok(url) for _ in range(6))
        proc.terminate()  # SIGTERM to the parent: every worker stops
        assert proc.wait(timeout=30) == 0
        assert all(_gone(pid) for pid in now)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_workers_stop_when_their_parent_is_killed(tools: Tools, tmp_path: Path) -> None:
    import os
    import signal

    proc, url = _start_workers(tools, tmp_path, 2)
    try:
        workers = _wait_for_workers(proc.pid, 2)
        assert len(workers) == 2 and _refs_ok(url)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert all(_gone(pid) for pid in workers), "no orphaned worker keeps serving"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
