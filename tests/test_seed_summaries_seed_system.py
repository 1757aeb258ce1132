"""Runs built the way the seed system wrote them (``truth/paths``, ``policy/trades`` with the
seed's columns), beside the producer's runs in both layouts: the leaderboard, run_summaries,
``policy_comparison``'s excursion and tail-capture columns and ``policy_by_caller`` (each trade
under its caller, NULL when the run does not name it); ``created_at`` a TIMESTAMP in every
summary; leaving runs and a lost path segment. Real producers, real Parquet, real ``sync``.
"""

# ruff: noqa: S608 - SQL from this module's constants (column lists)

from __future__ import annotations

import shutil
import statistics
import uuid
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from builders import snapshot_query, sync
from structlog.testing import capture_logs
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
from summaries_runs import SEED_CREATED, new_bus, produce, seed_paths, seed_run, seed_trades

from quantbot_bus.exports.store import TABLES_DIR


@pytest.fixture
def seed_bus(tmp_path: Path) -> dict[str, Any]:
    """A bus holding seed-system runs (two path-only, one policy) beside the producer's
    path-only runs in both layouts, synced."""
    cfg = new_bus(tmp_path)
    ids = {k: str(uuid.uuid4()) for k in ("p1", "p2", "pol")}
    p1 = seed_paths(ids["p1"], ["seed_alpha", "seed_beta"], 24, seed=1)
    p2 = seed_paths(ids["p2"], ["seed_beta", "seed_gamma"], 18, seed=2)
    pol_paths = seed_paths(ids["pol"], ["seed_alpha", "seed_delta"], 10, seed=3)
    trades = seed_trades(ids["pol"], pol_paths.column("call_id").to_pylist(), seed=4)
    dirs = {
        "p1": seed_run(cfg.root, "path-only", {"truth/paths": p1}, ids["p1"]),
        "p2": seed_run(cfg.root, "path-only", {"truth/paths": p2}, ids["p2"]),
        "pol": seed_run(
            cfg.root, "policy", {"truth/paths": pol_paths, "policy/trades": trades}, ids["pol"]
        ),
    }
    v1_id, v1_dir = produce(cfg, "path-only", "v1", seed=5)
    seed_id, seed_dir = produce(cfg, "path-only", "seed", seed=6)
    sync(cfg)
    return {
        "cfg": cfg,
        "ids": {**ids, "v1": v1_id, "seed": seed_id},
        "dirs": {**dirs, "v1": v1_dir, "seed": seed_dir},
        "frames": {
            "p1": pl.from_arrow(p1),
            "p2": pl.from_arrow(p2),
            "pol_paths": pl.from_arrow(pol_paths),
            "trades": pl.from_arrow(trades),
            "v1": pl.read_parquet(v1_dir / "backtest_call_path_metrics.parquet"),
            "seed": pl.read_parquet(seed_dir / "truth" / "backtest_call_path_metrics.parquet"),
        },
    }


def test_seed_system_runs_feed_the_summaries(seed_bus: dict[str, Any]) -> None:
    cfg, ids, frames = seed_bus["cfg"], seed_bus["ids"], seed_bus["frames"]

    # the leaderboard: the path-only runs of every layout (the policy run's paths do not count)
    board = {r["caller_name"]: r for r in query(cfg, "SELECT * FROM exports.caller_leaderboard")}
    want = expected_leaderboard([frames[k] for k in ("p1", "p2", "v1", "seed")])
    assert sorted(board) == sorted(want)
    assert "seed_delta" not in board and board["seed_beta"]["runs_seen"] == 2
    for caller, w in want.items():
        assert_row(board[caller], w, caller)

    # run_summaries: a seed path-only run and the seed policy run (no pnl: no per-call results)
    summaries = {r["run_id"]: r for r in query(cfg, "SELECT * FROM exports.run_summaries")}
    assert set(summaries) == set(ids.values())
    p1 = frames["p1"]
    assert_row(
        summaries[ids["p1"]],
        {
            "run_type": "path-only",
            "total_trades": 0,
            "total_pnl_usd": None,
            "total_pnl_pct": None,
            "avg_return_bps": None,
            "win_rate": None,
            "max_drawdown_bps": min(p1["dd_bps"].to_list()),
            "median_drawdown_bps": statistics.median(p1["dd_bps"].to_list()),
            "total_calls": 24,
            "unique_callers": 2,
            "created_at": SEED_CREATED,
        },
        "path-only run",
    )
    trades, pol_paths = frames["trades"], frames["pol_paths"]
    rr = trades["realized_return_bps"].to_list()
    assert_row(
        summaries[ids["pol"]],
        {
            "run_type": "policy",
            "total_trades": 2 * 11,
            "total_pnl_usd": None,
            "total_pnl_pct": None,
            "avg_return_bps": statistics.fmean(rr),
            "win_rate": sum(v > 0 for v in rr) / len(rr),
            "max_drawdown_bps": min(pol_paths["dd_bps"].to_list()),
            "median_drawdown_bps": statistics.median(pol_paths["dd_bps"].to_list()),
            "total_calls": 10,
            "unique_callers": 2,
            "created_at": SEED_CREATED,
        },
        "policy run",
    )

    # policy_comparison: every column, the new ones included, from policy/trades
    rows = query(
        cfg,
        f"SELECT run_id, policy_id, {COMPARISON_COLUMNS}, created_at "
        "FROM exports.policy_comparison",
    )
    want_cmp = expected_comparison(trades)
    assert sorted((r["run_id"], r["policy_id"]) for r in rows) == [
        (ids["pol"], p) for p in sorted(want_cmp)
    ]
    for r in rows:
        assert_row(r, {**want_cmp[r["policy_id"]], "created_at": SEED_CREATED}, r["policy_id"])

    # policy_by_caller: the seed's trades per policy and caller, the callers from truth/paths;
    # the call the paths do not have counts under the NULL caller, one trade per policy
    want_callers = expected_by_caller(with_callers(trades, pol_paths))
    assert {k: w["trades"] for k, w in want_callers.items() if k[1] is None} == {
        ("fixed-stop", None): 1,
        ("trail-25", None): 1,
    }
    assert_by_caller(cfg, ids["pol"], want_callers)
    by_caller = query(cfg, "SELECT run_id, caller_name, created_at FROM exports.policy_by_caller")
    assert {(r["run_id"], r["created_at"]) for r in by_caller} == {(ids["pol"], SEED_CREATED)}
    assert by_caller[-1]["caller_name"] is None  # last: the NULL caller of the last policy


def test_created_at_is_a_utc_timestamp_in_every_summary(seed_bus: dict[str, Any]) -> None:
    cfg = seed_bus["cfg"]
    types = {
        table: data_type
        for table, data_type in snapshot_query(
            cfg,
            "SELECT table_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'exports' AND column_name = 'created_at'",
        )
    }
    for name in ("run_summaries", "policy_comparison", "policy_by_caller", "frontiers"):
        assert types[name] == "TIMESTAMP", (name, types[name])
    assert types["frontier_best"] == "TIMESTAMP" and types["runs"] == "TIMESTAMP"


def test_leaving_runs_leave_the_leaderboard(seed_bus: dict[str, Any]) -> None:
    """A seed-system run and a seed-layout producer run deleted in one sync: their calls leave
    the leaderboard (counts and histograms, from their own path tables); the rest stays."""
    cfg, dirs, frames = seed_bus["cfg"], seed_bus["dirs"], seed_bus["frames"]
    shutil.rmtree(dirs["p2"])
    shutil.rmtree(dirs["seed"])
    sync(cfg)
    board = {r["caller_name"]: r for r in query(cfg, "SELECT * FROM exports.caller_leaderboard")}
    want = expected_leaderboard([frames["p1"], frames["v1"]])
    assert sorted(board) == sorted(want) and "seed_gamma" not in board
    assert board["seed_beta"]["runs_seen"] == 1
    for caller, w in want.items():
        assert_row(board[caller], w, caller)
    left = {r[0] for r in snapshot_query(cfg, "SELECT run_id FROM exports.run_summaries")}
    assert left == {seed_bus["ids"][k] for k in ("p1", "pol", "v1")}


def test_a_lost_seed_path_segment_rebuilds_the_leaderboard_exactly(
    seed_bus: dict[str, Any],
) -> None:
    """The segment of ``truth__paths`` lost while a seed run leaves: the histograms are rebuilt
    from every path table's segments (the v1 and seed-layout producer runs' too), exact."""
    cfg, dirs, frames = seed_bus["cfg"], seed_bus["dirs"], seed_bus["frames"]
    lost = sorted((cfg.exports_dir / TABLES_DIR / "truth__paths").glob("*.parquet"))
    assert lost
    for path in lost:
        path.unlink()
    shutil.rmtree(dirs["p2"])
    with capture_logs() as logs:
        sync(cfg)
    assert "export.histograms_rebuilt" in {e["event"] for e in logs}
    board = {r["caller_name"]: r for r in query(cfg, "SELECT * FROM exports.caller_leaderboard")}
    want = expected_leaderboard([frames[k] for k in ("p1", "v1", "seed")])
    assert sorted(board) == sorted(want)
    for caller, w in want.items():
        assert_row(board[caller], w, caller)
