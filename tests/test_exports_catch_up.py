"""The bounded catch-up: ``exports.refresh(max_runs=N)`` takes at most N runs per call,
leaves consistent exports after each and finishes the job, also under a small DuckDB memory
limit."""

# ruff: noqa: S608 - test SQL over paths and run ids the test itself made

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest
from builders import CALLS, PATH, add_optimize_run, add_path_run, add_policy_run
from exports_checks import (
    check_all,
    check_catalog_summaries,
    check_consolidated,
    check_frontier_best,
    check_leaderboard,
    publish_exports,
    refresh_until_done,
    register_only,
    rows,
    store_table,
)

from quantbot_bus import exports
from quantbot_bus.catalog import Catalog
from quantbot_bus.config import Config
from quantbot_bus.pipeline import Bus


def test_bounded_catch_up_takes_max_runs_per_call_and_finishes_the_job(
    bus: Config, con: Any
) -> None:
    for i in range(3):
        add_path_run(bus, f"path-{i}", n=30, seed=i, created_at=f"2024-05-0{i + 1}T00:00:00Z")
    add_policy_run(bus, "policy-0", seed=10)
    add_optimize_run(bus, "opt-0", seed=20, created_at="2024-05-03T10:00:00Z")
    register_only(bus)

    order = ["opt-0", "path-0", "path-1", "path-2", "policy-0"]  # taken in by run_id
    statuses = []
    with Bus.open(bus, role="sync") as pipe:
        assert pipe.catalog is not None
        cur = pipe.catalog.cursor()
        for call in range(3):
            statuses.append(exports.refresh(bus, cur, max_runs=2))
            # Every call leaves consistent exports behind, holding the runs taken in so far.
            got = cur.execute("SELECT run_id FROM exports.runs ORDER BY 1").fetchall()
            assert got == [(r,) for r in order[: 2 * (call + 1)]]
            # policy-0, the only run with CALLS rows, comes in with the last call
            assert store_table(bus, CALLS).is_dir() == (call == 2)
        cur.close()
        publish_exports(pipe)
    assert [s["changed_runs"]["added"] for s in statuses] == [2, 2, 1]
    assert [s["more"] for s in statuses] == [True, True, False]
    check_all(bus, con)
    check_frontier_best(con, bus, "opt-0")
    check_catalog_summaries(bus)
    assert json.loads((bus.exports_dir / exports.STATUS_NAME).read_text())["more"] is False

    # Deletions all at once, updates and additions max_runs at a time; contents equal after.
    shutil.rmtree(bus.root / "backtest-path" / "path-0")
    shutil.rmtree(bus.root / "backtest-optimize" / "opt-0")
    shutil.rmtree(bus.root / "backtest-path" / "path-2")
    add_path_run(bus, "path-2", n=11, seed=77, created_at="2024-04-01T00:00:00Z")  # updated
    add_path_run(bus, "path-9", n=17, seed=9, extra=True)
    add_policy_run(bus, "policy-1", seed=11, params={"seed": 11, "variant": "b"})
    add_optimize_run(bus, "opt-1", seed=21, created_at="2024-05-04T10:00:00Z")
    register_only(bus)
    with Bus.open(bus, role="sync") as pipe:
        assert pipe.catalog is not None
        cur = pipe.catalog.cursor()
        status = exports.refresh(bus, cur, max_runs=1)
        assert status["more"] is True
        # both deletions, plus the one run taken in ("opt-1" comes first by run_id)
        assert status["changed_runs"] == {"added": 1, "removed": 2}
        got = cur.execute("SELECT run_id FROM exports.runs ORDER BY 1").fetchall()
        assert got == [("opt-1",), ("path-1",), ("path-2",), ("policy-0",)]
        # path-2 is still its old version until its turn comes (in the segments just written)
        n_old = rows(
            con,
            f"SELECT count(*) FROM read_parquet('{store_table(bus, PATH)}/*.parquet',"
            " union_by_name = true) WHERE run_id = 'path-2'",
        )
        assert n_old == [(30,)]
        cur.close()
    statuses = refresh_until_done(bus, max_runs=1)
    assert [s["changed_runs"]["added"] for s in statuses] == [1, 1, 1]
    assert statuses[0]["changed_runs"]["removed"] == 1  # path-2's old version, with its new one
    check_all(bus, con)
    check_frontier_best(con, bus, "opt-1")
    check_catalog_summaries(bus)


def test_refresh_rejects_a_max_runs_below_one(bus: Config) -> None:
    with Catalog.open(bus.catalog_path) as cat, pytest.raises(ValueError, match="max_runs"):
        exports.refresh(bus, cat.cursor(), max_runs=0)


def test_catch_up_works_under_a_small_duckdb_memory_limit(bus: Config, con: Any) -> None:
    for i in range(6):
        add_path_run(bus, f"path-{i}", n=2_000, seed=i)
    register_only(bus)
    with Bus.open(bus, role="sync") as pipe:
        assert pipe.catalog is not None
        pipe.catalog.con.execute("SET memory_limit = '64MB'")
        cur = pipe.catalog.cursor()
        while exports.refresh(bus, cur, max_runs=2)["more"]:
            pass
        cur.close()
        publish_exports(pipe)
    check_consolidated(con, bus, PATH)
    check_leaderboard(con, bus)
