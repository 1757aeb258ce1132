"""The backtest summary exports, a plug-in of :mod:`quantbot_bus.exports.plugins`: per-run
summaries (``run_summaries``, here), the caller leaderboard (:mod:`.leaderboard`), the policy
comparison per policy and per caller (:mod:`.policy_summaries`), the frontiers
(:mod:`.frontier_summaries`) and the regression checks (:mod:`.regression_summary`).

Every summary reads its tables through :mod:`.sources`, so runs of both layouts feed it: the bus's
v1 tables, the same tables written in the seed layout (``truth/backtest_call_path_metrics``, ...)
and the seed system's own (``truth/paths``, ``policy/trades``, ``results/frontier``).

Each is kept incrementally in the export state from per-run partials, computed once from a run's
own rows when it is exported: ``run_summary_p`` (exact per-run medians). A run's trades, PnL,
return and win rate come from its per-call results when it has them, else from its policy trades;
its calls, callers and drawdown from its call paths when it has them, else from its policy trades
(``-|max_adverse_excursion_bps|``). An optimize run's row comes from its frontiers: trades,
calls, average return and win rate of each caller's best (rank 1) policy, its callers, and the
pnl of the V1 baseline's best all-calls portfolio (final − initial capital).
"""

# ruff: noqa: S608 - SQL from this module's constants and identifiers quoted by exports.sql

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from ..exports.plugins import Staged, Summary, register
from ..exports.sql import col
from .frontier_summaries import FRONTIER_BEST, FRONTIERS
from .leaderboard import CALLER_LEADERBOARD
from .policy_summaries import POLICY_BY_CALLER, POLICY_COMPARISON, win_rate
from .regression_summary import REGRESSIONS
from .sources import (
    CALL_RESULTS,
    PATHS,
    POLICY_FRONTIER_SOURCE,
    POLICY_TRADES,
    V1_FRONTIER_SOURCE,
    Source,
)

if TYPE_CHECKING:
    import duckdb

    from ..config import Config

#: The v1 names of the tables the summaries read (each also read under its other names:
#: :mod:`.sources`).
PATH_TABLE = PATHS.tables[0]
POLICY_TABLE = POLICY_TRADES.tables[0]
CALL_RESULTS_TABLE = CALL_RESULTS.tables[0]

# --------------------------------------------------------------------------- run_summaries

_NO_PM = "SELECT NULL::VARCHAR AS run_id, NULL::BIGINT AS calls, NULL::BIGINT AS callers, NULL::DOUBLE AS mdd, NULL::DOUBLE AS med WHERE false"
_NO_PR = "SELECT NULL::VARCHAR AS run_id, NULL::BIGINT AS trades, NULL::DOUBLE AS ret, NULL::DOUBLE AS win, NULL::DOUBLE AS mdd, NULL::DOUBLE AS med, NULL::BIGINT AS calls WHERE false"
_NO_FR = "SELECT NULL::VARCHAR AS run_id, NULL::BIGINT AS trades, NULL::DOUBLE AS ret, NULL::DOUBLE AS win, NULL::BIGINT AS callers WHERE false"
_NO_V1 = "SELECT NULL::VARCHAR AS run_id, NULL::DOUBLE AS usd, NULL::DOUBLE AS pct WHERE false"
_NO_CR = "SELECT NULL::VARCHAR AS run_id, NULL::BIGINT AS trades, NULL::DOUBLE AS usd, NULL::DOUBLE AS pct, NULL::DOUBLE AS ret, NULL::DOUBLE AS win, NULL::BIGINT AS calls, NULL::BIGINT AS callers WHERE false"


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
        f"{win_rate(rr)} AS win, "
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


def _compute_run_summaries(
    con: duckdb.DuckDBPyConnection, staged: Mapping[str, Staged], _config: Config
) -> None:
    """One row per incoming run (every one, with or without backtest tables)."""

    def per_run(source: Source, select: Callable[[Staged], str], empty: str) -> str:
        rows = source.staged(staged)
        return empty if rows is None else select(rows)

    pm = per_run(PATHS, _path_per_run, _NO_PM)
    pr = per_run(POLICY_TRADES, _policy_per_run, _NO_PR)
    cr = per_run(CALL_RESULTS, _calls_per_run, _NO_CR)
    fr = per_run(POLICY_FRONTIER_SOURCE, _frontier_per_run, _NO_FR)
    v1 = per_run(V1_FRONTIER_SOURCE, _v1_per_run, _NO_V1)
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
    tables=tuple(
        t
        for source in (
            PATHS,
            POLICY_TRADES,
            CALL_RESULTS,
            POLICY_FRONTIER_SOURCE,
            V1_FRONTIER_SOURCE,
        )
        for t in source.tables
    ),
    state_ddl="""
CREATE TABLE IF NOT EXISTS exports_state.run_summary_p (
    run_id VARCHAR PRIMARY KEY, total_trades BIGINT, total_pnl_usd DOUBLE, total_pnl_pct DOUBLE,
    avg_return_bps DOUBLE, win_rate DOUBLE, max_drawdown_bps DOUBLE, median_drawdown_bps DOUBLE,
    total_calls BIGINT, unique_callers BIGINT);
""",
    run_tables=("run_summary_p",),
    compute=_compute_run_summaries,
)

register(
    RUN_SUMMARIES,
    CALLER_LEADERBOARD,
    POLICY_COMPARISON,
    POLICY_BY_CALLER,
    FRONTIER_BEST,
    FRONTIERS,
    REGRESSIONS,
)
