"""The dashboard's charts are laid out without a layout engine (:mod:`quantbot_bus.report.layout`):
every text of every chart lies inside its figure, two panels' texts never overlap, and the margins
are not wasted. Checked on the real chart functions with awkward data (long and markup names,
counts in the millions, an offset text, negative values, date axes over days and years) against
matplotlib's own measure of what it drew (``Figure.get_tightbbox`` after the SVG is written)."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Callable
from itertools import pairwise
from typing import Any

import numpy as np
import pytest
from matplotlib.backends.backend_svg import RendererSVG
from matplotlib.figure import Figure

from quantbot_bus.report import charts, svg, tearsheet
from quantbot_bus.report.data import Histogram, Tearsheet
from quantbot_bus.report.layout import PAD

#: How much room (points) a chart may leave between its outermost drawing and the figure's edge:
#: the pad, the measuring slack and a little rounding.
LOOSE = PAD + 6.0


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[Figure]:
    """Every figure the chart modules turn into SVG (the real :func:`svg.to_svg` still runs)."""
    figures: list[Figure] = []
    real = svg.to_svg

    def keep(fig: Figure, chart_id: str, **kw: Any) -> str:
        figures.append(fig)
        return real(fig, chart_id, **kw)

    monkeypatch.setattr(charts, "to_svg", keep)
    monkeypatch.setattr(tearsheet, "to_svg", keep)
    return figures


def assert_fits(fig: Figure) -> None:
    """Nothing of ``fig`` outside it; no side wasted; the panels' texts apart. Measured as the SVG
    backend measures (unhinted font metrics, 72 dpi: the SVG's own coordinates), which is how
    the browser draws the text too (Agg's hinted metrics are narrower)."""
    w, h = fig.get_size_inches() * 72.0
    fig.set_dpi(72.0)
    renderer = RendererSVG(w, h, io.StringIO())
    with svg.styled():
        box = fig.get_tightbbox(renderer)  # inches, from the texts and lines as drawn
    x0, y0, x1, y1 = (v * 72.0 for v in box.extents)
    assert x0 >= 0 and y0 >= 0 and x1 <= w + 0.01 and y1 <= h + 0.01, (box.extents, w, h)
    room = {"left": x0, "bottom": y0, "right": w - x1, "top": h - y1}
    assert max(room.values()) <= LOOSE, room
    panels: dict[int, list[float]] = {}
    for ax in fig.axes:
        with svg.styled():
            drawn = ax.get_tightbbox(renderer)
        assert drawn is not None
        box = drawn.transformed(fig.dpi_scale_trans.inverted())  # display -> inches
        spec = ax.get_subplotspec()
        assert spec is not None
        lo, hi = panels.get(spec.colspan.start, [box.x0 * 72.0, box.x1 * 72.0])
        panels[spec.colspan.start] = [min(lo, box.x0 * 72.0), max(hi, box.x1 * 72.0)]
    for (_, a), (_, b) in pairwise(sorted(panels.items())):
        assert a[1] + PAD <= b[0], (a, b)  # points


def one_chart(drawn: list[Figure], make: Callable[[], Any]) -> Figure:
    drawn.clear()
    make()
    assert len(drawn) == 1
    return drawn[0]


def _days(start: dt.date, n: int, types: tuple[str, ...]) -> list[dict[str, Any]]:
    return [
        {"day": start + dt.timedelta(days=i), "run_type": t, "runs": 10_000 * (i % 7 + 1)}
        for i in range(n)
        for t in types
    ]


@pytest.mark.parametrize(
    "rows",
    [
        _days(dt.date(2026, 1, 1), 3, ("backtest",)),  # a few labelled days
        _days(dt.date(2026, 1, 1), 90, ("backtest", "optimize")),  # a date axis by day
        _days(dt.date(2023, 1, 1), 900, ("a-very-long-run-type-name-indeed", "x")),  # by week
    ],
    ids=["3-days", "90-days", "900-days"],
)
def test_runs_over_time_fits(drawn: list[Figure], rows: list[dict[str, Any]]) -> None:
    assert_fits(one_chart(drawn, lambda: charts.runs_over_time(rows)))


@pytest.mark.parametrize("n", [1, 15])
def test_leaderboard_fits(drawn: list[Figure], n: int) -> None:
    names = ["<script>alert(1)</script>", "W" * 40, *(f"caller_{i}" for i in range(n))]
    rows = [
        {"caller_name": name, "hit_2x_rate": 0.4, "hit_3x_rate": 0.2, "hit_4x_rate": 0.1}
        for name in names[:n]
    ]
    assert_fits(one_chart(drawn, lambda: charts.leaderboard(rows)))


@pytest.mark.parametrize("scale", [1.0, 1e6])
def test_policies_fit(drawn: list[Figure], scale: float) -> None:
    rows = [
        {
            "policy_id": f"{'M' * (i % 30)}sl{i}",
            "avg_return_bps": (i - 15) * 37.0 * scale,
            "win_rate": 0.5,
            "stop_out_rate": None if i == 3 else 0.2,
        }
        for i in range(30)
    ]
    assert_fits(one_chart(drawn, lambda: charts.policies(rows)))


def test_frontiers_fit(drawn: list[Figure]) -> None:
    rng = np.random.default_rng(5)
    rows = [
        {
            "kind": kind,
            "caller_name": f"c{i % 4}",
            "objective_score": float(rng.normal(0, 1e5 if kind == "policy" else 40)),
            "stop_out_rate": float(rng.uniform()),
            "pareto": i % 9 == 0,
        }
        for kind in ("policy", "v1_baseline")
        for i in range(200)
    ]
    assert_fits(one_chart(drawn, lambda: charts.frontiers(rows)))


def test_frontiers_join_only_the_best_callers_pareto_points(drawn: list[Figure]) -> None:
    """Twelve callers, each with a Pareto set: one line per panel, through the Pareto points of
    the caller that scores highest, in stop-out order (all twelve joined crossed each other)."""
    rng = np.random.default_rng(7)
    rows: list[dict[str, Any]] = [
        {
            "kind": "policy",
            "caller_name": f"caller{c:02d}",
            "objective_score": float(rng.normal(100.0 * c, 30.0)),
            "stop_out_rate": float(rng.uniform()),
            "pareto": i % 3 == 0,
        }
        for c in range(12)
        for i in range(12)
    ]
    charts.frontiers(rows)
    (ax,) = drawn[0].axes
    joined = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-"]
    assert len(joined) == 1 and joined[0].get_label() == "best caller: caller11"
    best = sorted(
        (r["stop_out_rate"], r["objective_score"])
        for r in rows
        if r["caller_name"] == "caller11" and r["pareto"]
    )
    xs, ys = np.asarray(joined[0].get_xdata()), np.asarray(joined[0].get_ydata())
    assert list(zip(xs.tolist(), ys.tolist(), strict=True)) == best
    assert max(r["objective_score"] for r in rows if r["caller_name"] == "caller11") == max(
        r["objective_score"] for r in rows
    )


def test_the_all_calls_frontier_is_joined_only_without_callers(drawn: list[Figure]) -> None:
    """The V1 baseline's all-calls rows (no caller) are not compared with single callers, even
    when they score higher; alone, they are joined as "frontier, all calls". A NaN score is no
    score."""

    def row(caller: str | None, score: float, stop: float) -> dict[str, Any]:
        return {
            "kind": "v1",
            "caller_name": caller,
            "objective_score": score,
            "stop_out_rate": stop,
            "pareto": True,
        }

    both = [row(None, 900.0, 0.1), row(None, 950.0, 0.3), row("a", 500.0, 0.2)]
    both += [row("b", 400.0, 0.1), row("b", float("nan"), 0.0), row("b", 600.0, 0.4)]
    charts.frontiers(both)
    charts.frontiers([row(None, 900.0, 0.1), row(None, 950.0, 0.3)])
    labels = [
        [ln.get_label() for ln in fig.axes[0].get_lines() if ln.get_linestyle() == "-"]
        for fig in drawn
    ]
    assert labels == [["best caller: b"], ["frontier, all calls"]]
    (joined,) = [ln for ln in drawn[0].axes[0].get_lines() if ln.get_linestyle() == "-"]
    assert np.asarray(joined.get_xdata()).tolist() == [0.1, 0.4]  # b's, without the NaN


@pytest.mark.parametrize(
    ("lo", "hi", "count"),
    [(-12_000.0, 0.0, 3_000_000), (0.0, 1e-3, 7), (1e9, 1e9 + 40.0, 10)],  # 1e6 / small / offset
)
def test_histograms_fit(drawn: list[Figure], lo: float, hi: float, count: int) -> None:
    edges = list(np.linspace(lo, hi, 41))
    counts = [count * (1 + i % 5) for i in range(40)]
    hist = Histogram(edges, counts, sum(counts))
    assert_fits(one_chart(drawn, lambda: charts.histogram(hist, "h", "max_drawdown_bps per run")))


def test_verdicts_fit(drawn: list[Figure]) -> None:
    rows = [{"verdict": v, "n": n} for v, n in (("no change", 12_345_678), ("regression", 3))]
    assert_fits(one_chart(drawn, lambda: charts.verdicts(rows)))


@pytest.mark.parametrize(("calls", "days"), [(12, 2), (10_000, 900)])
def test_tearsheet_charts_fit(drawn: list[Figure], calls: int, days: int) -> None:
    rng = np.random.default_rng(calls)
    ts = 1_735_689_600_000 + np.sort(rng.integers(0, days * 86_400_000, calls))
    tearsheet.build(Tearsheet("run", None, ts, rng.normal(20, 9_000, calls)))
    assert len(drawn) == 4
    for fig in drawn:
        assert_fits(fig)


@pytest.mark.parametrize(
    "counts",
    [[90, 40, 12, 5, 2, 1], [1, 2, 5, 12, 40, 90], [3, 50, 50, 50, 50, 3]],
    ids=["left-heavy", "right-heavy (drawdowns)", "flat"],
)
def test_the_histogram_legend_covers_no_bar(drawn: list[Figure], counts: list[int]) -> None:
    edges = [float(-600 + 100 * i) for i in range(len(counts) + 1)]
    charts.histogram(Histogram(edges, counts, sum(counts)), "h", "max drawdown (bps)")
    [fig] = drawn
    fig.set_dpi(72.0)
    w, h = fig.get_size_inches() * 72.0
    renderer = RendererSVG(w, h, io.StringIO())
    ax = fig.axes[0]
    drawn_legend = ax.get_legend()
    assert drawn_legend is not None
    legend = drawn_legend.get_window_extent(renderer)
    for left, right, count in zip(edges, edges[1:], counts, strict=False):
        (x0, _), (x1, top) = ax.transData.transform([(left, 0), (right, count)])
        if x1 > legend.x0 and x0 < legend.x1:  # a bar under the legend's width
            assert top < legend.y0, (left, count)


def test_a_name_with_dollar_signs_is_drawn_as_written() -> None:
    """matplotlib reads text between two ``$`` as a formula unless told not to."""
    name = "$PEPE and $WIF"
    page = charts.leaderboard(
        [{"caller_name": name, "hit_2x_rate": 0.4, "hit_3x_rate": 0.2, "hit_4x_rate": 0.1}]
    )
    assert f">{name}</text>" in page  # one text element, as written (a formula is tspans)
