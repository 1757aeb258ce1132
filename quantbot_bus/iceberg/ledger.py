"""The daemon's local ledger (``state_dir/iceberg.duckdb``): which keys the shared tables already
hold, and the listing cursors.

Exactly-once does not depend on it (that is :mod:`quantbot_bus.iceberg.commit`'s job); it keeps
each batch's cost in proportion to the batch: a listed run is looked up here, not in the
tables. It follows ``runs_d`` and ``rejections_f`` by the keys each new snapshot's summary lists
(walking back from the current snapshot to the last one it read), and reads the key columns
whole only when it has never synced or its last snapshot was expired meanwhile.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import duckdb

from .tables import key_changes

#: The followed tables and the columns that make their key.
FOLLOWED = {"runs_d": ("run_id",), "rejections_f": ("run_dir", "fingerprint")}


def rejection_key(run_dir: str, fingerprint: str | None) -> str:
    return f"{run_dir}#{fingerprint or ''}"


class Ledger:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.con = duckdb.connect(str(path))
        self.con.execute(
            "CREATE TABLE IF NOT EXISTS known (tbl VARCHAR, key VARCHAR, PRIMARY KEY (tbl, key))"
        )
        self.con.execute("CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
        self.con.execute(
            "CREATE TABLE IF NOT EXISTS rejected (key VARCHAR PRIMARY KEY, signature VARCHAR)"
        )
        self.con.execute(
            "CREATE TABLE IF NOT EXISTS seen"
            " (key VARCHAR PRIMARY KEY, etag VARCHAR, signature VARCHAR)"
        )

    def close(self) -> None:
        self.con.close()

    # -- keys
    def known(self, table: str, keys: Iterable[str]) -> set[str]:
        wanted = list(keys)
        if not wanted:
            return set()
        rows = self.con.execute(
            "SELECT key FROM known WHERE tbl = ? AND key IN (SELECT unnest(?::VARCHAR[]))",
            [table, wanted],
        ).fetchall()
        return {r[0] for r in rows}

    def add(self, table: str, keys: Iterable[str]) -> None:
        new = sorted(set(keys))
        if new:
            self.con.execute(
                "INSERT OR IGNORE INTO known SELECT ?, unnest(?::VARCHAR[])", [table, new]
            )

    def remove(self, table: str, keys: Iterable[str]) -> None:
        gone = sorted(set(keys))
        if gone:
            self.con.execute(
                "DELETE FROM known WHERE tbl = ? AND key IN (SELECT unnest(?::VARCHAR[]))",
                [table, gone],
            )

    def all(self, table: str) -> set[str]:
        """Every key of ``table`` (a reconcile compares them with the full listing)."""
        rows = self.con.execute("SELECT key FROM known WHERE tbl = ?", [table]).fetchall()
        return {r[0] for r in rows}

    def count(self, table: str) -> int:
        row = self.con.execute("SELECT count(*) FROM known WHERE tbl = ?", [table]).fetchone()
        return int(row[0]) if row else 0

    # -- rejected runs, by the listing signature they were rejected at
    def rejected_unchanged(self, signatures: dict[str, str]) -> set[str]:
        """The metadata keys of ``signatures`` rejected before at the same signature."""
        if not signatures:
            return set()
        keys, sigs = list(signatures), list(signatures.values())
        rows = self.con.execute(
            "SELECT r.key FROM rejected r JOIN (SELECT unnest(?::VARCHAR[]) AS key,"
            " unnest(?::VARCHAR[]) AS signature) l USING (key) WHERE r.signature = l.signature",
            [keys, sigs],
        ).fetchall()
        return {r[0] for r in rows}

    def note_rejected(self, signatures: dict[str, str]) -> None:
        if signatures:
            self.con.execute(
                "INSERT OR REPLACE INTO rejected SELECT unnest(?::VARCHAR[]), unnest(?::VARCHAR[])",
                [list(signatures), list(signatures.values())],
            )

    # -- registered runs, by the objects they were registered (or first listed) with
    def note_seen(self, seen: dict[str, tuple[str, str]]) -> None:
        """Record ``metadata key -> (metadata.json ETag, listing signature)`` of registered
        runs (either may be empty: not known)."""
        if seen:
            self.con.execute(
                "INSERT OR REPLACE INTO seen SELECT unnest(?::VARCHAR[]), unnest(?::VARCHAR[]),"
                " unnest(?::VARCHAR[])",
                [list(seen), [v[0] for v in seen.values()], [v[1] for v in seen.values()]],
            )

    def forget_seen(self, keys: Iterable[str]) -> None:
        gone = sorted(set(keys))
        if gone:
            self.con.execute("DELETE FROM seen WHERE key IN (SELECT unnest(?::VARCHAR[]))", [gone])

    def seen_missing(self, listed: Iterable[str]) -> list[str]:
        """The recorded keys a full ``listed`` set of metadata keys lacks: directories of
        registered runs (or first listed as such) that are gone from the bucket."""
        self.con.execute(
            "CREATE OR REPLACE TEMP TABLE listed_keys AS SELECT unnest(?::VARCHAR[]) AS key",
            [sorted(set(listed))],
        )
        rows = self.con.execute(
            "SELECT key FROM seen ANTI JOIN listed_keys USING (key) ORDER BY key"
        ).fetchall()
        self.con.execute("DROP TABLE listed_keys")
        return [r[0] for r in rows]

    def changed(self, listed: dict[str, tuple[str, str]]) -> set[str]:
        """The keys of registered runs whose listed ``(ETag, signature)`` differs from what
        was recorded (each compared only when both sides have it). A key recorded without a
        signature takes the listed one when its ETag matches; a key never recorded takes the
        listed pair as its baseline."""
        if not listed:
            return set()
        self.con.execute(
            "CREATE OR REPLACE TEMP TABLE listed AS SELECT unnest(?::VARCHAR[]) AS key,"
            " unnest(?::VARCHAR[]) AS etag, unnest(?::VARCHAR[]) AS signature",
            [list(listed), [v[0] for v in listed.values()], [v[1] for v in listed.values()]],
        )
        rows = self.con.execute(
            "SELECT l.key FROM listed l JOIN seen s USING (key)"
            " WHERE (l.etag <> '' AND s.etag <> '' AND l.etag <> s.etag)"
            " OR (l.signature <> '' AND s.signature <> '' AND l.signature <> s.signature)"
        ).fetchall()
        changed = {r[0] for r in rows}
        self.con.execute(
            "INSERT INTO seen SELECT key, etag, signature FROM listed"
            " WHERE key NOT IN (SELECT key FROM seen)"
        )
        self.con.execute(
            "UPDATE seen SET signature = l.signature FROM listed l WHERE seen.key = l.key"
            " AND seen.signature = '' AND l.signature <> '' AND (seen.etag = '' OR seen.etag = l.etag)"
        )
        self.con.execute("DROP TABLE listed")
        return changed

    # -- small values
    def get(self, key: str, default: Any = None) -> Any:
        row = self.con.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return json.loads(row[0]) if row else default

    def put(self, key: str, value: Any) -> None:
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
            self.con.execute("DELETE FROM known WHERE tbl = ?", [table])
            self.add(table, keys)
        else:
            added, deleted = key_changes(snaps)
            self.remove(table, deleted)
            self.add(table, added)
            keys = [*added, *deleted]
        self.put(mark, current.snapshot_id)
        return len(keys)

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
