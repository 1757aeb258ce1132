"""Where a run's return series come from: the backtest producers' Parquet tables.

The ``policy`` backtest (:mod:`quantbot_bus.backtest.policy`) writes, per run,

- ``backtest_call_results``: one row per call, traded with the policy the run selected (the grid
  policy with the best mean return); ``return_bps`` is that trade's realized return in basis
  points, ``(exit / entry − 1) × 10 000``, ``win`` whether it made money. This is the per-call
  return series a regression check compares (:func:`run_series`).
- ``backtest_policy_results``: one row per (policy, call) for every policy of the grid
  (``realized_return_bps``): the trials the selected policy won, whose Sharpe ratios the deflated
  Sharpe ratio needs (:func:`trial_sharpes`).

Rows are put in time order (``entry_ts_ms``, then ``call_id``): the producers write them in call
order, while calls fall at random times, and the block bootstrap keeps neighbours in time
together. Per-call rather than daily returns: a run covers a few days (seven by default), far
too few for a daily series, but hundreds of calls.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .bootstrap import Array

CALL_RESULTS = "backtest_call_results"
POLICY_RESULTS = "backtest_policy_results"
_ORDER = [("entry_ts_ms", "ascending"), ("call_id", "ascending")]


def _artifact_path(run_dir: Path, name: str) -> Path:
    """The file of artifact ``name`` as the run's ``metadata.json`` lists it."""
    meta_path = run_dir / "metadata.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{meta_path}: no metadata.json (not a finished run)") from None
    if meta.get("status") != "success":
        raise ValueError(f"{run_dir}: run status is {meta.get('status')!r}, not 'success'")
    for art in meta.get("artifacts", []):
        if art.get("name") == name:
            return run_dir / art["file"]
    raise ValueError(f"{run_dir}: the run has no {name!r} table (is it a policy backtest?)")


def _read(run_dir: str | os.PathLike[str], table: str, columns: list[str]) -> pa.Table:
    path = _artifact_path(Path(run_dir), table)
    wanted = list(dict.fromkeys([*columns, "entry_ts_ms", "call_id"]))
    return pq.read_table(path, columns=wanted).sort_by(_ORDER)


def _as_float(column: pa.ChunkedArray, name: str) -> Array:
    if column.null_count:
        raise ValueError(f"column {name!r} has {column.null_count} null values")
    if pa.types.is_boolean(column.type):
        column = pc.cast(column, pa.float64())
    return np.asarray(column.to_numpy(), dtype=np.float64)


def run_series(
    run_dir: str | os.PathLike[str], column: str = "return_bps", *, table: str = CALL_RESULTS
) -> Array:
    """A run's per-call ``column`` (``return_bps`` by default; booleans such as ``win`` as 0/1)
    from its ``table``, in time order, as a float64 array.

    Raises FileNotFoundError for a directory without ``metadata.json``, ValueError for a run
    that did not succeed, lacks the table, or has nulls in the column."""
    return _as_float(_read(run_dir, table, [column]).column(column), column)


def trial_sharpes(
    run_dir: str | os.PathLike[str], column: str = "realized_return_bps"
) -> dict[str, float]:
    """Per-call Sharpe ratio (mean / population std) of every policy in the run's
    ``backtest_policy_results``, by ``policy_id``: the trials of the run's policy search."""
    tab = _read(run_dir, POLICY_RESULTS, ["policy_id", column])
    ids = tab.column("policy_id").to_numpy(zero_copy_only=False)
    values = _as_float(tab.column(column), column)
    out: dict[str, float] = {}
    for pid in sorted(set(ids.tolist())):
        x = values[ids == pid]
        sd = float(x.std())
        out[str(pid)] = float(x.mean()) / sd if sd > 0 else 0.0
    return out


def policy_series(
    run_dir: str | os.PathLike[str], policy_id: str, column: str = "realized_return_bps"
) -> Array:
    """One grid policy's per-call ``column`` from the run's ``backtest_policy_results``, in time
    order: the series the run would have had with that policy (ValueError for an unknown id)."""
    tab = _read(run_dir, POLICY_RESULTS, ["policy_id", column])
    tab = tab.filter(pc.equal(tab.column("policy_id"), policy_id))
    if tab.num_rows == 0:
        raise ValueError(f"{run_dir}: no policy {policy_id!r} in {POLICY_RESULTS}")
    return _as_float(tab.column(column), column)
