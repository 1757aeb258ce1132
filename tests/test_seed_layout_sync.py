"""Seed runs beside v1 runs in one root through ``sync`` and ``rebuild``: registered,
pending, failed and rejected runs in the published catalog and exports, unchanged runs skipped,
late files and a late ``_SUCCESS`` seen. Real Parquet, real DuckDB."""

from __future__ import annotations

import json

import pyarrow as pa
from builders import live_run_ids, make_run, open_rejections, snapshot_query, write_parquet
from seed_runs import FAILED_STDERR, artifact_names, make_seed_run, run_row

from quantbot_bus import pipeline
from quantbot_bus.config import Config
from quantbot_bus.contract.layout import run_id_of
from quantbot_bus.fsutil import write_atomic


def test_a_mixed_tree_through_sync_and_rebuild(bus: Config) -> None:
    for i in range(2):
        make_run(bus.root, "backtest", f"v1-{i}")
    ok = [make_seed_run(bus.root) for _ in range(2)]
    other_month = make_seed_run(bus.root, month="2026-02")
    failed = make_seed_run(bus.root, status="failed", success=False, stderr=FAILED_STDERR)
    running = make_seed_run(bus.root, status="running", success=False)
    hostile = make_seed_run(bus.root, mutate=lambda doc, d: doc.update(git_dirty="yes"))
    seed_ids = {run_id_of(str(d)) for d in [*ok, other_month, failed]}

    result = pipeline.sync(bus)
    assert set(result.registered) == {"v1-0", "v1-1", *seed_ids}
    assert str(running) in result.pending
    assert live_run_ids(bus) == {"v1-0", "v1-1", *seed_ids}
    assert "field 'git_dirty' must be true/false or null" in open_rejections(bus)[str(hostile)]

    row = run_row(bus, run_id_of(str(ok[0])))
    assert (row["status"], row["shape"], row["run_type"], row["git_branch"]) == (
        "success",
        "seed-run-json",
        "policy",
        "feat/seed",
    )
    assert json.loads(row["params"])["dataset_interval"] == "5m"
    assert json.loads(row["metrics"])["timing_total_ms"] == 812.5
    assert artifact_names(bus, run_id_of(str(ok[0]))) == {"truth/paths": 4, "policy/trades": 3}
    bad = run_row(bus, run_id_of(str(failed)))
    assert bad["status"] == "failed" and bad["error"].endswith("and 2026-02-04")
    # the artifact tables: 'truth/paths' is exported as truth__paths, beside the v1 tables
    rows = snapshot_query(bus, "SELECT count(*), count(DISTINCT run_id) FROM exports.truth__paths")
    assert rows == [(4 * 4, 4)]  # four seed runs with paths (the failed one has them too)
    assert snapshot_query(bus, "SELECT count(*) FROM exports.results")[0][0] == 6

    before = snapshot_query(
        bus, "SELECT run_id, status, fingerprint, error FROM catalog.runs_d ORDER BY run_id"
    )
    pipeline.rebuild(bus)
    after = snapshot_query(
        bus, "SELECT run_id, status, fingerprint, error FROM catalog.runs_d ORDER BY run_id"
    )
    assert after == before and len(after) == 2 + 4
    assert str(hostile) in open_rejections(bus)


def test_sync_skips_unchanged_seed_runs_and_sees_late_files(bus: Config) -> None:
    make_run(bus.root, "backtest", "v1-0")
    done = make_seed_run(bus.root)
    failed = make_seed_run(bus.root, status="failed", success=False, tables={}, stderr="boom\n")
    running = make_seed_run(bus.root, status="running", success=False)
    first = pipeline.sync(bus)
    assert len(first.registered) == 3 and list(first.pending) == [str(running)]

    again = pipeline.sync(bus)  # nothing changed: every run unchanged, by fingerprint
    assert not again.registered and not again.updated
    assert set(again.unchanged) == {"v1-0", run_id_of(str(done)), run_id_of(str(failed))}

    # a late file in a registered seed run is an update; _SUCCESS arriving registers the runner
    write_parquet(done / "results" / "frontier.parquet", pa.table({"rank": [1]}))
    write_atomic(running / "_SUCCESS", "2026-03-02T10:00:00Z")
    third = pipeline.sync(bus)
    assert third.updated == [run_id_of(str(done))]
    assert third.registered == [run_id_of(str(running))]
    assert artifact_names(bus, run_id_of(str(done))) == {
        "truth/paths": 4,
        "policy/trades": 3,
        "results/frontier": 1,
    }
    assert run_row(bus, run_id_of(str(failed)))["error"] == "boom"
