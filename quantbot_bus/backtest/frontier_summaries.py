"""The frontier summary exports, a plug-in of :mod:`quantbot_bus.exports.plugins`: ``frontier_best``
(the newest optimize run's best constrained policy per caller) and ``frontiers`` (every frontier
row of every live run, with its Pareto flag).

Frontier artifacts (:mod:`quantbot_bus.backtest.sources`): the policy frontier
``policy_frontier`` (:mod:`quantbot_bus.backtest.frontier`), or ``frontier``, its name before it
and in the seed system (``results/frontier``), and ``v1_baseline_frontier``; in the seed layout
``results/policy_frontier`` and ``results/v1_baseline_frontier``. Both summaries keep per-run
partials in the export state, computed once from a run's own rows when it is exported (work
proportional to the batch): ``frontier_p`` (per run × caller, the best constrained policy) and
``frontiers_p`` (per run, its frontier rows with ``kind`` ``policy`` or ``v1_baseline`` and
``pareto``: no row of the same run, kind and caller has an objective_score at least as high and a
stop_out_rate at least as low, one of them strictly; rows without either number are never on it).
"""

# ruff: noqa: S608 - SQL from this module's constants and identifiers quoted by exports.sql

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..exports.plugins import Staged, Summary
from ..exports.sql import col
from .sources import LEGACY_FRONTIER, POLICY_FRONTIER_SOURCE, V1_FRONTIER_SOURCE, Source, flag

if TYPE_CHECKING:
    import duckdb

    from ..config import Config

__all__ = ["FRONTIERS", "FRONTIER_BEST", "KINDS", "LEGACY_FRONTIER", "POLICY_FRONTIERS"]

#: The policy frontier tables, the current name first.
POLICY_FRONTIERS = POLICY_FRONTIER_SOURCE.tables
#: Each frontier source's ``kind`` in ``frontiers``.
KINDS: dict[str, Source] = {"policy": POLICY_FRONTIER_SOURCE, "v1_baseline": V1_FRONTIER_SOURCE}

# --------------------------------------------------------------------------- frontier_best


def _best_partials(fr: Staged) -> str:
    """Per incoming run x caller, the best policy that meets the constraints."""
    c = fr.columns
    return f"""
        SELECT run_id, CAST({col(c, "caller_name", "VARCHAR")} AS VARCHAR),
               CAST({col(c, "policy_params", "VARCHAR")} AS VARCHAR),
               {col(c, "meets_constraints", "BOOLEAN")},
               {col(c, "objective_score", "DOUBLE")}, {col(c, "avg_return_bps", "DOUBLE")},
               {col(c, "median_return_bps", "DOUBLE")}, {col(c, "stop_out_rate", "DOUBLE")},
               {col(c, "rank", "BIGINT")}
        FROM {fr.relation}
        WHERE {col(c, "meets_constraints", "BOOLEAN")}
        QUALIFY row_number() OVER (
            PARTITION BY run_id, {col(c, "caller_name", "VARCHAR")}
            ORDER BY {col(c, "objective_score", "DOUBLE")} DESC NULLS LAST,
                     {col(c, "rank", "BIGINT")} ASC NULLS LAST) = 1
        """


def _compute_best(
    con: duckdb.DuckDBPyConnection, staged: Mapping[str, Staged], _config: Config
) -> None:
    rows = POLICY_FRONTIER_SOURCE.staged(staged)
    if rows is not None:
        con.execute(f"INSERT INTO exports_state.frontier_p {_best_partials(rows)}")


FRONTIER_BEST = Summary(
    name="frontier_best",
    sql="""
        WITH newest AS (SELECT run_id, CAST(created_at AS TIMESTAMP) AS created_at
                        FROM exports_state.runs WHERE has_frontier
                        ORDER BY 2 DESC NULLS LAST, run_id DESC LIMIT 1)
        SELECT f.run_id, n.created_at, f.caller_name, f.policy_params, f.objective_score,
               f.avg_return_bps, f.median_return_bps, f.stop_out_rate, f.rank
        FROM exports_state.frontier_p f JOIN newest n USING (run_id)
        ORDER BY f.caller_name""",
    tables=POLICY_FRONTIERS,
    feed=flag("has_frontier", POLICY_FRONTIER_SOURCE.holds(), POLICY_FRONTIER_SOURCE),
    state_ddl="""
CREATE TABLE IF NOT EXISTS exports_state.frontier_p (
    run_id VARCHAR, caller_name VARCHAR, policy_params VARCHAR, meets_constraints BOOLEAN,
    objective_score DOUBLE, avg_return_bps DOUBLE, median_return_bps DOUBLE,
    stop_out_rate DOUBLE, rank BIGINT);
""",
    run_tables=("frontier_p",),
    compute=_compute_best,
)

# --------------------------------------------------------------------------- frontiers


def _rows(fr: Staged, kind: str) -> str:
    """An incoming frontier table's rows in the ``frontiers`` shape, ``pareto`` computed."""
    c = fr.columns
    return f"""
        WITH f AS (
            SELECT run_id, '{kind}' AS kind,
                   CAST({col(c, "caller_name", "VARCHAR")} AS VARCHAR) AS caller_name,
                   CAST({col(c, "rank", "BIGINT")} AS BIGINT) AS rank,
                   CAST({col(c, "policy_params", "VARCHAR")} AS VARCHAR) AS policy_params,
                   CAST({col(c, "tp_mult", "DOUBLE")} AS DOUBLE) AS tp_mult,
                   CAST({col(c, "sl_mult", "DOUBLE")} AS DOUBLE) AS sl_mult,
                   CAST({col(c, "meets_constraints", "BOOLEAN")} AS BOOLEAN) AS meets_constraints,
                   CAST({col(c, "objective_score", "DOUBLE")} AS DOUBLE) AS objective_score,
                   CAST({col(c, "avg_return_bps", "DOUBLE")} AS DOUBLE) AS avg_return_bps,
                   CAST({col(c, "median_return_bps", "DOUBLE")} AS DOUBLE) AS median_return_bps,
                   CAST({col(c, "stop_out_rate", "DOUBLE")} AS DOUBLE) AS stop_out_rate
            FROM {fr.relation})
        SELECT f.*,
               coalesce(f.objective_score IS NOT NULL AND f.stop_out_rate IS NOT NULL
                        AND NOT EXISTS (
                   SELECT 1 FROM f g
                   WHERE g.run_id = f.run_id AND g.caller_name IS NOT DISTINCT FROM f.caller_name
                     AND g.objective_score >= f.objective_score
                     AND g.stop_out_rate <= f.stop_out_rate
                     AND (g.objective_score > f.objective_score
                          OR g.stop_out_rate < f.stop_out_rate)), false) AS pareto
        FROM f
        """


def _compute_frontiers(
    con: duckdb.DuckDBPyConnection, staged: Mapping[str, Staged], _config: Config
) -> None:
    for kind, source in KINDS.items():
        rows = source.staged(staged)
        if rows is not None:
            con.execute(f"INSERT INTO exports_state.frontiers_p {_rows(rows, kind)}")


FRONTIERS = Summary(
    name="frontiers",
    sql="""
        SELECT p.*, CAST(s.created_at AS TIMESTAMP) AS created_at FROM exports_state.frontiers_p p
        JOIN exports_state.runs s USING (run_id)
        ORDER BY CAST(s.created_at AS TIMESTAMP), p.run_id, p.kind, p.caller_name NULLS FIRST,
                 p.rank""",
    tables=(*POLICY_FRONTIER_SOURCE.tables, *V1_FRONTIER_SOURCE.tables),
    feed=flag(
        "has_frontiers",
        f"({POLICY_FRONTIER_SOURCE.holds()} OR {V1_FRONTIER_SOURCE.holds()})",
        POLICY_FRONTIER_SOURCE,
        V1_FRONTIER_SOURCE,
    ),
    state_ddl="""
CREATE TABLE IF NOT EXISTS exports_state.frontiers_p (
    run_id VARCHAR, kind VARCHAR, caller_name VARCHAR, rank BIGINT, policy_params VARCHAR,
    tp_mult DOUBLE, sl_mult DOUBLE, meets_constraints BOOLEAN, objective_score DOUBLE,
    avg_return_bps DOUBLE, median_return_bps DOUBLE, stop_out_rate DOUBLE, pareto BOOLEAN);
""",
    run_tables=("frontiers_p",),
    compute=_compute_frontiers,
)
