"""The pixvcs-multi transfer (pixvcs/multi.py): many objects per request between
pixvcs and ``pixvcs serve``, on a real socket; hostile streams against both
sides; and the basic transfer left as it was for everyone else."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from pixvcs import CorruptObject, Repo, multi
from pixvcs.media import MediaStore
from pixvcs.remote import HttpEndpoint, RemoteError
from pixvcs.server import make_app, make_server
from tests.conftest import AUTHOR
from tests.imagegen import image_bytes, make_dataset

WRITE, READ = "w-token-multi-0123456789", "r-token-multi-0123456789"


@dataclass
class Served:
    root: Path
    base: str
    paths: list[str] = field(default_factory=list)  # every request's path, in order
    busy: list[int] = field(default_factory=lambda: [0])  # requests being handled now

    def settle(self, expect: str, timeout: float = 10.0) -> None:
        """Wait until the server has taken a request whose path ends with
        ``expect`` (up to 2 s: the client may have given up before sending
        it) and has finished every request, its clean-up included."""
        deadline = time.monotonic() + 2
        while not any(p.endswith(expect) for p in self.paths) and time.monotonic() < deadline:
            time.sleep(0.02)
        deadline = time.monotonic() + timeout
        while self.busy[0] and time.monotonic() < deadline:
            time.sleep(0.02)

    def url(self, token: str | None = WRITE) -> str:
        return self.base.replace("http://", f"http://me:{token}@") + "/animals"

    def lfs(self, rest: str) -> str:
        return f"{self.base}/animals.git/info/lfs/{rest}"

    def stored(self) -> list[str]:
        return sorted(MediaStore(str(self.root / "animals" / "lfs")))

    def strays(self) -> list[str]:
        return MediaStore(str(self.root / "animals" / "lfs")).stray_temp_files()


def _serve(tmp_path: Path, **kw: Any) -> Iterator[Served]:
    root = tmp_path / "srv"
    root.mkdir()
    Repo.init(str(root / "animals"), bare=True).close()
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{WRITE} write\n{READ} read\n")
    app = make_app(str(root), str(tokens), **kw)
    paths: list[str] = []
    busy = [0]
    lock = threading.Lock()

    def spy(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        paths.append(environ.get("PATH_INFO", ""))
        with lock:
            busy[0] += 1
        try:
            yield from app(environ, start_response)  # type: ignore[arg-type]
        finally:
            with lock:
                busy[0] -= 1

    server = make_server(spy, "127.0.0.1", 0)  # type: ignore[arg-type]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield Served(root, f"http://127.0.0.1:{server.server_port}", paths, busy)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    yield from _serve(tmp_path)


def _oid(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _auth(token: str = WRITE) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _stream(*records: tuple[str, bytes]) -> bytes:
    return multi.MAGIC + b"".join(multi.header(o, len(d)) + d for o, d in records)


def _put(served: Served, body: bytes, token: str = WRITE, **headers: str) -> httpx.Response:
    return httpx.post(
        served.lfs("objects/multi/upload"),
        content=body,
        headers={**_auth(token), "Content-Type": multi.CONTENT_TYPE, **headers},
    )


def _rot(store: MediaStore, oid: str, at: int, data: bytes) -> None:
    """Bit rot in a stored object: same size, other bytes at ``at``."""
    path = store.path(oid)
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(data)


# -- round trips ----------------------------------------------------------------------------
def test_push_and_clone_move_media_in_multi_requests_byte_exact(
    tmp_path: Path, served: Served
) -> None:
    a = Repo.init(str(tmp_path / "a"))
    a.add_remote("origin", served.url())
    data = make_dataset(a.root, {"cat": 150, "dog": 90})  # 240 images: 3 batches
    a.add([a.root])
    head = a.commit("v1", author=AUTHOR)
    served.paths.clear()
    assert a.push().media_sent == 240
    uploads = [p for p in served.paths if p.endswith("/objects/multi/upload")]
    puts = [p for p in served.paths if "/objects/" in p and "multi" not in p and "batch" not in p]
    # the first batch of 100 learns that the server speaks pixvcs-multi, the other
    # 140 go in one batch (up to 1000): one request each, no per-object request
    assert len(uploads) == 2 and puts == []
    assert not any(p.endswith("/verify") for p in served.paths)
    assert served.stored() == sorted({_oid(d) for d in data.values()})
    assert served.strays() == []

    served.paths.clear()
    b = Repo.clone(served.url(), str(tmp_path / "b"))
    downloads = [p for p in served.paths if p.endswith("/objects/multi/download")]
    batches = [p for p in served.paths if p.endswith("/objects/batch")]
    # one Batch API call (one object) learns that the server speaks pixvcs-multi;
    # then one request carries all 240 objects (up to 1000 a request)
    assert len(batches) == 1 and len(downloads) == 1
    assert b.head_commit() == head
    for rel, content in data.items():
        assert (Path(b.root) / rel).read_bytes() == content, rel
    assert b.fsck().ok
    # nothing new: nothing moves
    served.paths.clear()
    assert a.push().media_sent == 0
    assert not any("multi" in p for p in served.paths)
    a.close()
    b.close()


def test_large_records_stream_through_temp_files(
    tmp_path: Path, served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(multi, "IN_MEMORY", 100)  # every record takes the streaming path
    src = MediaStore.create(str(tmp_path / "src"))
    blobs = [image_bytes(i) for i in range(5)] + [os.urandom(3 << 20)]
    oids = [src.add_bytes(b) for b in blobs]
    endpoint = HttpEndpoint(served.url())
    assert endpoint.upload(oids, src, lambda *a: None) == 6
    assert endpoint.upload(oids, src, lambda *a: None) == 0, "the server has them all"
    dest = MediaStore.create(str(tmp_path / "dest"))
    endpoint.download(
        oids, dest, lambda *a: None, sizes={o: len(b) for o, b in zip(oids, blobs, strict=True)}
    )
    assert [dest.read(o) for o in oids] == blobs
    assert dest.stray_temp_files() == [] and served.strays() == []


def test_basic_only_clients_and_stock_git_lfs_requests_get_basic(
    tmp_path: Path, served: Served
) -> None:
    body = image_bytes(3)
    oid = _oid(body)
    for request in (
        {"operation": "upload", "objects": [{"oid": oid, "size": len(body)}]},  # no transfers
        {"operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": 1}]},
        {
            "operation": "upload",
            "transfers": ["lfs-standalone-file", "basic", "ssh"],
            "objects": [{"oid": oid, "size": len(body)}],
        },
    ):
        answer = httpx.post(served.lfs("objects/batch"), json=request, headers=_auth()).json()
        assert answer["transfer"] == "basic"
        assert answer["objects"][0]["actions"]["upload"]["href"].startswith(
            served.lfs(f"objects/{oid}")
        )
    odd = {"operation": "upload", "transfers": [{}, ["basic"], "basic"], "objects": []}
    answer = httpx.post(served.lfs("objects/batch"), json=odd, headers=_auth())
    assert answer.status_code == 200 and answer.json()["transfer"] == "basic"
    offered = httpx.post(
        served.lfs("objects/batch"),
        json={
            "operation": "upload",
            "transfers": [multi.NAME, "basic"],
            "objects": [{"oid": oid, "size": len(body)}],
        },
        headers=_auth(),
    ).json()
    assert offered["transfer"] == multi.NAME
    assert offered["objects"][0]["actions"]["upload"]["href"] == served.lfs("objects/multi/upload")
    # pixvcs told to speak basic only: per-object PUTs, same result
    src = MediaStore.create(str(tmp_path / "src"))
    src.add_bytes(body)
    basic = HttpEndpoint(served.url(), transfers=("basic",))
    served.paths.clear()
    assert basic.upload([oid], src, lambda *a: None) == 1
    assert served.paths[-1].endswith(f"/objects/{oid}") and served.stored() == [oid]


# -- the server refuses bad streams, storing nothing -----------------------------------------
def test_a_corrupt_record_is_rejected_and_nothing_of_the_request_is_stored(
    served: Served,
) -> None:
    good, bad = image_bytes(1), image_bytes(2)
    wrong_oid = _oid(image_bytes(9))
    response = _put(served, _stream((_oid(good), good), (wrong_oid, bad)))
    assert response.status_code == 422
    assert wrong_oid in response.json()["message"] and "hash" in response.json()["message"]
    assert served.stored() == [], "the good record of the same request is not stored either"
    assert served.strays() == []
    # the same good record on its own is stored
    assert _put(served, _stream((_oid(good), good))).json() == {"stored": 1, "present": 0}
    assert _put(served, _stream((_oid(good), good))).json() == {"stored": 0, "present": 1}
    assert served.stored() == [_oid(good)]


def test_truncated_and_malformed_streams_are_refused(served: Served) -> None:
    data = image_bytes(4)
    oid = _oid(data)
    whole = _stream((oid, data))
    bodies = {
        "truncated inside the bytes": whole[:-10],
        "truncated inside a header": whole + b"ab",
        "no magic line": whole[len(multi.MAGIC) :],
        "a bad oid": multi.MAGIC + b"../../config 3\nabc",
        "uppercase oid": multi.MAGIC + multi.header(oid.upper(), len(data)) + data,
        "negative size": multi.MAGIC + f"{oid} -3\n".encode() + data,
        "a header with no end": multi.MAGIC + b"a" * 500,
        "twice the same": _stream((oid, data), (oid, data)),
    }
    for what, body in bodies.items():
        response = _put(served, body)
        assert response.status_code in (400, 422), what
        assert response.json()["message"], what
    assert served.stored() == [] and served.strays() == []
    assert not (served.root / "config").exists()
    # a Content-Length is required (the stream's end is where it says)
    request = httpx.Request(
        "POST", served.lfs("objects/multi/upload"), headers=_auth(), content=iter([whole])
    )
    assert httpx.Client().send(request).status_code == 411


def test_oversized_records_and_requests_are_refused(tmp_path: Path) -> None:
    for served in _serve(tmp_path, max_object_size=100):
        body = image_bytes(5)
        assert len(body) > 100
        response = _put(served, _stream((_oid(body), body)))
        assert response.status_code == 413 and "cap" in response.json()["message"]
        batch = httpx.post(
            served.lfs("objects/batch"),
            json={
                "operation": "upload",
                "transfers": [multi.NAME],
                "objects": [{"oid": _oid(body), "size": len(body)}],
            },
            headers=_auth(),
        )
        assert batch.json()["objects"][0]["error"]["code"] == 422
        many = _stream(*[(_oid(b"%d" % i), b"%d" % i) for i in range(1001)])
        assert _put(served, many).status_code == 413
        assert served.stored() == [] and served.strays() == []


def test_scopes_are_those_of_the_object_endpoints(served: Served) -> None:
    data = image_bytes(6)
    body = _stream((_oid(data), data))
    assert _put(served, body, token=READ).status_code == 403
    assert httpx.post(served.lfs("objects/multi/upload"), content=body).status_code == 401
    assert served.stored() == []
    assert _put(served, body).status_code == 200
    ask = {"oids": [_oid(data)]}
    assert httpx.post(served.lfs("objects/multi/download"), json=ask).status_code == 401
    down = httpx.post(served.lfs("objects/multi/download"), json=ask, headers=_auth(READ))
    assert down.status_code == 200 and down.content == body
    # a read token's batch never hands out an upload
    batch = httpx.post(
        served.lfs("objects/batch"),
        json={"operation": "upload", "transfers": [multi.NAME], "objects": []},
        headers=_auth(READ),
    )
    assert batch.status_code == 403
    assert httpx.get(served.lfs("objects/multi/download"), headers=_auth()).status_code == 405


def test_download_requests_are_validated(served: Served) -> None:
    data = image_bytes(7)
    assert _put(served, _stream((_oid(data), data))).status_code == 200
    url = served.lfs("objects/multi/download")
    for body, status in (
        ({"oids": ["../../config"]}, 422),
        ({"oids": [_oid(data), _oid(data)]}, 422),
        ({"oids": "x"}, 422),
        ([], 422),
        ({"oids": ["b" * 64]}, 404),
        ({"oids": ["a" * 64] * 1001}, 413),
    ):
        response = httpx.post(url, json=body, headers=_auth())
        assert response.status_code == status, body


# -- the client refuses bad answers, storing nothing -----------------------------------------
def _fake_server(answer: Callable[[list[str]], bytes]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if request.url.path.endswith("/objects/batch"):
            href = {"href": "http://srv/x.git/info/lfs/objects/multi/download"}
            return httpx.Response(
                200,
                json={
                    "transfer": multi.NAME,
                    "objects": [
                        {"oid": o["oid"], "size": o["size"], "actions": {"download": href}}
                        for o in body["objects"]
                    ],
                },
            )
        return httpx.Response(200, content=answer(body["oids"]))

    return httpx.MockTransport(handler)


def test_hostile_download_streams_are_refused(tmp_path: Path) -> None:
    good = {image_bytes(i): None for i in range(3)}
    blobs = list(good)
    oids = [_oid(b) for b in blobs]
    sizes = {o: len(b) for o, b in zip(oids, blobs, strict=True)}
    dest = MediaStore.create(str(tmp_path / "lfs"))
    honest = _stream(*zip(oids, blobs, strict=True))
    flipped = bytearray(blobs[2])
    flipped[100] ^= 1
    stranger = image_bytes(50)
    cases: dict[str, tuple[bytes, type[Exception], str | None]] = {
        "corrupt": (
            _stream((oids[0], blobs[0]), (oids[1], blobs[1]), (oids[2], bytes(flipped))),
            CorruptObject,
            None,
        ),
        "truncated": (honest[:-1], RemoteError, "truncated"),
        "one left out": (_stream((oids[0], blobs[0]), (oids[1], blobs[1])), RemoteError, "without"),
        "not asked for": (
            honest + multi.header(_oid(stranger), len(stranger)) + stranger,
            RemoteError,
            "not asked for",
        ),
        "trailing garbage": (honest + b"x" * 10, RemoteError, "truncated"),
        "not a stream": (b"<html>hello</html>", RemoteError, "not a pixvcs-multi stream"),
    }
    for what, (body, error, message) in cases.items():
        endpoint = HttpEndpoint("http://srv/x", transport=_fake_server(lambda _o, b=body: b))
        with pytest.raises(error, match=message):
            endpoint.download(oids, dest, lambda *a: None, sizes=sizes)
        assert list(dest) == [] and dest.stray_temp_files() == [], what
    # a size other than the pointer's is refused too
    endpoint = HttpEndpoint("http://srv/x", transport=_fake_server(lambda _o: honest))
    with pytest.raises(RemoteError, match="has size"):
        endpoint.download(oids, dest, lambda *a: None, sizes={**sizes, oids[1]: 5})
    assert list(dest) == []
    endpoint.download(oids, dest, lambda *a: None, sizes=sizes)
    assert [dest.read(o) for o in oids] == blobs


@pytest.mark.parametrize(
    "action, reused",
    [
        ({}, True),
        ({"expires_in": 600}, False),
        ({"expires_at": "2030-01-01T00:00:00Z"}, False),
        ({"href": "http://elsewhere/multi/download"}, False),
    ],
)
def test_a_multi_href_is_reused_only_if_it_never_expires_and_is_the_servers(
    tmp_path: Path, action: dict[str, Any], reused: bool
) -> None:
    """Once a batch answer gave a pixvcs-multi download href of the server's own
    origin that does not expire, later downloads go to it directly (no Batch API
    call); one that expires, or points elsewhere, is asked for again each time."""
    blobs = [image_bytes(300 + i) for i in range(4)]
    by_oid = {_oid(b): b for b in blobs}
    oids = list(by_oid)
    requests: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(f"{request.url.host}{request.url.path}")
        body = json.loads(request.content)
        if request.url.path.endswith("/objects/batch"):
            download = {"href": "http://srv/x.git/info/lfs/objects/multi/download", **action}
            objects = [
                {"oid": o["oid"], "size": o["size"], "actions": {"download": download}}
                for o in body["objects"]
            ]
            return httpx.Response(200, json={"transfer": multi.NAME, "objects": objects})
        return httpx.Response(200, content=_stream(*((o, by_oid[o]) for o in body["oids"])))

    endpoint = HttpEndpoint("http://srv/x", transport=httpx.MockTransport(handler))
    dest = MediaStore.create(str(tmp_path / "lfs"))
    endpoint.download(oids[:2], dest, lambda *a: None)
    endpoint.download(oids[2:], dest, lambda *a: None)
    assert [dest.read(o) for o in oids] == blobs
    batch_calls = [r for r in requests if r.endswith("/objects/batch")]
    assert len(batch_calls) == (1 if reused else 2)
    assert len(requests) == len(batch_calls) + 2, "one multi request a download"


@pytest.mark.parametrize("transfer, sizes", [("basic", [100, 100, 50]), (multi.NAME, [100, 150])])
def test_upload_batches_grow_to_1000_only_for_a_server_that_speaks_pixvcs_multi(
    tmp_path: Path, transfer: str, sizes: list[int]
) -> None:
    """git-lfs servers get git-lfs's batches of 100; after a pixvcs-multi answer
    (a pixvcs server, which takes 1000) the rest of the upload goes in one batch."""
    src = MediaStore.create(str(tmp_path / "src"))
    oids = [src.add_bytes(b"object %d" % i) for i in range(250)]
    asked: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        asked.append(len(body["objects"]))
        # the server holds everything already: no upload actions, nothing is sent
        objects = [{"oid": o["oid"], "size": o["size"]} for o in body["objects"]]
        return httpx.Response(200, json={"transfer": transfer, "objects": objects})

    endpoint = HttpEndpoint("http://srv/x", transport=httpx.MockTransport(handler))
    assert endpoint.upload(oids, src, lambda *a: None) == 0
    # the first batch goes alone; the later ones overlap, so their order varies
    assert asked[0] == sizes[0] and sorted(asked[1:]) == sorted(sizes[1:])


def test_a_corrupt_local_object_is_never_sent(tmp_path: Path, served: Served) -> None:
    src = MediaStore.create(str(tmp_path / "src"))
    good, bad = image_bytes(11), image_bytes(12)
    oids = [src.add_bytes(good), src.add_bytes(bad)]
    _rot(src, oids[1], 50, b"\x00\x01\x02")
    with pytest.raises((CorruptObject, RemoteError)):
        HttpEndpoint(served.url()).upload(oids, src, lambda *a: None)
    # the server sees the stream end early and removes what it had (in its own
    # thread, which may not even have started when the client gives up)
    served.settle("/multi/upload")
    assert served.stored() == [] and served.strays() == []


def test_an_object_corrupt_on_the_server_is_named_and_never_stored(
    tmp_path: Path, served: Served
) -> None:
    """The server sends objects as stored (no hash on the way out): the client's
    check is what stands between a rotten object on the server and its store."""
    srv = MediaStore(str(served.root / "animals" / "lfs"))
    good, bad = image_bytes(13), image_bytes(14)
    oids = [srv.add_bytes(good), srv.add_bytes(bad)]
    _rot(srv, oids[1], 40, b"\xff\x00\xff")  # same size, other bytes: bit rot
    dest = MediaStore.create(str(tmp_path / "dest"))
    with pytest.raises(CorruptObject) as err:
        HttpEndpoint(served.url(READ)).download(oids, dest, lambda *a: None)
    assert err.value.expected == oids[1] and "/animals" in err.value.where
    assert sorted(dest) == [] and dest.stray_temp_files() == []
    # the good object alone still comes, verified
    HttpEndpoint(served.url(READ)).download(oids[:1], dest, lambda *a: None)
    assert sorted(dest) == oids[:1] and dest.read(oids[0]) == good


def test_large_downloads_run_in_worker_processes(
    tmp_path: Path, served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From PROCESS_THRESHOLD objects on, a download into a store on disk runs
    in forked workers (own HTTP client each, own batches published): the same
    verified bytes, no temp file; a corrupt object is named, its batch kept out."""
    from pixvcs import httpremote

    monkeypatch.setattr(httpremote, "PROCESS_THRESHOLD", 10)
    monkeypatch.setattr(httpremote, "BATCH", 6)
    monkeypatch.setattr(httpremote, "MULTI_BATCH", 6)
    srv = MediaStore(str(served.root / "animals" / "lfs"))
    blobs = [image_bytes(100 + i) for i in range(30)]
    oids = [srv.add_bytes(b) for b in blobs]
    dest = MediaStore.create(str(tmp_path / "dest"))
    seen: list[int] = []
    HttpEndpoint(served.url(READ)).download(oids, dest, lambda _s, done, _t: seen.append(done))
    assert sorted(dest) == sorted(oids) and dest.stray_temp_files() == []
    assert all(dest.read(o) == b for o, b in zip(oids, blobs, strict=True))
    assert seen[-1] == 30
    assert sum(p.endswith("/multi/download") for p in served.paths) == 5, "one request a batch"
    # the workers reuse the pixvcs-multi href the parent learnt: one Batch API call in all
    assert sum(p.endswith("/objects/batch") for p in served.paths) == 1

    rotten = oids[17]
    _rot(srv, rotten, 40, b"\x00\xff\x00")
    again = MediaStore.create(str(tmp_path / "again"))
    with pytest.raises(CorruptObject) as err:
        HttpEndpoint(served.url(READ)).download(oids, again, lambda *a: None)
    assert err.value.expected == rotten
    assert rotten not in set(again) and again.stray_temp_files() == []
    assert all(again.read(o) == dest.read(o) for o in again)


# -- docs/format.md's examples are fixtures ---------------------------------------------------
def test_format_md_multi_examples(served: Served) -> None:
    from tests.test_docs import DOCS, fixtures

    found = fixtures((DOCS / "format.md").read_text(encoding="utf-8"))
    stream = found["multi-stream"].encode().removesuffix(b"\n")  # the fence's own LF
    assert stream == _stream((_oid(b"hello"), b"hello"))
    body = image_bytes(21)

    def fill(text: str) -> object:
        text = text.replace("OID", _oid(body)).replace("SIZE", str(len(body)))
        text = text.replace("BASE", f"{served.base}/animals.git").replace("AUTH", f"Bearer {WRITE}")
        return json.loads(text)

    request = {
        "operation": "upload",
        "transfers": [multi.NAME, "basic"],
        "objects": [{"oid": _oid(body), "size": len(body)}],
    }
    response = httpx.post(
        served.lfs("objects/batch"),
        content=json.dumps(request).encode(),
        headers={**_auth(), "Content-Type": "application/vnd.git-lfs+json"},
    )
    assert response.json() == fill(found["multi-batch-response"])
    assert _put(served, stream).json() == {"stored": 1, "present": 0}
