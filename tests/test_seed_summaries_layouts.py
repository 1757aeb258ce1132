"""The producer's runs in the seed layout (``--layout seed``) beside the same runs in the v1
layout: the same rows in every summary, ``created_at`` as in the catalog, the values the
Parquet files'. Real producers, real Parquet, real ``sync``.
"""

# ruff: noqa: S608 - SQL from this module's constants (summary names, column lists)

from __future__ import annotations

import datetime as dt
import statistics
from pathlib import Path
from typing import Any

import polars as pl
from builders import snapshot_query, sync
from summaries_expected import (
    COMPARISON_COLUMNS,
    assert_by_caller,
    assert_row,
    expected_by_caller,
    expected_comparison,
    expected_leaderboard,
    query,
    with_callers,
)
from summaries_runs import new_bus, produce

from quantbot_bus.config import Config

#: Every summary export of the backtest plug-in, and the columns that tell two runs apart.
SUMMARIES = (
    "run_summaries",
    "caller_leaderboard",
    "policy_comparison",
    "policy_by_caller",
    "frontier_best",
    "frontiers",
    "regressions",
)
RUN_COLUMNS = ("run_id", "created_at", "checked_at", "baseline_runs")


def without_runs(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """The rows without the columns that name or date the run, sorted."""
    return sorted(
        (tuple((k, v) for k, v in r.items() if k not in RUN_COLUMNS) for r in rows), key=repr
    )


def catalog_created(cfg: Config, run_id: str) -> dt.datetime:
    rows = snapshot_query(cfg, "SELECT created_at FROM catalog.runs_d WHERE run_id = ?", [run_id])
    value = rows[0][0]
    assert isinstance(value, dt.datetime)
    return value


def test_producer_runs_read_the_same_in_both_layouts(tmp_path: Path) -> None:
    """The producer's runs in the seed layout give the rows the same runs give in the v1
    layout, in every summary; the values are the Parquet files'."""
    buses = {layout: new_bus(tmp_path / layout) for layout in ("v1", "seed")}
    runs: dict[str, dict[str, tuple[str, Path]]] = {}
    for layout, cfg in buses.items():
        runs[layout] = {s: produce(cfg, s, layout) for s in ("path-only", "policy", "optimize")}
        sync(cfg)
    got = {
        layout: {name: query(cfg, f"SELECT * FROM exports.{name}") for name in SUMMARIES}
        for layout, cfg in buses.items()
    }
    for name in SUMMARIES:
        assert got["v1"][name], f"{name} is empty"
        assert without_runs(got["seed"][name]) == without_runs(got["v1"][name]), name
    # every run of either layout is in run_summaries, dated as in the catalog
    for layout, cfg in buses.items():
        created = {run_id: catalog_created(cfg, run_id) for run_id, _ in runs[layout].values()}
        assert {r["run_id"] for r in got[layout]["run_summaries"]} == set(created)
        for name in ("run_summaries", "policy_comparison", "policy_by_caller", "frontiers"):
            for r in got[layout][name]:
                assert r["created_at"] == created[r["run_id"]], (layout, name)

    seed_cfg = buses["seed"]
    policy_id, policy_dir = runs["seed"]["policy"]
    trades = pl.read_parquet(policy_dir / "policy" / "backtest_policy_results.parquet")
    calls = pl.read_parquet(policy_dir / "policy" / "backtest_call_results.parquet")
    want = expected_comparison(trades)
    rows = query(
        seed_cfg,
        f"SELECT policy_id, {COMPARISON_COLUMNS} FROM exports.policy_comparison WHERE run_id = ?",
        [policy_id],
    )
    assert sorted(r["policy_id"] for r in rows) == sorted(want) and len(want) == 27
    for r in rows:
        assert_row(r, want[r["policy_id"]], r["policy_id"])

    # policy_by_caller: the trades per policy and caller, each caller from the run's call
    # results (by call_id), in both layouts
    for layout, folder in (("seed", "policy"), ("v1", "")):
        run_id, run_dir = runs[layout]["policy"]
        run_trades = pl.read_parquet(run_dir / folder / "backtest_policy_results.parquet")
        run_calls = pl.read_parquet(run_dir / folder / "backtest_call_results.parquet")
        want_callers = expected_by_caller(with_callers(run_trades, run_calls))
        assert sum(w["trades"] for w in want_callers.values()) == 27 * 12
        assert len(want_callers) > 27 and all(c is not None for _, c in want_callers)
        assert_by_caller(buses[layout], run_id, want_callers)

    # the leaderboard: the seed-layout path-only run's callers
    path_id, path_dir = runs["seed"]["path-only"]
    paths = pl.read_parquet(path_dir / "truth" / "backtest_call_path_metrics.parquet")
    board = {r["caller_name"]: r for r in got["seed"]["caller_leaderboard"]}
    want_board = expected_leaderboard([paths])
    assert sorted(board) == sorted(want_board)
    for caller, w in want_board.items():
        assert_row(board[caller], w, caller)

    # run_summaries of the seed-layout policy run: pnl from its call results
    summary = next(r for r in got["seed"]["run_summaries"] if r["run_id"] == policy_id)
    assert_row(
        summary,
        {
            "total_trades": 12,
            "total_pnl_usd": sum(calls["pnl_usd"].to_list()),
            "avg_return_bps": statistics.fmean(calls["return_bps"].to_list()),
            "win_rate": sum(calls["win"].to_list()) / 12,
            "max_drawdown_bps": -max(abs(v) for v in trades["max_adverse_excursion_bps"]),
            "total_calls": 12,
            "unique_callers": calls["caller_name"].n_unique(),
        },
        "run_summaries",
    )
