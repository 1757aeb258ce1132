"""The DuckDB catalog file across releases: a release-1 catalog migrated in place, a newer or
foreign file refused, a second writer told clearly. RunInfo objects are built directly
(builders.run_info: the catalog does not read the disk); real DuckDB files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from builders import catalog_rows, run_info
from structlog.testing import capture_logs

from quantbot_bus.catalog import SCHEMA_VERSION, Batch, Catalog
from quantbot_bus.errors import CatalogError

V1_DDL = [  # the catalog exactly as release 1 (schema version 1) created it
    "CREATE SCHEMA catalog",
    "CREATE TABLE catalog.schema_version (version INTEGER NOT NULL PRIMARY KEY, applied_at TIMESTAMP NOT NULL)",
    """CREATE TABLE catalog.runs_d (run_id VARCHAR NOT NULL PRIMARY KEY, run_type VARCHAR NOT NULL,
        producer VARCHAR, producer_version VARCHAR, status VARCHAR NOT NULL, created_at TIMESTAMP,
        started_at TIMESTAMP, finished_at TIMESTAMP, git_commit VARCHAR, git_branch VARCHAR,
        git_dirty BOOLEAN, params JSON, metrics JSON, metadata JSON, run_dir VARCHAR NOT NULL,
        artifact_count INTEGER NOT NULL, total_rows BIGINT NOT NULL, total_bytes BIGINT NOT NULL,
        fingerprint VARCHAR NOT NULL, first_registered_at TIMESTAMP NOT NULL,
        registered_at TIMESTAMP NOT NULL, deleted_at TIMESTAMP)""",
    """CREATE TABLE catalog.artifacts_f (run_id VARCHAR NOT NULL, name VARCHAR NOT NULL,
        path VARCHAR NOT NULL, format VARCHAR NOT NULL, rows BIGINT NOT NULL, bytes BIGINT NOT NULL,
        sha256 VARCHAR, arrow_schema JSON, registered_at TIMESTAMP NOT NULL, PRIMARY KEY (run_id, name))""",
    """CREATE TABLE catalog.rejections_f (run_dir VARCHAR NOT NULL PRIMARY KEY, run_id VARCHAR,
        reason VARCHAR NOT NULL, first_seen_at TIMESTAMP NOT NULL, last_seen_at TIMESTAMP NOT NULL,
        attempts INTEGER NOT NULL, resolved_at TIMESTAMP)""",
    "INSERT INTO catalog.schema_version VALUES (1, '2024-01-01')",
    """INSERT INTO catalog.runs_d VALUES ('legacy', 'backtest', 'ts', NULL, 'success',
        '2024-01-01', NULL, NULL, NULL, NULL, NULL, '{}', '{}', '{}', '/old/backtest/legacy',
        1, 5, 50, 'fp-old', '2024-01-02', '2024-01-02', NULL)""",
    """INSERT INTO catalog.artifacts_f VALUES ('legacy', 't', '/old/backtest/legacy/t.parquet',
        'parquet', 5, 50, NULL, '[]', '2024-01-02')""",
    """INSERT INTO catalog.rejections_f VALUES ('/old/bad', NULL, 'broken', '2024-01-01',
        '2024-01-01', 1, NULL)""",
]


def test_migrates_a_release_1_catalog(tmp_path: Path) -> None:
    path = tmp_path / "bus.duckdb"
    con = duckdb.connect()
    con.execute("ATTACH ? AS old", [str(path)])
    con.execute("USE old")
    for statement in V1_DDL:
        con.execute(statement)
    con.close()

    with capture_logs() as logs, Catalog.open(path) as c:
        assert c.schema_version() == SCHEMA_VERSION
        assert catalog_rows(c, "SELECT run_id, fingerprint, host, shape FROM catalog.runs_d") == [
            ("legacy", "fp-old", None, None)
        ]
        assert c.known_rejections() == {"/old/bad": None}  # the new column exists, empty
        assert c.counts() == {"runs": 1, "deleted": 0, "artifacts": 1, "rejections": 1}
        assert catalog_rows(c, "SELECT run_id FROM catalog.latest_artifacts_v") == [("legacy",)]
        res = c.apply_batch(
            Batch(valid=[run_info(tmp_path, "fresh")], gone=["/old/backtest/legacy"])
        )
        assert res.registered == ["fresh"] and res.deleted == ["legacy"]
    assert [e["version"] for e in logs if e["event"] == "catalog.migrated"] == list(
        range(2, SCHEMA_VERSION + 1)
    )


def test_refuses_a_newer_or_foreign_file(tmp_path: Path) -> None:
    newer = tmp_path / "newer.duckdb"
    with Catalog.open(newer) as c:
        c.con.execute("INSERT INTO catalog.schema_version VALUES (99, '2030-01-01')")
    with pytest.raises(CatalogError, match="schema version 99, newer than this quantbot-bus"):
        Catalog.open(newer)

    foreign = tmp_path / "foreign.duckdb"
    con = duckdb.connect(str(foreign))
    con.execute("CREATE TABLE t (x INT)")
    con.close()
    with pytest.raises(CatalogError, match="not a quantbot-bus catalog"):
        Catalog.open(foreign)


def test_a_second_writer_gets_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bus.duckdb"
    with Catalog.open(path):
        code = (
            "import sys\nfrom quantbot_bus.catalog import Catalog\n"
            "from quantbot_bus.errors import CatalogError\n"
            "try:\n    Catalog.open(sys.argv[1])\nexcept CatalogError as e:\n"
            "    print(e); sys.exit(3)\n"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60
        )
    assert proc.returncode == 3, proc.stderr
    assert "is in use by another process" in proc.stdout
