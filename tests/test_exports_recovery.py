"""The exports recover from what a crash or an operator leaves: leftover and orphaned
files removed, lost segments rebuilt (and the leaderboard's histograms with them), export state
of an older version rebuilt; the contents equal the raw files after each."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import duckdb
import structlog
from builders import PATH, POLICY, sync
from exports_checks import (
    check_all,
    check_catalog_summaries,
    check_frontier_best,
    check_leaderboard,
    first_column,
    refresh_until_done,
    store_table,
)

from quantbot_bus import exports
from quantbot_bus.catalog import Catalog
from quantbot_bus.config import Config


def test_crash_leftovers_are_cleaned_and_lost_segments_rebuilt(mixed_bus: Config, con: Any) -> None:
    cfg = mixed_bus
    table_dir = store_table(cfg, PATH)
    orphan = table_dir / "seg-9999999999-deadbeef.parquet"
    shutil.copy(next(iter(table_dir.glob("*.parquet"))), orphan)  # written, never committed
    leftover = cfg.exports_dir / f".runs.parquet{exports.TMP_MARK}0badf00d.tmp"
    leftover.write_bytes(b"half a file")
    files_dir = cfg.exports_dir / exports.FILES_DIR
    # and one where export files are written now (the store)
    file_leftover = files_dir / f".runs.0123456789ab.parquet{exports.TMP_MARK}0badf00d.tmp"
    file_leftover.write_bytes(b"half a file")
    lost = next(iter(store_table(cfg, POLICY).glob("*.parquet")))
    lost.unlink()
    with structlog.testing.capture_logs() as logs:
        sync(cfg)
    assert not orphan.exists() and not leftover.exists() and not file_leftover.exists()
    assert {"export.orphan_removed", "export.segment_missing"} <= {e["event"] for e in logs}
    check_all(cfg, con)


def test_lost_path_segment_rebuilds_the_leaderboard_histograms(mixed_bus: Config, con: Any) -> None:
    """Per-run histograms are not stored: a leaving run's are read back from its segment. When
    that segment file is gone, the totals are rebuilt from the segments, and stay exact."""
    cfg = mixed_bus
    check_leaderboard(con, cfg)
    lost = next(iter(store_table(cfg, PATH).glob("*.parquet")))
    lost.unlink()
    shutil.rmtree(cfg.root / "backtest-path" / "path-2")  # and a run leaves in the same refresh
    with structlog.testing.capture_logs() as logs:
        sync(cfg)
    assert "export.histograms_rebuilt" in {e["event"] for e in logs}
    check_all(cfg, con)
    # the ordinary path (rows read back from the segment) after that
    shutil.rmtree(cfg.root / "backtest-path" / "path-1")
    with structlog.testing.capture_logs() as logs:
        sync(cfg)
    assert "export.histograms_rebuilt" not in {e["event"] for e in logs}
    check_all(cfg, con)
    with Catalog.open(cfg.catalog_path) as cat:
        sql = "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'exports_state'"
        tables = first_column(cat, sql)
    assert "caller_hist_p" not in tables


def test_state_of_an_older_version_is_rebuilt(mixed_bus: Config, con: Any) -> None:
    with Catalog.open(mixed_bus.catalog_path) as cat:
        cat.cursor().execute("DELETE FROM exports_state.meta WHERE key = 'state_version'")
    with structlog.testing.capture_logs() as logs:
        statuses = refresh_until_done(mixed_bus, max_runs=3)
    assert any(e["event"] == "export.state_reset" for e in logs)
    assert sum(s["changed_runs"]["added"] for s in statuses) == 8
    check_all(mixed_bus, con)
    check_frontier_best(con, mixed_bus, "opt-new")
    check_catalog_summaries(mixed_bus)
    n_files = len(list(store_table(mixed_bus, PATH).glob("*.parquet")))
    with Catalog.open(mixed_bus.catalog_path) as cat:
        n_segs = (
            cat.cursor()
            .execute(
                "SELECT count(*) FROM exports_state.segments WHERE table_name = $t", {"t": PATH}
            )
            .fetchone()
        )
    assert n_segs == (n_files,)


def test_a_state_missing_a_table_by_name_gets_it_even_when_the_count_matches(
    tmp_path: Path,
) -> None:
    """A state whose tables number as many as the DDL's but one is another (a plug-in's table
    renamed, say) gets the missing table at the next refresh, and keeps its rows."""
    import quantbot_bus.backtest.summaries  # noqa: F401 - registers the plug-in's tables
    from quantbot_bus.exports.state import ensure_state, state_table_exists

    con = duckdb.connect(str(tmp_path / "work.duckdb"))
    try:
        ensure_state(con)
        con.execute("INSERT INTO exports_state.runs (run_id) VALUES ('kept')")
        con.execute("DROP TABLE exports_state.policy_caller_p")
        con.execute("CREATE TABLE exports_state.policy_results_p (run_id VARCHAR)")
        ensure_state(con)
        assert state_table_exists(con, "policy_caller_p")
        assert con.execute("SELECT run_id FROM exports_state.runs").fetchall() == [("kept",)]
    finally:
        con.close()
