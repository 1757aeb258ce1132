"""A run's tearsheet: its headline numbers and four charts (cumulative return path, underwater,
monthly heatmap, rolling Sharpe), from :class:`~quantbot_bus.report.data.Tearsheet` through
:mod:`quantbot_bus.report.series`. Lines are downsampled (:func:`series.downsample`) so a run of
any size gives a chart of a bounded size."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import series
from .data import Tearsheet
from .dateaxis import date_axis
from .svg import BAD, PALETTE, figure, styled, to_svg

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass
class TearsheetView:
    """The tearsheet's numbers and its charts (SVG strings by name; rolling Sharpe absent when
    the run has too few calls)."""

    run_id: str
    created_at: Any
    stats: dict[str, float | int | None]
    charts: dict[str, str]


def _times(ts_ms: np.ndarray) -> np.ndarray:
    return ts_ms.astype("datetime64[ms]")


def _path_chart(t: np.ndarray, path: np.ndarray) -> str:
    x, y = series.downsample(t, path)
    with styled():
        fig, axes = figure(7.5, 2.4)
        ax = axes[0][0]
        ax.plot(x, y, color=PALETTE[0], lw=1.0)
        ax.axhline(0, color="#333333", lw=0.6)
        ax.set_ylabel("cumulative return (bps)")
        ax.set_title("cumulative return, one position per call, in entry order")
        date_axis(ax)
        return to_svg(fig, "equity")


def _underwater_chart(t: np.ndarray, under: np.ndarray) -> str:
    x, y = series.downsample(t, under)
    with styled():
        fig, axes = figure(7.5, 1.8)
        ax = axes[0][0]
        ax.fill_between(x, y, 0, facecolor=BAD, alpha=0.5, edgecolor=BAD, lw=0.6)
        ax.set_ylabel("drawdown (bps)")
        ax.set_title("underwater: distance below the running peak")
        date_axis(ax)
        return to_svg(fig, "underwater")


def _monthly_chart(m: series.Monthly) -> str:
    values = m.values
    finite = values[np.isfinite(values)]
    lim = float(np.max(np.abs(finite))) if finite.size else 1.0
    with styled():
        fig, axes = figure(7.5, 0.9 + 0.28 * len(m.years))
        ax = axes[0][0]
        rows = np.arange(len(m.years) + 1) - 0.5
        ax.pcolormesh(np.arange(13) - 0.5, rows, values, cmap="RdYlGn", vmin=-lim, vmax=lim)
        ax.set_xticks(range(12), _MONTHS)
        ax.set_yticks(range(len(m.years)), [str(y) for y in m.years])
        ax.invert_yaxis()
        ax.grid(False)
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                ax.text(j, i, f"{v:,.0f}", ha="center", va="center", fontsize=6.5)
        ax.set_title("return per month (bps, sum over the calls entered that month, UTC)")
        return to_svg(fig, "monthly")


def _sharpe_chart(t: np.ndarray, sharpe: np.ndarray, window: int) -> str:
    x, y = series.downsample(t[window - 1 :], sharpe)
    with styled():
        fig, axes = figure(7.5, 1.9)
        ax = axes[0][0]
        ax.plot(x, y, color=PALETTE[4], lw=1.0)
        ax.axhline(0, color="#333333", lw=0.6)
        ax.set_ylabel("Sharpe per call")
        ax.set_title(f"rolling Sharpe ratio over the last {window} calls (not annualised)")
        date_axis(ax)
        return to_svg(fig, "rolling-sharpe")


def build(ts: Tearsheet) -> TearsheetView:
    """The tearsheet of one run's returns."""
    r, t = ts.return_bps, _times(ts.entry_ts_ms)
    path = series.cumulative(r)
    under = series.underwater(path)
    std = float(r.std(ddof=1)) if len(r) > 1 else 0.0
    stats: dict[str, float | int | None] = {
        "calls": len(r),
        "total_return_bps": float(path[-1]),
        "avg_return_bps": float(r.mean()),
        "win_rate": float((r > 0).mean()),
        "max_drawdown_bps": float(under.min()),
        "sharpe_per_call": float(r.mean()) / std if std > 0 else None,
    }
    charts = {
        "equity": _path_chart(t, path),
        "underwater": _underwater_chart(t, under),
        "monthly": _monthly_chart(series.monthly(ts.entry_ts_ms, r)),
    }
    window = series.rolling_window(len(r))
    if window:
        charts["rolling-sharpe"] = _sharpe_chart(t, series.rolling_sharpe(r, window), window)
    stats["rolling_window"] = window or None
    return TearsheetView(ts.run_id, ts.created_at, stats, charts)
