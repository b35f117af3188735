"""The pixvcs exception tree.

Every error pixvcs raises on purpose derives from :class:`PixvcsError`; the CLI
turns each into a one-line message and a non-zero exit code::

    PixvcsError
    ├── NotARepository          no .pixvcs directory at or above the path
    ├── RepositoryExists        init over an existing repository
    ├── UnsupportedFormat       repository format newer than this pixvcs reads
    ├── LockTimeout             another live process holds the repository lock
    ├── BadRevision             a revision name that resolves to nothing
    ├── BadPath                 a path outside the working tree, or not tracked
    ├── InvalidImages           add refused files that do not decode (carries all)
    ├── InvalidPointer          a blob that claims to be an LFS pointer but is malformed
    ├── UnsafeTreeEntry         a tree entry that could escape the working tree
    ├── MissingMedia            a media object needed for an operation is absent
    ├── CorruptObject           stored bytes do not hash to their name
    ├── MissingObject           a git object that history needs is absent
    ├── LocalChanges            an operation would overwrite uncommitted work
    ├── MergeConflict           both sides changed the same paths (carries them)
    ├── NothingToCommit         commit with no staged change
    ├── RefConflict             a compare-and-swap ref update lost a race
    ├── RemoteError             a remote is unreachable or answers with an error
    ├── HookFailed              a hook (pre-commit, pre-push) refused the operation
    ├── MissingDependency       an optional library a method needs is not installed
    ├── LabelsFileError         a version's labels.csv is malformed
    ├── CrawlWorkerError        a crawl failed on a Celery worker, or no worker serves the repository
    └── UsageError              a request that makes no sense (exit code 2)
        ├── CrawlInputError     a crawl's URL list, config or option is malformed (names the line)
        └── ProvenanceError     a provenance file in a version is malformed (names the line)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _rebuild(cls: type[PixvcsError], args: tuple[Any, ...], state: dict[str, Any]) -> PixvcsError:
    err = cls.__new__(cls)
    err.args = args
    err.__dict__.update(state)
    return err


class PixvcsError(Exception):
    """Root of every error pixvcs raises deliberately.

    Picklable whatever a subclass's ``__init__`` takes (an error raised in a
    worker process, a DataLoader worker or a multiprocessing pool reaches the
    parent intact: unpickling rebuilds it without calling ``__init__``)."""

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))

    exit_code = 1


class NotARepository(PixvcsError):
    """Raised when no pixvcs repository is found at or above a path."""

    def __init__(self, path: str) -> None:
        super().__init__(f"not a pixvcs repository (or any parent up to /): {path}")
        self.path = path


class RepositoryExists(PixvcsError):
    """Raised by init when the directory already holds a repository."""

    def __init__(self, path: str) -> None:
        super().__init__(f"a pixvcs repository already exists at {path}")
        self.path = path


class UnsupportedFormat(PixvcsError):
    """Raised when a repository's format version (pixvcs's, or git's
    ``core.repositoryformatversion`` and extensions) is newer than this pixvcs reads."""

    def __init__(self, found: int, supported: int, detail: str | None = None) -> None:
        what = detail or f"repository format version {found}"
        super().__init__(f"{what} is newer than this pixvcs supports ({supported}); upgrade pixvcs")
        self.found = found
        self.supported = supported


class LockTimeout(PixvcsError):
    """Raised when the repository lock is held by another live process too long."""

    def __init__(self, path: str, holder: str) -> None:
        super().__init__(f"repository is locked by another process ({holder}): {path}")
        self.path = path
        self.holder = holder


class BadRevision(PixvcsError):
    """Raised when a revision (branch, tag, commit id, HEAD~N) resolves to nothing."""

    def __init__(self, rev: str, why: str = "unknown revision") -> None:
        super().__init__(f"{why}: {rev}")
        self.rev = rev


class BadPath(PixvcsError):
    """Raised for a path outside the working tree, or one that matches nothing."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(f"{path}: {why}")
        self.path = path
        self.why = why


class InvalidImages(PixvcsError):
    """Raised by add when files that look like images do not decode; nothing is staged."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  {path}: {why}" for path, why in self.problems)
        super().__init__(
            f"refused {len(self.problems)} invalid image(s); nothing was staged "
            f"(use --allow-invalid to record them as invalid):\n{lines}"
        )


class InvalidPointer(PixvcsError):
    """Raised when a blob starts like an LFS pointer but breaks the spec."""

    def __init__(self, why: str) -> None:
        super().__init__(f"malformed LFS pointer: {why}")
        self.why = why


class UnsafeTreeEntry(PixvcsError):
    """Raised before any write when a tree entry could escape or damage the work tree."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(f"refusing unsafe tree entry {path!r}: {why}")
        self.path = path
        self.why = why


class MissingMedia(PixvcsError):
    """Raised when media objects an operation needs are not in the store."""

    def __init__(self, missing: Sequence[tuple[str, str]], where: str) -> None:
        self.missing = list(missing)
        self.where = where
        shown = "\n".join(f"  {path}: {oid}" for path, oid in self.missing[:20])
        more = f"\n  ... and {len(self.missing) - 20} more" if len(self.missing) > 20 else ""
        super().__init__(
            f"{len(self.missing)} media object(s) missing from {where}:\n{shown}{more}"
        )


class CorruptObject(PixvcsError):
    """Raised when stored bytes do not hash to the name they are stored under."""

    def __init__(self, expected: str, got: str, where: str) -> None:
        super().__init__(f"corrupt object {expected} in {where}: bytes hash to {got}")
        self.expected = expected
        self.got = got
        self.where = where


class MissingObject(PixvcsError):
    """Raised when a git object reachable from a ref is absent (gc then removes nothing)."""

    def __init__(self, object_id: str, why: str) -> None:
        super().__init__(f"git object {object_id} is missing: {why} (run 'pixvcs fsck')")
        self.object_id = object_id


class LocalChanges(PixvcsError):
    """Raised when an operation would overwrite uncommitted changes (use force)."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = list(paths)
        shown = "\n".join(f"  {p}" for p in self.paths[:20])
        more = f"\n  ... and {len(self.paths) - 20} more" if len(self.paths) > 20 else ""
        super().__init__(
            f"your local changes would be overwritten (commit them, or use --force):\n{shown}{more}"
        )


class MergeConflict(PixvcsError):
    """Raised when both sides of a merge changed the same paths differently."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = list(paths)
        shown = "\n".join(f"  {p}" for p in self.paths[:50])
        super().__init__(
            f"merge conflict in {len(self.paths)} path(s); nothing was changed:\n{shown}"
        )


class NothingToCommit(PixvcsError):
    """Raised by commit when the index equals HEAD."""

    def __init__(self) -> None:
        super().__init__("nothing to commit (use 'pixvcs add')")


class RefConflict(PixvcsError):
    """Raised when a ref moved under us between read and compare-and-swap."""

    def __init__(self, ref: str) -> None:
        super().__init__(f"ref {ref} was updated concurrently; try again")
        self.ref = ref


class MissingDependency(PixvcsError, ImportError):
    """Raised when an optional library a method needs (e.g. ``datasets``) is not installed."""

    def __init__(self, package: str, feature: str) -> None:
        super().__init__(
            f"{feature} needs the {package!r} library, which is not installed: "
            f"pip install {package}"
        )
        self.package = package


class CrawlWorkerError(PixvcsError):
    """Raised when a crawl job sent to Celery workers fails there, or when no
    ``pixvcs worker`` serves the repository's queue on the broker."""


class LabelsFileError(PixvcsError):
    """Raised when a version's ``labels.csv`` is malformed (names the line and the problem)."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(f"{path}: {why}")
        self.path = path
        self.why = why


class RemoteError(PixvcsError):
    """Raised when a remote cannot be reached or answers with an error (HTTP
    status, malformed response, refused credentials); carries the URL."""

    def __init__(self, url: str, message: str) -> None:
        super().__init__(f"{url}: {message}")
        self.url = url


class HookFailed(PixvcsError):
    """Raised when a hook in .pixvcs/hooks exits non-zero; the operation did not happen."""

    def __init__(self, hook: str, status: int, output: str) -> None:
        shown = output if len(output) < 4000 else output[:4000] + "\n..."
        super().__init__(f"the {hook} hook refused (exit {status}):\n{shown}")
        self.hook = hook
        self.status = status
        self.output = output


class UsageError(PixvcsError):
    """Raised for a request that makes no sense (e.g. deleting the current branch)."""

    exit_code = 2


class CrawlInputError(UsageError):
    """Raised before anything is fetched when a crawl's input (a URL list, a keyword
    config, an option) is malformed; names the file and line (0: the whole file)."""

    def __init__(self, source: str, line: int, why: str) -> None:
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {why}")
        self.source = source
        self.line = line
        self.why = why


class ProvenanceError(UsageError):
    """Raised for a provenance file that is not UTF-8, or whose line is not a JSON
    object with a valid ``oid``, ``path`` and origin (``url`` or ``source``).
    ``source`` is the file's path in the version, ``line`` the 1-based line (0: the
    file as a whole), ``why`` what is wrong. Exit code 2."""

    def __init__(self, source: str, line: int, why: str) -> None:
        where = f"{source}:{line}" if line else source
        super().__init__(f"malformed provenance file {where}: {why}")
        self.source = source
        self.line = line
        self.why = why
