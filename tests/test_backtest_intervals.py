"""`backtest run --interval/--horizon`: any of the seed's candle intervals for the user's own
candles, the synthetic market's two otherwise, and the horizon a call is followed for.

One call; 15-minute candles where the price doubles in the candle opening 3 h after the alert:
followed for 2 h the call never reaches 2x, for 4 h it does (the expected values come from the
candles the test writes).
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from quantbot_bus.cli import main

T0 = 1_767_355_200_000  # 2026-01-02 12:00 UTC, the alert
FIFTEEN_MIN = 900_000
DOUBLE_AT = 12  # the candle opening 12 x 15 min = 3 h after the alert peaks above 2x


def _user_db(path: Path) -> Path:
    con = duckdb.connect(str(path))
    try:
        con.execute(
            "CREATE TABLE user_calls_d (call_ts_ms BIGINT, call_datetime TIMESTAMP, "
            "caller_name VARCHAR, caller_id VARCHAR, mint VARCHAR, ticker VARCHAR, "
            "mcap_usd DOUBLE, price_usd DOUBLE)"
        )
        con.execute(
            "INSERT INTO user_calls_d VALUES (?, make_timestamp(? * 1000), 'alice', 'x', "
            "'TOKQ', 'Q', 1e5, 1.0)",
            [T0, T0],
        )
        con.execute(
            "CREATE TABLE candles (token_address VARCHAR, chain VARCHAR, timestamp BIGINT, "
            "interval VARCHAR, open DOUBLE, high DOUBLE, low DOUBLE, close DOUBLE, volume DOUBLE)"
        )
        for i in range(40):  # 10 h of 15m candles from the alert
            high = 2.6 if i == DOUBLE_AT else 1.05
            con.execute(
                "INSERT INTO candles VALUES ('TOKQ', 'solana', ?, '15m', 1.0, ?, 0.97, 1.0, 5.0)",
                [T0 + i * FIFTEEN_MIN, high],
            )
    finally:
        con.close()
    return path


def _run(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(
        main, ["backtest", "run", "--root", str(tmp_path / "artifacts"), *args]
    )
    return res.exit_code, res.stdout, res.stderr


@pytest.mark.parametrize(("horizon", "hit_2x"), [(120, False), (240, True)])
def test_user_candles_of_15m_followed_for_the_given_horizon(
    tmp_path: Path, horizon: int, hit_2x: bool
) -> None:
    db = _user_db(tmp_path / "calls.duckdb")
    code, out, err = _run(
        tmp_path,
        "--strategy",
        "path-only",
        "--interval",
        "15m",
        "--horizon",
        str(horizon),
        "--calls-from-duckdb",
        str(db),
        "--candles",
        "candles",
    )
    assert code == 0, err
    assert "1 have 15m candles" in err, err
    run_id, run_dir = out.strip().split("\t")
    [path] = Path(run_dir).glob("*path_metrics*.parquet")
    [row] = pq.read_table(path).to_pylist()
    assert row["interval"] == "15m" and row["hit_2x"] is hit_2x, row


def test_the_synthetic_market_refuses_an_interval_it_does_not_draw(tmp_path: Path) -> None:
    code, out, err = _run(tmp_path, "--strategy", "path-only", "--interval", "15m")
    assert code == 2 and out == ""
    assert "the synthetic market has 1m and 5m candles only" in err, err
    assert not (tmp_path / "artifacts").exists()


def test_the_synthetic_market_honours_the_horizon(tmp_path: Path) -> None:
    code, out, err = _run(tmp_path, "--strategy", "path-only", "--calls", "5", "--horizon", "60")
    assert code == 0, err
    run_dir = Path(out.strip().split("\t")[1])
    meta = (run_dir / "metadata.json").read_text()
    assert '"horizon_minutes": 60' in meta, meta
