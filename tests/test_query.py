"""``quantbot-bus query``: read-only SQL over the snapshot and the export views (CliRunner).

Exact outputs and exit codes; the bus is built by the real ``ingest.sync`` from real run dirs.
"""

# ruff: noqa: S608 - test SQL over paths and run ids the test itself made

from __future__ import annotations

import json
import os
from pathlib import Path

import duckdb
import pytest
from builders import PATH, add_path_run, add_policy_run, sync
from click.testing import CliRunner, Result

from quantbot_bus.cli import main
from quantbot_bus.config import Config


def run(cfg: Config, *args: str) -> Result:
    flags = [
        "--root",
        str(cfg.root),
        "--exports-dir",
        str(cfg.exports_dir),
        "--state-dir",
        str(cfg.state_dir),
    ]
    return CliRunner().invoke(main, ["query", *args, *flags], catch_exceptions=False)


@pytest.fixture
def qbus(bus: Config) -> Config:
    add_path_run(bus, "path-a", n=12, seed=1)
    add_path_run(bus, "path-b", n=7, seed=2)
    add_policy_run(bus, "pol-a", n=4, seed=3)
    sync(bus)
    return bus


SQL = "SELECT run_id, total_calls, total_trades FROM exports.run_summaries ORDER BY run_id"


def test_json_is_the_default_when_piped(qbus: Config) -> None:
    result = run(qbus, SQL)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [
        {"run_id": "path-a", "total_calls": 12, "total_trades": 0},
        {"run_id": "path-b", "total_calls": 7, "total_trades": 0},
        {"run_id": "pol-a", "total_calls": 4, "total_trades": 4},
    ]


def test_table_and_csv_exact(qbus: Config) -> None:
    table = run(qbus, SQL, "--format", "table")
    assert table.exit_code == 0
    assert table.output == (
        "run_id  total_calls  total_trades\n"
        "------  -----------  ------------\n"
        "path-a  12           0\n"
        "path-b  7            0\n"
        "pol-a   4            4\n"
    )
    csv = run(qbus, SQL, "--format", "csv")
    assert csv.output == "run_id,total_calls,total_trades\npath-a,12,0\npath-b,7,0\npol-a,4,4\n"


def test_catalog_tables_and_consolidated_views(qbus: Config) -> None:
    result = run(
        qbus,
        f"SELECT run_id, count(*) AS n FROM exports.{PATH} GROUP BY run_id ORDER BY run_id",
        "--format",
        "csv",
    )
    assert result.output == "run_id,n\npath-a,12\npath-b,7\n"
    result = run(qbus, "SELECT count(*) AS runs FROM catalog.runs_d", "--format", "csv")
    assert result.output == "runs\n3\n"


def test_parquet_needs_output_and_writes_it(qbus: Config, tmp_path: Path) -> None:
    result = run(qbus, SQL, "--format", "parquet")
    assert result.exit_code == 6
    assert result.output == "Error: --format parquet writes a binary file: add --output FILE\n"
    out = tmp_path / "out.parquet"
    result = run(qbus, SQL, "--format", "parquet", "--output", str(out))
    assert result.exit_code == 0
    assert result.output == f"3 rows written to {out}\n"
    rel = duckdb.sql(f"SELECT * FROM '{out}' ORDER BY run_id")
    assert rel is not None
    got = rel.fetchall()
    assert got == [("path-a", 12, 0), ("path-b", 7, 0), ("pol-a", 4, 4)]
    csv_out = tmp_path / "out.csv"
    result = run(qbus, SQL, "--output", str(csv_out))
    assert result.output == f"3 rows written to {csv_out}\n"
    assert csv_out.read_text().splitlines()[0] == "run_id,total_calls,total_trades"
    json_out = tmp_path / "out.json"
    result = run(qbus, SQL, "--format", "json", "--output", str(json_out))
    assert result.exit_code == 0 and len(json.loads(json_out.read_text())) == 3


def test_bad_sql_is_a_clear_error(qbus: Config) -> None:
    result = run(qbus, "SELEC run_id FROM catalog.runs_d")
    assert result.exit_code == 6
    assert result.output.startswith('Error: bad SQL: Parser Error: syntax error at or near "SELEC"')


def test_missing_table_lists_what_exists(qbus: Config) -> None:
    result = run(qbus, "SELECT * FROM exports.no_such_view")
    assert result.exit_code == 6
    message = result.output.strip()
    assert message.startswith("Error: Catalog Error: Table with name no_such_view does not exist")
    assert "available tables and views: " in message
    listed = message.split("available tables and views: ")[1].split(", ")
    for name in (
        "catalog.runs_d",
        "catalog.artifacts_f",
        "exports.caller_leaderboard",
        "exports.run_summaries",
        f"exports.{PATH}",
    ):
        assert name in listed


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("CREATE TABLE t AS SELECT 1", "CREATE"),
        ("DELETE FROM catalog.runs_d", "DELETE"),
        ("INSERT INTO catalog.runs_d SELECT * FROM catalog.runs_d", "INSERT"),
        ("COPY catalog.runs_d TO '/tmp/x.csv'", "COPY"),
        ("ATTACH '/tmp/other.duckdb'", "ATTACH"),
    ],
)
def test_writes_are_refused(qbus: Config, sql: str, kind: str) -> None:
    result = run(qbus, sql)
    assert result.exit_code == 6
    assert result.output == (
        f"Error: quantbot-bus query is read-only: a {kind} statement is not allowed "
        "(use SELECT; to write a file use --format parquet|csv --output FILE)\n"
    )


def test_more_than_one_statement_is_refused(qbus: Config) -> None:
    result = run(qbus, "SELECT 1; SELECT 2")
    assert result.exit_code == 6
    assert result.output == "Error: pass exactly one statement (got 2)\n"


def test_without_a_snapshot_the_error_says_what_to_do(bus: Config) -> None:
    result = run(bus, "SELECT 1")
    assert result.exit_code == 4
    assert "no catalog snapshot" in result.output and "quantbot-bus sync" in result.output


def test_help_documents_the_command() -> None:
    result = CliRunner().invoke(main, ["query", "--help"])
    assert result.exit_code == 0
    assert "read-only SQL" in result.output and "--output" in result.output


def test_output_replaces_a_file_atomically_and_writes_through_a_symlink(
    qbus: Config, tmp_path: Path
) -> None:
    """A regular --output file is replaced (a new inode: readers of the old one never see a
    half-written file); a symlink (e.g. /dev/stdout) is written through, the link kept."""
    for fmt in ("json", "csv", "parquet"):
        plain = tmp_path / f"plain.{fmt}"
        plain.write_text("old")
        inode = plain.stat().st_ino
        assert run(qbus, SQL, "--format", fmt, "--output", str(plain)).exit_code == 0
        assert plain.stat().st_ino != inode
        target = tmp_path / f"target.{fmt}"
        target.write_text("old")
        link = tmp_path / f"link.{fmt}"
        link.symlink_to(target)
        result = run(qbus, SQL, "--format", fmt, "--output", str(link))
        assert result.exit_code == 0, result.output
        assert link.is_symlink() and os.readlink(link) == str(target)
        rel = duckdb.sql(f"SELECT count(*) FROM '{target}'")
        assert rel is not None
        got = rel.fetchall()
        assert got == [(3,)], fmt
