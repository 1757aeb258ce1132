"""Candle intervals (their names, in the seed system's spelling, and lengths in milliseconds)
and how long after its alert a call is followed."""

from __future__ import annotations

#: Every interval a user's candles may have (``--calls-from-duckdb``).
CANDLE_INTERVAL_MS = {
    "1s": 1_000,
    "15s": 15_000,
    "1m": 60_000,
    "5m": 300_000,
    "15m": 900_000,
    "1h": 3_600_000,
    "4h": 14_400_000,
    "1d": 86_400_000,
}
#: The intervals the synthetic market draws its candle paths at.
SYNTHETIC_INTERVALS = ("1m", "5m")
#: Minutes of candles after each alert a backtest follows by default (``--horizon``).
DEFAULT_HORIZON_MINUTES = 720
