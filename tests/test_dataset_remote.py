"""pixvcs.open() over remotes: a directory remote (file://) and a real ``pixvcs
serve`` on a loopback socket; history mirrored into a cache directory, media
fetched only when read, into a bounded store shared by processes."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import pickle
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import pixvcs
from pixvcs import CorruptObject, MissingMedia, RemoteError, Repo
from pixvcs.cache import MediaCache, RemoteSource, default_cache_dir
from pixvcs.media import MediaStore
from pixvcs.packcache import PackStore
from pixvcs.server import make_app, make_server
from tests.conftest import AUTHOR
from tests.imagegen import make_dataset, write_image

TOKEN = "r-token-0123456789"
WRITE = "w-token-0123456789"


@dataclass
class Remote:
    url: str  # what pixvcs.open is given
    token: str | None
    work: Repo  # the repository that pushes to it
    files: dict[str, bytes]  # v1: path -> bytes
    v1: str


def _cached(cache: Path) -> list[str]:
    return sorted(PackStore(str(cache / "media")))


def _rot(cache: Path, oid: str) -> None:
    """Overwrite the start of a cached object's bytes in its pack (same size)."""
    pack, offset, _size = PackStore(str(cache / "media")).locate(oid)
    with open(pack, "r+b") as f:
        f.seek(offset)
        f.write(b"rotten")


def _cached_digest(cache: Path, oid: str) -> str:
    pack, offset, size = PackStore(str(cache / "media")).locate(oid)
    with open(pack, "rb") as f:
        f.seek(offset)
        return hashlib.sha256(f.read(size)).hexdigest()


def _push_v1(work: Repo) -> tuple[dict[str, bytes], str]:
    files = make_dataset(work.root, {"cat": 3, "dog": 2})
    files["big/wide.png"] = write_image(
        os.path.join(work.root, "big", "wide.png"), 9, "PNG", (96, 30)
    )
    work.add(["."])
    v1 = work.commit("v1", author=AUTHOR)
    work.create_tag("v1")
    work.push(tags=True)
    return files, v1


@pytest.fixture(params=["directory", "http"])
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Remote]:
    if request.param == "directory":
        Repo.init(str(tmp_path / "shared.git"), bare=True).close()
        work = Repo.init(str(tmp_path / "work"))
        work.add_remote("origin", str(tmp_path / "shared.git"))
        files, v1 = _push_v1(work)
        try:
            yield Remote((tmp_path / "shared.git").as_uri(), None, work, files, v1)
        finally:
            work.close()
        return
    root = tmp_path / "srv"
    root.mkdir()
    Repo.init(str(root / "animals"), bare=True).close()
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{WRITE} write\n{TOKEN} read\n")
    server = make_server(make_app(str(root), str(tokens)), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"127.0.0.1:{server.server_port}"
    work = Repo.init(str(tmp_path / "work"))
    try:
        work.add_remote("origin", f"http://me:{WRITE}@{base}/animals")
        files, v1 = _push_v1(work)
        yield Remote(f"http://{base}/animals", TOKEN, work, files, v1)
    finally:
        work.close()
        server.shutdown()
        server.server_close()


def _open(remote: Remote, cache: Path, rev: str = "v1", **kw: object) -> pixvcs.Dataset:
    return pixvcs.open(remote.url, rev, cache_dir=str(cache), token=remote.token, **kw)  # type: ignore[arg-type]


def test_open_a_pinned_version_fetches_only_what_is_read(remote: Remote, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    ds = _open(remote, cache)
    assert ds.commit == remote.v1 and [r.path for r in ds] == sorted(remote.files)
    assert ds.classes == ["big", "cat", "dog"]
    assert _cached(cache) == [], "opening fetches history only"
    first, last = ds[0], ds[-1]
    assert first.bytes() == remote.files[first.path]
    assert last.image().size == (48, 40)
    assert _cached(cache) == sorted({first.oid, last.oid}), "only what was read"
    # the history is a mirror under repos/<sha256 of the URL>
    (mirror,) = [p for p in os.listdir(cache / "repos") if not p.endswith(".lock")]
    assert len(mirror) == 64
    # the rest in batches, read ahead
    got = {r.path: data for r, data in ds.iter_bytes(prefetch=4)}
    assert got == remote.files
    assert len(_cached(cache)) == len(remote.files)
    # a subset and a size filter (read from the image headers: no remote catalog)
    wide = _open(remote, cache, where={"min_width": 64}, include="big/*")
    assert [(r.path, r.width, r.height) for r in wide] == [("big/wide.png", 96, 30)]


def test_a_pinned_version_does_not_move(remote: Remote, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    v1 = _open(remote, cache)
    write_image(os.path.join(remote.work.root, "bird", "0.jpg"), 77)
    remote.work.add(["."])
    v2 = remote.work.commit("v2", author=AUTHOR)
    remote.work.push()
    assert _open(remote, cache, "main").commit == v2, "each open fetches the history"
    assert len(_open(remote, cache, "main")) == len(remote.files) + 1
    again = _open(remote, cache, remote.v1)  # a commit id the mirror has: no fetch needed
    assert again.commit == v1.commit and [r.path for r in again] == [r.path for r in v1]
    assert {r.path: r.bytes() for r in v1} == remote.files
    with pytest.raises(pixvcs.BadRevision):
        _open(remote, cache, "no-such-tag")


def test_the_cache_bound_evicts_least_recently_used(remote: Remote, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    bound = 3 * max(len(b) for b in remote.files.values())
    ds = _open(remote, cache, cache_size=bound)
    for r in ds:
        assert r.bytes() == remote.files[r.path]
    store = MediaCache(str(cache / "media"))
    assert store.total() <= bound
    kept = _cached(cache)
    assert 0 < len(kept) < len(ds)
    assert ds[-1].oid in kept, "the most recently read object stays"
    assert ds[0].oid not in kept, "the least recently used one went first"
    assert ds[0].bytes() == remote.files[ds[0].path], "an evicted object is fetched again"
    assert store.total() <= bound
    # reading ahead holds what it fetched until it is read, then the bound holds again
    assert {r.path: d for r, d in ds.iter_bytes()} == remote.files
    assert store.total() <= bound


def test_a_corrupt_cached_object_is_fetched_again(remote: Remote, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    ds = _open(remote, cache)
    record = ds[1]
    assert record.bytes() == remote.files[record.path]
    _rot(cache, record.oid)
    assert _cached_digest(cache, record.oid) != record.oid
    assert record.bytes() == remote.files[record.path]  # detected, re-fetched, verified
    assert _cached_digest(cache, record.oid) == record.oid


def test_corruption_that_survives_a_fetch_raises(
    remote: Remote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = _open(remote, tmp_path / "cache")
    fetches: list[list[str]] = []
    real_fetch = RemoteSource._fetch

    def counting(self: RemoteSource, oids: list[str], *rest: Any) -> None:
        fetches.append(list(oids))
        real_fetch(self, oids, *rest)

    def rotten(self: MediaCache, oid: str) -> bytes:  # a disk that corrupts every write
        raise CorruptObject(oid, "0" * 64, self.root)

    monkeypatch.setattr(RemoteSource, "_fetch", counting)
    monkeypatch.setattr(MediaCache, "read", rotten)
    with pytest.raises(CorruptObject):
        ds[0].bytes()
    assert fetches == [[ds[0].oid], [ds[0].oid]], "fetched, then fetched again once"


def test_media_missing_on_the_remote(remote: Remote, tmp_path: Path) -> None:
    ds = _open(remote, tmp_path / "cache")
    victim = ds[2]
    if remote.url.startswith("file://"):
        shared = remote.url[len("file://") :]
    else:
        shared = str(tmp_path / "srv" / "animals")
    os.unlink(MediaStore(os.path.join(shared, "lfs")).path(victim.oid))
    with pytest.raises(MissingMedia) as e:
        victim.bytes()
    assert e.value.missing == [(victim.path, victim.oid)]


def test_http_needs_the_token(remote: Remote, tmp_path: Path) -> None:
    if remote.token is None:
        return  # a directory remote has no authentication
    with pytest.raises(RemoteError):
        pixvcs.open(remote.url, "v1", cache_dir=str(tmp_path / "cache"))


def test_pickles_without_handles(remote: Remote, tmp_path: Path) -> None:
    ds = _open(remote, tmp_path / "cache")
    assert ds[0].bytes()  # the source now holds an endpoint (an httpx client for HTTP)
    blob = pickle.dumps(ds)
    assert b"httpx" not in blob and b"dulwich" not in blob
    copy = pickle.loads(blob)
    assert {r.path: r.bytes() for r in copy} == remote.files


# -- several processes reading one cache -------------------------------------------------
_DATASET: pixvcs.Dataset | None = None


def _init(dataset: pixvcs.Dataset) -> None:
    global _DATASET
    _DATASET = dataset


def _digests(rounds: int) -> tuple[list[tuple[str, str]], int]:
    assert _DATASET is not None
    out = []
    for _ in range(rounds):
        for record, data in _DATASET.iter_bytes(prefetch=2):
            out.append((record.path, hashlib.sha256(data).hexdigest()))
        out.extend((r.path, hashlib.sha256(r.bytes()).hexdigest()) for r in _DATASET)
    source = _DATASET.source
    assert isinstance(source, RemoteSource)
    return out, source._cache().fetched


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_two_processes_read_one_cache(remote: Remote, tmp_path: Path, method: str) -> None:
    cache = tmp_path / "cache"
    bound = 2 * max(len(b) for b in remote.files.values())  # evictions race with reads
    ds = _open(remote, cache, cache_size=bound)
    expected = [(r.path, r.oid) for r in ds] * 2
    with multiprocessing.get_context(method).Pool(2, initializer=_init, initargs=(ds,)) as pool:
        results = pool.map(_digests, [3, 3])
    for got, fetched in results:
        assert got == expected * 3  # (path, sha256 of the bytes read) == (path, oid)
        assert fetched > len(ds), "evicted objects were fetched again"
    assert (
        MediaCache(str(cache / "media")).total()
        <= bound + max(len(b) for b in remote.files.values()) * 4
    )


def test_default_cache_dir() -> None:
    assert default_cache_dir({"PIXVCS_CACHE_DIR": "/data/c"}) == "/data/c"
    assert default_cache_dir({"XDG_CACHE_HOME": "/x"}) == "/x/pixvcs"
    home = os.path.expanduser("~")
    assert default_cache_dir({}) == os.path.join(home, ".cache", "pixvcs")


def test_cached_objects_are_hashed_on_every_read(remote: Remote, tmp_path: Path) -> None:
    """Unlike a repository's own store, a cache is never trusted: an object that
    rotted silently (read-only again, same size) is detected, fetched again."""
    cache = tmp_path / "cache"
    ds = _open(remote, cache)  # the default verify="untrusted"
    assert dict((r.path, d) for r, d in ds.iter_bytes()) == remote.files
    for record in (ds[0], ds[3]):
        _rot(cache, record.oid)
    assert ds[0].bytes() == remote.files[ds[0].path]
    assert dict((r.path, d) for r, d in ds.iter_bytes()) == remote.files
    for record in (ds[0], ds[3]):
        assert _cached_digest(cache, record.oid) == record.oid


def test_iter_bytes_fetches_ahead_in_batches(
    remote: Remote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pixvcs.cache

    fetches: list[list[str]] = []
    real_fetch = RemoteSource._fetch

    def counting(self: RemoteSource, oids: list[str], *rest: Any) -> None:
        fetches.append(list(oids))
        real_fetch(self, oids, *rest)

    monkeypatch.setattr(pixvcs.cache, "FETCH_FIRST", 2)
    monkeypatch.setattr(pixvcs.cache, "FETCH_BATCH", 2)
    monkeypatch.setattr(RemoteSource, "_fetch", counting)
    ds = _open(remote, tmp_path / "cache")
    first = ds[0]
    assert first.bytes() == remote.files[first.path]
    assert fetches == [[first.oid]]
    fetches.clear()
    got = [(r.path, data) for r, data in ds.iter_bytes()]
    assert dict(got) == remote.files and [p for p, _ in got] == [r.path for r in ds]
    # one download per batch of 2, in order, the object already cached left out of its batch
    assert [len(f) for f in fetches] == [1, 2, 2]
    assert [o for f in fetches for o in f] == [r.oid for r in ds[1:]]
    fetches.clear()
    assert [d for _, d in ds.iter_bytes()] == [d for _, d in got]
    assert [f for f in fetches if f] == [], "a warm cache is read without a request"


@pytest.mark.parametrize("read_one_first", [False, True])
def test_iter_bytes_stops_at_an_object_the_remote_lacks(
    remote: Remote, tmp_path: Path, read_one_first: bool
) -> None:
    ds = _open(remote, tmp_path / "cache")
    victim = ds[3]
    if read_one_first:
        # over HTTP, the first read's Batch API answer gives the pixvcs-multi
        # href, which the iteration's download then uses directly
        assert ds[0].bytes() == remote.files[ds[0].path]
        if remote.url.startswith("http"):
            assert ds.source._endpoint._multi_download is not None  # type: ignore[attr-defined]
    if remote.url.startswith("file://"):
        shared = remote.url[len("file://") :]
    else:
        shared = str(tmp_path / "srv" / "animals")
    os.unlink(MediaStore(os.path.join(shared, "lfs")).path(victim.oid))
    got: list[str] = []
    with pytest.raises(MissingMedia) as e:
        for record, data in ds.iter_bytes():
            assert data == remote.files[record.path]
            got.append(record.path)
    assert got == [r.path for r in ds[:3]]
    assert [oid for _, oid in e.value.missing] == [victim.oid]


def _read_forever(dataset: pixvcs.Dataset, started: Any) -> None:
    import pixvcs.cache

    # one object per download, a pause in each: the kill lands mid-download
    pixvcs.cache.FETCH_FIRST = pixvcs.cache.FETCH_BATCH = 1
    real = RemoteSource._fetch

    def slow(self: RemoteSource, oids: list[str], *rest: Any) -> None:
        started.set()
        time.sleep(0.05)
        real(self, oids, *rest)

    RemoteSource._fetch = slow  # type: ignore[method-assign]
    while True:
        for _record, _data in dataset.iter_bytes():
            pass


def test_a_reader_killed_mid_read_leaves_a_cache_others_can_use(
    remote: Remote, tmp_path: Path
) -> None:
    """SIGKILL while a reader downloads into the cache: whatever it left (a pack
    with records never indexed, a writer that is gone) costs the next reader
    nothing but a fetch; every byte it reads is right, and the index names no
    missing pack."""
    cache = tmp_path / "cache"
    ds = _open(remote, cache)
    ctx = multiprocessing.get_context("fork")
    started = ctx.Event()
    proc = ctx.Process(target=_read_forever, args=(ds, started))
    proc.start()
    try:
        assert started.wait(30), "the reader never started downloading"
        time.sleep(0.2)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(30)
    assert proc.exitcode == -signal.SIGKILL
    again = _open(remote, cache)
    assert {r.path: d for r, d in again.iter_bytes()} == remote.files
    assert {r.path: r.bytes() for r in again} == remote.files
    store = PackStore(str(cache / "media"))
    for oid in store:
        pack, _offset, _size = store.locate(oid)
        assert os.path.exists(pack), f"{oid} names a pack that is gone"


def _count_blob_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the blobs listing reads from a mirror from now on."""
    import pixvcs.dataset

    reads: list[str] = []
    real = pixvcs.dataset._raw_reader

    def counting(store: Any) -> Any:
        get = real(store)

        def wrapped(blob: str) -> Any:
            reads.append(blob)
            return get(blob)

        return wrapped

    monkeypatch.setattr(pixvcs.dataset, "_raw_reader", counting)
    return reads


def test_reopening_lists_from_pointer_hints_that_cannot_lie(
    remote: Remote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mirror keeps the pointers it read (blob id -> oid, size), so listing the
    same version again reads no pointer blob; a hint whose blob id is not the
    SHA-1 of the pointer it implies (edited, corrupt) is ignored."""
    import sqlite3

    cache = tmp_path / "cache"
    first = _open(remote, cache)
    expected = [(r.path, r.oid, r.size) for r in first]
    hints = next((cache / "repos").glob("*/pixvcs-pointers.db"))
    reads = _count_blob_reads(monkeypatch)
    again = _open(remote, cache)
    assert [(r.path, r.oid, r.size) for r in again] == expected
    media_blobs = {e.blob for e in again.source.list_entries(again.commit) if e.kind == "media"}
    assert not media_blobs & set(reads), "no pointer blob read again"
    # a lying hint: another object's oid under this blob id
    victim = again[0]
    with sqlite3.connect(hints) as db:
        db.execute("UPDATE pointers SET oid = ? WHERE oid = ?", ("f" * 64, victim.oid))
    db.close()
    reads.clear()
    third = _open(remote, cache)
    assert [(r.path, r.oid, r.size) for r in third] == expected
    assert reads, "the lying hint was ignored: its blob was read"
    assert third[0].bytes() == remote.files[victim.path]


@pytest.mark.parametrize("remote", ["http"], indirect=True)
def test_the_first_open_over_http_reads_no_pointer_blob(
    remote: Remote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pointer blobs of the fetched pack, hashed while it was indexed,
    become the mirror's hints: listing the version reads none of them."""
    reads = _count_blob_reads(monkeypatch)
    ds = _open(remote, tmp_path / "cache")
    assert sorted(r.path for r in ds) == sorted(remote.files)
    media_blobs = {e.blob for e in ds.source.list_entries(ds.commit) if e.kind == "media"}
    assert len(media_blobs) == len(remote.files) and not media_blobs & set(reads)
    assert ds[0].bytes() == remote.files[ds[0].path]


def test_wrong_bytes_from_the_server_are_never_cached_nor_returned(
    remote: Remote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A remote that hands over other bytes under an oid (one flipped bit): what
    precedes it is read, the read stops at it with CorruptObject naming it, and
    the cache holds no row for it."""
    from pixvcs import multi

    cache = tmp_path / "cache"
    ds = _open(remote, cache)
    victim = ds[1].oid
    if remote.url.startswith("file://"):  # a directory remote: its object rots on disk
        path = Path(MediaStore(os.path.join(remote.url[len("file://") :], "lfs")).path(victim))
        path.chmod(0o644)
        data = bytearray(path.read_bytes())
        data[-1] ^= 1
        path.write_bytes(bytes(data))
    else:  # pixvcs serve: its answer carries other bytes under the oid
        real = multi.records

        def hostile(oids: Any, sizes: Any, read: Any) -> Any:
            for chunk in real(oids, sizes, read):
                if chunk.startswith(victim.encode()):
                    chunk = chunk[:-1] + bytes([chunk[-1] ^ 1])
                yield chunk

        monkeypatch.setattr(multi, "records", hostile)  # the server runs in this process
    got = []
    with pytest.raises(CorruptObject) as e:
        for record, data in ds.iter_bytes():
            got.append((record.path, data))
    assert e.value.expected == victim
    assert got == [(ds[0].path, remote.files[ds[0].path])]
    assert not PackStore(str(cache / "media")).has(victim)
