"""Path-only backtest: what the price did after each call, no trading decisions.

Definitions (one call; ``p0`` is the entry reference price, normally the open of the first candle
opening at or after the alert; candles opening before the alert are ignored):

- ``peak_multiple`` = max high / p0.
- ``hit_Nx`` (N = 2, 3, 4): some candle's high reached N × p0; ``t_Nx_ms`` = open time of the
  first such candle − alert_ts_ms (null when not hit).
- ``dd_bps`` = (min low / p0 − 1) × 10 000 over the whole path, capped at 0: a drawdown is
  negative or zero (−9 000 is a 90 % fall below p0).
- ``dd_to_2x_bps``: the same over the candles *before* the first 2× candle (0 if the first candle
  hits 2×: the order of high and low inside a candle is unknown); null when 2× is never hit.
- ``alert_to_activity_ms`` = open time of the first candle with volume > 0 − alert_ts_ms (null when
  nothing trades).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

import polars as pl

from .market import Call, Candle

MULTIPLES = (2, 3, 4)

PATH_METRICS_SCHEMA: dict[str, Any] = {
    "run_id": pl.String,
    "call_id": pl.String,
    "caller_name": pl.String,
    "mint": pl.String,
    "chain": pl.String,
    "interval": pl.String,
    "alert_ts_ms": pl.Int64,
    "p0": pl.Float64,
    "hit_2x": pl.Boolean,
    "t_2x_ms": pl.Int64,
    "hit_3x": pl.Boolean,
    "t_3x_ms": pl.Int64,
    "hit_4x": pl.Boolean,
    "t_4x_ms": pl.Int64,
    "dd_bps": pl.Float64,
    "dd_to_2x_bps": pl.Float64,
    "alert_to_activity_ms": pl.Int64,
    "peak_multiple": pl.Float64,
    "created_at": pl.Datetime("us", "UTC"),
}


def _bps(ratio: float) -> float:
    return (ratio - 1.0) * 10_000.0


def path_metrics(p0: float, candles: Sequence[Candle], alert_ts_ms: int) -> dict[str, Any]:
    """The path-only metrics of one call (see the module docstring for the definitions)."""
    if not p0 > 0:
        raise ValueError(f"p0 must be > 0, got {p0!r}")
    path = [c for c in candles if c.ts_ms >= alert_ts_ms]
    if not path:
        raise ValueError("no candle opens at or after the alert")
    out: dict[str, Any] = {}
    first_hit: dict[int, int | None] = dict.fromkeys(MULTIPLES)
    peak = path[0].high
    low = path[0].low
    low_before_2x = p0  # min low over candles before the first 2x candle
    activity: int | None = None
    for c in path:
        for n in MULTIPLES:
            if first_hit[n] is None and c.high >= n * p0:
                first_hit[n] = c.ts_ms
        if first_hit[2] is None:
            low_before_2x = min(low_before_2x, c.low)
        if activity is None and c.volume > 0:
            activity = c.ts_ms
        peak = max(peak, c.high)
        low = min(low, c.low)
    for n in MULTIPLES:
        hit_ts = first_hit[n]
        out[f"hit_{n}x"] = hit_ts is not None
        out[f"t_{n}x_ms"] = None if hit_ts is None else hit_ts - alert_ts_ms
    out["dd_bps"] = min(0.0, _bps(low / p0))
    out["dd_to_2x_bps"] = None if first_hit[2] is None else min(0.0, _bps(low_before_2x / p0))
    out["alert_to_activity_ms"] = None if activity is None else activity - alert_ts_ms
    out["peak_multiple"] = peak / p0
    return out


def call_row(call: Call, interval: str, run_id: str, created_at: dt.datetime) -> dict[str, Any]:
    """One ``backtest_call_path_metrics`` row."""
    path = call.after_alert()
    p0 = path[0].open
    return {
        "run_id": run_id,
        "call_id": call.call_id,
        "caller_name": call.caller_name,
        "mint": call.mint,
        "chain": call.chain,
        "interval": interval,
        "alert_ts_ms": call.alert_ts_ms,
        "p0": p0,
        **path_metrics(p0, path, call.alert_ts_ms),
        "created_at": created_at,
    }


def build_table(rows: Iterable[dict[str, Any]]) -> pl.DataFrame:
    """The ``backtest_call_path_metrics`` table, with its fixed schema, as a polars DataFrame."""
    return pl.DataFrame(list(rows), schema=PATH_METRICS_SCHEMA)


def summary_metrics(df: pl.DataFrame) -> dict[str, float | int]:
    """Run metrics for metadata.json: call counts, hit rates, medians."""
    n = df.height
    out: dict[str, float | int] = {"calls": n, "callers": df["caller_name"].n_unique()}
    if n == 0:
        return out
    for m in MULTIPLES:
        out[f"hit_{m}x_rate"] = float(df[f"hit_{m}x"].mean())  # type: ignore[arg-type]
    optional = {
        "median_peak_multiple": df["peak_multiple"].median(),
        "median_dd_bps": df["dd_bps"].median(),
        "median_t_2x_ms": df["t_2x_ms"].median(),
        "rug_rate": float((df["dd_bps"] <= -9_000).mean()),  # type: ignore[arg-type]
    }
    out.update({k: float(v) for k, v in optional.items() if v is not None})  # type: ignore[arg-type]
    return out
