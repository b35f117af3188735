"""HTTP(S) remotes: history through dulwich's smart-HTTP client, media through
the git-lfs Batch API with httpx (see :mod:`pixvcs.remote` for the endpoint
interface and where credentials come from).

Transfers: ``pixvcs-multi`` (:mod:`pixvcs.multi`: many objects per request)
when the server picks it, else git-lfs's ``basic`` (one request per object),
which every LFS server speaks.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, suppress
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import unquote, urlparse, urlunparse

from . import fsutil, multi
from .errors import CorruptObject, RemoteError, UsageError
from .media import MediaStore
from .remote import BATCH, Progress, Received, redact

if TYPE_CHECKING:
    import httpx

BATCHES_IN_FLIGHT = 3  # batches whose transfers overlap
#: Objects per batch (download or upload) once the server has answered with
#: pixvcs-multi: a pixvcs server takes up to 1000 (others get git-lfs's 100, BATCH).
MULTI_BATCH = 1000


def _sized(oids: Sequence[str], sizes: Mapping[str, int] | None) -> list[tuple[str, int]]:
    """(oid, size) for a batch request: the pointer's size, 0 when not known."""
    return [(o, (sizes or {}).get(o, 0)) for o in oids]


#: Objects from which a download into a store on disk runs in forked worker processes.
PROCESS_THRESHOLD = 2000
#: The endpoint a forked download worker works for (set only while the pool forks).
_FORKED: HttpEndpoint | None = None
_FORKED_IN_CHILD: HttpEndpoint | None = None
_FORK_LOCK = threading.Lock()


def _fork_worth_it(n: int) -> bool:
    import multiprocessing

    return (
        n >= PROCESS_THRESHOLD
        and (os.cpu_count() or 1) > 1
        and "fork" in multiprocessing.get_all_start_methods()
    )


def _forked_start() -> None:
    """Worker initializer: its own HTTP client (the parent's pooled sockets are
    the parent's: never used, never closed here)."""
    global _FORKED_IN_CHILD
    fsutil.worker_init()
    endpoint = _FORKED
    assert endpoint is not None, "a download worker forked outside _download_in_processes"
    endpoint._http = endpoint._new_client()
    _FORKED_IN_CHILD = endpoint


def _forked_download(batch: list[str], dest_root: str, sizes: Mapping[str, int] | None) -> None:
    """One batch, in a worker: verified temp files, then published."""
    endpoint = _FORKED_IN_CHILD
    assert endpoint is not None
    dest = MediaStore(dest_root)
    with ThreadPoolExecutor(max_workers=endpoint.workers) as pool:
        temps = endpoint._download_batch(batch, dest, sizes, pool)
    multi.publish(dest, temps, sync_names=False)


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
        lfs_url: str | None = None,
        transfers: Sequence[str] = (multi.NAME, "basic"),
    ) -> None:

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
        if lfs_url is not None:
            lfs = urlparse(lfs_url)
            if lfs.scheme not in ("http", "https") or not lfs.hostname:
                raise UsageError(f"not an HTTP LFS URL: {redact(lfs_url)}")
            if lfs.password is not None:
                raise UsageError(
                    f"put the token in the remote's URL, not the LFS URL: {redact(lfs_url)}"
                )
            self.lfs_url = urlunparse(lfs._replace(query="", fragment="")).rstrip("/")
        else:
            base = self.url if self.url.endswith(".git") else self.url + ".git"
            self.lfs_url = base + "/info/lfs"
        self.workers = workers
        self.transfers = tuple(transfers)
        self.max_object_size = max_object_size
        # where the token may go: the remote's origin, and the LFS server the user configured
        self._origins = {_origin(self.url), _origin(self.lfs_url)}
        # no default Authorization: the token is added per request, to this origin only
        self._timeout, self._transport = timeout, transport
        self._http = self._new_client()
        # the pixvcs-multi download (href, header) a batch answer gave, reusable
        # without asking again (docs/format.md, "The pixvcs-multi transfer")
        self._multi_download: tuple[str, dict[str, str]] | None = None
        # a batch answer chose pixvcs-multi: a pixvcs server, which takes MULTI_BATCH
        self._speaks_multi = False

    def _new_client(self) -> httpx.Client:
        import httpx

        return httpx.Client(
            headers={"User-Agent": "pixvcs"},
            timeout=self._timeout,
            transport=self._transport,
            follow_redirects=False,
        )

    def headers_for(self, href: str, header: dict[str, str]) -> dict[str, str]:
        """The headers of a request to ``href`` (an action's ``header`` given):
        on this server's origin, the action's headers and the token (unless the
        action carries its own Authorization); anywhere else (a presigned S3
        URL), only the action's headers, and never one that carries the token."""
        if _origin(href) in self._origins:
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
    def _batch(
        self, operation: str, objects: list[tuple[str, int]]
    ) -> tuple[str, list[dict[str, Any]]]:
        """One Batch API call: (the transfer the server picked, its objects)."""
        import httpx

        body = {
            "operation": operation,
            "transfers": list(self.transfers),
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
        transfer = data.get("transfer", "basic")
        if transfer not in self.transfers:
            raise RemoteError(self.url, f"unsupported transfer {str(transfer)[:80]!r}")
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
        if transfer == multi.NAME:
            self._speaks_multi = True
            if operation == "download":
                self._learn_multi(out)
        return str(transfer), out

    def _learn_multi(self, objects: list[dict[str, Any]]) -> None:
        """Keep the pixvcs-multi download href of a batch answer for later
        downloads: the first object's, unless it expires or is on another origin."""
        for obj in objects:
            actions = obj.get("actions")
            action = actions.get("download") if isinstance(actions, dict) else None
            if not isinstance(action, dict):
                continue  # an object the server lacks: look at the next one
            found = self._action(obj, "download")
            if (
                found is not None
                and "expires_in" not in action
                and "expires_at" not in action
                and _origin(found[0]) in self._origins
            ):
                self._multi_download = found
            return

    def _check(self, response: httpx.Response, what: str) -> None:
        if response.status_code < 300:
            return
        try:
            message = str(response.json().get("message", ""))[:300]
        except (ValueError, AttributeError):  # not JSON: the status says enough
            message = ""
        code = response.status_code
        url = str(response.request.url)
        if _origin(url) not in self._origins:
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

    def missing(self, oids: Iterable[str], *, sizes: Mapping[str, int] | None = None) -> list[str]:
        """The oids the server lacks: a ``download`` batch (it needs only read
        access) with each object's size (from its pointer; 0 when not known)."""
        todo = list(dict.fromkeys(oids))
        out: list[str] = []
        for start in range(0, len(todo), BATCH):
            batch = todo[start : start + BATCH]
            _transfer, objects = self._batch("download", _sized(batch, sizes))
            for obj in objects:
                err = self._object_error(obj)
                if err is not None and err[0] == 404:
                    out.append(obj["oid"])
                elif err is not None:
                    raise RemoteError(self.url, f"object {obj['oid']}: {err[1]} ({err[0]})")
                elif self._action(obj, "download") is None:
                    out.append(obj["oid"])
        return out

    def download(
        self,
        oids: Sequence[str],
        dest: MediaStore,
        progress: Progress,
        *,
        sizes: Mapping[str, int] | None = None,
        received: Received | None = None,
    ) -> None:
        """Download ``oids`` into ``dest``: batches of :data:`BATCH`, a few in
        flight; each batch's verified temp files are made durable with one sync
        and renamed into place; one last sync makes all the renames durable.
        ``received`` gets the verified bytes of the objects a pixvcs-multi
        answer carried in memory (from a worker thread, before they are stored)."""
        os.makedirs(dest.tmp_dir, exist_ok=True)
        todo = dest.absent(oids)
        if self._multi_download is None and len(todo) > BATCH and multi.NAME in self.transfers:
            # one object's batch answer says whether the server speaks pixvcs-multi
            self._batch("download", _sized(todo[:1], sizes))
        size = MULTI_BATCH if self._multi_download is not None else BATCH
        batches = [todo[start : start + size] for start in range(0, len(todo), size)]
        if received is None and type(dest) is MediaStore and _fork_worth_it(len(todo)):
            self._download_in_processes(batches, dest, sizes, progress, len(todo))
            return
        done = 0
        with (
            ThreadPoolExecutor(max_workers=self.workers) as pool,
            ThreadPoolExecutor(max_workers=BATCHES_IN_FLIGHT) as batches_pool,
        ):
            futures = [
                batches_pool.submit(self._download_batch, b, dest, sizes, pool, received)
                for b in batches
            ]
            try:
                for future, batch in zip(futures, batches, strict=True):
                    multi.publish(dest, future.result(), sync_names=False)
                    done += len(batch)
                    progress("download", done, len(todo))
                if done:
                    dest.sync()  # every batch's renames, once, before the caller goes on
            except BaseException:
                for future in futures:
                    future.cancel()
                for future in futures:  # the batches still running leave no temp file
                    with suppress(BaseException):  # reported: the first failure above
                        multi.discard(future.result())
                raise

    def _download_in_processes(
        self,
        batches: list[list[str]],
        dest: MediaStore,
        sizes: Mapping[str, int] | None,
        progress: Progress,
        total: int,
    ) -> None:
        """:meth:`download` in forked worker processes (a large download into
        a store on disk): receiving, hashing and writing 20,000 small objects
        is mostly per-object interpreter work, which threads do one at a time.
        Each worker has its own HTTP client and publishes its own batches; one
        last sync here makes every rename durable."""
        global _FORKED
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        jobs = min(BATCHES_IN_FLIGHT, (os.cpu_count() or 1) + 1)
        done = 0
        with _FORK_LOCK:  # the workers fork at the first submit, copying _FORKED
            _FORKED = self
            try:
                pool = ProcessPoolExecutor(
                    max_workers=jobs, mp_context=get_context("fork"), initializer=_forked_start
                )
                with pool:
                    futures = [
                        pool.submit(
                            _forked_download,
                            batch,
                            dest.root,
                            {o: sizes[o] for o in batch} if sizes else None,
                        )
                        for batch in batches
                    ]
                    try:
                        for future, batch in zip(futures, batches, strict=True):
                            future.result()
                            done += len(batch)
                            progress("download", done, total)
                    except BaseException:
                        for future in futures:  # a batch either publishes or leaves no temp file
                            future.cancel()
                        raise
            finally:
                _FORKED = None
        dest.sync()  # every batch's renames, once, before the caller goes on

    def _download_batch(
        self,
        batch: list[str],
        dest: MediaStore,
        sizes: Mapping[str, int] | None,
        pool: ThreadPoolExecutor,
        received: Received | None = None,
    ) -> list[tuple[str, str]]:
        """Verified temp files (not yet durable) of one batch."""
        if not batch:
            return []
        if self._multi_download is not None:  # no Batch API call: its answer is known
            href, header = self._multi_download
            work = [(oid, 0, href, header) for oid in batch]
            return self._download_multi(work, dest, known=sizes or {}, received=received)
        transfer, objects = self._batch("download", _sized(batch, sizes))
        work = []
        for obj in objects:
            err = self._object_error(obj)
            action = self._action(obj, "download")
            if err is not None or action is None:
                why = err[1] if err else "no download action"
                raise RemoteError(self.url, f"object {obj['oid']}: {why}")
            size = obj.get("size")
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise RemoteError(self.url, f"object {obj['oid']}: invalid size")
            # the size we know (from the pointer) wins over the one the server echoes
            known = sizes.get(obj["oid"]) if sizes else None
            work.append((obj["oid"], known if known is not None else size, *action))
        if transfer == multi.NAME:
            return self._download_multi(work, dest, known=sizes or {}, received=received)

        def one(item: tuple[str, int, str, dict[str, str]]) -> tuple[str, str]:
            oid, size, href, header = item
            return self._fetch_one(oid, size, href, header, dest), oid

        return multi.gather([pool.submit(one, item) for item in work])

    def _download_multi(
        self,
        work: list[tuple[str, int, str, dict[str, str]]],
        dest: MediaStore,
        *,
        known: Mapping[str, int],
        received: Received | None = None,
    ) -> list[tuple[str, str]]:
        """One pixvcs-multi request for a batch's objects (one href for all)."""
        import httpx

        href, header = work[0][2], work[0][3]
        if any((h, hd) != (href, header) for _o, _s, h, hd in work):
            raise RemoteError(self.url, "a pixvcs-multi batch answer has more than one href")
        oids = [oid for oid, *_ in work]
        try:
            with self._http.stream(
                "POST",
                href,
                json={"oids": oids},
                headers=self.headers_for(href, {"Accept": multi.CONTENT_TYPE, **header}),
            ) as response:
                if response.status_code >= 300:
                    response.read()  # the error body, for the message (a streamed response)
                self._check(response, "download")
                chunks = response.iter_bytes()
                return multi.receive(
                    lambda _n: next(chunks, b""),
                    dest,
                    max_size=self.max_object_size,
                    max_records=len(oids),
                    wanted={oid: known.get(oid) for oid in oids},
                    received=received,
                )
        except multi.StreamError as e:
            if e.oid:
                raise CorruptObject(e.oid, e.got, self.url) from None
            raise RemoteError(self.url, f"download: {e.message}") from None
        except httpx.HTTPError as e:
            raise RemoteError(self.url, f"download failed ({e})") from None

    def _fetch_one(
        self, oid: str, size: int, href: str, header: dict[str, str], dest: MediaStore
    ) -> str:
        """Stream one object into a temp file of ``dest``, hashing it; return the
        temp file's path. Bytes that do not hash to ``oid`` are never kept."""
        import httpx

        # 0: not known (the hash decides; a server may echo the 0 it was sent)
        limit = min(size or self.max_object_size, self.max_object_size)
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

    def upload(self, oids: Sequence[str], src: MediaStore, progress: Progress) -> int:
        """Make sure the server holds ``oids``; returns how many were sent. The
        upload batch's answer says which objects the server lacks (those with
        an ``upload`` action), so no separate ``missing`` call is needed."""
        done = sent = 0
        if not self._speaks_multi and len(oids) > BATCH and multi.NAME in self.transfers:
            # the first batch's answer says whether the server takes batches of MULTI_BATCH
            first, oids = list(oids[:BATCH]), oids[BATCH:]
            with ThreadPoolExecutor(max_workers=self.workers) as pool:
                sent += self._upload_batch(first, src, pool)
            done += len(first)
            progress("upload", done, done + len(oids))
        size = MULTI_BATCH if self._speaks_multi else BATCH
        batches = [list(oids[start : start + size]) for start in range(0, len(oids), size)]
        total = done + len(oids)
        with (
            ThreadPoolExecutor(max_workers=self.workers) as pool,
            ThreadPoolExecutor(max_workers=BATCHES_IN_FLIGHT) as batches_pool,
        ):
            futures = [batches_pool.submit(self._upload_batch, b, src, pool) for b in batches]
            try:
                for future, batch in zip(futures, batches, strict=True):
                    sent += future.result()
                    done += len(batch)
                    progress("upload", done, total)
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        return sent

    def _upload_batch(self, batch: list[str], src: MediaStore, pool: ThreadPoolExecutor) -> int:
        import httpx

        if not batch:
            return 0
        transfer, objects = self._batch("upload", [(o, src.size(o)) for o in batch])
        todo: list[tuple[str, str, dict[str, str], dict[str, Any]]] = []
        for obj in objects:
            err = self._object_error(obj)
            if err is not None:
                raise RemoteError(self.url, f"object {obj['oid']}: {err[1]} ({err[0]})")
            action = self._action(obj, "upload")
            if action is not None:  # else the server has it
                todo.append((obj["oid"], *action, obj))
        if not todo:
            return 0
        if transfer == multi.NAME:
            href, header = todo[0][1], todo[0][2]
            if any((h, hd) != (href, header) for _o, h, hd, _obj in todo):
                raise RemoteError(self.url, "a pixvcs-multi batch answer has more than one href")
            try:
                response = multi.upload(
                    self._http, href, self.headers_for(href, header), [t[0] for t in todo], src
                )
            except httpx.HTTPError as e:
                raise RemoteError(self.url, f"upload failed ({e})") from None
            self._check(response, "upload")
            return len(todo)

        def one(item: tuple[str, str, dict[str, str], dict[str, Any]]) -> None:
            oid, href, header, obj = item
            data = src.read(oid)  # verified: a corrupt local object is never sent
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
                if verify is not None:  # S3 behind pixvcs serve, other LFS servers
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

        list(pool.map(one, todo))
        return len(todo)

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
        #: Pointer blobs of the packs :meth:`fetch` indexed (blob id -> bytes).
        self.pointers: dict[str, bytes] = {}

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

    def fetch(self, path: str, target: Any, determine_wants: Any = None, **kwargs: Any) -> Any:
        """dulwich's ``fetch``, the pack it receives indexed in one pass by
        :mod:`pixvcs.packingest` (dulwich indexes it when it holds a delta);
        the pointer blobs that pass are left in :attr:`pointers` (blob id ->
        bytes) for the caller."""
        from .packingest import MalformedPack, add_pack_stream

        store = target.object_store
        if getattr(store, "pack_dir", None) is None or kwargs:
            return self._call("fetch", path, target, determine_wants=determine_wants, **kwargs)
        results: list[Any] = []

        def receive(f: BinaryIO) -> None:
            result = self._call(
                "fetch_pack",
                path,
                determine_wants or store.determine_wants_all,
                target.get_graph_walker(),
                f.write,
            )
            fmt = getattr(result, "object_format", None)
            if fmt not in (None, "sha1"):
                raise RemoteError(self._url, f"a {fmt} repository (pixvcs reads sha1 ones)")
            results.append(result)

        try:
            pointers = add_pack_stream(
                store, "tmp-fetch-", receive, lambda read: store.add_thin_pack(read, None)
            )
        except MalformedPack as e:
            raise RemoteError(self._url, f"a malformed pack: {e}") from None
        self.pointers.update(pointers)
        return results[0]

    def send_pack(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("send_pack", *args, **kwargs)
