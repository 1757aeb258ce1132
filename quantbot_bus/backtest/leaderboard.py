"""The ``caller_leaderboard`` summary export (part of the backtest plug-in,
:mod:`quantbot_bus.backtest.summaries`): per caller, over the path-only runs of either layout.

A path-only run has call paths (:data:`~.sources.PATHS`: ``backtest_call_path_metrics``, or
``truth/backtest_call_path_metrics``, or the seed's ``truth/paths``) and no policy trades
(:data:`~.sources.POLICY_TRADES`). ``caller_p`` holds each such run's per-caller counts,
``caller_tot`` and ``caller_hist_tot`` the running totals, updated by adding an exported run's
partials and subtracting a removed run's (integers: exact). The cross-run quantiles (median/p90
peak_multiple, median dd_bps, median t_2x_ms) come from the merged log-bin histograms of
:mod:`quantbot_bus.exports.histograms` (relative error ≤ 0.5 %); a leaving run's bins are
computed again from its rows in the segments of whichever path table holds them.
"""

# ruff: noqa: S608 - SQL from this module's constants and identifiers quoted by exports.sql

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..exports.histograms import Histograms, bin_value_sql
from ..exports.plugins import Staged, Summary
from ..exports.sql import col
from ..exports.store import TABLES_DIR
from ..log import get_logger
from .sources import PATHS, POLICY_TRADES, flag

if TYPE_CHECKING:
    from pathlib import Path

    import duckdb

    from ..config import Config

log = get_logger("quantbot_bus.exports")

CALLER_HISTOGRAMS = Histograms(
    table=PATHS.tables[0],
    totals="exports_state.caller_hist_tot",
    fed="exports_state.caller_p",
    key="caller_name",
    metrics=("peak_multiple", "dd_bps", "t_2x_ms"),
)
_PATH_COLUMNS = ["run_id", *PATHS.columns]


def _compute_callers(
    con: duckdb.DuckDBPyConnection, staged: Mapping[str, Staged], _config: Config
) -> None:
    """Caller partials and histograms of the incoming path-only runs."""
    pm, pr = PATHS.staged(staged), POLICY_TRADES.staged(staged)
    if pm is None:
        return
    c = pm.columns
    path_only = f"run_id NOT IN (SELECT DISTINCT run_id FROM {pr.relation})" if pr else "true"
    caller = col(c, "caller_name", "VARCHAR")
    hits = ", ".join(
        f"count(*) FILTER (WHERE {col(c, f'hit_{m}x', 'BOOLEAN')}) AS hit_{m}x" for m in (2, 3, 4)
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _qb_cp AS
        SELECT run_id, {caller} AS caller_name, count(*) AS calls, {hits}
        FROM {pm.relation} WHERE {path_only} AND {caller} IS NOT NULL GROUP BY ALL
        """
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _qb_ch AS " + CALLER_HISTOGRAMS.sql(pm.relation, c, path_only)
    )
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


def _remove_callers(con: duckdb.DuckDBPyConnection, exports_dir: Path) -> None:
    """Subtract the leaving runs' caller partials and histograms from the totals."""
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


def _segments_sql(
    con: duckdb.DuckDBPyConnection, segments: Mapping[str, list[str]], where: str
) -> tuple[str, dict[str, Any]]:
    """The (caller_name, metric, bin, n) of the rows matching ``where`` in the segment files
    (path table → files), each table read in the paths' shape, and its parameters."""
    parts: list[str] = []
    params: dict[str, Any] = {}
    for i, table in enumerate(sorted(segments)):
        key = f"segs_{i}"
        params[key] = sorted(segments[table])
        rel = f"read_parquet(${key}, union_by_name = true)"
        cur = con.execute(f"SELECT * FROM {rel} LIMIT 0", {key: params[key]})
        shaped = f"({PATHS.project(rel, [d[0] for d in cur.description or ()])})"
        parts.append(CALLER_HISTOGRAMS.sql(shaped, _PATH_COLUMNS, where))
    union = " UNION ALL ".join(parts)
    sql = (
        f"SELECT caller_name, metric, bin, CAST(sum(n) AS BIGINT) AS n FROM ({union}) GROUP BY ALL"
    )
    return sql, params


def _remove_histograms(con: duckdb.DuckDBPyConnection, exports_dir: Path) -> None:
    """Subtract the leaving runs' (``_qb_gone``) bins from ``caller_hist_tot``, computed again
    from their rows in the path tables' segments (still on disk: retired files go after the
    commit). If a leaving run's rows are not in the segments (a segment file went missing), the
    totals are rebuilt from every path segment."""
    fed = (
        "run_id IN (SELECT run_id FROM exports_state.caller_p "
        "WHERE run_id IN (SELECT run_id FROM _qb_gone))"
    )
    row = con.execute(f"SELECT count(DISTINCT run_id) FROM exports_state.caller_p WHERE {fed}")
    got = row.fetchone()
    n_fed = int(got[0]) if got else 0
    if not n_fed:
        return
    base = exports_dir.resolve() / TABLES_DIR
    tables = {"t": list(PATHS.tables)}
    placed = con.execute(
        "SELECT table_name, run_id, segment FROM exports_state.run_segments "
        f"WHERE table_name IN (SELECT unnest($t::VARCHAR[])) AND rows > 0 AND {fed}",
        tables,
    ).fetchall()
    segments: dict[str, list[str]] = {}
    for table, _run, seg in placed:
        path = str(base / table / seg)
        if path not in segments.setdefault(table, []):
            segments[table].append(path)
    files = [p for paths in segments.values() for p in paths]
    if len({run for _t, run, _s in placed}) == n_fed and all(os.path.exists(p) for p in files):
        sql, params = _segments_sql(con, segments, fed)
        con.execute(
            f"""
            UPDATE exports_state.caller_hist_tot AS t SET n = t.n - d.n FROM ({sql}) AS d
            WHERE t.caller_name IS NOT DISTINCT FROM d.caller_name AND t.metric = d.metric
              AND t.bin = d.bin
            """,
            params,
        )
        con.execute("DELETE FROM exports_state.caller_hist_tot WHERE n <= 0")
        return
    log.warning("export.histograms_rebuilt", reason="a leaving run's rows are not in the segments")
    con.execute("DELETE FROM exports_state.caller_hist_tot")
    live: dict[str, list[str]] = {}
    for table, seg in con.execute(
        "SELECT table_name, segment FROM exports_state.segments "
        "WHERE table_name IN (SELECT unnest($t::VARCHAR[]))",
        tables,
    ).fetchall():
        if os.path.exists(base / table / seg):
            live.setdefault(table, []).append(str(base / table / seg))
    if live:
        kept = (
            "run_id IN (SELECT run_id FROM exports_state.caller_p) "
            "AND run_id NOT IN (SELECT run_id FROM _qb_gone)"
        )
        sql, params = _segments_sql(con, live, kept)
        con.execute(f"INSERT INTO exports_state.caller_hist_tot {sql}", params)


def _quantile_bin(metric: str, q: float) -> str:
    """The bin holding the ``ceil(n·q)``-th smallest value of ``metric`` (over CTE ``h``)."""
    return f"min(bin) FILTER (WHERE metric = '{metric}' AND cum >= greatest(1, ceil(tot * {q})))"


_LEADERBOARD_SQL = f"""
WITH h AS (
    SELECT caller_name, metric, bin,
           sum(n) OVER (PARTITION BY caller_name, metric ORDER BY bin
                        ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS cum,
           sum(n) OVER (PARTITION BY caller_name, metric) AS tot
    FROM exports_state.caller_hist_tot),
q AS (
    SELECT caller_name,
      {_quantile_bin("peak_multiple", 0.5)} AS pk50,
      {_quantile_bin("peak_multiple", 0.9)} AS pk90,
      {_quantile_bin("dd_bps", 0.5)} AS dd50,
      {_quantile_bin("t_2x_ms", 0.5)} AS t2x50
    FROM h GROUP BY caller_name)
SELECT t.caller_name, t.calls,
       t.hit_2x / t.calls AS hit_2x_rate, t.hit_3x / t.calls AS hit_3x_rate,
       t.hit_4x / t.calls AS hit_4x_rate,
       {bin_value_sql("q.pk50")} AS median_peak_multiple,
       {bin_value_sql("q.pk90")} AS p90_peak_multiple,
       {bin_value_sql("q.dd50")} AS median_dd_bps,
       {bin_value_sql("q.t2x50")} AS median_t_2x_ms,
       t.runs_seen
FROM exports_state.caller_tot t LEFT JOIN q ON t.caller_name IS NOT DISTINCT FROM q.caller_name
WHERE t.calls > 0
ORDER BY hit_2x_rate DESC, t.calls DESC, t.caller_name
"""

CALLER_LEADERBOARD = Summary(
    name="caller_leaderboard",
    sql=_LEADERBOARD_SQL,
    tables=(*PATHS.tables, *POLICY_TRADES.tables),
    feed=flag(
        "path_only",
        f"{PATHS.holds()} AND NOT {POLICY_TRADES.holds()}",
        PATHS,
        POLICY_TRADES,
    ),
    state_ddl="""
CREATE TABLE IF NOT EXISTS exports_state.caller_p (
    run_id VARCHAR, caller_name VARCHAR, calls BIGINT, hit_2x BIGINT, hit_3x BIGINT,
    hit_4x BIGINT);
CREATE TABLE IF NOT EXISTS exports_state.caller_tot (
    caller_name VARCHAR PRIMARY KEY, calls BIGINT, hit_2x BIGINT, hit_3x BIGINT, hit_4x BIGINT,
    runs_seen BIGINT);
CREATE TABLE IF NOT EXISTS exports_state.caller_hist_tot (
    caller_name VARCHAR, metric VARCHAR, bin INTEGER, n BIGINT,
    PRIMARY KEY (caller_name, metric, bin));
""",
    run_tables=("caller_p",),
    compute=_compute_callers,
    remove=_remove_callers,
)
