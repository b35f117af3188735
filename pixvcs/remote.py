"""Remotes: where a repository's history and media are shared.

A remote is configured as git configures one (``[remote "NAME"] url = ...``,
``fetch = +refs/heads/*:refs/remotes/NAME/*``), so stock git sees it too. An
*endpoint* is how pixvcs talks to one: history through a dulwich git client
(the same interface for every transport), media through three calls —
``missing``, ``download``, ``upload`` — that move objects in batches and verify
every one against its oid before it is stored, on either side.

Endpoints here: a directory (a local path or ``file://`` URL to a bare
repository, e.g. on a shared disk). ``http(s)://`` comes with ``pixvcs serve``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from . import fsutil
from .errors import BadPath, CorruptObject, UsageError
from .media import MediaStore
from .pointer import is_oid

if TYPE_CHECKING:
    from .repo import Repo

Progress = Callable[[str, int, int], None]
BATCH = 100  # objects per batch: one sync per batch on the receiving side


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
    """A bare (or non-bare) pixvcs repository on a reachable filesystem."""

    def __init__(self, path: str) -> None:
        if os.path.isdir(os.path.join(path, ".pixvcs")):
            path = os.path.join(path, ".pixvcs")
        if not os.path.isfile(os.path.join(path, "HEAD")):
            raise BadPath(path, "is not a pixvcs or git repository")
        self.git_dir = path
        self.url = path
        self.media = MediaStore(os.path.join(path, "lfs"))

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
        return [o for o in oids if not self.media.has(o)]

    def download(self, oids: Sequence[str], dest: MediaStore, progress: Progress) -> None:
        _copy_verified(self.media, dest, oids, progress, "download")

    def upload(self, oids: Sequence[str], src: MediaStore, progress: Progress) -> None:
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
        return dest.write_temp(data), oid

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


def open_endpoint(url: str, base: str) -> DirectoryEndpoint:
    path = local_path(url, base)
    if path is None:
        raise UsageError(f"unsupported remote URL {url!r}: only directories and file:// so far")
    if not os.path.isdir(path):
        raise BadPath(url, "no such directory")
    return DirectoryEndpoint(path)
