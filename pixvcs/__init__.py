"""pixvcs: git-native, content-addressed versioning for image datasets.

The public surface is what ``__all__`` lists; everything else may move.
Everything but the errors is imported on first use (PEP 562), so that
``import pixvcs`` and small commands stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    BadPath,
    BadRevision,
    CorruptObject,
    CrawlInputError,
    CrawlWorkerError,
    HookFailed,
    InvalidImages,
    InvalidPointer,
    LabelsFileError,
    LocalChanges,
    LockTimeout,
    MergeConflict,
    MissingDependency,
    MissingMedia,
    MissingObject,
    NotARepository,
    NothingToCommit,
    PixvcsError,
    ProvenanceError,
    RefConflict,
    RemoteError,
    RepositoryExists,
    UnsafeTreeEntry,
    UnsupportedFormat,
    UsageError,
)

if TYPE_CHECKING:
    from .dataset import Dataset, Record, open
    from .diff import DatasetDiff
    from .repo import FORMAT_VERSION, Repo, Status

__version__ = "0.1.0"

_LAZY = {
    "Dataset": "dataset",
    "Record": "dataset",
    "open": "dataset",
    "DatasetDiff": "diff",
    "FORMAT_VERSION": "repo",
    "Repo": "repo",
    "Status": "repo",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pixvcs' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "FORMAT_VERSION",
    "BadPath",
    "BadRevision",
    "CorruptObject",
    "CrawlInputError",
    "CrawlWorkerError",
    "Dataset",
    "DatasetDiff",
    "HookFailed",
    "InvalidImages",
    "InvalidPointer",
    "LabelsFileError",
    "LocalChanges",
    "LockTimeout",
    "MergeConflict",
    "MissingDependency",
    "MissingMedia",
    "MissingObject",
    "NotARepository",
    "NothingToCommit",
    "PixvcsError",
    "ProvenanceError",
    "Record",
    "RefConflict",
    "RemoteError",
    "Repo",
    "RepositoryExists",
    "Status",
    "UnsafeTreeEntry",
    "UnsupportedFormat",
    "UsageError",
    "open",
]
