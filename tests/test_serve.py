"""``pixvcs serve`` and HTTP remotes: the real WSGI app on a real socket
(127.0.0.1, a free port, a thread), driven by pixvcs's HTTP endpoint, httpx and
dulwich's git client."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from dulwich.objects import Blob

from pixvcs import CorruptObject, Repo
from pixvcs.cli import main
from pixvcs.errors import UsageError
from pixvcs.media import MediaStore
from pixvcs.remote import HttpEndpoint, RemoteError, open_endpoint
from pixvcs.server import make_app, make_server, parse_auth_file, repositories
from tests.conftest import AUTHOR, race_pushes
from tests.imagegen import image_bytes, make_dataset, snapshot, write_image

WRITE, READ = "w-token-0123456789", "r-token-0123456789"


@dataclass
class Server:
    root: Path
    base: str  # http://127.0.0.1:PORT

    def url(self, name: str = "animals", token: str | None = WRITE) -> str:
        if token is None:
            return f"{self.base}/{name}"
        return self.base.replace("http://", f"http://me:{token}@") + f"/{name}"

    def repo(self, name: str = "animals") -> Repo:
        return Repo.open(str(self.root / name))


def _serve(root: Path, auth: str | None) -> Iterator[Server]:
    server = make_server(make_app(str(root), auth), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Server(root, f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "srv"
    root.mkdir()
    Repo.init(str(root / "animals"), bare=True).close()
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# who may do what\n{WRITE} write\n\n{READ} read\n")
    yield from _serve(root, str(tokens))


@pytest.fixture
def open_server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "open"
    root.mkdir()
    Repo.init(str(root / "animals.git"), bare=True).close()
    yield from _serve(root, None)


def _commit_all(repo: Repo, msg: str) -> str:
    repo.add([repo.root])
    return repo.commit(msg, author=AUTHOR)


def _new(tmp_path: Path, name: str, url: str) -> Repo:
    repo = Repo.init(str(tmp_path / name))
    repo.add_remote("origin", url)
    return repo


def _oid(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _batch(
    server: Server, body: object, token: str | None = WRITE, name: str = "animals.git"
) -> httpx.Response:
    headers = {"Accept": "application/vnd.git-lfs+json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.post(
        f"{server.base}/{name}/info/lfs/objects/batch",
        content=json.dumps(body).encode(),
        headers={**headers, "Content-Type": "application/vnd.git-lfs+json"},
    )


def _stored(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "lfs").rglob("*") if p.is_file())


# -- round trips ----------------------------------------------------------------------------
def test_push_clone_fetch_pull_over_http(tmp_path: Path, server: Server) -> None:
    a = _new(tmp_path, "a", server.url())
    data = make_dataset(a.root, {"cat": 3, "dog": 2})
    v1 = _commit_all(a, "v1")
    a.create_tag("v1")
    first = a.push(tags=True)
    assert first.media_sent == 5 and set(first.updated) == {"refs/heads/main", "refs/tags/v1"}
    with server.repo() as r:
        assert r.branches() == {"main": v1} and r.fsck().ok
        assert sorted(r.media) == sorted(_oid(d) for d in data.values())
    write_image(os.path.join(a.root, "bird", "0.jpg"), 77)
    v2 = _commit_all(a, "v2")
    assert a.push().media_sent == 1, "only what the server lacks moves"
    assert a.push().up_to_date == ["refs/heads/main"]

    b = Repo.clone(server.url(), str(tmp_path / "b"))
    assert b.head_commit() == v2 and b.current_branch() == "main"
    assert snapshot(b.root) == snapshot(a.root) and b.fsck().ok
    # other versions' media come on demand, over HTTP too
    os.unlink(b.media.path(_oid(data["cat/0000.jpg"])))
    b.checkout("v1", force=True)
    assert Path(b.root, "cat", "0000.jpg").read_bytes() == data["cat/0000.jpg"]
    b.checkout("main")

    write_image(os.path.join(b.root, "bird", "1.jpg"), 78)
    v3 = _commit_all(b, "v3")
    b.push()
    fetched = a.fetch(all_media=True)
    assert fetched.updated["refs/remotes/origin/main"]["new"] == v3
    assert a.pull().kind == "fast-forward" and a.head_commit() == v3
    assert Path(a.root, "bird", "1.jpg").exists()
    a.close()
    b.close()


def test_media_the_server_lacks_come_from_another_remote(tmp_path: Path, server: Server) -> None:
    a = _new(tmp_path, "a", server.url())
    backup = str(tmp_path / "backup.git")
    Repo.init(backup, bare=True).close()
    a.add_remote("backup", backup)
    data = make_dataset(a.root, {"cat": 3, "dog": 2})
    v1 = _commit_all(a, "v1")
    a.push()
    a.push("backup")
    gone = _oid(data["dog/0001.jpg"])
    with server.repo() as r:
        os.unlink(r.media.path(gone))
    b = _new(tmp_path, "b", server.url())
    b.add_remote("backup", backup)
    b.fetch()
    b.checkout(v1)
    assert Path(b.root, "dog", "0001.jpg").read_bytes() == data["dog/0001.jpg"]
    assert sorted(b.media) == sorted(_oid(d) for d in data.values()) and b.fsck().ok
    with server.repo() as r:
        assert gone not in set(r.media), "a download never uploads"
    a.close()
    b.close()


def test_both_url_spellings_and_token_from_config(tmp_path: Path, open_server: Server) -> None:
    # ROOT/animals.git answers at /animals and at /animals.git
    assert repositories(str(open_server.root)) == ["animals.git"]
    a = _new(tmp_path, "a", open_server.url("animals", token=None))
    make_dataset(a.root, {"cat": 1})
    head = _commit_all(a, "v1")
    a.push()
    b = Repo.clone(open_server.url("animals.git", token=None), str(tmp_path / "b"))
    assert b.head_commit() == head
    a.close()
    b.close()


def test_token_from_the_config(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PIXVCS_TOKEN", raising=False)  # the CLI's token source, when imported
    a = _new(tmp_path, "a", server.url(token=None))
    make_dataset(a.root, {"cat": 1})
    _commit_all(a, "v1")
    with pytest.raises(RemoteError, match="authentication required"):
        a.push()
    config = a.git.get_config()
    config.set((b"pixvcs",), b"token", WRITE.encode())
    config.write_to_path()
    assert a.push().media_sent == 1
    a.close()


# -- auth ---------------------------------------------------------------------------------
def test_no_token_is_401_with_a_basic_challenge(server: Server) -> None:
    for response in (
        httpx.get(f"{server.base}/animals/info/refs?service=git-upload-pack"),
        httpx.get(f"{server.base}/animals/info/refs?service=git-receive-pack"),
        _batch(server, {"operation": "download", "objects": []}, token=None),
        _batch(server, {"operation": "download", "objects": []}, token="not-a-token"),
        httpx.get(f"{server.base}/animals/info/lfs/objects/{'a' * 64}"),
    ):
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == 'Basic realm="pixvcs"'


def test_bearer_and_basic_auth_are_both_accepted(server: Server) -> None:
    url = f"{server.base}/animals/info/refs?service=git-upload-pack"
    bearer = httpx.get(url, headers={"Authorization": f"Bearer {READ}"})
    basic = httpx.get(url, auth=("anyone", READ))
    assert bearer.status_code == basic.status_code == 200
    assert b"git-upload-pack" in bearer.content
    # a token as the basic username with no password works too (as hosted git allows)
    raw = base64.b64encode(f"{READ}:".encode()).decode()
    assert httpx.get(url, headers={"Authorization": f"Basic {raw}"}).status_code == 200


def test_a_read_token_may_read_but_not_write(tmp_path: Path, server: Server) -> None:
    a = _new(tmp_path, "a", server.url())
    data = make_dataset(a.root, {"cat": 1})
    _commit_all(a, "v1")
    a.push()
    # reading: clone with the read token
    b = Repo.clone(server.url(token=READ), str(tmp_path / "b"))
    assert snapshot(b.root) == snapshot(a.root)
    # writing: refused everywhere with 403
    receive = httpx.get(
        f"{server.base}/animals/info/refs?service=git-receive-pack", auth=("me", READ)
    )
    assert receive.status_code == 403
    post = httpx.post(f"{server.base}/animals/git-receive-pack", auth=("me", READ), content=b"")
    assert post.status_code == 403
    upload = _batch(
        server, {"operation": "upload", "objects": [{"oid": "a" * 64, "size": 1}]}, READ
    )
    assert upload.status_code == 403
    body = image_bytes(5)
    put = httpx.put(
        f"{server.base}/animals.git/info/lfs/objects/{_oid(body)}", content=body, auth=("me", READ)
    )
    assert put.status_code == 403
    with server.repo() as r:
        assert not r.media.has(_oid(body))
    write_image(os.path.join(b.root, "cat", "new.jpg"), 9)
    _commit_all(b, "v2")
    with pytest.raises(RemoteError, match="403|may not"):
        b.push()
    assert data
    a.close()
    b.close()


def test_auth_file_errors_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "tokens"
    bad.write_text("# ok\nabc write\nxyz admin\n")
    with pytest.raises(UsageError, match="line 3"):
        parse_auth_file(str(bad))
    bad.write_text("abc write\nlonely\n")
    with pytest.raises(UsageError, match="line 2"):
        parse_auth_file(str(bad))
    bad.write_text("abc read\n# comment\n\ndef write\n")
    assert parse_auth_file(str(bad)) == {"abc": "read", "def": "write"}


# -- the Batch API and object endpoints -----------------------------------------------------
def test_batch_answers_as_the_spec_says(server: Server) -> None:
    body = image_bytes(1)
    oid = _oid(body)
    up = _batch(
        server,
        {
            "operation": "upload",
            "transfers": ["basic"],
            "objects": [{"oid": oid, "size": len(body)}],
        },
    )
    assert up.status_code == 200 and up.headers["Content-Type"] == "application/vnd.git-lfs+json"
    obj = up.json()["objects"][0]
    # no verify action for the server's own store: the PUT is durable before its 200
    assert up.json()["transfer"] == "basic" and set(obj["actions"]) == {"upload"}
    put = httpx.put(
        obj["actions"]["upload"]["href"], content=body, headers=obj["actions"]["upload"]["header"]
    )
    assert put.status_code == 200
    # the verify endpoint still answers (clients of older servers may call it)
    verify = httpx.post(
        f"{server.base}/animals.git/info/lfs/objects/{oid}/verify",
        json={"oid": oid, "size": len(body)},
        headers={"Authorization": f"Bearer {WRITE}"},
    )
    assert verify.status_code == 200
    again = _batch(server, {"operation": "upload", "objects": [{"oid": oid, "size": len(body)}]})
    assert "actions" not in again.json()["objects"][0], "nothing to do for a stored object"
    down = _batch(
        server,
        {
            "operation": "download",
            "objects": [{"oid": oid, "size": len(body)}, {"oid": "b" * 64, "size": 3}],
        },
    )
    have, lack = down.json()["objects"]
    assert (
        httpx.get(
            have["actions"]["download"]["href"], headers=have["actions"]["download"]["header"]
        ).content
        == body
    )
    assert lack["error"]["code"] == 404
    # the /NAME spelling (not .git) serves the same repository
    assert (
        _batch(server, {"operation": "download", "objects": []}, name="animals").status_code == 200
    )
    assert _batch(server, {"operation": "download", "objects": []}, name="nope").status_code == 404


def test_upload_of_wrong_bytes_is_rejected_and_not_stored(server: Server) -> None:
    body = image_bytes(2)
    oid = _oid(image_bytes(3))  # the oid of other bytes
    url = f"{server.base}/animals.git/info/lfs/objects/{oid}"
    response = httpx.put(url, content=body, auth=("me", WRITE))
    assert response.status_code == 422 and "hash" in response.json()["message"]
    with server.repo() as r:
        assert not r.media.has(oid) and list(r.media) == []
        assert r.media.stray_temp_files() == [], "the temp file is gone too"
    # the declared size (from the batch) bounds the body
    right = _oid(body)
    short = httpx.put(f"{url[:-64]}{right}?size={len(body) - 1}", content=body, auth=("me", WRITE))
    assert short.status_code == 422
    with server.repo() as r:
        assert not r.media.has(right)


def test_malformed_oids_are_refused_before_touching_the_store(server: Server) -> None:
    before = _stored(server.root / "animals")
    base = f"{server.base}/animals.git/info/lfs/objects/"
    for bad in ("..", "A" * 64, "a" * 63, "g" * 64, "a" * 65, "..%2F..%2Fconfig"):
        put = httpx.put(base + bad, content=b"x", auth=("me", WRITE))
        get = httpx.get(base + bad, auth=("me", WRITE))
        verify = httpx.post(
            base + bad + "/verify", json={"oid": bad, "size": 1}, auth=("me", WRITE)
        )
        for r in (put, get, verify):
            assert r.status_code in (400, 404, 422), (bad, r.status_code)
    response = _batch(
        server,
        {
            "operation": "upload",
            "objects": [{"oid": "../../x", "size": 1}, {"oid": "a" * 64, "size": -1}],
        },
    )
    assert [o["error"]["code"] for o in response.json()["objects"]] == [422, 422]
    assert _stored(server.root / "animals") == before
    assert not (server.root / "x").exists()


def _post_as_writer(url: str, body: bytes, content_type: str) -> httpx.Response:
    return httpx.post(
        url,
        content=body,
        headers={"Authorization": f"Bearer {WRITE}", "Content-Type": content_type},
    )


def test_request_bodies_are_size_limited(server: Server) -> None:
    huge = b"{" + b" " * (2 << 20) + b"}"
    response = _post_as_writer(
        f"{server.base}/animals.git/info/lfs/objects/batch", huge, "application/vnd.git-lfs+json"
    )
    assert response.status_code == 413
    bad = _batch(server, {"operation": "delete", "objects": []})
    assert bad.status_code == 422


def test_a_corrupt_download_is_never_stored(tmp_path: Path) -> None:
    good = image_bytes(4)
    oid = _oid(good)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/objects/batch"):
            return httpx.Response(
                200,
                json={
                    "objects": [
                        {
                            "oid": oid,
                            "size": len(good),
                            "actions": {
                                "download": {"href": f"http://srv/x.git/info/lfs/objects/{oid}"}
                            },
                        }
                    ]
                },
            )
        return httpx.Response(200, content=good[:-1] + b"X")

    endpoint = HttpEndpoint("http://srv/x", transport=httpx.MockTransport(handler))
    dest = MediaStore.create(str(tmp_path / "lfs"))
    with pytest.raises(CorruptObject):
        endpoint.download([oid], dest, lambda *a: None)
    assert list(dest) == [] and dest.stray_temp_files() == []


def test_open_endpoint_picks_http(tmp_path: Path) -> None:
    endpoint = open_endpoint("http://u:s3cret@example.org:8080/data/animals", str(tmp_path))
    assert isinstance(endpoint, HttpEndpoint)
    assert endpoint.url == "http://example.org:8080/data/animals" and endpoint.token == "s3cret"
    assert endpoint.lfs_url == "http://example.org:8080/data/animals.git/info/lfs"
    other = open_endpoint("https://example.org/a.git", str(tmp_path), token="t")
    assert isinstance(other, HttpEndpoint)
    assert other.lfs_url == "https://example.org/a.git/info/lfs" and other.token == "t"


# -- ref updates ------------------------------------------------------------------------------
def test_server_refuses_a_ref_whose_media_it_lacks(tmp_path: Path, server: Server) -> None:
    from dulwich.client import HttpGitClient

    a = _new(tmp_path, "a", server.url())
    data = make_dataset(a.root, {"cat": 2})
    head = _commit_all(a, "v1")
    # history only, no media: what a client that skips the LFS upload does
    client = HttpGitClient(server.url(token=None), username="me", password=WRITE)
    result = client.send_pack(
        "/animals", lambda refs: {b"refs/heads/main": head.encode()}, a.git.generate_pack_data
    )
    status = {k.decode(): v for k, v in (result.ref_status or {}).items()}
    assert status["refs/heads/main"]
    assert "not on this remote" in status["refs/heads/main"]
    assert _oid(data["cat/0000.jpg"]) in status["refs/heads/main"]
    with server.repo() as r:
        assert r.branches() == {}, "the ref did not move"
    # with the media, pixvcs's push goes through (git objects already there are not resent)
    assert a.push().media_sent == 2
    with server.repo() as r:
        assert r.branches() == {"main": head}
    a.close()


def test_a_ref_that_moved_meanwhile_is_refused_server_side(tmp_path: Path, server: Server) -> None:
    from dulwich.client import HttpGitClient

    a = _new(tmp_path, "a", server.url())
    make_dataset(a.root, {"cat": 1})
    base = _commit_all(a, "base")
    a.push()
    write_image(os.path.join(a.root, "cat", "x.jpg"), 11)
    ours = _commit_all(a, "ours")
    a.push()  # media and history for "ours" are on the server now
    # a client that saw "base" and sends base -> ours after someone reset the ref
    with server.repo() as r:
        r.git.refs.set_if_equals(b"refs/heads/main", ours.encode(), base.encode())

    def sneaky(refs: dict[bytes, bytes]) -> dict[bytes, bytes]:
        with server.repo() as r:  # the ref moves between the advertisement and the update
            r.git.refs.set_if_equals(b"refs/heads/main", base.encode(), ours.encode())
        return {b"refs/heads/main": ours.encode()}

    client = HttpGitClient(server.url(token=None), username="me", password=WRITE)
    result = client.send_pack("/animals", sneaky, a.git.generate_pack_data)
    status = (result.ref_status or {}).get(b"refs/heads/main")
    assert status and "fetch first" in status
    a.close()


def test_concurrent_http_pushes_one_wins(tmp_path: Path, server: Server) -> None:
    a = _new(tmp_path, "a", server.url())
    make_dataset(a.root, {"cat": 1})
    _commit_all(a, "base")
    a.push()
    clones = [Repo.clone(server.url(), str(tmp_path / f"c{i}")) for i in range(2)]
    heads = []
    for i, c in enumerate(clones):
        write_image(os.path.join(c.root, "cat", f"{i}.jpg"), 200 + i)
        heads.append(_commit_all(c, f"c{i}"))
    # each clone is its own repository (own lock); the remote's ref is the contested thing
    outcomes = race_pushes(clones)
    assert sorted(o == "ok" for o in outcomes) == [False, True], outcomes
    assert any("fetch first" in o for o in outcomes)
    with server.repo() as r:
        assert r.branches()["main"] in heads and r.fsck().ok
    for c in [a, *clones]:
        c.close()


# -- the command ------------------------------------------------------------------------------
def test_serve_refuses_a_public_address_without_auth(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["serve", str(tmp_path), "--host", "0.0.0.0", "--port", "0"])
    assert result.exit_code != 0 and "--auth" in result.output


def test_serve_rejects_a_malformed_auth_file(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("abc write\nabc\n")
    result = CliRunner().invoke(
        main, ["serve", str(tmp_path), "--port", "0", "--auth", str(tokens)]
    )
    assert result.exit_code != 0 and "line 2" in result.output


def test_cli_push_and_clone_with_pixvcs_token(tmp_path: Path, server: Server) -> None:
    def run(*args: str, code: int = 0, env: dict[str, str] | None = None) -> str:
        result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result.output

    ds = tmp_path / "ds"
    run("init", str(ds))
    make_dataset(str(ds), {"cat": 2})
    run("-C", str(ds), "add", ".")
    run("-C", str(ds), "commit", "-m", "v1", "--author", AUTHOR)
    run("-C", str(ds), "remote", "add", "origin", server.url(token=None))
    out = run("-C", str(ds), "push", code=1, env={"PIXVCS_TOKEN": ""})
    assert "authentication required" in out
    pushed = json.loads(run("-C", str(ds), "push", "--json", env={"PIXVCS_TOKEN": WRITE}))
    assert pushed["media_sent"] == 2
    cloned = json.loads(
        run(
            "-C",
            str(tmp_path),
            "clone",
            server.url(token=None),
            "copy",
            "--json",
            env={"PIXVCS_TOKEN": READ},
        )
    )
    assert cloned["media"] == 2
    assert (tmp_path / "copy" / "cat" / "0001.jpg").read_bytes() == (
        ds / "cat" / "0001.jpg"
    ).read_bytes()


# -- docs/format.md examples are fixtures ---------------------------------------------------
def test_format_md_auth_file_example(tmp_path: Path) -> None:
    from tests.test_docs import DOCS, fixtures

    example = fixtures((DOCS / "format.md").read_text(encoding="utf-8"))["auth-file"]
    path = tmp_path / "tokens"
    path.write_text(example)
    assert sorted(parse_auth_file(str(path)).values()) == ["read", "write"]


def test_format_md_batch_example(server: Server) -> None:
    from tests.test_docs import DOCS, fixtures

    found = fixtures((DOCS / "format.md").read_text(encoding="utf-8"))
    body = image_bytes(12)

    def fill(text: str) -> object:
        text = text.replace("OID", _oid(body)).replace("SIZE", str(len(body)))
        text = text.replace("BASE", f"{server.base}/animals.git").replace("AUTH", f"Bearer {WRITE}")
        return json.loads(text)

    response = _batch(server, fill(found["batch-request"]))
    assert response.status_code == 200
    assert response.json() == fill(found["batch-response"])


def test_repository_names_cannot_escape_the_root(server: Server, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    Repo.init(str(outside), bare=True).close()
    auth = {"Authorization": f"Bearer {WRITE}"}
    for path in (
        "/%2E%2E/outside/info/refs?service=git-upload-pack",
        "/.hidden/info/refs?service=git-upload-pack",
        "/%2E%2E/outside/info/lfs/objects/batch",
        "/animals/%2E%2E/%2E%2E/outside/info/refs?service=git-upload-pack",
    ):
        method = "POST" if path.endswith("batch") else "GET"
        response = httpx.request(method, server.base + path, headers=auth, content=b"{}")
        assert response.status_code == 404, path


def test_hostile_batch_responses_are_refused(tmp_path: Path) -> None:
    good = image_bytes(6)
    oid = _oid(good)
    dest = MediaStore.create(str(tmp_path / "lfs"))

    def endpoint(batch: dict[str, object], body: bytes = good) -> HttpEndpoint:
        def handler(request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith("/objects/batch"):
                return httpx.Response(200, json=batch)
            return httpx.Response(200, content=body)

        return HttpEndpoint("http://srv/x", transport=httpx.MockTransport(handler))

    href = {"download": {"href": f"http://srv/x.git/info/lfs/objects/{oid}"}}
    # an object that was not asked for
    other = {"objects": [{"oid": "c" * 64, "size": 1, "actions": href}]}
    with pytest.raises(RemoteError, match="not asked for"):
        endpoint(other).download([oid], dest, lambda *a: None)
    # an object asked for and left out
    with pytest.raises(RemoteError, match="leaves out"):
        endpoint({"objects": []}).download([oid], dest, lambda *a: None)
    # more bytes than the declared size
    short = {"objects": [{"oid": oid, "size": 10, "actions": href}]}
    with pytest.raises(RemoteError, match="more bytes"):
        endpoint(short).download([oid], dest, lambda *a: None)
    # not JSON at all
    with pytest.raises(RemoteError, match="not JSON|no objects"):
        endpoint({"nope": 1}).download([oid], dest, lambda *a: None)
    assert list(dest) == [] and dest.stray_temp_files() == []
    # and the honest answer is stored
    honest = {"objects": [{"oid": oid, "size": len(good), "actions": href}]}
    endpoint(honest).download([oid], dest, lambda *a: None)
    assert dest.read(oid) == good


def test_objects_over_the_cap_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "capped"
    root.mkdir()
    Repo.init(str(root / "animals"), bare=True).close()
    app = make_app(str(root), max_object_size=100)
    server = make_server(app, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        body = image_bytes(7)
        assert len(body) > 100
        batch = httpx.post(
            f"{base}/animals/info/lfs/objects/batch",
            json={"operation": "upload", "objects": [{"oid": _oid(body), "size": len(body)}]},
        )
        assert batch.json()["objects"][0]["error"]["code"] == 422
        put = httpx.put(f"{base}/animals/info/lfs/objects/{_oid(body)}", content=body)
        assert put.status_code == 413
        assert _stored(root / "animals") == []
    finally:
        server.shutdown()
        server.server_close()


def test_a_stale_ref_lock_on_the_server_is_recovered(tmp_path: Path, server: Server) -> None:
    a = _new(tmp_path, "a", server.url())
    make_dataset(a.root, {"cat": 1})
    _commit_all(a, "v1")
    a.push()
    write_image(os.path.join(a.root, "cat", "z.jpg"), 31)
    head = _commit_all(a, "v2")
    # a process killed in the middle of a ref update left this behind
    lock = server.root / "animals" / "refs" / "heads" / "main.lock"
    lock.write_text("garbage\n")
    os.utime(lock, (1_000_000_000, 1_000_000_000))
    a.push()
    with server.repo() as r:
        assert r.branches() == {"main": head}
    assert not lock.exists()
    a.close()


def test_a_history_bigger_than_the_pack_write_buffer_clones_whole(
    tmp_path: Path, server: Server
) -> None:
    """upload-pack gathers pack data into full side-band packets: a history of
    several such buffers (incompressible ordinary blobs, many small pointer
    blobs) reaches pixvcs and stock git byte for byte."""
    from pixvcs.server import PACK_WRITE_BUFFER

    a = _new(tmp_path, "a", server.url())
    rng = random.Random(7)
    blobs = {f"notes/{i}.bin": rng.randbytes(PACK_WRITE_BUFFER // 3) for i in range(8)}
    for path, data in blobs.items():
        Path(a.root, path).parent.mkdir(parents=True, exist_ok=True)
        Path(a.root, path).write_bytes(data)
    make_dataset(a.root, {"cat": 40})
    head = _commit_all(a, "big")
    a.push()
    b = Repo.clone(server.url(), str(tmp_path / "b"))
    assert b.head_commit() == head and snapshot(b.root) == snapshot(a.root)
    assert b.fsck().ok
    git = tmp_path / "git-clone"
    subprocess.run(
        ["git", "clone", "-q", server.url(), str(git)],
        check=True,
        env={**os.environ, "GIT_LFS_SKIP_SMUDGE": "1", "GIT_TERMINAL_PROMPT": "0"},
    )
    for path, data in blobs.items():
        assert (git / path).read_bytes() == data
    fsck = subprocess.run(["git", "-C", str(git), "fsck", "--full"], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stderr
    a.close()
    b.close()


def test_upload_pack_serves_deltas_loose_objects_and_increments(
    tmp_path: Path, server: Server
) -> None:
    """upload-pack copies the compressed bytes of objects packed whole; a
    delta (left by ``git gc``) or a loose object is sent whole. Clones and
    fetches of such a repository, by pixvcs and by stock git, are complete,
    and a fetch sends only what the client lacks."""
    a = _new(tmp_path, "a", server.url())
    rng = random.Random(11)
    base = rng.randbytes(40_000)
    Path(a.root, "notes.bin").write_bytes(base)
    make_dataset(a.root, {"cat": 6})
    _commit_all(a, "v1")
    Path(a.root, "notes.bin").write_bytes(base[:20_000] + b"changed" + base[20_000:])
    write_image(os.path.join(a.root, "dog", "0.jpg"), 5)
    _commit_all(a, "v2")
    a.push()
    srv = server.root / "animals"
    subprocess.run(["git", "-C", str(srv), "gc", "-q", "--aggressive"], check=True)
    packs = subprocess.run(
        ["git", "-C", str(srv), "verify-pack", "-v", *map(str, srv.glob("objects/pack/*.idx"))],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "chain length = 1" in packs, "the set-up must leave a delta on the server"
    b = Repo.clone(server.url(), str(tmp_path / "b"))
    assert snapshot(b.root) == snapshot(a.root) and b.fsck().ok

    # the client's repository gc'd by git too (a bitmap), then a commit big
    # enough to be written as a pack of its own: the push walks the graph
    gc = ["git", "--git-dir", a.git_dir, "-c", "repack.writeBitmaps=true", "gc", "-q"]
    subprocess.run(gc, check=True)
    assert list(Path(a.git_dir, "objects", "pack").glob("*.bitmap"))
    Path(a.root, "notes.bin").write_bytes(base + b"more")
    make_dataset(a.root, {"bird": 70})
    head = _commit_all(a, "v3")
    a.push()  # arrives as a pack; a loose object beside it too
    with server.repo() as r:
        r.git.object_store.add_object(Blob.from_string(b"a loose object\n"))
    fetched = b.pull()
    assert fetched.kind == "fast-forward" and b.head_commit() == head
    assert snapshot(b.root) == snapshot(a.root) and b.fsck().ok
    git = tmp_path / "git-clone"
    subprocess.run(
        ["git", "clone", "-q", server.url(), str(git)],
        check=True,
        env={**os.environ, "GIT_LFS_SKIP_SMUDGE": "1", "GIT_TERMINAL_PROMPT": "0"},
    )
    assert (git / "notes.bin").read_bytes() == base + b"more"
    fsck = subprocess.run(["git", "-C", str(git), "fsck", "--full"], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stderr
    a.close()
    b.close()


def test_a_malformed_pack_from_the_server_is_refused_and_nothing_is_kept(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client indexes a received pack itself: a pack whose framing is
    intact (its checksum matches what was sent) but whose object data is not
    zlib is refused by name, and no pack, ref or media is left behind."""
    from pixvcs import packreuse

    a = _new(tmp_path, "a", server.url())
    make_dataset(a.root, {"cat": 3})
    _commit_all(a, "v1")
    a.push()
    real = packreuse.reused_objects

    def garbled(store: object, ids: list[bytes], fmt: object) -> Iterator[object]:
        for n, unpacked in enumerate(real(store, ids, fmt)):  # type: ignore[arg-type]
            if n == 2 and unpacked.comp_chunks:
                header = unpacked.comp_chunks[0]
                unpacked.comp_chunks = [header, b"\x78\x9cnot zlib at all" + b"\0" * 40]
            yield unpacked

    monkeypatch.setattr(packreuse, "reused_objects", garbled)
    with pytest.raises(RemoteError, match="malformed pack: object 2: bad zlib"):
        Repo.clone(server.url(), str(tmp_path / "b"))
    b = Repo.open(str(tmp_path / "b"))
    pack_dir = Path(b.git_dir, "objects", "pack")
    assert not pack_dir.exists() or list(pack_dir.iterdir()) == []
    assert b.branches() == {} and list(b.media) == []
    a.close()
    b.close()


def _pkt(line: bytes) -> bytes:
    return f"{len(line) + 4:04x}".encode() + line


@pytest.mark.parametrize("garble", ["checksum", "zlib", "truncated"])
def test_a_malformed_pushed_pack_is_refused_and_nothing_is_kept(
    tmp_path: Path, server: Server, garble: str
) -> None:
    """receive-pack indexes a pushed pack itself: a broken one is refused in
    the report (``unpack malformed pack: ...``), no pack is published and no
    ref moves."""
    from dulwich.object_format import SHA1
    from dulwich.objects import Commit, Tree
    from dulwich.pack import write_pack_objects

    blob = Blob.from_string(b"a note\n")
    tree = Tree()
    tree.add(b"note.txt", 0o100644, blob.id)
    commit = Commit()
    commit.tree = tree.id
    commit.author = commit.committer = b"T <t@example.com>"
    commit.author_time = commit.commit_time = 1_700_000_000
    commit.author_timezone = commit.commit_timezone = 0
    commit.message = b"hand-made\n"
    pack_file = tmp_path / "p.pack"
    with open(pack_file, "wb") as f:
        write_pack_objects(f.write, [blob, tree, commit], object_format=SHA1)
    pack = bytearray(pack_file.read_bytes())
    if garble == "checksum":
        pack[-1] ^= 1
    elif garble == "zlib":  # the first object's data, its checksum recomputed
        pack[14:18] = b"\xff\xff\xff\xff"
        pack[-20:] = hashlib.sha1(pack[:-20]).digest()
    else:
        pack = pack[: len(pack) // 2]
    command = b"0" * 40 + b" " + commit.id + b" refs/heads/main\0report-status"
    body = _pkt(command) + b"0000" + bytes(pack)
    response = _post_as_writer(
        f"{server.base}/animals/git-receive-pack", body, "application/x-git-receive-pack-request"
    )
    assert response.status_code == 200
    expected = b"bad zlib data" if garble == "zlib" else b"checksum does not match"
    assert b"unpack malformed pack: " in response.content and expected in response.content
    srv = server.root / "animals"
    assert [p.name for p in (srv / "objects" / "pack").glob("*")] == []
    with server.repo() as r:
        assert r.branches() == {}
