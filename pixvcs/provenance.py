"""Provenance records: where the bytes of an image came from.

A version keeps provenance in ordinary tracked files under ``provenance/``, each
``*.jsonl``: one JSON object per line, one line per image. ``pixvcs crawl``
writes ``provenance/<job-id>.jsonl`` next to the images it adds (docs/format.md,
"Crawl provenance"); people write the same kind of line for images they add by
hand (docs/ci.md, "Provenance").

This module only *reads* them, strictly, for ``[provenance] required`` in
``pixvcs check``: a record counts for an image when its ``oid`` is the image's
oid (the bytes are what was recorded; the path may have changed since, by a
relabel or a move). A record must carry

- ``oid``: 64 lowercase hex digits (the SHA-256 of the image bytes),
- ``path``: a non-empty string (where the image was when it was recorded),
- an origin: ``url`` (a non-empty string: where the bytes were fetched from) or
  ``source`` (a non-empty string, free text: "photographed by the data team").

Every other key is ignored (readers must ignore keys they do not know). A file
that breaks these rules is an error naming the file and the line
(:class:`ProvenanceError`, exit code 2): a broken record must not quietly stop
covering its image, nor quietly fail it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import ProvenanceError

#: The folder of a version whose ``*.jsonl`` files hold provenance records.
PROVENANCE_DIR = "provenance"
PROVENANCE_SUFFIX = ".jsonl"
_OID = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class Record:
    """One provenance line: the image it names and where the line is."""

    oid: str
    path: str
    origin: str  # the url, or the free-text source
    file: str
    line: int


def is_provenance_file(path: str) -> bool:
    """``provenance/<anything>.jsonl`` (subfolders included)."""
    return path.startswith(PROVENANCE_DIR + "/") and path.endswith(PROVENANCE_SUFFIX)


def parse_records(data: bytes, source: str) -> list[Record]:
    """Every record of one provenance file; raises :class:`ProvenanceError`.
    Blank lines are skipped; the last line may lack its newline."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        at = data[: e.start].count(b"\n") + 1
        raise ProvenanceError(source, at, f"not UTF-8 ({e.reason})") from None
    records: list[Record] = []
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:  # json.JSONDecodeError, and int conversion limits
            raise ProvenanceError(source, n, f"not JSON ({e})") from None
        if not isinstance(obj, dict):
            raise ProvenanceError(source, n, f"not a JSON object (a {type(obj).__name__})")
        oid = obj.get("oid")
        if not isinstance(oid, str) or not _OID.fullmatch(oid):
            raise ProvenanceError(
                source, n, f"'oid' must be 64 lowercase hex digits, got {_short(oid)}"
            )
        path = obj.get("path")
        if not isinstance(path, str) or not path:
            raise ProvenanceError(
                source, n, f"'path' must be a non-empty string, got {_short(path)}"
            )
        origin = None
        for key in ("url", "source"):
            value = obj.get(key)
            if value is None:
                continue
            if not isinstance(value, str) or not value.strip():
                raise ProvenanceError(
                    source, n, f"{key!r} must be a non-empty string, got {_short(value)}"
                )
            origin = origin or value
        if origin is None:
            raise ProvenanceError(
                source, n, "no origin: a record needs 'url' (fetched) or 'source' (free text)"
            )
        records.append(Record(oid, path, origin, source, n))
    return records


def objects_by_oid(files: Iterable[tuple[str, bytes]]) -> dict[str, dict[str, object]]:
    """oid -> the whole JSON object of its first record, over ``(path, content)``
    provenance files taken in path order (each validated as :func:`parse_records`
    does; raises :class:`ProvenanceError`). What exports put beside an image."""
    out: dict[str, dict[str, object]] = {}
    for path, data in sorted(files):
        parse_records(data, path)  # the same checks and messages as pixvcs check
        for line in data.decode("utf-8").split("\n"):
            if line.strip():
                obj = json.loads(line)
                out.setdefault(obj["oid"], obj)
    return out


class ProvenanceIndex:
    """The records of one version, looked up by oid (and by path, for messages)."""

    def __init__(self, records: Iterable[Record]) -> None:
        self.by_oid: dict[str, Record] = {}
        self.by_path: dict[str, Record] = {}
        for r in records:
            self.by_oid.setdefault(r.oid, r)
            self.by_path.setdefault(r.path, r)

    def __len__(self) -> int:
        return len(self.by_oid)

    def covers(self, oid: str) -> bool:
        return oid in self.by_oid


def _short(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False) if value is not None else "nothing"
    return text if len(text) <= 80 else text[:77] + "..."
