"""One run and its files through CliRunner: the show and artifacts commands.

Exact output and exit codes; JSON is parsed and compared whole (docs/cli-json.md is the contract).
Time stamps the catalog makes itself (registered_at, ...) are checked for format, then compared.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from builders import cli
from cli_query_catalog import R2, stamp

from quantbot_bus.config import Config

pytestmark = pytest.mark.usefixtures("cli_env")


def test_show_json(synced: Config) -> None:
    result = cli(synced, "show", "r2", "--format", "json")
    assert result.exit_code == 0
    (run,) = json.loads(result.stdout)
    run_dir = synced.root / "policy" / "r2"
    for key in ("first_registered_at", "registered_at"):
        run[key] = stamp(run[key])
    assert len(run.pop("fingerprint")) == 32
    artifacts = run.pop("artifacts")
    assert run == {
        **R2,
        "started_at": "2024-05-01T12:00:00Z",
        "host": "test-host",
        "error": None,
        "params": {"grid": [1, 2]},
        "metrics": {"sharpe": 1.25},
        "run_dir": str(run_dir),
        "artifact_count": 2,
        "total_rows": 7,
        "total_bytes": sum(a["bytes"] for a in artifacts),
        "first_registered_at": "<ts>",
        "registered_at": "<ts>",
        "deleted_at": None,
    }
    for art in artifacts:
        art["registered_at"] = stamp(art["registered_at"])
        assert re.fullmatch(r"[0-9a-f]{64}", art.pop("sha256"))
        assert art.pop("bytes") == Path(art["path"]).stat().st_size
    schema = [
        {"name": "call_id", "type": "string", "nullable": True},
        {"name": "ret_bps", "type": "double", "nullable": True},
    ]
    assert artifacts == [
        {
            "name": "a",
            "path": str(run_dir / "a.parquet"),
            "format": "parquet",
            "rows": 2,
            "arrow_schema": schema,
            "registered_at": "<ts>",
        },
        {
            "name": "b",
            "path": str(run_dir / "b.parquet"),
            "format": "parquet",
            "rows": 5,
            "arrow_schema": schema,
            "registered_at": "<ts>",
        },
    ]


def test_show_table(synced: Config) -> None:
    result = cli(synced, "show", "r1", "--format", "table")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[:3] == [
        "field                value",
        "-" * 19 + "  " + "-" * (len(lines[1]) - 21),
        "run_id               r1",
    ]
    assert 'params               {"seed": 1}' in lines
    path = synced.root / "path-only" / "r1" / "results.parquet"
    size = path.stat().st_size
    tail = lines[lines.index("") + 1 :]
    assert tail == [
        "name     rows  bytes  path",
        f"-------  ----  -----  {'-' * len(str(path))}",
        f"results  3     {size:<5}  {path}",
    ]


def test_show_unknown_run_exits_5(synced: Config) -> None:
    result = cli(synced, "show", "nope", "--format", "json")
    assert result.exit_code == 5
    assert result.stdout == ""
    assert result.stderr == "Error: no run with id nope\n"


def test_artifacts_prints_paths_for_piping(synced: Config) -> None:
    root = synced.root
    result = cli(synced, "artifacts")
    assert result.exit_code == 0
    assert result.stdout == (
        f"{root / 'policy' / 'r2' / 'a.parquet'}\n"
        f"{root / 'policy' / 'r2' / 'b.parquet'}\n"
        f"{root / 'path-only' / 'r1' / 'results.parquet'}\n"
    )
    result = cli(synced, "artifacts", "--name", "b")
    assert result.stdout == f"{root / 'policy' / 'r2' / 'b.parquet'}\n"
    result = cli(synced, "artifacts", "--run-id", "r1")
    assert result.stdout == f"{root / 'path-only' / 'r1' / 'results.parquet'}\n"
    result = cli(synced, "artifacts", "--run-id", "nope")
    assert (result.exit_code, result.stdout) == (5, "")  # tests/test_cli_run_ids.py


def test_artifact_paths_feed_duckdb(synced: Config) -> None:
    import duckdb

    paths = cli(synced, "artifacts", "--run-id", "r2").stdout.split()
    con = duckdb.connect()
    assert con.execute("SELECT count(*) FROM read_parquet(?)", [paths]).fetchone() == (7,)


def test_artifacts_rows_with_format(synced: Config) -> None:
    result = cli(synced, "artifacts", "--format", "json", "--run-id", "r1")
    assert result.exit_code == 0
    (row,) = json.loads(result.stdout)
    path = synced.root / "path-only" / "r1" / "results.parquet"
    row["registered_at"] = stamp(row["registered_at"])
    assert row == {
        "run_id": "r1",
        "run_type": "path-only",
        "name": "results",
        "path": str(path),
        "format": "parquet",
        "rows": 3,
        "bytes": path.stat().st_size,
        "sha256": row["sha256"],
        "registered_at": "<ts>",
    }
    import hashlib

    assert row["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
