"""The three producers' runs (backtest.runner.run_backtest): valid runs whose tables agree
with the metrics recomputed from the market, the same for the same seed."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from backtest_inputs import D_FROM, D_TO
from builders import CALL_RESULT_COLUMNS, FRONTIER_COLUMNS, PATH_COLUMNS, POLICY_COLUMNS

from quantbot_bus.backtest.market import generate_calls
from quantbot_bus.backtest.pathonly import path_metrics
from quantbot_bus.backtest.runner import run_backtest
from quantbot_bus.contract import Valid, validate_run_dir


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
