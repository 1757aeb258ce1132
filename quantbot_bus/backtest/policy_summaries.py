"""The policy summary exports (part of the backtest plug-in, :mod:`quantbot_bus.backtest.summaries`):
``policy_comparison`` (per run × policy) and ``policy_by_caller`` (per run × policy × caller),
over the policy trades of either layout (:data:`~.sources.POLICY_TRADES`:
``backtest_policy_results``, ``policy/backtest_policy_results`` or the seed's
``policy/trades``).

Both keep per-run partials computed once from a run's own rows when it is exported (work
proportional to the batch, exact medians and quantiles): ``policy_p`` (per run × policy) and
``policy_caller_p`` (per run × policy × caller), with the same aggregate expressions
(:data:`AGGREGATES`). A trade's caller is the policy table's own ``caller_name`` when it has
one, else that of the same call (``call_id``) in the same run's per-call results
(``backtest_call_results``), else in its call paths (``backtest_call_path_metrics``,
``truth/paths``); the trades of a call none of them names make up the NULL ``caller_name`` row.
Each trade's caller is a join away: ``backtest_policy_results`` with ``backtest_call_results``
on ``(run_id, call_id)``.
"""

# ruff: noqa: S608 - SQL from this module's constants and identifiers quoted by exports.sql

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..exports.plugins import Staged, Summary
from .sources import CALL_RESULTS, PATHS, POLICY_TRADES, flag

if TYPE_CHECKING:
    from collections.abc import Sequence

    import duckdb

    from ..config import Config


def win_rate(rr: str) -> str:
    """The share of the trades with a return ``rr`` above 0 (NULL returns not counted)."""
    return f"avg(CASE WHEN {rr} IS NULL THEN NULL WHEN {rr} > 0 THEN 1.0 ELSE 0.0 END)"


#: A trade's adverse excursion as a drawdown (≤ 0), whatever the producer's sign.
MAE = "-abs(max_adverse_excursion_bps)"
_RR = "realized_return_bps"

#: The aggregates of a group of policy trades: column → (SQL type, expression over the trades
#: in :data:`~.sources.POLICY_TRADES`' shape), in ``policy_comparison``'s column order.
AGGREGATES: Mapping[str, tuple[str, str]] = {
    "trades": ("BIGINT", "count(*)"),
    "avg_realized_return_bps": ("DOUBLE", f"avg({_RR})"),
    "median_realized_return_bps": ("DOUBLE", f"median({_RR})"),
    "stop_out_rate": ("DOUBLE", "avg(CAST(stop_out AS DOUBLE))"),
    "win_rate": ("DOUBLE", win_rate(_RR)),
    "avg_time_exposed_ms": ("DOUBLE", "avg(time_exposed_ms)"),
    "avg_mae_bps": ("DOUBLE", f"avg({MAE})"),
    "median_mae_bps": ("DOUBLE", f"median({MAE})"),
    "p95_mae_bps": ("DOUBLE", "-quantile_cont(abs(max_adverse_excursion_bps), 0.95)"),
    "avg_tail_capture": ("DOUBLE", "avg(tail_capture)"),
    "median_tail_capture": ("DOUBLE", "median(tail_capture)"),
}
COMPARISON_COLUMNS: tuple[str, ...] = tuple(AGGREGATES)
BY_CALLER_COLUMNS: tuple[str, ...] = (
    "trades",
    "avg_realized_return_bps",
    "median_realized_return_bps",
    "stop_out_rate",
    "win_rate",
    "avg_time_exposed_ms",
    "avg_mae_bps",
    "avg_tail_capture",
)


def _ddl(table: str, keys: Sequence[str], columns: Sequence[str]) -> str:
    """``CREATE TABLE exports_state.<table>``: the VARCHAR ``keys``, then the aggregate
    ``columns``."""
    cols = [f"{k} VARCHAR" for k in keys] + [f"{c} {AGGREGATES[c][0]}" for c in columns]
    return f"\nCREATE TABLE IF NOT EXISTS exports_state.{table} (\n    {', '.join(cols)});\n"


def _partials(table: str, keys: Sequence[str], columns: Sequence[str], trades: str) -> str:
    """The INSERT into ``exports_state.<table>`` of the ``columns`` aggregated over the
    ``trades`` (a relation in the policy trades' shape) per ``keys``."""
    aggs = ", ".join(f"{AGGREGATES[c][1]} AS {c}" for c in columns)
    names = ", ".join([*keys, *columns])
    return (
        f"INSERT INTO exports_state.{table} ({names}) "
        f"SELECT {', '.join(keys)}, {aggs} FROM {trades} GROUP BY {', '.join(keys)}"
    )


def _view(table: str, order: str) -> str:
    """A summary's SELECT: the partials of ``table`` with their run's ``created_at``."""
    return f"""
        SELECT p.*, CAST(s.created_at AS TIMESTAMP) AS created_at
        FROM exports_state.{table} p JOIN exports_state.runs s USING (run_id)
        ORDER BY CAST(s.created_at AS TIMESTAMP), {order}"""


# --------------------------------------------------------------------------- policy_comparison

_COMPARISON_KEYS = ("run_id", "policy_id")


def _compute_comparison(
    con: duckdb.DuckDBPyConnection, staged: Mapping[str, Staged], _config: Config
) -> None:
    pr = POLICY_TRADES.staged(staged)
    if pr is not None:
        con.execute(_partials("policy_p", _COMPARISON_KEYS, COMPARISON_COLUMNS, pr.relation))


POLICY_COMPARISON = Summary(
    name="policy_comparison",
    sql=_view("policy_p", "p.run_id, p.policy_id"),
    tables=POLICY_TRADES.tables,
    feed=flag("has_policy", POLICY_TRADES.holds(), POLICY_TRADES),
    state_ddl=_ddl("policy_p", _COMPARISON_KEYS, COMPARISON_COLUMNS),
    run_tables=("policy_p",),
    compute=_compute_comparison,
)

# --------------------------------------------------------------------------- policy_by_caller

_BY_CALLER_KEYS = ("run_id", "policy_id", "caller_name")


def _callers(rows: Staged | None) -> str:
    """Each call's caller in ``rows`` (run_id, call_id, caller_name), one row per call."""
    if rows is None:
        return (
            "SELECT NULL::VARCHAR AS run_id, NULL::VARCHAR AS call_id, "
            "NULL::VARCHAR AS caller_name WHERE false"
        )
    return (
        f"SELECT run_id, call_id, min(caller_name) AS caller_name FROM {rows.relation} "
        "WHERE call_id IS NOT NULL AND caller_name IS NOT NULL GROUP BY run_id, call_id"
    )


def trades_with_callers(staged: Mapping[str, Staged]) -> str | None:
    """The incoming runs' policy trades (in :data:`~.sources.POLICY_TRADES`' shape), each
    ``caller_name`` the table's own, else its call's in the same run's per-call results, else in
    its call paths (NULL when none names it); None when no trades came in."""
    pr = POLICY_TRADES.staged(staged)
    if pr is None:
        return None
    return f"""(
        WITH cr AS ({_callers(CALL_RESULTS.staged(staged))}),
             pm AS ({_callers(PATHS.staged(staged))})
        SELECT t.* REPLACE (coalesce(t.caller_name, cr.caller_name, pm.caller_name) AS caller_name)
        FROM {pr.relation} t
        LEFT JOIN cr ON cr.run_id = t.run_id AND cr.call_id = t.call_id
        LEFT JOIN pm ON pm.run_id = t.run_id AND pm.call_id = t.call_id)"""


def _compute_by_caller(
    con: duckdb.DuckDBPyConnection, staged: Mapping[str, Staged], _config: Config
) -> None:
    trades = trades_with_callers(staged)
    if trades is not None:
        con.execute(_partials("policy_caller_p", _BY_CALLER_KEYS, BY_CALLER_COLUMNS, trades))


POLICY_BY_CALLER = Summary(
    name="policy_by_caller",
    sql=_view("policy_caller_p", "p.run_id, p.policy_id, p.caller_name NULLS LAST"),
    tables=(*POLICY_TRADES.tables, *CALL_RESULTS.tables, *PATHS.tables),
    feed=flag("has_policy_trades", POLICY_TRADES.holds(), POLICY_TRADES),
    state_ddl=_ddl("policy_caller_p", _BY_CALLER_KEYS, BY_CALLER_COLUMNS),
    run_tables=("policy_caller_p",),
    compute=_compute_by_caller,
)
