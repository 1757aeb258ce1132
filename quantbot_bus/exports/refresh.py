"""The refresh: the export state and segments brought up to date with the working catalog.

One call takes in at most ``max_runs`` new or updated runs (in run_id order; deleted runs are all
taken out at once, they are cheap) in one transaction, so memory and time per call stay bounded
(a 10,000-run catch-up is 20 calls; works under a DuckDB ``memory_limit``). The status then has
``"more": true`` (always present): call again right away until it is false. Every call leaves
consistent exports holding the runs taken in so far.

Change detection is one cheap FULL JOIN of ``catalog.runs_d`` against ``exports_state.runs``
(new, updated: the fingerprint changed, deleted); nothing else of the history is read. If
reading the incoming rows fails, each incoming file is read on its own; the ones that fail are
logged (``export.file_unreadable``) and left out, and the refresh is retried once without them,
so one such run never keeps the others out.

A refresh that took runs in or out logs ``export.refreshed`` at info (``ms``, ``added``,
``removed``, ``rows``: the rows of the incoming runs now in the export tables); one with
nothing to do logs nothing.
"""

# ruff: noqa: S608 - SQL from this package's constants (quantbot_bus.exports.sql)

from __future__ import annotations

import os
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import duckdb

from ..config import Config
from ..log import get_logger
from ..timeutil import iso_utc
from .chunk import Changes, apply_changes
from .files import bump_generations
from .segments import check_segment_files
from .state import StateTx, ensure_state
from .store import STATUS_NAME, TABLES_DIR, clean_temp_files, read_status, write_json
from .summaries import update_summary_state
from .views import sync_views

log = get_logger("quantbot_bus.exports")

DEFAULT_MAX_RUNS = 500  #: changed runs one :func:`refresh` call takes in at most


def refresh(
    config: Config,
    con: duckdb.DuckDBPyConnection,
    *,
    max_runs: int = DEFAULT_MAX_RUNS,
    retired_out: list[Path] | None = None,
    pending: Collection[Path] = (),
) -> dict[str, Any]:
    """Bring the exports up to date with the working catalog, ``max_runs`` changed runs at most.

    Deleted runs are all taken out at once (cheap); new and updated runs are taken in in run_id
    order, at most ``max_runs`` per call, in one transaction, so memory and time per call stay
    bounded. The returned status has ``"more": True`` when changed runs remain: call again
    (every call leaves consistent exports behind; it just does not hold every run yet).
    Segment files the refresh retired are unlinked at the end, or, with ``retired_out``, handed
    to the caller (who may be publishing links to them meanwhile); ``pending``: such files
    retired earlier that the caller has not unlinked yet (not orphans: left alone).
    """
    if max_runs < 1:
        raise ValueError(f"max_runs must be at least 1 (got {max_runs})")
    t_start = time.perf_counter()
    exports_dir = Path(config.exports_dir)
    (exports_dir / TABLES_DIR).mkdir(parents=True, exist_ok=True)
    ensure_state(con)
    clean_temp_files(exports_dir)
    check_segment_files(con, exports_dir, pending=pending)

    skip: set[str] = set()  # incoming Parquet files that cannot be read (see below)
    changes = Changes()
    while True:
        con.execute("BEGIN TRANSACTION")
        try:
            tx = StateTx.begin(con)
            changes = _find_changes(con, max_runs)
            retired, views_changed = _take_in(con, tx, config, changes, skip)
            rows = _rows_of(con, changes.added)
            tx.flush(con)
            con.execute("COMMIT")
            break
        except duckdb.Error:
            con.execute("ROLLBACK")
            # One unreadable file (corrupt pages behind a valid footer: the contract reads only
            # footers) must not keep every other run out of the exports: find such files, leave
            # them out, and try once more. Anything else (disk full...) is raised as before.
            if skip:
                raise
            skip = _unreadable_incoming_files(con, changes.added)
            if not skip:
                raise
        except BaseException:
            con.execute("ROLLBACK")
            raise
    if retired_out is not None:
        retired_out.extend(retired)  # the caller unlinks them when nothing may link them
    else:
        for path in retired:
            path.unlink(missing_ok=True)

    status = read_status(exports_dir)
    status.update(
        refreshed_at=iso_utc(),
        ms=round((time.perf_counter() - t_start) * 1000, 1),
        changed_runs={"added": len(changes.added), "removed": len(changes.removed)},
        more=changes.more,
        views_changed=views_changed,
    )
    status.setdefault("exports", {})
    if changes.added or changes.removed:
        log.info(
            "export.refreshed",
            ms=status["ms"],
            added=len(changes.added),
            removed=len(changes.removed),
            rows=rows,
        )
    if changes.more:
        log.info("export.catching_up", added=len(changes.added), max_runs=max_runs)
    write_json(exports_dir / STATUS_NAME, status)
    return status


def _take_in(
    con: duckdb.DuckDBPyConnection,
    tx: StateTx,
    config: Config,
    changes: Changes,
    skip: set[str],
) -> tuple[list[Path], bool]:
    """The steps of one refresh transaction: the changed runs out and in, the catalog summaries,
    the file generations, the views. Returns the retired segment files and whether a view
    changed."""
    _register_ids(con, "_qb_gone", changes.removed)
    _register_ids(con, "_qb_new", changes.added)
    retired: list[Path] = []
    changed = bool(changes.removed or changes.added)
    if changed:
        retired = apply_changes(con, tx, Path(config.exports_dir), changes, skip, config=config)
    changes.latest_changed = update_summary_state(
        con, tx, changed=changed, gone=bool(changes.removed)
    )
    bump_generations(
        tx,
        changed=changed,
        latest_changed=changes.latest_changed,
        touched_flags=changes.touched_flags,
    )
    return retired, sync_views(con, tx, Path(config.exports_dir))


def _find_changes(con: duckdb.DuckDBPyConnection, max_runs: int) -> Changes:
    """Runs to take out (deleted: all) and in (new or updated: the first ``max_runs`` by run_id;
    an updated run's old version goes out in the same call as its new version comes in)."""
    rows = con.execute(
        """
        SELECT coalesce(r.run_id, s.run_id) AS run_id,
               s.run_id IS NOT NULL AS was_exported,
               r.run_id IS NOT NULL AND r.deleted_at IS NULL AS is_live
        FROM (SELECT run_id, fingerprint, deleted_at FROM catalog.runs_d) r
        FULL OUTER JOIN exports_state.runs s ON r.run_id = s.run_id
        WHERE (s.run_id IS NULL AND r.deleted_at IS NULL)
           OR (s.run_id IS NOT NULL AND (r.run_id IS NULL OR r.deleted_at IS NOT NULL
               OR r.fingerprint IS DISTINCT FROM s.fingerprint))
        ORDER BY 1
        """
    ).fetchall()
    changes = Changes()
    taken = 0
    for run_id, was_exported, is_live in rows:
        if is_live:
            if taken >= max_runs:
                changes.more = True
                continue
            taken += 1
            changes.added.append(run_id)
        if was_exported:
            changes.removed.append(run_id)
    return changes


def _rows_of(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str]) -> int:
    """The rows the export tables hold of ``run_ids`` (this refresh's incoming runs)."""
    if not run_ids:
        return 0
    row = con.execute(
        "SELECT coalesce(sum(rows), 0) FROM exports_state.run_segments "
        "WHERE run_id IN (SELECT unnest($ids::VARCHAR[]))",
        {"ids": list(run_ids)},
    ).fetchone()
    return int(row[0]) if row else 0


def _register_ids(con: duckdb.DuckDBPyConnection, name: str, ids: Sequence[str]) -> None:
    con.execute(f"CREATE OR REPLACE TEMP TABLE {name} (run_id VARCHAR PRIMARY KEY)")
    if ids:
        con.execute(
            f"INSERT INTO {name} SELECT DISTINCT unnest($ids::VARCHAR[])", {"ids": list(ids)}
        )


def _unreadable_incoming_files(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str]) -> set[str]:
    """Parquet files of the runs to export (``run_ids``: this call's chunk) that DuckDB cannot
    read, each logged once as ``export.file_unreadable``. Read one by one, outside any
    transaction; only called after the refresh failed."""
    rows = con.execute(
        """
        SELECT a.run_id, a.name,
               CASE WHEN a.path LIKE '/%' THEN a.path ELSE r.run_dir || '/' || a.path END
        FROM catalog.artifacts_f a JOIN catalog.runs_d r USING (run_id)
        WHERE r.deleted_at IS NULL AND lower(a.format) = 'parquet'
          AND a.run_id IN (SELECT unnest($ids::VARCHAR[]))
        ORDER BY 1, 2
        """,
        {"ids": list(run_ids)},
    ).fetchall()
    bad: set[str] = set()
    for run_id, name, path in rows:
        if not os.path.exists(path):
            continue
        try:
            con.execute(
                "CREATE OR REPLACE TEMP TABLE _qb_probe AS SELECT * FROM read_parquet($f)",
                {"f": path},
            )
        except duckdb.Error as exc:
            bad.add(path)
            log.warning(
                "export.file_unreadable",
                run_id=run_id,
                table=name,
                path=path,
                error=f"{type(exc).__name__}: {str(exc)[:500]}",
                action="left out of exports/tables until the run changes",
            )
        finally:
            con.execute("DROP TABLE IF EXISTS _qb_probe")
    return bad
