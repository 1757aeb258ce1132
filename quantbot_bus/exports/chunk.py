"""One chunk of changed runs, taken out of and into the exports (inside the refresh transaction).

The runs that leave (deleted, or the old version of an updated run; temp table ``_qb_gone``)
are subtracted from the plug-in summaries' totals and their state rows deleted; the rows of the
runs that come in (``_qb_new``) are read from their Parquet files into a temp table per artifact
table (this chunk's only: memory and time per call stay bounded), each table gets its one new
segment, and the plug-in summaries compute the incoming runs' partials from those rows. The
staged rows are CAST to each table's established column types; a run whose column type conflicts
with them is left out of that table and flagged (:mod:`.evolution`).

Unreadable files: the contract reads only Parquet footers, so a file with corrupt pages behind a
valid footer is registered; the refresh finds such files after a failed attempt and passes them
here as ``skip``: left out of the artifact tables (the run stays in ``runs``) until the run
changes.
"""

# ruff: noqa: S608 - SQL from this package's constants (quantbot_bus.exports.sql)

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from ..config import Config
from ..log import get_logger
from . import evolution, plugins
from .segments import staged_relation, write_segment
from .sql import q
from .state import StateTx
from .store import TABLE_NAME, TABLES_DIR

log = get_logger("quantbot_bus.exports")


@dataclass
class Changes:
    """The runs one refresh takes out and in, and what that touched."""

    removed: list[str] = field(default_factory=list)  # deleted or updated (old version out)
    added: list[str] = field(default_factory=list)  # new or updated (new version in)
    touched_flags: set[str] = field(default_factory=set)  # the feed flags of the runs moved
    more: bool = False  # changed runs beyond this call's max_runs remain
    latest_changed: bool = False  # the latest-artifact set changed


def apply_changes(
    con: duckdb.DuckDBPyConnection,
    tx: StateTx,
    exports_dir: Path,
    changes: Changes,
    skip: set[str] | frozenset[str] = frozenset(),
    *,
    config: Config,
) -> list[Path]:
    """Segments and partials for the changed runs (inside ``tx``'s transaction).

    Returns the retired segment files, to be removed once the transaction has committed.
    """
    tables_dir = exports_dir / TABLES_DIR
    # Flags of the removed runs (which summaries they fed) before their state rows go.
    if changes.removed:
        _take_flags(con, "_qb_gone", changes)
        _remove_runs(con, exports_dir)

    # The artifacts of the runs that come in (Parquet files only; path absolute).
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE _qb_files AS
        SELECT a.run_id, replace(a.name, '/', '__') AS name,  -- store.export_table_name
               CASE WHEN a.path LIKE '/%' THEN a.path ELSE r.run_dir || '/' || a.path END AS path,
               a.rows, CAST(a.arrow_schema AS VARCHAR) AS arrow_schema,
               coalesce(r.created_at, r.registered_at) AS created_key
        FROM catalog.artifacts_f a JOIN catalog.runs_d r USING (run_id)
        WHERE a.run_id IN (SELECT run_id FROM _qb_new) AND lower(a.format) = 'parquet'
        """
    )
    new_tables = {r[0] for r in con.execute("SELECT DISTINCT name FROM _qb_files").fetchall()}
    gone_tables = {
        r[0]
        for r in con.execute(
            "SELECT DISTINCT table_name FROM exports_state.run_segments "
            "WHERE run_id IN (SELECT run_id FROM _qb_gone)"
        ).fetchall()
    }
    retired: list[Path] = []
    staged: dict[str, plugins.Staged] = {}
    for name in sorted(new_tables | gone_tables):
        if not TABLE_NAME.fullmatch(name):
            log.warning("export.table_skipped", table=name, reason="not a valid table name")
            continue
        cols = _stage_new_rows(con, tx, name, skip) if name in new_tables else None
        if cols is not None:
            staged[name] = plugins.Staged(staged_relation(name), cols)
        retired += write_segment(
            con, tx, tables_dir / name, name, cols is not None, bool(changes.removed)
        )

    for summary in plugins.summaries():
        if summary.compute is not None:
            summary.compute(con, {t: staged[t] for t in summary.tables if t in staged}, config)
    for name in staged:
        con.execute(f"DROP TABLE IF EXISTS {staged_relation(name)}")

    _insert_runs(con)
    _take_flags(con, "_qb_new", changes)
    return retired


def _take_flags(con: duckdb.DuckDBPyConnection, ids: str, changes: Changes) -> None:
    """Add to ``changes.touched_flags`` the feed flags of the runs in temp table ``ids``."""
    names = [flag.column for flag in plugins.flags()]
    if not names:
        return
    row = con.execute(
        f"SELECT {', '.join(f'coalesce(bool_or({c}), false)' for c in names)} "
        f"FROM exports_state.runs WHERE run_id IN (SELECT run_id FROM {ids})"
    ).fetchone()
    changes.touched_flags.update(c for c, hit in zip(names, row or (), strict=False) if hit)


def _remove_runs(con: duckdb.DuckDBPyConnection, exports_dir: Path) -> None:
    """Forget the runs in ``_qb_gone``: subtract them from the plug-ins' totals and drop their
    state rows. (Their rows in segments are removed by :func:`write_segment`.)"""
    summaries = plugins.summaries()
    for summary in summaries:
        if summary.remove is not None:
            summary.remove(con, exports_dir)
    for table in (*(t for s in summaries for t in s.run_tables), "runs"):
        con.execute(
            f"DELETE FROM exports_state.{table} WHERE run_id IN (SELECT run_id FROM _qb_gone)"
        )


def _insert_runs(con: duckdb.DuckDBPyConnection) -> None:
    """The incoming runs' rows of ``exports_state.runs``, with their feed flags."""
    flags = plugins.flags()
    params: dict[str, Any] = {}
    for flag in flags:
        params.update(flag.params)
    con.execute(
        f"""
        INSERT INTO exports_state.runs
        SELECT r.run_id, r.fingerprint, r.run_type, CAST(r.created_at AS VARCHAR),
               {"".join(f"{flag.sql}, " for flag in flags)}now()
        FROM catalog.runs_d r LEFT JOIN _qb_files f USING (run_id)
        WHERE r.run_id IN (SELECT run_id FROM _qb_new)
        GROUP BY r.run_id, r.fingerprint, r.run_type, r.created_at
        """,
        params,
    )


def _stage_new_rows(
    con: duckdb.DuckDBPyConnection,
    tx: StateTx,
    name: str,
    skip: set[str] | frozenset[str] = frozenset(),
) -> list[str] | None:
    """Load the rows of ``name`` of the incoming runs into a temp table, run_id first, each
    column CAST to the table's established type.

    Runs whose column types conflict with the table's are left out and flagged
    (:func:`.evolution.admit`); files in ``skip`` (found unreadable) are left out."""
    incoming = con.execute(
        "SELECT run_id, path, arrow_schema FROM _qb_files WHERE name = $n "
        "ORDER BY created_key NULLS LAST, run_id",
        {"n": name},
    ).fetchall()
    admission = evolution.admit(
        con, tx, name, [(run_id, schema) for run_id, _p, schema in incoming]
    )
    files = []
    for run_id, path, _schema in sorted(incoming):
        if path in skip or run_id in admission.rejected:
            continue
        if os.path.exists(path):
            files.append(path)
        else:  # the run directory went away after registration: the next rescan deletes it
            log.warning("export.file_missing", table=name, path=path)
    if not files:
        return None
    # The columns (footers only), then ONE pass from the files into the chunk's temp table.
    cur = con.execute(
        "SELECT * FROM read_parquet($files, union_by_name = true) LIMIT 0", {"files": files}
    )
    cols = [d[0] for d in cur.description or () if d[0] not in ("run_id", "__qb_file")]
    select = ", ".join(
        [
            "f.run_id",
            *(
                f"CAST(s.{q(c)} AS {admission.casts[c]}) AS {q(c)}"
                if c in admission.casts
                else f"s.{q(c)}"
                for c in cols
            ),
        ]
    )
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {staged_relation(name)} AS SELECT {select} "
        "FROM read_parquet($files, union_by_name = true, filename = '__qb_file') s "
        "JOIN (SELECT run_id, path FROM _qb_files WHERE name = $n) f ON s.__qb_file = f.path",
        {"n": name, "files": files},
    )
    return ["run_id", *cols]
