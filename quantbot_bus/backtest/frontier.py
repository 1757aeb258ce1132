"""Frontier artifacts: the writer helpers that give every frontier the same shape.

A frontier is one row per (caller, parameter set) of an optimisation, ranked per caller. Two kinds,
each ONE artifact of the run holding every caller's rows (the old system's writer used one fixed
file name per caller, so a second caller overwrote the first; here a second write of the same
artifact is refused by :class:`~quantbot_bus.writer.RunWriter`):

- ``policy_frontier`` (:func:`write_policy_frontier`): the optimize producer's caller × policy
  grid (:mod:`quantbot_bus.backtest.optimize`);
- ``v1_baseline_frontier`` (:func:`write_v1_baseline_frontier`, or
  :func:`write_v1_baseline_per_caller_frontiers` from a caller → rows mapping): the V1 baseline
  (:mod:`quantbot_bus.backtest.v1baseline`), its per-caller rows and its all-calls rows
  (``caller_name`` null, ``scope`` ``all``) in the same table.

Columns, in order: the old system's ``run_id, caller_name, policy_params`` (JSON object text),
``meets_constraints, objective_score, avg_return_bps, median_return_bps, stop_out_rate, rank``;
then the typed parameters read from ``policy_params`` (:func:`typed_params`): ``tp_mult``,
``sl_mult``, ``trailing_stop``, ``trail_activation``, ``max_hold_ms``; then the caller's other
columns, in their order. ``rank`` is computed here (a given one is replaced): within each
``caller_name`` (null is one group), rows meeting the constraints first, then by
``objective_score`` descending (null last), ties by ``policy_params`` text: 1 = best.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import pyarrow as pa

from ..errors import ContractError

if TYPE_CHECKING:  # the exports plug-in imports the names below without the writer
    from ..writer import RunWriter

POLICY_FRONTIER = "policy_frontier"
V1_BASELINE_FRONTIER = "v1_baseline_frontier"

#: The old system's frontier columns before ``rank``, with their types.
REQUIRED = {
    "run_id": pa.string(),
    "caller_name": pa.string(),
    "policy_params": pa.string(),
    "meets_constraints": pa.bool_(),
    "objective_score": pa.float64(),
    "avg_return_bps": pa.float64(),
    "median_return_bps": pa.float64(),
    "stop_out_rate": pa.float64(),
}
#: The typed parameter columns, from ``policy_params``.
PARAM_COLUMNS = {
    "tp_mult": pa.float64(),
    "sl_mult": pa.float64(),
    "trailing_stop": pa.float64(),
    "trail_activation": pa.float64(),
    "max_hold_ms": pa.int64(),
}
Rows: TypeAlias = pa.Table | Sequence[Mapping[str, Any]]


def typed_params(policy_params: str) -> dict[str, Any]:
    """The typed parameter columns of one ``policy_params`` JSON object.

    ``tp_mult`` (take-profit, a multiple of entry): key ``tp_mult``, else ``take_profit``;
    ``sl_mult`` (the stop as a multiple of entry): ``sl_mult``, else ``1 − stop_loss`` (a
    fraction below entry); ``trailing_stop``, ``trail_activation``, ``max_hold_ms`` as named.
    A key that is absent or null gives null."""
    try:
        doc = json.loads(policy_params)
    except (TypeError, ValueError):
        doc = None
    if not isinstance(doc, dict):
        raise ContractError(f"policy_params must be a JSON object, got {policy_params!r}")

    def num(key: str) -> float | None:
        value = doc.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ContractError(f"policy_params {key!r} must be a number, got {value!r}")
        return float(value)

    tp = num("tp_mult") if "tp_mult" in doc else num("take_profit")
    sl = num("sl_mult")
    if sl is None and num("stop_loss") is not None:
        sl = round(1.0 - float(doc["stop_loss"]), 12)  # 1 - 0.15 -> 0.85, not 0.8500000000000001
    hold = num("max_hold_ms")
    return {
        "tp_mult": tp,
        "sl_mult": sl,
        "trailing_stop": num("trailing_stop"),
        "trail_activation": num("trail_activation"),
        "max_hold_ms": None if hold is None else int(hold),
    }


def _rank_key(row: Mapping[str, Any]) -> tuple[bool, bool, float, str]:
    score = row["objective_score"]
    missing = score is None or math.isnan(score)
    return (not row["meets_constraints"], missing, 0.0 if missing else -score, row["policy_params"])


def frontier_table(rows: Rows, kind: str) -> pa.Table:
    """``rows`` (a pyarrow Table or mappings) validated, typed, ranked and sorted by caller
    (null first) and rank: the table a frontier artifact holds. Raises ContractError when a
    required column is missing or null where it may not be, or ``policy_params`` is no JSON
    object."""
    table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(list(rows))
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise ContractError(
            f"{kind}: required column(s) {', '.join(missing)} missing; a frontier has "
            f"{', '.join(REQUIRED)} (rank is computed)"
        )
    try:
        required = {c: table.column(c).cast(t) for c, t in REQUIRED.items()}
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ContractError(f"{kind}: a required column has the wrong type ({exc})") from None
    for c in ("run_id", "policy_params", "meets_constraints"):
        if required[c].null_count:
            raise ContractError(f"{kind}: column {c!r} has null values")
    extra = [c for c in table.column_names if c not in REQUIRED and c not in PARAM_COLUMNS]
    extra = [c for c in extra if c != "rank"]
    records = pa.table({**required, **{c: table.column(c) for c in extra}}).to_pylist()
    for r in records:
        r.update(typed_params(r["policy_params"]))
    groups: dict[str | None, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(r["caller_name"], []).append(r)
    ordered: list[dict[str, Any]] = []
    for caller in sorted(groups, key=lambda c: (c is not None, c or "")):
        for i, r in enumerate(sorted(groups[caller], key=_rank_key), start=1):
            r["rank"] = i
            ordered.append(r)
    schema = pa.schema(
        [
            *REQUIRED.items(),
            ("rank", pa.int64()),
            *PARAM_COLUMNS.items(),
            *((c, table.schema.field(c).type) for c in extra),
        ]
    )
    return pa.Table.from_pylist(ordered, schema=schema)


def _write(writer: RunWriter, name: str, rows: Rows) -> pa.Table:
    table = frontier_table(rows, name)
    writer.write_table(name, table)
    return table


def write_policy_frontier(writer: RunWriter, rows: Rows) -> pa.Table:
    """Write artifact ``policy_frontier`` (every caller's rows, one file); returns the table."""
    return _write(writer, POLICY_FRONTIER, rows)


def write_v1_baseline_frontier(writer: RunWriter, rows: Rows) -> pa.Table:
    """Write artifact ``v1_baseline_frontier``: the V1 baseline's rows (per caller, and for
    all calls with a null ``caller_name``), one file; returns the table."""
    return _write(writer, V1_BASELINE_FRONTIER, rows)


def write_v1_baseline_per_caller_frontiers(
    writer: RunWriter,
    per_caller: Mapping[str, Rows],
    *,
    overall: Rows = (),
) -> pa.Table:
    """Write every caller's V1 frontier (``per_caller``: caller → rows; each row's
    ``caller_name`` is set to its caller) and the ``overall`` rows into the ONE artifact
    ``v1_baseline_frontier``; returns the table."""
    records: list[dict[str, Any]] = []
    for part in (overall, *per_caller.values()):
        records.extend(part.to_pylist() if isinstance(part, pa.Table) else map(dict, part))
    n_overall = len(overall) if not isinstance(overall, pa.Table) else overall.num_rows
    i = n_overall
    for caller, part in per_caller.items():
        n = part.num_rows if isinstance(part, pa.Table) else len(part)
        for r in records[i : i + n]:
            r["caller_name"] = caller
        i += n
    return write_v1_baseline_frontier(writer, records)
