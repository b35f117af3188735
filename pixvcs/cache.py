"""Reading a version of a *remote* repository: a local cache and a :class:`RemoteSource`.

Layout under the cache directory (see :func:`default_cache_dir`)::

    <cache_dir>/repos/<sha256 of the URL>/   a bare mirror of the remote's history
    <cache_dir>/repos/<sha256 of the URL>.lock
    <cache_dir>/media/index.sqlite           where each cached media object is
    <cache_dir>/media/packs/<name>           media objects, appended (pixvcs.packcache)
    <cache_dir>/media/tmp/                   large downloads in progress

History is fetched (git objects only) into the mirror each time a remote is
opened, and the version is listed from it by the same code as a local
repository (:class:`pixvcs.dataset.LocalSource`). Media objects are fetched
only when read, in batches, through the endpoint's ``download`` (which
verifies every object against its oid), into a store shared by every dataset
of the cache directory. The store is bounded: it records when each pack was
last read, and when it outgrows its bound the least recently used packs are
removed.

Several processes may read at once: each appends to packs of its own, the
index is one SQLite database (WAL), eviction removes a pack's index rows
before it unlinks the file, and a reader that loses a race (the object's pack
went) simply fetches the object again. Nothing here holds a handle across
pickling.
"""

from __future__ import annotations

import builtins
import hashlib
import os
import shutil
import threading
from collections import Counter, deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from . import fsutil
from .errors import CorruptObject, MissingMedia, RemoteError
from .packcache import PACK_LIMIT, PackStore, writer_alive
from .pointer import is_oid

if TYPE_CHECKING:
    from .dataset import ImageFacts, SourceEntry
    from .remote import Endpoint, Received

#: Default bound of the shared media store, in bytes.
DEFAULT_CACHE_SIZE = 10 << 30
#: Fetches of one object a read tries when other processes keep evicting it.
_ATTEMPTS = 8
#: Objects per download when reading ahead: the first download of a read is
#: small (the first item comes soon), the next ones large (a pixvcs server
#: sends each in one request; other servers get batches of 100).
FETCH_FIRST = 100
FETCH_BATCH = 1000
#: Downloads ahead of the consumer. They run one at a time, in one thread:
#: two transfers at once cost more CPU in interpreter-lock hand-offs than they
#: overlap (measured in bench/read_bench.py), and the consumer works meanwhile.
FETCH_DEPTH = 1
#: Bytes of one read-ahead download kept in memory for the consumer (verified
#: once, on arrival); the rest of it is read back from the cache (and hashed).
HANDOFF_BYTES = 32 << 20


def default_cache_dir(environ: Mapping[str, str] | None = None) -> str:
    """The cache directory used when ``pixvcs.open`` is given none:
    ``$PIXVCS_CACHE_DIR``, else ``$XDG_CACHE_HOME/pixvcs``, else
    ``~/.cache/pixvcs``. Pass ``environ`` (a mapping) to resolve it from
    something other than ``os.environ``."""
    env = os.environ if environ is None else environ
    if env.get("PIXVCS_CACHE_DIR"):
        return os.path.abspath(env["PIXVCS_CACHE_DIR"])
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(os.path.abspath(base), "pixvcs")


class MediaCache:
    """The bounded media store of a cache directory (one per process and directory).

    Objects live in pack files (:class:`pixvcs.packcache.PackStore`). ``size``
    is the bound in bytes. Each process keeps an estimate of the store's total
    (the index's sum, plus what it downloaded since) and looks again when the
    estimate exceeds the bound or after downloading a sixteenth of it (so it
    notices what other processes added); over the bound, it removes the least
    recently used packs down to 90% of the bound. Never removed: a pack holding
    an object this process is reading right now, and a pack some live process
    is still appending to. Packs are at most a sixteenth of the bound (and
    :data:`pixvcs.packcache.PACK_LIMIT`), so the bound stays fine-grained.
    """

    def __init__(self, root: str, size: int = DEFAULT_CACHE_SIZE) -> None:
        legacy = os.path.join(root, "objects")
        if os.path.isdir(legacy):  # one file per object (pixvcs before packs): derived data
            shutil.rmtree(legacy, ignore_errors=True)
        self.store = PackStore.create(root, pack_limit=min(PACK_LIMIT, max(1, size // 16)))
        self.size = size
        self._lock = threading.Lock()
        self._scanned: int | None = None  # total at the last look
        self._added = 0  # bytes this process added since
        self._busy: Counter[str] = Counter()
        self.fetched = 0  # objects this process fetched into the store (for tests, stats)

    @property
    def root(self) -> str:
        return self.store.root

    def read(self, oid: str) -> builtins.bytes:
        """Verified bytes, marking the object's pack used; FileNotFoundError or CorruptObject."""
        return self.store.read(oid)

    def discard(self, oid: str) -> None:
        self.store.remove(oid)

    def hold(self, oids: Sequence[str]) -> None:
        with self._lock:
            self._busy.update(oids)

    def release(self, oids: Sequence[str]) -> None:
        with self._lock:
            self._busy.subtract(oids)
            self._busy += Counter()  # drop counts that reached zero

    def added(self, objects: int, nbytes: int) -> None:
        with self._lock:
            self.fetched += objects
            self._added += nbytes

    def total(self) -> int:
        """Bytes of every pack (records, headers and forgotten records included)."""
        return self.store.total()

    def maybe_evict(self) -> int:
        """Enforce the bound if this process's estimate says so; returns how
        many packs were removed."""
        with self._lock:
            due = (
                self._scanned is None
                or self._scanned + self._added > self.size
                or self._added > self.size // 16
            )
            if not due:
                return 0
            self.store.record_use()
            total = self.store.total()
            removed = 0
            if total > self.size:
                target = self.size * 9 // 10
                busy = self.store.packs_of(self._busy) | self.store.unindexed()
                for name, nbytes, _used, writer in self.store.packs():
                    if total <= target:
                        break
                    if name in busy or writer_alive(writer):
                        continue
                    self.store.drop_pack(name)
                    removed += 1
                    total -= nbytes
            self._scanned, self._added = total, 0
            return removed


_caches: dict[tuple[int, str, int], MediaCache] = {}
_caches_lock = threading.Lock()


def _after_fork() -> None:
    """A forked child starts afresh: a lock held by a parent thread at the fork
    would never be released in the child."""
    global _caches_lock
    _caches_lock = threading.Lock()
    _caches.clear()


os.register_at_fork(after_in_child=_after_fork)


def media_cache(root: str, size: int) -> MediaCache:
    """The process's :class:`MediaCache` for ``root`` (shared by its datasets)."""
    key = (os.getpid(), os.path.abspath(root), size)
    with _caches_lock:
        cache = _caches.get(key)
        if cache is None:
            cache = _caches[key] = MediaCache(root, size)
        return cache


def cache_info(cache_dir: str | None = None) -> dict[str, Any]:
    """What a cache directory holds (``pixvcs cache info``): its media (packs,
    objects, bytes) and its history mirrors (count, bytes)."""
    root = os.path.abspath(cache_dir) if cache_dir else default_cache_dir()
    media = os.path.join(root, "media")
    info: dict[str, Any] = {
        "dir": root,
        "media": {"packs": 0, "objects": 0, "bytes": 0},
        "mirrors": {"count": 0, "bytes": 0},
    }
    if os.path.isfile(os.path.join(media, "index.sqlite")):
        store = PackStore(media)
        try:
            info["media"] = {
                "packs": len(store.packs()),
                "objects": sum(1 for _ in store),
                "bytes": store.total(),
            }
        finally:
            store.close()
    repos = os.path.join(root, "repos")
    with suppress(FileNotFoundError):
        mirrors = [e for e in os.scandir(repos) if e.is_dir(follow_symlinks=False)]
        info["mirrors"] = {"count": len(mirrors), "bytes": sum(_tree_bytes(m.path) for m in mirrors)}
    return info


def clear_cache(cache_dir: str | None = None, *, mirrors: bool = True) -> dict[str, Any]:
    """Delete a cache directory's media (and, with ``mirrors``, its history
    mirrors): what ``pixvcs cache clear`` does. Only while nothing reads from
    it: a reader of a cleared cache fetches again, but one midway through a
    read may fail. Returns what was deleted (as :func:`cache_info` counts it)."""
    before = cache_info(cache_dir)
    root = before["dir"]
    shutil.rmtree(os.path.join(root, "media"), ignore_errors=True)
    if mirrors:
        shutil.rmtree(os.path.join(root, "repos"), ignore_errors=True)
    return {
        "dir": root,
        "media": before["media"],
        "mirrors": before["mirrors"] if mirrors else {"count": 0, "bytes": 0},
    }


def _tree_bytes(path: str) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with suppress(OSError):  # gone meanwhile
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _url_key(url: str) -> str:
    from .remote import redact

    return hashlib.sha256(redact(url).encode()).hexdigest()


class RemoteSource:
    """A remote repository (a directory remote or ``pixvcs serve``), read
    through a cache directory; implements :class:`pixvcs.dataset.Source`.

    Pickles to its URL, token and paths; each process reopens the mirror and
    the endpoint lazily.
    """

    def __init__(
        self, url: str, *, cache_dir: str, cache_size: int, token: str | None = None
    ) -> None:
        from .dataset import LocalSource

        # a local path is made absolute: a worker process may run elsewhere
        self.url = url if "://" in url else os.path.abspath(url)
        self.token = token
        self.cache_dir = os.path.abspath(cache_dir)
        self.cache_size = cache_size
        self.mirror_dir = os.path.join(self.cache_dir, "repos", _url_key(url))
        self.local = LocalSource(
            self.mirror_dir, bare=True, hints=os.path.join(self.mirror_dir, "pixvcs-pointers.db")
        )
        self._endpoint: Endpoint | None = None
        self._pid = -1
        self._lock = threading.Lock()

    @classmethod
    def open(
        cls,
        url: str,
        rev: str,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
        token: str | None = None,
    ) -> RemoteSource:
        """The source for ``url``, its history fetched into the mirror (skipped
        when ``rev`` is a full commit id the mirror already has)."""
        root = os.fspath(cache_dir) if cache_dir is not None else default_cache_dir()
        source = cls(url, cache_dir=root, cache_size=cache_size, token=token)
        source.sync(rev)
        return source

    # -- history ------------------------------------------------------------------------
    def sync(self, rev: str | None = None) -> None:
        """Fetch the remote's history into the mirror and mirror its refs."""
        from dulwich.refs import Ref

        from .dataset import save_fetched_pointers
        from .repo import Repo

        endpoint = self._get_endpoint()  # a bad URL fails before anything is written
        os.makedirs(os.path.dirname(self.mirror_dir), exist_ok=True)
        with fsutil.repo_lock(self.mirror_dir + ".lock", timeout=300.0):
            if not os.path.isdir(os.path.join(self.mirror_dir, "objects")):
                Repo.init(self.mirror_dir, bare=True).close()
            elif rev is not None and _is_full_id(rev) and self._has_commit(rev):
                return  # a pinned commit we hold: nothing can change it
            client, path = endpoint.git_client()
            with Repo(self.mirror_dir, bare=True) as repo:
                git = repo.git
                try:
                    fetched = client.fetch(path, git)
                except OSError as e:  # a vanished directory remote
                    raise RemoteError(self._describe(), f"cannot fetch ({e})") from None
                pointers = getattr(client, "pointers", None)
                if pointers and self.local.hints:
                    save_fetched_pointers(self.local.hints, pointers)
                remote = {
                    name: sha
                    for name, sha in (fetched.refs or {}).items()
                    if sha is not None
                    and name.startswith((b"refs/heads/", b"refs/tags/"))
                    and not name.endswith(b"^{}")
                }
                for name in list(git.refs.keys()):
                    if name.startswith((b"refs/heads/", b"refs/tags/")) and name not in remote:
                        git.refs.remove_if_equals(name, None)
                for name, sha in remote.items():
                    git.refs[Ref(name)] = sha
                head = (fetched.symrefs or {}).get(Ref(b"HEAD"))
                if head is not None and head in remote:
                    git.refs.set_symbolic_ref(Ref(b"HEAD"), head)
        self.local.close()

    def _has_commit(self, rev: str) -> bool:
        try:
            return self.local.resolve(rev) == rev.lower()
        except Exception:  # noqa: BLE001 - anything unreadable means: fetch
            return False
        finally:
            self.local.close()

    # -- the Source interface -----------------------------------------------------------
    def describe(self) -> str:
        return self._describe()

    def _describe(self) -> str:
        from .remote import redact

        return redact(self.url)

    def resolve(self, rev: str) -> str:
        return self.local.resolve(rev)

    def list_entries(self, rev: str) -> list[SourceEntry]:
        return self.local.list_entries(rev)

    def read_blob(self, blob_id: str) -> builtins.bytes:
        return self.local.read_blob(blob_id)

    def image_facts(self, oids: Sequence[str]) -> dict[str, ImageFacts]:
        return {}  # the remote's catalog is not fetched: dimensions come from headers

    def object_path(self, oid: str) -> str | None:
        return None  # cached objects may be evicted at any time: never link them

    def read(self, oid: str, *, verify: bool = False) -> builtins.bytes:
        # a cache is outside the repository: every read is hashed, ``verify`` or not
        return self._read_batch([oid])[0]

    def read_many(
        self, oids: Sequence[str], *, prefetch: int = 16, verify: bool = False
    ) -> Iterator[builtins.bytes]:
        """Every read hashed (``verify`` changes nothing here). Objects are
        fetched ahead of the consumer into the cache, :data:`FETCH_FIRST`, then
        :data:`FETCH_BATCH` per download, :data:`FETCH_DEPTH` downloads ahead
        (in a background thread; held against eviction until read); each
        object comes to the consumer as the download verified it in memory, or
        is read back from the cache and hashed. ``prefetch`` does not bound
        the objects fetched ahead; with ``prefetch`` 1 or less each object is
        fetched when it is read."""
        if prefetch <= 1:
            return (self.read(oid) for oid in oids)
        return self._read_ahead(oids)

    def _read_ahead(self, oids: Sequence[str]) -> Iterator[builtins.bytes]:
        cache = self._cache()
        chunks = [oids[:FETCH_FIRST]] if oids else []
        chunks += [oids[i : i + FETCH_BATCH] for i in range(FETCH_FIRST, len(oids), FETCH_BATCH)]
        todo = iter(chunks)
        pending: deque[tuple[Sequence[str], dict[str, builtins.bytes], Future[None]]] = deque()
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pixvcs-fetch")

        def submit() -> None:
            chunk = next(todo, None)
            if chunk is not None:
                cache.hold(chunk)  # released once read (or abandoned)
                handed: dict[str, builtins.bytes] = {}
                future = pool.submit(self._fetch_missing, cache, chunk, handed)
                pending.append((chunk, handed, future))

        try:
            for _ in range(FETCH_DEPTH):
                submit()
            while pending:
                chunk, handed, future = pending.popleft()
                try:
                    try:
                        future.result()
                    except (MissingMedia, RemoteError, CorruptObject):
                        # one object of the batch failed it: read the batch one by
                        # one, so what precedes it is returned and the error names it
                        handed.clear()
                    submit()
                    for oid in chunk:
                        data = handed.get(oid)
                        # verified on arrival, by this process, moments ago
                        yield data if data is not None else self._read_one(cache, oid)
                    handed.clear()
                finally:
                    cache.release(chunk)
                cache.maybe_evict()
        finally:
            for _, _, future in pending:
                future.cancel()
            pool.shutdown(wait=True)
            for chunk, _, _ in pending:
                cache.release(chunk)

    def _fetch_missing(
        self,
        cache: MediaCache,
        oids: Sequence[str],
        handed: dict[str, builtins.bytes] | None = None,
    ) -> None:
        """Fetch what the cache lacks; with ``handed``, keep the verified bytes
        the download had in memory there too (up to :data:`HANDOFF_BYTES`)."""
        budget = HANDOFF_BYTES

        def received(oid: str, data: builtins.bytes) -> None:
            nonlocal budget
            if handed is not None and len(data) <= budget:
                handed[oid] = data
                budget -= len(data)

        self._fetch(cache.store.absent(dict.fromkeys(oids)), received)

    def close(self) -> None:
        """Release the mirror and the endpoint (both reopen lazily on the next read)."""
        self.local.close()
        if self._pid == os.getpid() and self._endpoint is not None:
            with self._lock:
                endpoint, self._endpoint = self._endpoint, None
            close = getattr(endpoint, "close", None)
            if close is not None:
                close()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_endpoint"] = None  # an httpx client is neither picklable nor fork-safe
        state["_pid"] = -1
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- media --------------------------------------------------------------------------
    def _get_endpoint(self) -> Endpoint:
        from .remote import open_endpoint

        if self._pid != os.getpid():
            # a new process (pickled, or forked: the parent's lock and client may
            # be in any state here): start afresh, never touch the parent's
            self._lock = threading.Lock()
            self._endpoint = None
            self._pid = os.getpid()
        with self._lock:
            if self._endpoint is None:
                self._endpoint = open_endpoint(self.url, os.getcwd(), token=self.token)
            return self._endpoint

    def _cache(self) -> MediaCache:
        return media_cache(os.path.join(self.cache_dir, "media"), self.cache_size)

    def _read_batch(self, oids: Sequence[str]) -> list[builtins.bytes]:
        """Fetch the batch's missing objects in one download, then read each."""
        cache = self._cache()
        cache.hold(oids)
        try:
            self._fetch(cache.store.absent(dict.fromkeys(oids)))
            out = [self._read_one(cache, oid) for oid in oids]
        finally:
            cache.release(oids)
        cache.maybe_evict()
        return out

    def _read_one(self, cache: MediaCache, oid: str) -> builtins.bytes:
        refetched_corrupt = False
        for _ in range(_ATTEMPTS):
            try:
                return cache.read(oid)
            except FileNotFoundError:
                pass  # never fetched, or evicted by another process: fetch (again)
            except CorruptObject:
                if refetched_corrupt:
                    raise  # fetched afresh, verified, and corrupt again: the disk
                refetched_corrupt = True
                cache.discard(oid)
            self._fetch([oid])
        raise MissingMedia([("", oid)], f"{cache.root} (evicted as fast as it was fetched)")

    def _fetch(self, oids: Sequence[str], received: Received | None = None) -> None:
        if not oids:
            return
        for oid in oids:
            if not is_oid(oid):
                raise CorruptObject(oid, "(not an oid)", self._describe())
        endpoint = self._get_endpoint()
        cache = self._cache()
        try:
            endpoint.download(oids, cache.store, _no_progress, received=received)
        except (FileNotFoundError, RemoteError):
            gone = endpoint.missing(oids)
            if gone:
                raise MissingMedia([("", o) for o in gone], self._describe()) from None
            raise
        cache.added(len(oids), cache.store.bytes_of(oids))


def _no_progress(stage: str, done: int, total: int) -> None:
    pass


def _is_full_id(rev: str) -> bool:
    return len(rev) == 40 and all(c in "0123456789abcdefABCDEF" for c in rev)
