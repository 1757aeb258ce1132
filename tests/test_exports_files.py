"""The export files: the user ``[[exports]]`` (a failing one reported while the others
stay fresh, a removed one leaving the status) and the whole-file cadence (a file rewritten at
most once per ten times its cost, unless forced)."""

# ruff: noqa: S608 - test SQL over paths and run ids the test itself made

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import pyarrow.parquet as pq
import structlog
from builders import CALLERS, add_path_run, sync
from exports_checks import file_entries, published, rewritten, rows

from quantbot_bus import exports
from quantbot_bus.catalog import Catalog
from quantbot_bus.config import Config
from quantbot_bus.pipeline import Bus
from quantbot_bus.user_exports import UserExport


def test_failing_user_export_is_reported_and_others_stay_fresh(bus: Config, con: Any) -> None:
    cfg = dataclasses.replace(
        bus,
        exports=(
            UserExport("run_ids", "SELECT run_id FROM catalog.runs_d WHERE deleted_at IS NULL;"),
            UserExport("broken", "SELECT no_such_column FROM catalog.runs_d"),
            UserExport("callers_csv", "SELECT * FROM exports.caller_leaderboard", "csv"),
        ),
    ).validate()
    add_path_run(cfg, "p0", seed=1)
    with structlog.testing.capture_logs() as logs:
        status = sync(cfg)
    failed = [e for e in logs if e["event"] == "export.failed"]
    assert [e["export"] for e in failed] == ["broken"]
    assert "no_such_column" in failed[0]["error"]
    entries = status["exports"]
    assert entries["broken"]["ok"] is False and "no_such_column" in entries["broken"]["error"]
    assert entries["run_ids"] == {**entries["run_ids"], "ok": True, "rows": 1, "error": None}
    assert entries["callers_csv"]["ok"] is True
    # the broken export has no file: none published, none in the store, none named
    gen = published(cfg)
    assert not list((gen / "files").glob("broken.*"))
    assert not list((cfg.exports_dir / exports.FILES_DIR).glob("broken.*"))
    assert "file" not in entries["broken"]
    assert rows(con, f"SELECT * FROM '{gen / 'files' / 'run_ids.parquet'}'") == [("p0",)]

    add_path_run(cfg, "p1", seed=2)
    status = sync(cfg)
    assert status["exports"]["run_ids"]["rows"] == 2  # fresh despite the broken one
    assert status["exports"]["broken"]["ok"] is False
    gen = published(cfg)
    got = rows(con, f"SELECT * FROM '{gen / 'files' / 'run_ids.parquet'}' ORDER BY 1")
    assert got == [("p0",), ("p1",)]
    csv_rows = (gen / "files" / "callers_csv.csv").read_text().splitlines()
    assert csv_rows[0].startswith("caller_name,calls,")
    assert len(csv_rows) == 1 + len(CALLERS)
    with Catalog.open(cfg.catalog_path) as cat:  # registration went on
        assert cat.counts()["runs"] == 2


def test_a_user_export_removed_from_the_config_leaves_the_status(bus: Config) -> None:
    with_export = dataclasses.replace(
        bus, exports=(UserExport("run_ids", "SELECT run_id FROM catalog.runs_d"),)
    ).validate()
    add_path_run(bus, "p0", seed=1)
    assert "run_ids" in sync(with_export)["exports"]
    status = sync(bus)  # nothing changed but the config
    assert "run_ids" not in status["exports"]
    assert "runs" in status["exports"]


def _set_entry_ms(cfg: Config, name: str, ms: float) -> None:
    path = cfg.exports_dir / exports.STATUS_NAME
    status = json.loads(path.read_text())
    status["exports"][name]["ms"] = ms
    path.write_text(json.dumps(status))


def test_whole_files_are_rewritten_at_most_once_per_ten_times_their_cost(bus: Config) -> None:
    """write_files holds back a file whose last write was too recent for its cost, says when
    it is due, and writes it when forced (the daemon on stop, sync) or once it is due."""
    cfg = bus
    add_path_run(cfg, "p0", seed=1)
    sync(cfg)
    add_path_run(cfg, "p1", seed=2)
    with Bus.open(cfg, role="sync") as pipe:
        pipe.commit(pipe.full_scan().batch)
        assert pipe.refresh_exports()["more"] is False
        pipe.publish()
        _set_entry_ms(cfg, "runs", 60_000.0)  # "the last write took a minute": due in ~10 min
        for name in exports.summary_names():  # the others cost nothing: due at once, whatever
            if name != "runs":  # their real cost was on a loaded machine
                _set_entry_ms(cfg, name, 0.0)
        before = file_entries(cfg)
        next_due = pipe.write_files()
        after = file_entries(cfg)
        held = rewritten(before, after)
        assert "runs" not in held
        # due 600 s after its last write, which was moments ago (generous for a loaded machine)
        assert next_due is not None and 540 < next_due <= 600
        assert "caller_leaderboard" in held  # the others are cheap: written at once
        gen = published(cfg)
        for name in held:  # ... and published
            stored = cfg.exports_dir / exports.FILES_DIR / after[name]["file"]
            assert os.path.samefile(gen / "files" / f"{name}.parquet", stored), name
        # still the old file, whole
        assert pq.read_metadata(gen / "files" / "runs.parquet").num_rows == 1
        # the view is that file (summaries lag the catalog by at most their cadence) ...
        assert exports.run_query(cfg, "SELECT count(*) FROM exports.runs").rows == [(1,)]
        # ... while the catalog itself is fresh with every batch
        assert exports.run_query(cfg, "SELECT count(*) FROM catalog.runs_d").rows == [(2,)]

        before = file_entries(cfg)
        pipe.write_files(force=True)
        assert rewritten(before, file_entries(cfg)) == ["runs"]
        assert pq.read_metadata(published(cfg) / "files" / "runs.parquet").num_rows == 2
        assert exports.run_query(cfg, "SELECT count(*) FROM exports.runs").rows == [(2,)]
        before = file_entries(cfg)
        pipe.write_files(force=True)
        assert rewritten(before, file_entries(cfg)) == []  # nothing fed it since
