"""Integrity: ``fsck`` (verify everything reachable, and every media object)
and ``gc`` (drop media nothing reaches, pack loose git objects)."""

from __future__ import annotations

import os
import stat as stat_mod
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dulwich.objects import Blob, Commit, Tag, Tree

from . import trees
from .errors import MissingObject, UnsafeTreeEntry
from .pointer import is_oid, looks_like_pointer, parse_pointer

if TYPE_CHECKING:
    from .repo import Progress, Repo
    from .s3media import S3Media


@dataclass
class FsckReport:
    commits: int = 0
    trees: int = 0
    blobs: int = 0
    media_checked: int = 0
    problems: list[dict[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "commits": self.commits,
            "trees": self.trees,
            "blobs": self.blobs,
            "media_checked": self.media_checked,
            "problems": self.problems,
        }


@dataclass
class GcReport:
    removed_media: int = 0
    removed_bytes: int = 0
    kept_media: int = 0
    packed_objects: int = 0
    removed_temp: int = 0
    #: Unreachable objects kept because they are younger than the grace period
    #: (media in S3 only: a push may have uploaded them and not yet moved its ref).
    kept_young: int = 0
    #: Where the media are: ``"lfs"`` or the ``s3://`` URL.
    media: str = "lfs"

    def to_json(self) -> dict[str, Any]:
        return {
            "removed_media": self.removed_media,
            "removed_bytes": self.removed_bytes,
            "kept_media": self.kept_media,
            "kept_young": self.kept_young,
            "packed_objects": self.packed_objects,
            "removed_temp": self.removed_temp,
            "media": self.media,
        }


def fsck(repo: Repo, *, progress: Progress) -> FsckReport:
    """Check every reachable git object and pointer, and every media object's hash."""
    report = FsckReport()
    problems = report.problems
    refs = repo.git.refs.as_dict()
    seen_commits: set[bytes] = set()
    seen_trees: set[bytes] = set()
    seen_blobs: set[bytes] = set()
    referenced: dict[str, str] = {}  # oid -> a path that references it
    sizes: dict[str, dict[int, str]] = {}  # oid -> {size a pointer claims: its path}
    stack: list[bytes] = []
    for name, sha in refs.items():
        try:
            obj = repo.store[sha]
        except KeyError:
            problems.append(
                {
                    "kind": "missing-object",
                    "ref": name.decode(),
                    "object": sha.decode(),
                    "message": f"ref {name.decode()} points at missing object {sha.decode()}",
                }
            )
            continue
        while isinstance(obj, Tag):
            obj = repo.store[obj.object[1]]
        stack.append(obj.id)
    while stack:
        cid = stack.pop()
        if cid in seen_commits:
            continue
        seen_commits.add(cid)
        commit = _checked(repo, cid, Commit, problems, "commit")
        if commit is None:
            continue
        stack.extend(commit.parents)
        _fsck_tree(repo, commit.tree, "", seen_trees, seen_blobs, referenced, sizes, problems)
    report.commits, report.trees, report.blobs = len(seen_commits), len(seen_trees), len(seen_blobs)
    for e in repo.index.entries():
        if e.kind == "media" and e.oid and e.blob is not None:
            referenced.setdefault(e.oid, e.path)
            sizes.setdefault(e.oid, {}).setdefault(e.size, e.path)
    if repo.bare:
        from .s3media import store_for

        bucket = store_for(repo.git_dir)
        if bucket is not None:  # media in S3 (format.md, "Media in S3")
            _fsck_bucket(bucket, referenced, sizes, report, progress)
            return report
    all_media = sorted(set(repo.media) | set(referenced))
    for n, oid in enumerate(all_media, 1):
        progress("fsck", n, len(all_media))
        path = referenced.get(oid, "")
        if not repo.media.has(oid):
            problems.append(
                {
                    "kind": "missing-media",
                    "path": path,
                    "oid": oid,
                    "message": f"{path}: media object {oid} is missing",
                }
            )
            continue
        got = repo.media.verify(oid)
        report.media_checked += 1
        if got != oid:
            where = path or "(unreferenced)"
            problems.append(
                {
                    "kind": "corrupt-media",
                    "path": path,
                    "oid": oid,
                    "message": f"{where}: media object {oid} is corrupt (hashes to {got})",
                }
            )
            continue
        actual = repo.media.size(oid)
        if got == oid:
            for claimed, claimant in sorted(sizes.get(oid, {}).items()):
                if claimed != actual:
                    problems.append(
                        {
                            "kind": "pointer-size-mismatch",
                            "path": claimant,
                            "oid": oid,
                            "message": f"{claimant}: pointer says {claimed} bytes, "
                            f"media object {oid} has {actual}",
                        }
                    )
    return report


def _fsck_bucket(
    bucket: Any,
    referenced: dict[str, str],
    sizes: dict[str, dict[int, str]],
    report: FsckReport,
    progress: Progress,
) -> None:
    """The media checks against an S3 bucket: every referenced object is there,
    has the size its pointers claim, and hashes to its name (each is downloaded
    and hashed, in parallel; nothing is written)."""
    from concurrent.futures import ThreadPoolExecutor

    from .errors import CorruptObject, MissingMedia

    problems = report.problems
    wanted = sorted(referenced)
    present = bucket.stat(wanted)
    for oid in wanted:
        path = referenced[oid]
        if oid not in present:
            problems.append(
                {
                    "kind": "missing-media",
                    "path": path,
                    "oid": oid,
                    "message": f"{path}: media object {oid} is missing from {bucket.where}",
                }
            )
            continue
        for claimed, claimant in sorted(sizes.get(oid, {}).items()):
            if claimed != present[oid]:
                problems.append(
                    {
                        "kind": "pointer-size-mismatch",
                        "path": claimant,
                        "oid": oid,
                        "message": f"{claimant}: pointer says {claimed} bytes, "
                        f"media object {oid} has {present[oid]}",
                    }
                )

    def hashed(oid: str) -> str | None:
        try:
            bucket.read(oid)  # raises CorruptObject when the bytes hash to another name
        except CorruptObject as e:
            return e.got
        except MissingMedia:  # deleted since the listing: reported as missing
            return ""
        return None

    todo = [o for o in wanted if o in present]
    with ThreadPoolExecutor(max_workers=8) as pool:
        for n, (oid, bad) in enumerate(zip(todo, pool.map(hashed, todo), strict=True), 1):
            progress("fsck", n, len(todo))
            report.media_checked += 1
            if bad is None:
                continue
            path = referenced[oid]
            kind, why = ("missing-media", "is missing") if bad == "" else (
                "corrupt-media", f"is corrupt (hashes to {bad})"
            )  # fmt: skip
            problems.append(
                {
                    "kind": kind,
                    "path": path,
                    "oid": oid,
                    "message": f"{path}: media object {oid} in {bucket.where} {why}",
                }
            )


def _checked(repo: Repo, sha: bytes, kind: type, problems: list[dict[str, str]], what: str) -> Any:
    try:
        obj = repo.store[sha]
    except KeyError:
        problems.append(
            {
                "kind": "missing-object",
                "object": sha.decode(),
                "message": f"missing {what} {sha.decode()}",
            }
        )
        return None
    except Exception as e:  # noqa: BLE001 - any parse failure is a corrupt object to report
        problems.append(
            {
                "kind": "corrupt-object",
                "object": sha.decode(),
                "message": f"corrupt {what} {sha.decode()}: {e}",
            }
        )
        return None
    if obj.id != sha:
        problems.append(
            {
                "kind": "corrupt-object",
                "object": sha.decode(),
                "message": f"{what} {sha.decode()} hashes to {obj.id.decode()}",
            }
        )
        return None
    if not isinstance(obj, kind):
        problems.append(
            {
                "kind": "corrupt-object",
                "object": sha.decode(),
                "message": f"{sha.decode()} should be a {what}, is a {obj.type_name.decode()}",
            }
        )
        return None
    return obj


def _fsck_tree(
    repo: Repo,
    tree_id: bytes,
    prefix: str,
    seen_trees: set[bytes],
    seen_blobs: set[bytes],
    referenced: dict[str, str],
    sizes: dict[str, dict[int, str]],
    problems: list[dict[str, str]],
) -> None:
    if tree_id in seen_trees:
        return
    seen_trees.add(tree_id)
    tree = _checked(repo, tree_id, Tree, problems, "tree")
    if tree is None:
        return
    for name, mode, sha in tree.iteritems():
        path = (
            f"{prefix}/{name.decode('utf-8', 'replace')}"
            if prefix
            else name.decode("utf-8", "replace")
        )
        try:
            trees.check_name(name, prefix)
            if not stat_mod.S_ISDIR(mode):
                trees.check_mode(mode, path)
        except UnsafeTreeEntry as e:  # reported, not raised: fsck lists everything
            problems.append({"kind": "unsafe-entry", "path": path, "message": str(e)})
            continue
        if stat_mod.S_ISDIR(mode):
            _fsck_tree(repo, sha, path, seen_trees, seen_blobs, referenced, sizes, problems)
            continue
        if sha in seen_blobs:
            continue
        seen_blobs.add(sha)
        blob = _checked(repo, sha, Blob, problems, "blob")
        if blob is None:
            continue
        data = blob.as_raw_string()
        if looks_like_pointer(data):
            try:
                p = parse_pointer(data)
            except Exception as e:  # noqa: BLE001 - reported, fsck lists everything
                problems.append({"kind": "bad-pointer", "path": path, "message": f"{path}: {e}"})
                continue
            referenced.setdefault(p.oid, path)
            sizes.setdefault(p.oid, {}).setdefault(p.size, path)


#: Default grace period of ``gc`` for media in S3 and for temporary files.
GC_GRACE = 3600.0


def gc(repo: Repo, *, progress: Progress, grace: float = GC_GRACE) -> GcReport:
    """Remove media objects no ref and no index entry reaches; pack loose git objects.

    If any object reachable from a ref is missing, the set of reachable media
    cannot be known: gc raises MissingObject and removes nothing. ``grace``
    (seconds): temporary files, and unreachable objects of a bucket, younger
    than this are kept."""
    try:
        keep = _reachable_media(repo)
    except KeyError as e:
        missing = e.args[0] if e.args else b"?"
        name = missing.decode() if isinstance(missing, bytes) else str(missing)
        raise MissingObject(name, "gc needs all of history to know what is unreachable") from None
    if repo.bare:
        from .s3media import store_for

        bucket = store_for(repo.git_dir)
        if bucket is not None:  # media in S3 (format.md, "Media in S3")
            report = _sweep_bucket(bucket, keep, grace, progress)
            report.packed_objects = repo.store.pack_loose_objects()
            return report
    return _sweep(repo, keep, progress, grace)


def _sweep_bucket(bucket: S3Media, keep: set[str], grace: float, progress: Progress) -> GcReport:
    """Delete the bucket's unreachable objects older than ``grace``, and staged
    uploads (``incoming/``) older than ``grace`` or than their URLs' lifetime."""
    report = GcReport(media=bucket.where)
    cutoff = time.time() - grace
    doomed: list[str] = []
    for key, size, modified in bucket.listing("objects/"):
        oid = key.rsplit("/", 1)[-1]
        if not is_oid(oid) or key != bucket.key(oid):
            continue  # not a name pixvcs gives: not ours to delete
        if oid in keep:
            report.kept_media += 1
        elif modified >= cutoff:
            report.kept_young += 1
        else:
            doomed.append(key)
            report.removed_bytes += size
    staged_cutoff = time.time() - max(grace, float(bucket.config.expires_in))
    stale = [k for k, _size, modified in bucket.listing("incoming/") if modified < staged_cutoff]
    progress("gc", 0, len(doomed) + len(stale))
    bucket.delete_keys(doomed + stale)
    progress("gc", len(doomed) + len(stale), len(doomed) + len(stale))
    report.removed_media, report.removed_temp = len(doomed), len(stale)
    return report


def _reachable_media(repo: Repo) -> set[str]:
    keep: set[str] = set()
    seen_trees: set[bytes] = set()
    stack = []
    for sha in repo.git.refs.as_dict().values():
        obj = repo.store[sha]
        while isinstance(obj, Tag):
            obj = repo.store[obj.object[1]]
        stack.append(obj.id)
    seen: set[bytes] = set()
    while stack:
        cid = stack.pop()
        if cid in seen:
            continue
        seen.add(cid)
        c = repo.store[cid]
        if not isinstance(c, Commit):
            raise KeyError(cid)
        stack.extend(c.parents)
        _collect_oids(repo, c.tree, seen_trees, keep)
    for e in repo.index.entries():
        if e.oid:
            keep.add(e.oid)
    return keep


def _sweep(repo: Repo, keep: set[str], progress: Progress, grace: float) -> GcReport:
    report = GcReport()
    removed = []
    for oid in list(repo.media):
        if oid in keep:
            report.kept_media += 1
            continue
        report.removed_bytes += repo.media.size(oid)
        repo.media.remove(oid)
        removed.append(oid)
    report.removed_media = len(removed)
    repo.catalog.remove(removed)
    cutoff = time.time() - grace
    pack_temps = [
        p for p in _files_in(repo.store.pack_dir) if os.path.basename(p).startswith("tmp-pixvcs-")
    ]
    for tmp in repo.media.stray_temp_files() + _files_in(repo.tmp_dir) + pack_temps:
        try:
            if os.lstat(tmp).st_mtime < cutoff:
                os.unlink(tmp)
                report.removed_temp += 1
        except FileNotFoundError:  # removed meanwhile
            pass
    report.packed_objects = repo.store.pack_loose_objects()
    return report


def _collect_oids(repo: Repo, tree_id: bytes, seen_trees: set[bytes], out: set[str]) -> None:
    if tree_id in seen_trees:
        return
    seen_trees.add(tree_id)
    tree = trees.read_tree(repo.store, tree_id)
    for _name, mode, sha in tree.iteritems():
        if stat_mod.S_ISDIR(mode):
            _collect_oids(repo, sha, seen_trees, out)
            continue
        data = repo.store[sha].as_raw_string()
        if looks_like_pointer(data):
            try:
                out.add(parse_pointer(data).oid)
            except Exception:  # noqa: BLE001, S112 - a malformed pointer names no object to keep
                continue


def _files_in(d: str) -> list[str]:
    try:
        return [e.path for e in os.scandir(d) if e.is_file()]
    except FileNotFoundError:
        return []
