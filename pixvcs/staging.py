"""The work tree against the index: add, rm, status.

Walking the work tree is the hot path of ``status`` and ``add``. Both sides
become sets of :data:`~pixvcs.index.StatRow` tuples -- the index's built by
SQLite and ``set()`` in C, the work tree's by one ``scandir`` per directory and
one ``fstatat`` per file -- and one set difference (in C) finds the files
whose stat differs from the cache (or is racy). Only those are read and hashed
again; ``.pixvcsignore`` is matched against directories and untracked files
only, never against tracked ones.
"""

from __future__ import annotations

import os
import stat as stat_mod
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .errors import BadPath, InvalidImages, UsageError
from .index import Entry, StatRow
from .lazy import lazy_module
from .pointer import format_pointer, looks_like_pointer, parse_pointer

# staging is imported by Repo's methods, after repo.py is fully loaded
from .repo import GIT_DIR, IGNORE_FILE, AddResult, Status, _dirs_of

if TYPE_CHECKING:
    from dulwich import objects as dobj
    from dulwich.objects import ShaFile

    from . import trees
    from .ingest import Ingested
    from .repo import Progress, Repo
else:
    dobj = lazy_module("dulwich.objects")
    trees = lazy_module("pixvcs.trees")


def ignore_filter(repo: Repo) -> Any:
    """The repository's ``.pixvcsignore`` as a dulwich ``IgnoreFilter``, or None
    (without importing dulwich) when there is no such file."""
    path = os.path.join(repo.root, IGNORE_FILE)
    if not os.path.exists(path):
        return None
    from dulwich.ignore import IgnoreFilter, read_ignore_patterns

    try:
        with open(path, "rb") as f:
            return IgnoreFilter(list(read_ignore_patterns(f)), path=path)
    except FileNotFoundError:  # removed since the check: nothing is ignored
        return None


_XBIT = stat_mod.S_IXUSR
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
#: Names at the top of the work tree that are never part of it.
_OWN = (GIT_DIR, ".git")


def scan(root: str, top_rel: str, skip_dir: Callable[[str], bool] | None) -> list[StatRow]:
    """Every regular file under ``top_rel`` (``""``: the whole work tree), as
    :data:`StatRow` tuples, in no particular order. Symlinks and other special
    files are left out; so are the repository's own directory at the top and
    every directory for which ``skip_dir(rel)`` is true.

    Each directory is opened once and listed with ``scandir`` on its file
    descriptor, so a file's stat is an ``fstatat`` relative to it (no full-path
    lookup) and the directory/file test comes from ``d_type`` (no syscall)."""
    rows: list[StatRow] = []
    append = rows.append
    xbit = _XBIT
    stack = [top_rel]
    while stack:
        rel_d = stack.pop()
        try:
            fd = os.open(os.path.join(root, rel_d) if rel_d else root, _DIR_FLAGS)
        except (FileNotFoundError, NotADirectoryError):  # vanished during the walk
            continue
        prefix = rel_d + "/" if rel_d else ""
        try:
            with os.scandir(fd) as it:
                for e in it:
                    if e.is_file(follow_symlinks=False):  # d_type: no syscall
                        if not rel_d and e.name in _OWN:
                            continue
                        try:
                            st = e.stat(follow_symlinks=False)
                        except FileNotFoundError:  # vanished during the walk
                            continue
                        append(
                            (
                                prefix + e.name,
                                st.st_size,
                                st.st_mtime_ns,
                                st.st_ino,
                                st.st_mode & xbit,
                            )
                        )
                    elif e.is_dir(follow_symlinks=False):
                        rel = prefix + e.name
                        if (rel_d or e.name not in _OWN) and (
                            skip_dir is None or not skip_dir(rel)
                        ):
                            stack.append(rel)
        finally:
            os.close(fd)
    return rows


def stat_row(rel: str, st: os.stat_result) -> StatRow:
    return (rel, st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode & _XBIT)


def dir_skipper(ignore: Any, tracked: Iterable[str]) -> Callable[[str], bool] | None:
    """``skip_dir`` for :func:`scan`: directories the ignore file names, unless a
    tracked file is under them. ``tracked`` is read only when the first ignored
    directory is met (most walks never need it)."""
    if ignore is None:
        return None
    tracked_dirs: set[str] | None = None

    def skip(rel: str) -> bool:
        nonlocal tracked_dirs
        if not ignore.is_ignored(rel + "/"):
            return False
        if tracked_dirs is None:
            tracked_dirs = _dirs_of(tracked)
        return rel not in tracked_dirs

    return skip


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
    from .ingest import Ingested, discard, ingest_files, publish

    repo._sync_base()
    index = repo.index
    cache = index.stat_rows()
    tracked = {row[0] for row in cache}
    ignore = None if force else ignore_filter(repo)
    skip_dir = dir_skipper(ignore, tracked)
    todo: list[tuple[str, str]] = []
    result = AddResult()
    seen_deleted: list[str] = []
    for p in paths:
        rel = repo.relpath(p)
        full = repo._abspath(rel) if rel else repo.root
        if os.path.isdir(full) and not os.path.islink(full):
            files = scan(repo.root, rel, skip_dir)
            if ignore is not None:
                files = [f for f in files if f[0] in tracked or not ignore.is_ignored(f[0])]
            prefix = rel + "/" if rel else ""
            seen = {f[0] for f in files}
            seen_deleted.extend(t for t in tracked if t.startswith(prefix) and t not in seen)
        elif os.path.isfile(full) and not os.path.islink(full):
            if ignore is not None and rel not in tracked and ignore.is_ignored(rel):
                raise BadPath(p, f"ignored by {IGNORE_FILE} (use --force to add it anyway)")
            files = [stat_row(rel, os.lstat(full))]
        elif rel in tracked:
            seen_deleted.append(rel)  # "add" of a deleted tracked file stages the deletion
            continue
        elif os.path.lexists(full):
            raise BadPath(p, "not a regular file (symlinks and devices are not supported)")
        else:
            raise BadPath(p, "did not match any files")
        for row in files:
            if row in cache:  # stat equal to the cache, not racy: content unchanged
                result.unchanged += 1
                continue
            todo.append((row[0], repo._abspath(row[0])))
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

    from .ingest import git_blob_id

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

    This is the hot path of ``status``: the index's stat cache and the work
    tree's stats are two sets of :data:`StatRow` tuples, and the rows in one
    but not the other -- found in C -- are the only ones looked at in Python.
    With ``untracked``, untracked files that ``.pixvcsignore`` does not name
    are appended to it (unsorted); ``only`` restricts the check to those paths."""
    suspects: list[str] = []
    gone: list[str] = []
    if only is None:
        cache = repo.index.stat_rows()
        ignore = ignore_filter(repo)
        rows = scan(repo.root, "", dir_skipper(ignore, (c[0] for c in cache)))
        clean = len(rows) == len(cache) and cache.issuperset(rows)  # the common case
        if not clean:
            stale = cache.difference(rows)  # tracked: stat changed, racy, or file gone
            stale_paths = {c[0] for c in stale}
            found: set[str] = set()
            for row in set(rows).difference(cache):
                rel = row[0]
                if rel in stale_paths:
                    suspects.append(rel)
                    found.add(rel)
                elif untracked is not None and (ignore is None or not ignore.is_ignored(rel)):
                    untracked.append(rel)
            gone = [p for p in stale_paths if p not in found]
    else:
        wanted = list(only)
        cache = repo.index.stat_rows(wanted)
        tracked = {c[0] for c in cache}
        for rel in wanted:
            if rel not in tracked:
                continue
            try:
                s = os.lstat(repo._abspath(rel))
            except (FileNotFoundError, NotADirectoryError):
                gone.append(rel)
                continue
            if not stat_mod.S_ISREG(s.st_mode) or stat_row(rel, s) not in cache:
                suspects.append(rel)
    out: dict[str, Ingested | None] = dict.fromkeys(gone)
    if suspects:
        suspects.sort()
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

    from .ingest import Ingested, git_blob_id

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
