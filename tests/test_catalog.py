"""The DuckDB catalog: registration rules, atomicity, migrations and the reader-side snapshot.

RunInfo objects are built directly here (the catalog does not read the disk); real DuckDB files.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest
from builders import publish_catalog
from structlog.testing import capture_logs

from quantbot_bus.catalog import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Batch,
    Catalog,
    Rejection,
    open_reader,
)
from quantbot_bus.config import Config
from quantbot_bus.contract import ArtifactInfo, RunInfo
from quantbot_bus.errors import CatalogError, CatalogMissingError
from quantbot_bus.publication import Publication

SCHEMA = json.dumps([{"name": "x", "type": "int64", "nullable": True}])


def run_info(
    root: Path,
    run_id: str,
    *,
    run_type: str = "backtest",
    fingerprint: str = "fp1",
    names: tuple[str, ...] = ("results",),
    run_dir: Path | None = None,
    created_at: str = "2024-05-01T12:00:00Z",
    status: str = "success",
    params: dict[str, Any] | None = None,
    metadata_json: str | None = None,
) -> RunInfo:
    run_dir = run_dir if run_dir is not None else root / run_type / run_id
    artifacts = tuple(
        ArtifactInfo(
            name=name,
            file=f"{name}.parquet",
            path=run_dir / f"{name}.parquet",
            format="parquet",
            rows=10 + i,
            bytes=1000 + i,
            sha256="ab" * 32,
            arrow_schema=SCHEMA,
        )
        for i, name in enumerate(names)
    )
    return RunInfo(
        run_id=run_id,
        run_type=run_type,
        producer="tests",
        producer_version="1.0",
        status=status,
        created_at=created_at,
        started_at=created_at,
        finished_at=created_at,
        params=params if params is not None else {"seed": 1},
        metrics={"sharpe": 1.5},
        git_commit="abc",
        git_branch="main",
        git_dirty=False,
        host="h",
        error=None,
        artifacts=artifacts,
        run_dir=run_dir,
        metadata_json=metadata_json
        if metadata_json is not None
        else json.dumps({"run_id": run_id}),
        metadata_mtime_ns=time.time_ns(),
        fingerprint=fingerprint,
    )


@pytest.fixture
def cat(tmp_path: Path):
    with Catalog.open(tmp_path / "state" / "bus.duckdb") as c:
        yield c


def rows(c: Catalog, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    return c.con.execute(sql, params or []).fetchall()


def table_dump(c: Catalog) -> dict[str, list[tuple[Any, ...]]]:
    return {
        t: rows(c, f"SELECT * FROM catalog.{t} ORDER BY ALL")  # noqa: S608 (fixed names)
        for t in ("runs_d", "artifacts_f", "rejections_f")
    }


def test_open_creates_schema_and_is_reopenable(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "state" / "bus.duckdb"
    with Catalog.open(path) as c:
        assert c.schema_version() == SCHEMA_VERSION == len(MIGRATIONS)
        tables = {
            r[0]
            for r in rows(c, "SELECT table_name FROM duckdb_tables() WHERE schema_name='catalog'")
        }
        assert {"runs_d", "artifacts_f", "rejections_f", "schema_version"} <= tables
        views = {
            r[0]
            for r in rows(c, "SELECT view_name FROM duckdb_views() WHERE schema_name='catalog'")
        }
        assert "latest_artifacts_v" in views
        types = dict(
            rows(c, "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name='runs_d'")
        )
        assert types["params"] == types["metrics"] == types["metadata"] == "JSON"
        assert types["registered_at"] == "TIMESTAMP"
        assert c.counts() == {"runs": 0, "deleted": 0, "artifacts": 0, "rejections": 0}
    with Catalog.open(path) as c:  # reopening does not migrate again
        assert rows(c, "SELECT version FROM catalog.schema_version ORDER BY 1") == [
            (v,) for v in range(1, SCHEMA_VERSION + 1)
        ]


def test_register_then_same_batch_again_is_a_noop(tmp_path: Path, cat: Catalog) -> None:
    runs = [run_info(tmp_path, f"r{i}", names=("a", "b")) for i in range(3)]
    with capture_logs() as logs:
        res = cat.apply_batch(Batch(valid=runs))
    assert sorted(res.registered) == ["r0", "r1", "r2"]
    assert res.updated == res.deleted == res.unchanged == [] and res.rejected == []
    assert cat.counts() == {"runs": 3, "deleted": 0, "artifacts": 6, "rejections": 0}
    events = [e["event"] for e in logs]
    assert events.count("run.registered") == 3 and events[-1] == "batch.committed"
    reg = next(e for e in logs if e["event"] == "run.registered")
    assert reg["run_type"] == "backtest" and reg["latency_ms"] >= 0
    assert logs[-1]["n"] == 3 and logs[-1]["registered"] == 3

    before = table_dump(cat)
    res2 = cat.apply_batch(Batch(valid=runs))
    assert sorted(res2.unchanged) == ["r0", "r1", "r2"]
    assert res2.registered == res2.updated == []
    assert table_dump(cat) == before  # not even registered_at moved

    known = cat.known_runs()
    assert known[str(tmp_path / "backtest" / "r1")].run_id == "r1"
    assert known[str(tmp_path / "backtest" / "r1")].fingerprint == "fp1"
    assert not known[str(tmp_path / "backtest" / "r1")].deleted

    row = rows(
        cat,
        "SELECT run_type, producer, status, created_at, git_branch, params->>'$.seed', "
        "metrics->>'$.sharpe', artifact_count, total_rows, total_bytes, deleted_at "
        "FROM catalog.runs_d WHERE run_id='r0'",
    )
    assert row == [
        (
            "backtest",
            "tests",
            "success",
            dt.datetime(2024, 5, 1, 12),
            "main",
            "1",
            "1.5",
            2,
            21,
            2001,
            None,
        )
    ]


def test_known_runs_filtered_by_paths(tmp_path: Path, cat: Catalog) -> None:
    a1 = run_info(tmp_path, "a1", run_type="a")
    a2 = run_info(tmp_path, "a2", run_type="a")
    ab = run_info(tmp_path, "ab", run_type="ab")  # "a" is a string prefix of "ab", not a parent
    cat.apply_batch(
        Batch(valid=[a1, a2, ab], rejected=[Rejection(str(tmp_path / "a" / "x"), None, "r")])
    )
    cat.apply_batch(Batch(gone=[str(a2.run_dir)]))
    assert set(cat.known_runs()) == {str(a1.run_dir), str(a2.run_dir), str(ab.run_dir)}
    assert set(cat.known_runs([str(tmp_path / "a")])) == {str(a1.run_dir), str(a2.run_dir)}
    assert set(cat.known_runs([str(tmp_path / "a") + "/"])) == {str(a1.run_dir), str(a2.run_dir)}
    inside = str(a1.run_dir / "results.parquet")  # an event path inside a run dir
    assert set(cat.known_runs([inside])) == {str(a1.run_dir)}
    assert cat.known_runs([str(tmp_path / "zzz")]) == {}
    assert cat.known_runs([]) == {}
    assert cat.known_rejections([str(tmp_path / "a")]) == {str(tmp_path / "a" / "x"): None}
    assert cat.known_rejections([str(tmp_path / "ab")]) == {}
    assert cat.live_run_dirs(["a1", "a2", "nope"]) == {"a1": str(a1.run_dir)}


def test_changed_fingerprint_updates_row_and_replaces_artifacts(
    tmp_path: Path, cat: Catalog
) -> None:
    cat.apply_batch(Batch(valid=[run_info(tmp_path, "r1", names=("a", "b"))]))
    ((first_reg, reg1),) = rows(
        cat, "SELECT first_registered_at, registered_at FROM catalog.runs_d"
    )
    time.sleep(0.01)  # a time gap: the update's registered_at must be later
    with capture_logs() as logs:
        res = cat.apply_batch(
            Batch(
                valid=[
                    run_info(tmp_path, "r1", fingerprint="fp2", names=("c",), params={"seed": 2})
                ]
            )
        )
    assert res.updated == ["r1"] and res.registered == [] and res.unchanged == []
    assert [e["event"] for e in logs] == ["run.updated", "batch.committed"]
    ((first2, reg2, fp, seed),) = rows(
        cat,
        "SELECT first_registered_at, registered_at, fingerprint, params->>'$.seed' FROM catalog.runs_d",
    )
    assert first2 == first_reg and reg2 > reg1 and fp == "fp2" and seed == "2"
    assert rows(cat, "SELECT run_id, name FROM catalog.artifacts_f") == [("r1", "c")]
    assert cat.counts()["runs"] == 1


def test_soft_delete_keeps_artifacts_and_a_reappearing_run_comes_back(
    tmp_path: Path, cat: Catalog
) -> None:
    r1, r2 = run_info(tmp_path, "r1"), run_info(tmp_path, "r2")
    cat.apply_batch(Batch(valid=[r1, r2]))
    ((first_reg,),) = rows(cat, "SELECT first_registered_at FROM catalog.runs_d WHERE run_id='r1'")
    with capture_logs() as logs:
        res = cat.apply_batch(Batch(gone=[str(r1.run_dir)]))
    assert res.deleted == ["r1"]
    assert ("run.deleted", "r1") in [(e["event"], e.get("run_id")) for e in logs]
    assert cat.counts() == {"runs": 1, "deleted": 1, "artifacts": 1, "rejections": 0}
    assert rows(cat, "SELECT count(*) FROM catalog.artifacts_f WHERE run_id='r1'") == [(1,)]
    assert rows(cat, "SELECT run_id FROM catalog.latest_artifacts_v") == [("r2",)]
    assert cat.known_runs()[str(r1.run_dir)].deleted
    # gone again: nothing more to delete
    assert cat.apply_batch(Batch(gone=[str(r1.run_dir)])).deleted == []

    res = cat.apply_batch(Batch(valid=[r1]))  # same fingerprint, but it was deleted
    assert res.registered == ["r1"] and res.unchanged == []
    ((deleted_at, first2),) = rows(
        cat, "SELECT deleted_at, first_registered_at FROM catalog.runs_d WHERE run_id='r1'"
    )
    assert deleted_at is None and first2 == first_reg
    assert cat.counts() == {"runs": 2, "deleted": 0, "artifacts": 2, "rejections": 0}


def test_run_moved_to_another_dir_in_one_batch_is_an_update(tmp_path: Path, cat: Catalog) -> None:
    old = run_info(tmp_path, "r1", run_type="a")
    cat.apply_batch(Batch(valid=[old]))
    new = run_info(tmp_path, "r1", run_type="b", fingerprint="fp2")
    res = cat.apply_batch(Batch(valid=[new], gone=[str(old.run_dir)]))
    assert res.updated == ["r1"] and res.deleted == [] and res.registered == []
    assert rows(cat, "SELECT run_type, run_dir, deleted_at FROM catalog.runs_d") == [
        ("b", str(new.run_dir), None)
    ]


def test_run_id_conflict_is_rejected_and_never_overwrites(tmp_path: Path, cat: Catalog) -> None:
    first = run_info(tmp_path, "dup", run_type="path-only")
    cat.apply_batch(Batch(valid=[first]))
    before = rows(cat, "SELECT * FROM catalog.runs_d")
    second = run_info(tmp_path, "dup", run_type="policy", fingerprint="other", names=("x",))
    res = cat.apply_batch(Batch(valid=[second]))
    reason = (
        f"run_id dup is already registered from {first.run_dir}; "
        "run ids must be unique across run types"
    )
    assert res.registered == res.updated == []
    assert res.rejected == [Rejection(str(second.run_dir), "dup", reason, "other")]
    assert rows(cat, "SELECT * FROM catalog.runs_d") == before
    assert rows(cat, "SELECT name FROM catalog.artifacts_f") == [("results",)]
    assert cat.known_rejections() == {str(second.run_dir): "other"}
    assert rows(cat, "SELECT run_id, reason, attempts FROM catalog.rejections_f") == [
        ("dup", reason, 1)
    ]

    # the original goes away: the second directory can now take the id, and its rejection resolves
    cat.apply_batch(Batch(gone=[str(first.run_dir)]))
    res = cat.apply_batch(Batch(valid=[second]))
    assert res.registered == ["dup"]
    assert rows(cat, "SELECT run_type, deleted_at FROM catalog.runs_d") == [("policy", None)]
    assert cat.known_rejections() == {}


def test_duplicate_run_id_within_one_batch(tmp_path: Path, cat: Catalog) -> None:
    a = run_info(tmp_path, "same", run_type="a")
    b = run_info(tmp_path, "same", run_type="b")
    res = cat.apply_batch(Batch(valid=[a, b]))
    assert res.registered == ["same"]
    assert [r.run_dir for r in res.rejected] == [str(b.run_dir)]
    assert "already registered from" in res.rejected[0].reason
    assert rows(cat, "SELECT run_dir FROM catalog.runs_d") == [(str(a.run_dir),)]


def test_rejections_upsert_by_run_dir_and_resolve(tmp_path: Path, cat: Catalog) -> None:
    d = str(tmp_path / "backtest" / "bad")
    with capture_logs() as logs:
        cat.apply_batch(Batch(rejected=[Rejection(d, "bad", "results.parquet is truncated", "f1")]))
    assert any(
        e["event"] == "run.rejected" and e["reason"] == "results.parquet is truncated" for e in logs
    )
    ((first_seen, last1),) = rows(
        cat, "SELECT first_seen_at, last_seen_at FROM catalog.rejections_f"
    )
    time.sleep(0.01)  # a time gap: the second sighting's last_seen_at must be later
    cat.apply_batch(Batch(rejected=[Rejection(d, "bad", "sha256 mismatch", "f2")]))
    assert rows(
        cat, "SELECT run_dir, reason, attempts, fingerprint, resolved_at FROM catalog.rejections_f"
    ) == [(d, "sha256 mismatch", 2, "f2", None)]
    ((first2, last2),) = rows(cat, "SELECT first_seen_at, last_seen_at FROM catalog.rejections_f")
    assert first2 == first_seen and last2 > last1
    assert cat.known_rejections() == {d: "f2"}
    assert cat.counts()["rejections"] == 1

    good = run_info(tmp_path, "bad", fingerprint="f3")
    res = cat.apply_batch(Batch(valid=[good]))
    assert res.registered == ["bad"]
    ((resolved,),) = rows(cat, "SELECT resolved_at FROM catalog.rejections_f")
    assert resolved is not None
    assert cat.known_rejections() == {} and cat.counts()["rejections"] == 0

    # broken again: the live run is soft-deleted and the rejection reopens
    res = cat.apply_batch(Batch(rejected=[Rejection(d, "bad", "results.parquet is missing", "f4")]))
    assert res.deleted == ["bad"]
    assert rows(cat, "SELECT attempts, resolved_at FROM catalog.rejections_f") == [(3, None)]
    assert cat.counts() == {"runs": 0, "deleted": 1, "artifacts": 0, "rejections": 1}


def test_gone_rejected_dir_resolves_its_rejection(tmp_path: Path, cat: Catalog) -> None:
    d = str(tmp_path / "x" / "bad")
    cat.apply_batch(Batch(rejected=[Rejection(d, None, "metadata.json is not valid JSON", "f")]))
    res = cat.apply_batch(Batch(gone=[d]))
    assert res.deleted == []
    assert cat.known_rejections() == {}


@pytest.mark.parametrize("breakage", ["duplicate artifact name", "metadata is not JSON"])
def test_a_failing_batch_leaves_nothing(tmp_path: Path, cat: Catalog, breakage: str) -> None:
    keep = run_info(tmp_path, "keep")
    change = run_info(tmp_path, "change")
    cat.apply_batch(Batch(valid=[keep, change], rejected=[Rejection("/x/old", None, "old", "f")]))
    before = table_dump(cat)
    if breakage == "duplicate artifact name":
        broken = run_info(tmp_path, "broken", names=("t", "t"))
    else:
        broken = run_info(tmp_path, "broken", metadata_json="{not json")
    batch = Batch(
        valid=[run_info(tmp_path, "new1"), run_info(tmp_path, "change", fingerprint="fp2"), broken],
        gone=[str(keep.run_dir)],
        rejected=[Rejection("/x/old", None, "again", "f2"), Rejection("/x/new", None, "new", "f")],
    )
    with pytest.raises(CatalogError, match="nothing was written"):
        cat.apply_batch(batch)
    assert table_dump(cat) == before
    assert cat.counts() == {"runs": 2, "deleted": 0, "artifacts": 2, "rejections": 1}
    # the connection is usable afterwards (the transaction was rolled back, not left open)
    assert cat.apply_batch(Batch(valid=[run_info(tmp_path, "new1")])).registered == ["new1"]


def test_latest_artifacts_view_picks_newest_live_success(tmp_path: Path, cat: Catalog) -> None:
    cat.apply_batch(
        Batch(
            valid=[
                run_info(tmp_path, "old", created_at="2024-01-01T00:00:00Z", names=("t", "u")),
                run_info(tmp_path, "new", created_at="2024-03-01T00:00:00Z", names=("t",)),
                run_info(
                    tmp_path,
                    "fail",
                    created_at="2024-04-01T00:00:00Z",
                    names=("t",),
                    status="failed",
                ),
                run_info(
                    tmp_path,
                    "other",
                    run_type="opt",
                    created_at="2023-01-01T00:00:00Z",
                    names=("t",),
                ),
            ]
        )
    )
    latest = rows(cat, "SELECT run_type, name, run_id FROM catalog.latest_artifacts_v ORDER BY ALL")
    assert latest == [("backtest", "t", "new"), ("backtest", "u", "old"), ("opt", "t", "other")]
    cat.apply_batch(Batch(gone=[str(tmp_path / "backtest" / "new")]))
    latest = rows(cat, "SELECT run_type, name, run_id FROM catalog.latest_artifacts_v ORDER BY ALL")
    assert latest == [("backtest", "t", "old"), ("backtest", "u", "old"), ("opt", "t", "other")]


# --- migrations -----------------------------------------------------------------------------

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
        assert rows(c, "SELECT run_id, fingerprint, host, shape FROM catalog.runs_d") == [
            ("legacy", "fp-old", None, None)
        ]
        assert c.known_rejections() == {"/old/bad": None}  # the new column exists, empty
        assert c.counts() == {"runs": 1, "deleted": 0, "artifacts": 1, "rejections": 1}
        assert rows(c, "SELECT run_id FROM catalog.latest_artifacts_v") == [("legacy",)]
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


# --- scale ----------------------------------------------------------------------------------


def test_ten_thousand_runs_in_one_batch(tmp_path: Path, cat: Catalog) -> None:
    runs = [run_info(tmp_path, f"run{i:05d}", names=("a", "b")) for i in range(10_000)]
    res = cat.apply_batch(Batch(valid=runs))
    assert len(res.registered) == 10_000
    assert cat.counts() == {"runs": 10_000, "deleted": 0, "artifacts": 20_000, "rejections": 0}
    res = cat.apply_batch(Batch(valid=runs))
    assert len(res.unchanged) == 10_000
    exports_dir = tmp_path / "exports"
    first = publish_catalog(cat, exports_dir)
    assert first.rows == 30_000  # 10,000 runs + 20,000 artifacts: every row once
    with open_reader(exports_dir / "bus.duckdb") as r:
        assert r.execute("SELECT count(*) FROM catalog.runs_d").fetchone() == (10_000,)
        assert r.execute("SELECT count(*) FROM catalog.artifacts_f").fetchone() == (20_000,)
    # the next run publishes its own rows only, not the catalog again
    cat.apply_batch(Batch(valid=[run_info(tmp_path, "one-more", names=("a", "b"))]))
    second = publish_catalog(cat, exports_dir)
    assert second.rows == 3 and second.bytes_written < 16 * 1024  # three small segments
    with open_reader(exports_dir / "bus.duckdb") as r:
        assert r.execute("SELECT count(*) FROM catalog.runs_d").fetchone() == (10_001,)


# --- the publication ---------------------------------------------------------------------------


def test_open_reader_without_snapshot_gives_advice(tmp_path: Path) -> None:
    with pytest.raises(CatalogMissingError) as err:
        open_reader(tmp_path / "exports" / "bus.duckdb")
    assert str(err.value) == (
        f"no catalog snapshot at {tmp_path / 'exports' / 'bus.duckdb'} yet: start the daemon "
        "(make run) or run `quantbot-bus sync`"
    )


def test_publish_is_complete_atomic_and_leaves_no_temp_files(tmp_path: Path, cat: Catalog) -> None:
    cat.apply_batch(Batch(valid=[run_info(tmp_path, "r1", names=("a", "b"))]))
    exports_dir = tmp_path / "exports"
    dest = exports_dir / "bus.duckdb"
    assert publish_catalog(cat, exports_dir).ms > 0
    names = [p.name for p in exports_dir.rglob("*")]
    assert not [n for n in names if "qbpub" in n or n.endswith((".tmp", ".wal"))]
    assert os.path.realpath(exports_dir / "current") == str(
        exports_dir.resolve() / "gen" / "0000000001"
    )
    with open_reader(dest) as r:
        assert r.execute("SELECT run_id FROM catalog.runs_d").fetchall() == [("r1",)]
        assert r.execute("SELECT count(*) FROM catalog.artifacts_f").fetchone() == (2,)
        assert r.execute(
            "SELECT run_id, name FROM catalog.latest_artifacts_v ORDER BY 2"
        ).fetchall() == [
            ("r1", "a"),
            ("r1", "b"),
        ]
        assert r.execute("SELECT max(version) FROM catalog.schema_version").fetchone() == (
            SCHEMA_VERSION,
        )
        # readers see the catalog's columns, not the publication's bookkeeping
        assert "_seq" not in {d[0] for d in r.execute("SELECT * FROM catalog.runs_d").description}
        # the views file holds views only; its tables are Parquet files of the generation
        assert r.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database()"
        ).fetchone() == (0,)
        with pytest.raises(duckdb.Error):  # read-only
            r.execute("DROP VIEW catalog.runs_d")


def test_readers_see_the_newest_version_of_each_row(tmp_path: Path, cat: Catalog) -> None:
    """Updates, soft deletes, undeletes and resolved rejections are new row versions in later
    segments; the views show each key's newest version and that version's artifacts only."""
    exports_dir = tmp_path / "exports"
    cat.apply_batch(Batch(valid=[run_info(tmp_path, "r1", names=("a", "b"))]))
    cat.apply_batch(Batch(rejected=[Rejection("/x/bad", None, "broken", "f")]))
    publish_catalog(cat, exports_dir)
    cat.apply_batch(Batch(valid=[run_info(tmp_path, "r1", fingerprint="fp2", names=("c",))]))
    cat.apply_batch(Batch(valid=[run_info(tmp_path, "r2")], gone=["/x/bad"]))
    publish_catalog(cat, exports_dir)
    with open_reader(exports_dir / "bus.duckdb") as r:
        assert r.execute(
            "SELECT run_id, name FROM catalog.artifacts_f ORDER BY ALL"
        ).fetchall() == [("r1", "c"), ("r2", "results")]
        assert r.execute(
            "SELECT run_id, fingerprint FROM catalog.runs_d ORDER BY 1"
        ).fetchall() == [("r1", "fp2"), ("r2", "fp1")]
        assert r.execute(
            "SELECT run_dir, resolved_at IS NOT NULL FROM catalog.rejections_f"
        ).fetchall() == [("/x/bad", True)]
    cat.apply_batch(Batch(gone=[str(tmp_path / "backtest" / "r1")]))
    publish_catalog(cat, exports_dir)
    with open_reader(exports_dir / "bus.duckdb") as r:
        assert r.execute(
            "SELECT run_id FROM catalog.runs_d WHERE deleted_at IS NOT NULL"
        ).fetchall() == [("r1",)]
        # a soft-deleted run keeps its artifacts (as in the working catalog)
        assert r.execute("SELECT name FROM catalog.artifacts_f WHERE run_id = 'r1'").fetchall() == [
            ("c",)
        ]
    for table in ("runs_d", "artifacts_f", "rejections_f"):
        assert table_dump_published(exports_dir, table) == table_dump_working(cat, table)


def table_dump_published(exports_dir: Path, table: str) -> list[tuple[Any, ...]]:
    with open_reader(exports_dir / "bus.duckdb") as r:
        return r.execute(f"SELECT * FROM catalog.{table} ORDER BY ALL").fetchall()  # noqa: S608


def table_dump_working(cat: Catalog, table: str) -> list[tuple[Any, ...]]:
    return rows(
        cat,
        f"SELECT * EXCLUDE (_seq{', _aseq' if table == 'runs_d' else ''}) "  # noqa: S608
        f"FROM catalog.{table} ORDER BY ALL",
    )


def test_a_new_catalog_replaces_the_publication_of_the_old_one(tmp_path: Path) -> None:
    """After ``rebuild`` (a new catalog), the publication starts over instead of mixing."""
    exports_dir = tmp_path / "exports"
    with Catalog.open(tmp_path / "one.duckdb") as one:
        one.apply_batch(Batch(valid=[run_info(tmp_path, f"old{i}") for i in range(3)]))
        publish_catalog(one, exports_dir)
    with Catalog.open(tmp_path / "two.duckdb") as two:
        two.apply_batch(Batch(valid=[run_info(tmp_path, "new")]))
        publish_catalog(two, exports_dir)
    with open_reader(exports_dir / "bus.duckdb") as r:
        assert r.execute("SELECT run_id FROM catalog.runs_d").fetchall() == [("new",)]


def test_same_process_reader_sees_new_snapshot_while_holding_old(
    tmp_path: Path, cat: Catalog
) -> None:
    exports_dir = tmp_path / "exports"
    dest = exports_dir / "bus.duckdb"
    cat.apply_batch(Batch(valid=[run_info(tmp_path, "r1")]))
    publish_catalog(cat, exports_dir)
    held = open_reader(dest)
    cat.apply_batch(Batch(valid=[run_info(tmp_path, "r2")]))
    publish_catalog(cat, exports_dir)
    fresh = open_reader(dest)
    assert fresh.execute("SELECT count(*) FROM catalog.runs_d").fetchone() == (2,)
    assert held.execute("SELECT count(*) FROM catalog.runs_d").fetchone() == (1,)
    held.close()
    fresh.close()


READER = textwrap.dedent(
    """
    import sys
    import duckdb
    from quantbot_bus.catalog import open_reader

    snap = sys.argv[1]
    held = open_reader(snap)
    # what a user script does: a plain read-only connect to exports/bus.duckdb
    plain = duckdb.connect(snap, read_only=True)
    def count(con, q="SELECT count(*) FROM catalog.runs_d"):
        return con.execute(q).fetchone()[0]
    print("READY", count(held), count(plain), flush=True)
    for line in sys.stdin:
        if line.strip() == "quit":
            break
        fresh = open_reader(snap)
        print("CHECK", count(held), count(plain), count(fresh), flush=True)
        fresh.close()
    """
)


def test_reader_process_holding_the_snapshot_never_blocks_the_catalog(
    tmp_path: Path, cat: Catalog
) -> None:
    exports_dir = tmp_path / "exports"
    dest = exports_dir / "bus.duckdb"
    cat.apply_batch(Batch(valid=[run_info(tmp_path, f"a{i}") for i in range(5)]))
    publish_catalog(cat, exports_dir)
    with subprocess.Popen(
        [sys.executable, "-c", READER, str(dest)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None and proc.stdin is not None
            assert proc.stdout.readline().split() == ["READY", "5", "5"]
            for round_ in range(1, 6):
                batch = Batch(valid=[run_info(tmp_path, f"b{round_}_{i}") for i in range(10)])
                assert len(cat.apply_batch(batch).registered) == 10
                publish_catalog(cat, exports_dir)
                proc.stdin.write("check\n")
                proc.stdin.flush()
                # held connections keep their consistent old view; a fresh one sees the new data
                assert proc.stdout.readline().split() == ["CHECK", "5", "5", str(5 + 10 * round_)]
            proc.stdin.write("quit\n")
            proc.stdin.flush()
            assert proc.wait(timeout=60) == 0
            assert proc.stderr is not None and proc.stderr.read() == ""
        finally:
            if proc.poll() is None:
                proc.kill()


def test_a_plain_duckdb_connect_to_the_default_snapshot_resolves_catalog_names(
    tmp_path: Path, bus: Config
) -> None:
    """What a user types: duckdb.connect(exports/bus.duckdb) then catalog.runs_d, unqualified."""
    with Catalog.open(bus.catalog_path) as c:
        c.apply_batch(Batch(valid=[run_info(tmp_path, "r1")]))
        publish_catalog(c, bus.exports_dir)
    con = duckdb.connect(str(bus.snapshot_path), read_only=True)
    try:
        assert con.execute("SELECT run_id FROM catalog.runs_d").fetchall() == [("r1",)]
    finally:
        con.close()


def test_compaction_bounds_the_segments_and_keeps_the_newest_versions(
    tmp_path: Path, cat: Catalog
) -> None:
    """Forty batches (new runs, updates, soft deletes, rejections) published one by one, then
    compacted like the daemon does in the background: fewer segments, same reader content."""
    exports_dir = tmp_path / "exports"
    pub = Publication(exports_dir)

    def publish_once() -> None:
        cur = cat.cursor()
        try:
            pub.publish(cur, catalog_id=cat.catalog_id())
        finally:
            cur.close()

    for i in range(40):
        batch = Batch(valid=[run_info(tmp_path, f"r{i}", names=("a", "b"))])
        if i % 3 == 0 and i:  # an earlier run changes: a new version of its rows
            batch.valid.append(run_info(tmp_path, f"r{i - 1}", fingerprint=f"v{i}", names=("c",)))
        if i % 5 == 0 and i:
            batch.gone.append(str(tmp_path / "backtest" / f"r{i - 2}"))
        if i % 7 == 0:
            batch.rejected.append(Rejection(f"/x/bad{i}", None, "broken", "f"))
        cat.apply_batch(batch)
        publish_once()
    before = {t: len(segs) for t, segs in pub.manifest.catalog.items()}
    assert before["runs_d"] == 40
    expected = {t: table_dump_working(cat, t) for t in ("runs_d", "artifacts_f", "rejections_f")}
    held = open_reader(exports_dir / "bus.duckdb")  # a reader of the old generation
    rounds = 0
    while pub.plan_compaction():
        merged = pub.write_compaction(pub.plan_compaction())
        assert pub.commit_compaction(merged)
        rounds += 1
    after = {t: len(segs) for t, segs in pub.manifest.catalog.items()}
    assert rounds >= 2 and all(n <= 8 for n in after.values()), after
    for table, rows_ in expected.items():
        assert table_dump_published(exports_dir, table) == rows_, table
    # a merged segment holds one version per key (runs_d: each run once)
    merged = [s for s in pub.manifest.catalog["runs_d"] if s.name.startswith("m-")]
    assert merged
    for seg in merged:
        ids = pq.read_table(exports_dir / ".store" / "catalog" / "runs_d" / seg.name)["run_id"]
        assert len(ids) == len(set(ids.to_pylist())) == seg.rows, seg.name
    assert held.execute("SELECT count(*) FROM catalog.runs_d").fetchone() == (40,)
    held.close()
    store = exports_dir / ".store" / "catalog"
    named = {s.name for segs in pub.manifest.catalog.values() for s in segs}
    assert {p.name for p in store.rglob("*.parquet")} == named  # retired ones left the store
    pub.close()
