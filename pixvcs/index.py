"""The index: what the next commit will hold, plus a stat cache of the work tree.

One SQLite table, one row per tracked path (see docs/format.md, "Index")::

    path      "/"-separated, relative to the work tree
    mode      git mode of the staged entry (0o100644 / 0o100755)
    kind      "media" (stored as an LFS pointer) or "blob" (an ordinary git blob)
    oid       SHA-256 of the bytes, for media
    size      size of the file in bytes
    blob      git blob id staged for the next commit; NULL = staged deletion
    base      git blob id in the base commit (what HEAD had); NULL = not in it
    base_mode mode in the base commit
    mtime_ns, ino, stamp_ns   the stat cache; stamp_ns = when it was recorded
    dirty     1 when (blob, mode) differs from (base, base_mode): a staged change

``dirty`` has a partial index, so listing staged changes costs O(changes).
Every write is one SQLite transaction.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    path TEXT PRIMARY KEY,
    mode INTEGER NOT NULL,
    kind TEXT NOT NULL,
    oid TEXT,
    size INTEGER NOT NULL,
    blob TEXT,
    base TEXT,
    base_mode INTEGER,
    mtime_ns INTEGER NOT NULL DEFAULT 0,
    ino INTEGER NOT NULL DEFAULT 0,
    stamp_ns INTEGER NOT NULL DEFAULT 0,
    dirty INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_dirty ON entries(dirty) WHERE dirty = 1;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS treestats (tree TEXT PRIMARY KEY, images INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS skipped (path TEXT PRIMARY KEY) WITHOUT ROWID;
"""

#: A file modified less than this long before its stat was recorded may have
#: been modified again within the same timestamp tick: it is re-hashed.
RACY_NS = 2_000_000_000


@dataclass(slots=True)
class Entry:
    path: str
    mode: int
    kind: str
    oid: str | None
    size: int
    blob: str | None
    base: str | None
    base_mode: int | None
    mtime_ns: int
    ino: int
    stamp_ns: int
    dirty: int

    def racy(self) -> bool:
        return self.stamp_ns - self.mtime_ns < RACY_NS

    def matches_stat(self, st: os.stat_result) -> bool:
        return (
            st.st_size == self.size
            and st.st_mtime_ns == self.mtime_ns
            and st.st_ino == self.ino
            and not self.racy()
        )


_COLS = "path, mode, kind, oid, size, blob, base, base_mode, mtime_ns, ino, stamp_ns, dirty"

#: A file's stat as the stat cache compares it: ``(path, size, mtime_ns, ino,
#: xbit)``, ``xbit`` being ``st_mode & stat.S_IXUSR`` (64 or 0). An index row and
#: a work-tree file with equal rows are the same content (see ``stat_rows``).
StatRow = tuple[str, int, int, int, int]

_STAT_ROWS = (
    "SELECT path, size, mtime_ns, CASE WHEN stamp_ns - mtime_ns >= ? THEN ino ELSE -1 END,"
    " CASE WHEN mode = ? THEN ? ELSE 0 END FROM entries"
)
_STAT_ARGS = (RACY_NS, 0o100755, stat.S_IXUSR)
#: Entries with content that are in the work tree (not left out by a sparse checkout).
_LIVE = " WHERE blob IS NOT NULL AND path NOT IN (SELECT path FROM skipped)"


class Index:
    def __init__(self, path: str) -> None:
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    # -- reading ---------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def get(self, path: str) -> Entry | None:
        row = self.db.execute(f"SELECT {_COLS} FROM entries WHERE path = ?", (path,)).fetchone()
        return None if row is None else Entry(*row)

    def entries(self) -> Iterator[Entry]:
        """Every row, staged deletions included, in path order."""
        for row in self.db.execute(f"SELECT {_COLS} FROM entries ORDER BY path"):
            yield Entry(*row)

    def media_rows(self) -> list[tuple[str, str, int]]:
        """``(pointer blob, oid, size)`` of every staged media entry (a cache:
        whoever uses a row checks that the blob is that pointer's)."""
        return self.db.execute(
            "SELECT blob, oid, size FROM entries WHERE oid IS NOT NULL AND blob IS NOT NULL"
        ).fetchall()

    def stat_rows(self, paths: Iterable[str] | None = None) -> set[StatRow]:
        """The stat cache of every live entry (or of those of ``paths``) as
        :data:`StatRow` tuples, built by SQLite and the C-level ``set()``: no
        Python code runs per row. A racy row gets ``ino = -1``, which no file
        has, so it never equals a work-tree row and is always re-hashed."""
        if paths is None:
            return set(self.db.execute(_STAT_ROWS + _LIVE, _STAT_ARGS))
        wanted = list(paths)
        out: set[StatRow] = set()
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            out.update(
                self.db.execute(
                    f"{_STAT_ROWS}{_LIVE} AND path IN ({marks})",
                    (*_STAT_ARGS, *chunk),
                )
            )
        return out

    def skipped(self) -> set[str]:
        """Tracked paths a sparse checkout leaves out of the work tree."""
        return {str(r[0]) for r in self.db.execute("SELECT path FROM skipped")}

    def get_many(self, paths: list[str]) -> dict[str, Entry]:
        out: dict[str, Entry] = {}
        for start in range(0, len(paths), 500):
            chunk = paths[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self.db.execute(
                f"SELECT {_COLS} FROM entries WHERE path IN ({marks})", chunk
            ):
                out[row[0]] = Entry(*row)
        return out

    def staged(self) -> list[Entry]:
        return [
            Entry(*r)
            for r in self.db.execute(f"SELECT {_COLS} FROM entries WHERE dirty = 1 ORDER BY path")
        ]

    def __len__(self) -> int:
        return int(
            self.db.execute("SELECT count(*) FROM entries WHERE blob IS NOT NULL").fetchone()[0]
        )

    def get_treestats(self, tree_ids: list[str]) -> dict[str, int]:
        """Cached image counts of trees (derived data; see diff.class_counts)."""
        out: dict[str, int] = {}
        for start in range(0, len(tree_ids), 500):
            chunk = tree_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for tree, images in self.db.execute(
                f"SELECT tree, images FROM treestats WHERE tree IN ({marks})", chunk
            ):
                out[tree] = int(images)
        return out

    def put_treestats(self, rows: list[tuple[str, int]]) -> None:
        self.db.executemany("INSERT OR REPLACE INTO treestats(tree, images) VALUES (?, ?)", rows)

    # -- writing (each call is one transaction) --------------------------------
    def transaction(self) -> _Tx:
        return _Tx(self.db)

    def set_skipped(self, paths: Iterable[str]) -> None:
        """Replace the set of paths a sparse checkout leaves out of the work tree."""
        self.db.execute("DELETE FROM skipped")
        self.db.executemany("INSERT OR IGNORE INTO skipped(path) VALUES (?)", ((p,) for p in paths))

    def unskip(self, paths: Iterable[str]) -> None:
        """Paths now in the work tree again (written by checkout, or staged by hand)."""
        self.db.executemany("DELETE FROM skipped WHERE path = ?", ((p,) for p in paths))

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def stage(self, rows: Iterable[tuple[str, int, str, str | None, int, str, int, int]]) -> None:
        """Stage ``(path, mode, kind, oid, size, blob, mtime_ns, ino)`` rows; keeps ``base``."""
        now = time.time_ns()
        rows = list(rows)
        self.unskip(r[0] for r in rows)
        self.db.executemany(
            "INSERT INTO entries(path, mode, kind, oid, size, blob, base, base_mode,"
            " mtime_ns, ino, stamp_ns, dirty) VALUES (?,?,?,?,?,?,NULL,NULL,?,?,?,1)"
            " ON CONFLICT(path) DO UPDATE SET mode=excluded.mode, kind=excluded.kind,"
            " oid=excluded.oid, size=excluded.size, blob=excluded.blob,"
            " mtime_ns=excluded.mtime_ns, ino=excluded.ino, stamp_ns=excluded.stamp_ns,"
            " dirty=(excluded.blob IS NOT base OR excluded.mode IS NOT base_mode)",
            ((p, m, k, o, s, b, mt, ino, now) for (p, m, k, o, s, b, mt, ino) in rows),
        )

    def refresh_stat(self, rows: Iterable[tuple[str, int, int, int]]) -> None:
        """Record ``(path, size, mtime_ns, ino)`` for files whose content was re-verified."""
        now = time.time_ns()
        self.db.executemany(
            "UPDATE entries SET size=?, mtime_ns=?, ino=?, stamp_ns=? WHERE path=?",
            ((s, m, i, now, p) for (p, s, m, i) in rows),
        )

    def unstage(self, paths: Iterable[str]) -> None:
        """Stage the deletion of ``paths``: rows not in the base simply go."""
        for p in paths:
            self.db.execute("DELETE FROM entries WHERE path = ? AND base IS NULL", (p,))
            self.db.execute("UPDATE entries SET blob = NULL, dirty = 1 WHERE path = ?", (p,))

    def set_base_entries(
        self, rows: Iterable[tuple[str, int, str, str | None, int, str, int, int]]
    ) -> None:
        """Rows equal in index and base (after checkout or commit)."""
        now = time.time_ns()
        self.db.executemany(
            "INSERT OR REPLACE INTO entries(path, mode, kind, oid, size, blob, base, base_mode,"
            " mtime_ns, ino, stamp_ns, dirty) VALUES (?,?,?,?,?,?,?,?,?,?,?,0)",
            ((p, m, k, o, s, b, b, m, mt, ino, now) for (p, m, k, o, s, b, mt, ino) in rows),
        )

    def delete(self, paths: Iterable[str]) -> None:
        paths = list(paths)
        self.unskip(paths)
        self.db.executemany("DELETE FROM entries WHERE path = ?", ((p,) for p in paths))

    def mark_committed(self, commit_id: str) -> None:
        self.db.execute("DELETE FROM entries WHERE dirty = 1 AND blob IS NULL")
        self.db.execute(
            "UPDATE entries SET base = blob, base_mode = mode, dirty = 0 WHERE dirty = 1"
        )
        self.set_meta("base_commit", commit_id)

    def rebase(self, base: dict[str, tuple[int, str]], commit_id: str) -> None:
        """Make ``base`` (path -> (mode, blob id)) the base; recompute every dirty flag.

        The slow path, O(entries): used when HEAD moved outside pixvcs."""
        self.db.execute("UPDATE entries SET base = NULL, base_mode = NULL")
        self.db.executemany(
            "UPDATE entries SET base = ?, base_mode = ? WHERE path = ?",
            ((b, m, p) for p, (m, b) in base.items()),
        )
        known = {r[0] for r in self.db.execute("SELECT path FROM entries")}
        self.db.executemany(
            "INSERT INTO entries(path, mode, kind, oid, size, blob, base, base_mode, dirty)"
            " VALUES (?, ?, 'blob', NULL, 0, NULL, ?, ?, 1)",
            ((p, m, b, m) for p, (m, b) in base.items() if p not in known),
        )
        self.db.execute(
            "UPDATE entries SET dirty = (blob IS NOT base OR (blob IS NOT NULL AND mode IS NOT base_mode))"
        )
        self.db.execute("DELETE FROM entries WHERE blob IS NULL AND base IS NULL")
        self.set_meta("base_commit", commit_id)


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.db.execute("COMMIT")
        else:
            self.db.execute("ROLLBACK")
