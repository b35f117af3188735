from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from pixvcs import (
    BadPath,
    BadRevision,
    InvalidImages,
    LocalChanges,
    MergeConflict,
    MissingMedia,
    NothingToCommit,
    Repo,
    RepositoryExists,
)
from pixvcs.pointer import format_pointer
from tests.conftest import AUTHOR
from tests.imagegen import make_dataset, snapshot, write_image


def _commit_all(repo: Repo, msg: str) -> str:
    repo.add([repo.root])
    return repo.commit(msg, author=AUTHOR)


def test_init_layout_and_refusal_to_reinit(repo: Repo) -> None:
    git_dir = os.path.join(repo.root, ".pixvcs")
    for sub in ("HEAD", "config", "objects", "refs", "lfs/objects", "pixvcs"):
        assert os.path.exists(os.path.join(git_dir, sub)), sub
    assert repo.current_branch() == "main"
    assert os.path.isfile(os.path.join(repo.root, ".gitattributes"))
    with pytest.raises(RepositoryExists):
        Repo.init(repo.root)


def test_add_stores_images_as_media_and_other_files_as_blobs(repo: Repo) -> None:
    data = make_dataset(repo.root, {"cat": 3, "dog": 2})
    with open(os.path.join(repo.root, "labels.csv"), "w") as f:
        f.write("path,label\n")
    result = repo.add([repo.root])
    assert sorted(result.added) == sorted([*data, "labels.csv"])
    for content in data.values():
        oid = hashlib.sha256(content).hexdigest()
        stored = os.path.join(repo.root, ".pixvcs/lfs/objects", oid[:2], oid[2:4], oid)
        with open(stored, "rb") as f:
            assert f.read() == content
        assert not os.stat(stored).st_mode & 0o222, "media objects are read-only"
    repo.commit("v1", author=AUTHOR)
    kinds = {e.path: e.kind for e in repo.ls()}
    assert kinds["labels.csv"] == "blob" and kinds["cat/0000.jpg"] == "media"
    entry = next(e for e in repo.ls() if e.path == "cat/0000.jpg")
    assert (entry.width, entry.height, entry.format) == (48, 40, "JPEG")
    # the git tree holds pointer blobs
    raw = repo.store[entry.blob.encode()].as_raw_string()
    assert raw == format_pointer(entry.oid or "", entry.size)


def test_invalid_images_refuse_the_whole_add(repo: Repo) -> None:
    make_dataset(repo.root, {"cat": 2})
    good = os.path.join(repo.root, "cat", "0000.jpg")
    with open(os.path.join(repo.root, "cat", "trunc.jpg"), "wb") as f:
        f.write(Path(good).read_bytes()[:200])
    open(os.path.join(repo.root, "cat", "empty.png"), "wb").close()
    with open(os.path.join(repo.root, "cat", "text.jpg"), "w") as f:
        f.write("not really")
    before = repo.status()
    with pytest.raises(InvalidImages) as err:
        repo.add([repo.root])
    problems = dict(err.value.problems)
    assert set(problems) == {"cat/trunc.jpg", "cat/empty.png", "cat/text.jpg"}
    assert "empty" in problems["cat/empty.png"]
    assert "cat/trunc.jpg" in str(err.value)
    assert repo.status().staged_added == before.staged_added  # nothing staged
    result = repo.add([repo.root], allow_invalid=True)
    assert {p for p, _ in result.invalid} == set(problems)
    row = repo.catalog.get(hashlib.sha256(b"not really").hexdigest())
    assert row is not None and not row.valid


def test_status_and_stat_cache(repo: Repo) -> None:
    make_dataset(repo.root, {"a": 3})
    st = repo.status()
    assert st.untracked == ["a/0000.jpg", "a/0001.jpg", "a/0002.jpg"]
    _commit_all(repo, "v1")
    assert repo.status().clean
    write_image(os.path.join(repo.root, "a", "0001.jpg"), 999)
    os.unlink(os.path.join(repo.root, "a", "0002.jpg"))
    write_image(os.path.join(repo.root, "b", "new.jpg"), 5)
    st = repo.status()
    assert st.modified == ["a/0001.jpg"]
    assert st.deleted == ["a/0002.jpg"]
    assert st.untracked == ["b/new.jpg"]
    repo.add([repo.root])
    st = repo.status()
    assert (st.staged_added, st.staged_modified, st.staged_deleted) == (
        ["b/new.jpg"],
        ["a/0001.jpg"],
        ["a/0002.jpg"],
    )
    assert st.modified == st.deleted == []


def test_touch_without_change_is_not_modified(repo: Repo) -> None:
    make_dataset(repo.root, {"a": 2})
    _commit_all(repo, "v1")
    p = os.path.join(repo.root, "a", "0000.jpg")
    os.utime(p, ns=(time.time_ns(), time.time_ns() + 5_000_000_000))
    assert repo.status().clean


def test_same_size_same_mtime_rewrite_is_detected(repo: Repo) -> None:
    """The racy-clean case: content changes inside the stat cache's blind spot."""
    p = os.path.join(repo.root, "a.txt")
    with open(p, "w") as f:
        f.write("aaaa")
    _commit_all(repo, "v1")
    st = os.stat(p)
    with open(p, "w") as f:
        f.write("bbbb")
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert repo.status().modified == ["a.txt"]


def test_ignore_file(repo: Repo) -> None:
    make_dataset(repo.root, {"keep": 1, "tmp": 1})
    with open(os.path.join(repo.root, ".pixvcsignore"), "w") as f:
        f.write("tmp/\n*.log\n")
    with open(os.path.join(repo.root, "x.log"), "w") as f:
        f.write("log")
    assert repo.status().untracked == [".pixvcsignore", "keep/0000.jpg"]
    repo.add([repo.root])
    assert "tmp/0000.jpg" not in repo.status().staged_added
    with pytest.raises(BadPath, match="ignored"):
        repo.add([os.path.join(repo.root, "x.log")])
    repo.add([os.path.join(repo.root, "x.log")], force=True)
    assert "x.log" in repo.status().staged_added


def test_commit_log_and_nothing_to_commit(repo: Repo) -> None:
    make_dataset(repo.root, {"a": 1})
    c1 = _commit_all(repo, "first")
    with pytest.raises(NothingToCommit):
        repo.commit("again", author=AUTHOR)
    write_image(os.path.join(repo.root, "a", "x.jpg"), 3)
    c2 = _commit_all(repo, "second")
    log = repo.log()
    assert [c.id for c in log] == [c2, c1]
    assert log[0].parents == [c1] and log[1].parents == []
    assert log[0].author == AUTHOR and log[0].message == "second\n"
    assert repo.resolve("HEAD~1") == c1 and repo.resolve(c2[:8]) == c2
    with pytest.raises(BadRevision):
        repo.resolve("nope")


def test_checkout_restores_exact_bytes_and_touches_only_changes(repo: Repo) -> None:
    make_dataset(repo.root, {"a": 4, "b": 4})
    v1 = _commit_all(repo, "v1")
    snap1 = snapshot(repo.root)
    untouched = os.path.join(repo.root, "b", "0000.jpg")
    ino = os.stat(untouched).st_ino
    write_image(os.path.join(repo.root, "a", "0001.jpg"), 77)
    os.unlink(os.path.join(repo.root, "a", "0002.jpg"))
    write_image(os.path.join(repo.root, "c", "new.png"), 8, "PNG")
    _commit_all(repo, "v2")
    snap2 = snapshot(repo.root)
    result = repo.checkout(v1)
    assert snapshot(repo.root) == snap1
    assert (result.written, result.removed) == (2, 1)
    assert not os.path.exists(os.path.join(repo.root, "c")), "emptied folders are removed"
    assert os.stat(untouched).st_ino == ino, "unchanged files are not rewritten"
    assert repo.status().clean and repo.current_branch() is None
    repo.checkout("main")
    assert snapshot(repo.root) == snap2 and repo.current_branch() == "main"


def test_checkout_refuses_to_overwrite_local_changes(repo: Repo) -> None:
    make_dataset(repo.root, {"a": 2})
    v1 = _commit_all(repo, "v1")
    write_image(os.path.join(repo.root, "a", "0000.jpg"), 50)
    _commit_all(repo, "v2")
    local = write_image(os.path.join(repo.root, "a", "0000.jpg"), 51)
    with pytest.raises(LocalChanges) as err:
        repo.checkout(v1)
    assert err.value.paths == ["a/0000.jpg"]
    with open(os.path.join(repo.root, "a", "0000.jpg"), "rb") as f:
        assert f.read() == local
    repo.checkout(v1, force=True)
    assert repo.status().clean


def test_checkout_force_discards_changes_everywhere(repo: Repo) -> None:
    make_dataset(repo.root, {"a": 2, "b": 1})
    _commit_all(repo, "v1")
    snap = snapshot(repo.root)
    write_image(os.path.join(repo.root, "b", "0000.jpg"), 123)
    os.unlink(os.path.join(repo.root, "a", "0001.jpg"))
    repo.checkout("main", force=True)
    assert snapshot(repo.root) == snap


def test_checkout_refuses_to_overwrite_untracked_file(repo: Repo) -> None:
    make_dataset(repo.root, {"a": 1})
    v1 = _commit_all(repo, "v1")
    write_image(os.path.join(repo.root, "a", "new.jpg"), 9)
    _commit_all(repo, "v2")
    repo.checkout(v1)
    write_image(os.path.join(repo.root, "a", "new.jpg"), 10)
    with pytest.raises(LocalChanges):
        repo.checkout("main")


def test_checkout_paths(repo: Repo) -> None:
    make_dataset(repo.root, {"a": 2, "b": 1})
    v1 = _commit_all(repo, "v1")
    old = snapshot(repo.root)
    write_image(os.path.join(repo.root, "a", "0000.jpg"), 70)
    write_image(os.path.join(repo.root, "b", "0000.jpg"), 71)
    _commit_all(repo, "v2")
    repo.checkout(v1, paths=[os.path.join(repo.root, "a")])
    now = snapshot(repo.root)
    assert now["a/0000.jpg"] == old["a/0000.jpg"]
    assert now["b/0000.jpg"] != old["b/0000.jpg"]
    assert repo.current_branch() == "main"
    assert repo.status().staged_modified == ["a/0000.jpg"]


def test_rollback_keeps_history_and_restores_bytes(repo: Repo) -> None:
    make_dataset(repo.root, {"a": 3})
    v1 = _commit_all(repo, "v1")
    snap1 = snapshot(repo.root)
    os.unlink(os.path.join(repo.root, "a", "0000.jpg"))
    write_image(os.path.join(repo.root, "a", "extra.jpg"), 40)
    v2 = _commit_all(repo, "v2")
    rb = repo.rollback(v1, message="undo", author=AUTHOR)
    assert snapshot(repo.root) == snap1
    assert [c.id for c in repo.log()] == [rb, v2, v1]
    assert repo.log()[0].tree == repo.commit_info(v1).tree
    assert repo.current_branch() == "main" and repo.status().clean


def test_branches_and_tags(repo: Repo) -> None:
    make_dataset(repo.root, {"a": 1})
    v1 = _commit_all(repo, "v1")
    repo.create_branch("exp")
    repo.create_tag("v1")
    repo.create_tag("v1-annotated", message="release")
    assert repo.branches() == {"main": v1, "exp": v1}
    assert repo.tags() == {"v1": v1, "v1-annotated": v1}
    assert repo.resolve("v1-annotated") == v1
    with pytest.raises(Exception, match="already exists"):
        repo.create_branch("exp")
    with pytest.raises(Exception, match="not a valid"):
        repo.create_branch("bad..name")
    with pytest.raises(Exception, match="cannot delete"):
        repo.delete_branch("main")
    repo.delete_branch("exp")
    assert "exp" not in repo.branches()


def test_merge_fast_forward_and_three_way(repo: Repo) -> None:
    make_dataset(repo.root, {"a": 2, "b": 2})
    _commit_all(repo, "base")
    repo.create_branch("feature")
    repo.checkout("feature")
    write_image(os.path.join(repo.root, "b", "feat.jpg"), 300)
    feat = _commit_all(repo, "feature work")
    repo.checkout("main")
    assert repo.merge("feature").kind == "fast-forward"
    assert repo.head_commit() == feat and os.path.exists(os.path.join(repo.root, "b", "feat.jpg"))
    # diverge: main changes a/, feature changes b/
    repo.checkout("feature")
    os.unlink(os.path.join(repo.root, "b", "0000.jpg"))
    theirs = _commit_all(repo, "drop b0")
    repo.checkout("main")
    write_image(os.path.join(repo.root, "a", "main.jpg"), 301)
    ours = _commit_all(repo, "main work")
    result = repo.merge("feature", author=AUTHOR)
    assert result.kind == "merge"
    assert repo.commit_info(result.commit or "").parents == [ours, theirs]
    assert not os.path.exists(os.path.join(repo.root, "b", "0000.jpg"))
    assert os.path.exists(os.path.join(repo.root, "a", "main.jpg"))
    assert repo.status().clean
    assert repo.merge("feature").kind == "up-to-date"


def test_merge_conflict_is_reported_and_changes_nothing(repo: Repo) -> None:
    make_dataset(repo.root, {"a": 2})
    _commit_all(repo, "base")
    repo.create_branch("other")
    write_image(os.path.join(repo.root, "a", "0000.jpg"), 500)
    ours = _commit_all(repo, "ours")
    repo.checkout("other")
    write_image(os.path.join(repo.root, "a", "0000.jpg"), 501)
    _commit_all(repo, "theirs")
    repo.checkout("main")
    before = snapshot(repo.root)
    with pytest.raises(MergeConflict) as err:
        repo.merge("other")
    assert err.value.paths == ["a/0000.jpg"]
    assert repo.head_commit() == ours and snapshot(repo.root) == before


def test_merge_into_an_unborn_branch_over_identical_untracked_files(repo: Repo) -> None:
    """A crawl into a new repository commits the .gitattributes that init wrote and
    staged: merging it into the unborn branch loses nothing, so it works; so does an
    untracked file with the very bytes the merge brings. Other bytes are refused."""
    attrs = Path(repo.root, ".gitattributes").read_bytes()
    img = os.path.join(repo.root, "x.jpg")
    write_image(img, 7)
    data = Path(img).read_bytes()
    repo.media.add_bytes(data, oid=hashlib.sha256(data).hexdigest())
    files = [(".gitattributes", attrs), ("a/x.jpg", hashlib.sha256(data).hexdigest(), len(data))]
    repo.commit_files("crawl", files, "crawl", author=AUTHOR)  # type: ignore[arg-type]
    os.makedirs(os.path.join(repo.root, "a"))
    with open(os.path.join(repo.root, "a", "x.jpg"), "wb") as f:
        f.write(data[:-1] + b"\0")  # same path, other bytes: refused
    with pytest.raises(LocalChanges) as err:
        repo.merge("crawl")
    assert err.value.paths == ["a/x.jpg"]
    os.replace(img, os.path.join(repo.root, "a", "x.jpg"))  # the same bytes: fine
    repo.merge("crawl")
    assert repo.head_commit() == repo.resolve("crawl")
    assert repo.status().clean


def test_rm(repo: Repo) -> None:
    make_dataset(repo.root, {"a": 2})
    _commit_all(repo, "v1")
    with pytest.raises(BadPath, match="-r"):
        repo.rm([os.path.join(repo.root, "a")])
    repo.rm([os.path.join(repo.root, "a", "0000.jpg")], cached=True)
    assert os.path.exists(os.path.join(repo.root, "a", "0000.jpg"))
    st = repo.status()
    assert st.staged_deleted == ["a/0000.jpg"] and st.untracked == ["a/0000.jpg"]
    repo.rm([os.path.join(repo.root, "a")], recursive=True)
    assert not os.path.exists(os.path.join(repo.root, "a", "0001.jpg"))
    assert os.path.exists(os.path.join(repo.root, "a", "0000.jpg")), "untracked files stay"
    repo.commit("rm", author=AUTHOR)
    assert [e.path for e in repo.ls()] == [".gitattributes"]


def test_fsck_and_gc(repo: Repo) -> None:
    data = make_dataset(repo.root, {"a": 2})
    _commit_all(repo, "v1")
    assert repo.fsck().ok
    # an unreferenced object: added, then unstaged and deleted
    orphan = write_image(os.path.join(repo.root, "tmp.jpg"), 900)
    repo.add([os.path.join(repo.root, "tmp.jpg")])
    repo.rm([os.path.join(repo.root, "tmp.jpg")])
    orphan_oid = hashlib.sha256(orphan).hexdigest()
    assert repo.media.has(orphan_oid)
    report = repo.gc()
    assert report.removed_media == 1 and not repo.media.has(orphan_oid)
    for content in data.values():
        assert repo.media.has(hashlib.sha256(content).hexdigest()), "gc must keep reachable media"
    assert repo.fsck().ok
    # corruption is named with path and oid
    victim = hashlib.sha256(data["a/0001.jpg"]).hexdigest()
    path = repo.media.path(victim)
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.write(b"X")
    report2 = repo.fsck()
    assert not report2.ok
    assert any(p["path"] == "a/0001.jpg" and p["oid"] == victim for p in report2.problems)


def test_catalog_rebuild(repo: Repo) -> None:
    data = make_dataset(repo.root, {"a": 3})
    _commit_all(repo, "v1")
    oids = [hashlib.sha256(c).hexdigest() for c in data.values()]
    before = repo.catalog.get_many(oids)
    os.unlink(repo.catalog.path)
    repo._catalog = None
    assert repo.catalog.get_many(oids) == {}
    result = repo.rebuild_catalog()
    assert result["objects"] == 3
    assert repo.catalog.get_many(oids) == before
    assert "phash-v2" in repo.catalog.meta()["phash_recipe"]


def test_diff_reports_dataset_changes(repo: Repo) -> None:
    make_dataset(repo.root, {"cat": 3, "dog": 2})
    v1 = _commit_all(repo, "v1")
    os.rename(
        os.path.join(repo.root, "cat", "0000.jpg"), os.path.join(repo.root, "dog", "moved.jpg")
    )
    os.unlink(os.path.join(repo.root, "cat", "0001.jpg"))
    write_image(os.path.join(repo.root, "dog", "0000.jpg"), 4242, size=(60, 50))
    write_image(os.path.join(repo.root, "bird", "0000.jpg"), 4343)
    # work tree vs HEAD, before anything is staged
    d = repo.diff()
    assert d.removed == ["cat/0000.jpg", "cat/0001.jpg"] and d.modified == ["dog/0000.jpg"]
    assert d.added == [] and d.renamed == []  # untracked files are not in the diff until added
    repo.add([repo.root])
    staged = repo.diff()
    assert staged.renamed == [{"from": "cat/0000.jpg", "to": "dog/moved.jpg"}]
    assert staged.removed == ["cat/0001.jpg"]
    v2 = repo.commit("v2", author=AUTHOR)
    d2 = repo.diff(v1, v2)
    assert d2.added == ["bird/0000.jpg"]
    assert d2.classes == {
        "bird": {"before": 0, "after": 1},
        "cat": {"before": 3, "after": 1},
        "dog": {"before": 2, "after": 3},
    }
    assert d2.details["dog/0000.jpg"]["new_dims"] == [60, 50]
    assert repo.diff(v2, v2).empty
    # one revision: against the work tree
    assert repo.diff(v1).added == ["bird/0000.jpg"]


def test_reopen_from_subdirectory(repo: Repo) -> None:
    make_dataset(repo.root, {"a": 1})
    _commit_all(repo, "v1")
    with Repo.open(os.path.join(repo.root, "a")) as again:
        assert again.root == repo.root and again.status().clean


def test_link_mode_hardlinks_read_only_objects(repo: Repo) -> None:
    data = make_dataset(repo.root, {"a": 3})
    result = repo.add([repo.root], link=True)
    assert sorted(result.added) == sorted(data)
    v1 = repo.commit("v1", author=AUTHOR)
    for rel, content in data.items():
        st = os.stat(os.path.join(repo.root, rel))
        obj = repo.media.path(hashlib.sha256(content).hexdigest())
        assert st.st_ino == os.stat(obj).st_ino and not st.st_mode & 0o222
    assert repo.status().clean and repo.fsck().ok
    os.unlink(os.path.join(repo.root, "a", "0000.jpg"))  # edits replace files: the object survives
    write_image(os.path.join(repo.root, "a", "0000.jpg"), 4000)
    repo.add([repo.root])
    repo.commit("v2", author=AUTHOR)
    repo.checkout(v1, link=True)
    restored = os.path.join(repo.root, "a", "0000.jpg")
    assert Path(restored).read_bytes() == data["a/0000.jpg"]
    assert os.stat(restored).st_nlink >= 2
    assert repo.status().clean and repo.fsck().ok


@pytest.mark.parametrize("count", [3, 80])  # in process, and over worker processes
def test_a_refused_link_add_leaves_work_files_writable_and_no_links(repo: Repo, count: int) -> None:
    make_dataset(repo.root, {"a": count})
    with open(os.path.join(repo.root, "a", "broken.jpg"), "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 not really a JPEG")
    with pytest.raises(InvalidImages):
        repo.add([repo.root], link=True)
    for name in os.listdir(os.path.join(repo.root, "a")):
        st = os.stat(os.path.join(repo.root, "a", name))
        assert st.st_mode & 0o200 and st.st_nlink == 1, name
    assert list(repo.media) == [] and repo.media.stray_temp_files() == []
    result = repo.add(
        [os.path.join(repo.root, "a", f"{i:04d}.jpg") for i in range(count)], link=True
    )
    assert len(result.added) == count and repo.media.stray_temp_files() == []
    assert not os.stat(os.path.join(repo.root, "a", "0000.jpg")).st_mode & 0o222


def test_large_checkout_runs_in_parallel_and_is_exact(repo: Repo) -> None:
    make_dataset(repo.root, {"a": 40, "b": 40})  # above the parallel threshold
    v1 = _commit_all(repo, "v1")
    snap1 = snapshot(repo.root)
    for rel in list(snap1):
        if rel.endswith(".jpg"):
            os.unlink(os.path.join(repo.root, rel))
    make_dataset(repo.root, {"a": 40, "b": 40}, seed=5)
    _commit_all(repo, "v2")
    result = repo.checkout(v1)
    assert result.written == 80 and snapshot(repo.root) == snap1
    assert not os.listdir(repo.tmp_dir), "no temporary files left behind"


def test_cached_class_counts_equal_a_fresh_count(repo: Repo) -> None:
    from pixvcs.diff import class_counts

    make_dataset(repo.root, {"a": 3, "b": 2})
    with open(os.path.join(repo.root, "a", "notes.txt"), "w") as f:
        f.write("not an image")
    v1 = _commit_all(repo, "v1")
    os.rename(os.path.join(repo.root, "a", "0000.jpg"), os.path.join(repo.root, "b", "x.jpg"))
    write_image(os.path.join(repo.root, "c", "deep", "y.png"), 3, "PNG")
    v2 = _commit_all(repo, "v2")
    cached = {rev: class_counts(repo, repo.tree_of(rev)) for rev in (v1, v2)}
    assert cached[v2] == {"a": 2, "b": 3, "c": 1}
    repo.index.db.execute("DELETE FROM treestats")
    assert {rev: class_counts(repo, repo.tree_of(rev)) for rev in (v1, v2)} == cached


def test_stale_ref_lock_from_a_killed_process_does_not_block(repo: Repo) -> None:
    make_dataset(repo.root, {"a": 1})
    _commit_all(repo, "v1")
    lock = os.path.join(repo.git_dir, "refs", "heads", "main.lock")
    with open(lock, "w") as f:
        f.write("0" * 40 + "\n")
    old = time.time() - 60
    os.utime(lock, (old, old))
    write_image(os.path.join(repo.root, "a", "n.jpg"), 2)
    v2 = _commit_all(repo, "v2")
    assert repo.head_commit() == v2 and not os.path.exists(lock)


def test_fsck_reports_a_pointer_whose_size_lies(repo: Repo) -> None:
    from dulwich.objects import Blob

    from pixvcs import trees

    data = make_dataset(repo.root, {"a": 1})
    _commit_all(repo, "v1")
    oid = hashlib.sha256(data["a/0000.jpg"]).hexdigest()
    liar = Blob.from_string(format_pointer(oid, len(data["a/0000.jpg"]) + 1))
    repo.store.add_object(liar)
    objs: list = []
    tree = trees.update(
        repo.store, repo.tree_of(None), [("b/liar.jpg", 0o100644, liar.id.decode())], objs
    )
    for obj, _ in objs:
        repo.store.add_object(obj)
    head = repo.head_commit()
    assert head is not None
    commit = repo._write_commit(tree, [head], "liar", author=AUTHOR, committer=None, timestamp=None)
    repo.create_branch("liar", commit)
    problems = repo.fsck().problems
    assert [p["kind"] for p in problems] == ["pointer-size-mismatch"]
    assert problems[0]["oid"] == oid


def test_text_that_starts_like_a_pointer_is_stored_as_media(repo: Repo) -> None:
    text = b"version https://git-lfs.github.com/spec/v1\nthis is just a note\n"
    Path(repo.root, "note.txt").write_bytes(text)
    repo.add([repo.root])
    v1 = repo.commit("v1", author=AUTHOR)
    entry = next(e for e in repo.ls() if e.path == "note.txt")
    assert entry.kind == "media" and entry.oid == hashlib.sha256(text).hexdigest()
    os.unlink(os.path.join(repo.root, "note.txt"))
    repo.checkout(v1, force=True)
    assert Path(repo.root, "note.txt").read_bytes() == text
    assert repo.fsck().ok and repo.status().clean


def test_checkout_never_deletes_an_untracked_file_in_the_way(repo: Repo) -> None:
    make_dataset(repo.root, {"a": 1})
    v1 = _commit_all(repo, "v1")
    write_image(os.path.join(repo.root, "b", "x.jpg"), 8)
    _commit_all(repo, "v2")
    repo.checkout(v1)
    Path(repo.root, "b").write_bytes(b"my precious notes")  # a file where dir b/ must go
    with pytest.raises(LocalChanges) as err:
        repo.checkout("main")
    assert err.value.paths == ["b"]
    assert Path(repo.root, "b").read_bytes() == b"my precious notes"


def test_checkout_never_deletes_untracked_files_in_a_directory_in_the_way(repo: Repo) -> None:
    Path(repo.root, "x").write_bytes(b"file")
    v1 = _commit_all(repo, "v1")
    repo.rm([os.path.join(repo.root, "x")])
    write_image(os.path.join(repo.root, "x", "y.jpg"), 1)
    _commit_all(repo, "v2")
    Path(repo.root, "x", "mine.txt").write_bytes(b"untracked")
    with pytest.raises(LocalChanges) as err:
        repo.checkout(v1)
    assert "x/mine.txt" in err.value.paths
    assert Path(repo.root, "x", "mine.txt").read_bytes() == b"untracked"


def test_executable_bit_change_is_seen(repo: Repo) -> None:
    p = Path(repo.root, "run.sh")
    p.write_bytes(b"#!/bin/sh\n")
    _commit_all(repo, "v1")
    os.chmod(p, 0o755)
    assert repo.status().modified == ["run.sh"]
    repo.add([str(p)])
    repo.commit("exec", author=AUTHOR)
    assert next(e for e in repo.ls() if e.path == "run.sh").mode == 0o100755


def test_unknown_git_format_is_refused_cleanly(repo: Repo) -> None:
    from pixvcs import UnsupportedFormat

    cfg = Path(repo.git_dir, "config")
    cfg.write_text(
        cfg.read_text().replace("repositoryformatversion = 0", "repositoryformatversion = 7")
    )
    with pytest.raises(UnsupportedFormat, match="repositoryformatversion 7"):
        Repo.open(repo.root)


def test_gc_removes_nothing_when_history_is_incomplete(repo: Repo) -> None:
    from pixvcs import MissingObject

    data = make_dataset(repo.root, {"a": 1})
    _commit_all(repo, "v1")
    Path(repo.git_dir, "refs", "heads", "broken").write_text("1" * 40 + "\n")
    with pytest.raises(MissingObject):
        repo.gc()
    assert repo.media.has(hashlib.sha256(data["a/0000.jpg"]).hexdigest())


def test_link_checkout_of_an_executable_copies_it(repo: Repo) -> None:
    p = Path(repo.root, "tool.png")
    write_image(str(p), 3, "PNG")
    os.chmod(p, 0o755)
    v1 = _commit_all(repo, "v1")
    os.unlink(p)
    repo.checkout(v1, force=True, link=True)
    assert os.stat(p).st_mode & 0o111 and os.stat(p).st_nlink == 1
    assert repo.status().clean


def test_interrupted_switch_is_rederived_from_head(repo: Repo) -> None:
    make_dataset(repo.root, {"a": 2})
    v1 = _commit_all(repo, "v1")
    write_image(os.path.join(repo.root, "a", "0000.jpg"), 99)
    _commit_all(repo, "v2")
    # simulate a crash after the work tree and index changed, before HEAD moved
    from pixvcs import trees, worktree

    changes = list(trees.diff(repo.store, repo.tree_of("main"), repo.tree_of(v1)))
    with repo.lock():
        worktree._apply(repo, changes, lambda *a: None)
    st = repo.status()
    assert repo.current_branch() == "main"
    assert st.staged_modified == ["a/0000.jpg"], "the half-done switch shows as a change"
    repo.checkout("main", force=True)
    assert repo.status().clean


def test_checkout_killed_half_way_leaves_no_strays(
    repo: Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pixvcs import fsutil

    make_dataset(repo.root, {"a": 6})
    v1 = _commit_all(repo, "v1")
    for name in os.listdir(os.path.join(repo.root, "a")):
        os.unlink(os.path.join(repo.root, "a", name))
    make_dataset(repo.root, {"b": 6}, seed=2)
    _commit_all(repo, "v2")
    snap_main = snapshot(repo.root)
    real_rename, calls = fsutil.atomic_rename, []

    def dies_on_the_fourth(tmp: str, dest: str, *, readonly: bool = False) -> None:
        calls.append(dest)
        if len(calls) == 4:
            raise KeyboardInterrupt("killed")  # stands in for SIGKILL mid-checkout
        real_rename(tmp, dest, readonly=readonly)

    monkeypatch.setattr(fsutil, "atomic_rename", dies_on_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        repo.checkout(v1)
    monkeypatch.setattr(fsutil, "atomic_rename", real_rename)
    with Repo.open(repo.root) as again:
        st = again.status()
        assert len(st.staged_added) == 3 and st.untracked == []  # the 3 files it wrote
        again.checkout("main", force=True)
        assert snapshot(again.root) == snap_main and again.status().clean


def test_catalog_from_another_phash_recipe_is_not_mixed(repo: Repo) -> None:
    data = make_dataset(repo.root, {"a": 1})
    _commit_all(repo, "v1")
    oid = hashlib.sha256(data["a/0000.jpg"]).hexdigest()
    repo.catalog.db.execute("UPDATE meta SET value = 'phash-v0' WHERE key = 'phash_recipe'")
    repo.catalog.db.conn.commit()
    repo.catalog.close()
    repo._catalog = None
    assert repo.catalog.get(oid) is None
    repo.rebuild_catalog()
    assert repo.catalog.get(oid) is not None


def test_commit_files_stages_a_version_on_a_branch_without_touching_the_work_tree(
    repo: Repo,
) -> None:
    from tests.imagegen import image_bytes

    make_dataset(repo.root, {"a": 1})
    base = _commit_all(repo, "base")
    before = snapshot(repo.root)
    data = image_bytes(77)
    oid = repo.media.add_bytes(data)
    c1 = repo.commit_files(
        "crawl/job1",
        [("b/new.jpg", oid, len(data)), ("prov.jsonl", b"{}\n")],
        "crawl",
        base="main",
        author=AUTHOR,
    )
    assert repo.branches()["crawl/job1"] == c1 and repo.commit_info(c1).parents == [base]
    assert snapshot(repo.root) == before and repo.status().clean
    assert {e.path for e in repo.ls("crawl/job1")} == {
        ".gitattributes",
        "a/0000.jpg",
        "b/new.jpg",
        "prov.jsonl",
    }
    c2 = repo.commit_files("crawl/job1", [("prov.jsonl", b"{}\n{}\n")], "more", author=AUTHOR)
    assert repo.commit_info(c2).parents == [c1]
    with pytest.raises(MissingMedia):
        repo.commit_files("crawl/job1", [("x.jpg", "0" * 64, 3)], "bad", author=AUTHOR)
    assert repo.merge("crawl/job1").kind == "fast-forward"
    assert Path(repo.root, "b", "new.jpg").read_bytes() == data


def test_checkout_from_an_unborn_head_still_refuses_untracked_files(tmp_path: Path) -> None:
    """A checkout into a repository with no commit and an empty index skips the
    search for local changes only when the work tree holds nothing but .pixvcs
    (a fresh clone): an untracked file in the way is still refused, and files
    outside the version are left alone."""
    src = Repo.init(str(tmp_path / "src"))
    make_dataset(src.root, {"a": 3})
    v1 = _commit_all(src, "v1")
    src.close()
    for name, untracked in (("empty", None), ("busy", b"not the image")):
        dest = Repo.init(str(tmp_path / name), with_gitattributes=False)
        dest.add_remote("origin", str(tmp_path / "src"))
        dest.fetch("origin")
        if untracked is not None:
            os.makedirs(os.path.join(dest.root, "a"))
            Path(dest.root, "a", "0001.jpg").write_bytes(untracked)
            Path(dest.root, "notes.txt").write_text("mine")
            with pytest.raises(LocalChanges) as err:
                dest.checkout(v1)
            assert err.value.paths == ["a/0001.jpg"]
            assert Path(dest.root, "a", "0001.jpg").read_bytes() == untracked
            os.unlink(os.path.join(dest.root, "a", "0001.jpg"))
        dest.checkout(v1)
        got = snapshot(dest.root)
        assert got == {
            **snapshot(str(tmp_path / "src")),
            **({"notes.txt": b"mine"} if untracked else {}),
        }
        dest.close()
