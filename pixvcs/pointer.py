"""git-lfs pointer files (spec v1), parsed strictly.

A pointer is UTF-8 text of ``key value`` lines ending in ``\\n``: ``version``
first, the remaining keys in byte order, ``oid sha256:<64 lowercase hex>`` and
``size <decimal>`` required. pixvcs writes exactly the three-line form; it
reads any spec-conforming pointer (extra keys allowed) and rejects the rest,
because pointers come from remotes and are not trusted.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import InvalidPointer

VERSION_LINE = b"version https://git-lfs.github.com/spec/v1\n"
MAX_POINTER_SIZE = 1024  # git-lfs itself never treats a larger blob as a pointer
_OID_RE = re.compile(r"[0-9a-f]{64}")
_KEY_RE = re.compile(r"[a-z0-9.-]+")
_SIZE_RE = re.compile(r"0|[1-9][0-9]{0,18}")


@dataclass(frozen=True, slots=True)
class Pointer:
    oid: str  # lowercase hex SHA-256 of the media bytes
    size: int

    def to_bytes(self) -> bytes:
        return format_pointer(self.oid, self.size)


def format_pointer(oid: str, size: int) -> bytes:
    return b"%soid sha256:%s\nsize %d\n" % (VERSION_LINE, oid.encode(), size)


def looks_like_pointer(data: bytes) -> bool:
    """True when ``data`` claims to be a pointer (it may still be malformed)."""
    return len(data) <= MAX_POINTER_SIZE and data.startswith(b"version https://git-lfs")


def parse_pointer(data: bytes) -> Pointer:
    """Parse a pointer, raising :class:`InvalidPointer` naming what is wrong."""
    if len(data) > MAX_POINTER_SIZE:
        raise InvalidPointer(f"{len(data)} bytes, larger than {MAX_POINTER_SIZE}")
    if not data.startswith(VERSION_LINE):
        raise InvalidPointer("first line is not 'version https://git-lfs.github.com/spec/v1'")
    if not data.endswith(b"\n"):
        raise InvalidPointer("does not end with a newline")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidPointer(f"not UTF-8 ({e.reason})") from None
    lines = text[:-1].split("\n")[1:]
    fields: dict[str, str] = {}
    previous = ""
    for line in lines:
        key, sep, value = line.partition(" ")
        if not sep or not _KEY_RE.fullmatch(key):
            raise InvalidPointer(f"bad line {line!r}")
        if key in fields or key == "version":
            raise InvalidPointer(f"duplicate key {key!r}")
        if key <= previous:
            raise InvalidPointer(f"keys out of order at {key!r}")
        previous = key
        fields[key] = value
    oid_field = fields.get("oid")
    if oid_field is None:
        raise InvalidPointer("no oid line")
    if not oid_field.startswith("sha256:") or not _OID_RE.fullmatch(oid_field[7:]):
        raise InvalidPointer(f"oid is not 'sha256:' and 64 lowercase hex digits: {oid_field!r}")
    size_field = fields.get("size")
    if size_field is None:
        raise InvalidPointer("no size line")
    if not _SIZE_RE.fullmatch(size_field):
        raise InvalidPointer(f"size is not a non-negative decimal: {size_field!r}")
    return Pointer(oid_field[7:], int(size_field))


def is_oid(text: str) -> bool:
    return _OID_RE.fullmatch(text) is not None


def checked_pointers(rows: Iterable[tuple[Any, Any, Any]]) -> dict[str, Pointer]:
    """``(blob, oid, size)`` hints that hold: the SHA-1 of the canonical pointer
    text the row implies (``blob N\\0`` + :func:`format_pointer`) is the blob id,
    exactly the check the object id makes of the stored blob. The rest are
    dropped: a hint can save a read, never change what is read."""
    out: dict[str, Pointer] = {}
    for blob, oid, size in rows:
        if not (isinstance(blob, str) and isinstance(oid, str) and isinstance(size, int)):
            continue
        if size < 0 or not is_oid(oid):
            continue
        text = format_pointer(oid, size)
        if (
            hashlib.sha1(b"blob %d\x00%s" % (len(text), text), usedforsecurity=False).hexdigest()
            == blob
        ):
            out[blob] = Pointer(oid, size)
    return out


def parsed_pointers(blobs: Mapping[str, bytes]) -> dict[str, Pointer]:
    """Pointer blobs (blob id -> bytes, hashed by the caller, e.g. while a pack
    was indexed) parsed; a malformed one is left out, so that reading its blob
    where it is used refuses it as any malformed pointer is refused."""
    out: dict[str, Pointer] = {}
    for blob, data in blobs.items():
        try:
            out[blob] = parse_pointer(data)
        except InvalidPointer:
            continue
    return out
