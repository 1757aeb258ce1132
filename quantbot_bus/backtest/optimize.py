"""Optimize: search the policy grid per caller under constraints, in DuckDB.

For each caller × policy, over that caller's calls: ``trades``, ``avg_return_bps``,
``median_return_bps``, ``stop_out_rate``, ``win_rate`` and

- ``meets_constraints`` = trades ≥ ``min_trades`` and stop_out_rate ≤ ``max_stop_out_rate``;
- ``objective_score`` = avg_return_bps − its standard error (sample sd / √trades; 0 when a single
  trade): a mean return that has to survive its own noise;
- ``rank`` within the caller: constrained policies first, then by objective_score descending,
  ties by policy_params (1 = best; the order of :mod:`quantbot_bus.backtest.frontier`).

The frontier (every caller × policy row) comes back as an Arrow table, for the runner to write as
artifact ``policy_frontier`` (:func:`quantbot_bus.backtest.frontier.write_policy_frontier`); the
one-row ``summary`` names the best constrained caller/policy of the run and is written by DuckDB
``COPY (...) TO`` straight into the path the :class:`~quantbot_bus.writer.RunWriter` gives.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from .policy import CallTrades, Policy

_TRADES_SCHEMA = pa.schema(
    [
        ("caller_name", pa.string()),
        ("policy_id", pa.string()),
        ("policy_params", pa.string()),
        ("call_id", pa.string()),
        ("realized_return_bps", pa.float64()),
        ("stop_out", pa.bool_()),
    ]
)

_FRONTIER_SQL = """
CREATE TEMP TABLE frontier AS
WITH agg AS (
    SELECT caller_name, policy_id, any_value(policy_params) AS policy_params,
           count(*) AS trades,
           avg(realized_return_bps) AS avg_return_bps,
           median(realized_return_bps) AS median_return_bps,
           avg(CASE WHEN stop_out THEN 1.0 ELSE 0.0 END) AS stop_out_rate,
           avg(CASE WHEN realized_return_bps > 0 THEN 1.0 ELSE 0.0 END) AS win_rate,
           coalesce(stddev_samp(realized_return_bps), 0.0) AS sd
    FROM trades
    GROUP BY caller_name, policy_id
), scored AS (
    SELECT *,
           (trades >= $min_trades AND stop_out_rate <= $max_stop_out_rate) AS meets_constraints,
           avg_return_bps - sd / sqrt(trades) AS objective_score
    FROM agg
)
SELECT $run_id AS run_id, caller_name, policy_id, policy_params,
       meets_constraints, objective_score, avg_return_bps, median_return_bps, stop_out_rate,
       win_rate, trades,
       row_number() OVER (
           PARTITION BY caller_name
           ORDER BY meets_constraints DESC, objective_score DESC, policy_params
       ) AS rank,
       $created_at AS created_at
FROM scored
"""

_SUMMARY_SQL = """
SELECT $run_id AS run_id,
       count(DISTINCT caller_name) AS callers,
       count(DISTINCT policy_id) AS policies,
       CAST($calls AS BIGINT) AS calls,
       count(DISTINCT caller_name) FILTER (WHERE meets_constraints) AS callers_meeting_constraints,
       arg_max(caller_name, objective_score) FILTER (WHERE meets_constraints AND rank = 1)
           AS best_caller,
       arg_max(policy_params, objective_score) FILTER (WHERE meets_constraints AND rank = 1)
           AS best_policy_params,
       max(objective_score) FILTER (WHERE meets_constraints AND rank = 1) AS best_objective_score,
       CAST($max_stop_out_rate AS DOUBLE) AS max_stop_out_rate,
       CAST($min_trades AS BIGINT) AS min_trades,
       $created_at AS created_at
FROM frontier
"""


@dataclass(frozen=True)
class Constraints:
    max_stop_out_rate: float = 0.5
    min_trades: int = 5

    def __post_init__(self) -> None:
        if not 0 <= self.max_stop_out_rate <= 1:
            raise ValueError(f"max_stop_out_rate must be in [0, 1], got {self.max_stop_out_rate}")
        if self.min_trades < 1:
            raise ValueError(f"min_trades must be >= 1, got {self.min_trades}")


def trades_table(results: Sequence[CallTrades], policies: Sequence[Policy]) -> pa.Table:
    """Every (caller, policy, call) trade return: the optimizer's input."""
    cols: dict[str, list[Any]] = {name: [] for name in _TRADES_SCHEMA.names}
    for k, policy in enumerate(policies):
        pid, params = policy.policy_id, policy.params_json()
        for r in results:
            t = r.trades[k]
            cols["caller_name"].append(r.caller_name)
            cols["policy_id"].append(pid)
            cols["policy_params"].append(params)
            cols["call_id"].append(r.call_id)
            cols["realized_return_bps"].append(t.realized_return_bps)
            cols["stop_out"].append(t.stop_out)
    return pa.table(cols, schema=_TRADES_SCHEMA)


def optimize(
    trades: pa.Table,
    *,
    run_id: str,
    created_at: dt.datetime,
    calls: int,
    constraints: Constraints,
    summary_path: Path,
) -> tuple[pa.Table, dict[str, float | int]]:
    """Compute the frontier and summary in DuckDB, ``COPY`` the summary to ``summary_path``.

    Returns the frontier (by caller and rank) and the run metrics (callers, callers meeting the
    constraints, best objective score...).
    """
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET threads = 1")  # one thread: float aggregation order, hence results, fixed
        con.register("trades", trades)
        base = {"run_id": run_id, "created_at": created_at}
        con.execute(
            _FRONTIER_SQL,
            {
                **base,
                "min_trades": constraints.min_trades,
                "max_stop_out_rate": constraints.max_stop_out_rate,
            },
        )
        frontier = con.sql("SELECT * FROM frontier ORDER BY caller_name, rank").to_arrow_table()
        con.execute(
            f"COPY ({_SUMMARY_SQL}) TO $path (FORMAT parquet, COMPRESSION zstd)",  # noqa: S608 - constant SQL
            {
                **base,
                "calls": calls,
                "max_stop_out_rate": constraints.max_stop_out_rate,
                "min_trades": constraints.min_trades,
                "path": str(summary_path),
            },
        )
        row = con.execute(
            "SELECT count(DISTINCT caller_name), count(DISTINCT policy_id), "
            "count(DISTINCT caller_name) FILTER (WHERE meets_constraints), "
            "max(objective_score) FILTER (WHERE meets_constraints AND rank = 1), "
            "avg(avg_return_bps) FILTER (WHERE rank = 1), "
            "avg(stop_out_rate) FILTER (WHERE rank = 1) FROM frontier"
        ).fetchone()
    finally:
        con.close()
    assert row is not None
    names = (
        "callers",
        "policies",
        "callers_meeting_constraints",
        "best_objective_score",
        "avg_best_return_bps",
        "avg_best_stop_out_rate",
    )
    metrics = {name: value for name, value in zip(names, row, strict=True) if value is not None}
    return frontier, metrics
