"""Producers writing the seed layout: ``RunWriter(layout="seed")`` (files, run.json and
``_SUCCESS`` in the order the bus relies on, a failed run's stderr) and the backtest producers'
``--layout seed``, each registered by ``sync``."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pyarrow as pa
import pytest
from builders import write_parquet
from click.testing import CliRunner
from seed_runs import artifact_names, paths_table, run_row, trades_table

from quantbot_bus import pipeline
from quantbot_bus.backtest.runner import producer_main
from quantbot_bus.cli import main
from quantbot_bus.config import Config
from quantbot_bus.contract.layout import is_seed_dir
from quantbot_bus.errors import ContractError
from quantbot_bus.writer import RunWriter


def test_run_writer_seed_layout_round_trip(bus: Config) -> None:
    params = {"strategy_id": "s1", "tp": 2.0}
    with RunWriter(
        bus.root, "optimization", layout="seed", params=params, producer=("my-opt", "2.1"), git=None
    ) as w:
        w.write_table("truth/paths", paths_table(w.run_id))
        w.write_table("frontier", pa.table({"rank": [1, 2, 3]}))  # no folder: results/
        target = w.path_for("policy/trades")
        write_parquet(target, trades_table(w.run_id))
        w.add_file("policy/trades", target)
        w.set_metrics(calls=4, best_return_bps=12.5)
        with pytest.raises(ContractError, match="not valid for the seed layout"):
            w.write_table("nowhere/x", paths_table("x"))
    run_dir = w.run_dir
    assert run_dir.parent.parent == bus.root and is_seed_dir(str(run_dir))
    assert run_dir.name == f"run_id={w.run_id}" and str(uuid.UUID(w.run_id)) == w.run_id
    names = sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file())
    assert names == [
        "_SUCCESS",
        "logs/stderr.txt",
        "logs/stdout.txt",
        "policy/trades.parquet",
        "results/frontier.parquet",
        "run.json",
        "truth/paths.parquet",
    ]
    # the order the bus relies on: logs, run.json, then _SUCCESS
    mtimes = {
        n: os.stat(run_dir / n).st_mtime_ns for n in ("logs/stderr.txt", "run.json", "_SUCCESS")
    }
    assert mtimes["logs/stderr.txt"] <= mtimes["run.json"] <= mtimes["_SUCCESS"]
    doc = json.loads((run_dir / "run.json").read_text())
    assert doc["status"] == "completed" and doc["parameters"] == params
    assert doc["artifacts"]["paths"] == {"rows": 4, "path": "truth/paths.parquet"}

    with pytest.raises(RuntimeError, match="no candles"):
        with RunWriter(bus.root, "policy", layout="seed", git=None) as broken:
            broken.write_table("errors/errors", pa.table({"call_id": ["c1"]}))
            raise RuntimeError("no candles for So1abc")
    assert not (broken.run_dir / "_SUCCESS").exists()
    assert "RuntimeError: no candles for So1abc" in (broken.run_dir / "logs/stderr.txt").read_text()

    result = pipeline.sync(bus)
    assert set(result.registered) == {w.run_id, broken.run_id}
    row = run_row(bus, w.run_id)
    assert (row["status"], row["producer"], row["run_type"]) == (
        "success",
        "my-opt",
        "optimization",
    )
    assert json.loads(row["params"]) == params
    metrics = json.loads(row["metrics"])
    assert metrics["calls"] == 4 and metrics["best_return_bps"] == 12.5
    assert "timing_total_ms" in metrics
    assert artifact_names(bus, w.run_id) == {
        "truth/paths": 4,
        "results/frontier": 3,
        "policy/trades": 3,
    }
    failed = run_row(bus, broken.run_id)
    assert failed["status"] == "failed" and "RuntimeError: no candles for So1abc" in failed["error"]
    with pytest.raises(ContractError, match="layout 'flat'"):
        RunWriter(bus.root, "x", layout="flat")


def test_the_producers_emit_the_seed_layout(
    bus: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    runner = CliRunner()
    out = runner.invoke(
        main,
        [
            "backtest",
            "run",
            "--strategy",
            "path-only",
            "--calls",
            "12",
            "--layout",
            "seed",
            "--root",
            str(bus.root),
        ],
    )
    assert out.exit_code == 0, out.output
    run_id, run_dir = out.stdout.strip().split("\t")
    assert is_seed_dir(run_dir) and Path(run_dir).parent.parent == bus.root
    assert (
        producer_main("policy", ["--root", str(bus.root), "--calls", "12", "--layout", "seed"]) == 0
    )
    policy_id, policy_dir = capsys.readouterr().out.strip().split("\t")
    result = pipeline.sync(bus)
    assert set(result.registered) == {run_id, policy_id}
    assert artifact_names(bus, run_id) == {"truth/backtest_call_path_metrics": 12}
    assert set(artifact_names(bus, policy_id)) == {
        "policy/backtest_policy_results",
        "policy/backtest_call_results",
    }
    assert run_row(bus, policy_id)["shape"] == "seed-run-json"
    help_text = runner.invoke(main, ["backtest", "run", "--help"]).output
    assert "--layout [v1|seed]" in help_text
