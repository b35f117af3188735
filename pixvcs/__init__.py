"""pixvcs: git-native, content-addressed versioning for image datasets.

The public surface is what ``__all__`` lists; everything else may move.
"""

from .diff import DatasetDiff
from .errors import (
    BadPath,
    BadRevision,
    CorruptObject,
    InvalidImages,
    InvalidPointer,
    LocalChanges,
    LockTimeout,
    MergeConflict,
    MissingMedia,
    MissingObject,
    NotARepository,
    NothingToCommit,
    PixvcsError,
    RefConflict,
    RepositoryExists,
    UnsafeTreeEntry,
    UnsupportedFormat,
    UsageError,
)
from .repo import FORMAT_VERSION, Repo, Status

__version__ = "0.1.0"

__all__ = [
    "FORMAT_VERSION",
    "BadPath",
    "BadRevision",
    "CorruptObject",
    "DatasetDiff",
    "InvalidImages",
    "InvalidPointer",
    "LocalChanges",
    "LockTimeout",
    "MergeConflict",
    "MissingMedia",
    "MissingObject",
    "NotARepository",
    "NothingToCommit",
    "PixvcsError",
    "RefConflict",
    "Repo",
    "RepositoryExists",
    "Status",
    "UnsafeTreeEntry",
    "UnsupportedFormat",
    "UsageError",
]
