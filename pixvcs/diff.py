"""Dataset diffs: what changed between two versions, in terms of images and classes.

Path changes come from the git tree diff (equal subtrees skipped by id); media
identity comes from the LFS pointers of the changed paths only. On top of that:
renames (same bytes at a new path: in a class-folder layout, a relabel) and
per-class image counts before and after. The counts of a version are cached
by tree id (derived data in the index database), and the "after" side is
computed from the "before" side plus the change, so a diff costs time in
proportion to the change, not to the dataset.
"""

from __future__ import annotations

import stat
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import trees
from .pointer import looks_like_pointer, parse_pointer

if TYPE_CHECKING:
    from .index import Entry
    from .repo import Repo

ROOT_CLASS = "."


@dataclass(frozen=True, slots=True)
class Side:
    """One side of a changed path: its blob and, for media, oid and size."""

    mode: int
    blob: str
    kind: str  # "media" | "blob"
    oid: str | None
    size: int | None

    @property
    def identity(self) -> str:
        return self.oid if self.oid else f"blob:{self.blob}"


@dataclass
class DatasetDiff:
    old: str | None
    new: str | None
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)
    renamed: list[dict[str, str]] = field(default_factory=list)
    classes: dict[str, dict[str, int]] = field(default_factory=dict)
    details: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Image path -> oid on the side where the path holds it (the new side for added,
    #: renamed-to and modified paths; the old side for removed and renamed-from
    #: paths). Used for report thumbnails; not part of the JSON output.
    oids: dict[str, str] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.modified or self.renamed)

    def to_json(self) -> dict[str, Any]:
        return {
            "old": self.old,
            "new": self.new,
            "added": self.added,
            "removed": self.removed,
            "modified": self.modified,
            "renamed": self.renamed,
            "classes": self.classes,
            "counts": {
                "added": len(self.added),
                "removed": len(self.removed),
                "modified": len(self.modified),
                "renamed": len(self.renamed),
            },
            "details": self.details,
        }


def class_of(path: str) -> str:
    head, sep, _ = path.partition("/")
    return head if sep else ROOT_CLASS


def _side(repo: Repo, mode: int, blob: str) -> Side:
    data = trees.blob_bytes(repo.store, blob)
    if looks_like_pointer(data):
        p = parse_pointer(data)
        return Side(mode, blob, "media", p.oid, p.size)
    return Side(mode, blob, "blob", None, len(data))


def class_counts(repo: Repo, tree_id: bytes | None) -> dict[str, int]:
    """Images per top-level folder of a version (cached per subtree id)."""
    if tree_id is None:
        return {}
    root = trees.read_tree(repo.store, tree_id)
    counts: dict[str, int] = {}
    dirs: list[tuple[str, bytes]] = []
    for name, mode, sha in root.iteritems():
        if stat.S_ISDIR(mode):
            dirs.append((name.decode("utf-8", "replace"), sha))
        elif _is_pointer_blob(repo, sha):
            counts[ROOT_CLASS] = counts.get(ROOT_CLASS, 0) + 1
    cached = repo.index.get_treestats([dir_id.decode() for _, dir_id in dirs])
    fresh = []
    for dir_name, dir_id in dirs:
        images = cached.get(dir_id.decode())
        if images is None:
            images = _count_images(repo, dir_id)
            fresh.append((dir_id.decode(), images))
        if images:
            counts[dir_name] = images
    if fresh:
        repo.index.put_treestats(fresh)
    return counts


def remember_counts(repo: Repo, tree_id: bytes, counts: dict[str, int]) -> None:
    """Cache the per-class counts of a version by the ids of its top-level subtrees."""
    rows = [
        (sha.decode(), counts.get(name.decode("utf-8", "replace"), 0))
        for name, mode, sha in trees.read_tree(repo.store, tree_id).iteritems()
        if stat.S_ISDIR(mode)
    ]
    with repo.index.transaction():
        repo.index.put_treestats(rows)


def counts_after_commit(
    repo: Repo, base_tree: bytes | None, new_tree: bytes, staged: Iterable[Entry]
) -> None:
    """At commit: the new version's counts from its parent's and the staged change,
    so the next diff never has to count a whole dataset."""
    after = dict(class_counts(repo, base_tree))
    for e in staged:
        cls = class_of(e.path)
        if e.base is not None and _is_pointer_blob(repo, e.base.encode()):
            after[cls] = after.get(cls, 0) - 1
        if e.blob is not None and e.kind == "media":
            after[cls] = after.get(cls, 0) + 1
    remember_counts(repo, new_tree, after)


def _count_images(repo: Repo, tree_id: bytes) -> int:
    n = 0
    for _name, mode, sha in trees.read_tree(repo.store, tree_id).iteritems():
        if stat.S_ISDIR(mode):
            n += _count_images(repo, sha)
        elif _is_pointer_blob(repo, sha):
            n += 1
    return n


def _is_pointer_blob(repo: Repo, sha: bytes) -> bool:
    _type, data = repo.store.get_raw(sha)
    return bool(looks_like_pointer(data))


def diff_trees(
    repo: Repo,
    old_tree: bytes | None,
    new_tree: bytes | None,
    *,
    old_label: str | None,
    new_label: str | None,
    overlay: dict[str, Side | None] | None = None,
) -> DatasetDiff:
    """Diff two trees; ``overlay`` replaces the new side of some paths (work tree)."""
    changed: dict[str, tuple[Side | None, Side | None]] = {}
    for c in trees.diff(repo.store, old_tree, new_tree):
        changed[c.path] = (
            _side(repo, *c.old) if c.old else None,
            _side(repo, *c.new) if c.new else None,
        )
    for path, new in (overlay or {}).items():
        if path in changed:
            old = changed[path][0]
        else:
            found = trees.lookup(repo.store, old_tree, path)
            old = _side(repo, *found) if found else None
        if old == new or (old and new and old.blob == new.blob and old.mode == new.mode):
            changed.pop(path, None)
        else:
            changed[path] = (old, new)
    d = _summarise(repo, changed, old_tree, old_label, new_label)
    if not overlay and new_tree is not None:
        remember_counts(repo, new_tree, {k: v["after"] for k, v in d.classes.items()})
    return d


def _summarise(
    repo: Repo,
    changed: dict[str, tuple[Side | None, Side | None]],
    old_tree: bytes | None,
    old_label: str | None,
    new_label: str | None,
) -> DatasetDiff:
    d = DatasetDiff(old_label, new_label)
    added = {p: n for p, (o, n) in changed.items() if o is None and n is not None}
    removed = {p: o for p, (o, n) in changed.items() if o is not None and n is None}
    by_identity: dict[str, list[str]] = defaultdict(list)
    for p in sorted(added):
        by_identity[added[p].identity].append(p)
    for p in sorted(removed):
        targets = by_identity.get(removed[p].identity)
        if targets:
            to = targets.pop(0)
            d.renamed.append({"from": p, "to": to})
            del added[to]
    renamed_from = {r["from"] for r in d.renamed}
    d.added = sorted(added)
    d.removed = sorted(p for p in removed if p not in renamed_from)
    d.modified = sorted(p for p, (o, n) in changed.items() if o is not None and n is not None)
    for p, (o, n) in changed.items():
        side = n if n is not None else o
        if side is not None and side.oid:
            d.oids[p] = side.oid
    before = class_counts(repo, old_tree)
    after = dict(before)
    for p, (o, n) in changed.items():
        if o is not None and o.kind == "media":
            after[class_of(p)] = after.get(class_of(p), 0) - 1
        if n is not None and n.kind == "media":
            after[class_of(p)] = after.get(class_of(p), 0) + 1
    for cls in sorted(before.keys() | after.keys()):
        b, a = before.get(cls, 0), after.get(cls, 0)
        if a or b:
            d.classes[cls] = {"before": b, "after": a}
    d.details = _details(repo, changed, d.modified)
    return d


def _details(
    repo: Repo, changed: dict[str, tuple[Side | None, Side | None]], modified: Iterable[str]
) -> dict[str, dict[str, Any]]:
    """For modified images: what the catalog knows of both versions (re-encodes, resizes)."""
    pairs = {p: changed[p] for p in modified}
    oids = [s.oid for o, n in pairs.values() for s in (o, n) if s is not None and s.oid]
    rows = repo.catalog.get_many(oids)
    out: dict[str, dict[str, Any]] = {}
    for p, (o, n) in pairs.items():
        if o is None or n is None or not (o.oid and n.oid):
            continue
        info: dict[str, Any] = {
            "old_oid": o.oid,
            "new_oid": n.oid,
            "old_size": o.size,
            "new_size": n.size,
        }
        ro, rn = rows.get(o.oid), rows.get(n.oid)
        if ro and rn:
            info.update(
                {
                    "old_format": ro.format,
                    "new_format": rn.format,
                    "old_dims": [ro.width, ro.height],
                    "new_dims": [rn.width, rn.height],
                    "phash_distance": _hamming(ro.phash, rn.phash),
                }
            )
        out[p] = info
    return out


def _hamming(a: str | None, b: str | None) -> int | None:
    if not a or not b:
        return None
    return bin(int(a, 16) ^ int(b, 16)).count("1")
