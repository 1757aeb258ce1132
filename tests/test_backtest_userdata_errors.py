"""`backtest run --calls-from-duckdb` refusing its inputs: missing or unreadable files, absent
tables and columns, no call or candle to trade, bad option combinations (exit 2) and bad library
arguments, each named in the error; no run is written. Real DuckDB files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from userdata_inputs import _candles_table, _cli, make_canon_db

from quantbot_bus.backtest.userdata import run_user_backtest
from quantbot_bus.config import Config
from quantbot_bus.errors import BusError, NotFoundError


@pytest.fixture(autouse=True)
def _isolated_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("QUANTBOT_BUS_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def canon_db(tmp_path: Path) -> Path:
    return make_canon_db(tmp_path / "tele.duckdb", candles=_candles_table("ms"))


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
