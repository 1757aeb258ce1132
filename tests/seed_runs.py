"""Seed-layout runs for the tests: ``YYYY-MM/run_id=<uuid>/`` directories built the way the
seed system wrote them (Parquet files, run.json, logs, then ``_SUCCESS``), with the seed's
columns, and what a test reads back of a registered run (its published ``catalog.runs_d`` row,
its error, its artifacts)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
from builders import snapshot_query, write_parquet

from quantbot_bus.config import Config
from quantbot_bus.fsutil import write_atomic

MONTH = "2026-03"
CREATED = "2026-03-02T09:30:00.000Z"


def paths_table(run_id: str, n: int = 4) -> pa.Table:
    """``truth/paths`` with the seed's columns (a subset)."""
    return pa.table(
        {
            "run_id": [run_id] * n,
            "call_id": [f"call_m{i}_{1700000000000 + i}_0" for i in range(n)],
            "caller_name": [f"caller{i % 2}" for i in range(n)],
            "alert_ts_ms": pa.array([1700000000000 + i * 60_000 for i in range(n)], pa.int64()),
            "hit_2x": [i % 2 == 0 for i in range(n)],
            "peak_multiple": [1.5 + i for i in range(n)],
        }
    )


def trades_table(run_id: str, n: int = 3) -> pa.Table:
    """``policy/trades`` with the seed's columns (a subset)."""
    return pa.table(
        {
            "run_id": [run_id] * n,
            "policy_id": ["fixed-stop"] * n,
            "call_id": [f"c{i}" for i in range(n)],
            "realized_return_bps": [10.0 * i - 5 for i in range(n)],
            "stop_out": [i == 0 for i in range(n)],
        }
    )


def run_json(run_id: str, status: str = "completed", **fields: Any) -> dict[str, Any]:
    """A seed run.json (every field of the seed manifest); ``fields`` replace keys."""
    doc: dict[str, Any] = {
        "run_id": run_id,
        "run_type": "policy",
        "created_at": CREATED,
        "started_at": "2026-03-02T09:30:01.000Z",
        "completed_at": "2026-03-02T09:31:00.500Z",
        "status": status,
        "git_commit": "9f1c2ab",
        "git_branch": "feat/seed",
        "git_dirty": True,
        "dataset": {"from": "2026-02-01", "to": "2026-03-01", "interval": "5m", "calls_count": 4},
        "parameters": {"strategy_id": "s-7", "policy_id": "fixed-stop", "config_hash": "ab12"},
        "schema_version": {"manifest": "1.0.0", "artifacts": "1.0.0"},
        "artifacts": {
            "paths": {"rows": 4, "path": "truth/paths.parquet"},
            "trades": {"rows": 3, "path": "policy/trades.parquet"},
        },
        "timing": {"plan": 12, "coverage": 30, "execution": 700, "total": 812.5},
        "logs": {"stdout": "logs/stdout.txt", "stderr": "logs/stderr.txt"},
    }
    doc.update(fields)
    return doc


def make_seed_run(
    root: Path,
    run_id: str | None = None,
    *,
    status: str = "completed",
    success: bool = True,
    tables: dict[str, pa.Table] | None = None,
    stderr: str = "",
    month: str = MONTH,
    mutate: Callable[[dict[str, Any], Path], None] | None = None,
    **fields: Any,
) -> Path:
    """A seed run directory written in the seed's order: Parquet files, run.json, logs, then
    ``_SUCCESS`` (when ``success``). Returns the run directory."""
    run_id = run_id or str(uuid.uuid4())
    run_dir = root / month / f"run_id={run_id}"
    run_dir.mkdir(parents=True)
    if tables is None:
        tables = {"truth/paths": paths_table(run_id), "policy/trades": trades_table(run_id)}
    for name, table in tables.items():
        write_parquet(run_dir / f"{name}.parquet", table)
    doc = run_json(run_id, status, **fields)
    if mutate is not None:
        mutate(doc, run_dir)
    write_atomic(run_dir / "run.json", json.dumps(doc))
    (run_dir / "logs").mkdir()
    (run_dir / "logs" / "stdout.txt").write_text("planning...\nexecuting...\n")
    (run_dir / "logs" / "stderr.txt").write_text(stderr)
    if success:
        write_atomic(run_dir / "_SUCCESS", "2026-03-02T09:31:01.000Z\n")
    return run_dir


FAILED_STDERR = "".join(f"debug line {i}\n" for i in range(40)) + (
    'Traceback (most recent call last):\n  File "sim.ts", line 3\n'
    "Error: candles missing for mint So1abc between 2026-02-03 and 2026-02-04\n"
)


def run_row(config: Config, run_id: str) -> dict[str, Any]:
    """The published ``catalog.runs_d`` row of ``run_id`` as a dict."""
    cols = (
        "run_id, run_type, status, producer, shape, created_at, started_at, finished_at, "
        "git_commit, git_branch, git_dirty, params, metrics, error, artifact_count, deleted_at"
    )
    sql = f"SELECT {cols} FROM catalog.runs_d WHERE run_id = ?"  # noqa: S608 - constant columns
    rows = snapshot_query(config, sql, [run_id])
    assert rows, f"{run_id} is not in catalog.runs_d"
    return dict(zip([c.strip() for c in cols.split(",")], rows[0], strict=True))


def error_of(config: Config, run_id: str) -> str | None:
    rows = snapshot_query(config, "SELECT error FROM catalog.runs_d WHERE run_id = ?", [run_id])
    return rows[0][0] if rows else None


def artifact_names(config: Config, run_id: str) -> dict[str, int]:
    rows = snapshot_query(
        config, "SELECT name, rows FROM catalog.artifacts_f WHERE run_id = ?", [run_id]
    )
    return dict(rows)
