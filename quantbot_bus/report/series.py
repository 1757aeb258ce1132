"""A run tearsheet's series from its per-call returns, and the downsampling that keeps them small.

The returns are ``backtest_call_results.return_bps`` in ``entry_ts_ms`` order: one fixed-size
position per call, so the cumulative return path is their running sum (in bps of one position),
its drawdown (underwater) the distance below its running peak, the monthly returns the sums per
calendar month (UTC), and the rolling Sharpe ratio the mean over the standard deviation of the last
``window`` calls (per call, not annualised: calls are not evenly spaced in time).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: At most this many points per plotted line (min/max pairs per bucket keep every extreme).
MAX_POINTS = 800


@dataclass
class Monthly:
    """Returns (bps) per calendar month: ``values[i, m]`` for year ``years[i]``, month ``m + 1``
    (NaN: no call that month)."""

    years: list[int]
    values: np.ndarray


def cumulative(returns: np.ndarray) -> np.ndarray:
    """The cumulative return path: the running sum of the per-call returns."""
    return np.cumsum(returns)


def underwater(path: np.ndarray) -> np.ndarray:
    """How far below its running peak (the start counts as 0) the path is, <= 0."""
    if len(path) == 0:
        return path
    peak = np.maximum.accumulate(np.maximum(path, 0.0))
    return path - peak


def monthly(ts_ms: np.ndarray, returns: np.ndarray) -> Monthly:
    """The sum of the returns of the calls entered in each calendar month (UTC)."""
    if len(returns) == 0:
        return Monthly([], np.zeros((0, 12)))
    months = (
        ts_ms.astype("datetime64[ms]").astype("datetime64[M]").astype(np.int64)
    )  # since 1970-01
    first, last = int(months.min()) // 12, int(months.max()) // 12
    years = list(range(1970 + first, 1970 + last + 1))
    values = np.full((len(years), 12), np.nan)
    sums = np.bincount(months - first * 12, weights=returns, minlength=len(years) * 12)
    seen = np.bincount(months - first * 12, minlength=len(years) * 12) > 0
    flat = values.reshape(-1)  # a view: fills ``values``
    flat[seen] = sums[seen]
    return Monthly(years, values)


def rolling_window(n: int) -> int:
    """The rolling Sharpe window for ``n`` calls: 50, or a quarter of the calls when fewer than
    200 (at least 5); 0 when there are too few calls (< 10) for one."""
    if n < 10:
        return 0
    return 50 if n >= 200 else max(5, n // 4)


def rolling_sharpe(returns: np.ndarray, window: int) -> np.ndarray:
    """Mean / standard deviation (ddof 1) of each run of ``window`` consecutive returns; one
    value per window end (``len - window + 1`` values), NaN where the deviation is 0."""
    if window < 2 or len(returns) < window:
        return np.array([], dtype=np.float64)
    x = returns - returns.mean()  # centred: the running sums stay small and exact enough
    c1 = np.concatenate(([0.0], np.cumsum(x)))
    c2 = np.concatenate(([0.0], np.cumsum(x * x)))
    s1 = c1[window:] - c1[:-window]
    s2 = c2[window:] - c2[:-window]
    mean = s1 / window
    var = np.maximum(s2 - s1 * s1 / window, 0.0) / (window - 1)
    std = np.sqrt(var)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (mean + returns.mean()) / std
    out[std <= 1e-12 * (1.0 + np.abs(mean + returns.mean()))] = np.nan
    return out


def downsample(
    x: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS
) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` points of the line ``(x, y)``: the series cut into
    ``max_points / 2`` buckets, each represented by its lowest and its highest point (in their
    order), so every peak and trough of the line survives. Shorter series are returned as is."""
    n = len(y)
    if n <= max_points:
        return x, y
    buckets = max(1, max_points // 2)
    starts = np.linspace(0, n, buckets + 1).astype(np.int64)[:-1]
    keep = np.empty(2 * buckets, dtype=np.int64)
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < buckets else n
        seg = y[start:end]
        nan = np.isnan(seg)
        lo = start + int(np.argmin(np.where(nan, np.inf, seg)))
        hi = start + int(np.argmax(np.where(nan, -np.inf, seg)))
        keep[2 * i], keep[2 * i + 1] = min(lo, hi), max(lo, hi)
    keep = np.unique(keep)
    return x[keep], y[keep]
