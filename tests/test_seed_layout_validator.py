"""The validator on the seed layout ``YYYY-MM/run_id=<uuid>/``: the names alone tell it
from the v1 layout, run.json maps onto the run model, ``_SUCCESS`` marks completion, hostile
runs are rejected with a reason, and the run.json documented in docs/contract.md is accepted.
Seed runs are real directories built the way the seed system wrote them."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from builders import assert_incomplete, assert_invalid, corrupt_file, write_parquet
from seed_runs import FAILED_STDERR, MONTH, make_seed_run, paths_table, trades_table

from quantbot_bus.contract import Valid, quick_fingerprint, validate_run_dir
from quantbot_bus.contract.layout import is_run_dir, is_seed_dir, layout_of, run_id_of
from quantbot_bus.exports.store import export_table_name


def test_the_names_alone_tell_the_layouts_apart(tmp_path: Path) -> None:
    assert is_seed_dir(f"/r/{MONTH}/run_id=0b1f") and layout_of(f"/r/{MONTH}/run_id=0b1f") == "seed"
    assert run_id_of(f"/r/{MONTH}/run_id=0b1f") == "0b1f"
    for v1 in (
        "/r/2026-13/run_id=x",
        "/r/backtest/run_id=x",
        f"/r/{MONTH}/run_id=",
        f"/r/{MONTH}/x",
    ):
        assert not is_seed_dir(v1) and layout_of(v1) == "v1", v1
    # a seed directory is a run once it holds run.json or _SUCCESS, nothing else
    run_dir = tmp_path / MONTH / "run_id=abc"
    (run_dir / "truth").mkdir(parents=True)
    write_parquet(run_dir / "truth" / "paths.parquet", 3)
    assert not is_run_dir(str(run_dir))
    (run_dir / "_SUCCESS").write_text("")
    assert is_run_dir(str(run_dir))
    assert export_table_name("truth/paths") == "truth__paths"
    assert export_table_name("backtest_call_results") == "backtest_call_results"


def test_run_json_maps_onto_the_run_model(root: Path) -> None:
    run_dir = make_seed_run(
        root,
        tables={
            "truth/paths": paths_table("r"),
            "policy/trades": trades_table("r"),
            "results/frontier": pa.table({"rank": [1, 2]}),
            "inputs/alerts": pa.table({"mint": ["m"]}),
            "errors/errors": pa.table({"call_id": pa.array([], pa.string())}),
        },
    )
    result = validate_run_dir(run_dir, root)
    assert isinstance(result, Valid), result
    run = result.run
    assert (run.run_type, run.status, run.shape, run.producer) == (
        "policy",
        "success",
        "seed-run-json",
        "seed-run-json",
    )
    assert (run.created_at, run.started_at, run.finished_at) == (
        "2026-03-02T09:30:00Z",
        "2026-03-02T09:30:01Z",
        "2026-03-02T09:31:00.500000Z",
    )
    assert (run.git_commit, run.git_branch, run.git_dirty) == ("9f1c2ab", "feat/seed", True)
    assert run.params == {
        "strategy_id": "s-7",
        "policy_id": "fixed-stop",
        "config_hash": "ab12",
        "dataset_from": "2026-02-01",
        "dataset_to": "2026-03-01",
        "dataset_interval": "5m",
        "dataset_calls_count": 4,
    }
    assert run.metrics == {
        "timing_plan_ms": 12.0,
        "timing_coverage_ms": 30.0,
        "timing_execution_ms": 700.0,
        "timing_total_ms": 812.5,
    }
    assert {a.name: (a.file, a.rows) for a in run.artifacts} == {
        "truth/paths": ("truth/paths.parquet", 4),
        "policy/trades": ("policy/trades.parquet", 3),
        "results/frontier": ("results/frontier.parquet", 2),
        "inputs/alerts": ("inputs/alerts.parquet", 1),
        "errors/errors": ("errors/errors.parquet", 0),
    }
    assert run.error is None and json.loads(run.metadata_json)["run_id"] == run.run_id
    assert run.fingerprint == quick_fingerprint(run_dir)


def test_completion_is_the_success_marker(root: Path) -> None:
    for status in ("pending", "running", "completed"):
        run_dir = make_seed_run(root, status=status, success=False)
        assert_incomplete(validate_run_dir(run_dir, root), "no _SUCCESS yet")
    failed = make_seed_run(
        root,
        status="failed",
        success=False,
        stderr=FAILED_STDERR,
        completed_at=None,
        tables={"errors/errors": pa.table({"e": ["x"]})},
    )
    result = validate_run_dir(failed, root)
    assert isinstance(result, Valid), result
    assert result.run.status == "failed" and result.run.finished_at is None
    error = result.run.error or ""
    assert error.endswith("between 2026-02-03 and 2026-02-04")
    assert "debug line 39" in error and "debug line 10" not in error  # the tail: 20 lines
    quiet = make_seed_run(root, status="failed", success=False, tables={})
    result = validate_run_dir(quiet, root)
    assert isinstance(result, Valid) and "logs/stderr.txt is missing or empty" in str(
        result.run.error
    )


def _drop(key: str) -> Callable[[dict[str, Any], Path], None]:
    return lambda doc, run_dir: doc.pop(key)


HOSTILE: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "not json": (
        {"mutate": lambda doc, d: doc.update(_raw="{")},
        ("run.json is not valid JSON",),
    ),
    "run_id differs": (
        {"mutate": lambda doc, d: doc.update(run_id="other")},
        ("does not match the directory name", "run_id=<run_id>"),
    ),
    "unknown status": ({"status": "done"}, ("field 'status' must be one of",)),
    "failed yet _SUCCESS": ({"status": "failed"}, ("status is 'failed' but _SUCCESS exists",)),
    "no created_at": ({"mutate": _drop("created_at")}, ("field 'created_at'",)),
    "bad time": ({"created_at": "yesterday"}, ("'created_at' is not an ISO-8601 timestamp",)),
    "timing not numbers": (
        {"timing": {"total": "fast"}},
        ("field 'timing.total' must be a number",),
    ),
    "listed file missing": (
        {"mutate": lambda doc, d: (d / "policy" / "trades.parquet").unlink()},
        ("policy/trades.parquet", "is missing", "remove it from run.json's artifacts"),
    ),
    "rows differ": (
        {"mutate": lambda doc, d: doc["artifacts"]["paths"].update(rows=99)},
        ("has 4 rows in its Parquet footer but run.json declares 99",),
    ),
    "corrupt parquet": (
        {"mutate": lambda doc, d: corrupt_file(d / "truth" / "paths.parquet")},
        ("'truth/paths'", "is not a Parquet file", "write _SUCCESS only after"),
    ),
    "path escapes": (
        {"mutate": lambda doc, d: doc["artifacts"].update(x={"path": "../../etc/passwd"})},
        ("artifacts.x.path", "not a file inside this run directory"),
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_bad_seed_runs_are_rejected_with_a_reason(root: Path, case: str) -> None:
    kwargs, needles = HOSTILE[case]
    kwargs = dict(kwargs)
    mutate = kwargs.pop("mutate", None)
    raw: list[str] = []

    def hook(doc: dict[str, Any], run_dir: Path) -> None:
        if mutate is not None:
            mutate(doc, run_dir)
        if "_raw" in doc:
            raw.append(doc.pop("_raw"))

    run_dir = make_seed_run(root, mutate=hook, **kwargs)
    if raw:
        (run_dir / "run.json").write_text(raw[0])
    assert_invalid(validate_run_dir(run_dir, root), *needles)


def test_success_marker_without_manifest_is_rejected(root: Path) -> None:
    run_dir = root / MONTH / "run_id=lonely"
    run_dir.mkdir(parents=True)
    (run_dir / "_SUCCESS").write_text("2026-03-01T00:00:00Z")
    assert_invalid(validate_run_dir(run_dir, root), "_SUCCESS exists but run.json is missing")


def test_the_documented_run_json_is_accepted(root: Path) -> None:
    text = (Path(__file__).parent.parent / "docs" / "contract.md").read_text()
    block = re.search(r"<!-- seed-example -->\s*```json\n(.*?)```", text, re.S)
    assert block is not None, "docs/contract.md lost its seed run.json example"
    doc = json.loads(block.group(1))
    run_dir = make_seed_run(
        root,
        doc["run_id"],
        tables={
            "truth/paths": paths_table(doc["run_id"], 230),
            "policy/trades": trades_table("x", 230),
        },
        mutate=lambda d, _: d.update(doc),
    )
    result = validate_run_dir(run_dir, root)
    assert isinstance(result, Valid), result
    assert result.run.params["dataset_calls_count"] == 230
