"""Frontier artifacts (issue 14): the V1 baseline on hand-made candles, the writer helpers, the
optimize producer's two frontiers and run summary, and the ``frontiers`` export across runs."""

# ruff: noqa: S608 - test SQL over paths and run ids the test itself made

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from builders import add_optimize_run, add_policy_run, sync

from quantbot_bus.backtest import frontier as fr
from quantbot_bus.backtest import v1baseline as v1
from quantbot_bus.backtest.market import Candle
from quantbot_bus.backtest.runner import run_backtest
from quantbot_bus.config import Config
from quantbot_bus.contract import Valid, validate_run_dir
from quantbot_bus.errors import ContractError
from quantbot_bus.publication import current_generation
from quantbot_bus.writer import RunWriter

# one worker builds the module's `optimize_run` once (make test runs --dist loadgroup)
pytestmark = pytest.mark.xdist_group("test_frontier")

M = 60_000
H = 3_600_000
NOW = dt.datetime(2026, 1, 8, tzinfo=dt.UTC)


def C(ts: int, o: float, h: float, lo: float, c: float) -> Candle:
    return Candle(ts, o, h, lo, c, 1.0)


def trade(call: str, entry_ts: int, exit_ts: int, exit_px: float, reason: str) -> v1.V1Trade:
    return v1.V1Trade(call, "x", entry_ts, exit_ts, 1.0, exit_px, reason)


# -- one V1 trade ------------------------------------------------------------------------------


def test_v1_grid_is_the_seed_grid() -> None:
    grid = v1.v1_grid()
    assert len(grid) == 30 and all(p.max_hold_ms == 48 * H for p in grid)
    assert {p.tp_mult for p in grid} == {1.5, 2, 2.5, 3, 4, 5}
    assert {p.sl_mult for p in grid} == {0.85, 0.88, 0.90, 0.92, 0.95}
    assert json.loads(grid[0].params_json())["trailing_stop"] is None
    assert V1(5.0, 0.9).extreme and V1(2.0, 0.85).extreme and not V1(4.0, 0.88).extreme


def V1(tp: float, sl: float) -> v1.V1Params:
    return v1.V1Params(tp, sl)


def test_v1_take_profit_by_hand() -> None:
    # Entry at the close of the first candle, 1.0, known at its close (1m). Target 2.0: the
    # third candle's high 2.4 reaches it after opening at 1.5 -> sold at 2.0 at its close, 3m.
    path = [C(0, 0.8, 1.1, 0.7, 1.0), C(M, 1.0, 1.6, 0.95, 1.5), C(2 * M, 1.5, 2.4, 1.4, 2.2)]
    t = v1.simulate_v1_trade(V1(2.0, 0.9), path, M)
    assert t is not None
    assert (t.entry_px, t.entry_ts_ms, t.exit_px, t.exit_ts_ms) == (1.0, M, 2.0, 3 * M)
    assert t.exit_reason == "take_profit" and not t.stop_out
    # The first candle's low 0.7 is before the entry: no stop there.


def test_v1_stop_loss_by_hand_and_gap() -> None:
    path = [C(0, 1.0, 1.0, 1.0, 1.0), C(M, 1.0, 1.05, 0.86, 0.9), C(2 * M, 0.9, 3.0, 0.8, 2.9)]
    t = v1.simulate_v1_trade(V1(3.0, 0.88), path, M)
    assert t is not None and t.stop_out
    assert (t.exit_px, t.exit_ts_ms) == (pytest.approx(0.88), 2 * M)  # stop at 0.88 x 1.0
    gap = [C(0, 1.0, 1.0, 1.0, 1.0), C(M, 0.5, 0.6, 0.4, 0.45)]
    t = v1.simulate_v1_trade(V1(3.0, 0.88), gap, M)
    assert t is not None and (t.exit_reason, t.exit_px) == ("stop_loss", 0.5)  # opened below


def test_v1_timeout_at_48_hours_and_end_of_data() -> None:
    # 1h candles that never reach 0.9 or 2.0: entry at the close of candle 0 (t = 1h); the candle
    # opening at 48h closes at 49h = entry + 48h -> timeout at its close 1.3.
    path = [C(k * H, 1.0, 1.2, 0.95, 1.0 if k < 48 else 1.3) for k in range(60)]
    t = v1.simulate_v1_trade(V1(2.0, 0.9), path, H)
    assert t is not None
    assert (t.exit_reason, t.exit_ts_ms - t.entry_ts_ms, t.exit_px) == ("timeout", 48 * H, 1.3)
    short = path[:10]
    t = v1.simulate_v1_trade(V1(2.0, 0.9), short, H)
    assert t is not None and (t.exit_reason, t.exit_ts_ms) == ("end_of_path", 10 * H)
    assert v1.simulate_v1_trade(V1(2.0, 0.9), [], H) is None


# -- the capital simulation --------------------------------------------------------------------


def test_capital_fees_on_both_legs_by_hand() -> None:
    # One trade, 1.0 -> 2.0, stop 0.85: size = min(4 % of 10 000 = 400, 200 / 0.15 = 1 333.3)
    # = 400. Entry takes 400 x 1.004 = 401.6; the exit returns 800 x 0.996 = 796.8.
    r = v1.simulate_capital([trade("a", 0, 10, 2.0, "take_profit")], 0.85)
    assert r.final_capital == pytest.approx(10_000 - 401.6 + 796.8)  # 10 395.2
    assert r.fees_paid == pytest.approx(1.6 + 3.2)
    assert r.net_returns_bps == (pytest.approx((796.8 / 401.6 - 1) * 10_000),)
    # A stop-out 1.0 -> 0.85 with a 0.95 stop: size = min(400, 200 / 0.05 = 4 000) = 400.
    r = v1.simulate_capital([trade("a", 0, 10, 0.85, "stop_loss")], 0.95)
    assert r.final_capital == pytest.approx(10_000 - 401.6 + 340 * 0.996)
    assert (r.trades, r.stop_outs) == (1, 1)


def test_capital_risk_cap_binds() -> None:
    # With 100 000 of cash, 4 % is 4 000 but the risk cap 200 / (1 - 0.85) = 1 333.33 binds.
    rules = v1.CapitalRules(start=100_000)
    r = v1.simulate_capital([trade("a", 0, 10, 1.0, "timeout")], 0.85, rules)
    size = 200 / 0.15
    assert r.final_capital == pytest.approx(100_000 - size * 1.004 + size * 0.996)


def test_capital_25_open_positions_and_cash_released_at_exit() -> None:
    # 26 trades enter at t = 0..25 and exit at t = 1 000 (flat): the 26th finds 25 open and is
    # skipped; a 27th entering at 1 000 comes after the exits (released first) and is taken.
    trades = [trade(f"c{i:02d}", i, 1_000, 1.0, "timeout") for i in range(26)]
    trades.append(trade("late", 1_000, 2_000, 1.0, "timeout"))
    r = v1.simulate_capital(trades, 0.9)
    assert (r.trades, r.skipped, r.max_open_positions) == (26, 1, 25)
    # Each flat position loses 0.8 % of its size; sizes are 4 % of the falling cash.
    cash, open_sizes = 10_000.0, []
    for _ in range(25):
        size = cash * 0.04
        cash -= size * 1.004
        open_sizes.append(size)
    cash += sum(s * 0.996 for s in open_sizes)
    late = cash * 0.04
    assert r.final_capital == pytest.approx(cash - late * 1.004 + late * 0.996)


def test_capital_minimum_size() -> None:
    # 200 of cash: 4 % is 8 < 10 -> skipped; 250: 4 % is exactly 10 -> taken.
    t = [trade("a", 0, 10, 2.0, "take_profit")]
    r = v1.simulate_capital(t, 0.9, v1.CapitalRules(start=200))
    assert (r.trades, r.skipped, r.final_capital) == (0, 1, 200)
    r = v1.simulate_capital(t, 0.9, v1.CapitalRules(start=250))
    assert r.trades == 1 and r.final_capital == pytest.approx(250 - 10.04 + 20 * 0.996)


def test_baseline_rows_flag_collapse_and_extreme_params() -> None:
    losing = [trade(f"c{i}", i * 100, i * 100 + 50, 0.5, "stop_loss") for i in range(3)]
    rows_all, per_caller = v1.baseline_rows({V1(5.0, 0.85): losing}, run_id="r", created_at=NOW)
    (row,) = rows_all
    assert row["caller_name"] is None and row["scope"] == "all"
    assert row["collapsed_capital"] and row["extreme_params"] and not row["meets_constraints"]
    assert row["objective_score"] == row["final_capital"] < 10_000
    assert list(per_caller) == ["x"] and per_caller["x"][0]["final_capital"] == row["final_capital"]


# -- the writer helpers ------------------------------------------------------------------------


def _row(caller: str | None, params: dict[str, Any], score: float, ok: bool = True) -> dict:
    return {
        "run_id": "r",
        "caller_name": caller,
        "policy_params": json.dumps(params),
        "meets_constraints": ok,
        "objective_score": score,
        "avg_return_bps": 1.0,
        "median_return_bps": 1.0,
        "stop_out_rate": 0.1,
        "rank": 99,  # replaced
    }


def test_frontier_table_ranks_types_and_validates() -> None:
    rows = [
        _row("b", {"take_profit": 3.0, "stop_loss": 0.15}, 5.0),
        _row("b", {"take_profit": 2.0, "stop_loss": 0.15}, 5.0),  # tie: params text decides
        _row("b", {"take_profit": 9.0, "stop_loss": 0.5}, 50.0, ok=False),  # unconstrained: last
        _row("a", {"tp_mult": 1.5, "sl_mult": 0.88, "max_hold_ms": 7}, 1.0),
    ]
    t = fr.frontier_table(rows, "policy_frontier").to_pylist()
    assert [(r["caller_name"], r["rank"], r["tp_mult"]) for r in t] == [
        ("a", 1, 1.5),
        ("b", 1, 2.0),
        ("b", 2, 3.0),
        ("b", 3, 9.0),
    ]
    assert t[1]["sl_mult"] == 0.85 and t[0]["max_hold_ms"] == 7 and t[0]["sl_mult"] == 0.88
    with pytest.raises(ContractError, match="stop_out_rate"):
        fr.frontier_table([{k: v for k, v in rows[0].items() if k != "stop_out_rate"}], "x")
    with pytest.raises(ContractError, match="JSON object"):
        fr.frontier_table([{**rows[0], "policy_params": "[1]"}], "x")


def test_per_caller_frontiers_are_one_artifact(tmp_path: Path) -> None:
    per_caller = {c: [_row(None, {"tp_mult": 2.0, "sl_mult": 0.9}, 1.0)] for c in ("a", "b")}
    overall = [_row(None, {"tp_mult": 2.0, "sl_mult": 0.9}, 2.0)]
    with RunWriter(tmp_path, "backtest", run_id="r", git=None) as w:
        fr.write_v1_baseline_per_caller_frontiers(w, per_caller, overall=overall)
        with pytest.raises(ContractError, match="already written"):  # never overwritten
            fr.write_v1_baseline_frontier(w, overall)
    assert [a["name"] for a in w.artifacts] == ["v1_baseline_frontier"]
    t = pq.read_table(tmp_path / "backtest" / "r" / "v1_baseline_frontier.parquet")
    assert t.column("caller_name").to_pylist() == [None, "a", "b"]
    assert t.column("rank").to_pylist() == [1, 1, 1]


# -- the optimize producer ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def optimize_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("opt") / "artifacts"
    result = run_backtest(
        "optimize", "1m", dt.date(2026, 1, 2), dt.date(2026, 1, 8), 60, 4, root, run_id="opt-real"
    )
    return result.run_dir


def test_optimize_run_carries_both_frontiers(optimize_run: Path) -> None:
    assert isinstance(validate_run_dir(optimize_run, optimize_run.parents[1]), Valid)
    meta = json.loads((optimize_run / "metadata.json").read_text())
    names = {a["name"] for a in meta["artifacts"]}
    assert names == {"policy_frontier", "v1_baseline_frontier", "summary"}
    v1t = pq.read_table(optimize_run / "v1_baseline_frontier.parquet").to_pylist()
    groups: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for r in v1t:
        groups[r["caller_name"]].append(r)
    assert None in groups and len(groups[None]) == 30
    assert sum(r["trades"] for r in groups[None]) == 30 * 60  # every call taken: none skipped
    for rows in groups.values():
        best = min(rows, key=lambda r: r["rank"])
        assert best["final_capital"] == max(r["final_capital"] for r in rows)
        assert best["objective_score"] == best["final_capital"]
        for r in rows:
            assert r["extreme_params"] == (r["sl_mult"] < 0.88 or r["tp_mult"] > 4)
            assert r["collapsed_capital"] == (r["final_capital"] < 10_000)
    best_all = min(groups[None], key=lambda r: r["rank"])
    assert meta["metrics"]["v1_best_final_capital"] == pytest.approx(best_all["final_capital"])
    assert meta["metrics"]["v1_best_tp_mult"] == best_all["tp_mult"]
    pol = pq.read_table(optimize_run / "policy_frontier.parquet")
    assert pol.column_names[:9] == [*fr.REQUIRED, "rank"]
    assert {"tp_mult", "sl_mult", "trailing_stop", "max_hold_ms"} <= set(pol.column_names)


# -- exports: run_summaries and the frontiers view -----------------------------------------------


def _pareto(rows: list[dict[str, Any]]) -> set[str]:
    def dominates(g: dict[str, Any], f: dict[str, Any]) -> bool:
        ge, le = (
            g["objective_score"] >= f["objective_score"],
            g["stop_out_rate"] <= f["stop_out_rate"],
        )
        strict = (
            g["objective_score"] > f["objective_score"] or g["stop_out_rate"] < f["stop_out_rate"]
        )
        return ge and le and strict

    ok = [r for r in rows if r["objective_score"] is not None and r["stop_out_rate"] is not None]
    return {f["policy_params"] for f in ok if not any(dominates(g, f) for g in ok)}


def test_frontiers_export_and_optimize_run_summary(bus: Config, optimize_run: Path) -> None:
    shutil.copytree(optimize_run, bus.root / "backtest" / optimize_run.name)
    add_optimize_run(bus, "opt-legacy", seed=3, created_at="2024-05-01T10:00:00Z")
    add_policy_run(bus, "policy-0", seed=1)
    sync(bus)
    gen = current_generation(bus.exports_dir)
    con = duckdb.connect()
    got = con.execute(
        f"SELECT run_id, kind, caller_name, rank, policy_params, pareto, tp_mult "
        f"FROM '{gen}/files/frontiers.parquet'"
    ).fetchall()
    by_group: dict[tuple[Any, ...], list[tuple[Any, ...]]] = defaultdict(list)
    for r in got:
        by_group[r[:3]].append(r)
    want_rows = 0
    for run_id, kind, table in (
        ("opt-real", "policy", "policy_frontier"),
        ("opt-real", "v1_baseline", "v1_baseline_frontier"),
        ("opt-legacy", "policy", "frontier"),
    ):
        run_dir = next(bus.root.glob(f"*/{run_id}"))
        raw = pq.read_table(run_dir / f"{table}.parquet").to_pylist()
        want_rows += len(raw)
        raw_groups: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        for r in raw:
            raw_groups[r["caller_name"]].append(r)
        for caller, rows in raw_groups.items():
            mine = by_group[(run_id, kind, caller)]
            assert sorted((r[3], r[4]) for r in mine) == sorted(
                (r["rank"], r["policy_params"]) for r in rows
            )
            assert {r[4] for r in mine if r[5]} == _pareto(rows), (run_id, kind, caller)
    assert len(got) == want_rows  # the policy run has no frontier
    assert {r[6] for r in got if r[0] == "opt-real" and r[1] == "v1_baseline"} == set(v1.TP_MULTS)

    # The optimize run's summary: real numbers, from its frontiers.
    (s,) = con.execute(
        "SELECT total_trades, total_calls, unique_callers, avg_return_bps, win_rate, "
        f"total_pnl_usd, total_pnl_pct FROM '{gen}/files/run_summaries.parquet' "
        "WHERE run_id = 'opt-real'"
    ).fetchall()
    pol = pq.read_table(optimize_run / "policy_frontier.parquet").to_pylist()
    best = [r for r in pol if r["rank"] == 1]
    n = sum(r["trades"] for r in best)
    assert (s[0], s[1], s[2]) == (60, 60, len(best)) and n == 60
    assert s[3] == pytest.approx(sum(r["avg_return_bps"] * r["trades"] for r in best) / n)
    assert s[4] == pytest.approx(sum(r["win_rate"] * r["trades"] for r in best) / n)
    v1_all = pa.Table.to_pylist(pq.read_table(optimize_run / "v1_baseline_frontier.parquet"))
    top = next(r for r in v1_all if r["caller_name"] is None and r["rank"] == 1)
    assert s[5] == pytest.approx(top["final_capital"] - 10_000)
    assert s[6] == pytest.approx((top["final_capital"] / 10_000 - 1) * 100)

    # A deleted run leaves the view.
    shutil.rmtree(bus.root / "backtest" / "opt-real")
    sync(bus)
    gen = current_generation(bus.exports_dir)
    left = con.execute(f"SELECT DISTINCT run_id FROM '{gen}/files/frontiers.parquet'").fetchall()
    assert left == [("opt-legacy",)]
    con.close()
