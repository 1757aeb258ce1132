"""Expected values of the backtest summaries, computed from the Parquet files with Polars and
the standard library (not with the summaries' SQL), and the assertions that compare them with
the published ``exports.*`` rows."""

# ruff: noqa: S608 - SQL from this module's constants (column lists)

from __future__ import annotations

import datetime as dt
import math
import statistics
from typing import Any

import polars as pl
import pytest

from quantbot_bus.config import Config
from quantbot_bus.exports.histograms import bin_value

COMPARISON_COLUMNS = (
    "trades, avg_realized_return_bps, median_realized_return_bps, stop_out_rate, win_rate, "
    "avg_time_exposed_ms, avg_mae_bps, median_mae_bps, p95_mae_bps, avg_tail_capture, "
    "median_tail_capture"
)
BY_CALLER_COLUMNS = (
    "trades, avg_realized_return_bps, median_realized_return_bps, stop_out_rate, win_rate, "
    "avg_time_exposed_ms, avg_mae_bps, avg_tail_capture"
)
#: The call-path columns the leaderboard reads.
PATH_COLS = [
    "run_id",
    "caller_name",
    "hit_2x",
    "hit_3x",
    "hit_4x",
    "t_2x_ms",
    "dd_bps",
    "peak_multiple",
]


def query(cfg: Config, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    """Rows of ``sql`` over the publication, as dicts."""
    from quantbot_bus.catalog import open_reader

    con = open_reader(cfg.snapshot_path)
    try:
        cur = con.execute(sql, params or [])
        names = [d[0] for d in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    finally:
        con.close()


def disc(values: list[float], q: float) -> float:
    """The ``ceil(n·q)``-th smallest value (what the leaderboard's histograms resolve)."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * q)) - 1]


def expected_leaderboard(frames: list[pl.DataFrame]) -> dict[str, dict[str, Any]]:
    """The leaderboard rows of the path-only runs whose call paths are ``frames``."""
    out: dict[str, dict[str, Any]] = {}
    calls = pl.concat([f.select(PATH_COLS) for f in frames])
    for (caller,), g in calls.group_by("caller_name"):
        n = g.height
        t2x = [v for v in g["t_2x_ms"].to_list() if v is not None]
        out[str(caller)] = {
            "calls": n,
            "hit_2x_rate": g["hit_2x"].sum() / n,
            "hit_3x_rate": g["hit_3x"].sum() / n,
            "hit_4x_rate": g["hit_4x"].sum() / n,
            "median_peak_multiple": bin_value(disc(g["peak_multiple"].to_list(), 0.5)),
            "p90_peak_multiple": bin_value(disc(g["peak_multiple"].to_list(), 0.9)),
            "median_dd_bps": bin_value(disc(g["dd_bps"].to_list(), 0.5)),
            "median_t_2x_ms": bin_value(disc(t2x, 0.5)) if t2x else None,
            "runs_seen": g["run_id"].n_unique(),
        }
    return out


def expected_comparison(trades: pl.DataFrame) -> dict[str, dict[str, Any]]:
    """policy_comparison's values per policy of one run's trades."""
    out: dict[str, dict[str, Any]] = {}
    for (policy,), g in trades.group_by("policy_id"):
        rr = g["realized_return_bps"].to_list()
        mae = [abs(v) for v in g["max_adverse_excursion_bps"].to_list()]
        tail = [v for v in g["tail_capture"].to_list() if v is not None]
        ordered = sorted(mae)
        pos = (len(ordered) - 1) * 0.95  # linear interpolation (quantile_cont)
        lo = math.floor(pos)
        p95 = ordered[lo] + (ordered[min(lo + 1, len(ordered) - 1)] - ordered[lo]) * (pos - lo)
        out[str(policy)] = {
            "trades": g.height,
            "avg_realized_return_bps": statistics.fmean(rr),
            "median_realized_return_bps": statistics.median(rr),
            "stop_out_rate": sum(g["stop_out"].to_list()) / g.height,
            "win_rate": sum(v > 0 for v in rr) / len(rr),
            "avg_time_exposed_ms": statistics.fmean(g["time_exposed_ms"].to_list()),
            "avg_mae_bps": -statistics.fmean(mae),
            "median_mae_bps": -statistics.median(mae),
            "p95_mae_bps": -p95,
            "avg_tail_capture": statistics.fmean(tail) if tail else None,
            "median_tail_capture": statistics.median(tail) if tail else None,
        }
    return out


def with_callers(trades: pl.DataFrame, *named_by: pl.DataFrame) -> pl.DataFrame:
    """One run's ``trades`` with each ``caller_name``: the trades' own (when they have the
    column), else that of the call in the first of the tables ``named_by`` that has it (each
    one row per ``call_id``), else null."""
    cols = ["caller_name"]
    out = (
        trades
        if "caller_name" in trades.columns
        else trades.with_columns(caller_name=pl.lit(None, pl.String))
    )
    for i, table in enumerate(named_by):
        assert table["call_id"].is_unique().all()
        cols.append(f"_caller_{i}")
        out = out.join(
            table.select("call_id", pl.col("caller_name").alias(cols[-1])), on="call_id", how="left"
        )
    return out.with_columns(caller_name=pl.coalesce(cols)).drop(cols[1:])


def expected_by_caller(trades: pl.DataFrame) -> dict[tuple[str, str | None], dict[str, Any]]:
    """policy_by_caller's values per (policy, caller) of one run's trades (``caller_name``
    filled in: :func:`with_callers`), computed by Polars."""
    rr = pl.col("realized_return_bps")
    groups = trades.group_by("policy_id", "caller_name").agg(
        trades=pl.len(),
        avg_realized_return_bps=rr.mean(),
        median_realized_return_bps=rr.median(),
        stop_out_rate=pl.col("stop_out").cast(pl.Float64).mean(),
        win_rate=(rr > 0).cast(pl.Float64).mean(),
        avg_time_exposed_ms=pl.col("time_exposed_ms").cast(pl.Float64).mean(),
        avg_mae_bps=-pl.col("max_adverse_excursion_bps").abs().mean(),
        avg_tail_capture=pl.col("tail_capture").mean(),
    )
    out: dict[tuple[str, str | None], dict[str, Any]] = {}
    for row in groups.iter_rows(named=True):
        out[(row.pop("policy_id"), row.pop("caller_name"))] = row
    return out


def assert_by_caller(
    cfg: Config, run_id: str, want: dict[tuple[str, str | None], dict[str, Any]]
) -> None:
    """The run's ``policy_by_caller`` rows are exactly ``want``'s groups, with its values."""
    rows = query(
        cfg,
        f"SELECT policy_id, caller_name, {BY_CALLER_COLUMNS} FROM exports.policy_by_caller "
        "WHERE run_id = ?",
        [run_id],
    )
    got = {(r.pop("policy_id"), r.pop("caller_name")): r for r in rows}
    assert len(got) == len(rows)  # one row per (policy, caller)
    assert sorted(got, key=repr) == sorted(want, key=repr)
    for key, values in want.items():
        assert_row(got[key], values, repr(key))


def assert_row(got: dict[str, Any], want: dict[str, Any], what: str) -> None:
    for key, value in want.items():
        if value is None or isinstance(value, (bool, int, str, dt.datetime)):
            assert got[key] == value, (what, key, got[key], value)
        else:
            assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-9), (what, key)
