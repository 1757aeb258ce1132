"""The catalog-wide commands through CliRunner: stats (also on an empty catalog) and rejected.

Exact output and exit codes; JSON is parsed and compared whole (docs/cli-json.md is the contract).
Time stamps the catalog makes itself (registered_at, ...) are checked for format, then compared.
"""

from __future__ import annotations

import json

import pytest
from builders import cli, make_run
from cli_query_catalog import stamp

from quantbot_bus.config import Config

pytestmark = pytest.mark.usefixtures("cli_env")


def test_stats(synced: Config) -> None:
    result = cli(synced, "stats", "--format", "json")
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    r1 = (synced.root / "path-only" / "r1" / "results.parquet").stat().st_size
    r2 = sum((synced.root / "policy" / "r2" / f).stat().st_size for f in ("a.parquet", "b.parquet"))
    assert rows == [
        {
            "run_type": "path-only",
            "status": "success",
            "runs": 1,
            "artifacts": 1,
            "total_rows": 3,
            "total_bytes": r1,
            "newest": "2024-05-01T12:00:00Z",
        },
        {
            "run_type": "policy",
            "status": "failed",
            "runs": 1,
            "artifacts": 0,
            "total_rows": 0,
            "total_bytes": 0,
            "newest": "2024-04-01T00:00:00Z",
        },
        {
            "run_type": "policy",
            "status": "success",
            "runs": 1,
            "artifacts": 2,
            "total_rows": 7,
            "total_bytes": r2,
            "newest": "2024-06-01T00:00:00Z",
        },
        {
            "run_type": None,
            "status": None,
            "runs": 3,
            "artifacts": 3,
            "total_rows": 10,
            "total_bytes": r1 + r2,
            "newest": "2024-06-01T00:00:00Z",
        },
    ]
    table = cli(synced, "stats", "--format", "table").stdout.splitlines()
    assert table[-1].startswith("(all)      (all)    3     3          10")


def test_stats_on_an_empty_catalog(bus: Config) -> None:
    assert cli(bus, "sync").exit_code == 0
    rows = json.loads(cli(bus, "stats", "--format", "json").stdout)
    assert rows == [
        {
            "run_type": None,
            "status": None,
            "runs": 0,
            "artifacts": 0,
            "total_rows": 0,
            "total_bytes": 0,
            "newest": None,
        }
    ]
    assert cli(bus, "runs", "--format", "json").stdout == "[]\n"
    assert cli(bus, "runs", "--format", "table").stdout == "(no rows)\n"
    assert cli(bus, "rejected", "--format", "json").stdout == "[]\n"


def test_rejected(synced: Config) -> None:
    result = cli(synced, "rejected", "--format", "json")
    assert result.exit_code == 0
    (row,) = json.loads(result.stdout)
    row["first_seen_at"] = stamp(row["first_seen_at"])
    row["last_seen_at"] = stamp(row["last_seen_at"])
    assert row == {
        "run_dir": str(synced.root / "policy" / "bad"),
        "run_id": "bad",
        "reason": "artifact 'results' (file 'results.parquet') is not a Parquet file (it must "
        "start and end with the bytes PAR1) although it has its full declared size",
        "attempts": 1,
        "first_seen_at": "<ts>",
        "last_seen_at": "<ts>",
    }
    # fixed on disk: the next sync resolves it
    make_run(synced.root, "policy", "bad")
    assert cli(synced, "sync").exit_code == 0
    assert cli(synced, "rejected", "--format", "json").stdout == "[]\n"
