"""The user's inputs of the ``--calls-from-duckdb`` backtests: the rows of a DuckDB file of
calls (``canon.alerts_std`` or the older ``user_calls_d``) and of 5m/1m candles (a table there, or a
folder of daily Parquet files), written as real files; the calls and candle paths a run must hold,
computed here from those rows, not by the code under test; and the CLI invocation."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from click.testing import CliRunner

from quantbot_bus.cli import main

DAY_MS = 86_400_000
FIVE_MIN = 300_000
HORIZON_MS = 720 * 60_000  # the library's default horizon
T0 = 1_767_355_200_000  # 2026-01-02 12:00 UTC


@dataclass(frozen=True)
class Alert:
    mint: str
    ts: int
    raw: str | None
    norm: str | None
    chain: str | None


# Rows of canon.alerts_std (one duplicate), newest last here; the code sorts them.
ALERTS = [
    Alert("TOKA", T0 + 90_000, "Alice", "alice", "solana"),  # mid-candle: entry at T0 + 5 min
    Alert("TOKB", T0 + 3_600_000, "Bob", None, None),  # no normalised name, no chain
    Alert("TOKB", T0 + 3_600_000, "Bob", None, None),  # the same call again
    Alert("TOKN", T0 + 7_260_000, "Alice", "alice", "solana"),  # no candle after the alert
    Alert("TOKX", T0 + 100, "Alice", "alice", "solana"),  # excluded token
    Alert(
        "TOKA", T0 + 35 * 3_600_000, "Carol", "carol", "solana"
    ),  # 2026-01-03 23:00: crosses midnight
    Alert("TOKA", T0 - 3 * DAY_MS, "Alice", "alice", "solana"),  # 2025-12-30: before --from
]
EXCLUDED = {"TOKX"}


def _candles() -> list[dict[str, Any]]:
    """5m candles of TOKA, TOKB, TOKX and TOKN around their alerts (each a distinct path), and 1m
    candles of TOKA that a 5m run must ignore."""
    rows: list[dict[str, Any]] = []

    def path(
        token: str,
        start: int,
        n: int,
        base: float,
        spike_at: tuple[int, ...],
        step: int = FIVE_MIN,
        interval: str = "5m",
    ) -> None:
        for i in range(n):
            o = base * (1.0 + 0.013 * ((i * 7) % 11)) * (0.97 if i % 3 == 0 else 1.02)
            c = o * (1.01 if i % 2 else 0.985)
            h = max(o, c) * (3.5 + i / 100 if i in spike_at else 1.04)
            low = min(o, c) * 0.95
            ts = start + i * step
            rows.append(
                dict(
                    token_address=token,
                    chain="solana",
                    ts_ms=ts,
                    interval=interval,
                    open=o,
                    high=h,
                    low=low,
                    close=c,
                    volume=10.0 + i,
                )
            )

    # TOKA's second spike (candle 150) opens after its call's horizon; candle 0 before the alert
    path("TOKA", T0 - 2 * FIVE_MIN, 160, 0.001, spike_at=(0, 40, 150))
    path("TOKB", T0 + 3_600_000 - FIVE_MIN, 160, 0.5, spike_at=(7,))
    path("TOKX", T0 - FIVE_MIN, 160, 2.0, spike_at=(3,))
    # TOKN traded only before its alert (the last candle holds the alert): nothing to trade on
    path("TOKN", T0 + 25 * 60_000, 20, 1.0, spike_at=(2,))
    # Carol's call at 23:00 on 2026-01-03: the spike falls on 2026-01-04 (a second day file)
    path("TOKA", T0 + 35 * 3_600_000 - FIVE_MIN, 160, 0.004, spike_at=(100,))
    path("TOKA", T0 - 60_000, 800, 9.0, spike_at=(5,), step=60_000, interval="1m")
    # a second copy of TOKB's entry candle, with less volume: the first copy is the one used
    (entry,) = [r for r in rows if r["token_address"] == "TOKB" and r["ts_ms"] == T0 + 3_600_000]
    rows.append({**entry, "open": entry["open"] * 2, "high": entry["high"] * 9, "volume": 1.0})
    return rows


CANDLES = _candles()


def _name(a: Alert) -> str:
    return a.norm or a.raw or "unknown"


def _ms(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)


def expected_calls(
    date_from: dt.date | None = None, date_to: dt.date | None = None
) -> list[tuple[str, str, int, str, str]]:
    """(call_id, mint, alert_ts_ms, caller_name, chain) of the calls read, newest first."""
    lo = -1 if date_from is None else _ms(date_from)
    hi = 2**62 if date_to is None else _ms(date_to + dt.timedelta(days=1))
    keys = {
        (a.mint, a.ts, _name(a), a.chain or "solana")
        for a in ALERTS
        if a.mint not in EXCLUDED and lo <= a.ts < hi
    }
    ordered = sorted(keys, key=lambda k: (-k[1], k[0], k[2]))
    return [
        (f"call_{m}_{ts}_{i}", m, ts, name, chain) for i, (m, ts, name, chain) in enumerate(ordered)
    ]


def expected_path(mint: str, alert_ts: int) -> list[dict[str, Any]]:
    """The 5m candles a call trades on: opening in [alert, alert + horizon); of two with the same
    open time, the one with more volume."""
    best: dict[int, dict[str, Any]] = {}
    for r in CANDLES:
        if r["token_address"] == mint and r["interval"] == "5m":
            if r["ts_ms"] not in best or r["volume"] > best[r["ts_ms"]]["volume"]:
                best[r["ts_ms"]] = r
    return sorted(
        (r for ts, r in best.items() if alert_ts <= ts < alert_ts + HORIZON_MS),
        key=lambda r: r["ts_ms"],
    )


def _candles_table(ts_kind: str = "ms") -> pa.Table:
    def ts(ms: int) -> Any:
        if ts_kind == "s":
            return ms // 1000
        if ts_kind == "us":
            return ms * 1000
        if ts_kind in ("timestamp", "timestamptz"):
            return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
        return ms

    ts_type = {"timestamp": pa.timestamp("ms"), "timestamptz": pa.timestamp("ms", tz="UTC")}.get(
        ts_kind, pa.int64()
    )
    stamps = [ts(r["ts_ms"]) for r in CANDLES]
    if ts_kind == "timestamp":
        stamps = [s.replace(tzinfo=None) for s in stamps]
    cols: dict[str, Any] = {
        "token_address": [r["token_address"] for r in CANDLES],
        "chain": [r["chain"] for r in CANDLES],
        "timestamp": pa.array(stamps, ts_type),
        "interval": [r["interval"] for r in CANDLES],
    }
    for k in ("open", "high", "low", "close", "volume"):
        cols[k] = pa.array([r[k] for r in CANDLES], pa.float64())
    return pa.table(cols)


def make_canon_db(path: Path, *, candles: pa.Table | None = None) -> Path:
    """A DuckDB file like the user's: canon.alerts_std a view over a table in schema canon, the
    exclusions table and (optionally) a candles table."""
    con = duckdb.connect(str(path))
    try:
        con.execute("CREATE SCHEMA canon")
        con.execute(
            "CREATE TABLE canon.alerts_raw (alert_id VARCHAR, alert_ts_ms BIGINT, alert_kind VARCHAR, mint VARCHAR, chain VARCHAR, caller_raw_name VARCHAR, caller_id VARCHAR, caller_name_norm VARCHAR, alert_text VARCHAR)"
        )
        for i, a in enumerate(ALERTS):
            con.execute(
                "INSERT INTO canon.alerts_raw VALUES (?, ?, 'human', ?, ?, ?, ?, ?, 'gm')",
                [f"a{i}", a.ts, a.mint, a.chain, a.raw, f"id-{a.raw}", a.norm],
            )
        con.execute("CREATE VIEW canon.alerts_std AS SELECT * FROM canon.alerts_raw")
        con.execute("CREATE TABLE ohlcv_exclusions_d (token_address VARCHAR, reason VARCHAR)")
        con.execute("INSERT INTO ohlcv_exclusions_d VALUES ('TOKX', 'honeypot'), (NULL, 'junk')")
        if candles is not None:
            con.register("candles_arrow", candles)
            con.execute("CREATE TABLE ohlcv_candles AS SELECT * FROM candles_arrow")
    finally:
        con.close()
    return path


def make_legacy_db(path: Path) -> Path:
    """An older file: only user_calls_d (no chain column)."""
    con = duckdb.connect(str(path))
    try:
        con.execute(
            "CREATE TABLE user_calls_d (call_ts_ms BIGINT, call_datetime TIMESTAMP, caller_name VARCHAR, caller_id VARCHAR, mint VARCHAR, ticker VARCHAR, mcap_usd DOUBLE, price_usd DOUBLE)"
        )
        for a in ALERTS:
            con.execute(
                "INSERT INTO user_calls_d VALUES (?, make_timestamp(? * 1000), ?, 'x', ?, 'T', 1e5, 1.0)",
                [a.ts, a.ts, _name(a), a.mint],
            )
    finally:
        con.close()
    return path


def make_candles_dir(path: Path) -> Path:
    """Daily ohlcv_candles_YYYY-MM-DD.parquet files, timestamps in epoch seconds."""
    path.mkdir()
    table = _candles_table("s")
    days = pa.array([(t * 1000) // DAY_MS for t in table.column("timestamp").to_pylist()])
    for day in set(days.to_pylist()):
        name = (dt.date(1970, 1, 1) + dt.timedelta(days=day)).isoformat()
        mask = pc.equal(days, day)
        pq.write_table(table.filter(mask), path / f"ohlcv_candles_{name}.parquet")
    return path


def _cli(root: Path, *args: str, strategy: str = "path-only") -> Any:
    argv = [
        "backtest",
        "run",
        "--strategy",
        strategy,
        "--interval",
        "5m",
        "--root",
        str(root),
        *args,
    ]
    return CliRunner().invoke(main, argv)
