"""Sparse work trees: a clone or checkout of part of a version.

``pixvcs clone URL --include 'cat/*'`` and ``pixvcs checkout REV --where
label=cat`` keep a *selection*: path globs (``include``) and filters
(``where``, the same keys as :func:`pixvcs.open`). Images outside it stay in
history and in the index, but not in the work tree, and their media are not
fetched. Every other file (labels, CSV, JSON, text) is always checked out.

State (docs/format.md, "Sparse work trees"):

* ``.pixvcs/pixvcs/sparse.json`` — the selection, ``{"include": [...],
  "where": {...}}``, rewritten atomically; absent means everything.
* the index's ``skipped`` table — the tracked paths the selection leaves out of
  the current work tree. ``status``, ``add`` and ``diff`` do not look at them
  (they are neither deleted nor modified), ``commit`` keeps them as they are,
  and a checkout that writes one (``checkout REV -- PATH``) brings it back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import fsutil
from .errors import UsageError

if TYPE_CHECKING:
    from .repo import Repo

SPARSE_FILE = "sparse.json"


@dataclass(frozen=True)
class Selection:
    """Which images a sparse work tree holds; empty = all of them."""

    include: tuple[str, ...] = ()
    where: Mapping[str, Any] = field(default_factory=dict)

    @property
    def everything(self) -> bool:
        return not self.include and not self.where

    @classmethod
    def make(
        cls, include: Iterable[str] | None = None, where: Mapping[str, Any] | None = None
    ) -> Selection:
        from .dataset import _Filters

        globs = tuple(include or ())
        for g in globs:
            if not isinstance(g, str) or not g:
                raise UsageError(f"--include expects a path glob, got {g!r}")
        _Filters.parse(where)  # the same checks and messages as pixvcs.open
        return cls(globs, dict(where or {}))

    def to_json(self) -> dict[str, Any]:
        return {"include": list(self.include), "where": dict(self.where)}


def load(repo: Repo) -> Selection:
    path = os.path.join(repo.state_dir, SPARSE_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return Selection()
    except (OSError, ValueError) as e:
        raise UsageError(f"{path} is unreadable ({e}); remove it to check out everything") from None
    if not isinstance(data, dict) or set(data) - {"include", "where"}:
        raise UsageError(f"{path} is malformed; remove it to check out everything")
    return Selection.make(data.get("include") or (), data.get("where") or {})


def save(repo: Repo, selection: Selection) -> None:
    path = os.path.join(repo.state_dir, SPARSE_FILE)
    if selection.everything:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    os.makedirs(repo.tmp_dir, exist_ok=True)
    data = json.dumps(selection.to_json(), indent=1, sort_keys=True).encode() + b"\n"
    fsutil.atomic_write(path, data, repo.tmp_dir)


def left_out(repo: Repo, tree: bytes | None, selection: Selection) -> set[str]:
    """The image paths of ``tree`` (a version's root tree) that ``selection`` leaves
    out. Size filters need each candidate's dimensions: from the catalog, else from
    its media (fetched from the remotes when not here, and kept)."""
    if selection.everything or tree is None:
        return set()
    from fnmatch import fnmatchcase

    from .dataset import LocalSource, _Filters, select_entries

    filters = _Filters.parse(selection.where)
    source = LocalSource.open(repo)
    try:
        entries = source.list_tree(tree)
        media = [e for e in entries if e.kind == "media" and e.oid is not None]
        if filters.needs_size:
            candidates = [
                e
                for e in media
                if not selection.include or any(fnmatchcase(e.path, g) for g in selection.include)
            ]
            known = repo.catalog.get_many([e.oid for e in candidates if e.oid])
            lacking = {
                e.oid: e.size
                for e in candidates
                if e.oid
                and (known.get(e.oid) is None or known[e.oid].width is None)
                and not repo.media.has(e.oid)
            }
            if lacking:
                from .transfer import fetch_media

                fetch_media(repo, list(lacking), progress=_quiet, sizes=lacking)
        chosen = {r.path for r in select_entries(source, entries, list(selection.include), filters)}
    finally:
        source.close()
    return {e.path for e in media if e.path not in chosen}


def _quiet(stage: str, done: int, total: int) -> None:
    return None


def describe(selection: Selection) -> str:
    parts = [f"--include {g}" for g in selection.include]
    for key, value in selection.where.items():
        values: Sequence[Any] = value if isinstance(value, list) else [value]
        parts.extend(f"--where {key}={v}" for v in values)
    return " ".join(parts) or "everything"
