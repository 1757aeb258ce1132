"""The runs command through CliRunner: every documented key, filters, formats, deleted runs.

Exact output and exit codes; JSON is parsed and compared whole (docs/cli-json.md is the contract).
Time stamps the catalog makes itself (registered_at, ...) are checked for format, then compared.
"""

from __future__ import annotations

import json

import pytest
from builders import cli
from cli_query_catalog import R2, stamp

from quantbot_bus.config import Config

pytestmark = pytest.mark.usefixtures("cli_env")


def test_runs_json_is_newest_first_with_every_documented_key(synced: Config) -> None:
    result = cli(synced, "runs", "--format", "json")
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    for row in rows:
        row["registered_at"] = stamp(row["registered_at"])
    root = synced.root
    assert rows == [
        {
            **R2,
            "artifact_count": 2,
            "total_rows": 7,
            "total_bytes": rows[0]["total_bytes"],
            "run_dir": str(root / "policy" / "r2"),
            "registered_at": "<ts>",
            "deleted_at": None,
        },
        {
            "run_id": "r1",
            "run_type": "path-only",
            "status": "success",
            "producer": "tests",
            "producer_version": "1.0",
            "created_at": "2024-05-01T12:00:00Z",
            "finished_at": "2024-05-01T12:00:00Z",
            "git_branch": "main",
            "git_commit": "abc1234",
            "git_dirty": False,
            "artifact_count": 1,
            "total_rows": 3,
            "total_bytes": (root / "path-only" / "r1" / "results.parquet").stat().st_size,
            "run_dir": str(root / "path-only" / "r1"),
            "registered_at": "<ts>",
            "deleted_at": None,
        },
        {
            "run_id": "r3",
            "run_type": "policy",
            "status": "failed",
            "producer": "tests",
            "producer_version": "1.0",
            "created_at": "2024-04-01T00:00:00Z",
            "finished_at": "2024-05-01T12:00:00Z",
            "git_branch": "main",
            "git_commit": "abc1234",
            "git_dirty": False,
            "artifact_count": 0,
            "total_rows": 0,
            "total_bytes": 0,
            "run_dir": str(root / "policy" / "r3"),
            "registered_at": "<ts>",
            "deleted_at": None,
        },
    ]
    sizes = [(root / "policy" / "r2" / f).stat().st_size for f in ("a.parquet", "b.parquet")]
    assert rows[0]["total_bytes"] == sum(sizes)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--run-type", "policy"], ["r2", "r3"]),
        (["--status", "failed"], ["r3"]),
        (["--producer", "grid"], ["r2"]),
        (["--git-branch", "main"], ["r1", "r3"]),
        (["--since", "2024-05-01"], ["r2", "r1"]),
        (["--since", "2024-05-01T12:00:01Z"], ["r2"]),
        (["--until", "2024-05-01T14:00:00+02:00"], ["r3"]),  # = 12:00 UTC, exclusive
        (["--until", "2024-05-01T14:00:01+02:00"], ["r1", "r3"]),
        (["--since", "2024-04-15", "--until", "2024-05-15"], ["r1"]),
        (["--limit", "1"], ["r2"]),
        (["--limit", "0"], ["r2", "r1", "r3"]),
        (["--run-type", "nope"], []),
    ],
)
def test_runs_filters(synced: Config, args: list[str], expected: list[str]) -> None:
    result = cli(synced, "runs", "--format", "json", *args)
    assert result.exit_code == 0, result.output
    assert [r["run_id"] for r in json.loads(result.stdout)] == expected


def test_runs_bad_arguments_are_usage_errors(synced: Config) -> None:
    result = cli(synced, "runs", "--since", "last tuesday")
    assert result.exit_code == 2
    assert "Invalid value for '--since': 'last tuesday' is not an ISO-8601 date" in result.stderr
    result = cli(synced, "runs", "--limit", "-1")
    assert result.exit_code == 2
    result = cli(synced, "runs", "--status", "maybe")
    assert result.exit_code == 2


def test_runs_table_and_deleted_runs(synced: Config) -> None:
    import shutil

    shutil.rmtree(synced.root / "path-only" / "r1")
    assert cli(synced, "sync").exit_code == 0
    result = cli(synced, "runs", "--format", "table")
    assert result.exit_code == 0
    assert result.stdout == (
        "run_id  run_type  status   producer  created_at            git_branch  artifact_count  total_rows\n"
        "------  --------  -------  --------  --------------------  ----------  --------------  ----------\n"
        "r2      policy    success  grid      2024-06-01T00:00:00Z  feature     2               7\n"
        "r3      policy    failed   tests     2024-04-01T00:00:00Z  main        0               0\n"
    )
    result = cli(synced, "runs", "--format", "json", "--include-deleted")
    rows = json.loads(result.stdout)
    assert [(r["run_id"], r["deleted_at"] is not None) for r in rows] == [
        ("r2", False),
        ("r1", True),
        ("r3", False),
    ]
    stamp(rows[1]["deleted_at"])
    result = cli(synced, "runs", "--format", "table", "--include-deleted")
    assert result.stdout.splitlines()[0].endswith("total_rows  deleted_at")


def test_runs_csv(synced: Config) -> None:
    result = cli(synced, "runs", "--format", "csv", "--run-type", "path-only")
    assert result.exit_code == 0
    header, line = result.stdout.splitlines()
    assert header == (
        "run_id,run_type,status,producer,producer_version,created_at,finished_at,git_branch,"
        "git_commit,git_dirty,artifact_count,total_rows,total_bytes,run_dir,registered_at,deleted_at"
    )
    assert line.startswith("r1,path-only,success,tests,1.0,2024-05-01T12:00:00Z,")
