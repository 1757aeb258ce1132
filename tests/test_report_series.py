"""The dashboard's tearsheet series by hand: cumulative return, underwater, monthly sums,
rolling Sharpe, and the downsampling that keeps a 10,000-call run's charts small."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from quantbot_bus.report import series
from quantbot_bus.report.data import Tearsheet
from quantbot_bus.report.tearsheet import build


def test_series_by_hand() -> None:
    r = np.array([100.0, -300.0, 50.0, 400.0, -100.0])
    path = series.cumulative(r)
    assert path.tolist() == [100.0, -200.0, -150.0, 250.0, 150.0]
    # peak: 100, 100, 100, 250, 250 -> below it: 0, -300, -250, 0, -100
    assert series.underwater(path).tolist() == [0.0, -300.0, -250.0, 0.0, -100.0]
    # a first loss counts from the start (peak 0)
    assert series.underwater(np.array([-5.0, -2.0])).tolist() == [-5.0, -2.0]
    jan, mar = dt.datetime(2025, 1, 15, tzinfo=dt.UTC), dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    ms = np.array([int(jan.timestamp() * 1000)] * 2 + [int(mar.timestamp() * 1000)] * 3)
    m = series.monthly(ms, r)
    assert m.years == [2025, 2026]
    assert m.values[0, 0] == -200.0 and m.values[1, 2] == 350.0
    assert np.isnan(m.values[0, 1]) and np.isfinite(m.values).sum() == 2


def test_rolling_sharpe_matches_the_definition() -> None:
    rng = np.random.default_rng(7)
    r = rng.normal(30, 700, 300)
    w = series.rolling_window(len(r))
    assert w == 50 and series.rolling_window(40) == 10 and series.rolling_window(9) == 0
    got = series.rolling_sharpe(r, w)
    want = [r[i : i + w].mean() / r[i : i + w].std(ddof=1) for i in range(len(r) - w + 1)]
    assert np.allclose(got, want)
    flat = series.rolling_sharpe(np.ones(20), 5)
    assert np.isnan(flat).all()


def test_a_10k_call_run_gives_a_small_tearsheet() -> None:
    rng = np.random.default_rng(3)
    n = 10_000
    ts = 1_735_689_600_000 + np.sort(rng.integers(0, 400 * 86_400_000, n))
    r = rng.normal(20, 900, n)
    x, y = series.downsample(np.arange(n), series.cumulative(r))
    assert len(x) <= series.MAX_POINTS
    path = series.cumulative(r)  # every extreme survives the downsampling
    assert y.max() == path.max() and y.min() == path.min()
    view = build(Tearsheet("big", None, ts, r))
    size = sum(len(s) for s in view.charts.values())
    assert size < 100_000, size  # four charts; one 10k-point SVG line alone is ~250 KB
    assert view.stats["calls"] == n and view.stats["total_return_bps"] == pytest.approx(r.sum())
    # 14 months of calls: a two-row heatmap
    assert ">2025<" in view.charts["monthly"] and ">2026<" in view.charts["monthly"]
