"""The work tree against the index: add, rm, status.

Walking the work tree is the hot path of ``status`` and ``add``: the index is
read as plain tuples, each file costs one ``lstat`` and a tuple comparison,
and only files whose stat changed (or is racy) are read and hashed again.
"""

from __future__ import annotations

import os
import stat as stat_mod
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .errors import BadPath, InvalidImages, UsageError
from .index import RACY_NS, Entry
from .ingest import Ingested, discard, git_blob_id, ingest_files, publish
from .lazy import lazy_module
from .pointer import format_pointer, looks_like_pointer, parse_pointer

# staging is imported by Repo's methods, after repo.py is fully loaded
from .repo import GIT_DIR, IGNORE_FILE, AddResult, Status, _dirs_of

if TYPE_CHECKING:
    from dulwich import objects as dobj
    from dulwich.objects import ShaFile

    from . import trees
    from .repo import Progress, Repo
else:
    dobj = lazy_module("dulwich.objects")
    trees = lazy_module("pixvcs.trees")


def ignore_filter(repo: Repo) -> Any:
    from dulwich.ignore import IgnoreFilter, read_ignore_patterns

    path = os.path.join(repo.root, IGNORE_FILE)
    try:
        with open(path, "rb") as f:
            return IgnoreFilter(list(read_ignore_patterns(f)), path=path)
    except FileNotFoundError:
        return None


def walk(
    repo: Repo, top_rel: str, tracked_dirs: set[str], ignore: Any, tracked: dict[str, Any]
) -> Iterator[tuple[str, os.stat_result]]:
    """Files under ``top_rel``: tracked ones always, untracked ones unless ignored."""
    top = repo._abspath(top_rel) if top_rel else repo.root
    stack = [(top, top_rel)]
    while stack:
        d, rel_d = stack.pop()
        try:
            it = os.scandir(d)
        except (FileNotFoundError, NotADirectoryError):  # vanished during the walk
            continue
        with it:
            for e in it:
                rel = f"{rel_d}/{e.name}" if rel_d else e.name
                if not rel_d and e.name in (GIT_DIR, ".git"):
                    continue
                try:
                    st = e.stat(follow_symlinks=False)
                except FileNotFoundError:  # vanished during the walk
                    continue
                if stat_mod.S_ISDIR(st.st_mode):
                    if (
                        ignore is not None
                        and rel not in tracked_dirs
                        and ignore.is_ignored(rel + "/")
                    ):
                        continue
                    stack.append((e.path, rel))
                elif stat_mod.S_ISREG(st.st_mode):
                    if rel in tracked or ignore is None or not ignore.is_ignored(rel):
                        yield rel, st


def add(
    repo: Repo,
    paths: Sequence[str],
    *,
    allow_invalid: bool,
    force: bool,
    link: bool,
    max_pixels: int,
    jobs: int | None,
    progress: Progress,
) -> AddResult:
    repo._sync_base()
    index = repo.index
    tracked = index.stat_map()
    ignore = None if force else ignore_filter(repo)
    tracked_dirs = _dirs_of(tracked) if ignore is not None else set()
    todo: list[tuple[str, str]] = []
    result = AddResult()
    seen_deleted: list[str] = []
    for p in paths:
        rel = repo.relpath(p)
        full = repo._abspath(rel) if rel else repo.root
        if os.path.isdir(full) and not os.path.islink(full):
            files = list(walk(repo, rel, tracked_dirs, ignore, tracked))
            prefix = rel + "/" if rel else ""
            seen = {f for f, _ in files}
            seen_deleted.extend(t for t in tracked if t.startswith(prefix) and t not in seen)
        elif os.path.isfile(full) and not os.path.islink(full):
            if ignore is not None and rel not in tracked and ignore.is_ignored(rel):
                raise BadPath(p, f"ignored by {IGNORE_FILE} (use --force to add it anyway)")
            files = [(rel, os.lstat(full))]
        elif rel in tracked:
            seen_deleted.append(rel)  # "add" of a deleted tracked file stages the deletion
            continue
        elif os.path.lexists(full):
            raise BadPath(p, "not a regular file (symlinks and devices are not supported)")
        else:
            raise BadPath(p, "did not match any files")
        for rel_f, st in files:
            c = tracked.get(rel_f)
            if c is not None and _stat_matches(c, st):
                result.unchanged += 1
                continue
            todo.append((rel_f, repo._abspath(rel_f)))
    todo = sorted(set(todo))
    done = ingest_files(
        repo.media.root,
        todo,
        link=link,
        max_pixels=max_pixels,
        jobs=jobs,
        progress=lambda d, t: progress("add", d, t),
    )
    unreadable = [r for r in done if isinstance(r, tuple)]
    items = [r for r in done if isinstance(r, Ingested)]
    invalid = [(i.path, i.error) for i in items if i.error is not None]
    if unreadable or (invalid and not allow_invalid):
        discard(items)
        problems = [(p, why) for p, why in unreadable] + [(p, e or "") for p, e in invalid]
        raise InvalidImages(sorted(problems))
    try:
        publish(repo.media, items)  # one sync, then every new object renamed into place
    except BaseException:
        discard(items)
        raise
    blobs: list[tuple[ShaFile, str | None]] = [
        (dobj.Blob.from_string(i.data), i.path)
        for i in items
        if i.kind == "blob" and i.data is not None
    ]
    repo._add_git_objects(blobs)
    rows = []
    refresh = []
    known = index.get_many([i.path for i in items if i.path in tracked])
    for i in items:
        e = known.get(i.path)
        if e is not None and e.blob == i.blob and e.mode == i.mode:
            refresh.append((i.path, i.size, i.mtime_ns, i.ino))
            result.unchanged += 1
            continue
        rows.append((i.path, i.mode, i.kind, i.oid, i.size, i.blob, i.mtime_ns, i.ino))
        result.added.append(i.path)
    result.invalid = [(p, e or "") for p, e in invalid]
    if items:
        repo.media.sync()  # the renames of new media objects, before the index names them
    repo.catalog.record(
        (i.oid, i.size, i.info, i.error) for i in items if i.oid and (i.info or i.error)
    )
    with index.transaction():
        index.stage(rows)
        index.refresh_stat(refresh)
        index.unstage(seen_deleted)
    return result


def rm(
    repo: Repo, paths: Sequence[str], *, recursive: bool = False, cached: bool = False
) -> list[str]:
    """Stop tracking paths; unless ``cached``, delete them from the work tree too."""
    with repo.lock():
        repo._sync_base()
        tracked = {e.path: e for e in repo.index.entries() if e.blob is not None}
        targets: list[str] = []
        for p in paths:
            rel = repo.relpath(p)
            if rel in tracked:
                targets.append(rel)
                continue
            prefix = rel + "/" if rel else ""
            under = [t for t in tracked if t.startswith(prefix)]
            if not under:
                raise BadPath(p, "did not match any tracked file")
            if not recursive:
                raise BadPath(p, "is a directory (use -r to remove recursively)")
            targets.extend(under)
        with repo.index.transaction():
            repo.index.unstage(targets)
        if not cached:
            for rel in targets:
                try:
                    os.unlink(repo._abspath(rel))
                except FileNotFoundError:  # already gone from the work tree
                    pass
                repo._prune_dirs(rel)
        return sorted(targets)


def adopt_switched(
    repo: Repo, head_tree: bytes | None, target_tree: bytes
) -> list[tuple[str, int, str, str | None, int, str, int, int]]:
    """After a checkout that died half-way: the files it already wrote (those whose
    bytes are exactly the target's) become staged changes, not untracked strays,
    so ``status`` shows the half-done switch and ``checkout --force`` finishes or
    undoes it. O(size of the interrupted change)."""
    import hashlib

    rows: list[tuple[str, int, str, str | None, int, str, int, int]] = []
    for c in trees.diff(repo.store, head_tree, target_tree):
        if c.new is None:
            continue
        full = repo._abspath(c.path)
        try:
            st = os.lstat(full)
            if not stat_mod.S_ISREG(st.st_mode):
                continue
            with open(full, "rb") as f:
                data = f.read()
        except (FileNotFoundError, NotADirectoryError):  # not written before the crash
            continue
        mode, blob = c.new
        raw = trees.blob_bytes(repo.store, blob)
        if looks_like_pointer(raw):
            p = parse_pointer(raw)
            if hashlib.sha256(data).hexdigest() == p.oid:
                rows.append((c.path, mode, "media", p.oid, p.size, blob, st.st_mtime_ns, st.st_ino))
        elif git_blob_id(data) == blob:
            rows.append((c.path, mode, "blob", None, len(data), blob, st.st_mtime_ns, st.st_ino))
    return rows


def status(repo: Repo, *, progress: Progress) -> Status:
    if repo.bare:
        raise UsageError("a bare repository has no work tree")
    repo._sync_base()
    st = Status(branch=repo.current_branch(), head=repo.head_commit())
    for e in repo.index.staged():
        if e.blob is None:
            st.staged_deleted.append(e.path)
        elif e.base is None:
            st.staged_added.append(e.path)
        else:
            st.staged_modified.append(e.path)
    changes = worktree_changes(repo, progress=progress, untracked=st.untracked)
    for path, change in changes.items():
        (st.deleted if change is None else st.modified).append(path)
    for lst in (
        st.staged_added,
        st.staged_modified,
        st.staged_deleted,
        st.modified,
        st.deleted,
        st.untracked,
    ):
        lst.sort()
    return st


def worktree_changes(
    repo: Repo,
    *,
    progress: Progress,
    untracked: list[str] | None = None,
    only: Iterable[str] | None = None,
) -> dict[str, Ingested | None]:
    """Work-tree files whose content differs from the index: path -> new content
    (``None`` = deleted). Files whose stat matches the cache are not read.

    This is the hot path of ``status``: the index is read as plain tuples and
    each file costs one ``lstat`` and a tuple comparison."""
    suspects: list[str] = []
    gone: list[str] = []
    stats: dict[str, tuple[int, int, int, int, int]]
    if only is None:
        stats = repo.index.stat_map()
        ignore = ignore_filter(repo)
        tracked_dirs = _dirs_of(stats) if ignore is not None else set()
        seen: set[str] = set()
        for rel, s in walk(repo, "", tracked_dirs, ignore, stats):
            c = stats.get(rel)
            if c is None:
                if untracked is not None:
                    untracked.append(rel)
                continue
            seen.add(rel)
            if not _stat_matches(c, s):
                suspects.append(rel)
        if len(seen) != len(stats):
            gone = [p for p in stats if p not in seen]
    else:
        wanted = list(only)
        stats = {
            p: (e.size, e.mtime_ns, e.ino, e.stamp_ns, e.mode)
            for p, e in repo.index.get_many(wanted).items()
            if e.blob is not None
        }
        for rel in wanted:
            c = stats.get(rel)
            if c is None:
                continue
            try:
                s = os.lstat(repo._abspath(rel))
            except (FileNotFoundError, NotADirectoryError):
                gone.append(rel)
                continue
            if not stat_mod.S_ISREG(s.st_mode) or not _stat_matches(c, s):
                suspects.append(rel)
    out: dict[str, Ingested | None] = dict.fromkeys(gone)
    if suspects:
        entries = repo.index.get_many(suspects)
        rehashed = _rehash([(p, repo._abspath(p)) for p in suspects], entries, progress)
        refresh = []
        for rel, (item, same) in rehashed.items():
            if item is None:
                out[rel] = None
            elif same:
                refresh.append((rel, item.size, item.mtime_ns, item.ino))
            else:
                out[rel] = item
        if refresh:
            try_refresh(repo, refresh)
    return out


def try_refresh(repo: Repo, rows: list[tuple[str, int, int, int]]) -> None:
    """Record re-verified stat data, if no other process is writing right now."""
    try:
        with repo.lock(timeout=0), repo.index.transaction():
            repo.index.refresh_stat(rows)
    except Exception:  # noqa: BLE001 - an optimisation only; never fail a read on it
        return


def _rehash(
    suspects: list[tuple[str, str]], live: dict[str, Entry], progress: Progress
) -> dict[str, tuple[Ingested | None, bool]]:
    """Hash suspect files; return path -> (content or None if gone, equal to index)."""
    import hashlib

    out: dict[str, tuple[Ingested | None, bool]] = {}
    for n, (rel, full) in enumerate(suspects, 1):
        e = live[rel]
        try:
            s = os.lstat(full)
            with open(full, "rb") as f:
                data = f.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            out[rel] = (None, False)
            continue
        mode = 0o100755 if s.st_mode & stat_mod.S_IXUSR else 0o100644
        if e.kind == "media":
            oid = hashlib.sha256(data).hexdigest()
            blob = git_blob_id(format_pointer(oid, len(data)))
            item = Ingested(rel, "media", mode, len(data), blob, oid, s.st_mtime_ns, s.st_ino)
        else:
            item = Ingested(
                rel, "blob", mode, len(data), git_blob_id(data), None, s.st_mtime_ns, s.st_ino
            )
        out[rel] = (item, item.blob == e.blob and mode == e.mode)
        progress("status", n, len(suspects))
    return out


def _stat_matches(cached: tuple[int, int, int, int, int], st: os.stat_result) -> bool:
    """Does a file's stat equal the index's stat cache ``(size, mtime_ns, ino,
    stamp_ns, git mode)``, outside the racy window? Then its content is unchanged."""
    size, mtime_ns, ino, stamp_ns, mode = cached
    return (
        st.st_size == size
        and st.st_mtime_ns == mtime_ns
        and st.st_ino == ino
        and stamp_ns - mtime_ns >= RACY_NS
        and bool(st.st_mode & stat_mod.S_IXUSR) == (mode == 0o100755)
    )
