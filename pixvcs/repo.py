"""The repository: a git directory (written with dulwich) plus media store, index, catalog.

Layout of a work tree ``DIR`` (the full spec is docs/format.md)::

    DIR/.pixvcs/                 the git directory (HEAD, config, objects/, refs/)
    DIR/.pixvcs/lfs/objects/     media store, as git-lfs lays it out
    DIR/.pixvcs/pixvcs/          pixvcs's own state: index.db, catalog.db, lock, tmp/

Write order everywhere: media objects, then git objects, then the ref by
compare-and-swap, then the index. Every write happens under the repository
lock (an flock the kernel drops when its holder dies).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from . import fsutil
from .errors import (
    BadPath,
    BadRevision,
    MissingMedia,
    NotARepository,
    NothingToCommit,
    RefConflict,
    RepositoryExists,
    UnsupportedFormat,
    UsageError,
)
from .imageinfo import IMAGE_EXTENSIONS, MAX_PIXELS
from .index import Index
from .lazy import lazy_module
from .media import MediaStore
from .pointer import Pointer, format_pointer, looks_like_pointer, parse_pointer

# Modules that import dulwich load on first use: `status` on an unchanged HEAD
# never needs them, and Python start-up is most of a small command's time.
if TYPE_CHECKING:
    from dulwich import objects as dobj
    from dulwich.objects import Commit, ObjectID, ShaFile
    from dulwich.refs import Ref
    from dulwich.repo import Repo as GitRepo

    from . import diff as diff_mod
    from . import packs, trees
    from .catalog import Catalog
    from .diff import DatasetDiff, Side
    from .ingest import Ingested
    from .integrity import FsckReport, GcReport
    from .transfer import FetchResult, PushResult
else:
    dobj = lazy_module("dulwich.objects")
    diff_mod = lazy_module("pixvcs.diff")
    packs = lazy_module("pixvcs.packs")
    trees = lazy_module("pixvcs.trees")

GIT_DIR = ".pixvcs"
FORMAT_VERSION = 1
DEFAULT_BRANCH = "main"
IGNORE_FILE = ".pixvcsignore"
#: A ref lock file older than this, found while holding the repository lock, is stale.
STALE_REF_LOCK_SECONDS = 2.0

Progress = Callable[[str, int, int], None]


HEAD = cast("Ref", b"HEAD")


def _ref(name: str) -> Ref:
    return cast("Ref", name.encode())


def _oid(hex_id: str) -> ObjectID:
    return cast("ObjectID", hex_id.encode())


def _no_progress(stage: str, done: int, total: int) -> None:
    return None


GITATTRIBUTES = "".join(
    f"*{ext} filter=lfs diff=lfs merge=lfs -text\n*{ext.upper()} filter=lfs diff=lfs merge=lfs -text\n"
    for ext in IMAGE_EXTENSIONS
).encode()


@dataclass
class AddResult:
    added: list[str] = field(default_factory=list)  # staged: new or changed
    unchanged: int = 0
    invalid: list[tuple[str, str]] = field(default_factory=list)  # recorded with --allow-invalid


@dataclass
class Status:
    branch: str | None
    head: str | None
    staged_added: list[str] = field(default_factory=list)
    staged_modified: list[str] = field(default_factory=list)
    staged_deleted: list[str] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    untracked: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (
            self.staged_added
            or self.staged_modified
            or self.staged_deleted
            or self.modified
            or self.deleted
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "branch": self.branch,
            "head": self.head,
            "staged": {
                "added": self.staged_added,
                "modified": self.staged_modified,
                "deleted": self.staged_deleted,
            },
            "modified": self.modified,
            "deleted": self.deleted,
            "untracked": self.untracked,
            "clean": self.clean,
        }


@dataclass
class CommitInfo:
    id: str
    message: str
    author: str
    committer: str
    time: int  # author time, seconds since the epoch
    timezone: int  # offset from UTC in seconds
    parents: list[str]
    tree: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "message": self.message,
            "author": self.author,
            "committer": self.committer,
            "time": self.time,
            "timezone": self.timezone,
            "parents": self.parents,
            "tree": self.tree,
        }


@dataclass
class FileEntry:
    path: str
    mode: int
    kind: str
    blob: str
    oid: str | None
    size: int
    width: int | None = None
    height: int | None = None
    format: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "oid": self.oid,
            "size": self.size,
            "blob": self.blob,
            "mode": f"{self.mode:o}",
            "width": self.width,
            "height": self.height,
            "format": self.format,
        }


@dataclass
class CheckoutResult:
    target: str
    branch: str | None
    written: int = 0
    removed: int = 0


@dataclass
class MergeResult:
    kind: str  # "up-to-date" | "fast-forward" | "merge"
    commit: str | None
    changed: int = 0


def find_root(start: str) -> str:
    path = os.path.abspath(start)
    while True:
        if os.path.isdir(os.path.join(path, GIT_DIR)):
            return path
        parent = os.path.dirname(path)
        if parent == path:
            raise NotARepository(os.path.abspath(start))
        path = parent


class Repo(AbstractContextManager["Repo"]):
    """A pixvcs repository with a work tree (or a bare one, for remotes)."""

    def __init__(self, root: str, *, bare: bool = False) -> None:
        self.root = os.path.abspath(root)
        self.bare = bare
        self.git_dir = self.root if bare else os.path.join(self.root, GIT_DIR)
        if not os.path.isdir(os.path.join(self.git_dir, "objects")):
            raise NotARepository(self.root)
        self._git: GitRepo | None = None
        if self._check_format():
            self.git  # noqa: B018 - git extensions in use: let dulwich vet them now
        self.state_dir = os.path.join(self.git_dir, "pixvcs")
        self.tmp_dir = os.path.join(self.state_dir, "tmp")
        self.media = MediaStore(os.path.join(self.git_dir, "lfs"))
        self._index: Index | None = None
        self._catalog: Catalog | None = None
        #: Token for HTTP remotes whose URL and config have none (set by the opener).
        self.token: str | None = None
        #: Media objects this Repo hashed on arrival from a remote (a checkout that
        #: follows within the same command does not hash them again).
        self.verified_oids: set[str] = set()
        #: Pointers this Repo has parsed, by blob id (blobs never change).
        self.known_pointers: dict[str, Pointer] = {}
        #: Whether ``known_pointers`` holds the index's pointers already.
        self.index_pointers_loaded = False

    # -- lifecycle -------------------------------------------------------------
    @classmethod
    def init(
        cls,
        path: str,
        *,
        bare: bool = False,
        branch: str = DEFAULT_BRANCH,
        with_gitattributes: bool = True,
    ) -> Repo:
        root = os.path.abspath(path)
        git_dir = root if bare else os.path.join(root, GIT_DIR)
        if os.path.exists(os.path.join(git_dir, "objects")):
            raise RepositoryExists(root)
        os.makedirs(git_dir, exist_ok=True)
        from dulwich.repo import Repo as GitRepo

        git = GitRepo.init_bare(git_dir, default_branch=branch.encode())
        config = git.get_config()
        config.set(("core",), "bare", bare)
        config.set(("pixvcs",), "formatversion", str(FORMAT_VERSION).encode())
        config.set(("lfs",), "repositoryformatversion", b"0")
        config.write_to_path()
        git.close()
        MediaStore.create(os.path.join(git_dir, "lfs"))
        os.makedirs(os.path.join(git_dir, "pixvcs", "tmp"), exist_ok=True)
        repo = cls(root, bare=bare)
        if bare:
            from .transfer import install_hooks

            install_hooks(git_dir)
        if not bare and with_gitattributes:
            attrs = os.path.join(root, ".gitattributes")
            if not os.path.exists(attrs):
                fsutil.atomic_write(attrs, GITATTRIBUTES, repo.tmp_dir)
            repo.add([".gitattributes"])
        return repo

    @classmethod
    def open(cls, path: str = ".", *, search_parents: bool = True) -> Repo:
        path = os.path.abspath(path)
        if os.path.isdir(os.path.join(path, GIT_DIR)):
            return cls(path)
        if os.path.isdir(os.path.join(path, "objects")) and os.path.isfile(
            os.path.join(path, "HEAD")
        ):
            return cls(path, bare=True)
        if not search_parents:
            raise NotARepository(path)
        return cls(find_root(path))

    def _check_format(self) -> bool:
        """Refuse formats this pixvcs does not read; True when git extensions are set.

        Read with configparser (git's config syntax is a superset of what this
        needs) so that opening a repository does not load dulwich."""
        import configparser

        config = configparser.ConfigParser(strict=False, interpolation=None)
        try:
            config.read(os.path.join(self.git_dir, "config"), encoding="utf-8")
        except configparser.Error as e:
            raise UnsupportedFormat(-1, FORMAT_VERSION, f"unreadable config ({e})") from None
        git_version = config.get("core", "repositoryformatversion", fallback="0").strip()
        if git_version not in ("0", "1"):
            raise UnsupportedFormat(-1, 1, f"git core.repositoryformatversion {git_version}")
        raw = config.get("pixvcs", "formatversion", fallback=None)
        if raw is None:
            raise NotARepository(self.root)
        try:
            found = int(raw.strip())
        except ValueError:
            raise UnsupportedFormat(-1, FORMAT_VERSION) from None
        if found > FORMAT_VERSION or found < 1:
            raise UnsupportedFormat(found, FORMAT_VERSION)
        return config.has_section("extensions")

    @property
    def git(self) -> GitRepo:
        """The dulwich repository (opened on first use)."""
        if self._git is None:
            from dulwich.repo import Repo as GitRepo
            from dulwich.repo import UnsupportedExtension, UnsupportedVersion

            try:
                self._git = GitRepo(self.git_dir, bare=True)
                packs.guard_bitmaps(self._git.object_store)
            except UnsupportedVersion as e:
                raise UnsupportedFormat(
                    e.version, 1, f"git core.repositoryformatversion {e.version}"
                ) from None
            except UnsupportedExtension as e:
                raise UnsupportedFormat(
                    -1, FORMAT_VERSION, f"git extension {e.extension!r}"
                ) from None
        return self._git

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None
        if self._catalog is not None:
            self._catalog.close()
            self._catalog = None
        if self._git is not None:
            self._git.close()
            self._git = None

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def index(self) -> Index:
        if self._index is None:
            self._index = Index(os.path.join(self.state_dir, "index.db"))
        return self._index

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            from .catalog import Catalog

            self._catalog = Catalog(os.path.join(self.state_dir, "catalog.db"))
        return self._catalog

    def lock(self, timeout: float = 30.0) -> AbstractContextManager[None]:
        return fsutil.repo_lock(os.path.join(self.state_dir, "lock"), timeout=timeout)

    @property
    def store(self) -> Any:
        return self.git.object_store

    # -- revisions ---------------------------------------------------------------
    def head_commit(self) -> str | None:
        """The commit HEAD resolves to; None before the first commit."""
        fast = self._read_head()
        if fast is not None:
            return fast[1]
        try:
            return self.git.refs[HEAD].decode()
        except KeyError:
            return None

    def current_branch(self) -> str | None:
        """The branch HEAD points at (even before its first commit), or None if detached."""
        fast = self._read_head()
        if fast is not None:
            return fast[0]
        chain, _ = self.git.refs.follow(HEAD)
        if len(chain) > 1 and chain[-1].startswith(b"refs/heads/"):
            return chain[-1][len(b"refs/heads/") :].decode()
        return None

    def _read_head(self) -> tuple[str | None, str | None] | None:
        """(branch, commit) of HEAD read straight from the files, in git's formats
        (``HEAD``, a loose ref, ``packed-refs``), without loading dulwich; None
        for anything unusual (then dulwich decides)."""
        try:
            with open(os.path.join(self.git_dir, "HEAD"), encoding="utf-8") as f:
                head = f.read().strip()
            if not head.startswith("ref: "):
                return (None, head) if _is_sha(head) else None
            ref = head[5:]
            if not ref.startswith("refs/heads/") or ".." in ref:
                return None
            branch = ref[len("refs/heads/") :]
            try:
                with open(os.path.join(self.git_dir, *ref.split("/")), encoding="utf-8") as f:
                    sha = f.read().strip()
                return (branch, sha) if _is_sha(sha) else None
            except FileNotFoundError:
                pass
            try:
                with open(os.path.join(self.git_dir, "packed-refs"), encoding="utf-8") as f:
                    for line in f:
                        parts = line.split()
                        if len(parts) == 2 and parts[1] == ref and _is_sha(parts[0]):
                            return branch, parts[0]
            except FileNotFoundError:
                pass
            return branch, None  # an unborn branch
        except (OSError, UnicodeDecodeError):  # let dulwich report whatever this is
            return None

    def resolve(self, rev: str) -> str:
        """Commit id for a branch, tag, (short) commit id, HEAD, with ``~N`` / ``^`` suffixes."""
        base, steps = rev, 0
        while True:
            if base.endswith("^"):
                base, steps = base[:-1], steps + 1
                continue
            head, sep, num = base.rpartition("~")
            if sep and (num.isdigit() or num == ""):
                base, steps = head, steps + (int(num) if num else 1)
                continue
            break
        commit = self._resolve_one(base, rev)
        for _ in range(steps):
            if not commit.parents:
                raise BadRevision(rev, "no such ancestor")
            commit = self._commit(commit.parents[0].decode())
        return commit.id.decode()

    def _resolve_one(self, name: str, rev: str) -> Commit:
        from dulwich.objectspec import parse_commit

        if not name:
            raise BadRevision(rev)
        candidates = (
            [name]
            if name.startswith("refs/") or name == "HEAD"
            else [f"refs/heads/{name}", f"refs/tags/{name}", f"refs/remotes/{name}", name]
        )
        for cand in candidates:
            try:
                sha = self.git.refs[_ref(cand)]
            except KeyError:
                continue
            except ValueError:  # malformed ref name
                raise BadRevision(rev, "invalid revision name") from None
            return self._peel(sha, rev)
        try:
            return parse_commit(self.git, name.encode())
        except (KeyError, ValueError):
            raise BadRevision(rev) from None

    def _peel(self, sha: bytes, rev: str) -> Commit:
        obj = self.store[sha]
        while isinstance(obj, dobj.Tag):
            obj = self.store[obj.object[1]]
        if not isinstance(obj, dobj.Commit):
            raise BadRevision(rev, "not a commit")
        return obj

    def _commit(self, commit_id: str) -> Commit:
        try:
            obj = self.store[commit_id.encode()]
        except KeyError:
            raise BadRevision(commit_id, "missing commit object") from None
        if not isinstance(obj, dobj.Commit):
            raise BadRevision(commit_id, "not a commit")
        return obj

    def tree_of(self, rev: str | None) -> bytes | None:
        """Root tree id of a revision; None for an unborn HEAD."""
        if rev is None:
            head = self.head_commit()
            return None if head is None else bytes(self._commit(head).tree)
        return bytes(self._commit(self.resolve(rev)).tree)

    # -- paths -------------------------------------------------------------------
    def relpath(self, path: str) -> str:
        """Repository-relative "/" path for an absolute path or one relative to the root."""
        full = os.path.normpath(path if os.path.isabs(path) else os.path.join(self.root, path))
        rel = os.path.relpath(full, self.root)
        if rel == ".":
            return ""
        if rel.startswith(".."):
            raise BadPath(path, "outside the repository")
        rel = rel.replace(os.sep, "/")
        first = rel.split("/", 1)[0]
        if first in (GIT_DIR, ".git"):
            raise BadPath(path, "inside the repository's git directory")
        return rel

    def _abspath(self, rel: str) -> str:
        return os.path.join(self.root, *rel.split("/"))

    # -- add / rm / status (see staging.py) ----------------------------------------
    def add(
        self,
        paths: Sequence[str],
        *,
        allow_invalid: bool = False,
        force: bool = False,
        link: bool = False,
        max_pixels: int = MAX_PIXELS,
        jobs: int | None = None,
        progress: Progress = _no_progress,
    ) -> AddResult:
        """Stage files (directories recursively). Invalid images refuse the whole call."""
        with self.lock():
            from .staging import add

            return add(
                self,
                paths,
                allow_invalid=allow_invalid,
                force=force,
                link=link,
                max_pixels=max_pixels,
                jobs=jobs,
                progress=progress,
            )

    def rm(
        self, paths: Sequence[str], *, recursive: bool = False, cached: bool = False
    ) -> list[str]:
        """Stop tracking paths; unless ``cached``, delete them from the work tree too."""
        from .staging import rm

        return rm(self, paths, recursive=recursive, cached=cached)

    def status(self, *, progress: Progress = _no_progress) -> Status:
        """Staged, modified, deleted and untracked files (unchanged files are not read)."""
        from .staging import status

        return status(self, progress=progress)

    def _worktree_changes(
        self,
        *,
        progress: Progress,
        untracked: list[str] | None = None,
        only: Iterable[str] | None = None,
    ) -> dict[str, Ingested | None]:
        from .staging import worktree_changes

        return worktree_changes(self, progress=progress, untracked=untracked, only=only)

    def _add_git_objects(self, objects: list[tuple[ShaFile, str | None]]) -> None:
        packs.add_objects(self.store, objects)

    # -- status ------------------------------------------------------------------
    def _sync_base(self) -> None:
        """If HEAD moved outside pixvcs, make the index's base match it (slow path)."""
        head = self.head_commit()
        base = self.index.get_meta("base_commit")
        if head == base or (head is None and base is None):
            return
        head_tree = None if head is None else bytes(self._commit(head).tree)
        flat = {p: (m, b) for p, m, b in trees.walk(self.store, head_tree)}
        interrupted = self.index.get_meta("switch_to") if base == "" else None
        with self.index.transaction():
            self.index.rebase(flat, head or "")
            if interrupted:
                from .staging import adopt_switched

                self.index.stage(adopt_switched(self, head_tree, interrupted.encode()))
            self.index.set_meta("switch_to", "")

    # -- commit --------------------------------------------------------------------
    def commit(
        self,
        message: str,
        *,
        author: str | None = None,
        committer: str | None = None,
        allow_empty: bool = False,
        timestamp: int | None = None,
        verify: bool = True,
    ) -> str:
        """Record the staged changes as a new commit on the current branch.

        With ``verify``, the repository's pre-commit hook (if installed) runs
        first and can refuse the commit (HookFailed)."""
        if verify:
            from .hooks import run as run_hook

            run_hook(self, "pre-commit")
        with self.lock():
            return self._commit_index(
                message,
                author=author,
                committer=committer,
                allow_empty=allow_empty,
                timestamp=timestamp,
            )

    def default_identity(self) -> str:
        config = self.git.get_config_stack()
        try:
            name = config.get(("user",), "name").decode()
            email = config.get(("user",), "email").decode()
        except KeyError:
            import getpass
            import socket

            user = getpass.getuser()
            return f"{user} <{user}@{socket.gethostname()}>"
        return f"{name} <{email}>"

    def _commit_index(
        self,
        message: str,
        *,
        author: str | None,
        committer: str | None,
        allow_empty: bool,
        timestamp: int | None,
        extra_parents: Sequence[str] = (),
    ) -> str:
        self._sync_base()
        staged = self.index.staged()
        if not staged and not allow_empty and not extra_parents:
            raise NothingToCommit()
        head = self.head_commit()
        base_tree = self._commit(head).tree if head else None
        new_objects: list[tuple[ShaFile, str | None]] = []
        changes: list[tuple[str, int | None, str | None]] = []
        missing = []
        for e in staged:
            if e.blob is None:
                changes.append((e.path, None, None))
                continue
            changes.append((e.path, e.mode, e.blob))
            if e.kind == "media":
                assert e.oid is not None
                if not self.media.has(e.oid):
                    missing.append((e.path, e.oid))
                new_objects.append((dobj.Blob.from_string(format_pointer(e.oid, e.size)), e.path))
        if missing:
            raise MissingMedia(missing, self.media.root)
        tree_id = trees.update(self.store, base_tree, changes, new_objects)
        if tree_id == trees.EMPTY_TREE_ID:
            new_objects.append((dobj.Tree(), None))
        commit_id = self._write_commit(
            tree_id,
            [head] if head else [],
            message,
            author=author,
            committer=committer,
            timestamp=timestamp,
            extra_parents=extra_parents,
            objects=new_objects,
        )
        self._move_head(head, commit_id, message)
        with self.index.transaction():
            self.index.mark_committed(commit_id)
        diff_mod.counts_after_commit(self, base_tree, tree_id, staged)
        return commit_id

    def _write_commit(
        self,
        tree_id: bytes,
        parents: list[str],
        message: str,
        *,
        author: str | None,
        committer: str | None,
        timestamp: int | None,
        extra_parents: Sequence[str] = (),
        objects: list[tuple[ShaFile, str | None]] | None = None,
    ) -> str:
        c = dobj.Commit()
        c.tree = tree_id
        c.parents = [_oid(p) for p in [*parents, *extra_parents]]
        who = author or self.default_identity()
        c.author = who.encode()
        c.committer = (committer or who).encode()
        now = int(time.time()) if timestamp is None else timestamp
        tz = -time.timezone if not time.localtime(now).tm_isdst else -time.altzone
        c.author_time = c.commit_time = now
        c.author_timezone = c.commit_timezone = tz
        c.message = message.encode() if message.endswith("\n") else (message + "\n").encode()
        objs = list(objects or [])
        objs.append((c, None))
        self._add_git_objects(objs)
        return c.id.decode()

    def _move_head(self, old: str | None, new: str, message: str) -> None:
        """Advance the current branch (or detached HEAD) from ``old`` to ``new`` by CAS."""
        branch = self.current_branch()
        ref = _ref(f"refs/heads/{branch}") if branch else HEAD
        msg = f"pixvcs: {message.splitlines()[0] if message else ''}".encode()
        if old is None:
            ok = self._refs(self.git.refs.add_if_new, ref, _oid(new), message=msg)
        else:
            ok = self._refs(self.git.refs.set_if_equals, ref, _oid(old), _oid(new), message=msg)
        if not ok:
            raise RefConflict(ref.decode())

    def commit_files(
        self,
        branch: str,
        files: Sequence[tuple[str, str, int] | tuple[str, bytes]],
        message: str,
        *,
        base: str | None = None,
        author: str | None = None,
    ) -> str:
        """Commit files onto ``branch`` without touching the work tree or the index
        (crawl workers stage versions this way for review).

        ``files`` are ``(path, oid, size)`` for media already in the media store,
        or ``(path, content)`` for ordinary files. The new commit's parent is the
        branch's head, or ``base`` (a revision) when the branch does not exist
        yet; the branch moves by compare-and-swap. A first commit (no parent) gets
        the ``.gitattributes`` that ``init`` writes unless ``files`` has one.
        Returns the commit id."""
        with self.lock():
            ref = _ref(f"refs/heads/{branch}")
            _check_ref_name(branch)
            try:
                parent: str | None = self.git.refs[ref].decode()
            except KeyError:
                parent = self.resolve(base) if base else self.head_commit()
            if parent is None and not any(f[0] == ".gitattributes" for f in files):
                # a first version carries the LFS attributes, as one made by init+add does
                files = [*files, (".gitattributes", GITATTRIBUTES)]
            new_objects: list[tuple[ShaFile, str | None]] = []
            changes: list[tuple[str, int | None, str | None]] = []
            missing = []
            for item in files:
                path = self.relpath(item[0]) if os.path.isabs(item[0]) else item[0]
                for part in path.split("/"):
                    trees.check_name(part.encode(), "")
                if len(item) == 3:
                    _p, oid, size = item
                    if not self.media.has(oid):
                        missing.append((path, oid))
                    blob = dobj.Blob.from_string(format_pointer(oid, size))
                else:
                    blob = dobj.Blob.from_string(item[1])
                new_objects.append((blob, path))
                changes.append((path, 0o100644, blob.id.decode()))
            if missing:
                raise MissingMedia(missing, self.media.root)
            base_tree = self._commit(parent).tree if parent else None
            tree_id = trees.update(self.store, base_tree, changes, new_objects)
            commit_id = self._write_commit(
                tree_id,
                [parent] if parent else [],
                message,
                author=author,
                committer=None,
                timestamp=None,
                objects=new_objects,
            )
            old = _oid(parent) if parent else None
            if old is None or ref not in self.git.refs:
                ok = self._refs(self.git.refs.add_if_new, ref, _oid(commit_id))
            else:
                ok = self._refs(self.git.refs.set_if_equals, ref, old, _oid(commit_id))
            if not ok:
                raise RefConflict(ref.decode())
            return commit_id

    # -- history -------------------------------------------------------------------
    def commit_info(self, commit_id: str) -> CommitInfo:
        c = self._commit(commit_id)
        return CommitInfo(
            id=c.id.decode(),
            message=c.message.decode("utf-8", "replace"),
            author=c.author.decode("utf-8", "replace"),
            committer=c.committer.decode("utf-8", "replace"),
            time=c.author_time,
            timezone=c.author_timezone,
            parents=[p.decode() for p in c.parents],
            tree=c.tree.decode(),
        )

    def log(self, rev: str | None = None, *, max_count: int | None = None) -> list[CommitInfo]:
        start = self.resolve(rev) if rev else self.head_commit()
        if start is None:
            return []
        walker = self.git.get_walker(include=[_oid(start)], max_entries=max_count)
        return [self.commit_info(entry.commit.id.decode()) for entry in walker]

    # -- branches and tags -----------------------------------------------------------
    def branches(self) -> dict[str, str]:
        return {
            k.decode(): v.decode() for k, v in self.git.refs.as_dict(_ref("refs/heads")).items()
        }

    def tags(self) -> dict[str, str]:
        out = {}
        for name, sha in self.git.refs.as_dict(_ref("refs/tags")).items():
            out[name.decode()] = self._peel(sha, name.decode()).id.decode()
        return out

    def create_branch(self, name: str, rev: str | None = None, *, force: bool = False) -> str:
        _check_ref_name(name)
        target = self.resolve(rev) if rev else self.head_commit()
        if target is None:
            raise BadRevision("HEAD", "no commits yet")
        ref = _ref(f"refs/heads/{name}")
        if force:
            self._refs(self.git.refs.set_if_equals, ref, None, _oid(target))
        elif not self._refs(self.git.refs.add_if_new, ref, _oid(target)):
            raise UsageError(f"a branch named {name!r} already exists")
        return target

    def delete_branch(self, name: str) -> str:
        if name == self.current_branch():
            raise UsageError(f"cannot delete the branch {name!r} you are on")
        ref = _ref(f"refs/heads/{name}")
        try:
            old = self.git.refs[ref]
        except KeyError:
            raise BadRevision(name, "no such branch") from None
        if not self._refs(self.git.refs.remove_if_equals, ref, old):
            raise RefConflict(ref.decode())
        return old.decode()

    def create_tag(
        self,
        name: str,
        rev: str | None = None,
        *,
        message: str | None = None,
        tagger: str | None = None,
        force: bool = False,
    ) -> str:
        _check_ref_name(name)
        target = self.resolve(rev) if rev else self.head_commit()
        if target is None:
            raise BadRevision("HEAD", "no commits yet")
        value = _oid(target)
        if message is not None:
            tag = dobj.Tag()
            tag.object = (dobj.Commit, target.encode())
            tag.name = name.encode()
            tag.tagger = (tagger or self.default_identity()).encode()
            tag.tag_time = int(time.time())
            tag.tag_timezone = 0
            tag.message = message.encode() + (b"" if message.endswith("\n") else b"\n")
            self.store.add_object(tag)
            value = tag.id
        ref = _ref(f"refs/tags/{name}")
        if force:
            self._refs(self.git.refs.set_if_equals, ref, None, value)
        elif not self._refs(self.git.refs.add_if_new, ref, value):
            raise UsageError(f"tag {name!r} already exists")
        return target

    def delete_tag(self, name: str) -> str:
        """Delete a tag; returns the commit it pointed at."""
        ref = _ref(f"refs/tags/{name}")
        if ref not in self.git.refs:
            raise BadRevision(name, "no such tag")
        target = self._peel(self.git.refs[ref], name).id.decode()
        self._refs(self.git.refs.remove_if_equals, ref, None)
        return target

    # -- listing -------------------------------------------------------------------
    def ls(self, rev: str | None = None) -> list[FileEntry]:
        tree = self.tree_of(rev)
        out = []
        for path, mode, blob in trees.walk(self.store, tree):
            out.append(self._file_entry(path, mode, blob))
        self._fill_catalog(out)
        return out

    def _file_entry(self, path: str, mode: int, blob: str) -> FileEntry:
        data = trees.blob_bytes(self.store, blob)
        if looks_like_pointer(data):
            p = parse_pointer(data)
            return FileEntry(path, mode, "media", blob, p.oid, p.size)
        return FileEntry(path, mode, "blob", blob, None, len(data))

    def _fill_catalog(self, entries: list[FileEntry]) -> None:
        rows = self.catalog.get_many([e.oid for e in entries if e.oid])
        for e in entries:
            row = rows.get(e.oid) if e.oid else None
            if row is not None:
                e.width, e.height, e.format = row.width, row.height, row.format

    # -- diff ----------------------------------------------------------------------
    def diff(
        self, old: str | None = None, new: str | None = None, *, progress: Progress = _no_progress
    ) -> DatasetDiff:
        """Dataset diff: no rev = work tree vs HEAD; one = ``old`` vs the work tree;
        two = ``old`` vs ``new``."""
        from .diff import diff_trees

        if new is not None:
            if old is None:
                raise UsageError("diff with a new revision needs an old one")
            return diff_trees(
                self, self.tree_of(old), self.tree_of(new), old_label=old, new_label=new
            )
        if self.bare:
            raise UsageError("a bare repository has no work tree to diff against")
        self._sync_base()
        old_tree = self.tree_of(old) if old else self.tree_of(None)
        return diff_trees(
            self,
            old_tree,
            self.tree_of(None),
            old_label=old or "HEAD",
            new_label=None,
            overlay=self._worktree_overlay(progress),
        )

    def _worktree_overlay(self, progress: Progress) -> dict[str, Side | None]:
        entries = {e.path: e for e in self.index.entries()}
        overlay: dict[str, Side | None] = {}
        for e in entries.values():
            if e.dirty:
                overlay[e.path] = (
                    None if e.blob is None else diff_mod.Side(e.mode, e.blob, e.kind, e.oid, e.size)
                )
        for path, item in self._worktree_changes(progress=progress).items():
            overlay[path] = (
                None
                if item is None
                else diff_mod.Side(item.mode, item.blob, item.kind, item.oid, item.size)
            )
        return overlay

    # -- checkout ------------------------------------------------------------------
    # -- checkout, rollback, merge (see worktree.py) --------------------------------
    def checkout(
        self,
        rev: str,
        *,
        force: bool = False,
        paths: Sequence[str] | None = None,
        link: bool = False,
        include: Sequence[str] | None = None,
        where: Mapping[str, Any] | None = None,
        progress: Progress = _no_progress,
    ) -> CheckoutResult:
        """Make the work tree exactly ``rev`` (see worktree.checkout). ``include``
        (path globs) and ``where`` (:func:`pixvcs.open`'s filters) make it a sparse
        work tree holding only those images, from now on (pixvcs.sparse); both
        given empty make it whole again; neither keeps the current selection."""
        from .worktree import checkout

        selection = None
        if include is not None or where is not None:
            from .sparse import Selection

            selection = Selection.make(include or (), where or {})
        return checkout(
            self, rev, force=force, paths=paths, link=link, selection=selection, progress=progress
        )

    def rollback(
        self,
        rev: str,
        *,
        message: str | None = None,
        author: str | None = None,
        force: bool = False,
        progress: Progress = _no_progress,
    ) -> str:
        """A new commit on the current branch whose tree is ``rev``'s (see worktree.rollback)."""
        from .worktree import rollback

        return rollback(self, rev, message=message, author=author, force=force, progress=progress)

    def merge(
        self,
        rev: str,
        *,
        message: str | None = None,
        author: str | None = None,
        progress: Progress = _no_progress,
    ) -> MergeResult:
        """Merge ``rev`` into the current branch (see worktree.merge)."""
        from .worktree import merge

        return merge(self, rev, message=message, author=author, progress=progress)

    def _refs(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a ref update; recover from a ref lock file left by a killed process.

        Callers hold the repository lock, so no other pixvcs process is writing
        refs; a ``*.lock`` still there after a short wait belongs to a process
        that died mid-update (stock git holds one for microseconds) and is removed.
        """
        from dulwich.file import FileLocked

        if not fsutil.holding_lock():
            with self.lock():
                return self._refs(fn, *args, **kwargs)
        for _attempt in range(20):
            try:
                return fn(*args, **kwargs)
            except FileLocked as e:
                lock = os.fsdecode(e.lockfilename)
                try:
                    age = time.time() - os.lstat(lock).st_mtime
                except FileNotFoundError:  # released meanwhile: try again
                    continue
                if age > STALE_REF_LOCK_SECONDS:
                    os.unlink(lock)
                    continue
                time.sleep(0.2)
        name = args[0] if args else b"?"
        raise RefConflict(name.decode() if isinstance(name, bytes) else str(name))

    def _detach_head(self, target: str) -> None:
        """Point HEAD straight at a commit, atomically (lock file and rename)."""
        from dulwich.file import GitFile

        with GitFile(os.path.join(self.git_dir, "HEAD"), "wb") as f:
            f.write(target.encode() + b"\n")

    def _prune_dirs(self, rel: str) -> None:
        parts = rel.split("/")[:-1]
        while parts:
            try:
                os.rmdir(self._abspath("/".join(parts)))
            except OSError:  # not empty (or gone): stop climbing
                return
            parts.pop()

    # -- remotes (see remote.py, transfer.py) -----------------------------------------
    def remotes(self) -> dict[str, str]:
        """Configured remotes: name -> URL."""
        from .remote import remotes

        return remotes(self)

    def add_remote(self, name: str, url: str) -> None:
        from .remote import add_remote

        with self.lock():
            add_remote(self, name, url)

    def remove_remote(self, name: str) -> None:
        from .remote import remove_remote

        with self.lock():
            remove_remote(self, name)

    def push(
        self,
        remote: str = "origin",
        refs: Sequence[str] = (),
        *,
        tags: bool = False,
        force: bool = False,
        verify: bool = True,
        progress: Progress = _no_progress,
    ) -> PushResult:
        """Send branches (default: the current one): media, then history, then
        the remote refs by compare-and-swap. Non-fast-forward needs ``force``."""
        from .transfer import push

        with self.lock():
            return push(
                self, remote, refs, tags=tags, force=force, verify=verify, progress=progress
            )

    def fetch(
        self, remote: str = "origin", *, all_media: bool = False, progress: Progress = _no_progress
    ) -> FetchResult:
        """History into refs/remotes/REMOTE/*; media on demand (or all with ``all_media``)."""
        from .transfer import fetch

        with self.lock():
            return fetch(self, remote, all_media=all_media, progress=progress)

    def pull(
        self,
        remote: str | None = None,
        branch: str | None = None,
        *,
        progress: Progress = _no_progress,
    ) -> MergeResult:
        """Fetch, then merge the remote branch (fast-forward when possible)."""
        from .transfer import upstream

        current = self.current_branch()
        if current is None and branch is None:
            raise UsageError("HEAD is detached: name the remote branch to pull")
        default_remote, default_branch = upstream(self, current or "")
        remote = remote or default_remote
        self.fetch(remote, progress=progress)
        return self.merge(f"{remote}/{branch or default_branch}", progress=progress)

    @classmethod
    def clone(
        cls,
        url: str,
        directory: str,
        *,
        rev: str | None = None,
        token: str | None = None,
        lfs_url: str | None = None,
        include: Sequence[str] | None = None,
        where: Mapping[str, Any] | None = None,
        progress: Progress = _no_progress,
    ) -> Repo:
        """All history from ``url``; media of the checked-out version only.
        ``token`` is for an HTTP remote whose URL has none (kept as ``Repo.token``);
        ``lfs_url`` for an LFS server elsewhere than ``URL.git/info/lfs``."""
        from .transfer import clone

        return clone(
            url,
            directory,
            rev=rev,
            token=token,
            lfs_url=lfs_url,
            include=include,
            where=where,
            progress=progress,
        )

    def fetch_media(
        self, oids: Iterable[str], *, remote: str | None = None, progress: Progress = _no_progress
    ) -> int:
        """Download media objects missing here from the remotes (origin first)."""
        from .transfer import fetch_media

        return fetch_media(self, oids, remote=remote, progress=progress)

    # -- integrity (see integrity.py) ---------------------------------------------
    def fsck(self, *, progress: Progress = _no_progress) -> FsckReport:
        """Check every reachable git object and pointer, and every media object's hash."""
        from .integrity import fsck

        return fsck(self, progress=progress)

    def gc(self, *, progress: Progress = _no_progress, grace: float | None = None) -> GcReport:
        """Remove media objects no ref and no index entry reaches; pack loose git objects.
        ``grace`` (seconds, default one hour): temporary files, and a bucket's
        unreachable objects, younger than this are kept."""
        from .integrity import GC_GRACE, gc

        with self.lock():
            return gc(self, progress=progress, grace=GC_GRACE if grace is None else grace)

    def rebuild_catalog(self, *, progress: Progress = _no_progress) -> dict[str, Any]:
        from .catalog import rebuild

        with self.lock():
            oids = sorted(self.media)
            return rebuild(
                self.catalog, oids, self.media.read, progress=lambda d, t: progress("catalog", d, t)
            )


def _dirs_of(paths: Iterable[str]) -> set[str]:
    out: set[str] = set()
    for p in paths:
        parts = p.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            out.add("/".join(parts[:i]))
    return out


def _is_sha(text: str) -> bool:
    return len(text) == 40 and all(c in "0123456789abcdef" for c in text)


def _check_ref_name(name: str) -> None:
    from dulwich.refs import check_ref_format

    if not name or name.startswith("-") or not check_ref_format(_ref(f"refs/heads/{name}")):
        raise UsageError(f"{name!r} is not a valid branch or tag name")
