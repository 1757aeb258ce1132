"""The exports' contents equal a direct computation over the raw run files (every summary,
every consolidated table), the views in the working catalog list the committed segments, and the
summary views are the published generation's files."""

# ruff: noqa: S608 - test SQL over paths and run ids the test itself made

from __future__ import annotations

import json
import math
import os
import re
from typing import Any

import pytest
from builders import CALLERS, CALLS, FRONTIER, PATH, POLICY
from exports_checks import REL_TOL, check_all, check_frontier_best, published, rows

from quantbot_bus import exports
from quantbot_bus.catalog import Catalog
from quantbot_bus.config import Config


def test_exports_equal_direct_computation_over_raw_files(mixed_bus: Config, con: Any) -> None:
    cfg = mixed_bus
    check_all(cfg, con)
    check_frontier_best(con, cfg, "opt-new")

    gen = published(cfg)
    runs = gen / "files" / "runs.parquet"
    got = rows(con, f"SELECT run_id, param_seed, param_lr, param_variant, metric_n FROM '{runs}'")
    by_id = {r[0]: r for r in got}
    assert len(by_id) == 8
    assert by_id["path-2"][1:4] == (2, pytest.approx(0.2), None)
    assert by_id["policy-1"][1:4] == (11, None, "b")
    assert by_id["opt-new"][4] == 3.0
    n_artifacts = rows(con, f"SELECT count(*) FROM '{gen / 'files' / 'artifacts.parquet'}'")
    assert n_artifacts == [(4 + 2 * 2 + 2 * 2,)]
    latest = rows(
        con,
        f"SELECT run_type, name, run_id FROM '{gen / 'files' / 'latest_artifacts.parquet'}' "
        "WHERE name = 'frontier'",
    )
    assert latest == [("backtest-optimize", "frontier", "opt-new")]

    status = json.loads((cfg.exports_dir / "_export_status.json").read_text())
    for name in exports.summary_names():
        entry = status["exports"][name]
        assert entry["ok"] is True and entry["error"] is None, name
        assert entry["rows"] >= (0 if name == "schema_conflicts" else 1), name  # none: no conflict
        assert set(entry) >= {"last_run_at", "rows", "ms", "ok", "error"}
        # the file the status names is the one published (same inode: a hard link)
        stored = cfg.exports_dir / exports.FILES_DIR / entry["file"]
        assert os.path.samefile(stored, gen / "files" / f"{name}.parquet"), name


def test_views_are_created_in_the_working_catalog(mixed_bus: Config) -> None:
    with Catalog.open(mixed_bus.catalog_path) as cat:
        cur = cat.cursor()
        views = dict(
            cur.execute(
                "SELECT view_name, sql FROM duckdb_views() WHERE schema_name = 'exports' "
                "AND database_name = current_database()"
            ).fetchall()
        )
        assert set(exports.summary_names()) | {PATH, POLICY, CALLS, FRONTIER, "summary"} == set(
            views
        )
        # A table's view lists its committed segment files (every one on disk, nothing else);
        # the summaries' views read the state tables that travel with the snapshot.
        # (through their pinned hard links in .v/: same files, kept a while after retirement)
        table_dir = mixed_bus.exports_dir.resolve() / exports.TABLES_DIR / PATH
        on_disk = sorted(table_dir.glob("*.parquet"))
        listed = re.findall(r"'([^']+\.parquet)'", views[PATH])
        assert on_disk and listed == [str(table_dir / ".v" / p.name) for p in on_disk]
        assert all(os.path.samefile(p, table_dir / ".v" / p.name) for p in on_disk)
        assert "exports_state.runs_flat" in views["runs"]
        assert "read_parquet" not in views["runs"] + views["caller_leaderboard"]
        n = cur.execute(f"SELECT count(*) FROM exports.{PATH}").fetchone()
        assert n == (4 * 60,)
        lb = cur.execute("SELECT count(*) FROM exports.caller_leaderboard").fetchone()
        assert lb == (len(CALLERS),)


def test_summary_views_are_the_generations_files(mixed_bus: Config) -> None:
    """exports.<summary> is its file in the reader's generation (same rows), and that file
    stays readable there when the store retires it (a hard link: same inode)."""
    cfg = mixed_bus
    gen = published(cfg)
    q = exports.open_query_connection(cfg)
    try:
        for name in exports.summary_names():
            from_view = q.execute(f"SELECT * FROM exports.{name}").fetchall()
            from_file = q.execute(
                f"SELECT * FROM read_parquet('{gen / 'files' / (name + '.parquet')}')"
            ).fetchall()
            assert from_view == from_file, name
    finally:
        q.close()
    for stored in (cfg.exports_dir / exports.FILES_DIR).iterdir():  # the store lets them go
        stored.unlink()
    n = exports.run_query(cfg, "SELECT count(*) FROM exports.runs").rows
    assert n == [(8,)]


def test_bin_value_resolution() -> None:
    for v in (1e-6, 0.37, 1.0, 1.005, 2.0, 3.999, 123.456, 9e12, -0.5, -2500.0, -9000.0):
        b = exports.bin_value(v)
        assert abs(b - v) <= REL_TOL * abs(v) and math.copysign(1, b) == math.copysign(1, v)
    assert exports.bin_value(0.0) == 0.0
    assert os.path.basename(exports.STATUS_NAME) == "_export_status.json"
