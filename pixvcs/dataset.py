"""Reading a pinned dataset version from training code: ``pixvcs.open()``.

A :class:`Dataset` is one commit's images, listed once when it is opened and
never re-resolved: the revision name is turned into a commit id (``.commit``)
and every later read is of that commit's bytes, whatever happens to the
branch or the work tree afterwards. Nothing is checked out; the git tree is
walked (names validated, :func:`pixvcs.trees.walk`), pointers are parsed
strictly (or, when the repository's index already knows a pointer blob, its
canonical text is checked against the blob id instead), and image bytes come
from the media store.

Verification (``verify=``, :data:`VERIFY_MODES`): bytes from outside the
repository (a remote's cache) are hashed on every read. Objects of the
repository's own media store are trusted while only the store can name them:
pixvcs publishes them read-only, verified, by rename, and ``fsck`` re-hashes
them all. An object that someone made writable, or that has another name (a
hardlink from ``add --link`` or an export), is hashed on every read. With
``verify="always"`` every read is hashed, and :func:`pixvcs.export.export`
always asks for that.

Where the bytes come from is a :class:`Source`: :class:`LocalSource` (a
repository on this machine) or :class:`pixvcs.cache.RemoteSource` (a
directory remote or ``pixvcs serve``: history mirrored into a cache, media
fetched lazily into a bounded store), behind the same small interface. The
dataset object itself holds no open handle: it pickles to a few paths plus
its records, and each process (a PyTorch DataLoader worker, a
``multiprocessing`` pool) reopens what it needs.
"""

from __future__ import annotations

import builtins
import csv
import hashlib
import io
import os
import sqlite3
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, overload

from . import trees
from .errors import (
    CorruptObject,
    LabelsFileError,
    MissingDependency,
    MissingMedia,
    MissingObject,
    UnsafeTreeEntry,
    UsageError,
)
from .imageinfo import has_image_extension
from .media import MediaStore
from .pointer import (
    Pointer,
    checked_pointers,
    is_oid,
    looks_like_pointer,
    parse_pointer,
    parsed_pointers,
)

if TYPE_CHECKING:
    from PIL import Image

    from .repo import Repo

T = TypeVar("T")

#: A tracked file of this name at the root of a version gives the labels.
LABELS_FILE = "labels.csv"
#: The ``where`` keys :func:`open` understands.
WHERE_KEYS = ("label", "min_width", "min_height", "max_width", "max_height", "added_since")
_SIZE_KEYS = ("min_width", "min_height", "max_width", "max_height")
#: Images read ahead of the consumer by :meth:`Dataset.iter_bytes`.
DEFAULT_PREFETCH = 16
#: What ``pixvcs.open(verify=...)`` accepts: ``"untrusted"`` (the default) hashes
#: what came from outside the repository and local objects that something other
#: than the store can write or name; ``"always"`` hashes every read.
VERIFY_MODES = ("untrusted", "always")
#: Write bits: a media object is published read-only, so one with any of them set
#: has been changed by something other than pixvcs.
_WRITABLE = 0o222


# -- the source interface ---------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SourceEntry:
    """One file of a version, as a source lists it."""

    path: str
    kind: str  # "media" (an LFS pointer) | "blob" (an ordinary git blob)
    blob: str  # git blob id (of the pointer, for media)
    oid: str | None  # SHA-256 of the media bytes; None for blobs
    size: int  # bytes of the media object, or of the blob


@dataclass(frozen=True, slots=True)
class ImageFacts:
    """What the catalog knows about one media object (derived data)."""

    width: int | None
    height: int | None
    format: str | None


class Source(Protocol):
    """Where a dataset's history and bytes come from.

    Everything here is keyed by commit id or oid, so a source can cache
    freely. Implementations must be picklable without open handles (reopen
    lazily, per process) and must verify media bytes against their oid unless
    they come from a store whose writers all verify (the repository's own
    media store, see the module docstring): :meth:`read` never returns bytes
    from an untrusted place that do not hash to ``oid``.
    """

    def describe(self) -> str:
        """A human name for messages (a path or URL)."""
        ...

    def resolve(self, rev: str) -> str:
        """The commit id a revision names now; raises BadRevision."""
        ...

    def list_entries(self, rev: str) -> list[SourceEntry]:
        """Every file of a version (names validated, pointers parsed strictly)."""
        ...

    def read_blob(self, blob_id: str) -> builtins.bytes:
        """An ordinary git blob (e.g. ``labels.csv``)."""
        ...

    def image_facts(self, oids: Sequence[str]) -> dict[str, ImageFacts]:
        """Known facts by oid; oids the source knows nothing about are left out."""
        ...

    def read(self, oid: str, *, verify: bool = False) -> builtins.bytes:
        """The object's bytes; raises MissingMedia or CorruptObject. Bytes the
        source does not trust are always hashed; ``verify`` hashes them all."""
        ...

    def read_many(
        self, oids: Sequence[str], *, prefetch: int = DEFAULT_PREFETCH, verify: bool = False
    ) -> Iterator[builtins.bytes]:
        """:meth:`read` of each oid, in order, reading up to ``prefetch`` ahead."""
        ...

    def object_path(self, oid: str) -> str | None:
        """A local read-only file holding the object, if there is one (for hardlinks)."""
        ...


class LocalSource:
    """A repository on this machine (work tree or bare).

    Reads need no work tree: history comes from the git directory, bytes from
    its media store. The git repository is opened lazily and again in each
    process; pickling keeps only paths. ``verify`` is one of
    :data:`VERIFY_MODES`.
    """

    def __init__(
        self, root: str, *, bare: bool, verify: str = "untrusted", hints: str | None = None
    ) -> None:
        """``hints``: a SQLite file this source may keep pointer hints in (blob id
        -> oid, size), read and written; a reader's cache mirror has one. Without
        it, listing never writes anything."""
        from .repo import GIT_DIR

        if verify not in VERIFY_MODES:
            raise UsageError(f"verify must be one of {', '.join(VERIFY_MODES)}, not {verify!r}")
        self.root = os.path.abspath(root)
        self.bare = bare
        self.verify = verify
        self.git_dir = self.root if bare else os.path.join(self.root, GIT_DIR)
        self.media = MediaStore(os.path.join(self.git_dir, "lfs"))
        self._objects = self.media.objects_dir
        self._hash_all = verify == "always"
        self._repo: Repo | None = None
        self._pid = -1
        self._pointers: dict[str, Pointer] = {}
        self.hints = hints

    @classmethod
    def open(cls, path: str | os.PathLike[str] | Repo, *, verify: str = "untrusted") -> LocalSource:
        from .repo import Repo

        repo = path if isinstance(path, Repo) else Repo.open(os.fspath(path), search_parents=False)
        source = cls(repo.root, bare=repo.bare, verify=verify)
        if repo is not path:
            source._repo, source._pid = repo, os.getpid()
        return source

    def _git(self) -> Repo:
        from .repo import Repo

        if self._repo is None or self._pid != os.getpid():
            # In a forked child the parent's handle is abandoned, not closed: its
            # file descriptors and maps are shared with the parent.
            self._repo = Repo(self.root, bare=self.bare)
            self._pid = os.getpid()
        return self._repo

    def close(self) -> None:
        if self._repo is not None and self._pid == os.getpid():
            self._repo.close()
        self._repo = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_repo"] = None  # never pickle dulwich / sqlite handles
        state["_pid"] = -1
        state["_pointers"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def describe(self) -> str:
        return self.root

    def resolve(self, rev: str) -> str:
        return self._git().resolve(rev)

    def list_entries(self, rev: str) -> list[SourceEntry]:
        return self.list_tree(self._git().tree_of(rev))

    def list_tree(self, tree: bytes | None) -> list[SourceEntry]:
        """Every file of a tree (as :meth:`list_entries` lists a version's)."""
        repo = self._git()
        store = repo.store
        get_raw = _raw_reader(store)
        known = self._pointers
        if not known:
            known.update(self._indexed_pointers())
            if self.hints:
                known.update(_load_hints(self.hints))
        learnt: dict[str, Pointer] = {}
        out = []
        for path, _mode, blob in trees.walk(store, tree):
            pointer = known.get(blob)
            if pointer is not None:
                out.append(SourceEntry(path, "media", blob, pointer.oid, pointer.size))
                continue
            try:
                type_num, data = get_raw(blob)
            except KeyError:
                raise MissingObject(
                    blob, f"the blob of {path!r} is not in the repository"
                ) from None
            if type_num != 3:  # a tree entry with a file mode must name a blob
                raise UnsafeTreeEntry(path, f"expected a blob, found object type {type_num}")
            if looks_like_pointer(data):
                pointer = known[blob] = learnt[blob] = parse_pointer(data)
                out.append(SourceEntry(path, "media", blob, pointer.oid, pointer.size))
            else:
                out.append(SourceEntry(path, "blob", blob, None, len(data)))
        if self.hints and learnt:
            _save_hints(self.hints, learnt)
        return out

    def _indexed_pointers(self) -> dict[str, Pointer]:
        """Pointer blobs the index already knows, so listing a version need not
        read and parse 20,000 pointers one object lookup at a time.

        The index is only a hint: a row counts when the SHA-1 of the canonical
        pointer text it implies (``blob N\\0`` + :func:`format_pointer`) is the
        blob id itself, which is exactly the check the object id makes of the
        stored blob. Opened read-only; any problem (no index in a bare
        repository, another schema, locked) means no hints."""
        path = os.path.join(self.git_dir, "pixvcs", "index.db")
        if not os.path.exists(path):
            return {}
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        except sqlite3.Error:  # unreadable index: only a hint, go without
            return {}
        try:
            rows = db.execute(
                "SELECT blob, oid, size FROM entries"
                " WHERE kind = 'media' AND blob IS NOT NULL AND oid IS NOT NULL"
            ).fetchall()
        except sqlite3.Error:  # another schema, locked, corrupt: only a hint
            return {}
        finally:
            db.close()
        return checked_pointers(rows)

    def read_blob(self, blob_id: str) -> builtins.bytes:
        return trees.blob_bytes(self._git().store, blob_id)

    def image_facts(self, oids: Sequence[str]) -> dict[str, ImageFacts]:
        """From the catalog, opened read-only (opening a dataset never writes).

        The catalog is derived data: if it is absent, of another version, or
        unreadable, nothing is known and dimensions are read from the images
        when a filter needs them.
        """
        from .catalog import CATALOG_VERSION

        path = os.path.join(self.git_dir, "pixvcs", "catalog.db")
        if not os.path.exists(path) or not oids:
            return {}
        out: dict[str, ImageFacts] = {}
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        except sqlite3.Error:  # unreadable catalog: derived data, treat as empty
            return {}
        try:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            if meta.get("catalog_version") != str(CATALOG_VERSION):
                return {}
            unique = set(oids)
            query = "SELECT oid, width, height, format FROM images"
            if len(unique) >= _SCAN_CATALOG:
                # many oids: one scan of the table beats thousands of index lookups
                for oid, width, height, fmt in db.execute(query):
                    if oid in unique:
                        out[oid] = ImageFacts(width, height, fmt)
                return out
            ordered = sorted(unique)
            for start in range(0, len(ordered), 500):
                chunk = ordered[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for oid, width, height, fmt in db.execute(f"{query} WHERE oid IN ({marks})", chunk):
                    out[oid] = ImageFacts(width, height, fmt)
        except sqlite3.Error:  # missing tables, locked, corrupt: derived data, treat as empty
            return {}
        finally:
            db.close()
        return out

    def read(self, oid: str, *, verify: bool = False) -> builtins.bytes:
        """The object's bytes: one ``open``, ``fstat`` and ``read``, hashed only
        when the mode asks for it or the object looks touched (see the module
        docstring); raises MissingMedia or CorruptObject."""
        fd = self._open(oid)
        if fd is None:
            raise MissingMedia([("", oid)], self.media.root)
        return self._read_open(oid, fd, verify)

    def _open(self, oid: str) -> int | None:
        """A descriptor of the object, None when it is not there."""
        if not is_oid(oid):  # never a path of our making: refuse before opening
            raise CorruptObject(oid, "(not an oid)", self.media.root)
        try:
            return os.open(f"{self._objects}/{oid[0:2]}/{oid[2:4]}/{oid}", _O_READ)
        except FileNotFoundError:
            return None

    def _read_open(self, oid: str, fd: int, verify: bool) -> builtins.bytes:
        """Read the object from ``fd`` (closed here) and hash it if it must be."""
        try:
            st = os.fstat(fd)
            data = _read_fd(fd, st.st_size)
        finally:
            os.close(fd)
        if verify or self._hash_all or st.st_mode & _WRITABLE or st.st_nlink != 1:
            got = hashlib.sha256(data).hexdigest()
            if got != oid:
                raise CorruptObject(oid, got, self.media.root)
        return data

    def read_many(
        self, oids: Sequence[str], *, prefetch: int = DEFAULT_PREFETCH, verify: bool = False
    ) -> Iterator[builtins.bytes]:
        """Reads in the caller's thread, with the kernel reading ahead: the next
        ``max(prefetch, 64)`` objects are opened and announced with
        ``posix_fadvise(WILLNEED)``, so a cold disk works on many files at once
        while no bytes are held here. (Threads reading ahead cost more than
        they save when the files are cached: measured in bench/read_bench.py.)
        Errors are raised in order, when the consumer reaches the object."""
        if prefetch <= 1:
            return (self.read(oid, verify=verify) for oid in oids)
        return self._read_ahead(oids, max(prefetch, _OPEN_AHEAD), verify)

    def _read_ahead(
        self, oids: Sequence[str], window: int, verify: bool
    ) -> Iterator[builtins.bytes]:
        opened: deque[tuple[str, int | None]] = deque()
        todo = iter(oids)

        def open_next() -> None:
            oid = next(todo, None)
            if oid is None:
                return
            try:
                fd = self._open(oid)
            except CorruptObject:
                fd = None  # not an oid: read() raises it when its turn comes
            if fd is not None and _FADVISE is not None:
                _FADVISE(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            opened.append((oid, fd))

        try:
            for _ in range(window):
                open_next()
            while opened:
                oid, fd = opened.popleft()
                open_next()
                yield (
                    self.read(oid, verify=verify)
                    if fd is None
                    else self._read_open(oid, fd, verify)
                )
        finally:
            for _, fd in opened:
                if fd is not None:
                    os.close(fd)

    def object_path(self, oid: str) -> str | None:
        return self.media.path(oid)


#: Above this many oids, :meth:`LocalSource.image_facts` scans the catalog table.
_SCAN_CATALOG = 2000
_O_READ = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
#: Objects :meth:`LocalSource.read_many` opens ahead of the consumer (descriptors, not bytes).
_OPEN_AHEAD = 64
_FADVISE: Callable[[int, int, int, int], None] | None = getattr(os, "posix_fadvise", None)


def _read_fd(fd: int, size: int) -> builtins.bytes:
    """``size`` bytes of an open regular file (one ``read`` unless it is huge)."""
    data = os.read(fd, size)
    if len(data) == size:
        return data
    parts = [data]  # a short read: files over 2 GiB, or the file shrank meanwhile
    got = len(data)
    while got < size:
        chunk = os.read(fd, size - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _load_hints(path: str) -> dict[str, Pointer]:
    """Pointer hints a reader's mirror kept (docs/format.md, "The reader's media
    cache"); any problem means none."""
    if not os.path.exists(path):
        return {}
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT blob, oid, size FROM pointers").fetchall()
        finally:
            db.close()
    except sqlite3.Error:  # unreadable, another schema, locked: go without
        return {}
    return checked_pointers(rows)


def save_fetched_pointers(path: str, blobs: Mapping[str, builtins.bytes]) -> None:
    """Keep as hints the pointer blobs a fetch's pack carried (blob id -> bytes,
    hashed while the pack was indexed): the first listing of a version then
    reads none of them from the mirror. A malformed one is left out (reading
    its blob refuses it, as before)."""
    parsed = parsed_pointers(blobs)
    if parsed:
        _save_hints(path, parsed)


def _save_hints(path: str, learnt: Mapping[str, Pointer]) -> None:
    """Keep pointers read from blobs for the next listing (best effort)."""
    try:
        db = sqlite3.connect(path, timeout=5.0)
        try:
            with db:
                db.execute(
                    "CREATE TABLE IF NOT EXISTS pointers"
                    " (blob TEXT PRIMARY KEY, oid TEXT NOT NULL, size INTEGER NOT NULL)"
                    " WITHOUT ROWID"
                )
                db.executemany(
                    "INSERT OR REPLACE INTO pointers (blob, oid, size) VALUES (?, ?, ?)",
                    [(b, p.oid, p.size) for b, p in learnt.items()],
                )
        finally:
            db.close()
    except sqlite3.Error:  # a hint not kept costs the next listing a read, nothing more
        pass


def _raw_reader(store: Any) -> Callable[[str], tuple[int, builtins.bytes]]:
    """``get_raw`` for many lookups in a row: packs first, searched directly
    (dulwich's ``get_raw`` checks for a multi-pack-index file on every call),
    then the store's own lookup (loose objects, packs that appeared meanwhile).
    Raises KeyError for an object that is nowhere."""
    from dulwich.pack import PackFileDisappeared

    try:
        packs = list(store.packs)
    except (AttributeError, NotImplementedError):  # a store without packs (memory)
        packs = []

    def get(blob: str) -> tuple[int, builtins.bytes]:
        sha = bytes.fromhex(blob)
        for pack in packs:
            try:
                result: tuple[int, builtins.bytes] = pack.get_raw(sha)
                return result
            except KeyError:  # not in this pack: try the next
                continue
            except PackFileDisappeared:  # repacked meanwhile: the store rescans
                break
        raw: tuple[int, builtins.bytes] = store.get_raw(blob.encode())
        return raw

    return get


def read_ahead(
    read_batch: Callable[[Sequence[str]], list[builtins.bytes]],
    oids: Sequence[str],
    prefetch: int,
    *,
    max_batch: int = 8,
) -> Iterator[builtins.bytes]:
    """The bytes of ``oids`` in order, ``read_batch`` running in a few threads
    ahead of the consumer. Work goes out in batches (a future per image costs
    as much as reading a cached one; a remote source fetches a batch in one
    request); at most about ``prefetch`` images are read and not yet consumed."""
    if prefetch <= 1:
        for oid in oids:
            yield from read_batch([oid])
        return
    batch = max(1, min(max_batch, prefetch // 2))
    batches = [oids[i : i + batch] for i in range(0, len(oids), batch)]
    workers = min(4, os.cpu_count() or 1, len(batches) or 1)
    pool = ThreadPoolExecutor(max_workers=workers)
    pending: deque[Future[list[builtins.bytes]]] = deque()
    ahead = max(1, prefetch // batch)
    todo = iter(batches)
    try:
        for chunk in todo:
            pending.append(pool.submit(read_batch, chunk))
            if len(pending) >= ahead:
                break
        while pending:
            done = pending.popleft().result()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(pool.submit(read_batch, nxt))
            yield from done
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=True)


# -- records and datasets --------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Record:
    """One image of a pinned version.

    ``label`` is the top-level folder (None for an image at the root), or the
    version's ``labels.csv`` entry when it has one. ``width`` and ``height``
    come from the catalog, or from the image header when a size filter had to
    read it; None when neither is known (``image().size`` then has them).
    """

    path: str
    label: str | None
    oid: str
    size: int
    width: int | None
    height: int | None
    _source: Source = field(repr=False, compare=False)

    def bytes(self) -> builtins.bytes:
        """The image's exact bytes (CorruptObject when they do not hash to
        ``oid``; which reads are hashed: ``pixvcs.open(verify=...)``)."""
        try:
            return self._source.read(self.oid)
        except MissingMedia as e:
            raise MissingMedia([(self.path, self.oid)], e.where) from None

    def image(self, exif_transpose: bool = False) -> Image.Image:
        """The decoded image (Pillow), fully loaded; with ``exif_transpose`` the
        EXIF orientation is applied, as a camera viewer would show it."""
        return _decode(self.bytes(), exif_transpose)


def _decode(data: builtins.bytes, exif_transpose: bool) -> Image.Image:
    from PIL import Image, ImageOps

    im: Image.Image = Image.open(io.BytesIO(data))
    im.load()
    if exif_transpose:
        im = ImageOps.exif_transpose(im)
    return im


class Dataset:
    """The images of one commit, in path order; a map-style dataset.

    ``len(ds)``, ``ds[i]`` (a :class:`Record`), ``ds[a:b]`` (a Dataset of
    those records), iteration. Picklable: DataLoader workers and process
    pools receive paths and records, and reopen the repository themselves.
    """

    def __init__(self, source: Source, commit: str, records: Sequence[Record]) -> None:
        self.source = source
        self.commit = commit
        self.records: tuple[Record, ...] = tuple(records)

    def __len__(self) -> int:
        return len(self.records)

    @overload
    def __getitem__(self, index: int) -> Record: ...

    @overload
    def __getitem__(self, index: slice) -> Dataset: ...

    def __getitem__(self, index: int | slice) -> Record | Dataset:
        if isinstance(index, slice):
            return Dataset(self.source, self.commit, self.records[index])
        return self.records[index]

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __repr__(self) -> str:
        return f"<pixvcs.Dataset {self.source.describe()} @ {self.commit[:12]}: {len(self)} images>"

    @property
    def classes(self) -> list[str]:
        """The distinct labels, sorted (unlabelled images have none)."""
        return sorted({r.label for r in self.records if r.label is not None})

    def iter_bytes(
        self, *, prefetch: int = DEFAULT_PREFETCH, verify: bool = False
    ) -> Iterator[tuple[Record, bytes]]:
        """``(record, bytes)`` in order, reading up to ``prefetch`` images ahead
        in background threads; memory stays bounded by the window. ``verify``
        hashes every object, as ``verify="always"`` would."""
        records = self.records
        data = self.source.read_many([r.oid for r in records], prefetch=prefetch, verify=verify)
        yield from zip(records, data, strict=True)

    def with_transform(self, fn: Callable[[Record], T]) -> TransformedDataset[T]:
        """A map-style dataset whose items are ``fn(record)`` (e.g. a tensor and a
        class index for PyTorch). ``fn`` must be picklable (a module-level
        function) when DataLoader workers are started with ``spawn``."""
        return TransformedDataset(self, fn)

    def to_hf(self) -> Any:
        """A Hugging Face ``datasets.Dataset`` with columns ``image`` (an Image
        feature holding the bytes), ``label``, ``path`` and ``oid``. Needs the
        ``datasets`` library; raises :class:`MissingDependency` without it."""
        try:
            import datasets  # type: ignore[import-not-found, unused-ignore]
        except ImportError:
            raise MissingDependency("datasets", "Dataset.to_hf()") from None
        features = datasets.Features(
            {
                "image": datasets.Image(),
                "label": datasets.Value("string"),
                "path": datasets.Value("string"),
                "oid": datasets.Value("string"),
            }
        )
        return datasets.Dataset.from_generator(
            _hf_rows, gen_kwargs={"dataset": self}, features=features
        )

    def close(self) -> None:
        close = getattr(self.source, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _hf_rows(dataset: Dataset) -> Iterator[dict[str, Any]]:
    for record, data in dataset.iter_bytes():
        yield {
            "image": {"bytes": data, "path": record.path},
            "label": record.label,
            "path": record.path,
            "oid": record.oid,
        }


class TransformedDataset(Generic[T]):
    """``Dataset.with_transform(fn)``: items are ``fn(record)``."""

    def __init__(self, dataset: Dataset, fn: Callable[[Record], T]) -> None:
        self.dataset = dataset
        self.fn = fn

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> T:
        return self.fn(self.dataset.records[index])

    def __iter__(self) -> Iterator[T]:
        return (self.fn(r) for r in self.dataset.records)


# -- opening ----------------------------------------------------------------------------
def open(
    path: str | os.PathLike[str] | Repo,
    rev: str = "HEAD",
    *,
    include: str | Iterable[str] | None = None,
    where: Mapping[str, Any] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    token: str | None = None,
    cache_size: int | None = None,
    verify: str = "untrusted",
) -> Dataset:
    """The images of ``rev`` in the repository at ``path``, pinned to its commit.

    ``include``: path globs (``fnmatch``, case-sensitive, ``*`` also matches
    ``/``); an image is kept if any matches. ``where``: filters, see
    :data:`WHERE_KEYS` and docs/python-api.md.

    ``path`` may also be a remote: ``file://`` or ``http(s)://`` URL (a
    directory remote or ``pixvcs serve``); its history is fetched into
    ``cache_dir`` (default: :func:`pixvcs.cache.default_cache_dir`) and media
    are fetched when read, into a store shared by the cache directory and
    bounded to ``cache_size`` bytes (default 10 GiB); ``token`` authenticates
    to HTTP remotes. A local repository needs none of these and ignores them
    (a bare repository path is read in place, not through the cache).

    ``verify`` (:data:`VERIFY_MODES`): ``"untrusted"`` hashes every object read
    through a remote's cache, and objects of a local store that something
    besides pixvcs could have changed (writable, or hardlinked); ``"always"``
    hashes every read.
    """
    if verify not in VERIFY_MODES:
        raise UsageError(f"verify must be one of {', '.join(VERIFY_MODES)}, not {verify!r}")
    filters = _Filters.parse(where)
    globs = [include] if isinstance(include, str) else list(include or [])
    source: Source
    if isinstance(path, str) and "://" in path:
        from .cache import DEFAULT_CACHE_SIZE, RemoteSource

        if cache_size is not None and (isinstance(cache_size, bool) or cache_size < 0):
            raise UsageError(f"cache_size must be a number of bytes, not {cache_size!r}")
        source = RemoteSource.open(
            path,
            rev,
            cache_dir=cache_dir,
            cache_size=DEFAULT_CACHE_SIZE if cache_size is None else cache_size,
            token=token,
        )
    else:
        source = LocalSource.open(path, verify=verify)
    try:
        return select(source, rev, include=globs, filters=filters)
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()  # the dataset holds no handle; reads reopen lazily


def select(source: Source, rev: str, *, include: Sequence[str], filters: _Filters) -> Dataset:
    """List ``rev`` once through ``source`` and keep the images that pass."""
    commit = source.resolve(rev)
    records = select_entries(source, source.list_entries(commit), include, filters)
    return Dataset(source, commit, records)


def select_entries(
    source: Source, entries: list[SourceEntry], include: Sequence[str], filters: _Filters
) -> list[Record]:
    """The records of the images among ``entries`` (a version's files) that pass
    ``include`` and ``filters``, sorted by path (also how sparse work trees choose)."""
    media = [e for e in entries if e.kind == "media" and e.oid is not None]
    facts = source.image_facts([e.oid for e in media if e.oid is not None])

    def is_image(e: SourceEntry) -> bool:
        known = facts.get(e.oid or "")
        return has_image_extension(e.path) or (known is not None and known.format is not None)

    images = [e for e in media if is_image(e)]
    if include:
        images = [e for e in images if any(fnmatchcase(e.path, g) for g in include)]
    labels = _labels_of(source, entries)
    label_of: Callable[[str], str | None] = labels.get if labels is not None else _folder_label
    if filters.labels is not None:
        wanted = filters.labels
        images = [e for e in images if label_of(e.path) in wanted]
    if filters.added_since is not None:
        since = source.resolve(filters.added_since)
        old = {(e.path, e.oid) for e in source.list_entries(since) if e.kind == "media"}
        images = [e for e in images if (e.path, e.oid) not in old]
    dims: dict[str, tuple[int | None, int | None]] = {
        oid: (f.width, f.height) for oid, f in facts.items() if f.width is not None
    }
    if filters.needs_size:
        unknown = sorted({e.oid for e in images if e.oid not in dims and e.oid is not None})
        for oid, data in zip(unknown, source.read_many(unknown), strict=True):
            dims[oid] = _header_size(data)
        images = [e for e in images if filters.size_ok(dims.get(e.oid or ""))]
    records = []
    for e in images:
        oid = e.oid or ""
        width, height = dims.get(oid, (None, None))
        records.append(Record(e.path, label_of(e.path), oid, e.size, width, height, source))
    records.sort(key=lambda r: r.path)
    return records


def _folder_label(path: str) -> str | None:
    head, sep, _ = path.partition("/")
    return head if sep else None


def _header_size(data: builtins.bytes) -> tuple[int | None, int | None]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        # an image stored with --allow-invalid: no size, so no size filter passes it
        return (None, None)


# -- labels.csv ---------------------------------------------------------------------------
def _labels_of(source: Source, entries: Sequence[SourceEntry]) -> dict[str, str | None] | None:
    found = next((e for e in entries if e.path == LABELS_FILE), None)
    if found is None:
        return None
    if found.kind != "blob":
        raise LabelsFileError(LABELS_FILE, "is stored as media, not as a text file")
    return parse_labels(source.read_blob(found.blob))


def parse_labels(data: builtins.bytes) -> dict[str, str | None]:
    """``labels.csv``: UTF-8 CSV with a header naming (at least) ``path`` and
    ``label``; one row per image, its version path exactly; an empty label
    means unlabelled. A path listed twice with different labels is an error."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise LabelsFileError(LABELS_FILE, f"not UTF-8 ({e.reason})") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        fields = reader.fieldnames or []
        if "path" not in fields or "label" not in fields:
            raise LabelsFileError(
                LABELS_FILE, f"the header must name 'path' and 'label' columns, found {fields}"
            )
        out: dict[str, str | None] = {}
        for row in reader:
            where = f"{LABELS_FILE}, line {reader.line_num}"
            path, label = row.get("path"), row.get("label")
            if path is None or label is None:
                raise LabelsFileError(where, "missing the path or label field")
            if not path:
                raise LabelsFileError(where, "empty path")
            value = label or None
            if path in out and out[path] != value:
                raise LabelsFileError(where, f"{path!r} is labelled twice, differently")
            out[path] = value
    except csv.Error as e:
        raise LabelsFileError(LABELS_FILE, f"not valid CSV: {e}") from None
    return out


# -- where --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Filters:
    labels: frozenset[str] | None = None
    min_width: int | None = None
    min_height: int | None = None
    max_width: int | None = None
    max_height: int | None = None
    added_since: str | None = None

    @classmethod
    def parse(cls, where: Mapping[str, Any] | None) -> _Filters:
        if not where:
            return cls()
        unknown = sorted(set(where) - set(WHERE_KEYS))
        if unknown:
            raise UsageError(
                f"unknown 'where' key(s) {', '.join(unknown)}; known: {', '.join(WHERE_KEYS)}"
            )
        values: dict[str, Any] = {}
        label = where.get("label")
        if label is not None:
            items = [label] if isinstance(label, str) else list(label)
            if not items or not all(isinstance(x, str) for x in items):
                raise UsageError("where['label'] must be a string or a list of strings")
            values["labels"] = frozenset(items)
        for key in _SIZE_KEYS:
            v = where.get(key)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise UsageError(f"where[{key!r}] must be a non-negative integer, not {v!r}")
            values[key] = v
        since = where.get("added_since")
        if since is not None:
            if not isinstance(since, str) or not since:
                raise UsageError("where['added_since'] must be a revision name")
            values["added_since"] = since
        return cls(**values)

    @property
    def needs_size(self) -> bool:
        return any(getattr(self, k) is not None for k in _SIZE_KEYS)

    def size_ok(self, dims: tuple[int | None, int | None] | None) -> bool:
        w, h = dims if dims is not None else (None, None)
        if w is None or h is None:
            return False
        return (
            (self.min_width is None or w >= self.min_width)
            and (self.min_height is None or h >= self.min_height)
            and (self.max_width is None or w <= self.max_width)
            and (self.max_height is None or h <= self.max_height)
        )


def parse_where(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings (the CLI's ``--where``) as a ``where`` mapping.

    ``label`` may repeat (any of them matches); size bounds are integers.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UsageError(f"--where expects KEY=VALUE, got {item!r}")
        if key not in WHERE_KEYS:
            raise UsageError(f"unknown --where key {key!r}; known: {', '.join(WHERE_KEYS)}")
        if key == "label":
            out.setdefault("label", []).append(value)
        elif key in _SIZE_KEYS:
            try:
                out[key] = int(value)
            except ValueError:
                raise UsageError(f"--where {key} expects an integer, got {value!r}") from None
        else:
            out[key] = value
    _Filters.parse(out)  # validate now, with the same messages as the API
    return out
