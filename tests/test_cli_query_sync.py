"""The commands that fill the reader's snapshot (sync, rebuild) through CliRunner, and the
query commands before it exists and while the working catalog is held open.

Exact output and exit codes; JSON is parsed and compared whole (docs/cli-json.md is the contract).
Time stamps the catalog makes itself (registered_at, ...) are checked for format, then compared.
"""

from __future__ import annotations

import json

import pytest
from builders import cli, make_run

from quantbot_bus.config import Config

pytestmark = pytest.mark.usefixtures("cli_env")


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


def test_queries_work_while_the_working_catalog_is_held_open(synced: Config) -> None:
    """Readers only touch the snapshot: a process holding the working catalog blocks nothing."""
    from quantbot_bus.catalog import Catalog

    with Catalog.open(synced.catalog_path):
        for args in (["runs"], ["show", "r1"], ["artifacts"], ["stats"], ["rejected"]):
            result = cli(synced, *args, "--format", "json")
            assert result.exit_code == 0, (args, result.output)
