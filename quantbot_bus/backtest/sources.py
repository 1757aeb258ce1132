"""The artifact tables the backtest summaries read, in either run layout, each read in one shape.

A :class:`Source` is one kind of backtest table (the call paths, the policy trades, ...) and the
export tables that hold it (an artifact ``a/b`` is export table ``a__b``):

- the v1 name the bus's producers write in the v1 layout (``backtest_call_path_metrics``);
- the same table written by those producers in the seed layout (``--layout seed``:
  ``truth/backtest_call_path_metrics``), so a run reads the same in both layouts;
- the seed system's own table (``truth/paths``, ``policy/trades``, ``results/frontier``).

Whatever table holds them, the summaries read a source's rows through :meth:`Source.project`:
``run_id`` and the source's columns in a fixed order and type (``TRY_CAST``: a value that does
not convert, or a column the table does not have, is NULL), so runs of every layout merge into
one relation (:meth:`Source.staged`) and a producer's odd column type never aborts a refresh.
The seed's ``truth/paths`` and ``policy/trades`` carry the bus's column names; what they lack
(``policy/trades`` has no ``caller_name``) is NULL here and filled in by the summaries where the
run allows (docs/contract.md, section 5).
"""

# ruff: noqa: S608 - SQL from this module's constants and identifiers quoted by exports.sql

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..exports.plugins import Flag, Staged
from ..exports.sql import q
from .frontier import POLICY_FRONTIER, V1_BASELINE_FRONTIER

if TYPE_CHECKING:
    from collections.abc import Iterable


@dataclass(frozen=True)
class Source:
    """One kind of backtest table: ``key`` (its name in flags and parameters), the export
    ``tables`` that hold it (the v1 name first) and its ``columns`` (name → SQL type)."""

    key: str
    tables: tuple[str, ...]
    columns: Mapping[str, str]

    def project(self, relation: str, cols: Iterable[str]) -> str:
        """A SELECT of ``run_id`` and this source's columns from ``relation`` (with columns
        ``cols``): each cast to its type, NULL where ``relation`` lacks it or a value does not
        convert."""
        have = set(cols)
        picks = ", ".join(
            f"TRY_CAST({q(name)} AS {sql_type}) AS {q(name)}"
            if name in have
            else f"CAST(NULL AS {sql_type}) AS {q(name)}"
            for name, sql_type in self.columns.items()
        )
        return f"SELECT run_id, {picks} FROM {relation}"

    def staged(self, staged: Mapping[str, Staged]) -> Staged | None:
        """The incoming rows of every table of this source, in its shape (None: none came in)."""
        parts = [staged[t] for t in self.tables if t in staged]
        if not parts:
            return None
        union = " UNION ALL ".join(self.project(p.relation, p.columns) for p in parts)
        return Staged(f"({union})", ["run_id", *self.columns])

    def params(self) -> dict[str, str]:
        """The flag parameters naming this source's tables."""
        return {f"{self.key}_{i}": table for i, table in enumerate(self.tables)}

    def holds(self) -> str:
        """A flag's condition over a run's artifacts ``f``: one of them is of this source."""
        names = ", ".join(f"${p}" for p in self.params())
        return f"coalesce(bool_or(f.name IN ({names})), false)"


def flag(column: str, sql: str, *sources: Source) -> Flag:
    """A feed flag whose ``sql`` names the sources' tables through :meth:`Source.holds`."""
    params: dict[str, str] = {}
    for source in sources:
        params.update(source.params())
    return Flag(column, sql, params)


def export_name(folder: str, name: str) -> str:
    """The export table of seed artifact ``folder/name``."""
    return f"{folder}__{name}"


PATHS = Source(
    "src_paths",
    (
        "backtest_call_path_metrics",
        export_name("truth", "backtest_call_path_metrics"),
        export_name("truth", "paths"),
    ),
    {
        "call_id": "VARCHAR",
        "caller_name": "VARCHAR",
        "hit_2x": "BOOLEAN",
        "hit_3x": "BOOLEAN",
        "hit_4x": "BOOLEAN",
        "t_2x_ms": "DOUBLE",
        "dd_bps": "DOUBLE",
        "peak_multiple": "DOUBLE",
    },
)

#: One row per (policy, call); ``caller_name`` when the table has it (the bus's and the seed's
#: have not).
POLICY_TRADES = Source(
    "src_policy",
    (
        "backtest_policy_results",
        export_name("policy", "backtest_policy_results"),
        export_name("policy", "trades"),
    ),
    {
        "policy_id": "VARCHAR",
        "call_id": "VARCHAR",
        "caller_name": "VARCHAR",
        "entry_ts_ms": "BIGINT",
        "entry_px": "DOUBLE",
        "exit_ts_ms": "BIGINT",
        "exit_px": "DOUBLE",
        "exit_reason": "VARCHAR",
        "realized_return_bps": "DOUBLE",
        "stop_out": "BOOLEAN",
        "max_adverse_excursion_bps": "DOUBLE",
        "time_exposed_ms": "BIGINT",
        "tail_capture": "DOUBLE",
    },
)

#: The bus's per-call results of a run's selected policy (the seed has no such table).
CALL_RESULTS = Source(
    "src_calls",
    ("backtest_call_results", export_name("policy", "backtest_call_results")),
    {
        "call_id": "VARCHAR",
        "caller_name": "VARCHAR",
        "pnl_usd": "DOUBLE",
        "pnl_pct": "DOUBLE",
        "return_bps": "DOUBLE",
        "win": "BOOLEAN",
    },
)

_FRONTIER_COLUMNS = {
    "caller_name": "VARCHAR",
    "rank": "BIGINT",
    "policy_params": "VARCHAR",
    "tp_mult": "DOUBLE",
    "sl_mult": "DOUBLE",
    "meets_constraints": "BOOLEAN",
    "objective_score": "DOUBLE",
    "avg_return_bps": "DOUBLE",
    "median_return_bps": "DOUBLE",
    "stop_out_rate": "DOUBLE",
}

LEGACY_FRONTIER = "frontier"
#: The policy frontiers: ``policy_frontier``, and ``frontier``, its name before it and in the
#: seed system (``results/frontier``).
POLICY_FRONTIER_SOURCE = Source(
    "src_frontier",
    (
        POLICY_FRONTIER,
        LEGACY_FRONTIER,
        export_name("results", POLICY_FRONTIER),
        export_name("results", LEGACY_FRONTIER),
    ),
    {**_FRONTIER_COLUMNS, "trades": "BIGINT", "win_rate": "DOUBLE"},
)

#: The V1 baseline's frontier (the seed system never wrote one).
V1_FRONTIER_SOURCE = Source(
    "src_v1",
    (V1_BASELINE_FRONTIER, export_name("results", V1_BASELINE_FRONTIER)),
    {**_FRONTIER_COLUMNS, "final_capital": "DOUBLE", "initial_capital": "DOUBLE"},
)
