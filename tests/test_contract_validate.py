"""The run-directory contract, table-driven over real run directories and real Parquet: what the
validator returns for runs it accepts (normalised) and for runs not finished yet (Incomplete)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from builders import artifact_entry, assert_incomplete, assert_invalid, make_run, write_parquet

from quantbot_bus.contract import METADATA_NAME, Valid, quick_fingerprint, validate_run_dir

# --------------------------------------------------------------------------- valid


def test_valid_run_is_normalised(root: Path) -> None:
    run_dir = make_run(
        root,
        tables={"results": 3, "summary": 1},
        producer={"name": "test-producer", "version": "1.2.3"},
        started_at="2024-05-01T12:00:00.250+00:00",
        finished_at="2024-05-01T12:00:05Z",
        params={"strategy": "path-only", "interval": "1m", "grid": [1, 2]},
        metrics={"sharpe": 1.25, "calls": 3},
        git={"commit": "0123abc", "branch": "main", "dirty": False},
        host="research-1",
    )
    result = validate_run_dir(run_dir, root)
    assert isinstance(result, Valid), result
    run = result.run
    assert run.run_id == "run-1"
    assert run.run_type == "backtest"
    assert (run.producer, run.producer_version) == ("test-producer", "1.2.3")
    assert run.status == "success"
    assert run.created_at == "2024-05-01T12:00:00Z"
    assert run.started_at == "2024-05-01T12:00:00.250000Z"
    assert run.finished_at == "2024-05-01T12:00:05Z"
    assert run.params == {"strategy": "path-only", "interval": "1m", "grid": [1, 2]}
    assert run.metrics == {"sharpe": 1.25, "calls": 3}
    assert (type(run.metrics["sharpe"]), type(run.metrics["calls"])) == (float, int)  # JSON's
    assert (run.git_commit, run.git_branch, run.git_dirty) == ("0123abc", "main", False)
    assert run.host == "research-1"
    assert run.error is None
    assert run.shape == "v1"
    assert run.run_dir == run_dir and run.run_dir.is_absolute()
    assert run.metadata_json == (run_dir / METADATA_NAME).read_text()
    assert run.metadata_mtime_ns == (run_dir / METADATA_NAME).stat().st_mtime_ns
    assert run.fingerprint == quick_fingerprint(run_dir)
    assert [a.name for a in run.artifacts] == ["results", "summary"]
    results = run.artifacts[0]
    data = (run_dir / "results.parquet").read_bytes()
    assert results.file == "results.parquet"
    assert results.path == run_dir / "results.parquet"
    assert results.format == "parquet"
    assert results.rows == 3
    assert results.bytes == len(data)
    assert results.sha256 == hashlib.sha256(data).hexdigest()
    assert json.loads(results.arrow_schema) == [
        {"name": "call_id", "type": "string", "nullable": True},
        {"name": "ret_bps", "type": "double", "nullable": True},
    ]
    assert run.total_rows == 4
    assert run.total_bytes == results.bytes + run.artifacts[1].bytes


def test_optional_fields_may_be_absent_or_null(root: Path) -> None:
    def strip(meta: dict[str, Any], _: Path) -> None:
        for key in ("git", "host", "metrics"):
            del meta[key]
        meta["producer"] = {"name": "p"}
        art = meta["artifacts"][0]
        art["rows"] = art["bytes"] = art["sha256"] = None

    run_dir = make_run(root, mutate=strip)
    result = validate_run_dir(run_dir, root)
    assert isinstance(result, Valid), result
    run = result.run
    assert (run.git_commit, run.git_branch, run.git_dirty, run.host) == (None, None, None, None)
    assert run.metrics == {} and run.producer_version is None
    art = run.artifacts[0]
    assert art.rows == 3  # from the footer
    assert art.sha256 == hashlib.sha256((run_dir / "results.parquet").read_bytes()).hexdigest()


def test_sha256_not_computed_without_verify_hashes(root: Path) -> None:
    def no_hash(meta: dict[str, Any], _: Path) -> None:
        del meta["artifacts"][0]["sha256"]

    run_dir = make_run(root, mutate=no_hash)
    result = validate_run_dir(run_dir, root, verify_hashes=False)
    assert isinstance(result, Valid)
    assert result.run.artifacts[0].sha256 is None


def test_declared_sha256_kept_and_not_checked_without_verify_hashes(root: Path) -> None:
    def wrong_hash(meta: dict[str, Any], _: Path) -> None:
        meta["artifacts"][0]["sha256"] = "AB" * 32

    run_dir = make_run(root, mutate=wrong_hash)
    result = validate_run_dir(run_dir, root, verify_hashes=False)
    assert isinstance(result, Valid)
    assert result.run.artifacts[0].sha256 == "ab" * 32
    assert_invalid(validate_run_dir(run_dir, root), "sha256")


def test_uppercase_sha256_accepted(root: Path) -> None:
    def upper(meta: dict[str, Any], _: Path) -> None:
        meta["artifacts"][0]["sha256"] = meta["artifacts"][0]["sha256"].upper()

    result = validate_run_dir(make_run(root, mutate=upper), root)
    assert isinstance(result, Valid), result


def test_failed_run_with_error_and_no_artifacts_is_valid(root: Path) -> None:
    def failed(meta: dict[str, Any], _: Path) -> None:
        meta["status"] = "failed"
        meta["error"] = "ValueError: no candles for interval 1m"
        meta["artifacts"] = []

    result = validate_run_dir(make_run(root, tables={}, mutate=failed), root)
    assert isinstance(result, Valid), result
    assert result.run.status == "failed"
    assert result.run.error == "ValueError: no candles for interval 1m"
    assert result.run.artifacts == ()


def test_file_in_subdirectory_and_bom_accepted(root: Path) -> None:
    def subdir(meta: dict[str, Any], run_dir: Path) -> None:
        data = write_parquet(run_dir / "tables" / "calls.parquet", 5)
        meta["artifacts"].append(artifact_entry("tables/calls.parquet", data, 5))

    run_dir = make_run(root, mutate=subdir)
    text = (run_dir / METADATA_NAME).read_text()
    (run_dir / METADATA_NAME).write_bytes(b"\xef\xbb\xbf" + text.encode())  # a Windows BOM
    result = validate_run_dir(run_dir, root)
    assert isinstance(result, Valid), result
    assert result.run.artifacts[1].path == run_dir / "tables" / "calls.parquet"


def test_relative_paths_are_made_absolute(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = make_run(root)
    monkeypatch.chdir(root.parent)
    result = validate_run_dir(Path("artifacts/backtest/run-1"), Path("artifacts"))
    assert isinstance(result, Valid), result
    assert result.run.run_dir == run_dir


# --------------------------------------------------------------------------- Incomplete


def test_no_metadata_json_is_incomplete(root: Path) -> None:
    run_dir = root / "backtest" / "run-1"
    run_dir.mkdir(parents=True)
    write_parquet(run_dir / "results.parquet")
    assert_incomplete(validate_run_dir(run_dir, root), "no metadata.json yet")


def test_missing_run_dir_is_incomplete(root: Path) -> None:
    assert_incomplete(validate_run_dir(root / "backtest" / "gone", root), "does not exist")


def test_listed_file_missing_is_incomplete(root: Path) -> None:
    def remove(meta: dict[str, Any], run_dir: Path) -> None:
        (run_dir / "results.parquet").unlink()

    result = validate_run_dir(make_run(root, mutate=remove), root)
    assert_incomplete(result, "artifact 'results'", "'results.parquet'", "does not exist yet")


def test_truncated_parquet_shorter_than_declared_is_incomplete(root: Path) -> None:
    def truncate(meta: dict[str, Any], run_dir: Path) -> None:
        path = run_dir / "results.parquet"
        os.truncate(path, path.stat().st_size // 2)

    run_dir = make_run(root, mutate=truncate)
    size = (run_dir / "results.parquet").stat().st_size
    declared = json.loads((run_dir / METADATA_NAME).read_text())["artifacts"][0]["bytes"]
    assert size < declared
    assert_incomplete(
        validate_run_dir(run_dir, root), f"has {size} of its {declared}", "still being written"
    )


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("run_type", "backtest\n", "field 'run_type' must be 1-64 characters"),
        ("name", "results\n", "artifact name 'results\\n' is not a table name"),
        ("sha256", "a" * 64 + "\n", "must be 64 hexadecimal characters"),
    ],
)
def test_a_final_newline_in_a_name_or_hash_is_rejected(
    root: Path, field: str, value: str, needle: str
) -> None:
    """The schema's patterns end in '$', which Python's re also matches before a final
    newline: a run type, artifact name or sha256 ending in one is rejected, not registered
    under a name that holds a newline."""

    def edit(meta: dict[str, Any], run_dir: Path) -> None:
        if field == "run_type":
            meta["run_type"] = value
        else:
            meta["artifacts"][0][field] = value

    assert_invalid(validate_run_dir(make_run(root, mutate=edit), root), needle)
