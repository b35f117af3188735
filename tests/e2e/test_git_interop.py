"""Interoperability with the real ``git`` and ``git lfs`` binaries.

A pixvcs repository is meant to be a git repository with git-lfs pointers
(DESIGN.md): stock git must read its history and accept its objects, and
stock git-lfs must find its media where git-lfs itself would put them.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from .conftest import Tools, sha256, worktree_hashes, write_file, write_images

pytestmark = pytest.mark.e2e

IMAGE_SUFFIXES = (".jpg", ".png")
LS_FILES_LINE = re.compile(r"^([0-9a-f]{64}) ([*-]) (.+)$")


def _images_of(files: dict[str, bytes]) -> dict[str, bytes]:
    return {p: d for p, d in files.items() if p.endswith(IMAGE_SUFFIXES)}


def _commit(tools: Tools, repo: Path, message: str) -> str:
    tools.pixvcs(repo, "add", ".")
    out = tools.pixvcs(repo, "commit", "-m", message, "--json").stdout
    return str(json.loads(out)["id"])


def _head_files(repo: Path) -> dict[str, bytes]:
    """Every file of a work tree (``.pixvcs`` and ``.git`` excluded), as path -> bytes."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(repo):
        if Path(dirpath) == repo:
            dirnames[:] = [d for d in dirnames if d not in (".pixvcs", ".git")]
        for name in filenames:
            full = Path(dirpath) / name
            out[full.relative_to(repo).as_posix()] = full.read_bytes()
    return out


def _ls_files(tools: Tools, repo: Path, *rev: str) -> dict[str, tuple[str, str]]:
    """``git lfs ls-files --long [rev]`` as path -> (oid, marker)."""
    out = tools.git_dir(repo, "lfs", "ls-files", "--long", *rev).stdout
    rows: dict[str, tuple[str, str]] = {}
    for line in out.splitlines():
        m = LS_FILES_LINE.match(line)
        assert m, f"unexpected git lfs ls-files line: {line!r}"
        rows[m.group(3)] = (m.group(1), m.group(2))
    return rows


@pytest.fixture
def dataset(tools: Tools, tmp_path: Path) -> Path:
    """A repository with one commit: JPEGs, PNGs and a non-image label file."""
    repo = tmp_path / "ds"
    tools.pixvcs(tmp_path, "init", str(repo))
    write_images(repo, [f"cats/{i:03d}.jpg" for i in range(6)], seed=1)
    write_images(repo, [f"dogs/{i:03d}.png" for i in range(4)], seed=2)
    write_file(repo, "labels.json", b'{"cats": 6, "dogs": 4}\n')
    _commit(tools, repo, "v1: first cats and dogs")
    return repo


def test_git_log_lists_pixvcs_commits_newest_first(tools: Tools, dataset: Path) -> None:
    write_images(dataset, [f"birds/{i:03d}.jpg" for i in range(3)], seed=3)
    _commit(tools, dataset, "v2: add birds")
    (dataset / "cats" / "000.jpg").unlink()
    write_images(dataset, ["dogs/000.png"], seed=4)  # re-encoded in place
    _commit(tools, dataset, "v3: drop a cat, redo a dog — café")

    git_log = tools.git("--git-dir", str(dataset / ".pixvcs"), "log", "--format=%s").stdout
    assert git_log.splitlines() == [
        "v3: drop a cat, redo a dog — café",
        "v2: add birds",
        "v1: first cats and dogs",
    ]
    # same commits, same order, as pixvcs's own log; the author came from the env
    ids = tools.git("--git-dir", str(dataset / ".pixvcs"), "log", "--format=%H %an <%ae>")
    pix = json.loads(tools.pixvcs(dataset, "log", "--json").stdout)
    assert [line.split(" ", 1)[0] for line in ids.stdout.splitlines()] == [c["id"] for c in pix]
    assert {line.split(" ", 1)[1] for line in ids.stdout.splitlines()} == {
        "Ada Tester <ada@example.org>"
    }


def test_git_fsck_strict_accepts_tags_branches_merges_rollbacks_and_gc(
    tools: Tools, dataset: Path
) -> None:
    git_dir = str(dataset / ".pixvcs")

    def git_fsck() -> None:
        proc = tools.git("--git-dir", git_dir, "fsck", "--strict", "--no-dangling", check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "error" not in proc.stderr.lower(), proc.stderr

    tools.pixvcs(dataset, "tag", "v1", "-m", "first release")  # annotated
    tools.pixvcs(dataset, "tag", "v1-light")  # lightweight
    tools.pixvcs(dataset, "branch", "feature")
    write_images(dataset, [f"cats/{i:03d}.jpg" for i in range(6, 10)], seed=5)
    _commit(tools, dataset, "main: more cats")
    tools.pixvcs(dataset, "checkout", "feature")
    write_images(dataset, [f"birds/{i:03d}.jpg" for i in range(3)], seed=6)
    (dataset / "dogs" / "003.png").unlink()
    _commit(tools, dataset, "feature: birds, one dog fewer")
    tools.pixvcs(dataset, "checkout", "main")
    merge = json.loads(tools.pixvcs(dataset, "merge", "feature", "--json").stdout)
    assert merge["result"] == "merge"
    merged = _head_files(dataset)
    assert "birds/000.jpg" in merged and "cats/009.jpg" in merged
    assert "dogs/003.png" not in merged
    tools.pixvcs(dataset, "rollback", "v1", "-m", "roll back to v1")
    assert _head_files(dataset).keys() == {
        ".gitattributes",
        "labels.json",
        *(f"cats/{i:03d}.jpg" for i in range(6)),
        *(f"dogs/{i:03d}.png" for i in range(4)),
    }

    git_fsck()
    parents = tools.git("--git-dir", git_dir, "log", "-1", "--format=%P", "HEAD~1").stdout.split()
    assert len(parents) == 2, "the commit before the rollback should be the merge"
    assert tools.git("--git-dir", git_dir, "cat-file", "-t", "v1").stdout.strip() == "tag"

    before = tools.git("--git-dir", git_dir, "log", "--all", "--format=%H").stdout
    gc = json.loads(tools.pixvcs(dataset, "gc", "--json").stdout)
    assert gc["packed_objects"] > 0
    counts = dict(
        line.split(": ", 1)
        for line in tools.git("--git-dir", git_dir, "count-objects", "-v").stdout.splitlines()
    )
    assert int(counts["in-pack"]) > 0
    git_fsck()
    assert tools.git("--git-dir", git_dir, "log", "--all", "--format=%H").stdout == before
    assert tools.git_dir(dataset, "lfs", "fsck").returncode == 0
    assert tools.pixvcs(dataset, "fsck").returncode == 0


def test_git_lfs_ls_files_lists_every_image_with_its_sha256(tools: Tools, dataset: Path) -> None:
    v1 = _images_of(_head_files(dataset))
    tools.pixvcs(dataset, "tag", "v1")
    (dataset / "cats" / "001.jpg").unlink()
    write_images(dataset, ["dogs/002.png", "new/000.jpg"], seed=7)
    _commit(tools, dataset, "v2")
    v2 = _images_of(_head_files(dataset))
    assert v1 != v2

    for rev, files in (((), v2), (("HEAD",), v2), (("v1",), v1)):
        listed = _ls_files(tools, dataset, *rev)
        assert listed.keys() == files.keys(), rev
        for path, data in files.items():
            oid, marker = listed[path]
            assert oid == sha256(data), (rev, path)
            if rev != ("v1",):
                # "*": git-lfs sees the full object (not a pointer) in the work tree
                assert marker == "*", (rev, path)
    # the non-image file is an ordinary git blob, not an LFS pointer
    blob = tools.git("--git-dir", str(dataset / ".pixvcs"), "show", "HEAD:labels.json").stdout
    assert blob == '{"cats": 6, "dogs": 4}\n'


def test_git_lfs_fsck_accepts_the_store_and_both_report_a_corrupt_object(
    tools: Tools, dataset: Path
) -> None:
    ok = tools.git_dir(dataset, "lfs", "fsck")
    assert "Git LFS fsck OK" in ok.stdout
    target = "dogs/002.png"
    oid = sha256((dataset / target).read_bytes())
    obj = dataset / ".pixvcs" / "lfs" / "objects" / oid[0:2] / oid[2:4] / oid
    assert obj.is_file()
    obj.chmod(0o644)
    data = bytearray(obj.read_bytes())
    data[len(data) // 2] ^= 0xFF
    obj.write_bytes(bytes(data))

    proc = tools.pixvcs(dataset, "fsck", check=False)
    assert proc.returncode != 0
    assert target in proc.stdout and oid in proc.stdout, proc.stdout
    report = json.loads(tools.pixvcs(dataset, "fsck", "--json", check=False).stdout)
    assert not report["ok"]
    assert [(p["kind"], p["path"], p["oid"]) for p in report["problems"]] == [
        ("corrupt-media", target, oid)
    ]

    # git-lfs 3.3 reports "corruptObject: <path> (<oid>) is corrupt"; --dry-run
    # keeps it from moving the object to lfs/bad
    lfs = tools.git_dir(dataset, "lfs", "fsck", "--dry-run", check=False)
    assert lfs.returncode != 0
    out = lfs.stdout + lfs.stderr
    assert oid in out and target in out, out
    assert obj.is_file()


def _stock_clone(tools: Tools, dataset: Path, dest: Path, *, smudge: bool) -> None:
    tools.git("lfs", "install", "--skip-repo")  # global filter config, in the temp HOME
    assert 'filter "lfs"' in (tools.home / ".gitconfig").read_text()
    extra = {} if smudge else {"GIT_LFS_SKIP_SMUDGE": "1"}
    tools.git("clone", "--quiet", str(dataset / ".pixvcs"), str(dest), extra_env=extra)


def test_stock_git_clone_without_smudge_checks_out_matching_pointers(
    tools: Tools, dataset: Path, tmp_path: Path
) -> None:
    files = _head_files(dataset)
    out = tmp_path / "clone"
    _stock_clone(tools, dataset, out, smudge=False)
    cloned = _head_files(out)
    assert cloned.keys() == files.keys()
    for path, data in files.items():
        if path.endswith(IMAGE_SUFFIXES):
            assert cloned[path] == (
                b"version https://git-lfs.github.com/spec/v1\n"
                b"oid sha256:%s\nsize %d\n" % (sha256(data).encode(), len(data))
            ), path
        else:
            assert cloned[path] == data, path


def test_stock_git_clone_with_lfs_gets_the_exact_media(
    tools: Tools, dataset: Path, tmp_path: Path
) -> None:
    # git-lfs reads a local-path remote's lfs/objects directly (its standalone
    # file transfer), which is exactly where pixvcs keeps the media
    out = tmp_path / "clone"
    _stock_clone(tools, dataset, out, smudge=True)
    want = worktree_hashes(dataset)
    assert worktree_hashes(out) == want
    assert "Git LFS fsck OK" in tools.git("-C", str(out), "lfs", "fsck").stdout
    status = tools.git("-C", str(out), "status", "--porcelain").stdout
    assert status == "", status
