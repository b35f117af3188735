"""``pixvcs check``: evaluate the dataset's policy over a version or a change.

Three scopes:

- a version (``check(repo, "v3")``): every image of it is checked;
- a change (``"BASE..HEAD"``): the images that are new in HEAD (added, modified,
  or moved to another path since the merge base of BASE and HEAD) are checked,
  and rules about duplicates and leakage compare those new images with the
  *whole* resulting version; the change rules (``[changes]``) apply;
- the staged change (``staged=True``): the index (what the next commit holds)
  against HEAD, as a change.

Facts about images come from the catalog; an image the catalog does not know
(for example one fetched from a remote) is decoded once from the media store
and recorded. The result lists every rule that was evaluated and every
violation, each naming its rule and paths (and, for pairs, the Hamming distance
of their perceptual hashes). ``to_json()`` is the canonical form, documented in
docs/ci.md; pixvcs/report.py renders the others.

With ``[provenance] required``, the checked images must each have a provenance
record (:mod:`pixvcs.provenance`) in the ``provenance/*.jsonl`` files of the
checked side; those files are read before anything else, so a malformed one
stops the check (exit code 2) naming the file and line.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import combinations
from typing import TYPE_CHECKING, Any

from . import neardup, trees
from .errors import MissingMedia, UsageError
from .policy import POLICY_FILE, Policy, parse_policy
from .provenance import ProvenanceIndex, Record, is_provenance_file, parse_records

if TYPE_CHECKING:
    from .repo import Repo

#: Version of the JSON document (``schema`` key); bumped on incompatible changes.
SCHEMA = "pixvcs-check/1"
#: Violations kept per rule; beyond this they are counted (``omitted``), not listed.
MAX_VIOLATIONS_PER_RULE = 10_000
#: Paths listed in one violation that concerns many (e.g. all removed images).
MAX_PATHS_PER_VIOLATION = 100
ROOT_CLASS = "."

Progress = Callable[[str, int, int], None]


def _no_progress(stage: str, done: int, total: int) -> None:
    return None


RULES: dict[str, str] = {
    "images.decodable": "every image decodes completely",
    "images.formats": "image formats are among [images] formats",
    "images.modes": "image modes are among [images] modes",
    "images.min_width": "images are at least [images] min_width pixels wide",
    "images.min_height": "images are at least [images] min_height pixels high",
    "images.max_width": "images are at most [images] max_width pixels wide",
    "images.max_height": "images are at most [images] max_height pixels high",
    "images.min_bytes": "image files are at least [images] min_bytes long",
    "images.max_bytes": "image files are at most [images] max_bytes long",
    "duplicates.exact": "no two paths hold the same bytes (within a split)",
    "duplicates.near": "no two images are near-duplicates (within a split)",
    "splits.leakage": "no exact or near duplicates across split folders",
    "classes.allowed": "every image is in a class listed in [classes] allowed",
    "classes.min_per_class": "every class has at least [classes] min_per_class images",
    "classes.max_imbalance": "largest class / smallest class <= [classes] max_imbalance",
    "changes.max_added": "a change adds at most [changes] max_added images",
    "changes.max_removed_fraction": "a change removes at most this fraction of the images",
    "provenance.required": "every image has a provenance record (provenance/*.jsonl)",
}


# -- result types -------------------------------------------------------------------
@dataclass
class Violation:
    rule: str
    message: str
    paths: list[str]
    distance: int | None = None  # pairs: Hamming distance of the perceptual hashes
    kind: str | None = None  # pairs: "exact" (same bytes) or "near"
    oids: list[str | None] = field(default_factory=list)  # parallel to paths, when images
    more_paths: int = 0  # paths concerned but not listed

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.rule, "message": self.message, "paths": self.paths}
        if self.oids:
            out["oids"] = self.oids
        if self.distance is not None:
            out["distance"] = self.distance
        if self.kind is not None:
            out["kind"] = self.kind
        if self.more_paths:
            out["more_paths"] = self.more_paths
        return out


@dataclass
class RuleResult:
    rule: str
    description: str
    checked: int  # images (or classes, or changes) the rule looked at
    violations: int = 0  # total, including omitted ones
    omitted: int = 0  # violations counted but not listed

    @property
    def ok(self) -> bool:
        return self.violations == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "description": self.description,
            "ok": self.ok,
            "checked": self.checked,
            "violations": self.violations,
            "omitted": self.omitted,
        }


@dataclass
class CheckResult:
    mode: str  # "version" | "range" | "staged"
    head_rev: str
    head_commit: str | None  # None for the index
    base_rev: str | None
    base_commit: str | None
    policy: Policy
    images: int = 0
    checked: int = 0
    changes: dict[str, Any] | None = None
    classes: dict[str, dict[str, int | None]] = field(default_factory=dict)
    splits: dict[str, dict[str, int | None]] = field(default_factory=dict)
    rules: list[RuleResult] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    #: path -> oid of every image on either side (for thumbnails); not in the JSON
    oids: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rules)

    def rule(self, name: str) -> RuleResult | None:
        return next((r for r in self.rules if r.rule == name), None)

    def to_json(self) -> dict[str, Any]:
        failed = [r for r in self.rules if not r.ok]
        return {
            "schema": SCHEMA,
            "ok": self.ok,
            "mode": self.mode,
            "head": {"rev": self.head_rev, "commit": self.head_commit},
            "base": (
                None
                if self.base_rev is None
                else {"rev": self.base_rev, "commit": self.base_commit}
            ),
            "policy": self.policy.to_json(),
            "counts": {
                "images": self.images,
                "checked": self.checked,
                "added": len(self.changes["added"]) if self.changes else None,
                "removed": len(self.changes["removed"]) if self.changes else None,
                "modified": len(self.changes["modified"]) if self.changes else None,
                "renamed": len(self.changes["renamed"]) if self.changes else None,
                "rules": len(self.rules),
                "rules_failed": len(failed),
                "violations": sum(r.violations for r in self.rules),
            },
            "classes": self.classes,
            "splits": self.splits,
            "changes": self.changes,
            "rules": [r.to_json() for r in self.rules],
            "violations": [v.to_json() for v in self.violations],
        }


# -- what is checked ------------------------------------------------------------------
@dataclass(slots=True)
class _File:
    path: str
    kind: str  # "media" | "blob"
    blob: str | None
    oid: str | None
    size: int


@dataclass(slots=True)
class _Image:
    path: str
    oid: str
    size: int
    width: int | None
    height: int | None
    format: str | None
    mode: str | None
    phash: str | None
    valid: bool
    error: str | None
    split: str | None
    cls: str
    new: bool


def parse_spec(spec: str | None) -> tuple[str | None, str]:
    """``"REV"`` -> (None, REV); ``"BASE..HEAD"`` -> (BASE, HEAD), an empty side
    meaning HEAD, as in git. ``None`` -> (None, "HEAD")."""
    if spec is None:
        return None, "HEAD"
    if "..." in spec:
        raise UsageError(f"{spec!r}: use BASE..HEAD (two dots); the merge base is used anyway")
    if ".." in spec:
        base, _, head = spec.partition("..")
        if ".." in head:
            raise UsageError(f"{spec!r}: more than one '..'")
        return base or "HEAD", head or "HEAD"
    if not spec:
        raise UsageError("empty revision")
    return None, spec


def check(
    repo: Repo,
    spec: str | None = None,
    *,
    staged: bool = False,
    progress: Progress = _no_progress,
) -> CheckResult:
    """Evaluate the policy over ``spec`` (``REV``, ``BASE..HEAD``; default HEAD) or,
    with ``staged``, over the index against HEAD. Raises :class:`PolicyError` (exit
    code 2) for a bad policy, ``BadRevision``, ``UsageError``, ``MissingMedia``."""
    if staged:
        if spec is not None:
            raise UsageError("--staged checks the index against HEAD; give no revision")
        if repo.bare:
            raise UsageError("a bare repository has no index to check")
        head_commit = repo.head_commit()
        base_files = _tree_files(repo, head_commit)
        head_files = _index_files(repo)
        return _evaluate(
            repo,
            "staged",
            ("(index)", None),
            ("HEAD", head_commit),
            head_files,
            base_files,
            progress,
        )
    base_rev, head_rev = parse_spec(spec)
    head_commit = repo.resolve(head_rev)
    head_files = _tree_files(repo, head_commit)
    if base_rev is None:
        return _evaluate(repo, "version", (head_rev, head_commit), None, head_files, None, progress)
    base_commit = _merge_base(repo, repo.resolve(base_rev), head_commit)
    base_files = _tree_files(repo, base_commit)
    return _evaluate(
        repo,
        "range",
        (head_rev, head_commit),
        (base_rev, base_commit),
        head_files,
        base_files,
        progress,
    )


def _merge_base(repo: Repo, base: str, head: str) -> str:
    """Where HEAD forked from BASE (as ``git diff BASE...HEAD``), so images that landed
    on BASE meanwhile do not count as removed by the change; BASE itself when the
    two share no history."""
    from dulwich.graph import find_merge_base

    found = find_merge_base(repo.git, [base.encode(), head.encode()])  # type: ignore[list-item]
    return found[0].decode() if found else base


def _tree_files(repo: Repo, commit: str | None) -> dict[str, _File]:
    if commit is None:
        return {}
    return {e.path: _File(e.path, e.kind, e.blob, e.oid, e.size) for e in repo.ls(commit)}


def _index_files(repo: Repo) -> dict[str, _File]:
    return {
        e.path: _File(e.path, e.kind, e.blob, e.oid, e.size)
        for e in repo.index.entries()
        if e.blob is not None
    }


def _read(repo: Repo, entry: _File) -> bytes:
    """The bytes of a tracked file of the checked side (a git blob, or media)."""
    if entry.kind == "media" and entry.oid:
        return repo.media.read(entry.oid)
    assert entry.blob is not None
    return trees.blob_bytes(repo.store, entry.blob)


def load_policy(repo: Repo, files: dict[str, _File]) -> Policy:
    """The policy of a version: its ``pixvcs.toml``, or the defaults when it has none."""
    entry = files.get(POLICY_FILE)
    if entry is None or entry.blob is None:
        return Policy()
    return parse_policy(_read(repo, entry), POLICY_FILE)


def load_provenance(repo: Repo, files: dict[str, _File]) -> tuple[ProvenanceIndex, int]:
    """Every provenance record of a version (its ``provenance/**/*.jsonl`` files) and
    how many such files it has. Raises :class:`ProvenanceError` for a malformed one."""
    records: list[Record] = []
    found = sorted(p for p, f in files.items() if is_provenance_file(p) and f.blob is not None)
    for path in found:
        records += parse_records(_read(repo, files[path]), path)
    return ProvenanceIndex(records), len(found)


# -- evaluation ---------------------------------------------------------------------
class _Rules:
    """Collects violations, keeping at most MAX_VIOLATIONS_PER_RULE per rule."""

    def __init__(self) -> None:
        self.results: dict[str, RuleResult] = {}
        self.violations: list[Violation] = []

    def start(self, rule: str, checked: int) -> None:
        self.results[rule] = RuleResult(rule, RULES[rule], checked)

    def active(self, rule: str) -> bool:
        return rule in self.results

    def add(self, v: Violation) -> None:
        r = self.results[v.rule]
        r.violations += 1
        if r.violations > MAX_VIOLATIONS_PER_RULE:
            r.omitted += 1
        else:
            self.violations.append(v)


def _evaluate(
    repo: Repo,
    mode: str,
    head: tuple[str, str | None],
    base: tuple[str, str | None] | None,
    head_files: dict[str, _File],
    base_files: dict[str, _File] | None,
    progress: Progress,
) -> CheckResult:
    policy = load_policy(repo, head_files)
    # read before any image is decoded: a malformed file stops the check at once
    provenance = load_provenance(repo, head_files) if policy.provenance.required else None
    folders = set(policy.splits.folders)
    base_oids = {p: f.oid for p, f in (base_files or {}).items() if f.kind == "media"}
    media = [f for f in head_files.values() if f.kind == "media" and f.oid]
    facts = _catalog_facts(repo, media, progress)
    images: list[_Image] = []
    for f in sorted(media, key=lambda f: f.path):
        assert f.oid is not None
        row = facts[f.oid]
        split, cls = split_and_class(f.path, folders)
        images.append(
            _Image(
                f.path,
                f.oid,
                f.size,
                row.width,
                row.height,
                row.format,
                row.mode,
                row.phash,
                row.valid,
                row.error,
                split,
                cls,
                new=base_files is None or base_oids.get(f.path) != f.oid,
            )
        )
    result = CheckResult(
        mode,
        head[0],
        head[1],
        base[0] if base else None,
        base[1] if base else None,
        policy,
        images=len(images),
        checked=sum(1 for im in images if im.new),
    )
    result.oids = {im.path: im.oid for im in images}
    for p, oid in base_oids.items():
        if oid:
            result.oids.setdefault(p, oid)
    rules = _Rules()
    _image_rules(policy, images, rules)
    _pair_rules(policy, images, rules)
    _class_rules(policy, images, base_files, folders, rules, result)
    if base_files is not None:
        result.changes = _changes(base_files, head_files)
        _change_rules(policy, base_files, head_files, result.changes, rules)
    if provenance is not None:
        _provenance_rule(images, *provenance, rules)
    result.rules = list(rules.results.values())
    result.violations = rules.violations
    return result


def split_and_class(path: str, split_folders: set[str]) -> tuple[str | None, str]:
    """``train/cat/1.jpg`` -> ("train", "cat"); ``cat/1.jpg`` -> (None, "cat");
    files directly in a split folder or at the root are in the class ``"."``."""
    parts = path.split("/")
    if len(parts) > 1 and parts[0] in split_folders:
        return parts[0], parts[1] if len(parts) > 2 else ROOT_CLASS
    return None, parts[0] if len(parts) > 1 else ROOT_CLASS


def _catalog_facts(repo: Repo, media: list[_File], progress: Progress) -> dict[str, Any]:
    """Catalog rows of every oid; rows the catalog lacks are decoded now and recorded."""
    from .catalog import CatalogRow
    from .imageinfo import ImageInfo, InvalidImage, inspect_image

    oids = sorted({f.oid for f in media if f.oid})
    rows: dict[str, Any] = dict(repo.catalog.get_many(oids))
    todo = [o for o in oids if o not in rows]
    if not todo:
        return rows
    path_of = {f.oid: f.path for f in media}
    missing: list[tuple[str, str]] = []
    batch: list[tuple[str, int, ImageInfo | None, str | None]] = []
    for n, oid in enumerate(todo, 1):
        try:
            data = repo.media.read(oid)
        except FileNotFoundError:  # reported all together below
            missing.append((path_of[oid], oid))
            continue
        try:
            info: ImageInfo | None = inspect_image(data)
            error = None
        except InvalidImage as e:
            info, error = None, str(e)
        batch.append((oid, len(data), info, error))
        rows[oid] = CatalogRow(
            oid,
            len(data),
            info.width if info else None,
            info.height if info else None,
            info.format if info else None,
            info.mode if info else None,
            info.phash if info else None,
            info is not None,
            error,
        )
        progress("check", n, len(todo))
    if missing:
        raise MissingMedia(missing, "the media store (fetch them before checking)")
    repo.catalog.record(batch)
    return rows


def _image_rules(policy: Policy, images: list[_Image], rules: _Rules) -> None:
    p = policy.images
    scope = [im for im in images if im.new]
    rules.start("images.decodable", len(scope))
    limits: list[tuple[str, int | None, str, str]] = [
        ("images.min_width", p.min_width, "width", "narrower than"),
        ("images.min_height", p.min_height, "height", "lower than"),
        ("images.max_width", p.max_width, "width", "wider than"),
        ("images.max_height", p.max_height, "height", "higher than"),
        ("images.min_bytes", p.min_bytes, "size", "smaller than"),
        ("images.max_bytes", p.max_bytes, "size", "larger than"),
    ]
    if p.formats is not None:
        rules.start("images.formats", len(scope))
    if p.modes is not None:
        rules.start("images.modes", len(scope))
    for rule, limit, _, _ in limits:
        if limit is not None:
            rules.start(rule, len(scope))
    for im in scope:
        if not im.valid:
            rules.add(
                Violation("images.decodable", f"{im.path}: {im.error}", [im.path], oids=[im.oid])
            )
            continue
        if p.formats is not None and im.format not in p.formats:
            rules.add(
                Violation(
                    "images.formats",
                    f"{im.path}: format {im.format} is not one of {', '.join(p.formats)}",
                    [im.path],
                    oids=[im.oid],
                )
            )
        if p.modes is not None and im.mode not in p.modes:
            rules.add(
                Violation(
                    "images.modes",
                    f"{im.path}: mode {im.mode} is not one of {', '.join(p.modes)}",
                    [im.path],
                    oids=[im.oid],
                )
            )
        for rule, limit, attr, words in limits:
            value = getattr(im, attr)
            if limit is None or value is None:
                continue
            bad = value < limit if rule.split(".")[1].startswith("min") else value > limit
            if bad:
                unit = "bytes" if attr == "size" else "pixels"
                rules.add(
                    Violation(
                        rule,
                        f"{im.path}: {attr} {value} {unit} is {words} {limit}",
                        [im.path],
                        oids=[im.oid],
                    )
                )


def _pair_rules(policy: Policy, images: list[_Image], rules: _Rules) -> None:
    """Exact duplicates (same oid) and near-duplicates (perceptual hashes within
    ``near_distance``), each pair with at least one new image. A pair in two
    different split folders is leakage; any other pair is a duplicate."""
    dup = policy.duplicates
    leak = bool(policy.splits.folders)
    in_splits = sum(1 for im in images if im.split is not None)
    if not dup.allow_exact:
        rules.start("duplicates.exact", len(images))
    if not dup.allow_near:
        rules.start("duplicates.near", len(images))
    if leak:
        rules.start("splits.leakage", in_splits)
    if dup.allow_exact and dup.allow_near and not leak:
        return

    def report(a: _Image, b: _Image, distance: int, kind: str) -> None:
        a, b = sorted((a, b), key=lambda im: (im.new, im.path))  # what was there first
        if leak and a.split and b.split and a.split != b.split:
            rule = "splits.leakage"
            what = "the same image" if kind == "exact" else f"near-duplicates (distance {distance})"
            msg = f"{a.path} and {b.path} are {what} across splits {a.split} and {b.split}"
        else:
            rule = "duplicates.exact" if kind == "exact" else "duplicates.near"
            if not rules.active(rule):
                return
            what = "the same bytes" if kind == "exact" else f"near-duplicates (distance {distance})"
            msg = f"{a.path} and {b.path} are {what}"
        rules.add(Violation(rule, msg, [a.path, b.path], distance, kind, [a.oid, b.oid]))

    by_oid: dict[str, list[_Image]] = defaultdict(list)
    for im in images:
        by_oid[im.oid].append(im)
    for group in by_oid.values():
        if len(group) > 1:
            for a, b in combinations(group, 2):
                if a.new or b.new:
                    report(a, b, 0, "exact")

    # near: one entry per distinct perceptual hash; pairs of distinct oids
    by_hash: dict[int, list[_Image]] = defaultdict(list)
    for im in images:
        if im.phash is not None:
            by_hash[int(im.phash, 16)].append(im)
    for group in by_hash.values():  # equal hashes, different bytes: distance 0
        for a, b in combinations(group, 2):
            if a.oid != b.oid and (a.new or b.new):
                report(a, b, 0, "near")
    new_hashes = sorted(h for h, g in by_hash.items() if any(im.new for im in g))
    old_hashes = sorted(h for h, g in by_hash.items() if not any(im.new for im in g))
    distance = dup.near_distance
    pairs = [
        (new_hashes[i], new_hashes[j], d) for i, j, d in neardup.find_pairs(new_hashes, distance)
    ]
    pairs += [
        (new_hashes[i], old_hashes[j], d)
        for i, j, d in neardup.query(old_hashes, new_hashes, distance)
    ]
    for h1, h2, d in pairs:
        for a in by_hash[h1]:
            for b in by_hash[h2]:
                if a.new or b.new:
                    report(a, b, d, "near")


def _class_rules(
    policy: Policy,
    images: list[_Image],
    base_files: dict[str, _File] | None,
    folders: set[str],
    rules: _Rules,
    result: CheckResult,
) -> None:
    after: dict[str, int] = defaultdict(int)
    split_after: dict[str, int] = defaultdict(int)
    dirs: dict[str, set[str]] = defaultdict(set)
    for im in images:
        after[im.cls] += 1
        if im.split:
            split_after[im.split] += 1
        dirs[im.cls].add(im.path.rsplit("/", 1)[0] + "/" if "/" in im.path else im.path)
    before: dict[str, int] | None = None
    split_before: dict[str, int] | None = None
    if base_files is not None:
        before, split_before = defaultdict(int), defaultdict(int)
        for f in base_files.values():
            if f.kind == "media":
                split, cls = split_and_class(f.path, folders)
                before[cls] += 1
                if split:
                    split_before[split] += 1
    for cls in sorted(after.keys() | (before or {}).keys()):
        result.classes[cls] = {
            "before": None if before is None else before.get(cls, 0),
            "after": after.get(cls, 0),
        }
    for split in sorted(split_after.keys() | (split_before or {}).keys()):
        result.splits[split] = {
            "before": None if split_before is None else split_before.get(split, 0),
            "after": split_after.get(split, 0),
        }

    c = policy.classes
    if c.allowed is not None:
        allowed = set(c.allowed)
        scope = [im for im in images if im.new]
        rules.start("classes.allowed", len(scope))
        bad: dict[str, list[_Image]] = defaultdict(list)
        for im in scope:
            if im.cls not in allowed:
                bad[im.cls].append(im)
        for cls, ims in sorted(bad.items()):
            shown = ims[:MAX_PATHS_PER_VIOLATION]
            rules.add(
                Violation(
                    "classes.allowed",
                    f"class {cls!r} ({len(ims)} image(s)) is not one of {', '.join(c.allowed)}",
                    [im.path for im in shown],
                    oids=[im.oid for im in shown],
                    more_paths=len(ims) - len(shown),
                )
            )
    counts = dict(after)
    if c.allowed is not None:
        for cls in c.allowed:
            counts.setdefault(cls, 0)  # a listed class with no image at all
    if c.min_per_class is not None:
        rules.start("classes.min_per_class", len(counts))
        for cls, n in sorted(counts.items()):
            if n < c.min_per_class:
                rules.add(
                    Violation(
                        "classes.min_per_class",
                        f"class {cls!r} has {n} image(s), fewer than {c.min_per_class}",
                        sorted(dirs.get(cls, set())) or [cls + "/"],
                    )
                )
    if c.max_imbalance is not None:
        present = {cls: n for cls, n in counts.items() if n > 0}
        rules.start("classes.max_imbalance", len(present))
        if len(present) > 1:
            big = max(sorted(present), key=lambda k: present[k])
            small = min(sorted(present), key=lambda k: present[k])
            ratio = present[big] / present[small]
            if ratio > c.max_imbalance:
                rules.add(
                    Violation(
                        "classes.max_imbalance",
                        f"class {big!r} has {present[big]} images and {small!r} {present[small]}:"
                        f" ratio {ratio:.2f} exceeds {c.max_imbalance:g}",
                        sorted(dirs[big]) + sorted(dirs[small]),
                    )
                )


def _changes(base: dict[str, _File], head: dict[str, _File]) -> dict[str, Any]:
    """Added / removed / modified / renamed paths, as ``pixvcs diff`` pairs them: the
    same bytes removed at one path and added at another is a rename."""
    added = {p: f for p, f in head.items() if p not in base}
    removed = {p: f for p, f in base.items() if p not in head}
    modified = sorted(p for p, f in head.items() if p in base and base[p].blob != f.blob)

    def identity(f: _File) -> str:
        return f.oid if f.oid else f"blob:{f.blob}"

    by_identity: dict[str, list[str]] = defaultdict(list)
    for p in sorted(added):
        by_identity[identity(added[p])].append(p)
    renamed: list[dict[str, str]] = []
    for p in sorted(removed):
        targets = by_identity.get(identity(removed[p]))
        if targets:
            renamed.append({"from": p, "to": targets.pop(0)})
    moved_to = {r["to"] for r in renamed}
    moved_from = {r["from"] for r in renamed}
    return {
        "added": sorted(p for p in added if p not in moved_to),
        "removed": sorted(p for p in removed if p not in moved_from),
        "modified": modified,
        "renamed": renamed,
    }


def _change_rules(
    policy: Policy,
    base: dict[str, _File],
    head: dict[str, _File],
    changes: dict[str, Any],
    rules: _Rules,
) -> None:
    c = policy.changes
    added = [p for p in changes["added"] if head[p].kind == "media"]
    removed = [p for p in changes["removed"] if base[p].kind == "media"]
    if c.max_added is not None:
        rules.start("changes.max_added", len(added))
        if len(added) > c.max_added:
            rules.add(
                Violation(
                    "changes.max_added",
                    f"{len(added)} images added, more than {c.max_added}",
                    added[:MAX_PATHS_PER_VIOLATION],
                    oids=[head[p].oid for p in added[:MAX_PATHS_PER_VIOLATION]],
                    more_paths=max(0, len(added) - MAX_PATHS_PER_VIOLATION),
                )
            )
    if c.max_removed_fraction is not None:
        total = sum(1 for f in base.values() if f.kind == "media")
        rules.start("changes.max_removed_fraction", len(removed))
        fraction = len(removed) / total if total else 0.0
        if fraction > c.max_removed_fraction:
            rules.add(
                Violation(
                    "changes.max_removed_fraction",
                    f"{len(removed)} of {total} images removed ({fraction:.1%}), more than"
                    f" {c.max_removed_fraction:.1%}",
                    removed[:MAX_PATHS_PER_VIOLATION],
                    oids=[base[p].oid for p in removed[:MAX_PATHS_PER_VIOLATION]],
                    more_paths=max(0, len(removed) - MAX_PATHS_PER_VIOLATION),
                )
            )


def _provenance_rule(
    images: list[_Image], index: ProvenanceIndex, nfiles: int, rules: _Rules
) -> None:
    """``[provenance] required``: every checked image (every image of a version, the
    new ones of a change) has a record whose oid is the image's. Hand-added images
    count as much as crawled ones: pixvcs cannot tell them apart, and a policy that
    asks for provenance wants to know where every image came from (docs/ci.md)."""
    scope = [im for im in images if im.new]
    rules.start("provenance.required", len(scope))
    where = (
        f"is in none of the {nfiles} provenance file(s)"
        if nfiles
        else "has none: the version has no provenance/*.jsonl file"
    )
    for im in scope:
        if index.covers(im.oid):
            continue
        stale = index.by_path.get(im.path)
        if stale is not None:
            why = (
                f"no provenance record for these bytes ({stale.file}:{stale.line} records"
                f" other bytes, {stale.oid[:12]}, at this path)"
            )
        else:
            why = f"no provenance record (oid {im.oid[:12]} {where})"
        rules.add(Violation("provenance.required", f"{im.path}: {why}", [im.path], oids=[im.oid]))
