"""`quantbot-bus backtest run` through click's CliRunner, and the producers/ scripts as processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from quantbot_bus.cli import main
from quantbot_bus.contract import Valid, validate_run_dir

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No config file or QUANTBOT_BUS_* variable from the developer's environment leaks in."""
    for key in list(os.environ):
        if key.startswith("QUANTBOT_BUS_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize(
    ("strategy", "interval", "tables"),
    [
        ("path-only", "1m", ["backtest_call_path_metrics"]),
        ("policy", "5m", ["backtest_policy_results", "backtest_call_results"]),
        ("optimize", "1m", ["summary", "policy_frontier", "v1_baseline_frontier"]),
    ],
)
def test_backtest_run(tmp_path: Path, strategy: str, interval: str, tables: list[str]) -> None:
    root = tmp_path / "artifacts"
    args = ["backtest", "run", "--strategy", strategy, "--interval", interval]
    args += ["--calls", "20", "--seed", "5", "--root", str(root)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    (run_dir,) = (root / "backtest").iterdir()
    assert result.stdout == f"{run_dir.name}\t{run_dir}\n"
    meta = json.loads((run_dir / "metadata.json").read_text())
    assert meta["run_id"] == run_dir.name
    assert [a["name"] for a in meta["artifacts"]] == tables
    assert meta["params"] == {
        **meta["params"],
        "strategy": strategy,
        "interval": interval,
        "calls": 20,
        "seed": 5,
        "date_from": "2026-01-02",
        "date_to": "2026-01-08",
    }
    assert isinstance(validate_run_dir(run_dir, root), Valid)


def test_cli_defaults_match_the_library() -> None:
    from quantbot_bus.backtest import runner
    from quantbot_bus.backtest.intervals import CANDLE_INTERVAL_MS, SYNTHETIC_INTERVALS

    params = {p.name: p for p in main.commands["backtest"].commands["run"].params}  # type: ignore[attr-defined]
    assert params["date_from"].default == runner.DEFAULT_DATE_FROM.isoformat()
    assert params["date_to"].default == runner.DEFAULT_DATE_TO.isoformat()
    assert list(params["strategy"].type.choices) == list(runner.STRATEGIES)
    assert list(params["interval"].type.choices) == list(CANDLE_INTERVAL_MS)
    assert set(runner.INTERVALS) == set(SYNTHETIC_INTERVALS) <= set(CANDLE_INTERVAL_MS)
    assert params["horizon_minutes"].default == runner.DEFAULT_HORIZON_MINUTES


def test_root_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTBOT_BUS_ROOT", str(tmp_path / "from-env"))
    result = CliRunner().invoke(
        main, ["backtest", "run", "--strategy", "path-only", "--calls", "3"]
    )
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "from-env" / "backtest").iterdir()
    assert result.stdout == f"{run_dir.name}\t{run_dir}\n"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--from", "2026-13-01"],
            "Invalid value for '--from': '2026-13-01' is not a date; use YYYY-MM-DD",
        ),
        (
            ["--to", "yesterday"],
            "Invalid value for '--to': 'yesterday' is not a date; use YYYY-MM-DD",
        ),
        (
            ["--from", "2026-01-09", "--to", "2026-01-08"],
            "Invalid value for '--from': --from 2026-01-09 is after --to 2026-01-08",
        ),
        (["--calls", "0"], "Invalid value for '--calls': 0 is not in the range x>=1."),
        (
            ["--interval", "15m"],
            "Invalid value for '--interval': the synthetic market has 1m and 5m candles only; "
            "15m needs your own candles (--calls-from-duckdb)",
        ),
        (["--interval", "2m"], "Invalid value for '--interval': '2m' is not one of '1s', '15s'"),
        (["--horizon", "0"], "Invalid value for '--horizon': 0 is not in the range x>=1."),
    ],
)
def test_bad_arguments_exit_2(tmp_path: Path, extra: list[str], message: str) -> None:
    root = tmp_path / "artifacts"
    args = ["backtest", "run", "--strategy", "policy", "--root", str(root), *extra]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert message in result.stderr
    assert not root.exists()


def test_strategy_is_required(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["backtest", "run", "--root", str(tmp_path)])
    assert result.exit_code == 2
    assert "Missing option '--strategy'" in result.stderr


def test_help_documents_the_output() -> None:
    result = CliRunner().invoke(main, ["backtest", "run", "--help"])
    assert result.exit_code == 0
    assert "RUN_ID<TAB>RUN_DIR" in result.stdout
    for option in ("--strategy", "--interval", "--from", "--to", "--calls", "--seed", "--root"):
        assert option in result.stdout
    result = CliRunner().invoke(main, ["backtest", "--help"])
    assert result.exit_code == 0 and "run" in result.stdout


@pytest.mark.parametrize(
    ("script", "table"),
    [
        ("backtest_path_only.py", "backtest_call_path_metrics"),
        ("backtest_policy.py", "backtest_call_results"),
        ("backtest_optimize.py", "policy_frontier"),
    ],
)
def test_producer_scripts(tmp_path: Path, script: str, table: str) -> None:
    root = tmp_path / "artifacts"
    proc = subprocess.run(
        [sys.executable, str(PROJECT / "producers" / script), "--root", str(root), "--calls", "8"],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (root / "backtest").iterdir()
    assert proc.stdout == f"{run_dir.name}\t{run_dir}\n"
    meta = json.loads((run_dir / "metadata.json").read_text())
    assert table in [a["name"] for a in meta["artifacts"]]
    assert meta["params"]["calls"] == 8


def test_producer_script_bad_date(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(PROJECT / "producers" / "backtest_policy.py"), "--from", "soon"],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert proc.returncode == 2
    assert "'soon' is not a date; use YYYY-MM-DD" in proc.stderr
    assert not (tmp_path / "artifacts").exists()
