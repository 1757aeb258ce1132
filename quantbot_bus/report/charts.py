"""The dashboard's charts (catalog, callers, policies, frontiers, distributions, regressions), each
a function from :mod:`quantbot_bus.report.data`'s rows to an inline SVG string; the run
tearsheet's charts are in :mod:`quantbot_bus.report.tearsheet`. Every function is given non-empty
data (the page says "none yet" itself) and bounds what it draws."""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import matplotlib.dates as mdates
import numpy as np
from matplotlib.collections import PolyCollection
from matplotlib.ticker import MaxNLocator

from .data import Row
from .dateaxis import date_axis
from .histogram import Histogram
from .svg import BAD, GOOD, MUTED, PALETTE, figure, styled, to_svg

#: Callers drawn in the leaderboard chart, and days before runs over time go by week.
CHART_CALLERS = 15
MAX_DAYS = 120
#: Runs over time shows at least this many days (the last ones), so a day's bar is on a day axis.
MIN_DAYS_SHOWN = 7


def _short(text: Any, width: int = 28) -> str:
    s = "(none)" if text is None else str(text)
    return s if len(s) <= width else s[: width - 1] + "…"


def _distinct(rows: Iterable[Row]) -> list[tuple[float, float]]:
    """The distinct (stop-out rate, objective) points of frontier rows (many policies share one:
    drawing each once keeps the chart small)."""
    seen = {
        (round(float(r["stop_out_rate"]), 4), round(float(r["objective_score"]), 4)) for r in rows
    }
    return sorted(seen)


def _bars(
    ax: Any,
    at: Any,
    lengths: Any,
    thickness: float,
    colors: Any,
    *,
    base: Any = None,
    label: str | None = None,
    horizontal: bool = True,
) -> None:
    """Bars from ``base`` (default 0) over each of ``lengths``, centred on ``at``: one
    :class:`~matplotlib.collections.PolyCollection` (what ``bar``/``barh`` draw, without an
    artist, a limit update and a legend entry per bar; the SVG has the same one path per bar)."""
    at, n = np.asarray(at, dtype=float), np.nan_to_num(np.asarray(lengths, dtype=float))
    b = np.zeros_like(n) if base is None else np.asarray(base, dtype=float)
    lo, hi, end = at - thickness / 2, at + thickness / 2, b + n
    verts = np.stack([np.stack(c, 1) for c in ((b, lo), (end, lo), (end, hi), (b, hi))], axis=1)
    if not horizontal:
        verts = verts[..., ::-1]  # (length, position) -> (position, length)
    bars = PolyCollection(
        list(verts), facecolors=colors, edgecolors="none", linewidths=0, label=label
    )
    (bars.sticky_edges.x if horizontal else bars.sticky_edges.y).append(0.0)  # no margin below 0
    ax.add_collection(bars, autolim=False)
    ax.update_datalim(verts.reshape(-1, 2))
    ax.autoscale_view()


def runs_over_time(per_day: list[Row]) -> str:
    """Runs registered per day (per week beyond :data:`MAX_DAYS` days), stacked by run type, and
    the cumulative count, on a date axis (:func:`~quantbot_bus.report.dateaxis.date_axis`: at
    most :data:`~quantbot_bus.report.dateaxis.MAX_TICKS` labels at any span; a day without runs
    is a gap; each bar over its own day; at least the last :data:`MIN_DAYS_SHOWN` days). Both y
    axes leave room at the top for the legend, above the bars and the line."""
    days = sorted({r["day"] for r in per_day})
    weekly = (days[-1] - days[0]).days > MAX_DAYS if days else False
    counts: dict[str, dict[dt.date, int]] = defaultdict(lambda: defaultdict(int))
    for r in per_day:
        day = r["day"]
        if weekly:
            day = day - dt.timedelta(days=day.weekday())
        counts[str(r["run_type"])][day] += int(r["runs"])
    buckets = sorted({d for c in counts.values() for d in c})
    types = sorted(counts, key=lambda t: -sum(counts[t].values()))
    if len(types) > len(PALETTE):  # the smallest run types as one "other"
        other: dict[dt.date, int] = defaultdict(int)
        for t in types[len(PALETTE) - 1 :]:
            for d, n in counts.pop(t).items():
                other[d] += n
        types = [*types[: len(PALETTE) - 1], "(other types)"]
        counts["(other types)"] = other
    with styled():
        fig, axes = figure(7.5, 2.4)
        ax = axes[0][0]
        bottom = np.zeros(len(buckets))
        ax.xaxis_date()
        width = 5.5 if weekly else 0.8  # days
        # each bar over its own day (week): centred at noon (mid-week), not on the midnight
        # that starts it, which put a day's runs half into the day before
        x = mdates.date2num(buckets) + (3.5 if weekly else 0.5)
        for i, t in enumerate(types):
            vals = np.array([counts[t].get(d, 0) for d in buckets], dtype=float)
            color = PALETTE[i % len(PALETTE)]
            _bars(ax, x, vals, width, color, base=bottom.copy(), label=_short(t), horizontal=False)
            bottom += vals
        ax.set_ylabel("runs per week" if weekly else "runs per day")
        ax2 = ax.twinx()
        cumulative = np.cumsum(bottom)
        ax2.plot(x, cumulative, color="#333333", lw=1.2, label="cumulative")
        ax2.set_ylabel("cumulative runs")
        ax2.grid(False)
        ncols = min(4, len(types))
        headroom = 1.15 + 0.1 * ((len(types) + ncols - 1) // ncols)  # a tenth per legend row
        ax.set_ylim(0, max(float(bottom.max()), 1.0) * headroom)
        ax2.set_ylim(0, max(float(cumulative[-1]), 1.0) * headroom)
        ax.legend(loc="upper left", ncols=ncols)
        if not weekly and buckets[-1] - buckets[0] < dt.timedelta(days=MIN_DAYS_SHOWN - 1):
            # a short history (a new bus: its first day) on a week of days, not on hours
            end = mdates.date2num(buckets[-1]) + 1.25
            ax.set_xlim(end - MIN_DAYS_SHOWN - 0.5, end)
        date_axis(ax)
        return to_svg(fig, "runs-over-time")


def leaderboard(rows: list[Row]) -> str:
    """The top callers' 2x/3x/4x hit rates, side by side."""
    top = rows[:CHART_CALLERS][::-1]
    names = [_short(r["caller_name"], 22) for r in top]
    y = np.arange(len(top))
    with styled():
        fig, axes = figure(7.5, 0.9 + 0.22 * len(top))
        ax = axes[0][0]
        h = 0.27
        for i, (key, label) in enumerate(
            (("hit_2x_rate", "2x"), ("hit_3x_rate", "3x"), ("hit_4x_rate", "4x"))
        ):
            vals = [float(r[key] or 0) for r in top]
            _bars(ax, y + (1 - i) * h, vals, h, PALETTE[i], label=f"hit {label}")
        ax.set_yticks(y, names)
        ax.grid(axis="y", visible=False)
        ax.set_xlabel("share of calls that reached the multiple")
        ax.set_xlim(0, 1)
        ax.legend(loc="lower right")
        return to_svg(fig, "leaderboard")


def policies(rows: list[Row]) -> str:
    """Each policy's trade-weighted average return, win rate and stop-out rate, side by side."""
    rows = rows[::-1]
    names = [_short(r["policy_id"], 26) for r in rows]
    y = np.arange(len(rows))
    with styled():
        # the panels share the rows, not a y axis: the names once, no tick per row beside them
        fig, axes = figure(7.5, 1.0 + 0.2 * len(rows), 1, 3)
        panels = (
            ("avg_return_bps", "avg realized return (bps)", None),
            ("win_rate", "win rate", (0, 1)),
            ("stop_out_rate", "stop-out rate", (0, 1)),
        )
        for ax, (key, label, lim) in zip(axes[0], panels, strict=True):
            vals = np.array([np.nan if r[key] is None else float(r[key]) for r in rows])
            colors = [GOOD if v >= 0 else BAD for v in np.nan_to_num(vals)]
            if key != "avg_return_bps":
                colors = [PALETTE[0]] * len(rows)
            _bars(ax, y, vals, 0.7, colors)
            ax.grid(axis="y", visible=False)
            ax.set_xlabel(label)
            if lim:
                ax.set_xlim(*lim)
            ax.set_yticks([])
            ax.axvline(0, color="#333333", lw=0.6)
        axes[0][0].set_yticks(y, names)
        return to_svg(fig, "policies")


def frontiers(rows: list[Row]) -> str:
    """Objective score against stop-out rate of every frontier row, one panel per kind (policy,
    V1 baseline); the Pareto set highlighted, and the frontier of the caller that scores highest
    drawn as a line (every caller's joined would cross each other)."""
    kinds = sorted({str(r["kind"]) for r in rows})
    with styled():
        fig, axes = figure(7.5, 2.8, 1, len(kinds))
        for ax, kind in zip(axes[0], kinds, strict=True):
            pts = [
                r
                for r in rows
                if str(r["kind"]) == kind
                and r["objective_score"] is not None
                and r["stop_out_rate"] is not None
            ]
            other = _distinct(r for r in pts if not r["pareto"])
            ax.plot(
                [x for x, _ in other],
                [y for _, y in other],
                "o",
                ms=3,
                color=MUTED,
                alpha=0.6,
                mew=0,
                label="dominated",
            )
            par = _distinct(r for r in pts if r["pareto"])
            ax.plot(
                [x for x, _ in par],
                [y for _, y in par],
                "D",
                ms=4,
                color=BAD,
                label="Pareto set",
                zorder=3,
            )
            _best_front(ax, [r for r in pts if r["pareto"]])
            ax.set_title(f"{kind} frontier")
            ax.set_xlabel("stop-out rate (lower is better)")
            ax.set_ylabel("objective score (higher is better)")
            ax.legend(loc="best")
        return to_svg(fig, "frontiers")


def _best_front(ax: Any, pareto: list[Row]) -> None:
    """Join the Pareto points of the caller with the highest objective score, in stop-out order,
    labelled with its name. Rows without a caller (all calls together) are one group that is
    drawn only when there is no caller; a NaN score counts as no score."""
    by_caller: dict[Any, list[Row]] = defaultdict(list)
    for r in pareto:
        if math.isfinite(float(r["objective_score"])):
            by_caller[r["caller_name"]].append(r)
    if len(by_caller) > 1:
        by_caller.pop(None, None)
    if not by_caller:
        return
    name, front = max(
        by_caller.items(),
        key=lambda kv: (max(float(r["objective_score"]) for r in kv[1]), str(kv[0])),
    )
    front.sort(key=lambda r: float(r["stop_out_rate"]))
    label = "frontier, all calls" if name is None else f"best caller: {_short(name, 18)}"
    ax.plot(
        [r["stop_out_rate"] for r in front],
        [r["objective_score"] for r in front],
        color=PALETTE[0],
        lw=1.2,
        zorder=4,
        label=label,
    )


def histogram(hist: Histogram, chart_id: str, xlabel: str, color: str = PALETTE[0]) -> str:
    """One distribution's bins (from :func:`quantbot_bus.report.histogram.histogram`) with its
    median marked; the tallest bar reaches 3/4 of the height, so the legend above it never
    covers a bar."""
    edges = np.array(hist.edges)
    counts = np.array(hist.counts, dtype=float)
    with styled():
        fig, axes = figure(3.7, 2.3)
        ax = axes[0][0]
        ax.stairs(counts, edges, fill=True, color=color, alpha=0.85)
        cum = np.cumsum(counts)
        mid = int(np.searchsorted(cum, cum[-1] / 2.0)) if cum[-1] else 0
        median = (edges[mid] + edges[mid + 1]) / 2
        ax.axvline(median, color="#333333", lw=0.8, ls="--", label=f"median ≈ {median:,.0f}")
        ax.set_xlabel(xlabel)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))  # 5-digit labels on a narrow axis
        ax.set_ylabel("count")
        ax.set_ylim(0, max(float(counts.max(initial=0.0)), 1.0) / 0.75)
        ax.legend(loc="upper left")
        return to_svg(fig, chart_id)


def verdicts(rows: list[Row]) -> str:
    """How many regression checks ended in each verdict: a small chart (a bar per verdict), drawn
    at its own size on the page (``natural``), not scaled to the page's width."""
    color = {"regression": BAD, "improvement": GOOD, "no change": PALETTE[0]}
    names = [str(r["verdict"]) for r in rows]
    with styled():
        fig, axes = figure(4.5, 0.8 + 0.25 * len(rows))
        ax = axes[0][0]
        ax.barh(names, [int(r["n"]) for r in rows], color=[color.get(n, MUTED) for n in names])
        ax.set_xlabel("regression checks")
        ax.invert_yaxis()
        return to_svg(fig, "verdicts", natural=True)
