"""Backtest metrics on hand-made paths, the synthetic market, and the three producers' runs."""

from __future__ import annotations

import datetime as dt
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from builders import CALL_RESULT_COLUMNS, FRONTIER_COLUMNS, PATH_COLUMNS, POLICY_COLUMNS

from quantbot_bus.backtest.market import Candle, generate_calls
from quantbot_bus.backtest.pathonly import path_metrics
from quantbot_bus.backtest.policy import Policy, default_grid, simulate_policy
from quantbot_bus.backtest.runner import run_backtest
from quantbot_bus.contract import Valid, validate_run_dir

D_FROM, D_TO = dt.date(2026, 1, 2), dt.date(2026, 1, 8)
M = 60_000  # one minute in ms


def C(ts: int, o: float, h: float, lo: float, c: float, v: float = 1.0) -> Candle:
    return Candle(ts, o, h, lo, c, v)


# -- path-only metrics on hand-made paths --------------------------------------------------------

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


# -- policy simulation on hand-made paths --------------------------------------------------------


def test_stop_loss_exit_by_hand() -> None:
    path = [C(0, 1.0, 1.1, 0.9, 1.0), C(M, 1.0, 1.05, 0.6, 0.65), C(2 * M, 0.65, 3.0, 0.6, 2.9)]
    t = simulate_policy(Policy(stop_loss=0.3), path, M)
    # Stop at 0.7 x 1.0 = 0.7. Candle 0's low 0.9 is above it; candle 1's low 0.6 touches it and
    # it opened above (1.0), so the exit is at the stop level 0.7: (0.7 - 1) * 10 000 = -3 000.
    assert (t.exit_reason, t.exit_px, t.stop_out) == ("stop_loss", pytest.approx(0.7), True)
    assert t.realized_return_bps == pytest.approx(-3_000)
    assert (t.entry_ts_ms, t.entry_px) == (0, 1.0)
    assert t.exit_ts_ms == 2 * M  # exit candle opens at 1m, known by its close at 2m
    assert t.time_exposed_ms == 2 * M
    # Lowest price held: 0.9 (candle 0), then the exit at 0.7 -> -3 000 bps.
    assert t.max_adverse_excursion_bps == pytest.approx(-3_000)
    # The whole path peaked at 3.0x (after the exit): captured -0.3 / (3.0 - 1) = -0.15.
    assert t.tail_capture == pytest.approx(-0.15)


def test_stop_loss_gap_exits_at_the_open() -> None:
    path = [C(0, 1.0, 1.1, 0.9, 1.0), C(M, 0.5, 0.55, 0.4, 0.45)]
    t = simulate_policy(Policy(stop_loss=0.3), path, M)
    # Candle 1 opens at 0.5, already below the 0.7 stop: filled at the open, -5 000 bps.
    assert (t.exit_reason, t.exit_px) == ("stop_loss", 0.5)
    assert t.realized_return_bps == pytest.approx(-5_000)


def test_take_profit_exit_by_hand() -> None:
    path = [
        C(0, 1.0, 1.3, 0.8, 1.2),
        C(M, 1.2, 2.4, 1.1, 2.2),
        C(2 * M, 2.2, 5.0, 2.0, 4.0),
    ]
    t = simulate_policy(Policy(stop_loss=0.5, take_profit=2.0), path, M)
    # Target 2.0: candle 1's high 2.4 reaches it after opening at 1.2 -> sold at 2.0, +10 000 bps.
    assert (t.exit_reason, t.exit_px, t.stop_out) == ("take_profit", 2.0, False)
    assert t.realized_return_bps == pytest.approx(10_000)
    assert t.exit_ts_ms == 2 * M and t.time_exposed_ms == 2 * M
    assert t.max_adverse_excursion_bps == pytest.approx(-2_000)  # low 0.8 in candle 0
    assert t.tail_capture == pytest.approx(0.25)  # +1.0 of a possible +4.0 (peak 5.0)


def test_take_profit_gap_exits_at_the_open() -> None:
    path = [C(0, 1.0, 1.3, 0.9, 1.2), C(M, 2.5, 2.6, 2.4, 2.5)]
    t = simulate_policy(Policy(take_profit=2.0), path, M)
    assert (t.exit_reason, t.exit_px) == ("take_profit", 2.5)  # opened above the target
    assert t.realized_return_bps == pytest.approx(15_000)


def test_trailing_stop_exit_by_hand() -> None:
    path = [
        C(0, 1.0, 1.2, 0.95, 1.15),
        C(M, 1.15, 1.8, 1.1, 1.7),
        C(2 * M, 1.7, 2.0, 1.6, 1.9),
        C(3 * M, 1.9, 1.95, 1.4, 1.45),
        C(4 * M, 1.45, 9.0, 1.4, 8.0),
    ]
    t = simulate_policy(Policy(trailing_stop=0.25, trail_activation=1.5), path, M)
    # Candle 1: peak so far 1.2 < 1.5, not armed. Candle 2: peak 1.8 arms it at
    # 1.8 x 0.75 = 1.35; low 1.6 stays above. Candle 3: peak 2.0 -> level 1.5; low 1.4 touches
    # it, open 1.9 is above -> exit at 1.5: +5 000 bps, exit known at 3m + 1m = 4m.
    assert (t.exit_reason, t.exit_px, t.stop_out) == ("trailing_stop", pytest.approx(1.5), False)
    assert t.realized_return_bps == pytest.approx(5_000)
    assert t.exit_ts_ms == 4 * M and t.time_exposed_ms == 4 * M
    assert t.max_adverse_excursion_bps == pytest.approx(-500)  # low 0.95 in candle 0
    assert t.tail_capture == pytest.approx(0.5 / 8.0)  # peak 9.0x came later


def test_stop_is_checked_before_take_profit_in_one_candle() -> None:
    path = [C(0, 1.0, 2.5, 0.7, 1.5)]
    t = simulate_policy(Policy(stop_loss=0.2, take_profit=2.0), path, M)
    # Both 0.8 and 2.0 are inside the candle; the order is unknown, so assume the worst.
    assert (t.exit_reason, t.exit_px) == ("stop_loss", pytest.approx(0.8))


def test_the_higher_of_stop_loss_and_trailing_stop_applies() -> None:
    path = [C(0, 1.0, 2.0, 1.0, 2.0), C(M, 2.0, 2.0, 1.0, 1.1)]
    t = simulate_policy(Policy(stop_loss=0.5, trailing_stop=0.3), path, M)
    # After candle 0 the peak is 2.0: trailing level 1.4 beats the stop-loss level 0.5.
    assert (t.exit_reason, t.exit_px) == ("trailing_stop", pytest.approx(1.4))


def test_timeout_and_end_of_path() -> None:
    path = [C(0, 1.0, 1.1, 0.9, 1.05), C(M, 1.05, 1.2, 1.0, 1.1), C(2 * M, 1.1, 1.3, 1.0, 1.2)]
    t = simulate_policy(Policy(stop_loss=0.5, max_hold_ms=2 * M), path, M)
    assert (t.exit_reason, t.exit_px, t.exit_ts_ms) == ("timeout", 1.1, 2 * M)
    t = simulate_policy(Policy(stop_loss=0.5, take_profit=10.0), path, M)
    assert (t.exit_reason, t.exit_px, t.exit_ts_ms) == ("end_of_path", 1.2, 3 * M)
    assert t.realized_return_bps == pytest.approx(2_000)


def test_policy_validation_and_ids() -> None:
    with pytest.raises(ValueError, match="stop_loss"):
        Policy(stop_loss=1.5)
    with pytest.raises(ValueError, match="take_profit"):
        Policy(take_profit=0.9)
    assert Policy(0.3, 3.0, 0.25, 1.5).policy_id == "sl30-tp3x-tr25@1.5x"
    grid = default_grid()
    assert len(grid) == 27 and len({p.policy_id for p in grid}) == 27


# -- the synthetic market ------------------------------------------------------------------------


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


# -- the three producers' runs -------------------------------------------------------------------


def tables(run_dir: Path) -> dict[str, Any]:
    meta = json.loads((run_dir / "metadata.json").read_text())
    return {a["name"]: pq.read_table(run_dir / a["file"]) for a in meta["artifacts"]}


def created_by(run_dir: Path, name: str) -> str:
    return str(pq.read_metadata(run_dir / f"{name}.parquet").created_by)


def run(tmp_path: Path, strategy: str, calls: int = 40, seed: int = 0, interval: str = "1m") -> Any:
    return run_backtest(strategy, interval, D_FROM, D_TO, calls, seed, tmp_path / "artifacts")


def test_path_only_run(tmp_path: Path) -> None:
    result = run(tmp_path, "path-only", interval="5m")
    assert result.run_dir == tmp_path / "artifacts" / "backtest" / result.run_id
    check = validate_run_dir(result.run_dir, tmp_path / "artifacts")
    assert isinstance(check, Valid), check
    meta = json.loads((result.run_dir / "metadata.json").read_text())
    assert meta["run_type"] == "backtest" and meta["status"] == "success"
    assert meta["params"]["strategy"] == "path-only" and meta["params"]["interval"] == "5m"
    t = tables(result.run_dir)["backtest_call_path_metrics"]
    assert t.column_names == [*PATH_COLUMNS, "created_at"]
    assert t.num_rows == 40
    assert set(t.column("run_id").to_pylist()) == {result.run_id}
    assert set(t.column("interval").to_pylist()) == {"5m"}
    assert "polars" in created_by(result.run_dir, "backtest_call_path_metrics").lower()
    # Each row equals path_metrics recomputed from the market.
    rows = {r["call_id"]: r for r in t.to_pylist()}
    for call in generate_calls(0, 40, "5m", D_FROM, D_TO):
        path = call.after_alert()
        expected = path_metrics(path[0].open, path, call.alert_ts_ms)
        row = rows[call.call_id]
        assert row["p0"] == path[0].open
        assert {k: row[k] for k in expected} == expected
    hit_rate = sum(t.column("hit_2x").to_pylist()) / 40
    assert meta["metrics"]["calls"] == 40
    assert meta["metrics"]["hit_2x_rate"] == pytest.approx(hit_rate)


def test_policy_run(tmp_path: Path) -> None:
    result = run(tmp_path, "policy")
    assert isinstance(validate_run_dir(result.run_dir, tmp_path / "artifacts"), Valid)
    t = tables(result.run_dir)
    assert set(t) == {"backtest_policy_results", "backtest_call_results"}
    policy_results, call_results = t["backtest_policy_results"], t["backtest_call_results"]
    assert policy_results.column_names == [*POLICY_COLUMNS, "created_at"]
    assert {*CALL_RESULT_COLUMNS, "created_at"} <= set(call_results.column_names)
    assert policy_results.num_rows == 40 * 27 and call_results.num_rows == 40
    for name in t:
        assert "parquet-cpp-arrow" in created_by(result.run_dir, name)
    reasons = set(policy_results.column("exit_reason").to_pylist())
    assert {"stop_loss", "take_profit"} <= reasons
    # backtest_call_results is the grid's best policy by mean return, with pnl on $1 000.
    by_policy: dict[str, list[float]] = defaultdict(list)
    for r in policy_results.to_pylist():
        by_policy[r["policy_id"]].append(r["realized_return_bps"])
    best = max(by_policy, key=lambda p: statistics.fmean(by_policy[p]))
    assert set(call_results.column("policy_id").to_pylist()) == {best}
    for r in call_results.to_pylist():
        assert r["pnl_usd"] == pytest.approx(1_000 * (r["exit_px"] / r["entry_px"] - 1))
        assert r["return_bps"] == pytest.approx(r["pnl_pct"] * 100)
        assert r["win"] == (r["pnl_usd"] > 0)
    metrics = json.loads((result.run_dir / "metadata.json").read_text())["metrics"]
    assert metrics["best_policy_avg_return_bps"] == pytest.approx(statistics.fmean(by_policy[best]))
    assert metrics["total_pnl_usd"] == pytest.approx(
        sum(call_results.column("pnl_usd").to_pylist())
    )


def test_optimize_run_agrees_with_the_policy_run(tmp_path: Path) -> None:
    result = run(tmp_path, "optimize", calls=60, seed=4)
    assert isinstance(validate_run_dir(result.run_dir, tmp_path / "artifacts"), Valid)
    t = tables(result.run_dir)
    assert set(t) == {"policy_frontier", "v1_baseline_frontier", "summary"}
    frontier, summary = t["policy_frontier"].to_pylist(), t["summary"].to_pylist()
    assert set(FRONTIER_COLUMNS) <= set(t["policy_frontier"].column_names)
    assert "duckdb" in created_by(result.run_dir, "summary").lower()
    for name in ("policy_frontier", "v1_baseline_frontier"):
        assert "parquet-cpp-arrow" in created_by(result.run_dir, name).lower()
    assert len(summary) == 1

    # Recompute the frontier from a policy run of the same market (written by another library).
    policy = run(tmp_path, "policy", calls=60, seed=4)
    pt = tables(policy.run_dir)
    caller_of = dict(
        zip(
            pt["backtest_call_results"].column("call_id").to_pylist(),
            pt["backtest_call_results"].column("caller_name").to_pylist(),
            strict=True,
        )
    )
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in pt["backtest_policy_results"].to_pylist():
        groups[(caller_of[r["call_id"]], r["policy_id"])].append(r)
    assert len(frontier) == len(groups)
    for row in frontier:
        trades = groups[(row["caller_name"], row["policy_id"])]
        returns = [r["realized_return_bps"] for r in trades]
        stop_rate = sum(r["stop_out"] for r in trades) / len(trades)
        assert row["trades"] == len(trades)
        assert row["avg_return_bps"] == pytest.approx(statistics.fmean(returns))
        assert row["median_return_bps"] == pytest.approx(statistics.median(returns))
        assert row["stop_out_rate"] == pytest.approx(stop_rate)
        assert row["meets_constraints"] == (len(trades) >= 5 and stop_rate <= 0.5)
        sem = statistics.stdev(returns) / len(returns) ** 0.5 if len(returns) > 1 else 0.0
        assert row["objective_score"] == pytest.approx(statistics.fmean(returns) - sem)
        assert json.loads(row["policy_params"])["stop_loss"] in (0.2, 0.35, 0.5)
    # Ranks: 1..27 per caller, constrained first, then by objective score, ties by params.
    per_caller: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in frontier:
        per_caller[row["caller_name"]].append(row)
    for rows in per_caller.values():
        ordered = sorted(rows, key=lambda r: r["rank"])
        assert [r["rank"] for r in ordered] == list(range(1, 28))
        keys = [
            (not r["meets_constraints"], -r["objective_score"], r["policy_params"]) for r in ordered
        ]
        assert keys == sorted(keys)
    feasible_best = [r for r in frontier if r["rank"] == 1 and r["meets_constraints"]]
    s = summary[0]
    assert s["callers"] == len(per_caller) and s["calls"] == 60 and s["policies"] == 27
    assert s["callers_meeting_constraints"] == len(feasible_best)
    if feasible_best:
        top = max(feasible_best, key=lambda r: r["objective_score"])
        assert (s["best_caller"], s["best_objective_score"]) == (
            top["caller_name"],
            pytest.approx(top["objective_score"]),
        )


@pytest.mark.parametrize("strategy", ["path-only", "policy", "optimize"])
def test_same_seed_same_tables_different_seed_different(tmp_path: Path, strategy: str) -> None:
    def content(result: Any) -> dict[str, Any]:
        return {
            name: table.drop_columns(["run_id", "created_at"])
            for name, table in tables(result.run_dir).items()
        }

    a = content(run(tmp_path, strategy, calls=25, seed=11))
    b = content(run(tmp_path, strategy, calls=25, seed=11))
    c = content(run(tmp_path, strategy, calls=25, seed=12))
    assert a.keys() == b.keys() == c.keys()
    assert all(a[name].equals(b[name]) for name in a)
    assert not all(a[name].equals(c[name]) for name in a)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="strategy"):
        run_backtest("full", "1m", D_FROM, D_TO, 10, 0, "/nonexistent")
    with pytest.raises(ValueError, match="interval"):
        run_backtest("policy", "15m", D_FROM, D_TO, 10, 0, "/nonexistent")
    with pytest.raises(ValueError, match="after"):
        run_backtest("policy", "1m", D_TO, D_FROM, 10, 0, "/nonexistent")
    with pytest.raises(ValueError, match="calls"):
        run_backtest("policy", "1m", D_FROM, D_TO, 0, 0, "/nonexistent")
