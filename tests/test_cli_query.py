"""The query commands (sync, rebuild, runs, show, artifacts, stats, rejected) through CliRunner.

Exact output and exit codes; JSON is parsed and compared whole (docs/cli-json.md is the contract).
Time stamps the catalog makes itself (registered_at, ...) are checked for format, then compared.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from builders import cli, corrupt_file, make_run

from quantbot_bus.config import Config

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


pytestmark = pytest.mark.usefixtures("cli_env")


def stamp(value: Any) -> str:
    assert isinstance(value, str) and STAMP.match(value), value
    return "<ts>"


#: What every listing says of run r2 of :func:`synced` (its metadata overrides).
R2 = {
    "run_id": "r2",
    "run_type": "policy",
    "status": "success",
    "producer": "grid",
    "producer_version": None,
    "created_at": "2024-06-01T00:00:00Z",
    "finished_at": "2024-05-01T12:00:00Z",
    "git_branch": "feature",
    "git_commit": "def5678",
    "git_dirty": True,
}


@pytest.fixture
def synced(bus: Config) -> Config:
    make_run(bus.root, "path-only", "r1", created_at="2024-05-01T12:00:00Z")
    make_run(
        bus.root,
        "policy",
        "r2",
        tables={"a": 2, "b": 5},
        created_at="2024-06-01T00:00:00Z",
        git={"commit": "def5678", "branch": "feature", "dirty": True},
        producer={"name": "grid", "version": None},
        params={"grid": [1, 2]},
        metrics={"sharpe": 1.25},
    )
    make_run(
        bus.root, "policy", "r3", status="failed", tables={}, created_at="2024-04-01T00:00:00Z"
    )
    bad = make_run(bus.root, "policy", "bad")
    corrupt_file(bad / "results.parquet")
    result = cli(bus, "sync", "--format", "json")
    assert result.exit_code == 0, result.output
    return bus


def test_commands_before_any_sync_explain_what_to_do(bus: Config) -> None:
    for command in ("runs", "show", "artifacts", "stats", "rejected"):
        args = [command, "x"] if command == "show" else [command]
        result = cli(bus, *args)
        assert result.exit_code == 4
        assert result.stdout == ""
        assert result.stderr == (
            f"Error: no catalog snapshot at {bus.snapshot_path} yet: start the daemon "
            "(make run) or run `quantbot-bus sync`\n"
        )


def test_sync_prints_counts(bus: Config) -> None:
    make_run(bus.root, "path-only", "r1")
    make_run(bus.root, "path-only", "r2")
    waiting = make_run(bus.root, "path-only", "w")
    (waiting / "results.parquet").unlink()
    result = cli(bus, "sync", "--format", "json")
    assert result.exit_code == 0
    (row,) = json.loads(result.stdout)
    assert isinstance(row.pop("ms"), float)
    assert row == {
        "registered": 2,
        "updated": 0,
        "unchanged": 0,
        "deleted": 0,
        "rejected": 0,
        "pending": 1,
    }
    result = cli(bus, "sync", "--format", "csv")
    assert result.exit_code == 0
    header, values = result.stdout.splitlines()
    assert header == "registered,updated,unchanged,deleted,rejected,pending,ms"
    assert values.startswith("0,0,2,0,0,1,")
    assert result.stderr == ""  # quiet without -v


def test_sync_verbose_logs_to_stderr_not_stdout(bus: Config) -> None:
    make_run(bus.root, "path-only", "r1")
    result = cli(bus, "sync", "--format", "json", "-v")
    assert result.exit_code == 0
    json.loads(result.stdout)  # stdout stays pure JSON
    events = [json.loads(line)["event"] for line in result.stderr.splitlines()]
    assert "run.registered" in events and "rescan.done" in events


def test_rebuild_prints_counts_and_keeps_a_backup(synced: Config) -> None:
    result = cli(synced, "rebuild", "--format", "json")
    assert result.exit_code == 0
    (row,) = json.loads(result.stdout)
    assert (row["registered"], row["rejected"], row["unchanged"]) == (3, 1, 0)
    assert synced.catalog_path.with_name("bus.duckdb.bak").is_file()


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


def test_queries_work_while_the_working_catalog_is_held_open(synced: Config) -> None:
    """Readers only touch the snapshot: a process holding the working catalog blocks nothing."""
    from quantbot_bus.catalog import Catalog

    with Catalog.open(synced.catalog_path):
        for args in (["runs"], ["show", "r1"], ["artifacts"], ["stats"], ["rejected"]):
            result = cli(synced, *args, "--format", "json")
            assert result.exit_code == 0, (args, result.output)
