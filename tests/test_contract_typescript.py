"""The run-directory contract, table-driven over real run directories and real Parquet: the quantbot
TypeScript producer's metadata shape (normalised, rejected, incomplete)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from builders import Mutator, assert_incomplete, assert_invalid, make_ts_run, set_field

from quantbot_bus.contract import METADATA_NAME, Valid, quick_fingerprint, validate_run_dir

# --------------------------------------------------------------------------- TypeScript shape


def test_typescript_shape_is_normalised(root: Path) -> None:
    run_dir = make_ts_run(root, "ts-run-1")
    result = validate_run_dir(run_dir, root)
    assert isinstance(result, Valid), result
    run = result.run
    assert run.shape == "quantbot-ts"
    assert run.run_id == "ts-run-1"
    assert run.run_type == "backtest"
    assert run.producer == "quantbot-ts"
    assert run.producer_version is None
    assert run.status == "success"
    assert run.created_at == run.started_at == run.finished_at == "2024-05-01T12:00:00Z"
    assert run.params == {
        "backtest_type": "policy",
        "interval": "5m",
        "callsProcessed": 120,
        "rowsWritten": 3,
        "policyId": "sl10_tp50_trail5",
    }
    assert run.metrics == {}
    assert (run.git_commit, run.git_branch, run.git_dirty, run.host, run.error) == (None,) * 5
    assert run.metadata_json == (run_dir / METADATA_NAME).read_text()
    assert run.fingerprint == quick_fingerprint(run_dir)
    (art,) = run.artifacts
    data = (run_dir / "results.parquet").read_bytes()
    assert art.name == "backtest_policy_results"
    assert art.file == "results.parquet"
    assert art.path == run_dir / "results.parquet"  # parquet_path (the producer's) is ignored
    assert (art.format, art.rows, art.bytes) == ("parquet", 3, len(data))
    assert art.sha256 == hashlib.sha256(data).hexdigest()
    assert [c["name"] for c in json.loads(art.arrow_schema)] == ["call_id", "ret_bps"]


@pytest.mark.parametrize("backtest_type", ["path-only", "policy", "full"])
def test_typescript_backtest_types(root: Path, backtest_type: str) -> None:
    run_dir = make_ts_run(root, mutate=set_field("backtest_type", backtest_type))
    result = validate_run_dir(run_dir, root)
    assert isinstance(result, Valid), result
    assert result.run.params["backtest_type"] == backtest_type


def _ts_truncate(meta: dict[str, Any], run_dir: Path) -> None:
    path = run_dir / "results.parquet"
    os.truncate(path, path.stat().st_size - 20)


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        pytest.param(
            lambda m, d: m.pop("parquet_file"),
            "required field 'parquet_file' is missing (quantbot TypeScript-producer shape)",
            id="missing-parquet_file",
        ),
        pytest.param(
            lambda m, d: m.pop("rows"),
            "required field 'rows' is missing (quantbot TypeScript-producer shape)",
            id="missing-rows",
        ),
        pytest.param(
            set_field("backtest_type", "walk-forward"),
            'field \'backtest_type\' must be "path-only", "policy" or "full"',
            id="bad-backtest_type",
        ),
        pytest.param(
            set_field("rows", 99),
            "has 3 rows in its Parquet footer but metadata.json declares 99",
            id="rows-mismatch",
        ),
        pytest.param(
            set_field("table_name", "policy-results"),
            "field 'table_name' must be a table name",
            id="bad-table",
        ),
        pytest.param(
            set_field("created_at_utc", "2024-05-01T14:00:00+02:00"), "must be in UTC", id="not-utc"
        ),
        pytest.param(
            set_field("parquet_file", "../x/results.parquet"), "contains '..'", id="traversal"
        ),
        pytest.param(
            set_field("parquet_file", "/tmp/results.parquet"), "absolute path", id="absolute"
        ),
        pytest.param(
            set_field("run_id", "ts-run-2"), "does not match the directory name", id="dir-mismatch"
        ),
        pytest.param(_ts_truncate, "may be truncated", id="truncated-no-declared-bytes"),
    ],
)
def test_typescript_shape_invalid(root: Path, mutate: Mutator, needle: str) -> None:
    assert_invalid(validate_run_dir(make_ts_run(root, mutate=mutate), root), needle)


def test_typescript_shape_missing_parquet_is_incomplete(root: Path) -> None:
    run_dir = make_ts_run(root, mutate=lambda m, d: (d / "results.parquet").unlink())
    assert_incomplete(validate_run_dir(run_dir, root), "does not exist yet")
