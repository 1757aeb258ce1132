"""The daemon in-process registering runs: the startup reconcile, restarts, bursts, subtrees
renamed in, runs deleted and back. A real Daemon with a stop_event, the real watchdog observer,
real DuckDB.

Every test waits with generous deadlines (polling the reader-side snapshot or the status file),
never on tight timing. Runs are built with tests/builders/.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from builders import RunFactory, live_run_ids, make_run, snapshot_query, wait_for
from daemon_in_process import events, running_daemon
from structlog.testing import capture_logs

from quantbot_bus.config import Config
from quantbot_bus.daemon.status import read_status


def test_startup_reconciles_before_ready_then_watches(fast: Config) -> None:
    before = [make_run(fast.root, "backtest", f"old-{i}") for i in range(3)]
    with capture_logs() as logs:
        with running_daemon(fast) as daemon:
            # Registered by the reconcile, before READY: visible at once, no waiting.
            assert live_run_ids(fast) == {p.name for p in before}
            assert daemon.rescans == 1, logs
            make_run(fast.root, "backtest", "live-1")
            wait_for(lambda: "live-1" in live_run_ids(fast), "live run in the snapshot")
    names = [e["event"] for e in logs]
    assert names.index("rescan.done") < names.index("daemon.ready"), logs
    assert events(logs, "rescan.done")[0]["reason"] == "startup"
    registered = {e["run_id"]: e for e in events(logs, "run.registered")}
    assert set(registered) == {"old-0", "old-1", "old-2", "live-1"}
    assert registered["live-1"]["latency_ms"] >= 0
    assert names[-1] == "daemon.stopped", logs


def test_an_empty_root_still_gets_a_snapshot_for_readers(fast: Config) -> None:
    with running_daemon(fast):
        assert fast.snapshot_path.exists()
        assert snapshot_query(fast, "SELECT count(*) FROM catalog.runs_d") == [(0,)]
        assert read_status(fast.status_path)["snapshot_published_at"] is not None


def test_restart_is_idempotent(fast: Config) -> None:
    for i in range(5):
        make_run(fast.root, "backtest", f"r-{i}")
    with running_daemon(fast):
        pass
    with capture_logs() as logs:
        with running_daemon(fast):
            make_run(fast.root, "backtest", "r-new")
            wait_for(lambda: "r-new" in live_run_ids(fast), "new run after restart")
    assert [e["run_id"] for e in events(logs, "run.registered")] == ["r-new"]
    rows = snapshot_query(fast, "SELECT count(*), count(DISTINCT run_id) FROM catalog.runs_d")
    assert rows == [(6, 6)]


def test_a_burst_is_committed_in_few_batches(fast: Config, run_factory: RunFactory) -> None:
    staging = fast.root / "backtest" / ".staging"
    ids = [f"burst-{i:04d}" for i in range(300)]
    for run_id in ids:
        run_factory.make(staging, run_id)
    with running_daemon(fast) as daemon:
        start = daemon.batches
        for run_id in ids:  # each run appears by one rename, like a producer staging its dir
            os.rename(staging / run_id, fast.root / "backtest" / run_id)
        wait_for(lambda: len(live_run_ids(fast)) == 300, "300 runs registered")
        batches = daemon.batches - start
    # Group commit: runs arriving during a commit join the next batch instead of one each.
    assert 1 <= batches < 150


def test_deleted_run_is_soft_deleted_and_comes_back(fast: Config, tmp_path: Path) -> None:
    run_dir = make_run(fast.root, "backtest", "gone-1")
    keep = tmp_path / "keep"
    with running_daemon(fast):
        assert "gone-1" in live_run_ids(fast)
        shutil.move(run_dir, keep)
        wait_for(lambda: "gone-1" not in live_run_ids(fast), "soft delete")
        rows = snapshot_query(
            fast, "SELECT deleted_at IS NOT NULL FROM catalog.runs_d WHERE run_id = 'gone-1'"
        )
        assert rows == [(True,)]
        shutil.move(keep, run_dir)
        wait_for(lambda: "gone-1" in live_run_ids(fast), "run back after it reappeared")


def test_a_renamed_in_subtree_of_runs_is_found(fast: Config, run_factory: RunFactory) -> None:
    staged = fast.root / ".incoming"
    for i in range(20):
        run_factory.make(staged / "sweep", f"sweep-{i}")
    with running_daemon(fast):
        os.rename(staged / "sweep", fast.root / "sweep")
        wait_for(lambda: len(live_run_ids(fast)) == 20, "the 20 runs of the moved subtree")
