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

import errno
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlparse, urlunparse

from . import fsutil, multi
from .errors import BadPath, CorruptObject, UsageError
from .errors import RemoteError as RemoteError  # re-exported: callers import it from here
from .media import MediaStore
from .pointer import is_oid

if TYPE_CHECKING:
    from .repo import Repo
    from .s3media import S3Media

Progress = Callable[[str, int, int], None]
#: Called by a download with an object's verified bytes when it holds them in
#: memory anyway (an optional shortcut: the object is also stored in ``dest``).
Received = Callable[[str, bytes], None]
BATCH = 100  # objects per batch: one sync per batch on the receiving side


class Endpoint(Protocol):
    """How pixvcs talks to one remote (see the module docstring)."""

    url: str

    def lock(self) -> AbstractContextManager[None]: ...

    def git_client(self) -> tuple[Any, str]: ...

    def missing(
        self, oids: Iterable[str], *, sizes: Mapping[str, int] | None = None
    ) -> list[str]: ...

    def download(
        self,
        oids: Sequence[str],
        dest: MediaStore,
        progress: Progress,
        *,
        sizes: Mapping[str, int] | None = None,
        received: Received | None = None,
    ) -> None: ...

    def upload(self, oids: Sequence[str], src: MediaStore, progress: Progress) -> int: ...


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

    def __init__(self, path: str, *, link: bool = False) -> None:
        """``link``: downloads hard-link objects when both stores are on one
        filesystem (for a repository's own store, see format.md, "Remotes";
        never for uploads: the remote never shares an inode with a work store)."""
        from .s3media import store_for

        if os.path.isdir(os.path.join(path, ".pixvcs")):
            path = os.path.join(path, ".pixvcs")
        if not os.path.isfile(os.path.join(path, "HEAD")):
            raise BadPath(path, "is not a pixvcs or git repository")
        self.git_dir = path
        self.url = path
        self.media = MediaStore(os.path.join(path, "lfs"))
        self.s3: S3Media | None = store_for(path)
        self.link = link

    def lock(self) -> AbstractContextManager[None]:
        """The remote repository's own lock, held while its refs change: pixvcs
        processes pushing to one directory take turns, and the loser of a race
        sees the moved ref and is told to fetch first."""
        state = os.path.join(self.git_dir, "pixvcs")
        os.makedirs(state, exist_ok=True)
        return fsutil.repo_lock(os.path.join(state, "lock"))

    def git_client(self) -> tuple[Any, str]:
        return _local_git_client(), self.git_dir

    def missing(self, oids: Iterable[str], *, sizes: Mapping[str, int] | None = None) -> list[str]:
        if self.s3 is not None:
            return self.s3.missing(oids)
        return [o for o in oids if not self.media.has(o)]

    def download(
        self,
        oids: Sequence[str],
        dest: MediaStore,
        progress: Progress,
        *,
        sizes: Mapping[str, int] | None = None,
        received: Received | None = None,
    ) -> None:
        if self.s3 is not None:
            self.s3.download(oids, dest, progress)
            return
        _copy_verified(self.media, dest, oids, progress, "download", link=self.link)

    def upload(self, oids: Sequence[str], src: MediaStore, progress: Progress) -> int:
        """Make sure the remote holds ``oids``; returns how many were sent."""
        if self.s3 is not None:
            todo = self.s3.missing(oids)
            self.s3.upload(todo, src, progress)
            return len(todo)
        os.makedirs(self.media.tmp_dir, exist_ok=True)
        return _copy_verified(src, self.media, oids, progress, "upload")


#: Objects from which a copy between two stores on disk runs in worker processes
#: (below it, threads: a fork costs more than it saves).
PROCESS_THRESHOLD = 2000


def _copy_verified(
    src: MediaStore,
    dest: MediaStore,
    oids: Sequence[str],
    progress: Progress,
    stage: str,
    *,
    link: bool = False,
    jobs: int | None = None,
) -> int:
    """Copy the objects ``dest`` lacks; returns how many. Each is read and
    verified against its oid first. With ``link``, on one filesystem, it is
    then hard-linked (an object is read-only and never modified, as ``git
    clone --local`` links objects; see format.md, "Remotes"); else written to a temp file,
    made durable with one sync per :data:`BATCH` and renamed into place. The
    workers run ahead while a batch syncs; one last sync covers the links and
    the renames.
    Between two plain stores on disk, from :data:`PROCESS_THRESHOLD` objects
    on, the workers are forked processes (reading, hashing and writing 20,000
    small objects is mostly per-object interpreter work, which threads do one
    at a time). Each worker publishes its own batches."""
    todo = dest.absent(oids)
    if not todo:
        progress(stage, len(oids), len(oids))
        return 0
    os.makedirs(dest.objects_dir, exist_ok=True)
    link = link and _same_filesystem(src.objects_dir, dest.objects_dir)
    batches = [todo[i : i + BATCH] for i in range(0, len(todo), BATCH)]
    jobs = jobs or os.cpu_count() or 1
    plain = type(src) is MediaStore and type(dest) is MediaStore  # not a cache's packs
    if plain and jobs > 1 and len(todo) >= PROCESS_THRESHOLD and _can_fork():
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        pool: Any = ProcessPoolExecutor(
            max_workers=jobs, mp_context=get_context("fork"), initializer=fsutil.worker_init
        )
        submit = partial(pool.submit, _copy_batch, src.root, dest.root)
    else:
        pool = ThreadPoolExecutor(max_workers=4)
        submit = partial(pool.submit, _copy_into, src, dest)
    done = 0
    with pool:
        futures = [submit(batch, link) for batch in batches]
        try:
            for future, batch in zip(futures, batches, strict=True):
                future.result()
                done += len(batch)
                progress(stage, len(oids) - len(todo) + done, len(oids))
        except BaseException:
            for future in futures:  # a batch either publishes or leaves no temp file
                future.cancel()
            raise
    dest.sync()  # the links, and every batch's renames, once
    return len(todo)


def _local_git_client() -> Any:
    """dulwich's client for a repository on disk, whose pushed pack is indexed
    by :func:`add_pack_data` (one pass) instead of dulwich's (which writes the
    pack, reads it back and resolves every object: 0.8 s of a 20k push)."""
    from contextlib import closing

    from dulwich.client import LocalGitClient
    from dulwich.repo import Repo as GitRepo

    from .packs import guard_bitmaps

    class Client(LocalGitClient):
        @classmethod
        def _open_repo(cls, path: str | bytes) -> Any:
            repo = GitRepo(os.fsdecode(path))
            store: Any = repo.object_store
            guard_bitmaps(store)
            store.add_pack_data = partial(add_pack_data, store, store.add_pack_data)
            return closing(repo)

    return Client()


def add_pack_data(
    store: Any,
    dulwich_add: Callable[..., Any],
    count: int,
    unpacked_objects: Iterable[Any],
    progress: Callable[..., None] | None = None,
) -> None:
    """``store.add_pack_data`` for a pushed pack: the pack is written to a temp
    file of the pack directory and added by :func:`pixvcs.packingest.add_pack_stream`
    (checked and indexed in one pass, fsynced, published ``.pack`` before
    ``.idx``; a pack with a delta goes to dulwich's indexer). A store that is
    not a plain SHA-1 store on disk keeps dulwich's way."""
    from dulwich.pack import write_pack_data

    from .packingest import add_pack_stream

    if count == 0 or getattr(store, "pack_dir", None) is None or store.object_format.name != "sha1":
        dulwich_add(count, iter(unpacked_objects), progress)
        return
    add_pack_stream(
        store,
        "tmp-push-",
        lambda f: write_pack_data(
            f.write, iter(unpacked_objects), store.object_format, num_records=count
        ),
        lambda read: store.add_thin_pack(read, None),
    )


def _can_fork() -> bool:
    import multiprocessing

    return "fork" in multiprocessing.get_all_start_methods()


def _copy_batch(src_root: str, dest_root: str, oids: Sequence[str], link: bool) -> None:
    """Worker-process entry point of :func:`_copy_verified`."""
    _copy_into(MediaStore(src_root), MediaStore(dest_root), oids, link)


def _copy_into(src: MediaStore, dest: MediaStore, oids: Sequence[str], link: bool) -> None:
    """Verify and copy (or link) ``oids``, then publish the batch: one sync for
    its temp files, then their renames (synced by the caller, once for all).
    On an error, the batch's temp files are removed before it is raised."""
    temps: list[tuple[str, str]] = []
    try:
        for oid in oids:
            if not is_oid(oid):
                raise CorruptObject(oid, "(not an oid)", src.root)
            if link:
                got = src.verify(oid)  # reads the bytes, writes none
                if got != oid:
                    raise CorruptObject(oid, got, src.root)
                try:
                    dest.link_from(src.path(oid), oid)
                    continue
                except OSError as e:
                    if e.errno not in _NO_LINK:
                        raise
                    link = False  # not here (another filesystem, not our file, ...): copy
            data = src.read(oid)  # verified
            temps.append((dest.write_temp(data, oid), oid))
    except BaseException:
        multi.discard(temps)
        raise
    multi.publish(dest, temps, sync_names=False)  # removes them if the sync fails


_NO_LINK = {errno.EXDEV, errno.EPERM, errno.EACCES, errno.EMLINK, errno.ENOTSUP, errno.ENOSYS}


def _same_filesystem(a: str, b: str) -> bool:
    try:
        return os.stat(a).st_dev == os.stat(b).st_dev
    except FileNotFoundError:  # no objects there yet: nothing to link from
        return False


def endpoint_token(repo: Repo) -> str | None:
    """The token for HTTP remotes whose URL has none: the repository's config
    (``pixvcs.token``), else the one its opener gave (``Repo.token``: the
    command line sets it from ``PIXVCS_TOKEN``; nothing here reads the environment)."""
    try:
        value: bytes = repo.git.get_config().get((b"pixvcs",), b"token")
    except KeyError:
        return repo.token
    return value.decode().strip() or repo.token


def lfs_url_for(repo: Repo, name: str) -> str | None:
    """A separately configured LFS endpoint, as git-lfs finds one: ``lfs.url``,
    then ``remote.NAME.lfsurl`` (None: derived from the remote's URL)."""
    config = repo.git.get_config()
    for section, key in (((b"lfs",), b"url"), ((b"remote", name.encode()), b"lfsurl")):
        try:
            value = config.get(section, key).decode().strip()
        except KeyError:  # not set: the next place, or derived
            continue
        if value:
            return value
    return None


def open_endpoint(
    url: str,
    base: str,
    *,
    token: str | None = None,
    lfs_url: str | None = None,
    link: bool = False,
) -> Endpoint:
    """The endpoint for a remote URL: a directory, or HTTP(S). ``token`` is used
    for HTTP when the URL carries none; ``lfs_url`` is the LFS server when it is
    not ``URL.git/info/lfs``; ``link``: a directory's downloads may hard-link
    (for a repository's own media store only)."""
    if url.startswith(("http://", "https://")):
        return HttpEndpoint(url, token=token, lfs_url=lfs_url)
    path = local_path(url, base)
    if path is None:
        raise UsageError(
            f"unsupported remote URL {url!r}: use a directory, file://, http:// or https://"
        )
    if not os.path.isdir(path):
        raise BadPath(url, "no such directory")
    return DirectoryEndpoint(path, link=link)


def redact(url: str) -> str:
    """The URL without its password (for messages)."""
    parsed = urlparse(url)
    if parsed.password is None:
        return url
    netloc = f"{parsed.username}:***@{parsed.hostname}" + (f":{parsed.port}" if parsed.port else "")
    return urlunparse(parsed._replace(netloc=netloc))


# at the end: httpremote imports this module's names (BATCH, Progress, redact)
from .httpremote import HttpEndpoint as HttpEndpoint  # noqa: E402
