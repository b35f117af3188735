"""A bare pixvcs repository as a shared directory remote, pushed to by stock
git + git-lfs: the media arrive through git-lfs, and the pre-receive hook that
`pixvcs init --bare` installs refuses a push whose images are not there."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import Tools, sha256, write_file, write_images

pytestmark = pytest.mark.e2e


def _stock_lfs_repo(tools: Tools, path: Path) -> dict[str, bytes]:
    path.mkdir()
    tools.git("init", "-q", "-b", "main", cwd=path)
    tools.git("lfs", "install", "--local", cwd=path)
    tools.git("lfs", "track", "*.jpg", cwd=path)
    images = write_images(path, [f"cat/{i}.jpg" for i in range(3)], seed=3)
    write_file(path, "labels.csv", b"path,label\n")
    tools.git("add", ".", cwd=path)
    tools.git("commit", "-q", "-m", "stock git-lfs commit", cwd=path)
    return images


def test_stock_git_lfs_push_into_a_bare_repo_then_pixvcs_clones_it(
    tools: Tools, tmp_path: Path
) -> None:
    tools.git("lfs", "install", "--skip-repo")
    bare = tmp_path / "shared.git"
    tools.pixvcs(tmp_path, "init", "--bare", str(bare))
    src = tmp_path / "src"
    images = _stock_lfs_repo(tools, src)
    tools.git("push", "-q", bare.as_uri(), "main", cwd=src)
    for content in images.values():
        oid = sha256(content)
        stored = bare / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
        assert stored.read_bytes() == content, "git-lfs uploaded the media"
    tools.pixvcs(tmp_path, "clone", str(bare), "copy")
    for rel, content in images.items():
        assert (tmp_path / "copy" / rel).read_bytes() == content
    fsck = tools.pixvcs(tmp_path / "copy", "fsck")
    assert "ok" in fsck.stdout


def test_push_without_its_media_is_refused_by_the_remote(tools: Tools, tmp_path: Path) -> None:
    tools.git("lfs", "install", "--skip-repo")
    bare = tmp_path / "shared.git"
    tools.pixvcs(tmp_path, "init", "--bare", str(bare))
    src = tmp_path / "src"
    images = _stock_lfs_repo(tools, src)
    # --no-verify skips git-lfs's pre-push hook: the pointers arrive, the media do not
    proc = tools.git("push", "--no-verify", bare.as_uri(), "main", cwd=src, check=False)
    assert proc.returncode != 0
    assert "pixvcs: refusing refs/heads/main" in proc.stderr
    assert any(sha256(c) in proc.stderr for c in images.values())
    refs = tools.git("--git-dir", str(bare), "for-each-ref", cwd=tmp_path).stdout
    assert "refs/heads/main" not in refs, "the ref was not updated"
    # with its media, the same push is accepted
    tools.git("push", "-q", bare.as_uri(), "main", cwd=src)
    refs = tools.git("--git-dir", str(bare), "for-each-ref", cwd=tmp_path).stdout
    assert "refs/heads/main" in refs
