"""Remotes: where a repository's history and media are shared.

A remote is configured as git configures one (``[remote "NAME"] url = ...``,
``fetch = +refs/heads/*:refs/remotes/NAME/*``), so stock git sees it too. An
*endpoint* is how pixvcs talks to one: history through a dulwich git client
(the same interface for every transport), media through three calls —
``missing``, ``download``, ``upload`` — that move objects in batches and verify
every one against its oid before it is stored, on either side.

Endpoints here: a directory (a local path or ``file://`` URL to a bare
repository, e.g. on a shared disk; when its config puts its media in S3, they
move between the local store and the bucket with boto3, see
:mod:`pixvcs.s3media`), and ``http(s)://``: ``pixvcs serve`` or any
server that speaks git smart HTTP and the git-lfs Batch API (:class:`HttpEndpoint`).
The HTTP client sends its token only to the server's own origin: an action
whose href is elsewhere (a presigned S3 URL) gets only the action's headers.

Credentials for HTTP remotes, first found wins: the password of the URL
(``http://user:TOKEN@host/NAME``), the ``token`` argument (from the config's
``pixvcs.token``, see :func:`endpoint_token`), then
``Repo.token`` — which the command line sets from ``PIXVCS_TOKEN``; nothing
here reads the environment.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, suppress
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlparse, urlunparse

from . import fsutil
from .errors import BadPath, CorruptObject, RemoteError, UsageError
from .media import MediaStore
from .pointer import is_oid

if TYPE_CHECKING:
    import httpx

    from .repo import Repo
    from .s3media import S3Media

Progress = Callable[[str, int, int], None]
BATCH = 100  # objects per batch: one sync per batch on the receiving side


class Endpoint(Protocol):
    """How pixvcs talks to one remote (see the module docstring)."""

    url: str

    def lock(self) -> AbstractContextManager[None]: ...

    def git_client(self) -> tuple[Any, str]: ...

    def missing(self, oids: Iterable[str]) -> list[str]: ...

    def download(self, oids: Sequence[str], dest: MediaStore, progress: Progress) -> None: ...

    def upload(self, oids: Sequence[str], src: MediaStore, progress: Progress) -> None: ...


def _check_name(name: str) -> None:
    from dulwich.refs import Ref, check_ref_format

    if (
        not name
        or name.startswith("-")
        or not check_ref_format(Ref(f"refs/remotes/{name}".encode()))
    ):
        raise UsageError(f"{name!r} is not a valid remote name")


def remotes(repo: Repo) -> dict[str, str]:
    config = repo.git.get_config()
    out = {}
    for section in config.sections():
        if len(section) == 2 and section[0] == b"remote":
            try:
                out[section[1].decode()] = config.get(section, "url").decode()
            except KeyError:
                continue
    return dict(sorted(out.items()))


def add_remote(repo: Repo, name: str, url: str) -> None:
    _check_name(name)
    if name in remotes(repo):
        raise UsageError(f"remote {name!r} already exists")
    config = repo.git.get_config()
    config.set((b"remote", name.encode()), b"url", url.encode())
    config.set(
        (b"remote", name.encode()), b"fetch", f"+refs/heads/*:refs/remotes/{name}/*".encode()
    )
    config.write_to_path()


def remove_remote(repo: Repo, name: str) -> None:
    if name not in remotes(repo):
        raise UsageError(f"no remote named {name!r}")
    config = repo.git.get_config()
    del config[(b"remote", name.encode())]
    config.write_to_path()
    prefix = f"refs/remotes/{name}/".encode()
    for ref in list(repo.git.refs.keys()):
        if ref.startswith(prefix):
            repo.git.refs.remove_if_equals(ref, None)


def remote_url(repo: Repo, name: str) -> str:
    url = remotes(repo).get(name)
    if url is None:
        raise UsageError(f"no remote named {name!r} (add one with 'pixvcs remote add')")
    return url


def local_path(url: str, base: str) -> str | None:
    """The directory a local URL names, or None for a network URL."""
    if url.startswith("file://"):
        return unquote(urlparse(url).path)
    if "://" in url:
        return None
    return os.path.abspath(os.path.join(base, url))


class DirectoryEndpoint:
    """A bare (or non-bare) pixvcs repository on a reachable filesystem. Its
    media are in its ``lfs/`` directory, or in S3 when its config says so
    (``[media] url = s3://...``): then they move straight between the local
    store and the bucket, verified against their oids on the way."""

    def __init__(self, path: str) -> None:
        from .s3media import store_for

        if os.path.isdir(os.path.join(path, ".pixvcs")):
            path = os.path.join(path, ".pixvcs")
        if not os.path.isfile(os.path.join(path, "HEAD")):
            raise BadPath(path, "is not a pixvcs or git repository")
        self.git_dir = path
        self.url = path
        self.media = MediaStore(os.path.join(path, "lfs"))
        self.s3: S3Media | None = store_for(path)

    def lock(self) -> AbstractContextManager[None]:
        """The remote repository's own lock, held while its refs change: pixvcs
        processes pushing to one directory take turns, and the loser of a race
        sees the moved ref and is told to fetch first."""
        state = os.path.join(self.git_dir, "pixvcs")
        os.makedirs(state, exist_ok=True)
        return fsutil.repo_lock(os.path.join(state, "lock"))

    def git_client(self) -> tuple[Any, str]:
        from dulwich.client import LocalGitClient

        return LocalGitClient(), self.git_dir

    def missing(self, oids: Iterable[str]) -> list[str]:
        if self.s3 is not None:
            return self.s3.missing(oids)
        return [o for o in oids if not self.media.has(o)]

    def download(self, oids: Sequence[str], dest: MediaStore, progress: Progress) -> None:
        if self.s3 is not None:
            self.s3.download(oids, dest, progress)
            return
        _copy_verified(self.media, dest, oids, progress, "download")

    def upload(self, oids: Sequence[str], src: MediaStore, progress: Progress) -> None:
        if self.s3 is not None:
            self.s3.upload(oids, src, progress)
            return
        os.makedirs(self.media.tmp_dir, exist_ok=True)
        _copy_verified(src, self.media, oids, progress, "upload")


def _copy_verified(
    src: MediaStore, dest: MediaStore, oids: Sequence[str], progress: Progress, stage: str
) -> None:
    """Copy objects in batches: read, verify, temp file; one sync; rename."""
    done = 0

    def one(oid: str) -> tuple[str, str]:
        if not is_oid(oid):
            raise CorruptObject(oid, "(not an oid)", src.root)
        with open(src.path(oid), "rb") as f:
            data = f.read()
        got = hashlib.sha256(data).hexdigest()
        if got != oid:
            raise CorruptObject(oid, got, src.root)
        return dest.write_temp(data, oid), oid

    with ThreadPoolExecutor(max_workers=4) as pool:
        for start in range(0, len(oids), BATCH):
            batch = [o for o in oids[start : start + BATCH] if not dest.has(o)]
            temps = list(pool.map(one, batch))
            if temps:
                dest.sync()
                for tmp, oid in temps:
                    dest.publish(tmp, oid)
            done += len(oids[start : start + BATCH])
            progress(stage, done, len(oids))
    if oids:
        dest.sync()


def endpoint_token(repo: Repo) -> str | None:
    """The token for HTTP remotes whose URL has none: the repository's config
    (``pixvcs.token``), else the one its opener gave (``Repo.token``: the
    command line sets it from ``PIXVCS_TOKEN``; nothing here reads the environment)."""
    try:
        value: bytes = repo.git.get_config().get((b"pixvcs",), b"token")
    except KeyError:
        return repo.token
    return value.decode().strip() or repo.token


def open_endpoint(url: str, base: str, *, token: str | None = None) -> Endpoint:
    """The endpoint for a remote URL: a directory, or HTTP(S). ``token`` is used
    for HTTP when the URL carries none."""
    if url.startswith(("http://", "https://")):
        return HttpEndpoint(url, token=token)
    path = local_path(url, base)
    if path is None:
        raise UsageError(
            f"unsupported remote URL {url!r}: use a directory, file://, http:// or https://"
        )
    if not os.path.isdir(path):
        raise BadPath(url, "no such directory")
    return DirectoryEndpoint(path)


def redact(url: str) -> str:
    """The URL without its password (for messages)."""
    parsed = urlparse(url)
    if parsed.password is None:
        return url
    netloc = f"{parsed.username}:***@{parsed.hostname}" + (f":{parsed.port}" if parsed.port else "")
    return urlunparse(parsed._replace(netloc=netloc))


class HttpEndpoint:
    """A remote over HTTP(S): history through dulwich's smart-HTTP client, media
    through the git-lfs Batch API (basic transfer) with httpx.

    The LFS URL is found as git-lfs finds it: ``<url>.git/info/lfs`` (``<url>/info/lfs``
    when the URL already ends in ``.git``). Objects move in batches of
    :data:`BATCH`, ``workers`` at a time; every downloaded object is verified
    against its oid before it is stored, and after an upload the server's
    verify action is called. ``transport`` is an httpx seam for tests."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        workers: int = 8,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        max_object_size: int = 2 << 30,
    ) -> None:
        import httpx

        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise UsageError(f"not an HTTP URL: {redact(url)}")
        self.username = unquote(parsed.username) if parsed.username else "pixvcs"
        self.token = unquote(parsed.password) if parsed.password else token
        netloc = parsed.hostname if ":" not in parsed.hostname else f"[{parsed.hostname}]"
        if parsed.port:
            netloc += f":{parsed.port}"
        clean = urlunparse(parsed._replace(netloc=netloc, query="", fragment=""))
        self.url = clean.rstrip("/")
        self.lfs_url = (self.url if self.url.endswith(".git") else self.url + ".git") + "/info/lfs"
        self.workers = workers
        self.max_object_size = max_object_size
        self._origin = _origin(self.url)
        # no default Authorization: the token is added per request, to this origin only
        self._http = httpx.Client(
            headers={"User-Agent": "pixvcs"},
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
        )

    def headers_for(self, href: str, header: dict[str, str]) -> dict[str, str]:
        """The headers of a request to ``href`` (an action's ``header`` given):
        on this server's origin, the action's headers and the token (unless the
        action carries its own Authorization); anywhere else (a presigned S3
        URL), only the action's headers, and never one that carries the token."""
        if _origin(href) == self._origin:
            if self.token and not any(k.lower() == "authorization" for k in header):
                return {"Authorization": f"Bearer {self.token}", **header}
            return dict(header)
        if not self.token:
            return dict(header)
        return {k: v for k, v in header.items() if not _carries(v, self.token)}

    def lock(self) -> AbstractContextManager[None]:
        """Nothing to take here: the server takes its repository lock around ref
        updates and refuses one whose ref moved meanwhile."""
        from contextlib import nullcontext

        return nullcontext()

    def git_client(self) -> tuple[Any, str]:
        from dulwich.client import HttpGitClient

        path = urlparse(self.url).path or "/"
        client = HttpGitClient(
            self.url, username=self.username if self.token else None, password=self.token
        )
        return _TranslatingClient(client, self.url), path

    # -- the Batch API ------------------------------------------------------------------
    def _batch(self, operation: str, objects: list[tuple[str, int]]) -> list[dict[str, Any]]:
        import httpx

        body = {
            "operation": operation,
            "transfers": ["basic"],
            "objects": [{"oid": o, "size": n} for o, n in objects],
            "hash_algo": "sha256",
        }
        url = self.lfs_url + "/objects/batch"
        try:
            response = self._http.post(
                url,
                json=body,
                headers=self.headers_for(
                    url,
                    {
                        "Accept": "application/vnd.git-lfs+json",
                        "Content-Type": "application/vnd.git-lfs+json",
                    },
                ),
            )
        except httpx.HTTPError as e:
            raise RemoteError(self.url, f"cannot reach the server ({e})") from None
        self._check(response, "batch")
        if len(response.content) > 64 * 1024 * 1024:
            raise RemoteError(self.url, "the batch response is implausibly large")
        try:
            data = response.json()
        except ValueError:
            raise RemoteError(self.url, "the batch response is not JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("objects"), list):
            raise RemoteError(self.url, "the batch response has no objects list")
        if data.get("transfer", "basic") != "basic":
            raise RemoteError(self.url, f"unsupported transfer {data.get('transfer')!r}")
        wanted = {o for o, _ in objects}
        out = []
        for obj in data["objects"]:
            if not isinstance(obj, dict) or obj.get("oid") not in wanted:
                raise RemoteError(self.url, "the batch response names an object not asked for")
            out.append(obj)
        unanswered = wanted - {obj["oid"] for obj in out}
        if unanswered:
            raise RemoteError(
                self.url, f"the batch response leaves out {len(unanswered)} object(s)"
            )
        return out

    def _check(self, response: httpx.Response, what: str) -> None:
        if response.status_code < 300:
            return
        try:
            message = str(response.json().get("message", ""))[:300]
        except (ValueError, AttributeError):  # not JSON: the status says enough
            message = ""
        code = response.status_code
        url = str(response.request.url)
        if _origin(url) != self._origin:
            # another origin (a presigned storage URL): its answer, not the token's fault
            found = re.search(r"<Code>([^<]{1,80})</Code>", response.text[:2000])
            detail = f" {found[1]}" if found else ""
            host = urlparse(url).netloc
            raise RemoteError(self.url, f"{what}: HTTP {code}{detail} from {host}")
        if code == 401:
            hint = "authentication required: put a token in the URL, pixvcs.token or PIXVCS_TOKEN"
        elif code == 403:
            hint = "the token may not do this (a read token cannot push)"
        else:
            hint = f"HTTP {code}"
        raise RemoteError(self.url, f"{what}: {hint}" + (f" ({message})" if message else ""))

    @staticmethod
    def _action(obj: dict[str, Any], name: str) -> tuple[str, dict[str, str]] | None:
        actions = obj.get("actions") or {}
        action = actions.get(name) if isinstance(actions, dict) else None
        if not isinstance(action, dict) or not isinstance(action.get("href"), str):
            return None
        header = action.get("header") or {}
        if not isinstance(header, dict):
            header = {}
        return action["href"], {str(k): str(v) for k, v in header.items()}

    def _object_error(self, obj: dict[str, Any]) -> tuple[int, str] | None:
        error = obj.get("error")
        if error is None:
            return None
        if not isinstance(error, dict):
            return (0, "malformed error")
        code = error.get("code")
        if isinstance(code, bool) or not isinstance(code, int):
            code = 0
        return (code, str(error.get("message", ""))[:200])

    def missing(self, oids: Iterable[str]) -> list[str]:
        todo = list(dict.fromkeys(oids))
        out: list[str] = []
        for start in range(0, len(todo), BATCH):
            batch = todo[start : start + BATCH]
            # a download batch: it needs only read access; the size is not
            # known here (the server answers with it)
            for obj in self._batch("download", [(o, 0) for o in batch]):
                err = self._object_error(obj)
                if err is not None and err[0] == 404:
                    out.append(obj["oid"])
                elif err is not None:
                    raise RemoteError(self.url, f"object {obj['oid']}: {err[1]} ({err[0]})")
                elif self._action(obj, "download") is None:
                    out.append(obj["oid"])
        return out

    def download(self, oids: Sequence[str], dest: MediaStore, progress: Progress) -> None:
        os.makedirs(dest.tmp_dir, exist_ok=True)
        done = 0

        def one(item: tuple[str, int, str, dict[str, str]]) -> tuple[str, str]:
            oid, size, href, header = item
            return self._fetch_one(oid, size, href, header, dest), oid

        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            for start in range(0, len(oids), BATCH):
                batch = [o for o in oids[start : start + BATCH] if not dest.has(o)]
                work = []
                if batch:
                    for obj in self._batch("download", [(o, 0) for o in batch]):
                        err = self._object_error(obj)
                        action = self._action(obj, "download")
                        if err is not None or action is None:
                            why = err[1] if err else "no download action"
                            raise RemoteError(self.url, f"object {obj['oid']}: {why}")
                        size = obj.get("size")
                        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                            raise RemoteError(self.url, f"object {obj['oid']}: invalid size")
                        work.append((obj["oid"], size, *action))
                futures = [pool.submit(one, item) for item in work]
                temps: list[tuple[str, str]] = []
                failures: list[BaseException] = []
                for future in futures:  # wait for all: no temp file is left behind
                    try:
                        temps.append(future.result())
                    except BaseException as e:  # re-raised below, after the clean-up
                        failures.append(e)
                if failures:
                    for tmp, _ in temps:
                        with suppress(FileNotFoundError):  # gone already: fine
                            os.unlink(tmp)
                    raise failures[0]
                if temps:
                    dest.sync()
                    for tmp, oid in temps:
                        dest.publish(tmp, oid)
                done += len(oids[start : start + BATCH])
                progress("download", done, len(oids))
        if oids:
            dest.sync()

    def _fetch_one(
        self, oid: str, size: int, href: str, header: dict[str, str], dest: MediaStore
    ) -> str:
        """Stream one object into a temp file of ``dest``, hashing it; return the
        temp file's path. Bytes that do not hash to ``oid`` are never kept."""
        import httpx

        limit = min(size, self.max_object_size)
        digest = hashlib.sha256()
        tmp = fsutil.unique_tmp(dest.tmp_dir, "download-")
        try:
            headers = self.headers_for(href, header)
            with self._http.stream("GET", href, headers=headers) as response, open(tmp, "wb") as f:
                if response.status_code >= 300:
                    response.read()  # the error body, for the message (a streamed response)
                self._check(response, f"download of {oid}")
                got = 0
                for chunk in response.iter_bytes(1 << 20):
                    got += len(chunk)
                    if got > limit:
                        raise RemoteError(
                            self.url, f"object {oid}: more bytes than its size ({size})"
                        )
                    digest.update(chunk)
                    f.write(chunk)
            if digest.hexdigest() != oid:
                raise CorruptObject(oid, digest.hexdigest(), self.url)
        except httpx.HTTPError as e:
            with suppress(FileNotFoundError):  # never created, or gone
                os.unlink(tmp)
            raise RemoteError(self.url, f"download of {oid} failed ({e})") from None
        except BaseException:
            with suppress(FileNotFoundError):  # never created, or gone
                os.unlink(tmp)
            raise
        return tmp

    def upload(self, oids: Sequence[str], src: MediaStore, progress: Progress) -> None:
        import httpx

        done = 0

        def one(obj: dict[str, Any]) -> None:
            oid = obj["oid"]
            upload = self._action(obj, "upload")
            if upload is None:
                return  # the server has it
            data = src.read(oid)  # verified: a corrupt local object is never sent
            href, header = upload
            try:
                response = self._http.put(
                    href,
                    content=data,
                    headers=self.headers_for(
                        href, {"Content-Type": "application/octet-stream", **header}
                    ),
                )
                self._check(response, f"upload of {oid}")
                verify = self._action(obj, "verify")
                if verify is not None:
                    href, header = verify
                    response = self._http.post(
                        href,
                        json={"oid": oid, "size": len(data)},
                        headers=self.headers_for(
                            href,
                            {
                                "Accept": "application/vnd.git-lfs+json",
                                "Content-Type": "application/vnd.git-lfs+json",
                                **header,
                            },
                        ),
                    )
                    self._check(response, f"verify of {oid}")
            except httpx.HTTPError as e:
                raise RemoteError(self.url, f"upload of {oid} failed ({e})") from None

        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            for start in range(0, len(oids), BATCH):
                batch = list(oids[start : start + BATCH])
                if batch:
                    objects = self._batch("upload", [(o, src.size(o)) for o in batch])
                    for obj in objects:
                        err = self._object_error(obj)
                        if err is not None:
                            raise RemoteError(self.url, f"object {obj['oid']}: {err[1]} ({err[0]})")
                    list(pool.map(one, objects))
                done += len(batch)
                progress("upload", done, len(oids))

    def close(self) -> None:
        self._http.close()


def _origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL: where a credential may be sent."""
    parsed = urlparse(url)
    scheme = parsed.scheme.lower()
    try:
        port = parsed.port
    except ValueError:  # a malformed port: an origin of its own, matching nothing
        return (scheme, "?", -1)
    return (scheme, (parsed.hostname or "").lower(), port or (443 if scheme == "https" else 80))


def _carries(value: str, token: str) -> bool:
    """Whether a header value holds the token, as it is or as basic auth."""
    import base64
    import binascii

    if token in value:
        return True
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(rest.strip(), validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):  # not base64: it cannot hide the token
        return False
    return token in decoded


class _TranslatingClient:
    """A dulwich HTTP git client whose transport errors become :class:`RemoteError`."""

    def __init__(self, client: Any, url: str) -> None:
        self._client = client
        self._url = url

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        from dulwich.client import HTTPUnauthorized
        from dulwich.errors import GitProtocolError, HangupException, NotGitRepository

        try:
            return getattr(self._client, name)(*args, **kwargs)
        except HTTPUnauthorized:
            raise RemoteError(
                self._url,
                "authentication required: put a token in the URL, pixvcs.token or PIXVCS_TOKEN",
            ) from None
        except NotGitRepository:
            raise RemoteError(self._url, "no repository there") from None
        except (GitProtocolError, HangupException) as e:
            text = str(e)
            if "403" in text:
                text = "the token may not do this (a read token cannot push)"
            raise RemoteError(self._url, text) from None

    def get_refs(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("get_refs", *args, **kwargs)

    def fetch(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("fetch", *args, **kwargs)

    def send_pack(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("send_pack", *args, **kwargs)
