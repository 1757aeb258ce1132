"""``exports.policy_by_caller``: which caller a trade counts under, in the order the summary
takes it (the policy table's own ``caller_name``, else the same run's per-call results, else its
call paths, else NULL), in a v1 run and a seed-system run; a leaving run leaves it and its
export state.

Real Parquet, real ``sync``; the expected rows are computed with Polars from the tables written
(:func:`summaries_expected.with_callers`, :func:`summaries_expected.expected_by_caller`).
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
from builders import make_run, sync
from summaries_expected import assert_by_caller, expected_by_caller, query, with_callers
from summaries_runs import SEED_CREATED, new_bus, seed_paths, seed_run, seed_trades


def call_results(run_id: str, call_ids: list[str], callers: list[str]) -> pa.Table:
    """``backtest_call_results`` naming ``callers`` for ``call_ids`` (one row per call)."""
    n = len(call_ids)
    return pa.table(
        {
            "run_id": [run_id] * n,
            "call_id": call_ids,
            "caller_name": callers,
            "policy_id": ["fixed-stop"] * n,
            "return_bps": [100.0 * (i - 2) for i in range(n)],
            "pnl_usd": [float(i) for i in range(n)],
            "pnl_pct": [0.1 * i for i in range(n)],
            "win": [i > 2 for i in range(n)],
        }
    )


def caller_column(trades: pa.Table, callers: dict[str, str]) -> pa.Table:
    """``trades`` with a ``caller_name`` column of its own: ``callers[call_id]``, else null."""
    names = [callers.get(c) for c in trades.column("call_id").to_pylist()]
    return trades.append_column("caller_name", pa.array(names, pa.string()))


def test_each_trade_counts_under_the_first_caller_found(tmp_path: Path) -> None:
    cfg = new_bus(tmp_path)

    # a v1 run: per-call results for 4 of its 8 calls (callers unlike the paths'), call paths
    # for 7 of them; the 8th call is in neither (the NULL caller), and so is the orphan trade
    v1_id = "v1-policy-run"
    paths = seed_paths(v1_id, ["path_a", "path_b"], 8, seed=11)
    calls = paths.column("call_id").to_pylist()
    v1_trades = seed_trades(v1_id, calls, seed=12)
    v1_calls = call_results(v1_id, calls[:4], ["result_x", "result_y", "result_x", "result_z"])
    v1_paths = paths.slice(0, 7)
    v1_dir = make_run(
        cfg.root,
        "backtest-policy",
        v1_id,
        {
            "backtest_policy_results": v1_trades,
            "backtest_call_results": v1_calls,
            "backtest_call_path_metrics": v1_paths,
        },
    )

    # a seed-system run whose policy/trades names the caller of some trades itself (unlike its
    # truth/paths); the other trades take the paths' caller, the orphan call none
    seed_id = str(uuid.uuid4())
    s_paths = seed_paths(seed_id, ["seed_alpha", "seed_beta", "seed_gamma"], 9, seed=13)
    s_calls = s_paths.column("call_id").to_pylist()
    own = {c: "own_caller" for c in s_calls[::4]}
    s_trades = caller_column(seed_trades(seed_id, s_calls, seed=14), own)
    seed_run(cfg.root, "policy", {"truth/paths": s_paths, "policy/trades": s_trades}, seed_id)
    sync(cfg)

    # expected, in Polars: the first caller found, in that order
    def frame(table: pa.Table) -> pl.DataFrame:
        out = pl.from_arrow(table)
        assert isinstance(out, pl.DataFrame)
        return out

    want_v1 = expected_by_caller(with_callers(frame(v1_trades), frame(v1_calls), frame(v1_paths)))
    callers = {caller for _policy, caller in want_v1}
    assert callers == {"result_x", "result_y", "result_z", "path_a", "path_b", None}
    # NULL: the 8th call and the orphan, per policy
    assert want_v1[("fixed-stop", None)]["trades"] == 2
    assert_by_caller(cfg, v1_id, want_v1)

    want_seed = expected_by_caller(with_callers(frame(s_trades), frame(s_paths)))
    callers = {caller for _policy, caller in want_seed}
    assert callers == {"own_caller", "seed_alpha", "seed_beta", "seed_gamma", None}
    assert want_seed[("trail-25", "own_caller")]["trades"] == 3
    assert_by_caller(cfg, seed_id, want_seed)
    created = {
        r["run_id"]: r["created_at"]
        for r in query(cfg, "SELECT run_id, created_at FROM exports.policy_by_caller")
    }
    assert created[seed_id] == SEED_CREATED

    # the v1 run leaves: its rows leave the summary, the seed run's stay
    shutil.rmtree(v1_dir)
    sync(cfg)
    left = query(cfg, "SELECT DISTINCT run_id FROM exports.policy_by_caller")
    assert [r["run_id"] for r in left] == [seed_id]
    assert_by_caller(cfg, seed_id, want_seed)
    con = duckdb.connect(str(cfg.catalog_path), read_only=True)  # and its state rows go
    try:
        kept = con.execute("SELECT DISTINCT run_id FROM exports_state.policy_caller_p").fetchall()
    finally:
        con.close()
    assert kept == [(seed_id,)]
