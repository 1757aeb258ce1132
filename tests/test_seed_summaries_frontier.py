"""A seed ``optimization`` run's ``results/frontier`` (the seed's columns, no trades) in the
frontier summaries: its best constrained policy per caller, its rows with the Pareto flag, its
run summary. Real Parquet, real ``sync``."""

from __future__ import annotations

import statistics
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
from builders import sync
from summaries_expected import assert_row, query
from summaries_runs import SEED_CREATED, new_bus, seed_run


def test_the_seed_frontier_feeds_the_frontier_summaries(tmp_path: Path) -> None:
    """A seed ``optimization`` run's ``results/frontier`` (the seed's columns, no trades): its
    best constrained policy per caller, its rows with the Pareto flag, its run summary."""
    cfg = new_bus(tmp_path)
    run_id = str(uuid.uuid4())
    rows = [
        # caller, tp, sl, meets, objective, avg, median, stop-out
        ("seed_alpha", 2.0, 0.2, True, 1.5, 900.0, 400.0, 0.30),
        ("seed_alpha", 3.0, 0.2, True, 2.5, 1_200.0, 300.0, 0.45),
        ("seed_alpha", 5.0, 0.5, False, 4.0, 2_000.0, -100.0, 0.70),
        ("seed_beta", 2.0, 0.35, True, 0.5, 150.0, 50.0, 0.20),
        ("seed_beta", 3.0, 0.35, True, 0.4, 100.0, 20.0, 0.25),
    ]
    ranked: list[dict[str, Any]] = []
    for caller in ("seed_alpha", "seed_beta"):
        mine = sorted((r for r in rows if r[0] == caller), key=lambda r: (not r[3], -r[4]))
        for rank, r in enumerate(mine, start=1):
            ranked.append(
                {
                    "run_id": run_id,
                    "caller_name": caller,
                    "policy_params": f'{{"take_profit": {r[1]}, "stop_loss": {r[2]}}}',
                    "meets_constraints": r[3],
                    "objective_score": r[4],
                    "avg_return_bps": r[5],
                    "median_return_bps": r[6],
                    "stop_out_rate": r[7],
                    "rank": rank,
                }
            )
    seed_run(cfg.root, "optimization", {"results/frontier": pa.Table.from_pylist(ranked)}, run_id)
    sync(cfg)

    best = query(cfg, "SELECT * FROM exports.frontier_best ORDER BY caller_name")
    assert [(r["caller_name"], r["objective_score"], r["rank"], r["run_id"]) for r in best] == [
        ("seed_alpha", 2.5, 1, run_id),
        ("seed_beta", 0.5, 1, run_id),
    ]
    assert {r["created_at"] for r in best} == {SEED_CREATED}
    front = query(
        cfg,
        "SELECT caller_name, objective_score, pareto, kind, created_at FROM exports.frontiers "
        "ORDER BY caller_name, rank",
    )
    # on the Pareto set: no other row of the caller scores at least as high with a stop-out
    # rate at least as low (one strictly)
    want = []
    for caller, _tp, _sl, _meets, score, _avg, _med, stop in sorted(
        rows, key=lambda r: (r[0], not r[3], -r[4])
    ):
        dominated = any(
            o[0] == caller and o[4] >= score and o[7] <= stop and (o[4] > score or o[7] < stop)
            for o in rows
        )
        want.append((caller, score, not dominated, "policy", SEED_CREATED))
    assert [tuple(r.values()) for r in front] == want
    summary = query(cfg, "SELECT * FROM exports.run_summaries WHERE run_id = ?", [run_id])
    assert_row(
        summary[0],
        {
            "run_type": "optimization",
            "total_trades": 0,  # the seed's frontier has no trades column
            "avg_return_bps": statistics.fmean([1_200.0, 150.0]),  # the rank-1 rows, unweighted
            "win_rate": None,
            "total_pnl_usd": None,
            "unique_callers": 2,
            "created_at": SEED_CREATED,
        },
        "optimization run",
    )
