"""What the backtest's metric, market and run tests (tests/test_backtest_path_metrics.py,
_policy_exits, _market, _runs) are built from: the market's date range, one minute in ms, and a
short way to write a candle."""

from __future__ import annotations

import datetime as dt

from quantbot_bus.backtest.market import Candle

D_FROM, D_TO = dt.date(2026, 1, 2), dt.date(2026, 1, 8)
M = 60_000  # one minute in ms


def C(ts: int, o: float, h: float, lo: float, c: float, v: float = 1.0) -> Candle:
    """A candle opening at ``ts`` (ms): open, high, low, close and volume."""
    return Candle(ts, o, h, lo, c, v)
