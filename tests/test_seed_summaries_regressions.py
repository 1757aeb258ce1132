"""Seed-layout policy runs as the regression baseline of a later v1-layout run with the same
params, read back from their own ``policy/backtest_call_results`` files. Real producers, real
Parquet, real ``sync``."""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path

import polars as pl
import pytest
from builders import sync
from summaries_expected import query
from summaries_runs import new_bus, produce

from quantbot_bus.provenance import git_info


def test_seed_layout_policy_runs_are_regression_baselines(tmp_path: Path) -> None:
    """Three seed-layout policy runs are the baseline of a later v1-layout run with the same
    params: read back from their own ``policy/backtest_call_results`` files."""
    cfg = new_bus(tmp_path)
    branch = (git_info() or {}).get("branch")  # what RunWriter records for these runs
    settings = dataclasses.replace(cfg.regressions, reference_branch=branch or "main")
    cfg = dataclasses.replace(cfg, regressions=settings)
    baseline = [produce(cfg, "policy", "seed", seed=s, calls=40) for s in (1, 2, 3)]
    sync(cfg)
    new_id, new_dir = produce(cfg, "policy", "v1", seed=4, calls=40)
    sync(cfg)
    rows = query(
        cfg,
        "SELECT metric, baseline_runs, n_new, n_baseline, baseline_value, new_value, reason "
        "FROM exports.regressions WHERE run_id = ? ORDER BY metric",
        [new_id],
    )
    assert [r["metric"] for r in rows] == ["mean_return_bps", "sharpe_per_call"]
    for r in rows:
        assert sorted(r["baseline_runs"]) == sorted(run_id for run_id, _ in baseline), r
        assert (r["n_new"], r["n_baseline"]) == (40, 3 * 40) and "left out" not in r["reason"]
    pooled = [
        v
        for _, run_dir in baseline
        for v in pl.read_parquet(run_dir / "policy" / "backtest_call_results.parquet")["return_bps"]
    ]
    new = pl.read_parquet(new_dir / "backtest_call_results.parquet")["return_bps"].to_list()
    assert rows[0]["baseline_value"] == pytest.approx(statistics.fmean(pooled), rel=1e-9)
    assert rows[0]["new_value"] == pytest.approx(statistics.fmean(new), rel=1e-9)
