"""Runs holding the tables the exports consolidate (realistic columns, seeded random values)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pyarrow as pa

from quantbot_bus.config import Config

from .runs import make_run

# ---------------------------------------------------------------------------- export-shaped runs

PATH = "backtest_call_path_metrics"
POLICY = "backtest_policy_results"
CALLS = "backtest_call_results"
FRONTIER = "frontier"
CALLERS = ("alpha", "bravo", "charlie", "delta")

#: The columns the backtest (quantbot_bus.backtest) writes to each table, before the
#: ``created_at`` it adds itself; tests/test_backtest_runs.py checks its output against them.
PATH_COLUMNS = {
    "run_id": pa.string(),
    "call_id": pa.string(),
    "caller_name": pa.string(),
    "mint": pa.string(),
    "chain": pa.string(),
    "interval": pa.string(),
    "alert_ts_ms": pa.int64(),
    "p0": pa.float64(),
    "hit_2x": pa.bool_(),
    "t_2x_ms": pa.int64(),
    "hit_3x": pa.bool_(),
    "t_3x_ms": pa.int64(),
    "hit_4x": pa.bool_(),
    "t_4x_ms": pa.int64(),
    "dd_bps": pa.float64(),
    "dd_to_2x_bps": pa.float64(),
    "alert_to_activity_ms": pa.int64(),
    "peak_multiple": pa.float64(),
}
POLICY_COLUMNS = (
    "run_id",
    "policy_id",
    "call_id",
    "realized_return_bps",
    "stop_out",
    "max_adverse_excursion_bps",
    "time_exposed_ms",
    "tail_capture",
    "entry_ts_ms",
    "exit_ts_ms",
    "entry_px",
    "exit_px",
    "exit_reason",
)
CALL_RESULT_COLUMNS = (
    "run_id",
    "call_id",
    "caller_name",
    "policy_id",
    "entry_px",
    "exit_px",
    "pnl_usd",
    "pnl_pct",
    "return_bps",
    "win",
)
FRONTIER_COLUMNS = (
    "run_id",
    "caller_name",
    "policy_params",
    "meets_constraints",
    "objective_score",
    "avg_return_bps",
    "median_return_bps",
    "stop_out_rate",
    "rank",
)


def path_metrics(run_id: str, n: int, seed: int, *, extra: bool = False) -> pa.Table:
    """``n`` rows of call path metrics; ``extra`` adds a column (a producer that added one)."""
    rng = random.Random(seed)
    cols: dict[str, list[Any]] = {k: [] for k in PATH_COLUMNS}
    for i in range(n):
        peak = round(1 + rng.random() * rng.choice((0.5, 2, 6)), 6)
        dd = 0.0 if rng.random() < 0.1 else -round(rng.random() * 8000, 3)
        hit2, hit3, hit4 = peak >= 2, peak >= 3, peak >= 4
        cols["run_id"].append(run_id)
        cols["call_id"].append(f"{run_id}-c{i}")
        cols["caller_name"].append(rng.choice(CALLERS))
        cols["mint"].append(f"mint{rng.randrange(50)}")
        cols["chain"].append("solana")
        cols["interval"].append("1m")
        cols["alert_ts_ms"].append(1_700_000_000_000 + i * 60_000)
        cols["p0"].append(rng.random())
        cols["hit_2x"].append(hit2)
        cols["t_2x_ms"].append(rng.randrange(60_000, 9_000_000) if hit2 else None)
        cols["hit_3x"].append(hit3)
        cols["t_3x_ms"].append(rng.randrange(60_000, 9_000_000) if hit3 else None)
        cols["hit_4x"].append(hit4)
        cols["t_4x_ms"].append(rng.randrange(60_000, 9_000_000) if hit4 else None)
        cols["dd_bps"].append(dd)
        cols["dd_to_2x_bps"].append(dd if hit2 else None)
        cols["alert_to_activity_ms"].append(rng.randrange(0, 100_000))
        cols["peak_multiple"].append(peak)
    table = pa.table(cols, schema=pa.schema(list(PATH_COLUMNS.items())))
    if extra:
        table = table.append_column("liquidity_usd", pa.array([float(i) for i in range(n)]))
    return table


def policy_tables(run_id: str, n: int, seed: int) -> dict[str, pa.Table]:
    """The policy backtest's two tables: three policies per call, and one result per call."""
    rng = random.Random(seed)
    policies = ("trail-10", "fixed-2x", "time-1h")
    pol: dict[str, list[Any]] = {k: [] for k in POLICY_COLUMNS}
    res: dict[str, list[Any]] = {k: [] for k in CALL_RESULT_COLUMNS}
    for i in range(n):
        for p in policies:
            ret = round(rng.gauss(50, 900), 2)
            pol["run_id"].append(run_id)
            pol["policy_id"].append(p)
            pol["call_id"].append(f"c{i}")
            pol["realized_return_bps"].append(ret)
            pol["stop_out"].append(ret < -500)
            pol["max_adverse_excursion_bps"].append(-round(rng.random() * 3000, 1))
            pol["time_exposed_ms"].append(rng.randrange(1000, 3_600_000))
            pol["tail_capture"].append(rng.random())
            pol["entry_ts_ms"].append(1_700_000_000_000)
            pol["exit_ts_ms"].append(1_700_000_100_000)
            pol["entry_px"].append(1.0)
            pol["exit_px"].append(1 + ret / 10_000)
            pol["exit_reason"].append("stop" if ret < -500 else "target")
        ret = round(rng.gauss(30, 700), 2)
        res["run_id"].append(run_id)
        res["call_id"].append(f"c{i}")
        res["caller_name"].append(rng.choice(CALLERS))
        res["policy_id"].append(policies[0])
        res["entry_px"].append(1.0)
        res["exit_px"].append(1 + ret / 10_000)
        res["pnl_usd"].append(ret / 10)
        res["pnl_pct"].append(ret / 100)
        res["return_bps"].append(ret)
        res["win"].append(ret > 0)
    return {POLICY: pa.table(pol), CALLS: pa.table(res)}


def frontier_table(run_id: str, seed: int) -> pa.Table:
    """An optimizer's frontier: five ranked parameter sets per caller."""
    rng = random.Random(seed)
    cols: dict[str, list[Any]] = {k: [] for k in FRONTIER_COLUMNS}
    for caller in CALLERS:
        for r in range(1, 6):
            cols["run_id"].append(run_id)
            cols["caller_name"].append(caller)
            cols["policy_params"].append(json.dumps({"tp": r, "sl": rng.randrange(5, 50)}))
            cols["meets_constraints"].append(rng.random() < 0.6)
            cols["objective_score"].append(round(rng.random() * 10, 4))
            cols["avg_return_bps"].append(rng.gauss(40, 100))
            cols["median_return_bps"].append(rng.gauss(30, 100))
            cols["stop_out_rate"].append(rng.random())
            cols["rank"].append(r)
    return pa.table(cols)


def add_path_run(
    cfg: Config, run_id: str, n: int = 40, seed: int = 0, *, extra: bool = False, **kw: Any
) -> Path:
    """A ``backtest-path`` run of ``n`` call path metrics (``kw``: metadata overrides)."""
    tables: dict[str, pa.Table | int] = {PATH: path_metrics(run_id, n, seed, extra=extra)}
    return make_run(cfg.root, "backtest-path", run_id, tables, **kw)


def add_policy_run(cfg: Config, run_id: str, n: int = 30, seed: int = 0, **kw: Any) -> Path:
    """A ``backtest-policy`` run: policy results and call results for ``n`` calls."""
    tables: dict[str, pa.Table | int] = dict(policy_tables(run_id, n, seed))
    return make_run(cfg.root, "backtest-policy", run_id, tables, **kw)


def add_optimize_run(cfg: Config, run_id: str, seed: int, created_at: str) -> Path:
    """A ``backtest-optimize`` run: a frontier and a one-row summary."""
    tables = {FRONTIER: frontier_table(run_id, seed), "summary": pa.table({"n": [1]})}
    return make_run(cfg.root, "backtest-optimize", run_id, tables, created_at=created_at)
