"""The artifact tables' segments: one dataset per artifact table, written incrementally.

Every row of every live run of artifact table ``<name>``, with a ``run_id`` column, is in the
segments under ``.store/tables/<name>/`` (state: ``exports_state.segments``, and
``run_segments``: which segment holds each run's rows). A refresh writes at most ONE new segment
per table, holding the rows of the runs that came in; segments that contain a run that left are
rewritten (their surviving rows go into that new segment). Segment names are never reused;
retired files are removed only after the new file is in place and the state committed.

Crash safety: a segment written but not committed in the state is an orphan, removed by the next
refresh (:func:`check_segment_files`); a segment in the state but missing on disk makes its runs
be exported again.
"""

# ruff: noqa: S608 - SQL from this package's constants (quantbot_bus.exports.sql)

from __future__ import annotations

import secrets
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import duckdb

from ..log import get_logger
from . import compaction
from .sql import q
from .state import StateTx, state_table_exists
from .store import PIN_DIR, TABLE_NAME, TABLES_DIR, clean_pins, copy_to, pin

log = get_logger("quantbot_bus.exports")


def staged_relation(name: str) -> str:
    """The temp table holding the incoming runs' rows of artifact table ``name``."""
    return q("_qb_in_" + name)


def check_segment_files(
    con: duckdb.DuckDBPyConnection, exports_dir: Path, *, pending: Collection[Path] = ()
) -> None:
    """Remove orphan segment files; runs whose segment file went missing get exported again;
    every live segment has its pinned link; pins retired long enough are removed. ``pending``:
    retired segment files the caller unlinks itself once no publication names them (they and
    their pins stay)."""
    known: dict[str, set[str]] = {}
    for table_name, segment in con.execute(
        "SELECT table_name, segment FROM exports_state.segments"
    ).fetchall():
        known.setdefault(table_name, set()).add(segment)
    tables_dir = exports_dir / TABLES_DIR
    held: dict[str, set[str]] = {}
    for path in pending:
        held.setdefault(Path(path).parent.name, set()).add(Path(path).name)
    missing: list[tuple[str, str]] = []
    on_disk_tables = {p.name for p in tables_dir.iterdir() if p.is_dir()}
    for name in on_disk_tables | set(known):
        on_disk = {p.name for p in (tables_dir / name).glob("*.parquet")}
        for orphan in on_disk - known.get(name, set()) - held.get(name, set()):
            (tables_dir / name / orphan).unlink(missing_ok=True)
            log.info("export.orphan_removed", table=name, segment=orphan)
        missing += [(name, seg) for seg in known.get(name, set()) - on_disk]
        live = known.get(name, set()) & on_disk
        for seg in live:
            if not (tables_dir / name / PIN_DIR / seg).exists():
                pin(tables_dir / name / seg)  # written by a version without pins, or a crash
        clean_pins(tables_dir / name, live | held.get(name, set()), time.time())
    for name, seg in missing:
        log.warning("export.segment_missing", table=name, segment=seg)
        # A NULL fingerprint makes the refresh see these runs as updated: out, then in again.
        con.execute(
            "UPDATE exports_state.runs SET fingerprint = NULL WHERE run_id IN (SELECT run_id "
            "FROM exports_state.run_segments WHERE table_name = $t AND segment = $s)",
            {"t": name, "s": seg},
        )
        con.execute(
            "DELETE FROM exports_state.segments WHERE table_name = $t AND segment = $s",
            {"t": name, "s": seg},
        )
        con.execute(
            "DELETE FROM exports_state.run_segments WHERE table_name = $t AND segment = $s",
            {"t": name, "s": seg},
        )


def write_segment(
    con: duckdb.DuckDBPyConnection,
    tx: StateTx,
    table_dir: Path,
    name: str,
    has_new: bool,
    has_gone: bool,
) -> list[Path]:
    """Write this refresh's one segment of ``name``; return the segment files it retires.
    (``has_new``: the incoming runs' rows are staged; ``has_gone``: runs leave in this refresh;
    statements with nothing to do are skipped.)"""
    dirty, victims = _segments_to_merge(con, name, has_new, has_gone)
    merged = dirty + victims
    if not has_new and not merged:
        return []
    # Rows per surviving run of the merged segments are known from the state: nothing is
    # materialised, the new segment streams from the chunk's temp table and the old files.
    if has_gone:
        con.execute(
            "DELETE FROM exports_state.run_segments WHERE table_name = $t "
            "AND run_id IN (SELECT run_id FROM _qb_gone)",
            {"t": name},
        )
    kept_rows = 0
    if merged:
        row = con.execute(
            "SELECT coalesce(sum(rows), 0) FROM exports_state.run_segments "
            "WHERE table_name = $t AND segment IN (SELECT unnest($m::VARCHAR[]))",
            {"t": name, "m": merged},
        ).fetchone()
        kept_rows = int(row[0]) if row else 0
        con.execute(
            "DELETE FROM exports_state.segments WHERE table_name = $t AND segment IN "
            "(SELECT unnest($m::VARCHAR[]))",
            {"t": name, "m": merged},
        )
    if has_new or kept_rows > 0:
        _write_new_segment(con, tx, table_dir, name, merged, kept_rows, has_new)
    else:  # nothing survives (only empty artifacts were left in the merged segments)
        con.execute(
            "DELETE FROM exports_state.run_segments WHERE table_name = $t "
            "AND segment IN (SELECT unnest($m::VARCHAR[]))",
            {"t": name, "m": merged},
        )
    if merged:
        log.debug("export.segments_merged", table=name, rewritten=len(dirty), merged=len(victims))
    return [table_dir / s for s in merged]


def _segments_to_merge(
    con: duckdb.DuckDBPyConnection, name: str, has_new: bool, has_gone: bool
) -> tuple[list[str], list[str]]:
    """The segments of ``name`` the new segment takes the rows of: the dirty ones (holding a
    leaving run) and, only when the table would exceed 2 x MAX_SEGMENTS, like-sized clean ones."""
    dirty_sql = (
        "segment IN (SELECT segment FROM exports_state.run_segments "
        "WHERE table_name = $t AND run_id IN (SELECT run_id FROM _qb_gone))"
        if has_gone
        else "false"
    )
    segs = con.execute(
        f"SELECT segment, rows, {dirty_sql} AS dirty "
        "FROM exports_state.segments WHERE table_name = $t ORDER BY rows, segment",
        {"t": name},
    ).fetchall()
    dirty = [s for s, _rows, d in segs if d]
    clean = [s for s, _rows, d in segs if not d]
    victims: list[str] = []
    if len(clean) + (1 if (has_new or dirty) else 0) > 2 * compaction.MAX_SEGMENTS:
        # Compaction is :func:`compaction.compact`'s job, off the catalog lock; this only keeps
        # the count bounded for a caller that never runs it.
        victims = compaction.merge_victims([(seg, n) for seg, n, d in segs if not d])
    return dirty, victims


def _write_new_segment(
    con: duckdb.DuckDBPyConnection,
    tx: StateTx,
    table_dir: Path,
    name: str,
    merged: list[str],
    kept_rows: int,
    has_new: bool,
) -> None:
    """COPY the staged rows and the ``kept_rows`` surviving rows of the ``merged`` segments into
    one new segment; record it and which runs it holds."""
    staged = staged_relation(name)
    parts: list[str] = []
    params: dict[str, Any] = {}
    if has_new:
        parts.append(f"SELECT * FROM {staged}")
    if merged and kept_rows > 0:
        params["old"] = [str(table_dir / s) for s in merged]
        parts.append(
            "SELECT * FROM read_parquet($old, union_by_name = true) "
            "WHERE run_id NOT IN (SELECT run_id FROM _qb_gone)"
        )
    table_dir.mkdir(parents=True, exist_ok=True)
    segment = f"seg-{tx.next_seq():010d}-{secrets.token_hex(4)}.parquet"
    dest = table_dir / segment
    n_rows = copy_to(con, " UNION ALL BY NAME ".join(parts), params, dest)
    pin(dest)
    con.execute(
        "INSERT INTO exports_state.segments VALUES ($t, $s, $r, $b, now())",
        {"t": name, "s": segment, "r": n_rows, "b": dest.stat().st_size},
    )
    if merged:
        con.execute(
            "UPDATE exports_state.run_segments SET segment = $s WHERE table_name = $t "
            "AND segment IN (SELECT unnest($m::VARCHAR[]))",
            {"t": name, "s": segment, "m": merged},
        )
    if has_new:
        # Every incoming run with rows, plus incoming runs with an empty artifact of it.
        con.execute(
            f"""
            INSERT INTO exports_state.run_segments
            SELECT $t, run_id, $s, sum(n) FROM (
                SELECT run_id, count(*) AS n FROM {staged} GROUP BY run_id
                UNION ALL
                SELECT run_id, 0 FROM _qb_files WHERE name = $t) GROUP BY run_id
            """,
            {"t": name, "s": segment},
        )


def export_table_files(con: duckdb.DuckDBPyConnection, exports_dir: Path) -> dict[str, list[Path]]:
    """The committed segment files of each artifact table (what the publication links)."""
    if not state_table_exists(con, "segments"):
        return {}
    base = Path(exports_dir).absolute() / TABLES_DIR
    out: dict[str, list[Path]] = {}
    for table, segment in con.execute(
        "SELECT table_name, segment FROM exports_state.segments ORDER BY ALL"
    ).fetchall():
        if TABLE_NAME.fullmatch(table):
            out.setdefault(table, []).append(base / table / segment)
    return out
