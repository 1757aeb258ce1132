"""The backtest summary exports: per-run summaries, the caller leaderboard, policy comparison,
the frontiers (:mod:`quantbot_bus.backtest.frontier_summaries`) and the regression checks
(:mod:`quantbot_bus.backtest.regression_summary`) — a plug-in of
:mod:`quantbot_bus.exports.plugins`.

Each is kept incrementally in the export state from per-run partials, computed once from a run's
own rows when it is exported: ``run_summary_p`` (exact per-run medians), ``policy_p`` (per run ×
policy, exact medians), ``caller_p`` (per run × caller counts, path-only runs: path metrics and
no policy results). An optimize run's ``run_summaries`` row comes from its frontiers: trades,
calls, average return and win rate of each caller's best (rank 1) policy, its callers, and the
pnl of the V1 baseline's best all-calls portfolio (final − initial capital). ``caller_tot`` and
``caller_hist_tot`` hold the leaderboard's running totals, updated by adding an exported run's
partials and subtracting a removed run's (integers: exact).
Its cross-run quantiles (median/p90 peak_multiple, median dd_bps, median t_2x_ms) come from the
merged log-bin histograms of :mod:`quantbot_bus.exports.histograms` (relative error ≤ 0.5 %).
"""

# ruff: noqa: S608 - SQL from this module's constants and identifiers quoted by exports.sql

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from ..exports.histograms import Histograms, bin_value_sql
from ..exports.plugins import ComputeHook, Flag, Staged, Summary, register
from ..exports.sql import col
from .frontier import V1_BASELINE_FRONTIER
from .frontier_summaries import FRONTIER_BEST, FRONTIERS, POLICY_FRONTIERS
from .regression_summary import REGRESSIONS

if TYPE_CHECKING:
    from pathlib import Path

    import duckdb

    from ..config import Config

PATH_TABLE = "backtest_call_path_metrics"
POLICY_TABLE = "backtest_policy_results"
CALL_RESULTS_TABLE = "backtest_call_results"

CALLER_HISTOGRAMS = Histograms(
    table=PATH_TABLE,
    totals="exports_state.caller_hist_tot",
    fed="exports_state.caller_p",
    key="caller_name",
    metrics=("peak_multiple", "dd_bps", "t_2x_ms"),
)

# --------------------------------------------------------------------------- run_summaries

_NO_PM = "SELECT NULL::VARCHAR AS run_id, NULL::BIGINT AS calls, NULL::BIGINT AS callers, NULL::DOUBLE AS mdd, NULL::DOUBLE AS med WHERE false"
_NO_PR = "SELECT NULL::VARCHAR AS run_id, NULL::BIGINT AS trades, NULL::DOUBLE AS ret, NULL::DOUBLE AS win, NULL::DOUBLE AS mdd, NULL::DOUBLE AS med, NULL::BIGINT AS calls WHERE false"
_NO_FR = "SELECT NULL::VARCHAR AS run_id, NULL::BIGINT AS trades, NULL::DOUBLE AS ret, NULL::DOUBLE AS win, NULL::BIGINT AS callers WHERE false"
_NO_V1 = "SELECT NULL::VARCHAR AS run_id, NULL::DOUBLE AS usd, NULL::DOUBLE AS pct WHERE false"
_NO_CR = "SELECT NULL::VARCHAR AS run_id, NULL::BIGINT AS trades, NULL::DOUBLE AS usd, NULL::DOUBLE AS pct, NULL::DOUBLE AS ret, NULL::DOUBLE AS win, NULL::BIGINT AS calls, NULL::BIGINT AS callers WHERE false"


def _win(rr: str) -> str:
    return f"avg(CASE WHEN {rr} IS NULL THEN NULL WHEN {rr} > 0 THEN 1.0 ELSE 0.0 END)"


def _path_per_run(pm: Staged) -> str:
    c = pm.columns
    dd = col(c, "dd_bps", "DOUBLE")
    return (
        f"SELECT run_id, count(DISTINCT {col(c, 'call_id', 'VARCHAR')}) AS calls, "
        f"count(DISTINCT {col(c, 'caller_name', 'VARCHAR')}) AS callers, "
        f"min({dd}) AS mdd, median({dd}) AS med FROM {pm.relation} GROUP BY run_id"
    )


def _policy_per_run(pr: Staged) -> str:
    c = pr.columns
    rr = col(c, "realized_return_bps", "DOUBLE")
    mae = f"abs(CAST({col(c, 'max_adverse_excursion_bps', 'DOUBLE')} AS DOUBLE))"
    return (
        f"SELECT run_id, count(*) AS trades, avg({rr}) AS ret, "
        f"{_win(rr)} AS win, "
        f"-max({mae}) AS mdd, -median({mae}) AS med, "
        f"count(DISTINCT {col(c, 'call_id', 'VARCHAR')}) AS calls FROM {pr.relation} GROUP BY run_id"
    )


def _calls_per_run(cr: Staged) -> str:
    c = cr.columns
    return (
        f"SELECT run_id, count(*) AS trades, sum({col(c, 'pnl_usd', 'DOUBLE')}) AS usd, "
        f"sum({col(c, 'pnl_pct', 'DOUBLE')}) AS pct, avg({col(c, 'return_bps', 'DOUBLE')}) AS ret, "
        f"avg(CAST({col(c, 'win', 'BOOLEAN')} AS DOUBLE)) AS win, "
        f"count(DISTINCT {col(c, 'call_id', 'VARCHAR')}) AS calls, "
        f"count(DISTINCT {col(c, 'caller_name', 'VARCHAR')}) AS callers "
        f"FROM {cr.relation} GROUP BY run_id"
    )


def _frontier_per_run(fr: Staged) -> str:
    """An optimize run: its callers and, over each caller's rank-1 policy, the trades and the
    trade-weighted return and win rate (unweighted when the frontier has no ``trades``)."""
    c = fr.columns
    one = f"{col(c, 'rank', 'BIGINT')} = 1"
    n = f"CAST({col(c, 'trades', 'BIGINT')} AS DOUBLE)"
    ret, win = col(c, "avg_return_bps", "DOUBLE"), col(c, "win_rate", "DOUBLE")

    def weighted(v: str) -> str:
        return (
            f"coalesce(sum({v} * {n}) FILTER (WHERE {one}) / "
            f"nullif(sum({n}) FILTER (WHERE {one} AND {v} IS NOT NULL), 0), "
            f"avg({v}) FILTER (WHERE {one}))"
        )

    return (
        f"SELECT run_id, CAST(sum({n}) FILTER (WHERE {one}) AS BIGINT) AS trades, "
        f"{weighted(ret)} AS ret, {weighted(win)} AS win, "
        f"count(DISTINCT {col(c, 'caller_name', 'VARCHAR')}) AS callers "
        f"FROM {fr.relation} GROUP BY run_id"
    )


def _v1_per_run(v1: Staged) -> str:
    """An optimize run's pnl: the V1 baseline's best all-calls portfolio."""
    c = v1.columns
    final, start = col(c, "final_capital", "DOUBLE"), col(c, "initial_capital", "DOUBLE")
    best = f"{col(c, 'rank', 'BIGINT')} = 1 AND {col(c, 'caller_name', 'VARCHAR')} IS NULL"
    return (
        f"SELECT run_id, any_value({final} - {start}) FILTER (WHERE {best}) AS usd, "
        f"any_value(({final} / {start} - 1) * 100) FILTER (WHERE {best}) AS pct "
        f"FROM {v1.relation} GROUP BY run_id"
    )


def _policy_frontiers(staged: Mapping[str, Staged]) -> Staged | None:
    """The incoming policy frontier rows, of either name."""
    parts = [staged[t] for t in POLICY_FRONTIERS if t in staged]
    if len(parts) < 2:
        return parts[0] if parts else None
    cols = list(dict.fromkeys(c for p in parts for c in p.columns))
    union = " UNION ALL BY NAME ".join(f"SELECT * FROM {p.relation}" for p in parts)
    return Staged(f"({union})", cols)


def _compute_run_summaries(
    con: duckdb.DuckDBPyConnection, staged: Mapping[str, Staged], _config: Config
) -> None:
    """One row per incoming run (every one, with or without backtest tables)."""

    def per_run(table: str, select: Callable[[Staged], str], empty: str) -> str:
        rows = staged.get(table)
        return empty if rows is None else select(rows)

    pm = per_run(PATH_TABLE, _path_per_run, _NO_PM)
    pr = per_run(POLICY_TABLE, _policy_per_run, _NO_PR)
    cr = per_run(CALL_RESULTS_TABLE, _calls_per_run, _NO_CR)
    policy_frontiers = _policy_frontiers(staged)
    fr = _NO_FR if policy_frontiers is None else _frontier_per_run(policy_frontiers)
    v1 = per_run(V1_BASELINE_FRONTIER, _v1_per_run, _NO_V1)
    con.execute(
        f"""
        INSERT INTO exports_state.run_summary_p
        WITH pm AS ({pm}), pr AS ({pr}), cr AS ({cr}), fr AS ({fr}), v1 AS ({v1})
        SELECT n.run_id,
               coalesce(cr.trades, pr.trades, fr.trades, 0),
               coalesce(cr.usd, v1.usd), coalesce(cr.pct, v1.pct),
               coalesce(cr.ret, pr.ret, fr.ret), coalesce(cr.win, pr.win, fr.win),
               coalesce(pm.mdd, pr.mdd), coalesce(pm.med, pr.med),
               coalesce(pm.calls, cr.calls, pr.calls, fr.trades, 0),
               coalesce(pm.callers, cr.callers, fr.callers, 0)
        FROM _qb_new n LEFT JOIN pm USING (run_id) LEFT JOIN pr USING (run_id)
        LEFT JOIN cr USING (run_id) LEFT JOIN fr USING (run_id) LEFT JOIN v1 USING (run_id)
        """
    )


RUN_SUMMARIES = Summary(
    name="run_summaries",
    sql="""
        SELECT p.run_id, s.run_type, p.total_trades, p.total_pnl_usd, p.total_pnl_pct,
               p.avg_return_bps, p.win_rate, p.max_drawdown_bps, p.median_drawdown_bps,
               p.total_calls, p.unique_callers, r.created_at
        FROM exports_state.run_summary_p p JOIN exports_state.runs s USING (run_id)
        JOIN catalog.runs_d r USING (run_id) ORDER BY r.created_at, p.run_id""",
    tables=(PATH_TABLE, POLICY_TABLE, CALL_RESULTS_TABLE, *POLICY_FRONTIERS, V1_BASELINE_FRONTIER),
    state_ddl="""
CREATE TABLE IF NOT EXISTS exports_state.run_summary_p (
    run_id VARCHAR PRIMARY KEY, total_trades BIGINT, total_pnl_usd DOUBLE, total_pnl_pct DOUBLE,
    avg_return_bps DOUBLE, win_rate DOUBLE, max_drawdown_bps DOUBLE, median_drawdown_bps DOUBLE,
    total_calls BIGINT, unique_callers BIGINT);
""",
    run_tables=("run_summary_p",),
    compute=_compute_run_summaries,
)

# --------------------------------------------------------------------------- caller_leaderboard


def _compute_callers(
    con: duckdb.DuckDBPyConnection, staged: Mapping[str, Staged], _config: Config
) -> None:
    """Caller partials and histograms of the path-only runs (path metrics, no policy results)."""
    pm, pr = staged.get(PATH_TABLE), staged.get(POLICY_TABLE)
    if pm is None:
        return
    c = pm.columns
    path_only = f"run_id NOT IN (SELECT DISTINCT run_id FROM {pr.relation})" if pr else "true"
    caller = f"CAST({col(c, 'caller_name', 'VARCHAR')} AS VARCHAR)"
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
    CALLER_HISTOGRAMS.remove_leaving(con, exports_dir)


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
    tables=(PATH_TABLE, POLICY_TABLE),
    feed=Flag(
        "path_only",
        "bool_or(f.name = $path) AND NOT coalesce(bool_or(f.name = $policy), false)",
        {"path": PATH_TABLE, "policy": POLICY_TABLE},
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

# --------------------------------------------------------------------------- policy_comparison


def _insert_partials(table: str, target: str, select: Callable[[Staged], str]) -> ComputeHook:
    """A compute hook inserting ``select(rows)`` into ``target`` when artifact ``table`` came in."""

    def compute(
        con: duckdb.DuckDBPyConnection, staged: Mapping[str, Staged], _config: Config
    ) -> None:
        rows = staged.get(table)
        if rows is not None:
            con.execute(f"INSERT INTO {target} {select(rows)}")

    return compute


def _policy_partials(pr: Staged) -> str:
    """Per incoming run x policy (exact medians)."""
    c = pr.columns
    rr = col(c, "realized_return_bps", "DOUBLE")
    return f"""
        SELECT run_id, CAST({col(c, "policy_id", "VARCHAR")} AS VARCHAR) AS policy_id,
               count(*), avg({rr}), median({rr}),
               avg(CAST({col(c, "stop_out", "BOOLEAN")} AS DOUBLE)),
               {_win(rr)},
               avg({col(c, "time_exposed_ms", "DOUBLE")})
        FROM {pr.relation} GROUP BY ALL
        """


POLICY_COMPARISON = Summary(
    name="policy_comparison",
    sql="""
        SELECT p.*, s.created_at FROM exports_state.policy_p p JOIN exports_state.runs s
        USING (run_id) ORDER BY s.created_at, p.run_id, p.policy_id""",
    tables=(POLICY_TABLE,),
    feed=Flag("has_policy", "coalesce(bool_or(f.name = $policy), false)", {"policy": POLICY_TABLE}),
    state_ddl="""
CREATE TABLE IF NOT EXISTS exports_state.policy_p (
    run_id VARCHAR, policy_id VARCHAR, trades BIGINT, avg_realized_return_bps DOUBLE,
    median_realized_return_bps DOUBLE, stop_out_rate DOUBLE, win_rate DOUBLE,
    avg_time_exposed_ms DOUBLE);
""",
    run_tables=("policy_p",),
    compute=_insert_partials(POLICY_TABLE, "exports_state.policy_p", _policy_partials),
)

register(
    RUN_SUMMARIES, CALLER_LEADERBOARD, POLICY_COMPARISON, FRONTIER_BEST, FRONTIERS, REGRESSIONS
)
