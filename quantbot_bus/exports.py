"""The exports: consolidated artifact tables, materialised summaries, user exports.

``refresh(config, con, *, max_runs=500) -> dict`` — ``con`` is a cursor on the working catalog
(the Bus's, under its lock) — brings the export state and the consolidated table segments up to
date in one transaction and returns the status written to ``exports/_export_status.json``; its
work grows with the runs that changed, not with history. ``write_files(config, con, gens, *,
kind, force=False)`` writes the whole-file exports — the summary ``<name>.parquet`` files from
the state (``kind="summary"``, ``con`` the working catalog) and the ``[[exports]]`` of the
config (``kind="user"``, ``con`` a reader of the publication, ``None`` when none is configured) —
each to a new name in the store, at most once per :data:`FILE_WRITE_SPACING` x its own write
time unless forced. The
publication (:mod:`quantbot_bus.publication`) links the segments (:func:`export_table_files`)
and the files into its generations; readers never see this module's files by their store
names. Neither raises for a failing export (reported in the status, logged ``export.failed``).

Bounded work per call: one call takes in at most ``max_runs`` new or updated runs (in
run_id order; deleted runs are all taken out at once, they are cheap) in one transaction, reading
their rows from the run Parquet files into temp tables of that chunk only, so memory and time per
call stay bounded (a 10,000-run catch-up is 20 calls; works under a DuckDB ``memory_limit``).
The status then has ``"more": true`` (always present): call again right away until it is false.
Every call leaves consistent exports holding the runs taken in so far.

What the exports hold (published as ``exports/gen/<N>/...``; docs: examples/analysis.md):

- ``tables/<name>/`` — per artifact table name, every row of every live run with a ``run_id``
  column, in segments (store: :data:`TABLES_DIR`); the view ``exports.<name>`` (a table whose
  name is also a summary's name gets the view ``exports.table_<name>``).
- ``files/runs.parquet`` (``param_<key>``/``metric_<key>`` columns), ``artifacts.parquet``,
  ``latest_artifacts.parquet`` (without the Arrow schema JSON: it is in ``catalog.artifacts_f``),
  ``run_summaries.parquet``, ``caller_leaderboard.parquet``, ``policy_comparison.parquet``,
  ``frontier_best.parquet`` (views ``exports.<name>`` too), and ``<name>.parquet|csv`` for each
  ``[[exports]]`` of the config (store: :data:`FILES_DIR`);
- ``exports/_export_status.json`` — per export: last_run_at, rows, ms, ok, error, file.

Incremental design. State lives in schema ``exports_state`` of the working catalog:

- ``runs`` (run_id, fingerprint, flags): one cheap FULL JOIN against ``catalog.runs_d`` finds new,
  updated (fingerprint changed) and deleted runs; nothing else of the history is read.
- ``segments`` and ``run_segments`` (run → segment): a refresh writes at most ONE new segment per
  table, holding the rows of the runs that changed in it; segments that contain a deleted or
  updated run are rewritten (their surviving rows go into that new segment). When a table has
  more than :data:`MAX_SEGMENTS` segments, :func:`compact` (the daemon runs it in the background,
  off the catalog lock) merges up to :data:`MERGE_FAN` of the smallest, only segments of like size
  (see :func:`_merge_victims`: each row is rewritten O(log n) times, the segment count stays
  bounded, one new run never drags big segments along).
  Segment names are never reused; retired files are removed only after the new file is in place.
- per-run partials, computed once from a run's own rows when it is exported: ``run_summary_p``
  (exact per-run medians), ``policy_p`` (per run × policy, exact medians), ``caller_p``
  (per run × caller counts; a leaving run's histograms are computed again from its rows in the
  segments, see :func:`_remove_histograms`), ``frontier_p`` (per run × caller best
  constrained policy). ``caller_tot`` and ``caller_hist_tot`` hold their running totals, updated
  by adding an exported run's partials and subtracting a removed run's (integers: exact).

Cross-run quantiles (caller_leaderboard: median/p90 peak_multiple, median dd_bps, median t_2x_ms)
come from the merged histograms: log-scale bins 1 % wide (bin ``k`` holds ``|v|`` in
``[1.01^k, 1.01^(k+1))``, a sign and an exact zero bin), the value reported is the geometric
middle of the bin holding the element DuckDB's ``quantile_disc`` picks (the ``ceil(n·q)``-th
smallest value). Relative error ≤ ``sqrt(1.01) - 1`` ≈ 0.499 %; the cost does not grow with history
(a caller has at most a few thousand bins whatever the number of runs).

Whole-catalog summaries without whole-catalog work: ``runs_flat`` (the rows of ``runs.parquet``),
``artifacts_x`` (``artifacts.parquet``) and ``latest_x`` (``latest_artifacts.parquet``) are state
tables updated with each call's runs (``run_kv`` keeps each run's params/metrics keys and types,
merged with ``json_group_structure``); a refresh only COPYs them out. One is rebuilt from the
catalog when its shape changes (a params/metrics key appears, disappears or widens its type; a
catalog column is added). ``latest_x`` takes the incoming runs' artifacts against the current newest
per (run_type, name) and recomputes from ``catalog.latest_artifacts_v`` only the groups whose
newest run left. The state has a :data:`STATE_VERSION`; a state of another version is dropped and
the exports rebuilt (a bounded catch-up).

Summaries: the views ``exports.<summary>`` of the working catalog are SELECTs over the state
tables above; :func:`write_files` writes them out. A file is rewritten when a refresh fed it
(``file_gen:<name>`` in the meta counts them), but at most once per :data:`FILE_WRITE_SPACING` x
the time its last write took, so the whole-file rewrites take a bounded share of the time at any
history size; the daemon comes back for a held-back file when it is due, and a stop or ``sync``
writes every pending file. Readers' ``exports.<summary>`` views read the published files, so
they lag ``catalog.*`` by at most that cadence. Until a catch-up is done (``more``), the
summaries hold the runs taken in so far.

Unreadable files: the contract reads only Parquet footers, so a file with corrupt pages behind a
valid footer is registered. If reading the incoming rows fails, each incoming file is read on its
own; the ones that fail are logged (``export.file_unreadable``: run_id, table, path, error) and
left out of ``tables/`` (the run stays in ``runs.parquet``) until the run changes, and the
refresh is retried once without them, so one such run never keeps the others out.

Files: every file is written by DuckDB ``COPY`` to a hidden ``.<name>.qbexp-*.tmp``, fsynced
and renamed to a name never used before; nothing here is rewritten in place, and a retired file
stays readable in every generation that links it. Crash safety: a segment written but not
committed in the state is an orphan and is removed by the next refresh; a segment in the state
but missing on disk makes its runs be exported again.
"""

# ruff: noqa: S608 - SQL text here is assembled only from this module's constants and from
# identifiers we quote with _q (column names read back from DESCRIBE, validated table names);
# every value (run ids, paths, keys) is a bound parameter. Paths inside CREATE VIEW (which cannot
# take parameters) are our own absolute paths, quoted with _lit.

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from .catalog import SEQ_COLUMNS
from .config import SUMMARY_NAMES, Config, UserExport
from .fsutil import install
from .log import get_logger
from .timeutil import age_s, iso_utc

log = get_logger("quantbot_bus.exports")

FILE_WRITE_SPACING = 10.0  #: a whole file is rewritten at most once per this × its last write time
MAX_SEGMENTS = 24  #: compaction starts when a table would have more segments than this
MERGE_FAN = 8  #: how many of the smallest segments one compaction merges
BIN_BASE = 1.01  #: histogram bin width factor (relative error ≤ sqrt(BIN_BASE) - 1)
_BIN_OFFSET = 100_000  # keeps bins of positive values > 0 and of negative values < 0
TMP_MARK = ".qbexp-"
PIN_DIR = ".v"  #: per table dir: hard links to the segments, the paths the views list
PIN_GRACE_S = 300.0  #: a retired segment stays readable this long through its pinned link
STATUS_NAME = "_export_status.json"
FILES_DIR = ".store/files"  #: the export files' one real name (``<name>.<token>.<ext>``)
TABLES_DIR = ".store/tables"  #: the segments' one real name (readers use the generations)
SUMMARIES = SUMMARY_NAMES
PATH_TABLE = "backtest_call_path_metrics"
POLICY_TABLE = "backtest_policy_results"
CALL_RESULTS_TABLE = "backtest_call_results"
FRONTIER_TABLE = "frontier"
_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")

_STATE_DDL = """
CREATE SCHEMA IF NOT EXISTS exports_state;
CREATE SCHEMA IF NOT EXISTS exports;
CREATE TABLE IF NOT EXISTS exports_state.meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS exports_state.runs (
    run_id VARCHAR PRIMARY KEY, fingerprint VARCHAR, run_type VARCHAR, created_at VARCHAR,
    path_only BOOLEAN, has_policy BOOLEAN, has_frontier BOOLEAN, exported_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS exports_state.segments (
    table_name VARCHAR, segment VARCHAR, rows BIGINT, bytes BIGINT, created_at TIMESTAMP,
    PRIMARY KEY (table_name, segment));
CREATE TABLE IF NOT EXISTS exports_state.run_segments (
    table_name VARCHAR, run_id VARCHAR, segment VARCHAR, rows BIGINT,
    PRIMARY KEY (table_name, run_id));
CREATE TABLE IF NOT EXISTS exports_state.run_summary_p (
    run_id VARCHAR PRIMARY KEY, total_trades BIGINT, total_pnl_usd DOUBLE, total_pnl_pct DOUBLE,
    avg_return_bps DOUBLE, win_rate DOUBLE, max_drawdown_bps DOUBLE, median_drawdown_bps DOUBLE,
    total_calls BIGINT, unique_callers BIGINT);
CREATE TABLE IF NOT EXISTS exports_state.policy_p (
    run_id VARCHAR, policy_id VARCHAR, trades BIGINT, avg_realized_return_bps DOUBLE,
    median_realized_return_bps DOUBLE, stop_out_rate DOUBLE, win_rate DOUBLE,
    avg_time_exposed_ms DOUBLE);
CREATE TABLE IF NOT EXISTS exports_state.caller_p (
    run_id VARCHAR, caller_name VARCHAR, calls BIGINT, hit_2x BIGINT, hit_3x BIGINT,
    hit_4x BIGINT);
CREATE TABLE IF NOT EXISTS exports_state.caller_tot (
    caller_name VARCHAR PRIMARY KEY, calls BIGINT, hit_2x BIGINT, hit_3x BIGINT, hit_4x BIGINT,
    runs_seen BIGINT);
CREATE TABLE IF NOT EXISTS exports_state.caller_hist_tot (
    caller_name VARCHAR, metric VARCHAR, bin INTEGER, n BIGINT,
    PRIMARY KEY (caller_name, metric, bin));
CREATE TABLE IF NOT EXISTS exports_state.frontier_p (
    run_id VARCHAR, caller_name VARCHAR, policy_params VARCHAR, meets_constraints BOOLEAN,
    objective_score DOUBLE, avg_return_bps DOUBLE, median_return_bps DOUBLE,
    stop_out_rate DOUBLE, rank BIGINT);
CREATE TABLE IF NOT EXISTS exports_state.run_kv (
    run_id VARCHAR, source VARCHAR, key VARCHAR, kind VARCHAR, sample VARCHAR);
"""
#: Bumped when the state tables change incompatibly: an older state is dropped and rebuilt
#: (a bounded catch-up, :func:`refresh` ``max_runs`` at a time).
STATE_VERSION = "4"
DEFAULT_MAX_RUNS = 500  #: changed runs one :func:`refresh` call takes in at most


def _q(identifier: str) -> str:
    """Quote an identifier we generated ourselves (validated names, sanitised keys)."""
    return '"' + identifier.replace('"', '""') + '"'


def _lit(text: str) -> str:
    """A SQL string literal for a path we built (CREATE VIEW cannot take parameters)."""
    return "'" + text.replace("'", "''") + "'"


def _bin_sql(expr: str) -> str:
    v = f"CAST({expr} AS DOUBLE)"
    k = f"CAST(floor(ln(abs({v})) / ln({BIN_BASE})) AS INTEGER)"
    return (
        f"CASE WHEN {v} IS NULL OR NOT isfinite({v}) THEN NULL WHEN {v} = 0 THEN 0 "
        f"WHEN {v} > 0 THEN {k} + {_BIN_OFFSET} ELSE -({k} + {_BIN_OFFSET}) END"
    )


def _bin_value_sql(b: str) -> str:
    return (
        f"CASE WHEN {b} IS NULL THEN NULL WHEN {b} = 0 THEN 0.0 "
        f"WHEN {b} > 0 THEN pow({BIN_BASE}, {b} - {_BIN_OFFSET} + 0.5) "
        f"ELSE -pow({BIN_BASE}, -({b}) - {_BIN_OFFSET} + 0.5) END"
    )


def bin_value(value: float) -> float:
    """The value a quantile from the histograms reports for ``value`` (for tests and docs)."""
    import math

    if value == 0:
        return 0.0
    k = math.floor(math.log(abs(value)) / math.log(BIN_BASE))
    return math.copysign(BIN_BASE ** (k + 0.5), value)


# --------------------------------------------------------------------------- file writing


def _tmp_for(dest: Path) -> Path:
    """Our temp names carry TMP_MARK, so crash leftovers are recognised and cleaned up."""
    return dest.with_name(f".{dest.name}{TMP_MARK}{secrets.token_hex(4)}.tmp")


def _copy_to(
    con: duckdb.DuckDBPyConnection,
    sql: str,
    params: dict[str, Any],
    dest: Path,
    fmt: str = "parquet",
) -> int:
    """``COPY (sql) TO`` a temp file next to ``dest``, fsync, replace. Returns the row count."""
    tmp = _tmp_for(dest)
    options = "FORMAT parquet, COMPRESSION zstd" if fmt == "parquet" else "FORMAT csv, HEADER"
    try:
        row = con.execute(
            f"COPY ({sql}) TO $qb_dest ({options})", {**params, "qb_dest": str(tmp)}
        ).fetchone()
        install(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return int(row[0]) if row else 0


def _write_json(dest: Path, data: Any) -> None:
    tmp = _tmp_for(dest)
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True, default=str)
            fh.write("\n")
        install(tmp, dest)  # fsync, rename, fsync dir
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- refresh


@dataclass
class _Changes:
    removed: list[str] = field(default_factory=list)  # deleted or updated (old version out)
    added: list[str] = field(default_factory=list)  # new or updated (new version in)
    touched_flags: set[str] = field(default_factory=set)  # path_only / has_policy / has_frontier
    more: bool = False  # changed runs beyond this call's max_runs remain
    latest_changed: bool = False  # the latest-artifact set changed


def refresh(
    config: Config,
    con: duckdb.DuckDBPyConnection,
    *,
    max_runs: int = DEFAULT_MAX_RUNS,
    retired_out: list[Path] | None = None,
) -> dict[str, Any]:
    """Bring the exports up to date with the working catalog, ``max_runs`` changed runs at most.

    Deleted runs are all taken out at once (cheap); new and updated runs are taken in in run_id
    order, at most ``max_runs`` per call, in one transaction, so memory and time per call stay
    bounded. The returned status has ``"more": True`` when changed runs remain: call again
    (every call leaves consistent exports behind; it just does not hold every run yet).
    Segment files the refresh retired are unlinked at the end, or, with ``retired_out``, handed
    to the caller (who may be publishing links to them meanwhile).
    """
    if max_runs < 1:
        raise ValueError(f"max_runs must be at least 1 (got {max_runs})")
    t_start = time.perf_counter()
    exports_dir = Path(config.exports_dir)
    (exports_dir / TABLES_DIR).mkdir(parents=True, exist_ok=True)
    _ensure_state(con)
    _clean_temp_files(exports_dir)
    _check_segment_files(con, exports_dir)

    skip: set[str] = set()  # incoming Parquet files that cannot be read (see below)
    changes = _Changes()
    while True:
        con.execute("BEGIN TRANSACTION")
        try:
            _tx.begin(con)
            changes = _find_changes(con, max_runs)
            _register_ids(con, "_qb_gone", changes.removed)
            _register_ids(con, "_qb_new", changes.added)
            retired: list[Path] = []
            if changes.removed or changes.added:
                retired = _apply_changes(con, exports_dir, changes, skip)
            _update_summary_state(con, changes)
            _bump_generations(con, changes)
            views_changed = _sync_views(con, exports_dir, config.exports)
            _tx.flush(con)
            con.execute("COMMIT")
            break
        except duckdb.Error:
            con.execute("ROLLBACK")
            _tx.end()
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
        finally:
            _tx.end()
    if retired_out is not None:
        retired_out.extend(retired)  # the caller unlinks them when nothing may link them
    else:
        for path in retired:
            path.unlink(missing_ok=True)

    status = _read_status(exports_dir)
    status.update(
        refreshed_at=iso_utc(),
        ms=round((time.perf_counter() - t_start) * 1000, 1),
        changed_runs={"added": len(changes.added), "removed": len(changes.removed)},
        more=changes.more,
        views_changed=views_changed,
    )
    status.setdefault("exports", {})
    if changes.more:
        log.info("export.catching_up", added=len(changes.added), max_runs=max_runs)
    _write_json(exports_dir / STATUS_NAME, status)
    return status


def _ensure_state(con: duckdb.DuckDBPyConnection) -> None:
    """Create the state schema once (a cheap check on later refreshes); a state of another
    :data:`STATE_VERSION` is dropped (its segment files become orphans, removed next) and the
    exports are rebuilt from the catalog."""
    row = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = 'exports_state'"
    ).fetchone()
    n_tables = row[0] if row else 0
    if n_tables:
        version = None
        if con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
            "AND schema_name = 'exports_state' AND table_name = 'meta'"
        ).fetchone() != (0,):
            got = con.execute(
                "SELECT value FROM exports_state.meta WHERE key = 'state_version'"
            ).fetchone()
            version = got[0] if got else None
        if version != STATE_VERSION:
            log.warning("export.state_reset", found=version, expected=STATE_VERSION)
            con.execute("DROP SCHEMA exports_state CASCADE")
            con.execute("DROP SCHEMA IF EXISTS exports CASCADE")
            n_tables = 0
    if n_tables < _STATE_DDL.count("CREATE TABLE"):
        con.execute(_STATE_DDL)
        con.execute(
            "INSERT OR REPLACE INTO exports_state.meta VALUES ('state_version', $v)",
            {"v": STATE_VERSION},
        )


def _read_status(exports_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((exports_dir / STATUS_NAME).read_text(encoding="utf-8"))
        return data if isinstance(data, dict) and isinstance(data.get("exports"), dict) else {}
    except (OSError, ValueError):
        return {}


def _clean_temp_files(exports_dir: Path) -> None:
    """Remove temp files a crashed refresh left (only ours: ``.<name>.qbexp-*.tmp``)."""
    files_dir = exports_dir / FILES_DIR
    dirs = [
        exports_dir,
        files_dir,
        *(p for p in (exports_dir / TABLES_DIR).iterdir() if p.is_dir()),
    ]
    for d in dirs:
        for p in d.glob(f".*{TMP_MARK}*.tmp"):
            p.unlink(missing_ok=True)


def _pin(segment: Path) -> None:
    """Hard-link a segment into its table's :data:`PIN_DIR`: the views list these links, so a
    reader of an older snapshot still finds a segment that a compaction has retired from the
    glob's directory meanwhile (same inode, no copy)."""
    pin = segment.parent / PIN_DIR / segment.name
    pin.parent.mkdir(exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.link(segment, pin)


def _clean_pins(table_dir: Path, live: set[str], now: float) -> None:
    """Remove pinned links of segments that left the table dir more than PIN_GRACE_S ago
    (unlinking the segment's other name set the inode's ctime: the moment it was retired)."""
    pin_dir = table_dir / PIN_DIR
    if not pin_dir.is_dir():
        return
    for pin in pin_dir.glob("*.parquet"):
        if pin.name in live:
            continue
        with contextlib.suppress(FileNotFoundError):
            if now - pin.stat().st_ctime > PIN_GRACE_S:
                pin.unlink()


def _check_segment_files(con: duckdb.DuckDBPyConnection, exports_dir: Path) -> None:
    """Remove orphan segment files; runs whose segment file went missing get exported again;
    every live segment has its pinned link; pins retired long enough are removed."""
    known: dict[str, set[str]] = {}
    for table_name, segment in con.execute(
        "SELECT table_name, segment FROM exports_state.segments"
    ).fetchall():
        known.setdefault(table_name, set()).add(segment)
    tables_dir = exports_dir / TABLES_DIR
    missing: list[tuple[str, str]] = []
    on_disk_tables = {p.name for p in tables_dir.iterdir() if p.is_dir()}
    for name in on_disk_tables | set(known):
        on_disk = {p.name for p in (tables_dir / name).glob("*.parquet")}
        for orphan in on_disk - known.get(name, set()):
            (tables_dir / name / orphan).unlink(missing_ok=True)
            log.info("export.orphan_removed", table=name, segment=orphan)
        missing += [(name, seg) for seg in known.get(name, set()) - on_disk]
        live = known.get(name, set()) & on_disk
        for seg in live:
            if not (tables_dir / name / PIN_DIR / seg).exists():
                _pin(tables_dir / name / seg)  # written by a version without pins, or a crash
        _clean_pins(tables_dir / name, live, time.time())
    for name, seg in missing:
        log.warning("export.segment_missing", table=name, segment=seg)
        # A NULL fingerprint makes _find_changes see these runs as updated: out, then in again.
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


def _find_changes(con: duckdb.DuckDBPyConnection, max_runs: int) -> _Changes:
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
    changes = _Changes()
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


def _register_ids(con: duckdb.DuckDBPyConnection, name: str, ids: Sequence[str]) -> None:
    con.execute(f"CREATE OR REPLACE TEMP TABLE {name} (run_id VARCHAR PRIMARY KEY)")
    if ids:
        con.execute(
            f"INSERT INTO {name} SELECT DISTINCT unnest($ids::VARCHAR[])", {"ids": list(ids)}
        )


def _remove_histograms(con: duckdb.DuckDBPyConnection, exports_dir: Path) -> None:
    """Subtract the leaving runs' histograms from ``caller_hist_tot``, computed again from their
    rows in the path-metrics segments (still on disk: retired files go after the commit).
    Per-run histograms are not stored: they were as many rows as the raw data (47 of the 67 MB
    of a 10,000-run catalog, copied by every snapshot publish). If a leaving run's rows are not
    in the segments (a segment file went missing), the totals are rebuilt from every segment."""
    fed = (  # the leaving runs that fed the leaderboard
        "run_id IN (SELECT run_id FROM exports_state.caller_p "
        "WHERE run_id IN (SELECT run_id FROM _qb_gone))"
    )
    row = con.execute(
        f"SELECT count(DISTINCT run_id) FROM exports_state.caller_p WHERE {fed}"
    ).fetchone()
    n_fed = int(row[0]) if row else 0
    if not n_fed:
        return
    table_dir = exports_dir.resolve() / TABLES_DIR / PATH_TABLE
    placed = con.execute(
        "SELECT run_id, segment FROM exports_state.run_segments "
        f"WHERE table_name = $t AND rows > 0 AND {fed}",
        {"t": PATH_TABLE},
    ).fetchall()
    segs = sorted({str(table_dir / seg) for _run, seg in placed})
    if len({run for run, _seg in placed}) == n_fed and all(os.path.exists(p) for p in segs):
        con.execute(
            f"""
            UPDATE exports_state.caller_hist_tot AS t SET n = t.n - d.n
            FROM ({_segment_hist_sql(con, segs, fed)}) AS d
            WHERE t.caller_name IS NOT DISTINCT FROM d.caller_name AND t.metric = d.metric
              AND t.bin = d.bin
            """,
            {"segs": segs},
        )
        con.execute("DELETE FROM exports_state.caller_hist_tot WHERE n <= 0")
        return
    log.warning("export.histograms_rebuilt", reason="a leaving run's rows are not in the segments")
    con.execute("DELETE FROM exports_state.caller_hist_tot")
    live = [
        str(table_dir / r[0])
        for r in con.execute(
            "SELECT segment FROM exports_state.segments WHERE table_name = $t", {"t": PATH_TABLE}
        ).fetchall()
        if os.path.exists(table_dir / r[0])
    ]
    if live:
        kept = (
            "run_id IN (SELECT run_id FROM exports_state.caller_p) "
            "AND run_id NOT IN (SELECT run_id FROM _qb_gone)"
        )
        con.execute(
            f"INSERT INTO exports_state.caller_hist_tot {_segment_hist_sql(con, live, kept)}",
            {"segs": live},
        )


def _segment_hist_sql(con: duckdb.DuckDBPyConnection, segs: list[str], where: str) -> str:
    """:func:`_hist_sql` over the segment files ``segs`` (bound as ``$segs``)."""
    rel = "read_parquet($segs, union_by_name = true)"
    cur = con.execute(f"SELECT * FROM {rel} LIMIT 0", {"segs": segs})
    return _hist_sql(rel, [d[0] for d in cur.description or ()], where)


def _remove_runs(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str], exports_dir: Path) -> None:
    """Forget runs: subtract their partials from the totals and drop their state rows.

    Their rows in segments are removed by :func:`_write_segment`. ``_qb_gone`` holds them.
    """
    con.execute(
        """
        UPDATE exports_state.caller_tot AS t
        SET calls = t.calls - d.calls, hit_2x = t.hit_2x - d.hit_2x,
            hit_3x = t.hit_3x - d.hit_3x, hit_4x = t.hit_4x - d.hit_4x,
            runs_seen = t.runs_seen - d.runs
        FROM (SELECT caller_name, sum(calls) AS calls, sum(hit_2x) AS hit_2x,
                     sum(hit_3x) AS hit_3x, sum(hit_4x) AS hit_4x, count(*) AS runs
              FROM exports_state.caller_p WHERE run_id IN (SELECT run_id FROM _qb_gone)
              GROUP BY caller_name) AS d
        WHERE t.caller_name IS NOT DISTINCT FROM d.caller_name
        """
    )
    con.execute("DELETE FROM exports_state.caller_tot WHERE runs_seen <= 0")
    _remove_histograms(con, exports_dir)
    for table in (
        "run_summary_p",
        "policy_p",
        "caller_p",
        "frontier_p",
        "runs",
    ):
        con.execute(
            f"DELETE FROM exports_state.{table} WHERE run_id IN (SELECT run_id FROM _qb_gone)"
        )


def _next_seq(con: duckdb.DuckDBPyConnection) -> int:
    seq = int(_meta(con, "segment_seq") or 0) + 1
    _set_meta(con, "segment_seq", str(seq))
    return seq


def _columns(con: duckdb.DuckDBPyConnection, relation: str) -> list[str]:
    return [r[0] for r in con.execute(f"DESCRIBE {relation}").fetchall()]


def _apply_changes(
    con: duckdb.DuckDBPyConnection,
    exports_dir: Path,
    changes: _Changes,
    skip: set[str] | frozenset[str] = frozenset(),
) -> list[Path]:
    """Segments and partials for the changed runs (inside the caller's transaction).

    Returns the retired segment files, to be removed once the transaction has committed.
    """
    tables_dir = exports_dir / TABLES_DIR
    # Flags of the removed runs (which summaries they fed) before their state rows go.
    if changes.removed:
        _take_flags(con, "_qb_gone", changes)
        _remove_runs(con, changes.removed, exports_dir)

    # The artifacts of the runs that come in (Parquet files only; path absolute).
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE _qb_files AS
        SELECT a.run_id, a.name,
               CASE WHEN a.path LIKE '/%' THEN a.path ELSE r.run_dir || '/' || a.path END AS path,
               a.rows
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
    in_tables: dict[str, list[str]] = {}
    for name in sorted(new_tables | gone_tables):
        if not _TABLE_NAME.match(name):
            log.warning("export.table_skipped", table=name, reason="not a valid table name")
            continue
        cols = _stage_new_rows(con, name, skip) if name in new_tables else None
        if cols is not None:
            in_tables[name] = cols
        retired += _write_segment(
            con, tables_dir / name, name, cols is not None, bool(changes.removed)
        )

    _compute_partials(con, in_tables)
    for name in in_tables:
        con.execute(f"DROP TABLE IF EXISTS {_q('_qb_in_' + name)}")

    con.execute(
        """
        INSERT INTO exports_state.runs
        SELECT r.run_id, r.fingerprint, r.run_type, CAST(r.created_at AS VARCHAR),
               bool_or(f.name = $path) AND NOT coalesce(bool_or(f.name = $policy), false),
               coalesce(bool_or(f.name = $policy), false),
               coalesce(bool_or(f.name = $frontier), false),
               now()
        FROM catalog.runs_d r LEFT JOIN _qb_files f USING (run_id)
        WHERE r.run_id IN (SELECT run_id FROM _qb_new)
        GROUP BY r.run_id, r.fingerprint, r.run_type, r.created_at
        """,
        {"path": PATH_TABLE, "policy": POLICY_TABLE, "frontier": FRONTIER_TABLE},
    )
    _take_flags(con, "_qb_new", changes)

    return retired


_FLAGS = ("path_only", "has_policy", "has_frontier")


def _take_flags(con: duckdb.DuckDBPyConnection, ids: str, changes: _Changes) -> None:
    """Add to ``changes.touched_flags`` the summaries the runs in temp table ``ids`` feed."""
    row = con.execute(
        f"SELECT {', '.join(f'coalesce(bool_or({c}), false)' for c in _FLAGS)} "
        f"FROM exports_state.runs WHERE run_id IN (SELECT run_id FROM {ids})"
    ).fetchone()
    changes.touched_flags.update(c for c, hit in zip(_FLAGS, row or (), strict=False) if hit)


def _stage_new_rows(
    con: duckdb.DuckDBPyConnection, name: str, skip: set[str] | frozenset[str] = frozenset()
) -> list[str] | None:
    """Load the rows of ``name`` of the incoming runs into a temp table, run_id first.

    Files in ``skip`` (found unreadable) are left out."""
    files = []
    for (path,) in con.execute(
        "SELECT path FROM _qb_files WHERE name = $n ORDER BY run_id", {"n": name}
    ).fetchall():
        if path in skip:
            continue
        if os.path.exists(path):
            files.append(path)
        else:  # the run directory went away after registration: the next rescan deletes it
            log.warning("export.file_missing", table=name, path=path)
    if not files:
        return None
    staged = _q("_qb_in_" + name)
    # The columns (footers only), then ONE pass from the files into the chunk's temp table.
    cur = con.execute(
        "SELECT * FROM read_parquet($files, union_by_name = true) LIMIT 0", {"files": files}
    )
    cols = [d[0] for d in cur.description or () if d[0] not in ("run_id", "__qb_file")]
    select = ", ".join(["f.run_id", *(f"s.{_q(c)}" for c in cols)])
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {staged} AS SELECT {select} "
        "FROM read_parquet($files, union_by_name = true, filename = '__qb_file') s "
        "JOIN (SELECT run_id, path FROM _qb_files WHERE name = $n) f ON s.__qb_file = f.path",
        {"n": name, "files": files},
    )
    return ["run_id", *cols]


def _write_segment(
    con: duckdb.DuckDBPyConnection, table_dir: Path, name: str, has_new: bool, has_gone: bool
) -> list[Path]:
    """Write this refresh's one segment of ``name``; return the segment files it retires.
    (``has_gone``: runs leave in this refresh; statements with nothing to do are skipped.)"""
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
    if len(clean) + (1 if (has_new or dirty) else 0) > 2 * MAX_SEGMENTS:
        # Compaction is :func:`compact`'s job, off the catalog lock; this only keeps the count
        # bounded for a caller that never runs it.
        victims = _merge_victims([(seg, n) for seg, n, d in segs if not d])
    merged = dirty + victims
    if not has_new and not merged:
        return []
    staged = _q("_qb_in_" + name)
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
        segment = f"seg-{_next_seq(con):010d}-{secrets.token_hex(4)}.parquet"
        dest = table_dir / segment
        n_rows = _copy_to(con, " UNION ALL BY NAME ".join(parts), params, dest)
        _pin(dest)
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
    else:  # nothing survives (only empty artifacts were left in the merged segments)
        con.execute(
            "DELETE FROM exports_state.run_segments WHERE table_name = $t "
            "AND segment IN (SELECT unnest($m::VARCHAR[]))",
            {"t": name, "m": merged},
        )
    if merged:
        log.debug("export.segments_merged", table=name, rewritten=len(dirty), merged=len(victims))
    return [table_dir / s for s in merged]


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
    like-sized smallest (:func:`_merge_victims`). Reads the state only (quick; under the lock)."""
    if not _state_table_exists(con, "segments"):
        return []
    by_table: dict[str, list[tuple[str, int]]] = {}
    for table, segment, rows in con.execute(
        "SELECT table_name, segment, rows FROM exports_state.segments ORDER BY ALL"
    ).fetchall():
        by_table.setdefault(table, []).append((segment, int(rows)))
    plans = []
    for table, segs in sorted(by_table.items()):
        if len(segs) > MAX_SEGMENTS and _TABLE_NAME.match(table):
            segs.sort(key=lambda item: (item[1], item[0]))
            victims = _merge_victims(segs)
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
                rows = _copy_to(
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
            _pin(table_dir / segment)
            m.segment = segment
            done.append(m)
    finally:
        con.close()
    return done


def commit_compaction(
    config: Config, con: duckdb.DuckDBPyConnection, merges: Sequence[Merge]
) -> int:
    """Swap written merges into the state (one transaction; under the lock), re-point the views,
    then remove the victims' files. A merge whose victims are no longer all there unchanged
    (a refresh rewrote one meanwhile) is dropped with its file. Returns the merges applied."""
    exports_dir = Path(config.exports_dir)
    tables_dir = exports_dir / TABLES_DIR
    applied: list[Merge] = []
    con.execute("BEGIN TRANSACTION")
    try:
        _tx.begin(con)
        for m in merges:
            assert m.segment is not None
            row = con.execute(
                "SELECT count(*), coalesce(sum(rows), 0) FROM exports_state.segments "
                "WHERE table_name = $t AND segment IN (SELECT unnest($v::VARCHAR[]))",
                {"t": m.table, "v": m.victims},
            ).fetchone()
            if row != (len(m.victims), m.rows):
                (tables_dir / m.table / m.segment).unlink(missing_ok=True)
                continue
            dest = tables_dir / m.table / m.segment
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
            applied.append(m)
        if applied:
            _sync_views(con, exports_dir, config.exports)
        _tx.flush(con)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        _tx.end()
    for m in applied:
        for v in m.victims:
            (tables_dir / m.table / v).unlink(missing_ok=True)
        log.debug("export.segments_merged", table=m.table, merged=len(m.victims), rows=m.rows)
    return len(applied)


def compact(config: Config, con: duckdb.DuckDBPyConnection) -> int:
    """Plan, write and commit the due compactions in one go (``sync``, tests); the daemon runs
    the three steps itself, holding the catalog lock only for the first and the last."""
    return commit_compaction(config, con, write_compaction(config, plan_compaction(con)))


def _merge_victims(clean: Sequence[tuple[str, int]]) -> list[str]:
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


def _col(cols: Iterable[str], name: str, sql_type: str) -> str:
    return _q(name) if name in set(cols) else f"CAST(NULL AS {sql_type})"


def _hist_sql(rel: str, cols: Iterable[str], where: str) -> str:
    """(caller_name, metric, bin, n) of the rows of ``rel`` (columns ``cols``) matching ``where``:
    the caller leaderboard's log-bin histograms, summed over the runs in it."""
    caller = f"CAST({_col(cols, 'caller_name', 'VARCHAR')} AS VARCHAR)"
    union = " UNION ALL ".join(
        f"SELECT {caller} AS caller_name, '{m}' AS metric, "
        f"{_bin_sql(_col(cols, m, 'DOUBLE'))} AS bin FROM {rel} "
        f"WHERE ({where}) AND {caller} IS NOT NULL"
        for m in ("peak_multiple", "dd_bps", "t_2x_ms")
    )
    return (
        f"SELECT caller_name, metric, bin, count(*) AS n FROM ({union}) "
        "WHERE bin IS NOT NULL GROUP BY ALL"
    )


def _compute_partials(con: duckdb.DuckDBPyConnection, in_tables: dict[str, list[str]]) -> None:
    """Per-run partials of the incoming runs, each from that run's own rows."""

    def rel(name: str) -> str | None:
        return _q("_qb_in_" + name) if name in in_tables else None

    pm, pr, cr, fr = (
        rel(t) for t in (PATH_TABLE, POLICY_TABLE, CALL_RESULTS_TABLE, FRONTIER_TABLE)
    )

    # ---- run_summary_p: one row per incoming run
    pm_sql = "SELECT NULL::VARCHAR AS run_id, NULL::BIGINT AS calls, NULL::BIGINT AS callers, NULL::DOUBLE AS mdd, NULL::DOUBLE AS med WHERE false"
    if pm:
        c = in_tables[PATH_TABLE]
        dd = _col(c, "dd_bps", "DOUBLE")
        pm_sql = (
            f"SELECT run_id, count(DISTINCT {_col(c, 'call_id', 'VARCHAR')}) AS calls, "
            f"count(DISTINCT {_col(c, 'caller_name', 'VARCHAR')}) AS callers, "
            f"min({dd}) AS mdd, median({dd}) AS med FROM {pm} GROUP BY run_id"
        )
    pr_sql = "SELECT NULL::VARCHAR AS run_id, NULL::BIGINT AS trades, NULL::DOUBLE AS ret, NULL::DOUBLE AS win, NULL::DOUBLE AS mdd, NULL::DOUBLE AS med, NULL::BIGINT AS calls WHERE false"
    if pr:
        c = in_tables[POLICY_TABLE]
        rr = _col(c, "realized_return_bps", "DOUBLE")
        mae = f"abs(CAST({_col(c, 'max_adverse_excursion_bps', 'DOUBLE')} AS DOUBLE))"
        pr_sql = (
            f"SELECT run_id, count(*) AS trades, avg({rr}) AS ret, "
            f"avg(CASE WHEN {rr} IS NULL THEN NULL WHEN {rr} > 0 THEN 1.0 ELSE 0.0 END) AS win, "
            f"-max({mae}) AS mdd, -median({mae}) AS med, "
            f"count(DISTINCT {_col(c, 'call_id', 'VARCHAR')}) AS calls FROM {pr} GROUP BY run_id"
        )
    cr_sql = "SELECT NULL::VARCHAR AS run_id, NULL::BIGINT AS trades, NULL::DOUBLE AS usd, NULL::DOUBLE AS pct, NULL::DOUBLE AS ret, NULL::DOUBLE AS win, NULL::BIGINT AS calls, NULL::BIGINT AS callers WHERE false"
    if cr:
        c = in_tables[CALL_RESULTS_TABLE]
        cr_sql = (
            f"SELECT run_id, count(*) AS trades, sum({_col(c, 'pnl_usd', 'DOUBLE')}) AS usd, "
            f"sum({_col(c, 'pnl_pct', 'DOUBLE')}) AS pct, avg({_col(c, 'return_bps', 'DOUBLE')}) AS ret, "
            f"avg(CAST({_col(c, 'win', 'BOOLEAN')} AS DOUBLE)) AS win, "
            f"count(DISTINCT {_col(c, 'call_id', 'VARCHAR')}) AS calls, "
            f"count(DISTINCT {_col(c, 'caller_name', 'VARCHAR')}) AS callers "
            f"FROM {cr} GROUP BY run_id"
        )
    con.execute(
        f"""
        INSERT INTO exports_state.run_summary_p
        WITH pm AS ({pm_sql}), pr AS ({pr_sql}), cr AS ({cr_sql})
        SELECT n.run_id,
               coalesce(cr.trades, pr.trades, 0),
               cr.usd, cr.pct,
               coalesce(cr.ret, pr.ret), coalesce(cr.win, pr.win),
               coalesce(pm.mdd, pr.mdd), coalesce(pm.med, pr.med),
               coalesce(pm.calls, cr.calls, pr.calls, 0),
               coalesce(pm.callers, cr.callers, 0)
        FROM _qb_new n LEFT JOIN pm USING (run_id) LEFT JOIN pr USING (run_id)
        LEFT JOIN cr USING (run_id)
        """
    )

    # ---- policy_p: per run x policy
    if pr:
        c = in_tables[POLICY_TABLE]
        rr = _col(c, "realized_return_bps", "DOUBLE")
        con.execute(
            f"""
            INSERT INTO exports_state.policy_p
            SELECT run_id, CAST({_col(c, "policy_id", "VARCHAR")} AS VARCHAR) AS policy_id,
                   count(*), avg({rr}), median({rr}),
                   avg(CAST({_col(c, "stop_out", "BOOLEAN")} AS DOUBLE)),
                   avg(CASE WHEN {rr} IS NULL THEN NULL WHEN {rr} > 0 THEN 1.0 ELSE 0.0 END),
                   avg({_col(c, "time_exposed_ms", "DOUBLE")})
            FROM {pr} GROUP BY ALL
            """
        )

    # ---- caller partials and histograms: path-only runs (path metrics, no policy results)
    if pm:
        c = in_tables[PATH_TABLE]
        path_only = f"run_id NOT IN (SELECT DISTINCT run_id FROM {pr})" if pr else "true"
        caller = f"CAST({_col(c, 'caller_name', 'VARCHAR')} AS VARCHAR)"
        hits = ", ".join(
            f"count(*) FILTER (WHERE {_col(c, f'hit_{m}x', 'BOOLEAN')}) AS hit_{m}x"
            for m in (2, 3, 4)
        )
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE _qb_cp AS
            SELECT run_id, {caller} AS caller_name, count(*) AS calls, {hits}
            FROM {pm} WHERE {path_only} AND {caller} IS NOT NULL GROUP BY ALL
            """
        )
        con.execute(f"CREATE OR REPLACE TEMP TABLE _qb_ch AS {_hist_sql(pm, c, path_only)}")
        con.execute("INSERT INTO exports_state.caller_p SELECT * FROM _qb_cp")
        con.execute(
            """
            INSERT INTO exports_state.caller_tot
            SELECT caller_name, sum(calls), sum(hit_2x), sum(hit_3x), sum(hit_4x), count(*)
            FROM _qb_cp GROUP BY caller_name
            ON CONFLICT (caller_name) DO UPDATE SET
                calls = calls + EXCLUDED.calls, hit_2x = hit_2x + EXCLUDED.hit_2x,
                hit_3x = hit_3x + EXCLUDED.hit_3x, hit_4x = hit_4x + EXCLUDED.hit_4x,
                runs_seen = runs_seen + EXCLUDED.runs_seen
            """
        )
        con.execute(
            """
            INSERT INTO exports_state.caller_hist_tot SELECT * FROM _qb_ch
            ON CONFLICT (caller_name, metric, bin) DO UPDATE SET n = n + EXCLUDED.n
            """
        )

    # ---- frontier_p: per run x caller, the best policy that meets the constraints
    if fr:
        c = in_tables[FRONTIER_TABLE]
        con.execute(
            f"""
            INSERT INTO exports_state.frontier_p
            SELECT run_id, CAST({_col(c, "caller_name", "VARCHAR")} AS VARCHAR),
                   CAST({_col(c, "policy_params", "VARCHAR")} AS VARCHAR),
                   {_col(c, "meets_constraints", "BOOLEAN")},
                   {_col(c, "objective_score", "DOUBLE")}, {_col(c, "avg_return_bps", "DOUBLE")},
                   {_col(c, "median_return_bps", "DOUBLE")}, {_col(c, "stop_out_rate", "DOUBLE")},
                   {_col(c, "rank", "BIGINT")}
            FROM {fr}
            WHERE {_col(c, "meets_constraints", "BOOLEAN")}
            QUALIFY row_number() OVER (
                PARTITION BY run_id, {_col(c, "caller_name", "VARCHAR")}
                ORDER BY {_col(c, "objective_score", "DOUBLE")} DESC NULLS LAST,
                         {_col(c, "rank", "BIGINT")} ASC NULLS LAST) = 1
            """
        )


# --------------------------------------------------------------------------- summaries


# The whole-catalog summaries (runs, artifacts, latest_artifacts) are kept as tables in the state,
# updated with the runs of each call (delete the runs that left, insert those that came in), so a
# refresh only COPYs them out: no JSON flattening, join or window over the history each time.
# A table is rebuilt from the catalog when its shape changes (a new params/metrics key or type, a
# catalog column added): the signature of its shape is kept in ``exports_state.meta``.

_LATEST_COLS = (
    "run_type", "name", "run_id", "path", "format", "rows", "bytes", "sha256",
    "arrow_schema", "created_at", "registered_at",
)  # fmt: skip


class _TxCache(threading.local):
    """Inside a refresh transaction: ``exports_state.meta`` and the state table names, read once
    at BEGIN; meta writes are kept here and flushed in one statement before COMMIT (a refresh
    reads and writes a dozen keys: one statement each was a fifth of its fixed cost)."""

    meta: dict[str, str] | None = None
    dirty: set[str]
    tables: set[str]

    def begin(self, con: duckdb.DuckDBPyConnection) -> None:
        self.meta = dict(con.execute("SELECT key, value FROM exports_state.meta").fetchall())
        self.dirty = set()
        self.tables = {
            r[0]
            for r in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
                "AND schema_name = 'exports_state'"
            ).fetchall()
        }

    def flush(self, con: duckdb.DuckDBPyConnection) -> None:
        assert self.meta is not None
        gone = [k for k in self.dirty if k not in self.meta]
        kept = sorted(k for k in self.dirty if k in self.meta)
        if gone:
            con.execute(
                "DELETE FROM exports_state.meta WHERE key IN (SELECT unnest($k::VARCHAR[]))",
                {"k": gone},
            )
        if kept:
            con.execute(
                "INSERT OR REPLACE INTO exports_state.meta "
                "SELECT unnest($k::VARCHAR[]), unnest($v::VARCHAR[])",
                {"k": kept, "v": [self.meta[k] for k in kept]},
            )
        self.dirty = set()

    def end(self) -> None:
        self.meta = None


_tx = _TxCache()


def _meta(con: duckdb.DuckDBPyConnection, key: str) -> str | None:
    if _tx.meta is not None:
        return _tx.meta.get(key)
    row = con.execute("SELECT value FROM exports_state.meta WHERE key = $k", {"k": key}).fetchone()
    return str(row[0]) if row else None


def _set_meta(con: duckdb.DuckDBPyConnection, key: str, value: str | None) -> None:
    """Set (or, with ``None``, delete) a meta key."""
    if _tx.meta is not None:
        if value is None:
            _tx.meta.pop(key, None)
        else:
            _tx.meta[key] = value
        _tx.dirty.add(key)
    elif value is None:
        con.execute("DELETE FROM exports_state.meta WHERE key = $k", {"k": key})
    else:
        con.execute(
            "INSERT OR REPLACE INTO exports_state.meta VALUES ($k, $v)", {"k": key, "v": value}
        )


def _state_table_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    if _tx.meta is not None:
        return name in _tx.tables
    row = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = 'exports_state' AND table_name = $n",
        {"n": name},
    ).fetchone()
    return bool(row and row[0])


def _update_summary_state(con: duckdb.DuckDBPyConnection, changes: _Changes) -> None:
    """Bring ``runs_flat``, ``artifacts_x`` and ``latest_x`` up to date (caller's transaction)."""
    changed = bool(changes.removed or changes.added)
    same_kinds = False  # every incoming params/metrics key and type is known already
    if changed:
        if changes.removed:
            con.execute(
                "DELETE FROM exports_state.run_kv WHERE run_id IN (SELECT run_id FROM _qb_gone)"
            )
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _qb_kv AS "
            + " UNION ALL ".join(
                f"""
                SELECT r.run_id, '{source}' AS source, j.key,
                       CAST(json_structure(j.value) AS VARCHAR) AS kind,
                       CAST(j.value AS VARCHAR) AS sample
                FROM (SELECT run_id, CAST({source} AS JSON) AS doc FROM catalog.runs_d
                      WHERE run_id IN (SELECT run_id FROM _qb_new)) r, json_each(r.doc) j
                WHERE json_type(r.doc) = 'OBJECT'"""
                for source in ("params", "metrics")
            )
        )
        con.execute("INSERT INTO exports_state.run_kv SELECT * FROM _qb_kv")
        incoming = {
            tuple(r)
            for r in con.execute("SELECT DISTINCT source, key, kind FROM _qb_kv").fetchall()
        }
        known = {tuple(k) for k in json.loads(_meta(con, "run_kv_kinds") or "[]")}
        same_kinds = not changes.removed and incoming <= known
    gone = bool(changes.removed)
    _update_runs_flat(con, changed, same_kinds, gone)
    _update_artifacts_x(con, changed, gone)
    changes.latest_changed = _update_latest_x(con, changed, gone)


def _update_runs_flat(
    con: duckdb.DuckDBPyConnection, changed: bool, same_kinds: bool, gone: bool
) -> None:
    """runs_flat: the rows of runs.parquet (runs_d flattened; a params/metrics key -> a column).

    ``same_kinds``: no run left and the incoming runs bring no params/metrics key or type that is
    not known: the flattening SELECT of the last refresh is reused (kept in the meta), without
    merging the key structures of the whole history again."""
    exists = _state_table_exists(con, "runs_flat")
    if exists and not changed:
        return
    cached = json.loads(_meta(con, "runs_flat_select") or "null")
    base = _columns(con, "catalog.runs_d")
    if same_kinds and cached and cached["base"] == base:
        select, params, signature = cached["select"], cached["params"], cached["sig"]
    else:
        select, params, signature = _runs_flat_select(con)
        cache = {"base": base, "select": select, "params": params, "sig": signature}
        _set_meta(con, "runs_flat_select", json.dumps(cache))
        kinds = con.execute("SELECT DISTINCT source, key, kind FROM exports_state.run_kv")
        _set_meta(con, "run_kv_kinds", json.dumps(sorted(kinds.fetchall(), key=str)))
    if exists and _meta(con, "runs_flat_sig") == signature:
        if gone:
            con.execute(
                "DELETE FROM exports_state.runs_flat WHERE run_id IN (SELECT run_id FROM _qb_gone)"
            )
        con.execute(
            f"INSERT INTO exports_state.runs_flat SELECT {select} FROM catalog.runs_d r "
            "WHERE r.run_id IN (SELECT run_id FROM _qb_new)",
            params,
        )
        return
    con.execute(
        f"CREATE OR REPLACE TABLE exports_state.runs_flat AS SELECT {select} "
        "FROM catalog.runs_d r WHERE r.run_id IN (SELECT run_id FROM exports_state.runs)",
        params,
    )
    _set_meta(con, "runs_flat_sig", signature)
    log.debug("export.summary_state_rebuilt", table="runs_flat")


def _runs_flat_select(con: duckdb.DuckDBPyConnection) -> tuple[str, dict[str, Any], str]:
    """The SELECT list over ``catalog.runs_d r`` that flattens a run, its bound parameters and a
    signature of the resulting columns. Key types are merged over every exported run by
    ``json_group_structure`` over one sample value per distinct per-run type (``run_kv``)."""
    base = [
        c
        for c in _columns(con, "catalog.runs_d")
        if c not in ("params", "metrics", "metadata", "deleted_at", *SEQ_COLUMNS)
    ]
    structures: dict[str, dict[str, Any]] = {"params": {}, "metrics": {}}
    for source, key, structure in con.execute(
        """
        SELECT source, key, CAST(json_group_structure(CAST(sample AS JSON)) AS VARCHAR)
        FROM (SELECT source, key, kind, any_value(sample) AS sample
              FROM exports_state.run_kv GROUP BY source, key, kind)
        GROUP BY source, key
        """
    ).fetchall():
        try:
            structures[source][key] = json.loads(structure)
        except (ValueError, TypeError, KeyError):
            structures.setdefault(source, {})[key] = "JSON"
    select = [f"r.{_q(c)}" for c in base]
    params: dict[str, Any] = {}
    shape: list[Any] = [base]
    used = set(base)
    for source, prefix in (("params", "param_"), ("metrics", "metric_")):
        structure = structures[source]
        for i, key in enumerate(sorted(structure)):
            kind = structure[key]
            sql_type = {
                "UBIGINT": "BIGINT",
                "BIGINT": "BIGINT",
                "DOUBLE": "DOUBLE",
                "BOOLEAN": "BOOLEAN",
            }.get(kind if isinstance(kind, str) else "", "VARCHAR")
            col = prefix + (re.sub(r"[^A-Za-z0-9_]", "_", key) or "_")
            while col in used:
                col += "_"
            used.add(col)
            p = f"k_{source}_{i}"
            params[p] = "$." + json.dumps(key)
            extract = f"json_extract_string(CAST(r.{source} AS JSON), ${p})"
            if sql_type == "VARCHAR":
                expr = (
                    extract
                    if isinstance(kind, str)
                    else f"CAST(json_extract(CAST(r.{source} AS JSON), ${p}) AS VARCHAR)"
                )
            else:
                expr = f"TRY_CAST({extract} AS {sql_type})"
            select.append(f"{expr} AS {_q(col)}")
            shape.append([col, key, sql_type, isinstance(kind, str)])
        select.append(f"CAST(r.{source} AS VARCHAR) AS {source}")
        shape.append(source)
    return ", ".join(select), params, json.dumps(shape)


_ARTIFACTS_X_SELECT = """
    SELECT a.* EXCLUDE (arrow_schema, _seq), r.run_type
    FROM catalog.artifacts_f a JOIN catalog.runs_d r USING (run_id)"""


def _update_artifacts_x(con: duckdb.DuckDBPyConnection, changed: bool, gone: bool) -> None:
    """artifacts_x: the rows of artifacts.parquet (artifacts of the exported runs)."""
    exists = _state_table_exists(con, "artifacts_x")
    if exists and not changed:
        return
    signature = json.dumps(_columns(con, "catalog.artifacts_f"))
    if exists and _meta(con, "artifacts_x_sig") == signature:
        if gone:
            con.execute(
                "DELETE FROM exports_state.artifacts_x "
                "WHERE run_id IN (SELECT run_id FROM _qb_gone)"
            )
        con.execute(
            f"INSERT INTO exports_state.artifacts_x {_ARTIFACTS_X_SELECT} "
            "WHERE a.run_id IN (SELECT run_id FROM _qb_new)"
        )
        return
    con.execute(
        f"CREATE OR REPLACE TABLE exports_state.artifacts_x AS {_ARTIFACTS_X_SELECT} "
        "WHERE a.run_id IN (SELECT run_id FROM exports_state.runs)"
    )
    _set_meta(con, "artifacts_x_sig", signature)
    log.debug("export.summary_state_rebuilt", table="artifacts_x")


_LATEST_FROM_VIEW = """
    SELECT v.* EXCLUDE (arrow_schema), coalesce(r.created_at, r.registered_at) AS _qb_k
    FROM catalog.latest_artifacts_v v JOIN catalog.runs_d r USING (run_id)"""


def _update_latest_x(con: duckdb.DuckDBPyConnection, changed: bool, gone: bool) -> bool:
    """latest_x: the rows of ``catalog.latest_artifacts_v`` (the newest artifact per run_type and
    name), kept up to date by comparing the incoming runs' artifacts with the current newest; a
    group whose newest run left is recomputed from the view. Returns whether it changed."""
    exists = _state_table_exists(con, "latest_x")
    if exists and not changed:
        return False
    view_cols = tuple(_columns(con, "catalog.latest_artifacts_v"))
    incremental = view_cols == _LATEST_COLS  # else: the view changed shape, rebuild each time
    if not exists or not incremental or _meta(con, "latest_x_sig") != json.dumps(view_cols):
        con.execute(f"CREATE OR REPLACE TABLE exports_state.latest_x AS {_LATEST_FROM_VIEW}")
        _set_meta(con, "latest_x_sig", json.dumps(view_cols))
        return True
    # 1. groups whose newest artifact belonged to a run that left: recompute them from the view.
    n_lost = 0
    if gone:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _qb_lg AS SELECT DISTINCT run_type, name "
            "FROM exports_state.latest_x WHERE run_id IN (SELECT run_id FROM _qb_gone)"
        )
        lost = con.execute("SELECT count(*) FROM _qb_lg").fetchone()
        n_lost = int(lost[0]) if lost else 0
        if n_lost:
            con.execute(
                "DELETE FROM exports_state.latest_x l USING _qb_lg g "
                "WHERE l.run_type = g.run_type AND l.name = g.name"
            )
            con.execute(
                f"INSERT INTO exports_state.latest_x SELECT x.* FROM ({_LATEST_FROM_VIEW}) x "
                "SEMI JOIN _qb_lg g ON x.run_type = g.run_type AND x.name = g.name"
            )
    # 2. incoming runs: their artifacts against the current newest of the same groups (the
    # view's rule: live, successful runs; newest created_at else registration; ties: run_id).
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE _qb_lc AS
        WITH cand AS (
            SELECT r.run_type, a.name, a.run_id, a.path, a.format, a.rows, a.bytes, a.sha256,
                   r.created_at, a.registered_at, coalesce(r.created_at, r.registered_at) AS _qb_k
            FROM catalog.artifacts_f a JOIN catalog.runs_d r USING (run_id)
            WHERE a.run_id IN (SELECT run_id FROM _qb_new)
              AND r.deleted_at IS NULL AND r.status = 'success')
        SELECT * FROM (
            SELECT * FROM cand
            UNION ALL BY NAME
            SELECT l.* FROM exports_state.latest_x l
            SEMI JOIN cand c ON l.run_type = c.run_type AND l.name = c.name)
        QUALIFY row_number() OVER (
            PARTITION BY run_type, name ORDER BY _qb_k DESC, run_id DESC) = 1
        """
    )
    won = con.execute(
        "SELECT count(*) FROM _qb_lc WHERE run_id IN (SELECT run_id FROM _qb_new)"
    ).fetchone()
    n_won = int(won[0]) if won else 0
    if n_won:
        con.execute(
            "DELETE FROM exports_state.latest_x l USING _qb_lc c "
            "WHERE l.run_type = c.run_type AND l.name = c.name"
        )
        con.execute("INSERT INTO exports_state.latest_x SELECT * FROM _qb_lc")
    # (the small temp tables _qb_lc, _qb_lg, _qb_cp, _qb_ch, _qb_files stay until replaced)
    return bool(n_lost or n_won)


_LEADERBOARD_SQL = f"""
WITH h AS (
    SELECT caller_name, metric, bin,
           sum(n) OVER (PARTITION BY caller_name, metric ORDER BY bin
                        ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS cum,
           sum(n) OVER (PARTITION BY caller_name, metric) AS tot
    FROM exports_state.caller_hist_tot),
q AS (
    SELECT caller_name,
      min(bin) FILTER (WHERE metric = 'peak_multiple' AND cum >= greatest(1, ceil(tot * 0.5))) AS pk50,
      min(bin) FILTER (WHERE metric = 'peak_multiple' AND cum >= greatest(1, ceil(tot * 0.9))) AS pk90,
      min(bin) FILTER (WHERE metric = 'dd_bps' AND cum >= greatest(1, ceil(tot * 0.5))) AS dd50,
      min(bin) FILTER (WHERE metric = 't_2x_ms' AND cum >= greatest(1, ceil(tot * 0.5))) AS t2x50
    FROM h GROUP BY caller_name)
SELECT t.caller_name, t.calls,
       t.hit_2x / t.calls AS hit_2x_rate, t.hit_3x / t.calls AS hit_3x_rate,
       t.hit_4x / t.calls AS hit_4x_rate,
       {_bin_value_sql("q.pk50")} AS median_peak_multiple,
       {_bin_value_sql("q.pk90")} AS p90_peak_multiple,
       {_bin_value_sql("q.dd50")} AS median_dd_bps,
       {_bin_value_sql("q.t2x50")} AS median_t_2x_ms,
       t.runs_seen
FROM exports_state.caller_tot t LEFT JOIN q ON t.caller_name IS NOT DISTINCT FROM q.caller_name
WHERE t.calls > 0
ORDER BY hit_2x_rate DESC, t.calls DESC, t.caller_name
"""

_SUMMARY_SQL: dict[str, str] = {
    "runs": "SELECT * FROM exports_state.runs_flat ORDER BY created_at, run_id",
    "artifacts": "SELECT * FROM exports_state.artifacts_x ORDER BY run_id, name",
    "latest_artifacts": """
        SELECT * EXCLUDE (_qb_k) FROM exports_state.latest_x ORDER BY run_type, name""",
    "run_summaries": """
        SELECT p.run_id, s.run_type, p.total_trades, p.total_pnl_usd, p.total_pnl_pct,
               p.avg_return_bps, p.win_rate, p.max_drawdown_bps, p.median_drawdown_bps,
               p.total_calls, p.unique_callers, r.created_at
        FROM exports_state.run_summary_p p JOIN exports_state.runs s USING (run_id)
        JOIN catalog.runs_d r USING (run_id) ORDER BY r.created_at, p.run_id""",
    "caller_leaderboard": _LEADERBOARD_SQL,
    "policy_comparison": """
        SELECT p.*, s.created_at FROM exports_state.policy_p p JOIN exports_state.runs s
        USING (run_id) ORDER BY s.created_at, p.run_id, p.policy_id""",
    "frontier_best": """
        WITH newest AS (SELECT run_id, created_at FROM exports_state.runs WHERE has_frontier
                        ORDER BY created_at DESC NULLS LAST, run_id DESC LIMIT 1)
        SELECT f.run_id, n.created_at, f.caller_name, f.policy_params, f.objective_score,
               f.avg_return_bps, f.median_return_bps, f.stop_out_rate, f.rank
        FROM exports_state.frontier_p f JOIN newest n USING (run_id)
        ORDER BY f.caller_name""",
}

_SUMMARY_FEEDS = {  # which runs feed a summary (besides "any run" for the catalog ones)
    "caller_leaderboard": "path_only",
    "policy_comparison": "has_policy",
    "frontier_best": "has_frontier",
}


_USER_GEN = "_user"  # the generation key of the user exports (any run change feeds them)


def _bump_generations(con: duckdb.DuckDBPyConnection, changes: _Changes) -> None:
    """Count, per export file, the state changes that feed it (``file_gen:<name>`` in the meta;
    caller's transaction). :func:`write_files` rewrites a file whose generation moved on."""
    changed_any = bool(changes.removed or changes.added)
    fed = []
    for name in SUMMARIES:
        feed = _SUMMARY_FEEDS.get(name)
        if name == "latest_artifacts":
            hit = changes.latest_changed
        else:
            hit = changed_any if feed is None else feed in changes.touched_flags
        if hit:
            fed.append(name)
    if changed_any:
        fed.append(_USER_GEN)
    for name in fed:
        key = "file_gen:" + name
        _set_meta(con, key, str(int(_meta(con, key) or 0) + 1))


def _entry(
    kind: str, t0: float, *, rows: int | None = None, error: str | None = None
) -> dict[str, Any]:
    return {
        "kind": kind,
        "last_run_at": iso_utc(),
        "rows": rows,
        "ms": round((time.perf_counter() - t0) * 1000, 1),
        "ok": error is None,
        "error": error,
    }


def file_generations(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """Per export file, how many refreshes fed it so far (``file_gen:<name>`` in the state of
    the working catalog ``con``); empty before the first refresh."""
    if not _state_table_exists(con, "meta"):
        return {}
    return {
        str(k): str(v)
        for k, v in con.execute(
            "SELECT substr(key, 10), value FROM exports_state.meta WHERE key LIKE 'file_gen:%'"
        ).fetchall()
    }


def write_files(
    config: Config,
    con: duckdb.DuckDBPyConnection | None,
    gens: dict[str, str],
    *,
    kind: str,
    force: bool = False,
) -> dict[str, Any]:
    """Write the export files of one ``kind`` whose contents changed, each to a new name under
    :data:`FILES_DIR` (the publication links them into its next generation); record them in
    ``_export_status.json``.

    ``kind`` ``"summary"``: the summary ``<name>.parquet`` files, from the ``exports.*`` views of
    the working catalog ``con`` (over its state tables). ``kind`` ``"user"``: the ``[[exports]]``
    of the config, their SQL run on ``con``, a read-only connection to the publication (the
    reader-side catalog the docs promise them). ``gens`` is :func:`file_generations`.

    A file is rewritten when the refreshes since its last write fed it, when it is missing, or
    when its last write failed; but, unless ``force``, at most once per
    :data:`FILE_WRITE_SPACING` times the duration of its last write (a 30 ms file at most every
    0.3 s, a 300 ms one every 3 s), so rewriting whole files takes at most about a tenth of the
    time however large the history grows. Returns ``written`` (names), ``files`` (name -> the
    current file of every export of this kind that has one) and ``next_due_in_s`` (seconds until
    a held-back file is due, or None). A failing file is reported (``export.failed``,
    ``ok: false`` in the status) and the others are still written.
    """
    exports_dir = Path(config.exports_dir)
    store = exports_dir / FILES_DIR
    store.mkdir(parents=True, exist_ok=True)
    status = _read_status(exports_dir)
    entries: dict[str, Any] = status.setdefault("exports", {})
    jobs: list[tuple[str, str, str]] = []  # name, sql, format
    if kind == "summary":
        jobs = [(name, f"SELECT * FROM exports.{_q(name)}", "parquet") for name in SUMMARIES]
        if not gens:  # no refresh yet: nothing to write
            return {"written": [], "files": {}, "next_due_in_s": None}
    else:
        jobs = [(e.name, e.sql.strip().rstrip(";").strip(), e.format) for e in config.exports]
    written: list[str] = []
    files: dict[str, Path] = {}
    next_due: float | None = None
    for name, sql, fmt in jobs:
        if con is None:
            raise ValueError("write_files needs a connection when there are files to write")
        gen = str(gens.get(_USER_GEN if kind == "user" else name, "0"))
        entry = entries.get(name) or {}
        current = store / str(entry.get("file") or "-")
        stale = (
            not current.exists()
            or not entry.get("ok")
            or entry.get("kind") != kind
            or entry.get("gen") != gen
            or (kind == "user" and entry.get("sql") != sql)
        )
        if not stale:
            files[name] = current
            continue
        wait = FILE_WRITE_SPACING * float(entry.get("ms") or 0) / 1000 - age_s(
            str(entry.get("last_run_at") or "")
        )
        if not force and entry.get("ok") and current.exists() and wait > 0:
            next_due = wait if next_due is None else min(next_due, wait)
            files[name] = current
            continue
        t0 = time.perf_counter()
        dest = store / f"{name}.{secrets.token_hex(6)}.{fmt}"
        try:
            rows = _copy_to(con, sql, {}, dest, fmt)
            entries[name] = _entry(kind, t0, rows=rows)
            entries[name]["file"] = dest.name
            files[name] = dest
        except (duckdb.Error, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}".strip()
            entries[name] = _entry(kind, t0, error=error)
            log.error("export.failed", export=name, error=error)
            if current.exists():
                files[name] = current  # readers keep the last good file
                entries[name]["file"] = current.name
        entries[name]["gen"] = gen
        if kind == "user":
            entries[name]["sql"] = sql
        written.append(name)
    dropped: list[str] = []
    if kind == "user":
        users = {e.name for e in config.exports}
        dropped = [n for n, e in entries.items() if e.get("kind") == "user" and n not in users]
        for name in dropped:  # an [[exports]] entry removed from the config
            del entries[name]
    if written or dropped:
        _write_json(exports_dir / STATUS_NAME, status)
    return {"written": written, "files": files, "next_due_in_s": next_due}


def export_table_files(con: duckdb.DuckDBPyConnection, exports_dir: Path) -> dict[str, list[Path]]:
    """The committed segment files of each artifact table (what the publication links)."""
    if not _state_table_exists(con, "segments"):
        return {}
    base = Path(exports_dir).absolute() / TABLES_DIR
    out: dict[str, list[Path]] = {}
    for table, segment in con.execute(
        "SELECT table_name, segment FROM exports_state.segments ORDER BY ALL"
    ).fetchall():
        if _TABLE_NAME.match(table):
            out.setdefault(table, []).append(base / table / segment)
    return out


def _sync_views(
    con: duckdb.DuckDBPyConnection, exports_dir: Path, user: Sequence[UserExport]
) -> bool:
    """Views in schema ``exports`` of the working catalog, published to readers with the snapshot
    (caller's transaction): the summaries over the state tables, the artifact tables over their
    segment files, the user exports over their files."""
    # A summary view is re-created when the state table behind it was rebuilt with another
    # shape (a view keeps the column list it was bound with): its key carries the signatures.
    shape = "|".join(
        str(_meta(con, k)) for k in ("runs_flat_sig", "artifacts_x_sig", "latest_x_sig")
    )
    summary = {name: _SUMMARY_SQL[name] for name in SUMMARIES}
    wanted = {name: f"{sql}\n-- {shape}" for name, sql in summary.items()}
    # The artifact tables: their committed segments, listed (a glob would also match a segment
    # being written, or a retired one not yet removed).
    segments: dict[str, list[str]] = {}
    for table, segment in con.execute(
        "SELECT table_name, segment FROM exports_state.segments ORDER BY ALL"
    ).fetchall():
        segments.setdefault(table, []).append(segment)
    base = exports_dir.resolve() / TABLES_DIR
    for table, segs in segments.items():
        if _TABLE_NAME.match(table):
            files = ", ".join(_lit(str(base / table / PIN_DIR / seg)) for seg in segs)
            view = table if table not in wanted and table not in SUMMARIES else f"table_{table}"
            wanted[view] = f"SELECT * FROM read_parquet([{files}], union_by_name = true)"
    assert _tx.meta is not None, "views are synced inside a refresh transaction"
    existing = {k[5:]: v for k, v in _tx.meta.items() if k.startswith("view:")}
    changed = False
    for name, key in wanted.items():
        if existing.get(name) != key:
            changed = True
            sql = summary.get(name, key)
            con.execute(f"CREATE OR REPLACE VIEW exports.{_q(name)} AS {sql}")
            _set_meta(con, "view:" + name, key)
    for name in set(existing) - set(wanted):
        changed = True
        con.execute(f"DROP VIEW IF EXISTS exports.{_q(name)}")
        _set_meta(con, "view:" + name, None)
    return changed


# --------------------------------------------------------------------------- the query path

_READ_ONLY_TYPES = ("SELECT", "EXPLAIN")


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


def open_query_connection(config: Config) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the publication (``catalog.*`` and ``exports.*`` views)."""
    from .catalog import open_reader

    return open_reader(config.snapshot_path)


def available_relations(con: duckdb.DuckDBPyConnection) -> list[str]:
    """``schema.name`` of every table and view a query can use (catalog and exports)."""
    rows = con.execute(
        """
        SELECT DISTINCT CASE WHEN database_name = 'exports' THEN 'exports'
                             ELSE schema_name END || '.' || name AS rel
        FROM (SELECT database_name, schema_name, table_name AS name FROM duckdb_tables()
              UNION ALL
              SELECT database_name, schema_name, view_name FROM duckdb_views() WHERE NOT internal)
        WHERE (database_name = current_database() AND schema_name IN ('catalog', 'exports'))
           OR database_name = 'exports'
        ORDER BY rel
        """
    ).fetchall()
    return [r[0] for r in rows]


def _check_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> str:
    from .errors import QueryError

    text = sql.strip()
    if not text:
        raise QueryError("the query is empty: pass one SELECT statement")
    try:
        statements = con.extract_statements(text)
    except duckdb.Error as exc:
        raise QueryError(f"bad SQL: {_first_line(exc)}") from None
    if len(statements) != 1:
        raise QueryError(f"pass exactly one statement (got {len(statements)})")
    kind = statements[0].type.name
    if kind not in _READ_ONLY_TYPES:
        raise QueryError(
            f"quantbot-bus query is read-only: a {kind} statement is not allowed "
            "(use SELECT; to write a file use --format parquet|csv --output FILE)"
        )
    return text.rstrip(";").strip()


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _query_error(con: duckdb.DuckDBPyConnection, exc: duckdb.Error) -> Exception:
    from .errors import QueryError

    message = _first_line(exc)
    if isinstance(exc, duckdb.ParserException):
        return QueryError(f"bad SQL: {message}")
    if isinstance(exc, duckdb.CatalogException) and "does not exist" in message:
        available = ", ".join(available_relations(con)) or "(none yet)"
        return QueryError(f"{message.split('!')[0]}; available tables and views: {available}")
    if "read-only" in message:
        return QueryError(f"quantbot-bus query is read-only: {message}")
    return QueryError(f"query failed: {message}")


def run_query(config: Config, sql: str) -> QueryResult:
    """Run one read-only statement over the reader-side catalog and the export views."""
    con = open_query_connection(config)
    try:
        text = _check_read_only(con, sql)
        try:
            cur = con.execute(text)
            columns = [d[0] for d in cur.description or ()]
            return QueryResult(columns, cur.fetchall())
        except duckdb.Error as exc:
            raise _query_error(con, exc) from None
    finally:
        con.close()


def query_to_file(config: Config, sql: str, output: Path, fmt: str) -> int:
    """Write the result of one read-only SELECT to ``output`` (parquet or csv) atomically."""
    con = open_query_connection(config)
    try:
        text = _check_read_only(con, sql)
        output = Path(output).absolute()
        try:
            return _copy_to(con, text, {}, output, "parquet" if fmt == "parquet" else "csv")
        except duckdb.Error as exc:
            raise _query_error(con, exc) from None
    finally:
        con.close()
