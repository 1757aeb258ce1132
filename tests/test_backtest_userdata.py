"""`backtest run --calls-from-duckdb`: real DuckDB files and Parquet candles in, a registered run out.

The expected values (which calls, their ids, entry prices, peaks) are computed here from the rows
the test writes, not by the code under test.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from builders import live_run_ids, snapshot_query, sync
from click.testing import CliRunner

from quantbot_bus.backtest.userdata import run_user_backtest
from quantbot_bus.cli import main
from quantbot_bus.config import Config
from quantbot_bus.contract import Valid, validate_run_dir
from quantbot_bus.errors import BusError, NotFoundError

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


@pytest.fixture(autouse=True)
def _isolated_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("QUANTBOT_BUS_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def canon_db(tmp_path: Path) -> Path:
    return make_canon_db(tmp_path / "tele.duckdb", candles=_candles_table("ms"))


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


def _only_run(root: Path) -> Path:
    (run_dir,) = (root / "backtest").iterdir()
    return run_dir


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_path_metrics(run_dir: Path, expected: list[tuple[str, str, int, str, str]]) -> None:
    rows = pq.read_table(run_dir / "backtest_call_path_metrics.parquet").to_pylist()
    with_candles = [e for e in expected if expected_path(e[1], e[2])]
    assert sorted(
        (r["call_id"], r["mint"], r["alert_ts_ms"], r["caller_name"], r["chain"]) for r in rows
    ) == sorted(with_candles)
    for r in rows:
        path = expected_path(r["mint"], r["alert_ts_ms"])
        assert r["p0"] == pytest.approx(path[0]["open"], rel=1e-12)
        assert r["peak_multiple"] == pytest.approx(
            max(c["high"] for c in path) / path[0]["open"], rel=1e-12
        )
        assert r["interval"] == "5m"


def test_cli_canon_file_with_candles_table(bus: Config, canon_db: Path) -> None:
    before = _sha(canon_db)
    result = _cli(
        bus.root,
        "--calls-from-duckdb",
        str(canon_db),
        "--candles",
        "ohlcv_candles",
        "--from",
        "2026-01-02",
    )
    assert result.exit_code == 0, result.output
    run_dir = _only_run(bus.root)
    assert result.stdout == f"{run_dir.name}\t{run_dir}\n"
    assert "read 4 calls from tele.duckdb:canon.alerts_std; 3 have 5m candles" in result.stderr
    assert "calls without candles: 1 (1 tokens: TOKN); left out of the run" in result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    (missing,) = [e for e in events if e["event"] == "backtest.calls_without_candles"]
    assert (missing["calls"], missing["first_tokens"]) == (1, ["TOKN"])

    expected = expected_calls(dt.date(2026, 1, 2))
    assert [e[1] for e in expected] == ["TOKA", "TOKN", "TOKB", "TOKA"]
    assert expected[2][3:] == ("Bob", "solana")  # raw name, default chain
    _check_path_metrics(run_dir, expected)
    # Carol's path crosses midnight: its spike (candle 100) lies on the next day
    carol = expected_path("TOKA", T0 + 35 * 3_600_000)
    assert dt.datetime.fromtimestamp(carol[-1]["ts_ms"] / 1000, dt.UTC).date() == dt.date(
        2026, 1, 4
    )

    meta = json.loads((run_dir / "metadata.json").read_text())
    assert meta["params"] == {
        **meta["params"],
        "market": "user-duckdb",
        "calls_source": "tele.duckdb:canon.alerts_std",
        "candles_source": "tele.duckdb:ohlcv_candles",
        "date_from": "2026-01-02",
        "date_to": None,
        "callers": [],
        "calls": 3,
        "calls_read": 4,
        "calls_without_candles": 1,
    }
    assert isinstance(validate_run_dir(run_dir, bus.root), Valid)
    assert _sha(canon_db) == before  # the user's file is untouched

    sync(bus)
    assert live_run_ids(bus) == {run_dir.name}
    (params,) = snapshot_query(
        bus, "SELECT params FROM catalog.runs_d WHERE run_id = ?", [run_dir.name]
    )[0]
    assert json.loads(params)["calls_source"] == "tele.duckdb:canon.alerts_std"


def test_cli_policy_entry_prices_from_candles_dir(bus: Config, tmp_path: Path) -> None:
    db = make_canon_db(tmp_path / "calls.duckdb")  # no candles table: they come from the folder
    candles = make_candles_dir(tmp_path / "candles")
    result = _cli(
        bus.root,
        "--calls-from-duckdb",
        str(db),
        "--candles-dir",
        str(candles),
        "--from",
        "2026-01-02",
        "--to",
        "2026-01-03",
        strategy="policy",
    )
    assert result.exit_code == 0, result.output
    run_dir = _only_run(bus.root)
    rows = pq.read_table(run_dir / "backtest_call_results.parquet").to_pylist()
    expected = expected_calls(dt.date(2026, 1, 2), dt.date(2026, 1, 3))
    expected = [e for e in expected if expected_path(e[1], e[2])]
    assert len(expected) == 3
    assert sorted(r["call_id"] for r in rows) == sorted(e[0] for e in expected)
    for r in rows:
        path = expected_path(r["mint"], int(r["call_id"].split("_")[2]))
        assert r["entry_px"] == pytest.approx(path[0]["open"], rel=1e-12)
        assert r["entry_ts_ms"] == path[0]["ts_ms"]
    policy_rows = pq.read_table(run_dir / "backtest_policy_results.parquet")
    assert policy_rows.num_rows == 27 * len(expected)
    meta = json.loads((run_dir / "metadata.json").read_text())
    assert meta["params"]["candles_source"] == "candles/ohlcv_candles_*.parquet"
    assert meta["params"]["date_to"] == "2026-01-03"
    sync(bus)
    assert live_run_ids(bus) == {run_dir.name}


def test_library_legacy_file_and_caller_filter(bus: Config, tmp_path: Path) -> None:
    db = make_legacy_db(tmp_path / "old.duckdb")
    candles = make_candles_dir(tmp_path / "candles")
    result = run_user_backtest(
        "optimize", "5m", db, bus.root, candles_dir=candles, callers=("alice", "Bob")
    )
    # user_calls_d: no exclusions table here, so TOKX is a call; no --from, so 2025-12-30 too
    assert result.calls_source == "old.duckdb:user_calls_d"
    keys = {(a.mint, a.ts, _name(a)) for a in ALERTS if _name(a) in ("alice", "Bob")}
    assert result.calls_read == len(keys) == 5
    # TOKN has no candles, nor has TOKA on 2025-12-30 (no day file): newest call first
    assert result.tokens_without_candles == ("TOKN", "TOKA")
    assert result.calls_with_candles == 3  # TOKX, TOKB, TOKA at T0
    frontier = pq.read_table(result.run.run_dir / "policy_frontier.parquet")
    assert set(frontier.column("caller_name").to_pylist()) == {"alice", "Bob"}
    (summary,) = pq.read_table(result.run.run_dir / "summary.parquet").to_pylist()
    assert (summary["calls"], summary["callers"]) == (3, 2)
    assert result.run.metrics["calls"] == 3
    sync(bus)
    assert live_run_ids(bus) == {result.run.run_id}


@pytest.mark.parametrize("ts_kind", ["s", "ms", "us", "timestamp", "timestamptz"])
def test_timestamp_encodings(tmp_path: Path, ts_kind: str) -> None:
    db = make_canon_db(tmp_path / "t.duckdb", candles=_candles_table(ts_kind))
    result = run_user_backtest(
        "path-only",
        "5m",
        db,
        tmp_path / "art",
        candles_table="main.ohlcv_candles",
        date_from=dt.date(2026, 1, 2),
        date_to=dt.date(2026, 1, 2),
    )
    expected = expected_calls(dt.date(2026, 1, 2), dt.date(2026, 1, 2))
    assert len(expected) == 3
    _check_path_metrics(result.run.run_dir, expected)
    assert result.calls_with_candles == 2


def _dirs(tmp_path: Path) -> Iterator[Path]:
    yield from (tmp_path / "artifacts").glob("backtest/*")


@pytest.mark.parametrize(
    ("make", "args", "code", "message"),
    [
        (None, ["--candles", "ohlcv_candles"], 5, "DuckDB file {tmp}/absent.duckdb does not exist"),
        (
            "empty",
            ["--candles", "ohlcv_candles"],
            5,
            "empty.duckdb has neither the view canon.alerts_std nor the table user_calls_d",
        ),
        ("canon", ["--candles", "nope"], 5, "candles table nope does not exist in f.duckdb"),
        (
            "no_volume",
            ["--candles", "ohlcv_candles"],
            1,
            "candles table ohlcv_candles in f.duckdb lacks column(s) volume",
        ),
        (
            "canon",
            ["--candles-dir", "{tmp}/empty_dir"],
            1,
            "none of the 5 calls in f.duckdb:canon.alerts_std has a 5m candle in empty_dir/ohlcv_candles_*.parquet",
        ),
        (
            "canon",
            ["--candles-dir", "{tmp}/absent_dir"],
            5,
            "candles directory {tmp}/absent_dir does not exist",
        ),
        (
            "canon",
            ["--candles", "ohlcv_candles", "--caller", "nobody"],
            1,
            "no call in f.duckdb:canon.alerts_std matches the filters",
        ),
    ],
)
def test_cli_errors(
    bus: Config, tmp_path: Path, make: str | None, args: list[str], code: int, message: str
) -> None:
    db = tmp_path / (
        "absent.duckdb" if make is None else "empty.duckdb" if make == "empty" else "f.duckdb"
    )
    (tmp_path / "empty_dir").mkdir()
    if make == "empty":
        duckdb.connect(str(db)).close()
    elif make == "canon":
        make_canon_db(db, candles=_candles_table())
    elif make == "no_volume":
        make_canon_db(db, candles=_candles_table().drop_columns(["volume"]))
    argv = [a.format(tmp=tmp_path) for a in args]
    result = _cli(bus.root, "--calls-from-duckdb", str(db), *argv)
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    assert f"Error: {message.format(tmp=tmp_path)}" in result.stderr
    assert list(_dirs(tmp_path)) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--candles", "t"],
            "Invalid value for '--candles': applies only with --calls-from-duckdb FILE",
        ),
        (
            ["--calls-from-duckdb", "f.duckdb"],
            "give exactly one of --candles TABLE and --candles-dir DIR",
        ),
        (
            ["--calls-from-duckdb", "f.duckdb", "--candles", "t", "--candles-dir", "d"],
            "give exactly one of --candles TABLE and --candles-dir DIR",
        ),
        (
            ["--calls-from-duckdb", "f.duckdb", "--candles", "t", "--calls", "5"],
            "Invalid value for '--calls': applies to the synthetic market only",
        ),
        (
            [
                "--calls-from-duckdb",
                "f.duckdb",
                "--candles",
                "t",
                "--from",
                "2026-02-01",
                "--to",
                "2026-01-01",
            ],
            "--from 2026-02-01 is after --to 2026-01-01",
        ),
    ],
)
def test_cli_bad_option_combinations_exit_2(bus: Config, args: list[str], message: str) -> None:
    result = _cli(bus.root, *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert not (bus.root / "backtest").exists()


def test_library_rejects_bad_arguments(tmp_path: Path, canon_db: Path) -> None:
    with pytest.raises(ValueError, match="interval must be one of 1s, 15s, 1m, 5m"):
        run_user_backtest("path-only", "2m", canon_db, tmp_path, candles_table="ohlcv_candles")
    with pytest.raises(ValueError, match="exactly one of candles_table and candles_dir"):
        run_user_backtest("path-only", "5m", canon_db, tmp_path)
    with pytest.raises(NotFoundError, match="does not exist"):
        run_user_backtest("path-only", "5m", tmp_path / "x.duckdb", tmp_path, candles_table="t")
    with pytest.raises(BusError, match="has a 1h candle"):
        run_user_backtest("path-only", "1h", canon_db, tmp_path, candles_table="ohlcv_candles")


def test_unreadable_inputs_are_named(tmp_path: Path) -> None:
    junk = tmp_path / "junk.duckdb"
    junk.write_bytes(b"not a database" * 100)
    with pytest.raises(BusError, match=f"cannot open {junk} as a DuckDB file read-only"):
        run_user_backtest("path-only", "5m", junk, tmp_path, candles_table="t")
    no_mint = tmp_path / "no_mint.duckdb"
    con = duckdb.connect(str(no_mint))
    con.execute("CREATE SCHEMA canon")
    con.execute("CREATE VIEW canon.alerts_std AS SELECT 1::BIGINT AS alert_ts_ms, 'x' AS chain")
    con.close()
    with pytest.raises(
        BusError, match=r"view canon.alerts_std in no_mint.duckdb lacks column\(s\) mint"
    ):
        run_user_backtest("path-only", "5m", no_mint, tmp_path, candles_table="t")
    bad_ts = make_canon_db(tmp_path / "bad_ts.duckdb")
    con = duckdb.connect(str(bad_ts))
    con.execute(
        "CREATE TABLE c AS SELECT 'TOKA' AS token_address, 'soon' AS timestamp, '5m' AS interval, "
        "1.0 AS open, 1.0 AS high, 1.0 AS low, 1.0 AS close, 1.0 AS volume"
    )
    con.close()
    with pytest.raises(
        BusError, match="column timestamp of the candles in bad_ts.duckdb:c has type VARCHAR"
    ):
        run_user_backtest("path-only", "5m", bad_ts, tmp_path, candles_table="c")
