from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from pixvcs import CorruptObject, MissingMedia, RefConflict, Repo
from pixvcs.cli import main
from tests.conftest import AUTHOR, race_pushes
from tests.imagegen import make_dataset, snapshot, write_image


@pytest.fixture
def remote(tmp_path: Path) -> str:
    path = str(tmp_path / "shared.git")
    Repo.init(path, bare=True).close()
    return path


def _commit_all(repo: Repo, msg: str) -> str:
    repo.add([repo.root])
    return repo.commit(msg, author=AUTHOR)


def _new(tmp_path: Path, name: str, remote: str) -> Repo:
    repo = Repo.init(str(tmp_path / name))
    repo.add_remote("origin", remote)
    return repo


def test_push_clone_fetch_pull_round_trip(tmp_path: Path, remote: str) -> None:
    a = _new(tmp_path, "a", remote)
    data = make_dataset(a.root, {"cat": 3})
    v1 = _commit_all(a, "v1")
    a.create_tag("v1")
    first = a.push(tags=True)
    assert first.media_sent == 3 and set(first.updated) == {"refs/heads/main", "refs/tags/v1"}
    assert a.branches() == {"main": v1}
    assert a.git.refs[b"refs/remotes/origin/main"].decode() == v1
    write_image(os.path.join(a.root, "dog", "0.jpg"), 7)
    v2 = _commit_all(a, "v2")
    assert a.push().media_sent == 1, "only what the remote lacks moves"
    again = a.push()
    assert again.updated == {} and again.up_to_date == ["refs/heads/main"]

    b = Repo.clone(remote, str(tmp_path / "b"))
    assert b.current_branch() == "main" and b.head_commit() == v2
    assert snapshot(b.root) == snapshot(a.root)
    assert b.status().clean and b.fsck().ok
    # the clone holds the media of the checked-out version only...
    assert sorted(b.media) == sorted(
        hashlib.sha256(c).hexdigest()
        for c in [*data.values(), Path(a.root, "dog", "0.jpg").read_bytes()]
    )
    # ...and fetches other versions' media when a checkout needs them
    os.unlink(b.media.path(hashlib.sha256(data["cat/0000.jpg"]).hexdigest()))
    b.checkout("v1", force=True)
    assert Path(b.root, "cat", "0000.jpg").read_bytes() == data["cat/0000.jpg"]
    b.checkout("main")

    write_image(os.path.join(b.root, "bird", "0.jpg"), 8)
    v3 = _commit_all(b, "v3")
    b.push()
    result = a.pull()
    assert result.kind == "fast-forward" and a.head_commit() == v3
    assert Path(a.root, "bird", "0.jpg").exists()
    for r in (a, b):
        r.close()


def test_non_fast_forward_push_is_refused_unless_forced(tmp_path: Path, remote: str) -> None:
    a = _new(tmp_path, "a", remote)
    make_dataset(a.root, {"cat": 1})
    _commit_all(a, "base")
    a.push()
    b = Repo.clone(remote, str(tmp_path / "b"))
    write_image(os.path.join(b.root, "cat", "b.jpg"), 1)
    theirs = _commit_all(b, "theirs")
    b.push()
    write_image(os.path.join(a.root, "cat", "a.jpg"), 2)
    ours = _commit_all(a, "ours")
    with pytest.raises(RefConflict, match="fetch first"):
        a.push()
    with Repo.open(remote) as r:
        assert r.branches()["main"] == theirs, "nothing lost"
    a.push(force=True)
    with Repo.open(remote) as r:
        assert r.branches()["main"] == ours
    a.close()
    b.close()


def test_concurrent_pushes_one_wins_the_other_is_told_to_fetch(tmp_path: Path, remote: str) -> None:
    a = _new(tmp_path, "a", remote)
    make_dataset(a.root, {"cat": 1})
    _commit_all(a, "base")
    a.push()
    clones = [Repo.clone(remote, str(tmp_path / f"c{i}")) for i in range(2)]
    heads = []
    for i, c in enumerate(clones):
        write_image(os.path.join(c.root, "cat", f"{i}.jpg"), 100 + i)
        heads.append(_commit_all(c, f"c{i}"))
    # each clone is its own repository (own lock); the remote's ref is the contested thing
    outcomes = race_pushes(clones)
    assert sorted(o == "ok" for o in outcomes) == [False, True]
    assert any("fetch first" in o for o in outcomes)
    with Repo.open(remote) as r:
        assert r.branches()["main"] in heads and r.fsck().ok
    for c in [a, *clones]:
        c.close()


def test_corrupt_object_on_the_remote_is_never_stored(tmp_path: Path, remote: str) -> None:
    a = _new(tmp_path, "a", remote)
    data = make_dataset(a.root, {"cat": 2})
    _commit_all(a, "v1")
    a.push()
    victim = hashlib.sha256(data["cat/0001.jpg"]).hexdigest()
    with Repo.open(remote) as r:
        path = r.media.path(victim)
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.write(b"XX")
    with pytest.raises(CorruptObject):
        Repo.clone(remote, str(tmp_path / "b"))
    store = Path(tmp_path, "b", ".pixvcs", "lfs", "objects")
    stored = [p.name for p in store.rglob("*") if p.is_file()]
    assert victim not in stored
    a.close()


def test_missing_media_names_the_remote(tmp_path: Path, remote: str) -> None:
    a = _new(tmp_path, "a", remote)
    data = make_dataset(a.root, {"cat": 1})
    v1 = _commit_all(a, "v1")
    a.push()
    os.unlink(os.path.join(a.root, "cat", "0000.jpg"))
    oid = hashlib.sha256(data["cat/0000.jpg"]).hexdigest()
    for store in (a.media, Repo.open(remote).media):
        os.unlink(store.path(oid))
    with pytest.raises(MissingMedia) as err:
        a.checkout(v1, force=True)
    assert oid in str(err.value) and "origin" in str(err.value)
    a.close()


def test_media_a_remote_lacks_come_from_the_next_one(tmp_path: Path, remote: str) -> None:
    """A download is asked for straight away; when the first remote turns out
    to lack some objects, it keeps what it sent and the rest comes from the
    next remote."""
    backup = str(tmp_path / "backup.git")
    Repo.init(backup, bare=True).close()
    a = _new(tmp_path, "a", remote)
    a.add_remote("backup", backup)
    data = make_dataset(a.root, {"cat": 4})
    v1 = _commit_all(a, "v1")
    a.push()
    a.push("backup")
    oids = sorted(hashlib.sha256(d).hexdigest() for d in data.values())
    with Repo.open(remote) as shared:
        os.unlink(shared.media.path(oids[1]))
    b = Repo.init(str(tmp_path / "b"))
    b.add_remote("origin", remote)
    b.add_remote("backup", backup)
    b.fetch()
    b.checkout(v1)
    assert snapshot(b.root) == snapshot(a.root)
    assert sorted(b.media) == oids and b.fsck().ok
    a.close()
    b.close()


def test_fetch_all_media_and_remote_config(tmp_path: Path, remote: str) -> None:
    a = _new(tmp_path, "a", remote)
    make_dataset(a.root, {"cat": 2})
    _commit_all(a, "v1")
    os.unlink(os.path.join(a.root, "cat", "0000.jpg"))
    _commit_all(a, "v2")
    a.push()
    b = Repo.init(str(tmp_path / "b"))
    b.add_remote("origin", remote)
    assert b.remotes() == {"origin": remote}
    assert list(b.media) == []
    result = b.fetch(all_media=True)
    assert result.media_fetched == 2 and "refs/remotes/origin/main" in result.updated
    b.remove_remote("origin")
    assert b.remotes() == {} and b"refs/remotes/origin/main" not in b.git.refs
    a.close()
    b.close()


def test_cli_remote_push_clone(tmp_path: Path) -> None:
    def run(*args: str, code: int = 0) -> str:
        result = CliRunner().invoke(main, list(args), catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result.output

    run("init", "--bare", str(tmp_path / "r.git"))
    ds = tmp_path / "ds"
    run("init", str(ds))
    make_dataset(str(ds), {"cat": 2})
    run("-C", str(ds), "add", ".")
    run("-C", str(ds), "commit", "-m", "v1", "--author", AUTHOR)
    run("-C", str(ds), "remote", "add", "origin", str(tmp_path / "r.git"))
    assert json.loads(run("-C", str(ds), "remote", "list", "--json")) == [
        {"name": "origin", "url": str(tmp_path / "r.git")}
    ]
    pushed = json.loads(run("-C", str(ds), "push", "--json"))
    assert pushed["media_sent"] == 2
    cloned = json.loads(run("-C", str(tmp_path), "clone", "r.git", "copy", "--json"))
    assert cloned["branch"] == "main" and cloned["media"] == 2
    assert (tmp_path / "copy" / "cat" / "0001.jpg").read_bytes() == (
        ds / "cat" / "0001.jpg"
    ).read_bytes()
    assert "up to date" in run("-C", str(ds), "push")
    assert "fetch first" not in run("-C", str(tmp_path / "copy"), "pull")


def test_an_interrupted_push_sends_only_what_is_missing_when_run_again(
    tmp_path: Path, remote: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pixvcs import media as media_mod

    a = _new(tmp_path, "a", remote)
    make_dataset(a.root, {"cat": 250})  # more than one transfer batch (100)
    _commit_all(a, "v1")
    published: list[str] = []
    real_publish = media_mod.MediaStore.publish
    counting = threading.Lock()  # batches publish from more than one thread

    def dies_in_the_second_batch(self: media_mod.MediaStore, tmp: str, oid: str) -> None:
        with counting:
            if self.root != a.media.root and len(published) >= 150:
                raise KeyboardInterrupt("killed")  # stands in for SIGKILL mid-push
            real_publish(self, tmp, oid)
            published.append(oid)

    monkeypatch.setattr(media_mod.MediaStore, "publish", dies_in_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        a.push()
    monkeypatch.setattr(media_mod.MediaStore, "publish", real_publish)
    with Repo.open(remote) as r:
        assert "main" not in r.branches(), "no ref before all media arrived"
        # the batch that died published nothing; batches already running in
        # other workers finish: every object there is whole, no temp file left
        arrived = set(r.media)
        assert 150 <= len(arrived) < 250 and all(r.media.verify(o) == o for o in arrived)
        assert r.media.stray_temp_files() == []
    result = a.push()
    assert result.media_sent == 250 - len(arrived), "only what had not arrived is sent again"
    with Repo.open(remote) as r:
        assert r.branches()["main"] == a.head_commit() and r.fsck().ok
    a.close()


def test_an_interrupted_clone_fetches_only_what_is_missing_when_run_again(
    tmp_path: Path, remote: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = _new(tmp_path, "a", remote)
    make_dataset(a.root, {"cat": 120})
    _commit_all(a, "v1")
    a.push()
    b = Repo.init(str(tmp_path / "b"), with_gitattributes=False)
    b.add_remote("origin", remote)
    b.fetch()
    with Repo.open(remote) as r:
        first = sorted(r.media)[:70]
    b.fetch_media(first)  # an earlier run got this far before it was killed
    asked: list[int] = []
    from pixvcs import remote as remote_mod

    real_download = remote_mod.DirectoryEndpoint.download

    def counting(self: remote_mod.DirectoryEndpoint, oids, dest, progress, **kw):  # type: ignore[no-untyped-def]
        asked.append(len(oids))
        return real_download(self, oids, dest, progress, **kw)

    monkeypatch.setattr(remote_mod.DirectoryEndpoint, "download", counting)
    b.checkout("origin/main")
    assert asked == [50], "only the 50 objects not yet here are downloaded"
    assert b.fsck().ok
    a.close()
    b.close()


def test_clone_links_verified_objects_and_push_copies(tmp_path: Path, remote: str) -> None:
    a = _new(tmp_path, "a", remote)
    data = make_dataset(a.root, {"cat": 3, "dog": 2})
    _commit_all(a, "v1")
    assert a.push().media_sent == 5
    oids = sorted(hashlib.sha256(c).hexdigest() for c in data.values())
    with Repo.open(remote) as r:
        for oid in oids:  # a push copies: the shared store never shares an inode with a work store
            assert os.stat(r.media.path(oid)).st_ino != os.stat(a.media.path(oid)).st_ino
            assert os.stat(r.media.path(oid)).st_nlink == 1
        remote_media = r.media
    b = Repo.clone(remote, str(tmp_path / "b"))
    for oid in oids:  # a clone on the same filesystem links, as git clone --local does
        assert os.path.samefile(b.media.path(oid), remote_media.path(oid))
        assert not os.stat(b.media.path(oid)).st_mode & 0o222, "read-only"
    assert snapshot(b.root) == snapshot(a.root) and b.fsck().ok
    b.close()

    # an object that went bad in the remote is refused, not linked
    victim = remote_media.path(oids[0])
    os.chmod(victim, 0o644)
    with open(victim, "r+b") as f:
        f.write(b"rot")
    with pytest.raises(CorruptObject):
        Repo.clone(remote, str(tmp_path / "c"))
    with Repo.open(str(tmp_path / "c")) as c:
        assert not c.media.has(oids[0])
    a.close()


def test_large_transfers_run_in_worker_processes(
    tmp_path: Path, remote: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From PROCESS_THRESHOLD objects on, a directory push copies and a clone
    links in forked workers, each publishing its own batches: the same bytes,
    no temp file left, and a corrupt object stops it with the oid named."""
    from pixvcs import remote as remote_mod

    monkeypatch.setattr(remote_mod, "PROCESS_THRESHOLD", 10)
    monkeypatch.setattr(remote_mod, "BATCH", 7)  # several batches per worker
    forks: list[bool] = []
    can_fork = remote_mod._can_fork
    monkeypatch.setattr(remote_mod, "_can_fork", lambda: forks.append(can_fork()) or forks[-1])
    a = _new(tmp_path, "a", remote)
    data = make_dataset(a.root, {"cat": 20, "dog": 15})
    _commit_all(a, "v1")
    assert a.push().media_sent == 35
    with Repo.open(remote) as r:
        oids = sorted(hashlib.sha256(c).hexdigest() for c in data.values())
        assert sorted(r.media) == oids and r.media.stray_temp_files() == []
        assert all(r.media.verify(o) == o for o in oids)
        remote_media = r.media
    b = Repo.clone(remote, str(tmp_path / "b"))
    assert snapshot(b.root) == snapshot(a.root) and b.fsck().ok
    assert all(os.path.samefile(b.media.path(o), remote_media.path(o)) for o in oids)
    b.close()
    assert forks == [True, True], "the push and the clone both went to worker processes"

    # a bad object in the sender's store: refused by name, the remote keeps only whole objects
    write_image(os.path.join(a.root, "fox", "0.jpg"), 99)
    make_dataset(a.root, {"owl": 20}, seed=9)
    _commit_all(a, "v2")
    new = sorted(set(a.media) - set(oids))
    victim = a.media.path(new[3])
    os.chmod(victim, 0o644)
    with open(victim, "r+b") as f:
        f.seek(30)
        f.write(b"rot")
    with pytest.raises(CorruptObject) as err:
        a.push()
    assert err.value.expected == new[3]
    with Repo.open(remote) as r:
        assert new[3] not in set(r.media) and r.media.stray_temp_files() == []
        assert all(r.media.verify(o) == o for o in r.media)
        assert r.git.refs[b"refs/heads/main"].decode() != a.head_commit(), "no ref moved"
    a.close()


def test_push_takes_pointers_from_the_index_only_when_they_hash_to_the_blob(
    tmp_path: Path, remote: str
) -> None:
    import sqlite3

    from pixvcs.transfer import known_pointers

    a = _new(tmp_path, "a", remote)
    data = make_dataset(a.root, {"cat": 3})
    _commit_all(a, "v1")
    real = {hashlib.sha256(c).hexdigest() for c in data.values()}
    # a row that lies about its object: (oid, size) whose pointer is not that blob
    db = sqlite3.connect(os.path.join(a.state_dir, "index.db"))
    with db:
        db.execute("UPDATE entries SET oid = ? WHERE path = 'cat/0000.jpg'", ("0" * 64,))
    db.close()
    a.close()
    with Repo.open(str(tmp_path / "a")) as again:
        hints = known_pointers(again)
        assert {p.oid for p in hints.values()} == real - {
            hashlib.sha256(data["cat/0000.jpg"]).hexdigest()
        }, "the lying row is not believed, the two honest ones are"
        assert again.push().media_sent == 3
    with Repo.open(remote) as r:
        assert set(r.media) == real


def test_a_local_clone_links_the_remotes_git_objects(tmp_path: Path, remote: str) -> None:
    """As git clone --local: packs and loose objects are hard links, not copies; the
    clone is complete (fsck) and later pushes from it still work."""
    a = _new(tmp_path, "a", remote)
    make_dataset(a.root, {"cat": 3})
    _commit_all(a, "v1")
    a.push()  # a pack on the remote
    write_image(os.path.join(a.root, "cat", "9.jpg"), 9)
    _commit_all(a, "v2")
    a.push()
    a.close()
    b = Repo.clone(remote, str(tmp_path / "b"))
    try:
        packs = list(Path(b.git_dir, "objects", "pack").glob("*.pack"))
        assert packs and all(p.stat().st_nlink >= 2 for p in packs)
        remote_packs = {p.stat().st_ino for p in Path(remote, "objects", "pack").glob("*.pack")}
        assert {p.stat().st_ino for p in packs} <= remote_packs
        assert b.fsck().ok
        assert b.status().clean and len(b.ls()) == 5  # 4 images + .gitattributes
        write_image(os.path.join(b.root, "cat", "10.jpg"), 10)
        _commit_all(b, "v3")
        assert b.push().media_sent == 1
    finally:
        b.close()


def test_a_local_clone_learns_its_pointers_from_the_linked_packs(
    tmp_path: Path, remote: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pointers of the linked packs are read in one pass over each pack: the
    clone reads no pointer blob through the object store. A remote packed by
    git gc (deltas, which that pass leaves alone) still clones byte for byte."""
    import importlib
    import subprocess

    trees = importlib.import_module("pixvcs.trees")
    a = _new(tmp_path, "a", remote)
    make_dataset(a.root, {"cat": 40, "dog": 30})  # MIN_PACK objects or more: a pack
    _commit_all(a, "v1")
    a.push()
    a.close()
    assert list(Path(remote, "objects", "pack").glob("*.pack"))
    data = snapshot(str(tmp_path / "a"))
    reads: list[str] = []
    real = trees.blob_bytes

    def counting(store: object, blob_id: str) -> bytes:
        reads.append(blob_id)
        return real(store, blob_id)  # type: ignore[arg-type]

    monkeypatch.setattr(trees, "blob_bytes", counting)
    b = Repo.clone(remote, str(tmp_path / "b"))
    read_by_clone = set(reads)
    try:
        media_blobs = {e.blob for e in b.ls() if e.kind == "media"}
        assert len(media_blobs) == 70 and not media_blobs & read_by_clone
        assert snapshot(b.root) == data
    finally:
        b.close()
    # deltas in the remote's pack (two versions of a big text file, packed by git gc):
    # the hints are skipped, the clone is the same
    with Repo.open(str(tmp_path / "a")) as a2:
        labels = "".join(f"cat/{i:04d}.jpg,cat\n" for i in range(3000))
        Path(a2.root, "labels.csv").write_text(labels)
        _commit_all(a2, "v2")
        Path(a2.root, "labels.csv").write_text(labels + "dog/0000.jpg,dog\n")
        _commit_all(a2, "v3")
        a2.push()
    data = snapshot(str(tmp_path / "a"))
    subprocess.run(["git", "--git-dir", remote, "gc", "-q", "--aggressive"], check=True)
    from pixvcs.packingest import pointers_in

    gced = list(Path(remote, "objects", "pack").glob("*.pack"))
    assert gced and all(pointers_in(str(p)) == {} for p in gced), "deltas: no hints"
    c = Repo.clone(remote, str(tmp_path / "c"))
    try:
        assert snapshot(c.root) == data and c.fsck().ok
    finally:
        c.close()


def test_a_push_to_a_directory_indexes_its_pack_in_one_pass(
    tmp_path: Path, remote: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pack a push writes into a directory remote is checked and indexed by
    pixvcs.packingest (dulwich's indexer, which reads the pack back and resolves
    every object, is not used); git fsck accepts the result, and a clone of it
    is byte for byte the pushed version."""
    import subprocess

    from dulwich.object_store import DiskObjectStore

    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("dulwich indexed the pushed pack")

    a = _new(tmp_path, "a", remote)
    make_dataset(a.root, {"cat": 40, "dog": 30})
    _commit_all(a, "v1")
    monkeypatch.setattr(DiskObjectStore, "_complete_pack", refuse)
    a.push()
    write_image(os.path.join(a.root, "cat", "new.jpg"), 99)
    _commit_all(a, "v2")
    a.push()  # a small second pack on top
    a.close()
    monkeypatch.undo()
    packs = list(Path(remote, "objects", "pack").glob("*.pack"))
    assert len(packs) == 2 and not list(Path(remote, "objects", "pack").glob("tmp-*"))
    subprocess.run(
        ["git", "--git-dir", remote, "fsck", "--strict"], check=True, capture_output=True
    )
    b = Repo.clone(remote, str(tmp_path / "b"))
    try:
        assert snapshot(b.root) == snapshot(str(tmp_path / "a")) and b.fsck().ok
    finally:
        b.close()
