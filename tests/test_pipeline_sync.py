"""The one-shot sync / rebuild (pipeline.sync, pipeline.rebuild) on real directories: what they
register, publish and report, and what they refuse."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from builders import make_run, make_ts_run
from structlog.testing import capture_logs

from quantbot_bus import pipeline
from quantbot_bus.catalog import Catalog, open_reader
from quantbot_bus.config import Config
from quantbot_bus.errors import CatalogError


def test_sync_registers_publishes_and_reports(bus: Config) -> None:
    make_run(bus.root, "path-only", "v1run")
    make_ts_run(
        bus.root,
        "tsrun",
        rows=4,
        backtest_type="path-only",
        table_name="backtest_call_path_metrics",
        callsProcessed=4,
    )
    young = make_run(bus.root, "policy", "young")
    (young / "results.parquet").unlink()
    old = make_run(bus.root, "policy", "old")
    (old / "results.parquet").unlink()
    hour_ago = time.time() - 3600
    os.utime(old / "metadata.json", (hour_ago, hour_ago))

    with capture_logs() as logs:
        res = pipeline.sync(bus)
    assert sorted(res.registered) == ["tsrun", "v1run"]
    assert list(res.pending) == [str(young)]
    assert [r.run_dir for r in res.rejected] == [str(old)]
    assert "does not exist yet" in res.rejected[0].reason
    assert "still incomplete" in res.rejected[0].reason
    events = [e["event"] for e in logs]
    assert events.count("run.registered") == 2
    assert "run.pending" in events and "run.rejected" in events
    done = next(e for e in logs if e["event"] == "rescan.done")
    assert done["runs"] == 4 and done["ms"] >= 0

    # the snapshot is what readers see; the working catalog is closed again
    with open_reader(bus.snapshot_path) as con:
        got = con.execute(
            "SELECT run_id, run_type, producer, shape, params->>'$.callsProcessed' "
            "FROM catalog.runs_d ORDER BY run_id"
        ).fetchall()
    assert got == [
        ("tsrun", "backtest", "quantbot-ts", "quantbot-ts", "4"),
        ("v1run", "path-only", "tests", "v1", None),
    ]
    with Catalog.open(bus.catalog_path) as c:
        assert c.counts() == {"runs": 2, "deleted": 0, "artifacts": 2, "rejections": 1}

    res = pipeline.sync(bus)  # nothing changed
    assert res.registered == res.updated == res.deleted == [] and res.rejected == []
    assert sorted(res.unchanged) == ["tsrun", "v1run"]


def test_a_failing_export_never_fails_sync(bus: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(config: Config, con: object, **kwargs: object) -> dict[str, object]:
        raise RuntimeError("disk full")

    monkeypatch.setattr(pipeline.exports, "refresh", broken)
    make_run(bus.root, "path-only", "r1")
    with capture_logs() as logs:
        res = pipeline.sync(bus)
    assert res.registered == ["r1"]
    assert {
        "event": "export.failed",
        "error": "RuntimeError: disk full",
        "log_level": "error",
    } in logs
    assert bus.snapshot_path.is_file()


def test_sync_gets_exports_a_working_cursor(bus: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []

    def probe(config: Config, con: object, **kwargs: object) -> dict[str, object]:
        seen.append(con.execute("SELECT count(*) FROM catalog.runs_d").fetchone()[0])  # type: ignore[attr-defined]
        return {}

    monkeypatch.setattr(pipeline.exports, "refresh", probe)
    make_run(bus.root, "path-only", "r1")
    pipeline.sync(bus)
    assert seen == [1]


def test_rebuild_keeps_a_backup_and_recreates_from_disk(bus: Config) -> None:
    make_run(bus.root, "path-only", "r1")
    make_run(bus.root, "path-only", "r2")
    pipeline.sync(bus)
    shutil.rmtree(bus.root / "path-only" / "r2")
    pipeline.sync(bus)  # r2 soft-deleted in the catalog
    with Catalog.open(bus.catalog_path) as c:
        assert c.counts()["deleted"] == 1

    with capture_logs() as logs:
        res = pipeline.rebuild(bus)
    assert res.registered == ["r1"]
    backup = bus.catalog_path.with_name("bus.duckdb.bak")
    assert any(e["event"] == "catalog.backup" and e["backup"] == str(backup) for e in logs)
    with Catalog.open(backup) as old:
        assert old.counts() == {"runs": 1, "deleted": 1, "artifacts": 1, "rejections": 0}
    with Catalog.open(bus.catalog_path) as new:
        assert new.counts() == {"runs": 1, "deleted": 0, "artifacts": 1, "rejections": 0}
    with open_reader(bus.snapshot_path) as con:
        assert con.execute("SELECT run_id FROM catalog.runs_d").fetchall() == [("r1",)]


def test_rebuild_replaces_a_damaged_catalog(bus: Config) -> None:
    make_run(bus.root, "path-only", "r1")
    bus.catalog_path.write_bytes(b"this is not a duckdb file" * 100)
    with pytest.raises(CatalogError):
        pipeline.sync(bus)
    res = pipeline.rebuild(bus)
    assert res.registered == ["r1"]


def test_rebuild_and_sync_refuse_while_the_catalog_is_in_use(bus: Config) -> None:
    make_run(bus.root, "path-only", "r1")
    pipeline.sync(bus)
    holder = (
        "import sys, time\nfrom quantbot_bus.catalog import Catalog\n"
        "c = Catalog.open(sys.argv[1])\nprint('HELD', flush=True)\nsys.stdin.readline()\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", holder, str(bus.catalog_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "HELD"
            with pytest.raises(CatalogError, match="in use by another process"):
                pipeline.rebuild(bus)
            with pytest.raises(CatalogError, match="in use by another process"):
                pipeline.sync(bus)
            assert proc.stdin is not None
            proc.stdin.write("\n")
            proc.stdin.flush()
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    assert not bus.catalog_path.with_name("bus.duckdb.bak").exists()
    assert json.loads(json.dumps(dataclasses.asdict(pipeline.sync(bus))))["registered"] == []
