"""The daemon's local ledger (``state_dir/iceberg-ledger.sqlite3``): which keys the shared tables
already hold, the objects each registered or rejected run was seen with, and the listing cursors.

Exactly-once does not depend on it (that is :mod:`quantbot_bus.iceberg.commit`'s job); it keeps
each batch's cost in proportion to the batch: a listed run is looked up here, not in the
tables. It follows ``runs_d`` and ``rejections_f`` by the keys each new snapshot's summary lists
(walking back from the current snapshot to the last one it read), and reads the key columns
whole only when it has never synced or its last snapshot was expired meanwhile.

It is a SQLite file (WAL): every lookup of a batch's keys is a search of a primary key, so it
costs the same at 1,000 registered runs as at 1,000,000 (``bench/ledger.py``). A ledger in the
DuckDB format (``iceberg.duckdb`` beside it) is imported once (:func:`import_duckdb`).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..log import get_logger
from .tables import key_changes

log = get_logger("quantbot_bus.iceberg")

#: The followed tables and the columns that make their key.
FOLLOWED = {"runs_d": ("run_id",), "rejections_f": ("run_dir", "fingerprint")}
#: The ledger's file in the state directory.
LEDGER_NAME = "iceberg-ledger.sqlite3"
#: The file a ledger had before it was a SQLite file (imported once, then left as it is).
LEGACY_NAME = "iceberg.duckdb"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS known (tbl TEXT, key TEXT, PRIMARY KEY (tbl, key)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS rejected (key TEXT PRIMARY KEY, signature TEXT) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS seen (key TEXT PRIMARY KEY, etag TEXT, signature TEXT)"
    " WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS elsewhere (key TEXT PRIMARY KEY) WITHOUT ROWID",
)


def rejection_key(run_dir: str, fingerprint: str | None) -> str:
    return f"{run_dir}#{fingerprint or ''}"


class Ledger:
    """One daemon's ledger; its methods may be called from any thread (one at a time)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.con = sqlite3.connect(
            str(path), timeout=30, isolation_level=None, check_same_thread=False
        )
        self._lock = threading.RLock()
        self.con.execute("PRAGMA journal_mode=WAL")
        self.con.execute("PRAGMA synchronous=NORMAL")
        with self._tx():
            for statement in _SCHEMA:
                self.con.execute(statement)
        legacy = path.with_name(LEGACY_NAME)
        if legacy.exists() and self._empty():
            self._import(legacy)

    def _empty(self) -> bool:
        """Nothing recorded yet (no poll has written here): a legacy ledger may be imported."""
        return not self._rows("SELECT 1 FROM meta UNION ALL SELECT 1 FROM known LIMIT 1")

    def _import(self, legacy: Path) -> None:
        """Import ``legacy`` whole or not at all; a failure is logged and tried again at the
        next start, as long as nothing has been recorded here meanwhile."""
        try:
            with self._tx():
                import_duckdb(legacy, self.con)
        except Exception as exc:  # noqa: BLE001 - the daemon works without it (see the log)
            log.warning(
                "iceberg.ledger_not_imported",
                path=str(legacy),
                error=f"{type(exc).__name__}: {exc}",
                consequence="the known keys are read again from the tables; runs changed or"
                " rejected before are validated again once",
            )

    def close(self) -> None:
        with self._lock:
            self.con.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        """All or nothing, holding the lock (a savepoint: one inside another joins it)."""
        with self._lock:
            self.con.execute("SAVEPOINT ledger")
            try:
                yield
            except BaseException:
                # SQLite may have rolled the whole transaction back already (a full disk, an
                # I/O error): the original error is the one to see
                with contextlib.suppress(sqlite3.Error):
                    self.con.execute("ROLLBACK TO ledger")
                    self.con.execute("RELEASE ledger")
                raise
            self.con.execute("RELEASE ledger")

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self.con.execute(sql, params).fetchall()

    # -- keys
    def known(self, table: str, keys: Iterable[str]) -> set[str]:
        wanted = sorted(set(keys))
        if not wanted:
            return set()
        rows = self._rows(
            "SELECT key FROM known WHERE tbl = ? AND key IN (SELECT value FROM json_each(?))",
            [table, json.dumps(wanted)],
        )
        return {r[0] for r in rows}

    def add(self, table: str, keys: Iterable[str]) -> None:
        new = sorted(set(keys))
        if new:
            with self._tx():
                self.con.execute(
                    "INSERT OR IGNORE INTO known SELECT ?, value FROM json_each(?)",
                    [table, json.dumps(new)],
                )

    def remove(self, table: str, keys: Iterable[str]) -> None:
        gone = sorted(set(keys))
        if gone:
            with self._tx():
                self.con.execute(
                    "DELETE FROM known WHERE tbl = ? AND key IN (SELECT value FROM json_each(?))",
                    [table, json.dumps(gone)],
                )
                if table == "runs_d":
                    self.con.execute(
                        "DELETE FROM elsewhere WHERE key IN (SELECT value FROM json_each(?))",
                        [json.dumps(gone)],
                    )

    # -- registered runs of other roots (sharing the tables): never this daemon's to delete
    def elsewhere(self) -> set[str]:
        """Run ids ``runs_d`` holds from another root, as a deletion check found them; one
        leaves this set when ``runs_d`` drops it (:meth:`remove`, a full :meth:`sync`)."""
        return {r[0] for r in self._rows("SELECT key FROM elsewhere")}

    def note_elsewhere(self, run_ids: Iterable[str]) -> None:
        new = sorted(set(run_ids))
        if new:
            with self._tx():
                self.con.execute(
                    "INSERT OR IGNORE INTO elsewhere SELECT value FROM json_each(?)",
                    [json.dumps(new)],
                )

    def all(self, table: str) -> set[str]:
        """Every key of ``table`` (a reconcile compares them with the full listing)."""
        return {r[0] for r in self._rows("SELECT key FROM known WHERE tbl = ?", [table])}

    def count(self, table: str) -> int:
        rows = self._rows("SELECT count(*) FROM known WHERE tbl = ?", [table])
        return int(rows[0][0]) if rows else 0

    # -- rejected runs, by the listing signature they were rejected at
    def rejected_unchanged(self, signatures: dict[str, str]) -> set[str]:
        """The metadata keys of ``signatures`` rejected before at the same signature."""
        if not signatures:
            return set()
        rows = self._rows(
            "SELECT key, signature FROM rejected WHERE key IN (SELECT value FROM json_each(?))",
            [json.dumps(sorted(signatures))],
        )
        return {k for k, sig in rows if signatures.get(k) == sig}

    def note_rejected(self, signatures: dict[str, str]) -> None:
        if signatures:
            with self._tx():
                self.con.executemany(
                    "INSERT OR REPLACE INTO rejected VALUES (?, ?)", sorted(signatures.items())
                )

    # -- registered runs, by the objects they were registered (or first listed) with
    def note_seen(self, seen: dict[str, tuple[str, str]]) -> None:
        """Record ``metadata key -> (metadata.json ETag, listing signature)`` of registered
        runs (either may be empty: not known)."""
        if seen:
            with self._tx():
                self.con.executemany(
                    "INSERT OR REPLACE INTO seen VALUES (?, ?, ?)",
                    [(k, etag, sig) for k, (etag, sig) in sorted(seen.items())],
                )

    def forget_seen(self, keys: Iterable[str]) -> None:
        gone = sorted(set(keys))
        if gone:
            with self._tx():
                self.con.execute(
                    "DELETE FROM seen WHERE key IN (SELECT value FROM json_each(?))",
                    [json.dumps(gone)],
                )

    def seen_missing(self, listed: Iterable[str]) -> list[str]:
        """The recorded keys a full ``listed`` set of metadata keys lacks: directories of
        registered runs (or first listed as such) that are gone from the bucket."""
        rows = self._rows(
            "SELECT key FROM seen WHERE key NOT IN (SELECT value FROM json_each(?)) ORDER BY key",
            [json.dumps(sorted(set(listed)))],
        )
        return [r[0] for r in rows]

    def changed(self, listed: dict[str, tuple[str, str]]) -> set[str]:
        """The keys of registered runs whose listed ``(ETag, signature)`` differs from what
        was recorded (each compared only when both sides have it). A key recorded without a
        signature takes the listed one when its ETag matches; a key never recorded takes the
        listed pair as its baseline."""
        if not listed:
            return set()
        changed: set[str] = set()
        with self._tx():
            recorded = {
                key: (etag, sig)
                for key, etag, sig in self.con.execute(
                    "SELECT key, etag, signature FROM seen"
                    " WHERE key IN (SELECT value FROM json_each(?))",
                    [json.dumps(sorted(listed))],
                )
            }
            first, signed = [], []
            for key, (etag, sig) in sorted(listed.items()):
                if key not in recorded:
                    first.append((key, etag, sig))
                    continue
                old_etag, old_sig = recorded[key]
                if (etag and old_etag and etag != old_etag) or (sig and old_sig and sig != old_sig):
                    changed.add(key)
                elif not old_sig and sig and (not old_etag or old_etag == etag):
                    signed.append((sig, key))
            self.con.executemany("INSERT INTO seen VALUES (?, ?, ?)", first)
            self.con.executemany("UPDATE seen SET signature = ? WHERE key = ?", signed)
        return changed

    # -- small values
    def get(self, key: str, default: Any = None) -> Any:
        rows = self._rows("SELECT value FROM meta WHERE key = ?", [key])
        return json.loads(rows[0][0]) if rows else default

    def put(self, key: str, value: Any) -> None:
        with self._tx():
            self.con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, json.dumps(value)])

    # -- following a table
    def sync(self, table: str, iceberg_table: Any) -> int:
        """Bring the keys of ``table`` up to its current snapshot; returns how many were read."""
        current = iceberg_table.current_snapshot()
        mark = f"synced:{table}"
        last = self.get(mark)
        if current is None or current.snapshot_id == last:
            return 0
        snaps = self._since(last, current, iceberg_table) if last is not None else None
        if snaps is None:  # never synced, or the snapshots since `last` were expired
            keys = self._read_all(table, iceberg_table)
            with self._tx():
                self.con.execute("DELETE FROM known WHERE tbl = ?", [table])
                if table == "runs_d":  # which of them are elsewhere is found out again
                    self.con.execute("DELETE FROM elsewhere")
                self.add(table, keys)
                self.put(mark, current.snapshot_id)
            return len(keys)
        added, deleted = key_changes(snaps)
        with self._tx():
            self.remove(table, deleted)
            self.add(table, added)
            self.put(mark, current.snapshot_id)
        return len(added) + len(deleted)

    @staticmethod
    def _since(last: int, current: Any, iceberg_table: Any) -> list[Any] | None:
        """The snapshots after ``last`` up to ``current``; None when the chain does not reach
        back to ``last`` any more."""
        by_id = {s.snapshot_id: s for s in iceberg_table.snapshots()}
        snaps: list[Any] = []
        snap = current
        while snap.snapshot_id != last:
            snaps.append(snap)
            parent = snap.parent_snapshot_id
            if parent is None or parent not in by_id:
                return None
            snap = by_id[parent]
        return snaps

    def _read_all(self, table: str, iceberg_table: Any) -> list[str]:
        cols = FOLLOWED[table]
        data = iceberg_table.scan(selected_fields=cols).to_arrow()
        if len(cols) == 1:
            return [str(v) for v in data.column(cols[0]).to_pylist()]
        return [
            rejection_key(a, b)
            for a, b in zip(*(data.column(c).to_pylist() for c in cols), strict=True)
        ]


def import_duckdb(legacy: Path, con: sqlite3.Connection) -> None:
    """Copy the rows of a ledger kept in DuckDB (``iceberg.duckdb``) into the SQLite ledger
    ``con`` (a transaction of the caller's). The DuckDB file is left as it is."""
    import duckdb

    old = duckdb.connect(str(legacy), read_only=True)
    try:
        present = {r[0] for r in old.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        for table, width in (("known", 2), ("meta", 2), ("rejected", 2), ("seen", 3)):
            if table in present:
                rows = old.execute(f"SELECT * FROM {table}").fetchall()  # noqa: S608 - constant
                marks = ", ".join("?" * width)
                con.executemany(f"INSERT OR REPLACE INTO {table} VALUES ({marks})", rows)  # noqa: S608
    finally:
        old.close()
