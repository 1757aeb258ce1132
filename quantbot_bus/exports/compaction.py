"""Compaction of the artifact tables' segments: like-sized small segments merged into one.

When a table has more than :data:`MAX_SEGMENTS` segments, up to :data:`MERGE_FAN` of the
smallest are merged, only segments of like size (:func:`merge_victims`: each row is rewritten
O(log n) times, the segment count stays bounded, one new run never drags big segments along).
The daemon runs the three steps with the catalog lock held only for the first and the last:
:func:`plan_compaction` (reads the state), :func:`write_compaction` (the merged files, on a
DuckDB connection of its own), :func:`commit_compaction` (swaps them into the state, re-points
the views, removes the victims' files); :func:`compact` does all three.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb

from ..config import Config
from ..log import get_logger
from .state import StateTx, state_table_exists
from .store import TABLE_NAME, TABLES_DIR, copy_to, pin
from .views import sync_views

log = get_logger("quantbot_bus.exports")

MAX_SEGMENTS = 24  #: compaction starts when a table would have more segments than this
MERGE_FAN = 8  #: how many of the smallest segments one compaction merges


def merge_victims(clean: Sequence[tuple[str, int]]) -> list[str]:
    """The clean segments (``(name, rows)``, smallest first) one compaction merges: a run of the
    smallest in which each next one holds at most twice as many rows as all before it together
    (size tiers, like a binary counter: a row is rewritten O(log n) times and a refresh never
    merges a few tiny segments into a huge one), at most :data:`MERGE_FAN`. When no two segments are
    alike (only past 2 x :data:`MAX_SEGMENTS`), the smallest :data:`MERGE_FAN` are merged."""
    picked: list[str] = []
    total = 0
    for seg, n in clean[:MERGE_FAN]:
        if picked and n > 2 * max(total, 1):
            break
        picked.append(seg)
        total += n
    if len(picked) >= 2 or len(clean) <= 2 * MAX_SEGMENTS:
        return picked if len(picked) >= 2 else []
    return [seg for seg, _n in clean[:MERGE_FAN]]


@dataclass
class Merge:
    """One planned compaction of table ``table``: ``victims`` (``rows`` in all) into one new
    segment (``segment``, once :func:`write_compaction` has written it)."""

    table: str
    victims: list[str]
    rows: int
    segment: str | None = None


def plan_compaction(con: duckdb.DuckDBPyConnection) -> list[Merge]:
    """The merges due now: per table with more than :data:`MAX_SEGMENTS` segments, the
    like-sized smallest (:func:`merge_victims`). Reads the state only (quick; under the lock)."""
    if not state_table_exists(con, "segments"):
        return []
    by_table: dict[str, list[tuple[str, int]]] = {}
    for table, segment, rows in con.execute(
        "SELECT table_name, segment, rows FROM exports_state.segments ORDER BY ALL"
    ).fetchall():
        by_table.setdefault(table, []).append((segment, int(rows)))
    plans = []
    for table, segs in sorted(by_table.items()):
        if len(segs) > MAX_SEGMENTS and TABLE_NAME.fullmatch(table):
            segs.sort(key=lambda item: (item[1], item[0]))
            victims = merge_victims(segs)
            if victims:
                sizes = dict(segs)
                plans.append(Merge(table, victims, sum(sizes[v] for v in victims)))
    return plans


def write_compaction(config: Config, plans: Sequence[Merge]) -> list[Merge]:
    """Write each planned merged segment from the victims' files, on a connection of its own
    (one thread, the daemon's ``memory_limit``): no catalog, no lock; registration goes on.
    Returns the merges whose file was written (a failure is logged as ``export.failed``)."""
    if not plans:
        return []
    tables_dir = Path(config.exports_dir) / TABLES_DIR
    done: list[Merge] = []
    con = duckdb.connect(config={"threads": 1, "memory_limit": config.memory_limit})
    try:
        for m in plans:
            table_dir = tables_dir / m.table
            segment = f"seg-c{time.time_ns():019d}-{secrets.token_hex(4)}.parquet"
            old = [str(table_dir / v) for v in m.victims]
            try:
                rows = copy_to(
                    con,
                    "SELECT * FROM read_parquet($old, union_by_name = true)",
                    {"old": old},
                    table_dir / segment,
                )
            except (duckdb.Error, OSError) as exc:
                log.error("export.failed", export=f"compaction of {m.table}", error=str(exc))
                continue
            if rows != m.rows:  # a victim changed under us: not ours to commit
                (table_dir / segment).unlink(missing_ok=True)
                continue
            pin(table_dir / segment)
            m.segment = segment
            done.append(m)
    finally:
        con.close()
    return done


def commit_compaction(
    config: Config,
    con: duckdb.DuckDBPyConnection,
    merges: Sequence[Merge],
    *,
    retired_out: list[Path] | None = None,
) -> int:
    """Swap written merges into the state (one transaction; under the lock), re-point the views,
    then remove the victims' files, or, with ``retired_out``, hand them to the caller (who may
    be publishing links to them meanwhile). A merge whose victims are no longer all there
    unchanged (a refresh rewrote one meanwhile) is dropped with its file. Returns the merges
    applied."""
    exports_dir = Path(config.exports_dir)
    tables_dir = exports_dir / TABLES_DIR
    applied: list[Merge] = []
    con.execute("BEGIN TRANSACTION")
    try:
        tx = StateTx.begin(con)
        for m in merges:
            if _swap_in(con, tables_dir, m):
                applied.append(m)
        if applied:
            sync_views(con, tx, exports_dir)
        tx.flush(con)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    for m in applied:
        victims = [tables_dir / m.table / v for v in m.victims]
        if retired_out is not None:
            retired_out.extend(victims)  # the caller unlinks them when nothing may link them
        else:
            for path in victims:
                path.unlink(missing_ok=True)
        log.debug("export.segments_merged", table=m.table, merged=len(m.victims), rows=m.rows)
    return len(applied)


def _swap_in(con: duckdb.DuckDBPyConnection, tables_dir: Path, m: Merge) -> bool:
    """Replace ``m``'s victims by its merged segment in the state, if they are all there
    unchanged; else remove the merged file. Returns whether it was swapped in."""
    assert m.segment is not None
    row = con.execute(
        "SELECT count(*), coalesce(sum(rows), 0) FROM exports_state.segments "
        "WHERE table_name = $t AND segment IN (SELECT unnest($v::VARCHAR[]))",
        {"t": m.table, "v": m.victims},
    ).fetchone()
    dest = tables_dir / m.table / m.segment
    if row != (len(m.victims), m.rows):
        dest.unlink(missing_ok=True)
        return False
    con.execute(
        "DELETE FROM exports_state.segments WHERE table_name = $t "
        "AND segment IN (SELECT unnest($v::VARCHAR[]))",
        {"t": m.table, "v": m.victims},
    )
    con.execute(
        "INSERT INTO exports_state.segments VALUES ($t, $s, $r, $b, now())",
        {"t": m.table, "s": m.segment, "r": m.rows, "b": dest.stat().st_size},
    )
    con.execute(
        "UPDATE exports_state.run_segments SET segment = $s WHERE table_name = $t "
        "AND segment IN (SELECT unnest($v::VARCHAR[]))",
        {"t": m.table, "s": m.segment, "v": m.victims},
    )
    return True


def compact(config: Config, con: duckdb.DuckDBPyConnection) -> int:
    """Plan, write and commit the due compactions in one go (``sync``, tests); the daemon runs
    the three steps itself, holding the catalog lock only for the first and the last."""
    return commit_compaction(config, con, write_compaction(config, plans=plan_compaction(con)))
