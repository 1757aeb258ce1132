"""Buses and runs for the summary tests: a fresh bus in a directory, one run of the real
producer in either layout, and seed-system runs (``truth/paths``, ``policy/trades`` with every
column of the seed's tables, coherent values) written with :func:`seed_runs.make_seed_run`."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
from seed_runs import make_seed_run

from quantbot_bus.backtest import optimize as opt
from quantbot_bus.backtest.runner import run_backtest
from quantbot_bus.config import Config

D_FROM, D_TO = dt.date(2026, 1, 2), dt.date(2026, 1, 8)
SEED_CREATED = dt.datetime(2026, 3, 2, 9, 30)  # run_json()'s created_at, naive UTC


def new_bus(base: Path) -> Config:
    cfg = Config(root=base / "artifacts", exports_dir=base / "exports", state_dir=base / "state")
    cfg = cfg.validate()
    for d in (cfg.root, cfg.exports_dir, cfg.state_dir):
        d.mkdir(parents=True)
    return cfg


def produce(
    cfg: Config, strategy: str, layout: str, seed: int = 3, calls: int = 12
) -> tuple[str, Path]:
    """One run of the real producer (5-minute candles); (run_id, run_dir)."""
    result = run_backtest(
        strategy,
        "5m",
        D_FROM,
        D_TO,
        calls,
        seed,
        cfg.root,
        horizon_minutes=240,
        constraints=opt.Constraints(max_stop_out_rate=1.0, min_trades=1),
        layout=layout,
    )
    return result.run_id, result.run_dir


def seed_paths(run_id: str, callers: list[str], n: int, seed: int) -> pa.Table:
    """``truth/paths`` with every column of the seed's table, coherent values."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for i in range(n):
        alert = 1_767_225_600_000 + i * 3_600_000
        peak = round(1.0 + rng.random() * 4.5, 6)
        hit = {m: peak >= m for m in (2, 3, 4)}
        t_hit = {m: (m - 1) * 300_000 + i * 60_000 if hit[m] else None for m in (2, 3, 4)}
        rows.append(
            {
                "run_id": run_id,
                "call_id": f"call_So1{i:03d}_{alert}_0",
                "caller_name": callers[i % len(callers)],
                "mint": f"So1{i:03d}",
                "chain": "solana",
                "interval": "5m",
                "alert_ts_ms": alert,
                "p0": 0.001 * (1 + i),
                "hit_2x": hit[2],
                "hit_3x": hit[3],
                "hit_4x": hit[4],
                "t_2x_ms": t_hit[2],
                "t_3x_ms": t_hit[3],
                "t_4x_ms": t_hit[4],
                "dd_bps": -round(rng.random() * 9_500, 3),
                "dd_to_2x_bps": -round(rng.random() * 3_000, 3) if hit[2] else None,
                "alert_to_activity_ms": rng.choice([0, 60_000, None]),
                "peak_multiple": peak,
            }
        )
    schema = pa.schema(
        [
            ("run_id", pa.string()),
            ("call_id", pa.string()),
            ("caller_name", pa.string()),
            ("mint", pa.string()),
            ("chain", pa.string()),
            ("interval", pa.string()),
            ("alert_ts_ms", pa.int64()),
            ("p0", pa.float64()),
            ("hit_2x", pa.bool_()),
            ("hit_3x", pa.bool_()),
            ("hit_4x", pa.bool_()),
            ("t_2x_ms", pa.int64()),
            ("t_3x_ms", pa.int64()),
            ("t_4x_ms", pa.int64()),
            ("dd_bps", pa.float64()),
            ("dd_to_2x_bps", pa.float64()),
            ("alert_to_activity_ms", pa.int64()),
            ("peak_multiple", pa.float64()),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def seed_trades(run_id: str, call_ids: list[str], seed: int) -> pa.Table:
    """``policy/trades`` with every column of the seed's table: two policies over the calls,
    and one trade of a call that the run's paths do not have (no caller for it)."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for policy in ("fixed-stop", "trail-25"):
        for k, call_id in enumerate([*call_ids, "call_orphan_0"]):
            entry = 1_767_225_600_000 + k * 3_600_000
            ret = round(rng.uniform(-5_000, 12_000), 3)
            held = rng.randrange(5, 240) * 60_000
            rows.append(
                {
                    "run_id": run_id,
                    "policy_id": policy,
                    "call_id": call_id,
                    "entry_ts_ms": entry,
                    "entry_px": 0.001,
                    "exit_ts_ms": entry + held,
                    "exit_px": 0.001 * (1 + ret / 10_000),
                    "exit_reason": "stop_loss" if ret < -3_000 else "take_profit",
                    "realized_return_bps": ret,
                    "stop_out": ret < -3_000,
                    "max_adverse_excursion_bps": -round(rng.random() * 6_000, 3),
                    "time_exposed_ms": held,
                    "tail_capture": None if k % 5 == 0 else round(rng.uniform(-0.5, 1.0), 6),
                }
            )
    schema = pa.schema(
        [
            ("run_id", pa.string()),
            ("policy_id", pa.string()),
            ("call_id", pa.string()),
            ("entry_ts_ms", pa.int64()),
            ("entry_px", pa.float64()),
            ("exit_ts_ms", pa.int64()),
            ("exit_px", pa.float64()),
            ("exit_reason", pa.string()),
            ("realized_return_bps", pa.float64()),
            ("stop_out", pa.bool_()),
            ("max_adverse_excursion_bps", pa.float64()),
            ("time_exposed_ms", pa.int64()),
            ("tail_capture", pa.float64()),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def seed_run(root: Path, run_type: str, tables: dict[str, pa.Table], run_id: str) -> Path:
    """A seed-system run (run.json, logs, ``_SUCCESS``) holding ``tables``."""
    artifacts = {
        name.rsplit("/", 1)[1]: {"rows": t.num_rows, "path": f"{name}.parquet"}
        for name, t in tables.items()
    }
    return make_seed_run(root, run_id, tables=tables, run_type=run_type, artifacts=artifacts)
