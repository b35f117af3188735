"""Turning working-tree files into stored objects, in parallel.

Each file is read once: hashed (SHA-256 for media, git blob id for the rest),
decoded once if it is an image (validation + perceptual hash), and written to
the media store. Workers write a whole batch of temporary files, make them
durable with one filesystem sync, then rename them into place.
"""

from __future__ import annotations

import hashlib
import os
import stat as stat_mod
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any, TypeVar

from . import fsutil
from .fsutil import worker_init
from .imageinfo import (
    MAX_PIXELS,
    ImageInfo,
    InvalidImage,
    has_image_extension,
    inspect_image,
    sniff,
)
from .media import MediaStore
from .pointer import MAX_POINTER_SIZE, format_pointer, looks_like_pointer

BATCH = 64
T = TypeVar("T")
R = TypeVar("R")
PARALLEL_THRESHOLD = 48


@dataclass(slots=True)
class Ingested:
    path: str  # repository-relative, "/"-separated
    kind: str  # "media" | "blob"
    mode: int  # git file mode
    size: int
    blob: str  # git blob id (of the pointer, for media)
    oid: str | None  # SHA-256 for media
    mtime_ns: int
    ino: int
    info: ImageInfo | None = None
    error: str | None = None  # why the image is invalid
    data: bytes | None = None  # content of a regular file, to store as a git blob
    tmp: str | None = None  # temporary file with the new media object, to publish


def git_blob_id(data: bytes) -> str:
    h = hashlib.sha1(b"blob %d\x00" % len(data))
    h.update(data)
    return h.hexdigest()


def git_mode(st_mode: int) -> int:
    return 0o100755 if st_mode & stat_mod.S_IXUSR else 0o100644


def classify(path: str, data: bytes) -> str:
    """How a file is stored: ``"image"`` (by content or extension: validated, media),
    ``"media"`` (not an image, but its text starts like an LFS pointer, so as an
    ordinary blob it would be read back as one: stored as media instead, which
    is what git-lfs's clean filter would do too) or ``"blob"``."""
    if sniff(data[:32]) is not None or has_image_extension(path):
        return "image"
    if looks_like_pointer(data[: MAX_POINTER_SIZE + 1]):
        return "media"
    return "blob"


def ingest_one(
    store: MediaStore, rel: str, abspath: str, *, link: bool, max_pixels: int
) -> Ingested:
    st = os.lstat(abspath)
    with open(abspath, "rb") as f:
        data = f.read()
    mode = git_mode(st.st_mode)
    kind = classify(rel, data)
    if kind == "blob":
        return Ingested(
            rel,
            "blob",
            mode,
            len(data),
            git_blob_id(data),
            None,
            st.st_mtime_ns,
            st.st_ino,
            data=data,
        )
    oid = hashlib.sha256(data).hexdigest()
    info: ImageInfo | None = None
    error: str | None = None
    if kind == "image":
        try:
            info = inspect_image(data, max_pixels=max_pixels)
        except InvalidImage as e:
            error = str(e)
    # invalid images are stored too: add decides whether to stage them, and an
    # unstaged object is only an unreferenced file that gc removes
    tmp = None
    if not store.has(oid):
        tmp = _link_into_store(store, abspath, data, oid) if link else store.write_temp(data, oid)
    blob = git_blob_id(format_pointer(oid, len(data)))
    return Ingested(
        rel,
        "media",
        mode,
        len(data),
        blob,
        oid,
        st.st_mtime_ns,
        st.st_ino,
        info=info,
        error=error,
        tmp=tmp,
    )


def _link_into_store(store: MediaStore, abspath: str, data: bytes, oid: str) -> str:
    tmp = fsutil.unique_tmp(store.tmp_dir, "link-")
    try:
        os.link(abspath, tmp)
    except OSError:  # cross-device or no hardlinks here: fall back to a copy
        return store.write_temp(data, oid)
    return tmp


def ingest_batch(
    lfs_dir: str, items: Sequence[tuple[str, str]], link: bool, max_pixels: int
) -> list[Ingested | tuple[str, str]]:
    """Worker entry point: ingest ``(rel, abspath)`` items; errors come back as
    ``(rel, message)`` for files that vanished or cannot be read. New media
    objects are left in temporary files (``Ingested.tmp``): :func:`publish`
    makes them all durable with one sync and renames them into place."""
    store = MediaStore(lfs_dir)
    out: list[Ingested | tuple[str, str]] = []
    for rel, abspath in items:
        try:
            out.append(ingest_one(store, rel, abspath, link=link, max_pixels=max_pixels))
        except OSError as e:  # unreadable or vanished: reported per file by add
            out.append((rel, f"cannot read: {e.strerror or e}"))
    return out


def publish(store: MediaStore, items: Sequence[Ingested]) -> None:
    """Make every new object's temporary file durable (one sync for all: the
    workers never wait on the disk), then rename each into place read-only."""
    temps = [(i.tmp, i.oid) for i in items if i.tmp is not None and i.oid is not None]
    if not temps:
        return
    store.sync()
    for tmp, oid in temps:
        store.publish(tmp, oid)


def discard(items: Sequence[Ingested]) -> None:
    """Remove the temporary files of objects that will not be published."""
    for i in items:
        if i.tmp is not None:
            try:
                os.unlink(i.tmp)
            except FileNotFoundError:  # already gone
                pass


def ingest_files(
    lfs_dir: str,
    items: Sequence[tuple[str, str]],
    *,
    link: bool = False,
    max_pixels: int = MAX_PIXELS,
    jobs: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Ingested | tuple[str, str]]:
    """Ingest many files, over the machine's cores when there are enough of them."""
    if len(items) >= PARALLEL_THRESHOLD:
        import imagehash  # noqa: F401 - loaded once here, inherited by the forked workers
        from PIL import Image

        Image.init()
    return map_batches(
        ingest_batch, items, (lfs_dir,), (link, max_pixels), jobs=jobs, progress=progress
    )


def map_batches(
    fn: Callable[..., list[R]],
    items: Sequence[T],
    before: tuple[Any, ...],
    after: tuple[Any, ...],
    *,
    jobs: int | None,
    progress: Callable[[int, int], None] | None,
) -> list[R]:
    """``fn(*before, batch, *after)`` over batches of ``items``, in worker processes
    when there are enough items; results in item order."""
    total = len(items)
    jobs = jobs or os.cpu_count() or 1
    results: list[R] = []
    if total < PARALLEL_THRESHOLD or jobs == 1:
        for start in range(0, total, BATCH):
            results.extend(fn(*before, items[start : start + BATCH], *after))
            if progress:
                progress(len(results), total)
        return results
    batch = max(8, min(BATCH, total // (jobs * 4) or 8))
    ctx = get_context("fork") if "fork" in _start_methods() else None
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=worker_init) as pool:
        futures: list[Future[list[R]]] = [
            pool.submit(fn, *before, items[start : start + batch], *after)
            for start in range(0, total, batch)
        ]
        for fut in futures:
            results.extend(fut.result())
            if progress:
                progress(len(results), total)
    return results


def materialise_batch(
    lfs_dir: str, tmp_dir: str, items: Sequence[tuple[str, int, bool]], link: bool
) -> list[tuple[str | None, str | None]]:
    """Worker entry point for checkout: each ``(oid, mode, verified)`` becomes a
    verified temporary file, returned as ``(tmp path, None)``. ``verified`` says
    this command hashed the object already (it just arrived from a remote): it
    is not hashed twice. An object that is missing comes back as ``(None,
    "missing")``, one whose bytes hash to something else as ``(None, <that
    hash>)``: errors travel as values, not exceptions."""
    store = MediaStore(lfs_dir)
    out: list[tuple[str | None, str | None]] = []
    for oid, mode, verified in items:
        try:
            with open(store.path(oid), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            out.append((None, "missing"))
            continue
        got = oid if verified else hashlib.sha256(data).hexdigest()
        if got != oid:
            out.append((None, got))
            continue
        tmp = os.path.join(tmp_dir, f"co-{os.getpid()}-{oid[:16]}-{len(out)}-{os.urandom(4).hex()}")
        if link and mode != 0o100755:  # an executable file cannot share a 0444 inode
            os.link(store.path(oid), tmp)
        else:
            with open(tmp, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o755 if mode == 0o100755 else 0o644)
        out.append((tmp, None))
    return out


def _start_methods() -> list[str]:
    import multiprocessing

    return multiprocessing.get_all_start_methods()
