"""`backtest run --calls-from-duckdb`: real DuckDB files and Parquet candles in, a registered run out
(calls from ``canon.alerts_std`` or ``user_calls_d``, candles from a table or day files, the
timestamp encodings read).

The expected values (which calls, their ids, entry prices, peaks) are computed from the rows the
test writes (``tests/userdata_inputs.py``), not by the code under test.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from builders import live_run_ids, snapshot_query, sync
from userdata_inputs import (
    ALERTS,
    T0,
    _candles_table,
    _cli,
    _name,
    expected_calls,
    expected_path,
    make_candles_dir,
    make_canon_db,
    make_legacy_db,
)

from quantbot_bus.backtest.userdata import run_user_backtest
from quantbot_bus.config import Config
from quantbot_bus.contract import Valid, validate_run_dir


@pytest.fixture(autouse=True)
def _isolated_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("QUANTBOT_BUS_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def canon_db(tmp_path: Path) -> Path:
    return make_canon_db(tmp_path / "tele.duckdb", candles=_candles_table("ms"))


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


def test_cli_seed_layout_writes_the_same_tables_as_v1(bus: Config, tmp_path: Path) -> None:
    """``--layout seed`` with ``--calls-from-duckdb``: the run lands as the seed system's
    ``ROOT/YYYY-MM/run_id=<uuid>/`` with the same rows as the v1 layout's run, and registers."""
    db = make_canon_db(tmp_path / "calls.duckdb")
    candles = make_candles_dir(tmp_path / "candles")
    args = ["--calls-from-duckdb", str(db), "--candles-dir", str(candles), "--from", "2026-01-02"]
    v1 = _cli(bus.root, *args, strategy="policy")
    seed = _cli(bus.root, *args, "--layout", "seed", strategy="policy")
    assert v1.exit_code == 0 and seed.exit_code == 0, v1.output + seed.output
    seed_dir = Path(seed.stdout.split("\t")[1].strip())
    assert seed_dir.parent.parent == bus.root and seed_dir.name.startswith("run_id=")
    assert (seed_dir / "_SUCCESS").exists() and (seed_dir / "run.json").exists()
    v1_dir = _only_run(bus.root)

    def rows(path: Path) -> list[dict[str, object]]:
        table = pq.read_table(path).drop_columns(["run_id", "created_at"])
        return sorted(table.to_pylist(), key=lambda r: json.dumps(r, sort_keys=True, default=str))

    for folder, name in (
        ("policy", "backtest_call_results"),
        ("policy", "backtest_policy_results"),
    ):
        got = rows(seed_dir / folder / f"{name}.parquet")
        assert got and got == rows(v1_dir / f"{name}.parquet"), name
    run = json.loads((seed_dir / "run.json").read_text())
    assert run["parameters"]["calls_source"] == "calls.duckdb:canon.alerts_std"
    sync(bus)
    assert live_run_ids(bus) == {v1_dir.name, run["run_id"]}
