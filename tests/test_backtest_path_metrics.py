"""Path-only backtest metrics (backtest.pathonly.path_metrics) on hand-made paths."""

from __future__ import annotations

import pytest
from backtest_inputs import C, M

from quantbot_bus.backtest.pathonly import path_metrics

ALERT = 1_000_000
PATH_A = [
    C(ALERT - M, 5.0, 10.0, 0.01, 5.0, 9.0),  # before the alert: must be ignored
    C(ALERT + 0 * M, 1.0, 1.2, 0.8, 1.1, 0.0),  # no trades yet
    C(ALERT + 1 * M, 1.1, 1.5, 0.7, 1.4, 100.0),
    C(ALERT + 2 * M, 1.4, 2.5, 1.3, 2.4, 500.0),
    C(ALERT + 3 * M, 2.4, 3.2, 2.0, 2.2, 300.0),
    C(ALERT + 4 * M, 2.2, 2.3, 0.5, 0.6, 50.0),
]


def test_path_metrics_by_hand() -> None:
    m = path_metrics(1.0, PATH_A, ALERT)
    # p0 = 1.0. First high >= 2.0 is 2.5 in the candle at ALERT+2m -> t_2x = 120 000 ms.
    assert m["hit_2x"] is True and m["t_2x_ms"] == 120_000
    # First high >= 3.0 is 3.2 at ALERT+3m -> t_3x = 180 000 ms.
    assert m["hit_3x"] is True and m["t_3x_ms"] == 180_000
    # The highest high is 3.2 < 4.0: no 4x; the pre-alert 10.0 does not count.
    assert m["hit_4x"] is False and m["t_4x_ms"] is None
    assert m["peak_multiple"] == pytest.approx(3.2)
    # Lowest low after the alert: 0.5 -> (0.5 / 1.0 - 1) * 10 000 = -5 000 bps.
    assert m["dd_bps"] == pytest.approx(-5_000)
    # Lows before the 2x candle: 0.8, 0.7 -> (0.7 - 1) * 10 000 = -3 000 bps.
    assert m["dd_to_2x_bps"] == pytest.approx(-3_000)
    # First candle with volume > 0 opens at ALERT+1m.
    assert m["alert_to_activity_ms"] == 60_000


def test_path_metrics_alert_inside_a_candle() -> None:
    alert = ALERT + 30_000  # mid-candle: trading starts with the next candle, p0 = its open 1.1
    m = path_metrics(1.1, PATH_A, alert)
    # 2x = 2.2: first reached by the 2.5 high at ALERT+2m -> 120 000 - 30 000 = 90 000 ms.
    assert m["hit_2x"] is True and m["t_2x_ms"] == 90_000
    # 3x = 3.3 > 3.2: never.
    assert m["hit_3x"] is False and m["t_3x_ms"] is None
    assert m["peak_multiple"] == pytest.approx(3.2 / 1.1)  # 2.9090...
    assert m["dd_bps"] == pytest.approx((0.5 / 1.1 - 1) * 10_000)  # -5 454.5...
    assert m["dd_to_2x_bps"] == pytest.approx((0.7 / 1.1 - 1) * 10_000)  # -3 636.4...
    assert m["alert_to_activity_ms"] == 30_000  # the ALERT+1m candle has volume 100


def test_path_metrics_first_candle_doubles_and_never_dips() -> None:
    path = [C(0, 1.0, 2.0, 1.0, 1.9), C(M, 1.9, 4.5, 1.5, 4.0)]
    m = path_metrics(1.0, path, 0)
    # The high 2.0 is exactly 2x at t = 0; no candle before it, so dd_to_2x = 0.
    assert (m["hit_2x"], m["t_2x_ms"], m["dd_to_2x_bps"]) == (True, 0, 0.0)
    # 3x and 4x (4.5) in the second candle.
    assert (m["t_3x_ms"], m["t_4x_ms"]) == (M, M)
    assert m["dd_bps"] == 0.0  # the lowest low is p0 itself
    assert m["peak_multiple"] == pytest.approx(4.5)


def test_path_metrics_never_doubles_and_never_trades() -> None:
    path = [C(0, 1.0, 1.0, 1.0, 1.0, 0.0), C(M, 1.0, 1.9, 0.05, 0.1, 0.0)]
    m = path_metrics(1.0, path, 0)
    assert m["hit_2x"] is False and m["t_2x_ms"] is None and m["dd_to_2x_bps"] is None
    assert m["dd_bps"] == pytest.approx(-9_500)  # (0.05 - 1) * 10 000
    assert m["alert_to_activity_ms"] is None


def test_path_metrics_bad_input() -> None:
    with pytest.raises(ValueError, match="p0"):
        path_metrics(0.0, PATH_A, ALERT)
    with pytest.raises(ValueError, match="no candle"):
        path_metrics(1.0, PATH_A, ALERT + 10 * M)
