"""Media in an S3-compatible bucket: ``pixvcs serve`` handing out presigned
URLs, directory remotes talking to the bucket, the ref-update check, and stock
git + git-lfs — all against moto's standalone server as a real process on
loopback, behind a recording proxy (tests/s3server.py)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from click.testing import CliRunner

from pixvcs import Repo
from pixvcs.cli import main
from pixvcs.errors import MissingDependency, UsageError
from pixvcs.media import MediaStore
from pixvcs.remote import HttpEndpoint, RemoteError
from pixvcs.s3media import (
    MediaConfig,
    S3Media,
    checksum_of,
    make_config,
    parse_media_url,
    read_config,
    write_config,
)
from pixvcs.server import make_app, make_server
from pixvcs.transfer import check_incoming
from tests.conftest import AUTHOR
from tests.imagegen import image_bytes, make_dataset, snapshot, write_image
from tests.s3server import Bucket, MotoS3, fresh_bucket, run_moto

if TYPE_CHECKING:
    from tests.e2e.conftest import Tools

WRITE, READ = "s3-w-token-0123456789", "s3-r-token-0123456789"


def _oid(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _key(prefix: str, oid: str) -> str:
    return f"{prefix}objects/{oid[:2]}/{oid[2:4]}/{oid}"


def _commit_all(repo: Repo, msg: str) -> str:
    repo.add([repo.root])
    return repo.commit(msg, author=AUTHOR)


def _local_media(path: Path) -> list[str]:
    return sorted(p.name for p in (path / "lfs").rglob("*") if p.is_file())


@dataclass
class Served:
    root: Path
    base: str
    bucket: Bucket

    def url(self, name: str = "animals", token: str | None = WRITE) -> str:
        if token is None:
            return f"{self.base}/{name}"
        return self.base.replace("http://", f"http://me:{token}@") + f"/{name}"

    def batch(self, body: object, name: str = "animals", token: str = WRITE) -> httpx.Response:
        return httpx.post(
            f"{self.base}/{name}.git/info/lfs/objects/batch",
            content=json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/vnd.git-lfs+json",
            },
        )


def _serve(root: Path, tokens: Path, bucket: Bucket, **media: str) -> Iterator[Served]:
    server = make_server(make_app(str(root), str(tokens), **media), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield Served(root, f"http://127.0.0.1:{server.server_port}", bucket)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    with run_moto(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture
def bucket(moto_server: MotoS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Bucket:
    return fresh_bucket(moto_server, monkeypatch, tmp_path)


@pytest.fixture
def tokens(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(f"{WRITE} write\n{READ} read\n")
    return path


@pytest.fixture
def served(tmp_path: Path, tokens: Path, bucket: Bucket) -> Iterator[Served]:
    """A server whose default media URL puts ROOT/NAME's media in s3://BUCKET/srv/NAME/."""
    root = tmp_path / "srv"
    root.mkdir()
    Repo.init(str(root / "animals"), bare=True).close()
    yield from _serve(
        root, tokens, bucket, media_url=f"s3://{bucket.name}/srv", s3_endpoint=bucket.endpoint
    )


def _no_token_reached_s3(bucket: Bucket) -> None:
    requests = bucket.s3.log.snapshot()
    assert requests, "nothing reached S3"
    for r in requests:
        for value in r.headers.values():
            assert WRITE not in value and READ not in value, (r.method, r.path, r.headers)


# -- configuration ------------------------------------------------------------------------------
def test_media_urls_and_config_round_trip(tmp_path: Path) -> None:
    assert parse_media_url("s3://my-bucket") == ("my-bucket", "")
    assert parse_media_url("s3://my-bucket/a/b/") == ("my-bucket", "a/b/")
    for bad in ("http://x/y", "s3://B/x", "s3://ab/x", "s3://bucket/../x", "s3://bucket/.hidden"):
        with pytest.raises(UsageError):
            parse_media_url(bad)
    with pytest.raises(UsageError, match="verify"):
        make_config("s3://bucket", verify="trust-me")
    with pytest.raises(UsageError, match="endpoint"):
        make_config("s3://bucket", endpoint_url="ftp://x")
    repo = Repo.init(str(tmp_path / "bare"), bare=True)
    repo.close()
    assert read_config(repo.git_dir) is None
    media = make_config(
        "s3://bucket/data", endpoint_url="http://127.0.0.1:9000/", region="eu-west-1"
    )
    write_config(repo.git_dir, media)
    assert read_config(repo.git_dir) == MediaConfig(
        "bucket", "data/", "http://127.0.0.1:9000", "eu-west-1", "hash", 3600
    )
    assert media.child("team/animals").prefix == "data/team/animals/"
    config = Path(repo.git_dir, "config")
    config.write_text(config.read_text() + "\tsecret-key = nope\n")
    with pytest.raises(UsageError, match="unknown key media.secret-key"):
        read_config(repo.git_dir)


def test_init_bare_with_a_media_url(tmp_path: Path) -> None:
    target = tmp_path / "animals"
    result = CliRunner().invoke(
        main,
        [
            "init",
            "--bare",
            str(target),
            "--media-url",
            "s3://bucket/animals",
            "--s3-region",
            "eu-west-1",
        ],
    )
    assert result.exit_code == 0, result.output
    media = read_config(str(target))
    assert media is not None and (media.bucket, media.prefix) == ("bucket", "animals/")
    assert media.region == "eu-west-1"
    result = CliRunner().invoke(main, ["init", str(tmp_path / "wt"), "--media-url", "s3://bucket"])
    assert result.exit_code == 2 and "--bare" in result.output
    result = CliRunner().invoke(
        main, ["init", "--bare", str(tmp_path / "x"), "--media-url", "s3://B"]
    )
    assert result.exit_code == 2 and "bucket name" in result.output


def test_format_md_media_config_example(tmp_path: Path) -> None:
    from tests.test_docs import DOCS, fixtures

    example = fixtures((DOCS / "format.md").read_text(encoding="utf-8"))["media-config"]
    repo = Repo.init(str(tmp_path / "bare"), bare=True)
    repo.close()
    config = Path(repo.git_dir, "config")
    config.write_text(config.read_text() + example)
    assert read_config(repo.git_dir) == MediaConfig(
        "datasets-bucket",
        "animals/",
        "https://minio.example.org:9000",
        "eu-central-1",
        "hash",
        3600,
    )


def test_serve_needs_a_media_url_for_s3_options(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["serve", str(tmp_path), "--port", "0", "--s3-endpoint", "http://127.0.0.1:9"]
    )
    assert result.exit_code == 2 and "media URL" in result.output
    with pytest.raises(UsageError, match="bucket name"):
        make_app(str(tmp_path), media_url="s3://Not_A_Bucket/x")


def test_missing_boto3_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from pixvcs import s3media

    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(MissingDependency, match="boto3"):
        s3media.make_client(None, None)


# -- pixvcs serve with media in S3 ---------------------------------------------------------
def test_push_clone_fetch_through_serve_with_s3_media(
    tmp_path: Path, served: Served, bucket: Bucket
) -> None:
    a = Repo.init(str(tmp_path / "a"))
    a.add_remote("origin", served.url())
    data = make_dataset(a.root, {"cat": 3, "dog": 2})
    v1 = _commit_all(a, "v1")
    first = a.push()
    assert first.media_sent == 5
    # the bytes are in the bucket, under the repository's prefix, and only there
    stored = bucket.keys("srv/animals/")
    assert stored == {_key("srv/animals/", _oid(d)): d for d in data.values()}
    assert _local_media(served.root / "animals") == []
    with Repo.open(str(served.root / "animals")) as r:
        assert r.branches() == {"main": v1}

    # clients really went to S3 with presigned URLs, and never with the token
    log = bucket.s3.log.snapshot()
    presigned_puts = [r for r in log if r.method == "PUT" and "X-Amz-Signature=" in r.path]
    assert len(presigned_puts) == 5
    assert all(r.headers.get("x-amz-checksum-sha256") for r in presigned_puts)
    assert all("/srv/animals/incoming/" in r.path for r in presigned_puts)
    _no_token_reached_s3(bucket)

    write_image(os.path.join(a.root, "bird", "0.jpg"), 77)
    _commit_all(a, "v2")
    assert a.push().media_sent == 1, "only what the bucket lacks moves"
    assert bucket.keys("srv/animals/incoming/") == {}, "no staged upload is left behind"

    bucket.s3.log.clear()
    b = Repo.clone(served.url(token=READ), str(tmp_path / "b"))
    assert snapshot(b.root) == snapshot(a.root) and b.fsck().ok
    gets = [
        r for r in bucket.s3.log.snapshot() if r.method == "GET" and "X-Amz-Signature=" in r.path
    ]
    assert len(gets) == 6, "each image came straight from the bucket"
    _no_token_reached_s3(bucket)

    # fetch --all-media and on-demand media come from the bucket too
    os.unlink(b.media.path(_oid(data["cat/0000.jpg"])))
    b.checkout(v1, force=True)
    assert Path(b.root, "cat", "0000.jpg").read_bytes() == data["cat/0000.jpg"]
    b.checkout("main")
    write_image(os.path.join(b.root, "bird", "1.jpg"), 78)
    _commit_all(b, "v3")
    with pytest.raises(RemoteError, match="403|may not"):
        b.push()  # a read token
    a.close()
    b.close()


def test_the_batch_api_hands_out_presigned_urls(served: Served, bucket: Bucket) -> None:
    body = image_bytes(1)
    oid = _oid(body)
    up = served.batch({"operation": "upload", "objects": [{"oid": oid, "size": len(body)}]})
    obj = up.json()["objects"][0]
    upload, verify = obj["actions"]["upload"], obj["actions"]["verify"]
    assert upload["href"].startswith(bucket.endpoint + f"/{bucket.name}/srv/animals/incoming/")
    assert upload["header"] == {"x-amz-checksum-sha256": checksum_of(oid)}
    assert upload["expires_in"] == 3600
    assert "x-amz-checksum-sha256" in upload["href"].lower(), "the checksum is a signed header"
    assert verify["href"].startswith(served.base) and verify["header"]["Authorization"]
    put = httpx.put(upload["href"], content=body, headers=upload["header"])
    assert put.status_code == 200
    assert bucket.keys("srv/animals/objects/") == {}, "not stored before it is verified"
    ok = httpx.post(verify["href"], json={"oid": oid, "size": len(body)}, headers=verify["header"])
    assert ok.status_code == 200, ok.text
    assert bucket.keys("srv/animals/") == {_key("srv/animals/", oid): body}
    # a verify that names another size is refused, and deletes nothing
    plain = verify["href"].split("?")[0]
    lie = httpx.post(plain, json={"oid": oid, "size": len(body) + 1}, headers=verify["header"])
    assert lie.status_code == 422
    assert bucket.keys("srv/animals/") == {_key("srv/animals/", oid): body}
    again = served.batch({"operation": "upload", "objects": [{"oid": oid, "size": len(body)}]})
    assert "actions" not in again.json()["objects"][0], "stored objects are not re-uploaded"
    down = served.batch(
        {
            "operation": "download",
            "objects": [{"oid": oid, "size": 0}, {"oid": "b" * 64, "size": 1}],
        }
    )
    have, lack = down.json()["objects"]
    assert have["size"] == len(body) and lack["error"]["code"] == 404
    href = have["actions"]["download"]["href"]
    assert href.startswith(bucket.endpoint) and have["actions"]["download"]["header"] == {}
    assert httpx.get(href).content == body
    # the server's own object endpoints point at the Batch API instead
    direct = httpx.get(f"{served.base}/animals/info/lfs/objects/{oid}", auth=("me", WRITE))
    assert direct.status_code == 409 and "Batch API" in direct.json()["message"]


def test_a_corrupt_upload_is_never_stored(served: Served, bucket: Bucket) -> None:
    body, other = image_bytes(2), image_bytes(3)
    oid = _oid(body)
    up = served.batch({"operation": "upload", "objects": [{"oid": oid, "size": len(body)}]})
    actions = up.json()["objects"][0]["actions"]
    upload, verify = actions["upload"], actions["verify"]
    # wrong bytes of the right length, under the right checksum header: moto stores them
    # (it verifies neither checksums nor signatures); AWS S3 would refuse with BadDigest
    wrong = (other * 2)[: len(body)]
    put = httpx.put(upload["href"], content=wrong, headers=upload["header"])
    assert put.status_code in (200, 400)
    bad = httpx.post(verify["href"], json={"oid": oid, "size": len(body)}, headers=verify["header"])
    if put.status_code == 200:  # moto: the server's hash check is what refuses it
        assert bad.status_code == 422 and "not stored" in bad.json()["message"]
    assert bucket.keys("srv/animals/") == {}, "nothing under objects/, the staged upload deleted"
    # an upload never made: the verify action says so
    gone = httpx.post(
        verify["href"], json={"oid": oid, "size": len(body)}, headers=verify["header"]
    )
    assert gone.status_code == 404
    # a forged upload id cannot name another key
    forged = httpx.post(
        verify["href"].split("?")[0] + "?upload=../../x",
        json={"oid": oid, "size": len(body)},
        headers=verify["header"],
    )
    assert forged.status_code == 422
    # and the object is still to be uploaded
    again = served.batch({"operation": "upload", "objects": [{"oid": oid, "size": len(body)}]})
    assert "upload" in again.json()["objects"][0]["actions"]


def test_checksum_mode_uploads_in_place_and_deletes_bad_bytes(
    tmp_path: Path, tokens: Path, bucket: Bucket
) -> None:
    root = tmp_path / "srv"
    root.mkdir()
    repo = Repo.init(str(root / "animals"), bare=True)
    repo.close()
    write_config(
        repo.git_dir,
        make_config(
            f"s3://{bucket.name}/own",
            endpoint_url=bucket.endpoint,
            verify="checksum",
            expires_in=60,
        ),
    )
    for served in _serve(root, tokens, bucket):
        body = image_bytes(4)
        oid = _oid(body)
        up = served.batch({"operation": "upload", "objects": [{"oid": oid, "size": len(body)}]})
        actions = up.json()["objects"][0]["actions"]
        assert f"/{bucket.name}/own/objects/" in actions["upload"]["href"]
        assert actions["upload"]["expires_in"] == 60
        wrong = bytes(reversed(body))
        httpx.put(actions["upload"]["href"], content=wrong, headers=actions["upload"]["header"])
        verify = actions["verify"]
        bad = httpx.post(
            verify["href"], json={"oid": oid, "size": len(body)}, headers=verify["header"]
        )
        assert bad.status_code in (404, 422)
        assert bucket.keys("own/") == {}, "the bad object was deleted"
        put = httpx.put(
            actions["upload"]["href"], content=body, headers=actions["upload"]["header"]
        )
        assert put.status_code == 200
        ok = httpx.post(
            verify["href"], json={"oid": oid, "size": len(body)}, headers=verify["header"]
        )
        assert ok.status_code == 200
        lie = httpx.post(
            verify["href"], json={"oid": oid, "size": len(body) - 1}, headers=verify["header"]
        )
        assert lie.status_code == 422
        assert bucket.keys("own/") == {_key("own/", oid): body}, "good bytes are never deleted"


def test_a_ref_whose_media_are_not_in_s3_is_refused(
    tmp_path: Path, served: Served, bucket: Bucket
) -> None:
    from dulwich.client import HttpGitClient

    a = Repo.init(str(tmp_path / "a"))
    a.add_remote("origin", served.url())
    data = make_dataset(a.root, {"cat": 2})
    head = _commit_all(a, "v1")
    # the objects on the server's disk do not count: its media are in S3
    disk = MediaStore.create(str(served.root / "animals" / "lfs"))
    for content in data.values():
        disk.add_bytes(content)
    client = HttpGitClient(served.url(token=None), username="me", password=WRITE)
    result = client.send_pack(
        "/animals", lambda refs: {b"refs/heads/main": head.encode()}, a.git.generate_pack_data
    )
    status = (result.ref_status or {}).get(b"refs/heads/main")
    assert status and "not on this remote" in status
    assert any(_oid(c) in status for c in data.values())
    with Repo.open(str(served.root / "animals")) as r:
        assert r.branches() == {}
    heads = [r for r in bucket.s3.log.snapshot() if r.method == "HEAD"]
    assert len(heads) == 2, "one HEAD per image of the push"
    assert a.push().media_sent == 2
    with Repo.open(str(served.root / "animals")) as r:
        assert r.branches() == {"main": head}
    a.close()


def test_existence_of_many_objects_is_listed_not_headed(
    bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pixvcs import s3media

    store = S3Media(make_config(f"s3://{bucket.name}/p", endpoint_url=bucket.endpoint))
    present = [image_bytes(i) for i in range(6)]
    for data in present:
        store.put(_oid(data), data)
    absent = [_oid(image_bytes(100 + i)) for i in range(4)]
    wanted = [_oid(d) for d in present] + absent
    bucket.s3.log.clear()
    monkeypatch.setattr(s3media, "LIST_ABOVE", 3)
    assert store.stat(wanted) == {_oid(d): len(d) for d in present}
    methods = [r.method for r in bucket.s3.log.snapshot()]
    assert "HEAD" not in methods and 0 < methods.count("GET") <= len({o[:2] for o in wanted})
    bucket.s3.log.clear()
    monkeypatch.setattr(s3media, "LIST_ABOVE", 1000)
    assert store.missing(wanted) == absent
    assert [r.method for r in bucket.s3.log.snapshot()] == ["HEAD"] * len(wanted)


# -- directory remotes whose media are in S3 ------------------------------------------------
def test_directory_remote_with_s3_media(tmp_path: Path, bucket: Bucket) -> None:
    bare = tmp_path / "shared.git"
    result = CliRunner().invoke(
        main,
        [
            "init",
            "--bare",
            str(bare),
            "--media-url",
            f"s3://{bucket.name}/dir",
            "--s3-endpoint",
            bucket.endpoint,
        ],
    )
    assert result.exit_code == 0, result.output
    a = Repo.init(str(tmp_path / "a"))
    a.add_remote("origin", str(bare))
    data = make_dataset(a.root, {"cat": 2, "dog": 1})
    _commit_all(a, "v1")
    assert a.push().media_sent == 3
    assert bucket.keys("dir/") == {_key("dir/", _oid(d)): d for d in data.values()}
    assert _local_media(bare) == []
    b = Repo.clone(str(bare), str(tmp_path / "b"))
    assert snapshot(b.root) == snapshot(a.root)
    # a corrupt object in the bucket is never stored locally
    victim = _oid(data["cat/0000.jpg"])
    bucket.client.put_object(Bucket=bucket.name, Key=_key("dir/", victim), Body=b"garbage")
    c = Repo.init(str(tmp_path / "c"))
    c.add_remote("origin", str(bare))
    with pytest.raises(Exception, match="corrupt"):
        c.fetch(all_media=True)
    assert not c.media.has(victim)
    # the pre-receive check (stock git pushing into the directory) asks the bucket
    write_image(os.path.join(a.root, "cat", "new.jpg"), 91)
    head = _commit_all(a, "v2")
    new_oid = _oid(Path(a.root, "cat", "new.jpg").read_bytes())
    with Repo.open(str(bare)) as r:
        problems = check_incoming(
            r,
            [("0" * 40, head, "refs/heads/main")],
            object_dirs=[os.path.join(a.git_dir, "objects")],
        )
    assert len(problems) == 1 and new_oid in problems[0]
    a.push()
    with Repo.open(str(bare)) as r:
        assert check_incoming(r, [("0" * 40, head, "refs/heads/main")]) == []
    for repo in (a, b, c):
        repo.close()


# -- the client never sends its token to another origin -------------------------------------------
def _pushed_to_s3(tmp_path: Path, bucket: Bucket, prefix: str) -> tuple[Path, dict[str, bytes]]:
    """A bare repository with its media in ``bucket`` under ``prefix/``, and a
    first version (3 images) pushed to it."""
    bare = tmp_path / "shared.git"
    result = CliRunner().invoke(
        main,
        ["init", "--bare", str(bare), "--media-url", f"s3://{bucket.name}/{prefix}",
         "--s3-endpoint", bucket.endpoint],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    a = Repo.init(str(tmp_path / "a"))
    a.add_remote("origin", str(bare))
    data = make_dataset(a.root, {"cat": 2, "dog": 1})
    _commit_all(a, "v1")
    a.push()
    a.close()
    return bare, data


def test_fsck_of_a_bare_repository_checks_the_bucket(tmp_path: Path, bucket: Bucket) -> None:
    """fsck on a repository whose media are in S3 checks the bucket: each object is
    there, has its pointers' size, and hashes to its name (downloaded, not stored)."""
    bare, data = _pushed_to_s3(tmp_path, bucket, "fs")
    with Repo.open(str(bare)) as r:
        report = r.fsck()
        assert report.ok and report.media_checked == 3, report.problems
    assert _local_media(bare) == []  # nothing was stored while checking
    cat, dog = _oid(data["cat/0000.jpg"]), _oid(data["dog/0000.jpg"])
    bucket.client.put_object(Bucket=bucket.name, Key=_key("fs/", cat), Body=b"garbage")
    bucket.client.delete_object(Bucket=bucket.name, Key=_key("fs/", dog))
    out = CliRunner().invoke(main, ["-C", str(bare), "fsck", "--json"])
    assert out.exit_code == 1, out.output
    kinds: dict[str, set[str]] = {}
    for p in json.loads(out.stdout)["problems"]:
        kinds.setdefault(p["oid"], set()).add(p["kind"])
        assert p["path"] in data
    assert kinds == {dog: {"missing-media"}, cat: {"pointer-size-mismatch", "corrupt-media"}}


def test_the_token_goes_to_the_server_only(tmp_path: Path) -> None:
    body = image_bytes(8)
    oid = _oid(body)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/objects/batch"):
            op = json.loads(request.content)["operation"]
            foreign = {"x-amz-checksum-sha256": checksum_of(oid), "X-Leak": f"Bearer {WRITE}"}
            actions = (
                {
                    "download": {
                        "href": "http://bucket.example:9000/k?X-Amz-Signature=s",
                        "header": {},
                    }
                }
                if op == "download"
                else {
                    "upload": {
                        "href": "http://bucket.example:9000/k?X-Amz-Signature=s",
                        "header": foreign,
                    },
                    "verify": {"href": f"http://srv/x.git/info/lfs/objects/{oid}/verify"},
                }
            )
            return httpx.Response(
                200, json={"objects": [{"oid": oid, "size": len(body), "actions": actions}]}
            )
        if request.method == "GET":
            return httpx.Response(200, content=body)
        return httpx.Response(200, json={})

    endpoint = HttpEndpoint(f"http://me:{WRITE}@srv/x", transport=httpx.MockTransport(handler))
    src = MediaStore.create(str(tmp_path / "src"))
    src.add_bytes(body)
    endpoint.upload([oid], src, lambda *a: None)
    endpoint.download([oid], MediaStore.create(str(tmp_path / "dst")), lambda *a: None)
    to_server = [r for r in seen if r.url.host == "srv"]
    to_bucket = [r for r in seen if r.url.host == "bucket.example"]
    assert to_server and to_bucket
    assert all(r.headers["Authorization"] == f"Bearer {WRITE}" for r in to_server)
    for r in to_bucket:
        assert "Authorization" not in r.headers and "X-Leak" not in r.headers
        assert all(WRITE not in v for v in r.headers.values())
    put = next(r for r in to_bucket if r.method == "PUT")
    assert put.headers["x-amz-checksum-sha256"] == checksum_of(oid)


def _stock_git(tmp_path: Path) -> tuple[Tools, dict[str, str]]:
    """Real git and git-lfs with a home of their own: (tests.e2e Tools, its env)."""
    import shutil

    from tests.e2e.conftest import Tools

    assert shutil.which("git") and shutil.which("git-lfs"), "git and git-lfs are needed"
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), GIT_CONFIG_NOSYSTEM="1",
        GIT_TERMINAL_PROMPT="0", GIT_AUTHOR_NAME="Ada", GIT_AUTHOR_EMAIL="ada@example.org",
        GIT_COMMITTER_NAME="Ada", GIT_COMMITTER_EMAIL="ada@example.org", LC_ALL="C",
    )  # fmt: skip
    return Tools(env=env, home=home), env


def _stock_lfs_source(
    tools: Tools, tmp_path: Path, *, seed: int, labels: bool = False
) -> tuple[Path, dict[str, bytes]]:
    """A stock git + git-lfs repository ``tmp_path/src`` with three committed
    images tracked by LFS (and ``labels.csv``, a plain git file, if asked)."""
    from tests.e2e.conftest import write_file, write_images

    tools.git("lfs", "install", "--skip-repo")
    src = tmp_path / "src"
    src.mkdir()
    tools.git("init", "-q", "-b", "main", cwd=src)
    tools.git("lfs", "track", "*.jpg", cwd=src)
    images = write_images(src, [f"cat/{i}.jpg" for i in range(3)], seed=seed)
    if labels:
        write_file(src, "labels.csv", b"path,label\n")
    tools.git("add", ".", cwd=src)
    tools.git("commit", "-q", "-m", "stock", cwd=src)
    return src, images


# -- stock git + git-lfs against pixvcs serve with S3 media ---------------------------------------------
@pytest.mark.e2e
def test_stock_git_lfs_push_and_clone_through_serve_with_s3_media(
    tmp_path: Path, tokens: Path, bucket: Bucket
) -> None:
    from tests.e2e.conftest import worktree_hashes

    tools, env = _stock_git(tmp_path)
    root = tmp_path / "srv"
    root.mkdir()
    tools.pixvcs(tmp_path, "init", "--bare", str(root / "animals"))
    argv = tools.pixvcs_argv(
        tmp_path, "serve", str(root), "--port", "0", "--auth", str(tokens),
        "--media-url", f"s3://{bucket.name}/e2e", "--s3-endpoint", bucket.endpoint,
    )  # fmt: skip
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        found = re.search(r"http://127\.0\.0\.1:(\d+)/", proc.stdout.readline())
        assert found
        base = f"http://x:{WRITE}@127.0.0.1:{found[1]}"
        src, images = _stock_lfs_source(tools, tmp_path, seed=7, labels=True)
        tools.git("push", "-q", f"{base}/animals", "main", cwd=src)
        assert bucket.keys("e2e/animals/objects/") == {
            _key("e2e/animals/", _oid(c)): c for c in images.values()
        }, "git-lfs uploaded to the bucket through presigned URLs"
        assert _local_media(root / "animals") == []
        clone = tmp_path / "gitclone"
        tools.git("clone", "-q", f"{base}/animals", str(clone))
        for rel, content in images.items():
            assert (clone / rel).read_bytes() == content, rel
        assert worktree_hashes(clone) == worktree_hashes(src)
        tools.pixvcs(tmp_path, "clone", f"{base}/animals", "copy")
        for rel, content in images.items():
            assert (tmp_path / "copy" / rel).read_bytes() == content
        _no_token_reached_s3(bucket)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.e2e
def test_stock_git_lfs_push_into_a_directory_remote_with_s3_media(
    tmp_path: Path, bucket: Bucket
) -> None:
    """Stock git-lfs reaches a directory remote through its standalone file
    transfer, which copies objects into the remote's lfs/objects/; the
    pre-receive hook moves them to the bucket (verified) before it lets the ref
    move, so the push works and the bare repository keeps no media. A push
    whose images are nowhere is still refused."""
    from tests.e2e.conftest import write_images

    tools, _env = _stock_git(tmp_path)
    bare = tmp_path / "shared.git"
    tools.pixvcs(
        tmp_path, "init", "--bare", str(bare), "--media-url", f"s3://{bucket.name}/dir",
        "--s3-endpoint", bucket.endpoint,
    )  # fmt: skip
    src, images = _stock_lfs_source(tools, tmp_path, seed=21)
    tools.git("push", "-q", f"file://{bare}", "main", cwd=src)
    assert bucket.keys("dir/objects/") == {_key("dir/", _oid(c)): c for c in images.values()}
    assert _local_media(bare) == [], "the hook moved git-lfs's copies to the bucket"
    clone = Repo.clone(str(bare), str(tmp_path / "copy"))
    try:
        for rel, content in images.items():
            assert (tmp_path / "copy" / rel).read_bytes() == content
    finally:
        clone.close()
    # an image that reached neither lfs/objects nor the bucket: refused, ref unmoved
    write_images(src, ["cat/9.jpg"], seed=22)
    tools.git("add", ".", cwd=src)
    tools.git("commit", "-q", "-m", "more", cwd=src)
    head_before = tools.git("rev-parse", "main", cwd=bare).stdout.strip()
    refused = tools.git(
        "push", "-q", "--no-verify", f"file://{bare}", "main", cwd=src, check=False
    )
    assert refused.returncode != 0 and "not on this remote" in refused.stderr
    assert tools.git("rev-parse", "main", cwd=bare).stdout.strip() == head_before


def test_a_storage_error_names_the_storage_not_the_token(tmp_path: Path) -> None:
    body = image_bytes(9)
    oid = _oid(body)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/objects/batch"):
            href = "http://bucket.example:9000/k?X-Amz-Signature=s"
            actions = {"download": {"href": href, "header": {}, "expires_in": 1}}
            return httpx.Response(
                200, json={"objects": [{"oid": oid, "size": len(body), "actions": actions}]}
            )
        xml = "<?xml version='1.0'?><Error><Code>AccessDenied</Code><Message>expired</Message></Error>"
        return httpx.Response(403, content=xml.encode())

    endpoint = HttpEndpoint(f"http://me:{WRITE}@srv/x", transport=httpx.MockTransport(handler))
    dest = MediaStore.create(str(tmp_path / "dst"))
    with pytest.raises(RemoteError, match="AccessDenied from bucket.example:9000") as e:
        endpoint.download([oid], dest, lambda *a: None)
    assert "token" not in str(e.value)
    assert list(dest) == [] and dest.stray_temp_files() == []


def test_gc_of_a_bare_repository_sweeps_the_bucket(tmp_path: Path, bucket: Bucket) -> None:
    """gc on a repository whose media are in S3 deletes the bucket's unreachable
    objects older than the grace period (and stale staged uploads), keeps the
    reachable ones and young ones, and leaves keys of other shapes alone."""
    bare, data = _pushed_to_s3(tmp_path, bucket, "gc")
    orphan = image_bytes(77)
    orphan_key = _key("gc/", _oid(orphan))
    bucket.client.put_object(Bucket=bucket.name, Key=orphan_key, Body=orphan)
    stray = "gc/objects/notes.txt"  # not a name pixvcs gives
    bucket.client.put_object(Bucket=bucket.name, Key=stray, Body=b"keep me")
    staged = f"gc/incoming/{_oid(orphan)}.nonce"
    bucket.client.put_object(Bucket=bucket.name, Key=staged, Body=orphan)

    out = CliRunner().invoke(main, ["-C", str(bare), "gc", "--json"])  # default grace: 1 h
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert report["media"] == f"s3://{bucket.name}/gc/"
    assert (report["removed_media"], report["kept_media"], report["kept_young"]) == (0, 3, 1)
    assert orphan_key in bucket.keys("gc/") and staged in bucket.keys("gc/")

    with Repo.open(str(bare)) as r:
        swept = r.gc(grace=0)
    assert (swept.removed_media, swept.removed_bytes, swept.kept_media) == (1, len(orphan), 3)
    assert swept.removed_temp == 0, "a staged upload lives as long as its presigned URL"
    left = bucket.keys("gc/")
    assert orphan_key not in left and stray in left and staged in left
    assert {k for k in left if "/objects/" in k and k != stray} == {
        _key("gc/", _oid(d)) for d in data.values()
    }
    with Repo.open(str(bare)) as r:  # what is left is still whole
        assert r.fsck().ok
    # staged uploads go once their presigned URLs have expired
    config = bare / "config"
    config.write_text(config.read_text().replace("expires-in = 3600", "expires-in = 1"))
    time.sleep(1.5)
    with Repo.open(str(bare)) as r:
        swept = r.gc(grace=0)
    assert swept.removed_temp == 1 and staged not in bucket.keys("gc/")
