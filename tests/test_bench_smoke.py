"""Smoke test of the benchmark's data generator and baseline on ~20 runs (no timing asserts).

The benchmark itself (``make bench``) measures; this only checks that what it measures is real:
the generated run directories are valid under the run contract, the pre-seeded catalog is what the
daemon's reconcile would consider unchanged and publishes to readers like any other, the bench's
visibility probes see what a reader sees, and the baseline registers runs and rewrites exports.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from bench import baseline, datagen
from bench.common import bus_config, current_generation, visible_runs
from quantbot_bus import contract, ingest
from quantbot_bus.catalog import Catalog, open_reader
from quantbot_bus.config import Config
from quantbot_bus.pipeline import Bus

N = 20


@pytest.fixture
def tpl(tmp_path: Path) -> datagen.Template:
    return datagen.make_template(tmp_path / "template", variants=4, rows=50)


def test_generated_runs_are_valid_and_hard_linked(tmp_path: Path, tpl: datagen.Template) -> None:
    root = tmp_path / "artifacts"
    dirs = datagen.make_runs(root, tpl, N)
    assert [d.name for d in dirs] == [datagen.run_id_for(i) for i in range(N)]
    assert list(datagen.iter_run_dirs(root)) == dirs
    shapes = set()
    for i, run_dir in enumerate(dirs):
        result = contract.validate_run_dir(run_dir, root, verify_hashes=True)
        assert isinstance(result, contract.Valid), result
        run = result.run
        assert run.run_id == run_dir.name
        assert run.run_type == "backtest"
        shapes.add(run.params["strategy"])
        meta = json.loads((run_dir / "metadata.json").read_text())
        names = [a["name"] for a in meta["artifacts"]]
        assert names == list(datagen.TABLES_BY_SHAPE[tpl.variant_for(i).shape])
        for art in meta["artifacts"]:
            path = run_dir / art["file"]
            data = path.read_bytes()
            assert art["bytes"] == len(data)
            assert art["sha256"] == hashlib.sha256(data).hexdigest()
            assert art["rows"] == pq.read_metadata(path).num_rows == 50
            assert os.stat(path).st_nlink > 1  # a hard link, not a copy
        assert not (run_dir / "metadata.json.tmp").exists()
    assert shapes == {"path-only", "policy"}
    # the real column names of the seed system's tables
    cols = pq.read_schema(dirs[1] / "backtest_policy_results.parquet").names
    assert {"policy_id", "realized_return_bps", "stop_out", "exit_reason"} <= set(cols)


def test_link_limit_falls_back_to_a_copy(
    tmp_path: Path, tpl: datagen.Template, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(datagen, "LINKS_PER_FILE", 3)
    root = tmp_path / "artifacts"
    dirs = datagen.make_runs(root, tpl, 20)  # 4 variants x 5 runs: each file passes the limit
    inodes = {os.stat(d / "backtest_call_results.parquet").st_ino for d in dirs}
    assert len(inodes) > len(tpl.variants)  # copies were made ...
    for d in dirs:  # ... and every run still matches its metadata (same bytes, same sha256)
        assert isinstance(contract.validate_run_dir(d, root), contract.Valid)


def test_preseeded_catalog_is_unchanged_for_the_reconcile(
    tmp_path: Path, tpl: datagen.Template
) -> None:
    cfg = Config(
        root=tmp_path / "artifacts", exports_dir=tmp_path / "exports", state_dir=tmp_path / "state"
    ).validate()
    datagen.make_runs(cfg.root, tpl, N)
    with Catalog.open(cfg.catalog_path) as cat:
        datagen.preseed_catalog(cat, cfg.root, tpl, 0, N, chunk=7)
        assert cat.counts()["runs"] == N
        assert cat.counts()["artifacts"] == sum(len(tpl.variant_for(i).files) for i in range(N))
        known = cat.known_runs()
        for run_dir in datagen.iter_run_dirs(cfg.root):
            assert known[str(run_dir)].fingerprint == contract.quick_fingerprint(run_dir)
        outcome = ingest.full_scan(cfg, cat)
        assert len(outcome.batch) == 0  # nothing to register, update or delete
        assert not outcome.pending
        # a pre-seeded row equals what the daemon would have registered from the real run
        row = cat.con.execute(
            "SELECT run_id, params, metadata, total_rows, artifact_count FROM catalog.runs_d "
            "WHERE run_id = ?",
            [datagen.run_id_for(5)],
        ).fetchone()
    real = contract.validate_run_dir(cfg.root / "backtest" / datagen.run_id_for(5), cfg.root)
    assert isinstance(real, contract.Valid)
    assert row is not None
    assert row[0] == real.run.run_id
    assert json.loads(row[1]) == real.run.params
    assert row[2] == real.run.metadata_json
    assert (row[3], row[4]) == (real.run.total_rows, len(real.run.artifacts))


def test_preseeded_catalog_publishes_through_the_bus(tmp_path: Path, tpl: datagen.Template) -> None:
    """The large bus of the bench: pre-seeded, published once by the Bus (the base generation),
    then runs dropped meanwhile are registered by a reconcile and published in O(batch)."""
    cfg = bus_config(tmp_path / "bus")
    datagen.make_runs(cfg.root, tpl, N)
    assert visible_runs(cfg) is None  # nothing published yet
    with Bus.open(cfg, role="sync") as bus:
        assert bus.catalog is not None
        datagen.preseed_catalog(bus.catalog, cfg.root, tpl, 0, N - 5)
        base = bus.publish(force=True)
        assert base is not None and base.rows > 0
        assert visible_runs(cfg) == N - 5
        result = bus.reconcile()  # the 5 dropped runs: registered and published
        assert len(result.registered) == 5
        assert not bus.degraded
    assert visible_runs(cfg) == N
    assert visible_runs(cfg, prefix="bench-000001") == 10
    gen = current_generation(cfg)
    assert gen is not None and (gen / "files" / "runs.parquet").is_file()
    assert pq.read_metadata(gen / "files" / "runs.parquet").num_rows == N
    con = open_reader(cfg.snapshot_path)
    try:
        (n_art,) = con.execute("SELECT count(*) FROM catalog.artifacts_f").fetchone() or (0,)
        (n_rows,) = con.execute(
            "SELECT count(*) FROM exports.backtest_call_path_metrics"
        ).fetchone() or (0,)
    finally:
        con.close()
    assert n_art == sum(len(tpl.variant_for(i).files) for i in range(N))
    assert n_rows == N * 50  # every run's path metrics in the consolidated table


def test_baseline_registers_runs_and_rewrites_every_export(
    tmp_path: Path, tpl: datagen.Template
) -> None:
    root = tmp_path / "artifacts"
    datagen.make_runs(root, tpl, N)
    db = tmp_path / "seed" / "alerts.duckdb"
    exports = tmp_path / "seed-exports"
    daemon = baseline.BaselineDaemon(root, db, exports, poll_interval_s=0.01)
    daemon.run(max_runs=N, max_seconds=60)
    assert [p.run_id for p in daemon.processed] == [datagen.run_id_for(i) for i in range(N)]
    assert all(p.finished >= p.started for p in daemon.processed)
    for name, _sql in baseline.EXPORT_JOBS:
        assert (exports / f"{name}.parquet").is_file(), name
    assert pq.read_metadata(exports / "runs.parquet").num_rows == N
    status = json.loads((exports / "_export_status.json").read_text())
    assert all(r["ok"] for r in status["results"])
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM catalog.runs_d").fetchone() == (N,)
        n_art = con.execute("SELECT count(*) FROM catalog.artifacts_f").fetchone()
    finally:
        con.close()
    assert n_art == (sum(len(tpl.variant_for(i).files) for i in range(N)),)

    # a restarted baseline skips what it registered; a new run is picked up
    again = baseline.BaselineDaemon(root, db, exports, poll_interval_s=0.01)
    datagen.make_run(root, tpl, N)
    again.run(max_runs=1, max_seconds=60)  # returns once it processed one run
    assert [p.run_id for p in again.processed] == [datagen.run_id_for(N)]


def test_baseline_preseed_matches_what_it_registers(tmp_path: Path, tpl: datagen.Template) -> None:
    runs = [
        (
            datagen.run_id_for(i),
            tmp_path / "r" / datagen.run_id_for(i),
            datagen.metadata_for(datagen.run_id_for(i), i, tpl.variant_for(i)),
        )
        for i in range(N)
    ]
    db = tmp_path / "seeded" / "alerts.duckdb"
    baseline.preseed(db, runs)
    daemon = baseline.BaselineDaemon(tmp_path / "empty-root", db, tmp_path / "exp")
    daemon.load_seen()
    assert len(daemon._seen) == N
    con = duckdb.connect(str(db))
    try:
        results = daemon.run_exports(con)
    finally:
        con.close()
    assert all(r["ok"] for r in results), results
    assert pq.read_metadata(tmp_path / "exp" / "runs.parquet").num_rows == N
