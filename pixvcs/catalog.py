"""The catalog: what pixvcs learned by decoding each media object once.

Derived data in ``.pixvcs/pixvcs/catalog.db`` (SQLite, through sqlite-utils),
keyed by oid; it is never the source of truth and ``pixvcs catalog rebuild``
recreates it from the media store. The ``meta`` table records the perceptual
hash recipe and library versions the rows were computed with.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .imageinfo import PHASH_RECIPE, ImageInfo, library_versions

CATALOG_VERSION = 1


@dataclass(frozen=True, slots=True)
class CatalogRow:
    oid: str
    size: int
    width: int | None
    height: int | None
    format: str | None
    mode: str | None
    phash: str | None
    valid: bool
    error: str | None


class Catalog:
    """Reads go through a plain sqlite3 connection; sqlite-utils (slow to import)
    creates the schema and writes the meta rows, which is rare."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.conn = sqlite3.connect(path)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self._db: Any = None
        exists = self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'images'"
        ).fetchone()
        if not exists:
            self.db.table("images").create(
                {
                    "oid": str,
                    "size": int,
                    "width": int,
                    "height": int,
                    "format": str,
                    "mode": str,
                    "phash": str,
                    "valid": int,
                    "error": str,
                },
                pk="oid",
            )
            self.db.table("meta").create({"key": str, "value": str}, pk="key")
            self._write_meta()
            return
        meta = self.meta()
        if meta.get("phash_recipe") != PHASH_RECIPE or meta.get("catalog_version") != str(
            CATALOG_VERSION
        ):
            self.clear()  # never mix hashes of two recipes: rebuild recomputes them

    @property
    def db(self) -> Any:
        """The catalog as a sqlite-utils Database (on the same connection)."""
        if self._db is None:
            import sqlite_utils

            self._db = sqlite_utils.Database(self.conn)
        return self._db

    def _write_meta(self) -> None:
        self.db.table("meta").upsert_all(
            [
                {"key": "catalog_version", "value": str(CATALOG_VERSION)},
                {"key": "phash_recipe", "value": PHASH_RECIPE},
                {"key": "libraries", "value": json.dumps(library_versions(), sort_keys=True)},
            ],
            pk="key",
        )

    def meta(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in self.conn.execute("SELECT key, value FROM meta")}

    def close(self) -> None:
        self.conn.close()

    def record(self, rows: Iterable[tuple[str, int, ImageInfo | None, str | None]]) -> None:
        """Record ``(oid, size, info, error)``; one transaction (a plain executemany:
        at 100,000 rows sqlite-utils' per-row upsert machinery costs seconds)."""
        records = [
            (
                oid,
                size,
                info.width if info else None,
                info.height if info else None,
                info.format if info else None,
                info.mode if info else None,
                info.phash if info else None,
                int(error is None),
                error,
            )
            for oid, size, info, error in rows
        ]
        if records:
            with self.conn:
                self.conn.executemany(
                    "INSERT OR REPLACE INTO images(oid, size, width, height, format, mode,"
                    " phash, valid, error) VALUES (?,?,?,?,?,?,?,?,?)",
                    records,
                )

    def get(self, oid: str) -> CatalogRow | None:
        rows = self.get_many([oid])
        return rows.get(oid)

    def get_many(self, oids: Sequence[str]) -> dict[str, CatalogRow]:
        out: dict[str, CatalogRow] = {}
        for start in range(0, len(oids), 500):
            chunk = list(oids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            for r in self.conn.execute(
                f"SELECT oid, size, width, height, format, mode, phash, valid, error"
                f" FROM images WHERE oid IN ({marks})",
                chunk,
            ).fetchall():
                out[r[0]] = CatalogRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]), r[8])
        return out

    def clear(self) -> None:
        with self.conn:
            self.conn.execute("DELETE FROM images")
            self._write_meta()

    def remove(self, oids: Iterable[str]) -> None:
        with self.conn:
            self.conn.executemany("DELETE FROM images WHERE oid = ?", ((o,) for o in oids))

    def count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM images").fetchone()[0])


def rebuild(
    catalog: Catalog,
    oids: Sequence[str],
    read: Callable[[str], bytes],
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Recreate every row from the media objects themselves."""
    from .imageinfo import InvalidImage, inspect_image

    catalog.clear()
    batch: list[tuple[str, int, ImageInfo | None, str | None]] = []
    invalid = 0
    for n, oid in enumerate(oids, 1):
        data = read(oid)
        try:
            info: ImageInfo | None = inspect_image(data)
            error = None
        except InvalidImage as e:
            info, error = None, str(e)
            invalid += 1
        batch.append((oid, len(data), info, error))
        if len(batch) >= 500:
            catalog.record(batch)
            batch.clear()
        if progress:
            progress(n, len(oids))
    catalog.record(batch)
    return {"objects": len(oids), "invalid": invalid}
