"""The synthetic market (backtest.market.generate_calls): deterministic per seed, fat-tailed,
its 5m candles the 1m path aggregated."""

from __future__ import annotations

import datetime as dt

from backtest_inputs import D_FROM, D_TO, M

from quantbot_bus.backtest.market import generate_calls
from quantbot_bus.backtest.pathonly import path_metrics


def test_market_is_deterministic_per_seed() -> None:
    a = list(generate_calls(7, 25, "1m", D_FROM, D_TO))
    b = list(generate_calls(7, 25, "1m", D_FROM, D_TO))
    c = list(generate_calls(8, 25, "1m", D_FROM, D_TO))
    assert a == b
    assert a != c
    # A call's path does not depend on how many calls are generated.
    assert list(generate_calls(7, 5, "1m", D_FROM, D_TO)) == a[:5]


def test_market_has_jumps_rugs_and_quiet_starts_at_default_settings() -> None:
    calls = list(generate_calls(0, 200, "1m", D_FROM, D_TO))
    metrics = []
    for call in calls:
        path = call.after_alert()
        metrics.append(path_metrics(path[0].open, path, call.alert_ts_ms))
    peaks = [m["peak_multiple"] for m in metrics]
    assert sum(p >= 4 for p in peaks) >= 5  # moonshots
    assert sum(m["dd_bps"] <= -9_000 for m in metrics) >= 5  # rugs: -90 % or worse
    assert sum(p < 1.2 for p in peaks) >= 20  # and plenty of duds
    # Fat tails: some single 1m candle moves more than 50 % close to close.
    big_moves = sum(
        any(
            abs(b.close / a.close - 1) > 0.5 for a, b in zip(c.candles, c.candles[1:], strict=False)
        )
        for c in calls
    )
    assert big_moves >= 10
    assert sum((m["alert_to_activity_ms"] or 0) > 2 * M for m in metrics) >= 10  # quiet starts
    start = dt.datetime(2026, 1, 2, tzinfo=dt.UTC).timestamp() * 1000
    end = dt.datetime(2026, 1, 9, tzinfo=dt.UTC).timestamp() * 1000
    assert all(start <= c.alert_ts_ms < end for c in calls)
    assert len({c.caller_name for c in calls}) == 12
    assert all(c.chain in ("solana", "base", "ethereum") for c in calls)


def test_5m_candles_are_the_1m_path_aggregated() -> None:
    (one,) = generate_calls(3, 1, "1m", D_FROM, D_TO)
    (five,) = generate_calls(3, 1, "5m", D_FROM, D_TO)
    assert len(one.candles) == 5 * len(five.candles)
    for k, c5 in enumerate(five.candles):
        group = one.candles[5 * k : 5 * k + 5]
        assert c5.ts_ms == group[0].ts_ms and c5.ts_ms % (5 * M) == 0
        assert (c5.open, c5.close) == (group[0].open, group[-1].close)
        assert c5.high == max(c.high for c in group) and c5.low == min(c.low for c in group)
