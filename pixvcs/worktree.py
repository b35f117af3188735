"""Switching the work tree between versions: checkout, rollback and merge.

Every switch is a tree diff (equal subtrees skipped), so its cost follows the
change. Order of work: validate every entry and refuse to overwrite local
changes, then materialise verified temporary files (in parallel), and only
then delete and rename in the work tree, then update the index and HEAD.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dulwich.objects import ShaFile

from . import fsutil, trees
from .errors import BadPath, BadRevision, CorruptObject, LocalChanges, MergeConflict, MissingMedia
from .index import Entry
from .ingest import map_batches, materialise_batch
from .pointer import looks_like_pointer, parse_pointer

# worktree is imported lazily by Repo's methods, after repo.py is fully loaded
from .repo import GIT_DIR, HEAD, CheckoutResult, MergeResult, _dirs_of, _oid, _ref

if TYPE_CHECKING:
    from .repo import Progress, Repo
    from .sparse import Selection


def checkout(
    repo: Repo,
    rev: str,
    *,
    force: bool = False,
    paths: Sequence[str] | None = None,
    link: bool = False,
    selection: Selection | None = None,
    progress: Progress,
) -> CheckoutResult:
    """Make the work tree exactly ``rev`` (only differing paths are touched).

    With ``paths``, restore just those paths from ``rev`` into the work tree
    and index, leaving HEAD where it is (as ``git checkout REV -- PATH``).
    With ``link``, files are hardlinks to the read-only media objects. With
    ``selection``, the work tree holds only those images from now on
    (:mod:`pixvcs.sparse`; an empty one means all of them again)."""
    with repo.lock():
        repo._sync_base()
        target = repo.resolve(rev)
        branch = rev if _ref(f"refs/heads/{rev}") in repo.git.refs else None
        if paths is not None:
            return _checkout_paths(repo, rev, target, paths, progress)
        head = repo.head_commit()
        old_tree = repo._commit(head).tree if head else None
        new_tree = repo._commit(target).tree
        written, removed = _switch_tree(
            repo, old_tree, new_tree, force=force, link=link, progress=progress, selection=selection
        )
        if selection is not None:
            from . import sparse

            sparse.save(repo, selection)
        if branch is not None:
            repo._refs(repo.git.refs.set_symbolic_ref, HEAD, _ref(f"refs/heads/{branch}"))
        else:
            repo._refs(repo._detach_head, target)
        with repo.index.transaction():
            repo.index.set_meta("base_commit", target)
        return CheckoutResult(target, branch, written, removed)


def _switch_tree(
    repo: Repo,
    old_tree: bytes | None,
    new_tree: bytes | None,
    *,
    force: bool,
    progress: Progress,
    link: bool = False,
    selection: Selection | None = None,
) -> tuple[int, int]:
    """Update work tree and index from ``old_tree`` (the index base) to ``new_tree``,
    holding the images of ``selection`` (default: the repository's, pixvcs.sparse)."""
    from . import sparse

    sel = sparse.load(repo) if selection is None else selection
    skipped = repo.index.skipped()
    leave_out = sparse.left_out(repo, new_tree, sel)
    changes = list(trees.diff(repo.store, old_tree, new_tree))
    touched = {c.path for c in changes}
    for path in sorted(skipped - leave_out - touched):  # selected again: bring back
        want = trees.lookup(repo.store, new_tree, path)
        if want is not None:
            changes.append(trees.Change(path, None, want))
    # unchanged paths the selection now leaves out: their files go (if unmodified)
    hide = sorted(leave_out - skipped - touched)
    sparse_state = (skipped, leave_out, hide)
    if not force and old_tree is None and not skipped and _nothing_here(repo):
        # a fresh clone's checkout: no file to overwrite, no change to lose
        return _apply(repo, changes, progress, link=link, target_tree=new_tree, sparse=sparse_state)
    if not force:
        entries = repo.index.get_many([c.path for c in changes])
        _refuse_overwrite(repo, changes, entries, progress, skipped=skipped, leave_out=leave_out)
        modified = [p for p in repo._worktree_changes(progress=progress, only=hide)]
        if modified:
            raise LocalChanges(sorted(modified))
        return _apply(repo, changes, progress, link=link, target_tree=new_tree, sparse=sparse_state)
    # --force: local changes anywhere are discarded, so the work tree ends up
    # byte for byte the target. As with git checkout -f, tracked files the target
    # lacks go, staged-but-never-committed ones included (their bytes stay in the
    # stores until gc); untracked files are left alone.
    touched = {c.path for c in changes}
    local = set(repo._worktree_changes(progress=progress))
    local.update(e.path for e in repo.index.staged())
    for path in sorted(local - touched):
        want = trees.lookup(repo.store, new_tree, path)
        if want is not None:
            changes.append(trees.Change(path, None, want))
        else:
            changes.append(trees.Change(path, (0, ""), None))
    return _apply(repo, changes, progress, link=link, target_tree=new_tree, sparse=sparse_state)


def _nothing_here(repo: Repo) -> bool:
    """The index holds no file and the work tree nothing but the repository's
    own directory: checking 20,000 paths for local changes finds none."""
    if len(repo.index):
        return False
    with os.scandir(repo.root) as it:
        return all(e.name == GIT_DIR for e in it)


def _refuse_overwrite(
    repo: Repo,
    changes: list[trees.Change],
    entries: dict[str, Entry],
    progress: Progress,
    *,
    skipped: set[str] | frozenset[str] = frozenset(),
    leave_out: set[str] | frozenset[str] = frozenset(),
) -> None:
    touched = [c.path for c in changes]
    conflicts = [
        c.path
        for c in changes
        if c.path in entries
        and entries[c.path].dirty
        and not (c.new is not None and entries[c.path].blob == c.new[1])  # staged as it comes
    ]
    local = repo._worktree_changes(progress=progress, only=touched)
    conflicts.extend(local)
    leaving = {c.path for c in changes if c.new is None}
    for c in changes:
        if c.new is None or c.path in leave_out:  # nothing written there
            continue
        dest = repo._abspath(c.path)
        untracked = c.path not in entries or c.path in skipped  # skipped: not ours there
        if untracked and os.path.lexists(dest) and not os.path.isdir(dest):
            if not _same_content(repo, dest, c.new):
                conflicts.append(c.path)  # an untracked file would be overwritten
        if os.path.isdir(dest) and not os.path.islink(dest):
            # a directory where the file goes: only files this change removes may be in it
            for dirpath, _dirs, files in os.walk(dest):
                for name in files:
                    rel = repo.relpath(os.path.join(dirpath, name))
                    if rel not in leaving:
                        conflicts.append(rel)
        parts = c.path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            parent = "/".join(parts[:i])
            full = repo._abspath(parent)
            if os.path.lexists(full) and not os.path.isdir(full) and parent not in leaving:
                conflicts.append(parent)  # a file where a directory must go
    if conflicts:
        raise LocalChanges(sorted(set(conflicts)))


#: Untracked files up to this size are compared with what would replace them.
_COMPARE_LIMIT = 64 * 1024 * 1024


def _same_content(repo: Repo, dest: str, new: tuple[int, str]) -> bool:
    """Whether the untracked file at ``dest`` already holds exactly what the change
    writes there (then overwriting it loses nothing: e.g. a crawl's images copied
    into the work tree by hand before its branch is merged)."""
    import hashlib

    if os.path.islink(dest) or not os.path.isfile(dest) or os.path.getsize(dest) > _COMPARE_LIMIT:
        return False
    blob = repo.store[new[1].encode()]
    data: bytes = blob.as_raw_string()
    with open(dest, "rb") as f:
        current = f.read()
    if looks_like_pointer(data):
        return bool(hashlib.sha256(current).hexdigest() == parse_pointer(data).oid)
    return bool(current == data)


def _apply(
    repo: Repo,
    changes: list[trees.Change],
    progress: Progress,
    *,
    link: bool = False,
    target_tree: bytes | None = None,
    sparse: tuple[set[str], set[str], list[str]] | None = None,
) -> tuple[int, int]:
    """Materialise changes: verified temps first, then deletions, then renames.

    ``target_tree`` is the version being switched to, recorded so that a crash
    part-way can be recovered from (see Repo._sync_base). ``sparse`` is
    ``(skipped now, left out by the target, unchanged paths to hide)``: changes
    of left-out paths update the index only, and their files (if any) go."""
    skipped, leave_out, hide = sparse if sparse is not None else (set(), set(), [])
    quiet = [c for c in changes if c.new is not None and c.path in leave_out]
    writes = [c for c in changes if c.new is not None and c.path not in leave_out]
    # a file of a skipped path is not ours (the user's, untracked): never deleted
    deletes = [c.path for c in changes if c.new is None and c.path not in skipped]
    forget = [c.path for c in changes if c.new is None and c.path in skipped]
    # files that were in the work tree and now are left out
    deletes += [c.path for c in quiet if c.path not in skipped] + hide
    plans: list[
        tuple[str, int, str, str | None, int, str]
    ] = []  # path, mode, kind, oid, size, blob
    missing = []
    for c in writes:
        assert c.new is not None
        mode, blob = c.new
        known = repo.known_pointers.get(blob)  # parsed already by this command
        data = b"" if known is not None else trees.blob_bytes(repo.store, blob)
        if known is not None or looks_like_pointer(data):
            p = known if known is not None else parse_pointer(data)
            if p.oid not in repo.verified_oids and not repo.media.has(p.oid):
                missing.append((c.path, p.oid))  # (arrived in this command: it is there)
            plans.append((c.path, mode, "media", p.oid, p.size, blob))
        else:
            plans.append((c.path, mode, "blob", None, len(data), blob))
    if missing:
        if not repo.remotes():
            raise MissingMedia(missing, repo.media.root)
        # media of other versions arrive when needed (raises MissingMedia naming
        # the remotes when none of them has an object)
        repo.fetch_media([oid for _path, oid in missing], progress=progress)
    os.makedirs(repo.tmp_dir, exist_ok=True)
    fresh = repo.verified_oids  # hashed by this command on arrival: not hashed again
    media_items = [
        (oid, mode, oid in fresh) for (_p, mode, _k, oid, _s, _b) in plans if oid is not None
    ]
    made = map_batches(
        materialise_batch,
        media_items,
        (repo.media.root, repo.tmp_dir),
        (link,),
        jobs=None,
        progress=lambda d, t: progress("checkout", d, t),
    )
    media_temps = iter(made)
    temps: list[str] = []
    try:
        media_paths = [path for (path, _m, _k, oid, _s, _b) in plans if oid is not None]
        gone = [
            (path, oid)
            for path, (oid, _m, _v), (_t, err) in zip(media_paths, media_items, made, strict=True)
            if err == "missing"
        ]
        if gone:
            raise MissingMedia(gone, repo.media.root)
        for (media_oid, _m, _v), (_t, err) in zip(media_items, made, strict=True):
            if err is not None:
                raise CorruptObject(media_oid, err, repo.media.root)
        for _path, mode, _kind, oid, _size, blob in plans:
            if oid is not None:
                made_tmp = next(media_temps)[0]
                assert made_tmp is not None
                tmp = made_tmp
            else:
                tmp = fsutil.unique_tmp(repo.tmp_dir, "co-")
                with open(tmp, "wb") as f:
                    f.write(trees.blob_bytes(repo.store, blob))
                os.chmod(tmp, 0o755 if mode == 0o100755 else 0o644)
            temps.append(tmp)
    except BaseException:
        for t, _err in made:
            if t is not None and t not in temps:
                os.unlink(t)
        for t in temps:
            os.unlink(t)
        raise
    # From here on the work tree changes. Until the caller records the new base
    # (after moving HEAD), the index says "no known base": a crash in between
    # makes the next command re-derive the index's base from HEAD.
    with repo.index.transaction():
        repo.index.set_meta("base_commit", "")
        repo.index.set_meta("switch_to", target_tree.decode() if target_tree else "")
    for path in deletes:
        try:
            os.unlink(repo._abspath(path))
        except FileNotFoundError:  # already gone
            pass
        except IsADirectoryError:
            pass
    rows = []
    # paths the old version had: their file is unlinked first. Renaming over
    # an existing file makes ext4 flush the new file's data first
    # (auto_da_alloc), about a millisecond a file; git also unlinks before
    # writing. The path is briefly absent, never half-written. A new path
    # usually has no file, so it costs no extra lookup.
    replaced = {c.path for c in writes if c.old is not None}
    ready: set[str] = set()  # parent directories made sure of (a clone writes 20k files into 10)
    for (path, mode, kind, oid, size, blob), tmp in zip(plans, temps, strict=True):
        dest = repo._abspath(path)
        parent = path.rpartition("/")[0]
        if parent not in ready:
            _clear_parents(repo.root, path)
            ready.add(parent)
        _place(tmp, dest, replace=path in replaced)
        s = os.lstat(dest)
        rows.append((path, mode, kind, oid, size, blob, s.st_mtime_ns, s.st_ino))
    for path in deletes:
        repo._prune_dirs(path)
    quiet_rows: list[tuple[str, int, str, str | None, int, str, int, int]] = []
    for c in quiet:  # the index follows the target; the work tree holds no file
        assert c.new is not None
        mode, blob = c.new
        data = trees.blob_bytes(repo.store, blob)
        if looks_like_pointer(data):
            ptr = parse_pointer(data)
            quiet_rows.append((c.path, mode, "media", ptr.oid, ptr.size, blob, 0, 0))
        else:
            quiet_rows.append((c.path, mode, "blob", None, len(data), blob, 0, 0))
    hidden = set(hide) | {c.path for c in quiet}
    with repo.index.transaction():
        repo.index.delete([p for p in deletes if p not in hidden] + forget)
        repo.index.set_base_entries(rows)
        repo.index.set_base_entries(quiet_rows)
        if sparse is not None:
            repo.index.set_skipped(leave_out)
        else:
            repo.index.unskip(r[0] for r in rows)
    return len(rows), len(deletes)


def _checkout_paths(
    repo: Repo, rev: str, target: str, paths: Sequence[str], progress: Progress
) -> CheckoutResult:
    tree = repo._commit(target).tree
    files = {p: (m, b) for p, m, b in trees.walk(repo.store, tree)}
    wanted: dict[str, tuple[int, str]] = {}
    for p in paths:
        rel = repo.relpath(p)
        prefix = rel + "/" if rel else ""
        hits = {k: v for k, v in files.items() if k == rel or k.startswith(prefix)}
        if not hits:
            raise BadPath(p, f"did not match any file in {rev}")
        wanted.update(hits)
    changes = [trees.Change(p, None, v) for p, v in sorted(wanted.items())]
    written, _ = _apply_paths(repo, changes, progress)
    return CheckoutResult(target, None, written, 0)


def _apply_paths(repo: Repo, changes: list[trees.Change], progress: Progress) -> tuple[int, int]:
    # restored paths become staged relative to the base when they differ from it
    base = repo.index.get_many([c.path for c in changes])
    head = repo.head_commit()
    written, removed = _apply(repo, changes, progress)
    with repo.index.transaction():
        repo.index.set_meta("base_commit", head or "")
        for c in changes:
            e = base.get(c.path)
            assert c.new is not None
            repo.index.db.execute(
                "UPDATE entries SET base = ?, base_mode = ?, dirty = (blob IS NOT ? OR mode IS NOT ?)"
                " WHERE path = ?",
                (
                    e.base if e else None,
                    e.base_mode if e else None,
                    e.base if e else None,
                    e.base_mode if e else None,
                    c.path,
                ),
            )
    return written, removed


def rollback(
    repo: Repo,
    rev: str,
    *,
    message: str | None = None,
    author: str | None = None,
    force: bool = False,
    progress: Progress,
) -> str:
    """A new commit on the current branch whose tree is ``rev``'s; work tree to match."""
    with repo.lock():
        repo._sync_base()
        target = repo.resolve(rev)
        head = repo.head_commit()
        if head is None:
            raise BadRevision("HEAD", "no commits yet")
        if repo.index.staged() and not force:
            raise LocalChanges([e.path for e in repo.index.staged()])
        old_tree = repo._commit(head).tree
        new_tree = repo._commit(target).tree
        _switch_tree(repo, old_tree, new_tree, force=force, progress=progress)
        msg = message or f"Roll back to {rev} ({target[:12]})"
        commit_id = repo._write_commit(
            new_tree, [head], msg, author=author, committer=None, timestamp=None
        )
        repo._move_head(head, commit_id, msg)
        with repo.index.transaction():
            repo.index.set_meta("base_commit", commit_id)
        return commit_id


def merge(
    repo: Repo,
    rev: str,
    *,
    message: str | None = None,
    author: str | None = None,
    progress: Progress,
) -> MergeResult:
    from dulwich.graph import can_fast_forward, find_merge_base

    with repo.lock():
        repo._sync_base()
        theirs = repo.resolve(rev)
        ours = repo.head_commit()
        if ours == theirs or (ours and can_fast_forward(repo.git, _oid(theirs), _oid(ours))):
            return MergeResult("up-to-date", ours)
        ours_tree = repo._commit(ours).tree if ours else None
        theirs_tree = repo._commit(theirs).tree
        staged = repo.index.staged()
        if ours is None:  # unborn: staged files the merge brings as they are lose nothing
            staged = [e for e in staged if _incoming_blob(repo, theirs_tree, e.path) != e.blob]
        if staged:
            raise LocalChanges([e.path for e in staged])
        if ours is None or can_fast_forward(repo.git, _oid(ours), _oid(theirs)):
            written, removed = _switch_tree(
                repo, ours_tree, theirs_tree, force=False, progress=progress
            )
            repo._move_head(ours, theirs, f"merge {rev}: fast-forward")
            with repo.index.transaction():
                repo.index.set_meta("base_commit", theirs)
            return MergeResult("fast-forward", theirs, written + removed)
        bases = find_merge_base(repo.git, [_oid(ours), _oid(theirs)])
        base_tree = repo._commit(bases[0].decode()).tree if bases else None
        ours_changes = {c.path: c.new for c in trees.diff(repo.store, base_tree, ours_tree)}
        theirs_changes = {c.path: c.new for c in trees.diff(repo.store, base_tree, theirs_tree)}
        conflicts = [
            p for p in theirs_changes if p in ours_changes and ours_changes[p] != theirs_changes[p]
        ]
        conflicts += _file_dir_conflicts(ours_changes, theirs_changes)
        if conflicts:
            raise MergeConflict(sorted(set(conflicts)))
        apply = [
            (p, v[0] if v else None, v[1] if v else None)
            for p, v in sorted(theirs_changes.items())
            if p not in ours_changes
        ]
        new_objects: list[tuple[ShaFile, str | None]] = []
        merged_tree = trees.update(repo.store, ours_tree, apply, new_objects)
        repo._add_git_objects(new_objects)
        written, removed = _switch_tree(
            repo, ours_tree, merged_tree, force=False, progress=progress
        )
        branch = repo.current_branch() or "HEAD"
        msg = message or f"Merge {rev} into {branch}"
        commit_id = repo._write_commit(
            merged_tree,
            [ours],
            msg,
            author=author,
            committer=None,
            timestamp=None,
            extra_parents=[theirs],
        )
        repo._move_head(ours, commit_id, msg)
        with repo.index.transaction():
            repo.index.set_meta("base_commit", commit_id)
        return MergeResult("merge", commit_id, written + removed)


def _incoming_blob(repo: Repo, tree: bytes, path: str) -> str | None:
    found = trees.lookup(repo.store, tree, path)
    return found[1] if found else None


def _file_dir_conflicts(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Paths one side makes a file while the other puts files beneath it."""
    out: list[str] = []
    for x, y in ((a, b), (b, a)):
        dirs = _dirs_of(p for p, v in y.items() if v is not None)
        out.extend(p for p, v in x.items() if v is not None and p in dirs)
    return out


def _clear_parents(root: str, rel: str) -> None:
    """Make sure every parent of ``rel`` is a directory (a file there was deleted)."""
    parts = rel.split("/")[:-1]
    cur = root
    for part in parts:
        cur = os.path.join(cur, part)
        if os.path.lexists(cur) and not os.path.isdir(cur):
            os.unlink(cur)
        if not os.path.exists(cur):
            os.mkdir(cur)


def _place(tmp: str, dest: str, *, replace: bool) -> None:
    """Rename the finished temp file ``tmp`` to ``dest`` (whose parents are
    directories). With ``replace``, a file there is unlinked first; a
    directory where the file goes is removed (the checkout checked that
    nothing of the user's is in it)."""
    import errno
    import shutil

    if replace:
        try:
            os.unlink(dest)
        except FileNotFoundError:  # gone already
            pass
        except IsADirectoryError:
            shutil.rmtree(dest)
    try:
        fsutil.atomic_rename(tmp, dest)
    except OSError as e:
        if e.errno not in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
            raise
        if not os.path.isdir(dest) or os.path.islink(dest):
            raise
        shutil.rmtree(dest)  # a directory where the file goes
        fsutil.atomic_rename(tmp, dest)
