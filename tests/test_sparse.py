"""Sparse work trees: clone --include/--where, checkout --where/--all. Images left
out stay in history, in the index and in new commits, but not on disk, and their
media are not fetched."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from pixvcs import LocalChanges, Repo, UsageError
from pixvcs.cli import main
from tests.conftest import AUTHOR
from tests.imagegen import image_bytes, make_dataset, snapshot, write_image


@pytest.fixture
def shared(tmp_path: Path) -> tuple[str, dict[str, bytes]]:
    """A bare remote holding v1: cat/0-2, dog/0-2 (48x40), big/0 (96x80), notes.txt."""
    remote = str(tmp_path / "shared.git")
    Repo.init(remote, bare=True).close()
    src = Repo.init(str(tmp_path / "src"))
    try:
        data = make_dataset(src.root, {"cat": 3, "dog": 3})
        data["big/0.jpg"] = write_image(os.path.join(src.root, "big", "0.jpg"), 99, size=(96, 80))
        Path(src.root, "notes.txt").write_text("not an image\n")
        data["notes.txt"] = b"not an image\n"
        src.add([src.root])
        src.commit("v1", author=AUTHOR)
        src.create_tag("v1")
        src.add_remote("origin", remote)
        src.push(tags=True)
    finally:
        src.close()
    return remote, data


def _images(snap: dict[str, bytes]) -> set[str]:
    return {p for p in snap if p.endswith(".jpg")}


def _media(repo: Repo) -> set[str]:
    return set(repo.media)


def test_clone_include_fetches_and_checks_out_only_those_images(
    tmp_path: Path, shared: tuple[str, dict[str, bytes]]
) -> None:
    remote, data = shared
    repo = Repo.clone(remote, str(tmp_path / "c"), include=["cat/*"])
    try:
        snap = snapshot(repo.root)
        assert _images(snap) == {"cat/0000.jpg", "cat/0001.jpg", "cat/0002.jpg"}
        assert snap["notes.txt"] == data["notes.txt"]  # other files always come
        assert all(snap[p] == data[p] for p in _images(snap))
        assert len(_media(repo)) == 3  # dog and big were not fetched
        assert repo.status().clean
        assert {e.path for e in repo.ls()} >= {"dog/0000.jpg", "big/0.jpg"}  # still tracked
        d = repo.diff()  # the work tree against HEAD: nothing left out counts as removed
        assert not d.removed and not d.added and not d.modified

        # work in the sparse tree: the commit keeps what is left out
        write_image(os.path.join(repo.root, "cat", "new.jpg"), 500)
        repo.add([repo.root])
        st = repo.status()
        assert st.staged_added == ["cat/new.jpg"] and not st.deleted and not st.staged_deleted
        v2 = repo.commit("v2", author=AUTHOR)
        paths = {e.path for e in repo.ls(v2)}
        assert {"dog/0000.jpg", "big/0.jpg", "cat/new.jpg"} <= paths
        repo.push()

        # widen: everything comes back, fetched from the remote, byte-exact
        repo.checkout("main", include=[], where={})
        snap = snapshot(repo.root)
        assert {p: snap[p] for p in data} == data
        assert repo.status().clean
        assert not os.path.exists(os.path.join(repo.state_dir, "sparse.json"))
    finally:
        repo.close()


def test_checkout_where_narrows_and_refuses_to_drop_local_changes(
    tmp_path: Path, shared: tuple[str, dict[str, bytes]]
) -> None:
    remote, data = shared
    repo = Repo.clone(remote, str(tmp_path / "c"))
    try:
        write_image(os.path.join(repo.root, "cat", "0001.jpg"), 777)  # a local change
        with pytest.raises(LocalChanges) as err:
            repo.checkout("main", where={"label": "dog"})
        assert err.value.paths == ["cat/0001.jpg"]
        assert len(_images(snapshot(repo.root))) == 7  # nothing changed
        repo.checkout("main", force=True)  # discard it

        result = repo.checkout("main", where={"label": ["dog", "big"]})
        assert _images(snapshot(repo.root)) == {
            "dog/0000.jpg", "dog/0001.jpg", "dog/0002.jpg", "big/0.jpg"
        }  # fmt: skip
        assert result.removed == 3
        assert repo.status().clean
        assert not os.path.isdir(os.path.join(repo.root, "cat"))

        # size filters read the catalog (or the media)
        repo.checkout("main", where={"min_width": 64})
        assert _images(snapshot(repo.root)) == {"big/0.jpg"}
        assert repo.status().clean
    finally:
        repo.close()


def test_switching_versions_in_a_sparse_tree(
    tmp_path: Path, shared: tuple[str, dict[str, bytes]]
) -> None:
    remote, data = shared
    other = Repo.clone(remote, str(tmp_path / "full"))
    try:  # v2 changes a dog (left out below) and a cat (kept), removes another dog
        write_image(os.path.join(other.root, "dog", "0000.jpg"), 901)
        cat = write_image(os.path.join(other.root, "cat", "0000.jpg"), 902)
        os.unlink(os.path.join(other.root, "dog", "0001.jpg"))
        other.add([other.root])
        v2 = other.commit("v2", author=AUTHOR)
        other.push()
    finally:
        other.close()
    repo = Repo.clone(remote, str(tmp_path / "c"), rev="v1", include=["cat/*"])
    try:
        media_before = _media(repo)
        repo.checkout(v2)
        snap = snapshot(repo.root)
        assert snap["cat/0000.jpg"] == cat
        assert _images(snap) == {"cat/0000.jpg", "cat/0001.jpg", "cat/0002.jpg"}
        assert len(_media(repo) - media_before) == 1  # only the changed cat was fetched
        assert repo.status().clean
        paths = {e.path for e in repo.ls()}
        assert "dog/0001.jpg" not in paths and "dog/0000.jpg" in paths
        # an untracked file where a left-out image would go is the user's: kept, and
        # bringing the image back refuses to overwrite it
        Path(repo.root, "dog").mkdir()
        Path(repo.root, "dog", "0000.jpg").write_bytes(b"mine")
        assert repo.status().untracked == ["dog/0000.jpg"]
        repo.checkout("v1")
        assert Path(repo.root, "dog", "0000.jpg").read_bytes() == b"mine"
        with pytest.raises(LocalChanges):
            repo.checkout("v1", include=[], where={})
    finally:
        repo.close()


def test_bad_selections_are_usage_errors(
    tmp_path: Path, shared: tuple[str, dict[str, bytes]]
) -> None:
    remote, _ = shared
    with pytest.raises(UsageError, match="unknown 'where' key"):
        Repo.clone(remote, str(tmp_path / "c"), where={"colour": "red"})
    repo = Repo.clone(remote, str(tmp_path / "d"), include=["cat/*"])
    try:
        Path(repo.state_dir, "sparse.json").write_text("{not json")
        with pytest.raises(UsageError, match="sparse.json is unreadable"):
            repo.checkout("main")
    finally:
        repo.close()


def test_cli_clone_include_and_checkout_where(
    tmp_path: Path, shared: tuple[str, dict[str, bytes]]
) -> None:
    remote, data = shared
    runner = CliRunner()
    dest = tmp_path / "c"
    out = runner.invoke(
        main, ["clone", remote, str(dest), "--include", "dog/*", "--json"], catch_exceptions=False
    )
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["media"] == 3
    assert _images(snapshot(str(dest))) == {"dog/0000.jpg", "dog/0001.jpg", "dog/0002.jpg"}
    out = runner.invoke(
        main, ["-C", str(dest), "checkout", "main", "--where", "label=cat", "--json"]
    )
    assert out.exit_code == 0, out.output
    assert _images(snapshot(str(dest))) == {"cat/0000.jpg", "cat/0001.jpg", "cat/0002.jpg"}
    status = runner.invoke(main, ["-C", str(dest), "status", "--json"])
    assert status.exit_code == 0 and json.loads(status.output)["deleted"] == []
    bad = runner.invoke(main, ["-C", str(dest), "checkout", "main", "--all", "--include", "x"])
    assert bad.exit_code == 2
    out = runner.invoke(main, ["-C", str(dest), "checkout", "main", "--all"])
    assert out.exit_code == 0, out.output
    snap = snapshot(str(dest))
    assert {p: snap[p] for p in data} == data


def test_format_md_sparse_json_example_is_what_load_reads(tmp_path: Path) -> None:
    from pixvcs import sparse
    from tests.test_docs import fixtures

    text = (Path(__file__).parent.parent / "docs" / "format.md").read_text()
    example = fixtures(text)["sparse-json"]
    repo = Repo.init(str(tmp_path / "r"))
    try:
        Path(repo.state_dir, sparse.SPARSE_FILE).write_text(example)
        sel = sparse.load(repo)
        assert sel.include == ("cat/*",)
        assert dict(sel.where) == {"label": ["cat", "dog"], "min_width": 224}
        sparse.save(repo, sel)  # what save writes, load reads back the same
        assert sparse.load(repo) == sel
        assert json.loads(Path(repo.state_dir, sparse.SPARSE_FILE).read_text()) == json.loads(
            example
        )
    finally:
        repo.close()


def test_rm_and_merge_in_a_sparse_tree(
    tmp_path: Path, shared: tuple[str, dict[str, bytes]]
) -> None:
    remote, data = shared
    repo = Repo.clone(remote, str(tmp_path / "c"), include=["cat/*"])
    try:
        # removing a folder the work tree does not hold stages its deletion
        removed = repo.rm([os.path.join(repo.root, "dog")], recursive=True)
        assert sorted(removed) == ["dog/0000.jpg", "dog/0001.jpg", "dog/0002.jpg"]
        v2 = repo.commit("no dogs", author=AUTHOR)
        assert not any(e.path.startswith("dog/") for e in repo.ls(v2))
        assert "big/0.jpg" in {e.path for e in repo.ls(v2)} and repo.status().clean
        # a branch that changes a left-out image merges without touching the disk
        big = image_bytes(4242, size=(96, 80))
        oid = hashlib.sha256(big).hexdigest()
        repo.media.add_bytes(big, oid=oid)
        repo.commit_files(
            "side", [("big/0.jpg", oid, len(big))], "new big", base="v1", author=AUTHOR
        )
        before = snapshot(repo.root)
        result = repo.merge("side", author=AUTHOR)
        assert result.kind == "merge" and repo.status().clean
        assert snapshot(repo.root) == before  # big/ is left out: nothing written
        merged = {e.path: e.oid for e in repo.ls()}
        assert merged["big/0.jpg"] == oid and "dog/0000.jpg" not in merged
    finally:
        repo.close()
