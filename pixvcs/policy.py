"""The dataset policy: ``pixvcs.toml`` at the root of a version, read strictly.

The policy is versioned with the data, so ``pixvcs check`` reads it from the
version being checked (the git tree of that revision; for ``--staged``, the
index). Every key has a default, and a dataset without the file gets the
defaults: decodable images, no exact duplicates, no exact or near duplicates
across the split folders ``train``, ``val`` and ``test``.

A typo must not silently switch a rule off, so unknown sections, unknown keys
and values of the wrong type are errors (:class:`PolicyError`, exit code 2)
naming the key. docs/ci.md lists every key.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import UsageError
from .neardup import MAX_DISTANCE

POLICY_FILE = "pixvcs.toml"
#: A policy larger than this is refused rather than parsed (it comes from the data).
MAX_POLICY_BYTES = 1 << 20

#: Format names as the policy spells them -> as the catalog records them (Pillow's).
FORMATS = {
    "jpeg": "JPEG",
    "jpg": "JPEG",
    "png": "PNG",
    "gif": "GIF",
    "webp": "WEBP",
    "tiff": "TIFF",
    "tif": "TIFF",
    "bmp": "BMP",
}


class PolicyError(UsageError):
    """Raised for a policy file that does not parse or breaks the schema (exit code 2).
    ``key`` is the dotted key at fault (``"duplicates.near_distance"``), or None when
    the file as a whole is at fault; ``why`` says what is wrong."""

    def __init__(self, key: str | None, why: str, source: str = POLICY_FILE) -> None:
        super().__init__(f"{source}: {key}: {why}" if key else f"{source}: {why}")
        self.key = key
        self.why = why
        self.source = source


@dataclass(frozen=True)
class ImagesPolicy:
    formats: list[str] | None = None  # catalog spelling ("JPEG"); None = any
    min_width: int | None = None
    min_height: int | None = None
    max_width: int | None = None
    max_height: int | None = None
    min_bytes: int | None = None
    max_bytes: int | None = None
    modes: list[str] | None = None


@dataclass(frozen=True)
class DuplicatesPolicy:
    near_distance: int = 6
    allow_exact: bool = False
    allow_near: bool = True


@dataclass(frozen=True)
class SplitsPolicy:
    folders: list[str] = field(default_factory=lambda: ["train", "val", "test"])


@dataclass(frozen=True)
class ClassesPolicy:
    allowed: list[str] | None = None
    min_per_class: int | None = None
    max_imbalance: float | None = None


@dataclass(frozen=True)
class ChangesPolicy:
    max_removed_fraction: float | None = None
    max_added: int | None = None


@dataclass(frozen=True)
class ProvenancePolicy:
    # every checked image needs a record in the version's provenance/*.jsonl files
    required: bool = False


@dataclass(frozen=True)
class Policy:
    images: ImagesPolicy = field(default_factory=ImagesPolicy)
    duplicates: DuplicatesPolicy = field(default_factory=DuplicatesPolicy)
    splits: SplitsPolicy = field(default_factory=SplitsPolicy)
    classes: ClassesPolicy = field(default_factory=ClassesPolicy)
    changes: ChangesPolicy = field(default_factory=ChangesPolicy)
    provenance: ProvenancePolicy = field(default_factory=ProvenancePolicy)
    source: str | None = None  # where it was read from; None = built-in defaults

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        source = out.pop("source")
        return {"source": source, **out}


# -- parsing ------------------------------------------------------------------------
def parse_policy(data: bytes, source: str = POLICY_FILE) -> Policy:
    """Parse and validate the bytes of a policy file; raises :class:`PolicyError`."""
    if len(data) > MAX_POLICY_BYTES:
        raise PolicyError(None, f"larger than {MAX_POLICY_BYTES} bytes", source)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PolicyError(None, f"not UTF-8 ({e.reason} at byte {e.start})", source) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PolicyError(None, f"not valid TOML: {e}", source) from None
    return policy_from_dict(doc, source)


def policy_from_dict(doc: dict[str, Any], source: str = POLICY_FILE) -> Policy:
    r = _Reader(doc, source)
    images = r.section("images")
    duplicates = r.section("duplicates")
    splits = r.section("splits")
    classes = r.section("classes")
    changes = r.section("changes")
    provenance = r.section("provenance")
    r.no_other_sections()

    formats = r.str_list(images, "images", "formats")
    if formats is not None:
        unknown = [f for f in formats if f.lower() not in FORMATS]
        if unknown:
            raise PolicyError(
                "images.formats",
                f"unknown format {unknown[0]!r} (known: {', '.join(sorted(FORMATS))})",
                source,
            )
        formats = sorted({FORMATS[f.lower()] for f in formats})
    modes = r.str_list(images, "images", "modes")
    if modes is not None:
        from PIL import ImageMode

        for m in modes:
            try:
                ImageMode.getmode(m)
            except KeyError:
                raise PolicyError(
                    "images.modes", f"unknown Pillow mode {m!r} (e.g. RGB, L, RGBA, P)", source
                ) from None
    img = ImagesPolicy(
        formats=formats,
        min_width=r.int_(images, "images", "min_width", low=0),
        min_height=r.int_(images, "images", "min_height", low=0),
        max_width=r.int_(images, "images", "max_width", low=0),
        max_height=r.int_(images, "images", "max_height", low=0),
        min_bytes=r.int_(images, "images", "min_bytes", low=0),
        max_bytes=r.int_(images, "images", "max_bytes", low=0),
        modes=modes,
    )
    for what in ("width", "height", "bytes"):
        lo, hi = getattr(img, f"min_{what}"), getattr(img, f"max_{what}")
        if lo is not None and hi is not None and lo > hi:
            raise PolicyError(f"images.max_{what}", f"is below min_{what} ({hi} < {lo})", source)
    r.no_other_keys(images, "images")

    dup_default = DuplicatesPolicy()
    near = r.int_(duplicates, "duplicates", "near_distance", low=0, high=MAX_DISTANCE)
    dup = DuplicatesPolicy(
        near_distance=dup_default.near_distance if near is None else near,
        allow_exact=r.bool_(duplicates, "duplicates", "allow_exact", dup_default.allow_exact),
        allow_near=r.bool_(duplicates, "duplicates", "allow_near", dup_default.allow_near),
    )
    r.no_other_keys(duplicates, "duplicates")

    folders = r.str_list(splits, "splits", "folders")
    if folders is not None:
        for f in folders:
            if "/" in f or f in (".", ".."):
                raise PolicyError("splits.folders", f"{f!r} is not a top-level folder name", source)
        if len(set(folders)) != len(folders):
            raise PolicyError("splits.folders", "lists a folder twice", source)
    spl = SplitsPolicy() if folders is None else SplitsPolicy(folders=folders)
    r.no_other_keys(splits, "splits")

    cls = ClassesPolicy(
        allowed=r.str_list(classes, "classes", "allowed"),
        min_per_class=r.int_(classes, "classes", "min_per_class", low=0),
        max_imbalance=r.number(classes, "classes", "max_imbalance", low=1.0),
    )
    r.no_other_keys(classes, "classes")

    chg = ChangesPolicy(
        max_removed_fraction=r.number(changes, "changes", "max_removed_fraction", 0.0, 1.0),
        max_added=r.int_(changes, "changes", "max_added", low=0),
    )
    r.no_other_keys(changes, "changes")

    prov = ProvenancePolicy(required=r.bool_(provenance, "provenance", "required", False))
    r.no_other_keys(provenance, "provenance")
    return Policy(img, dup, spl, cls, chg, prov, source=source)


class _Reader:
    """Typed access to the parsed TOML; every problem names its dotted key."""

    SECTIONS = ("images", "duplicates", "splits", "classes", "changes", "provenance")

    def __init__(self, doc: dict[str, Any], source: str) -> None:
        self.doc = doc
        self.source = source
        self.used: set[str] = set()

    def fail(self, key: str | None, why: str) -> PolicyError:
        return PolicyError(key, why, self.source)

    def section(self, name: str) -> dict[str, Any]:
        self.used.add(name)
        value = self.doc.get(name, {})
        if not isinstance(value, dict):
            raise self.fail(name, f"must be a table ([{name}]), got {_kind(value)}")
        return dict(value)

    def no_other_sections(self) -> None:
        for name in self.doc:
            if name not in self.used:
                raise self.fail(
                    name, f"unknown section (known: {', '.join(f'[{s}]' for s in self.SECTIONS)})"
                )

    def no_other_keys(self, table: dict[str, Any], section: str) -> None:
        for key in table:
            raise self.fail(f"{section}.{key}", "unknown key")

    def int_(
        self,
        table: dict[str, Any],
        section: str,
        key: str,
        low: int | None = None,
        high: int | None = None,
    ) -> int | None:
        if key not in table:
            return None
        value = table.pop(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"{section}.{key}", f"must be an integer, got {_kind(value)}")
        if (low is not None and value < low) or (high is not None and value > high):
            raise self.fail(f"{section}.{key}", f"must be {_range(low, high)}, got {value}")
        return value

    def number(
        self,
        table: dict[str, Any],
        section: str,
        key: str,
        low: float | None = None,
        high: float | None = None,
    ) -> float | None:
        if key not in table:
            return None
        value = table.pop(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(f"{section}.{key}", f"must be a number, got {_kind(value)}")
        if (
            value != value
            or (low is not None and value < low)
            or (high is not None and value > high)
        ):
            raise self.fail(f"{section}.{key}", f"must be {_range(low, high)}, got {value}")
        return float(value)

    def bool_(self, table: dict[str, Any], section: str, key: str, default: bool) -> bool:
        if key not in table:
            return default
        value = table.pop(key)
        if not isinstance(value, bool):
            raise self.fail(f"{section}.{key}", f"must be true or false, got {_kind(value)}")
        return value

    def str_list(self, table: dict[str, Any], section: str, key: str) -> list[str] | None:
        if key not in table:
            return None
        value = table.pop(key)
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(
                f"{section}.{key}", f"must be a list of non-empty strings, got {_kind(value)}"
            )
        return list(value)


def _kind(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    for t, name in names.items():
        if type(value) is t:
            return f"{name} ({value!r})"
    if isinstance(value, list):
        return "a list" if all(isinstance(v, str) for v in value) else "a list with non-strings"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def _range(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"between {low} and {high}"
    if low is not None:
        return f">= {low}"
    return f"<= {high}"
