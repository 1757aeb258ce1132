"""What the dashboard shows, read from the reader-side publication only.

:func:`gather` opens one connection with :func:`~quantbot_bus.exports.query.open_query_connection`
(``catalog.*`` and ``exports.*`` views of one generation) and reads every section's numbers into a
:class:`ReportData`: small, bounded results (aggregates, top-N tables, histogram bins, one run's
returns), so the page and the time to build it do not grow with the catalog. A relation that is
not there (no policy run ever exported, no ``exports.regressions`` yet, nothing published at all)
gives an empty result, never an error; the page then says what is missing. The distributions are
the one part that reads every exported row (:func:`~quantbot_bus.report.histogram.histogram`:
two scans of a column and a sample of it).
"""

# ruff: noqa: S608 - SQL from this module's constants; every value is a bound parameter

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np

from ..backtest.sources import CALL_RESULTS
from ..config import Config
from ..errors import CatalogMissingError, NotFoundError
from ..exports.query import open_query_connection
from .histogram import Histogram, histogram
from .sources import read_alerts, read_daemon_status, read_pending_list

#: Rows shown at most in each table (the page stays small at any catalog size).
TOP_CALLERS = 20
MAX_POLICIES = 30
MAX_REJECTIONS = 100
MAX_REGRESSIONS = 100

Row = dict[str, Any]


@dataclass
class Tearsheet:
    """One run's per-call returns (``return_bps``) in ``entry_ts_ms`` order."""

    run_id: str
    created_at: Any
    entry_ts_ms: np.ndarray
    return_bps: np.ndarray


@dataclass
class ReportData:
    """Every number the page shows; empty lists/None where the catalog has nothing yet."""

    published: bool = False
    #: whether the source computes the summary exports (leaderboard, policies, frontiers,
    #: run summaries, regression checks): the local publication does, the Iceberg tables do not
    summaries: bool = True
    stats: Row = field(default_factory=dict)
    by_type: list[Row] = field(default_factory=list)
    runs_per_day: list[Row] = field(default_factory=list)
    leaderboard: list[Row] = field(default_factory=list)
    callers: int = 0
    policies: list[Row] = field(default_factory=list)
    policy_runs: int = 0
    frontier_run: str | None = None
    frontier: list[Row] = field(default_factory=list)
    frontier_best: list[Row] = field(default_factory=list)
    tearsheet: Tearsheet | None = None
    tearsheet_note: str = "no policy runs yet (no run has backtest_call_results)"
    dd_hist: Histogram | None = None
    mae_hist: Histogram | None = None
    run_dd_hist: Histogram | None = None
    regressions: list[Row] | None = None  # None: no exports.regressions view yet
    verdicts: list[Row] = field(default_factory=list)
    alerts: list[Row] = field(default_factory=list)
    rejections: list[Row] = field(default_factory=list)
    rejected: int = 0
    status: Row | None = None
    status_note: str = ""
    pending: Row | None = None  # state_dir/pending.json (the daemon's or the last sync's)


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> list[Row]:
    """The rows of ``sql`` as dicts; [] when a relation it names does not exist."""
    try:
        cur = con.execute(sql, params or [])
    except duckdb.CatalogException:
        return []
    names = [d[0] for d in cur.description or ()]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _has(con: duckdb.DuckDBPyConnection, schema: str, name: str) -> bool:
    """Whether the view ``schema.name`` exists in the publication."""
    rows = con.execute(
        "SELECT count(*) FROM duckdb_views() WHERE schema_name = ? AND view_name = ? "
        "AND NOT internal",
        [schema, name],
    ).fetchall()
    return bool(rows[0][0])


def _catalog(con: duckdb.DuckDBPyConnection, data: ReportData) -> None:
    stats = _rows(
        con,
        """
        SELECT count(*) FILTER (WHERE deleted_at IS NULL) AS runs,
               count(*) FILTER (WHERE deleted_at IS NOT NULL) AS deleted,
               count(*) FILTER (WHERE deleted_at IS NULL AND status <> 'success') AS not_success,
               coalesce(sum(artifact_count) FILTER (WHERE deleted_at IS NULL), 0) AS artifacts,
               coalesce(sum(total_rows) FILTER (WHERE deleted_at IS NULL), 0) AS total_rows,
               coalesce(sum(total_bytes) FILTER (WHERE deleted_at IS NULL), 0) AS total_bytes,
               min(created_at) FILTER (WHERE deleted_at IS NULL) AS first_run,
               max(created_at) FILTER (WHERE deleted_at IS NULL) AS last_run
        FROM catalog.runs_d""",
    )
    data.stats = stats[0] if stats else {}
    data.by_type = _rows(
        con,
        """
        SELECT run_type, count(*) AS runs, sum(total_rows) AS total_rows,
               max(created_at) AS last_run
        FROM catalog.runs_d WHERE deleted_at IS NULL GROUP BY run_type ORDER BY runs DESC, run_type
        """,
    )
    data.runs_per_day = _rows(
        con,
        """
        SELECT CAST(coalesce(created_at, registered_at) AS DATE) AS day, run_type, count(*) AS runs
        FROM catalog.runs_d WHERE deleted_at IS NULL GROUP BY ALL ORDER BY day, run_type
        """,
    )
    data.rejections = _rows(
        con,
        f"""
        SELECT run_dir, run_id, reason, first_seen_at, last_seen_at, attempts
        FROM catalog.rejections_f WHERE resolved_at IS NULL
        ORDER BY last_seen_at DESC, run_dir LIMIT {MAX_REJECTIONS}
        """,
    )
    rejected = _rows(
        con, "SELECT count(*) AS n FROM catalog.rejections_f WHERE resolved_at IS NULL"
    )
    data.rejected = int(rejected[0]["n"]) if rejected else 0


def _callers_and_policies(con: duckdb.DuckDBPyConnection, data: ReportData) -> None:
    data.leaderboard = _rows(
        con,
        f"""
        SELECT caller_name, calls, hit_2x_rate, hit_3x_rate, hit_4x_rate, median_peak_multiple,
               p90_peak_multiple, median_dd_bps, median_t_2x_ms, runs_seen
        FROM exports.caller_leaderboard
        ORDER BY hit_2x_rate DESC, calls DESC, caller_name LIMIT {TOP_CALLERS}
        """,
    )
    callers = _rows(con, "SELECT count(*) AS n FROM exports.caller_leaderboard")
    data.callers = int(callers[0]["n"]) if callers else 0
    data.policies = _rows(
        con,
        f"""
        SELECT policy_id, count(DISTINCT run_id) AS runs, sum(trades) AS trades,
               sum(avg_realized_return_bps * trades) / nullif(sum(trades), 0) AS avg_return_bps,
               sum(win_rate * trades) / nullif(sum(trades), 0) AS win_rate,
               sum(stop_out_rate * trades) / nullif(sum(trades), 0) AS stop_out_rate,
               median(median_realized_return_bps) AS median_return_bps
        FROM exports.policy_comparison GROUP BY policy_id
        ORDER BY avg_return_bps DESC NULLS LAST, policy_id LIMIT {MAX_POLICIES}
        """,
    )
    runs = _rows(con, "SELECT count(DISTINCT run_id) AS n FROM exports.policy_comparison")
    data.policy_runs = int(runs[0]["n"]) if runs else 0


def _frontiers(con: duckdb.DuckDBPyConnection, data: ReportData) -> None:
    newest = _rows(
        con,
        "SELECT run_id FROM exports.frontiers "
        "ORDER BY CAST(created_at AS VARCHAR) DESC NULLS LAST, run_id DESC LIMIT 1",
    )
    if not newest:
        return
    data.frontier_run = str(newest[0]["run_id"])
    data.frontier = _rows(
        con,
        """
        SELECT kind, caller_name, rank, policy_params, meets_constraints, objective_score,
               avg_return_bps, stop_out_rate, pareto
        FROM exports.frontiers WHERE run_id = ?
        ORDER BY kind, caller_name NULLS FIRST, rank
        """,
        [data.frontier_run],
    )
    data.frontier_best = _rows(
        con,
        """
        SELECT caller_name, policy_params, objective_score, avg_return_bps, stop_out_rate, rank
        FROM exports.frontier_best ORDER BY objective_score DESC NULLS LAST, caller_name
        """,
    )


def _tearsheet_run(con: duckdb.DuckDBPyConnection, run_id: str | None) -> Row | None:
    if run_id is not None:
        found = _rows(
            con, "SELECT run_id, created_at FROM catalog.runs_d WHERE run_id = ?", [run_id]
        )
        if not found:
            raise NotFoundError(f"no run {run_id!r} in the catalog (see `quantbot-bus runs`)")
        return found[0]
    newest = _rows(
        con,
        """
        SELECT r.run_id, r.created_at FROM catalog.runs_d r JOIN catalog.artifacts_f a USING (run_id)
        WHERE a.name IN ('backtest_call_results', 'policy/backtest_call_results')
          AND r.deleted_at IS NULL
        ORDER BY coalesce(r.created_at, r.registered_at) DESC, r.run_id DESC LIMIT 1
        """,
    )
    return newest[0] if newest else None


def _tearsheet(con: duckdb.DuckDBPyConnection, data: ReportData, run_id: str | None) -> None:
    run = _tearsheet_run(con, run_id)
    if run is None:
        return
    rid = str(run["run_id"])
    arrays = {"ts": np.array([], dtype=np.int64), "r": np.array([], dtype=np.float64)}
    for table in CALL_RESULTS.tables:  # the v1 name, then the seed layout's policy/ one
        try:
            arrays = con.execute(
                f"""
                SELECT CAST(entry_ts_ms AS BIGINT) AS ts, CAST(return_bps AS DOUBLE) AS r
                FROM exports.{table}
                WHERE run_id = ? AND return_bps IS NOT NULL AND entry_ts_ms IS NOT NULL
                ORDER BY ts, call_id
                """,
                [rid],
            ).fetchnumpy()
        except (duckdb.CatalogException, duckdb.BinderException):  # no table, no entry_ts_ms
            continue
        if len(arrays["r"]):
            break
    if len(arrays["r"]) == 0:
        data.tearsheet_note = (
            f"run {rid} has no backtest_call_results rows in the exports "
            "(not a policy run, or not exported yet)"
        )
        return
    data.tearsheet = Tearsheet(
        rid,
        run["created_at"],
        np.asarray(arrays["ts"], dtype=np.int64),
        np.asarray(arrays["r"], dtype=np.float64),
    )


def _distributions(con: duckdb.DuckDBPyConnection, data: ReportData) -> None:
    data.dd_hist = histogram(con, "exports.backtest_call_path_metrics", "dd_bps")
    data.mae_hist = histogram(con, "exports.backtest_policy_results", "max_adverse_excursion_bps")
    data.run_dd_hist = histogram(con, "exports.run_summaries", "max_drawdown_bps")


def _regressions(con: duckdb.DuckDBPyConnection, data: ReportData) -> None:
    if not _has(con, "exports", "regressions"):
        return
    data.verdicts = _rows(
        con,
        "SELECT verdict, count(*) AS n FROM exports.regressions GROUP BY verdict ORDER BY n DESC",
    )
    data.regressions = _rows(
        con,
        f"""
        SELECT run_id, run_type, metric, verdict, baseline_value, new_value, change, low, high,
               reason, created_at
        FROM exports.regressions WHERE verdict <> 'no change'
        ORDER BY CAST(created_at AS VARCHAR) DESC NULLS LAST, run_id, metric
        LIMIT {MAX_REGRESSIONS}
        """,
    )


def gather(config: Config, run_id: str | None = None) -> ReportData:
    """Read every section's data from the publication (and the state dir's status and alerts
    files). ``run_id`` picks the tearsheet's run (default: the newest policy run); an unknown
    one raises :class:`~quantbot_bus.errors.NotFoundError`."""
    data = ReportData(summaries=config.catalog != "iceberg")
    data.status, data.status_note = read_daemon_status(config)
    data.pending = read_pending_list(config)
    data.alerts = read_alerts(config)
    try:
        con = open_query_connection(config)
    except CatalogMissingError:
        if run_id is not None:
            raise NotFoundError(f"no run {run_id!r}: nothing is published yet") from None
        return data
    try:
        data.published = True
        _catalog(con, data)
        _callers_and_policies(con, data)
        _frontiers(con, data)
        _tearsheet(con, data, run_id)
        _distributions(con, data)
        _regressions(con, data)
    finally:
        con.close()
    return data
