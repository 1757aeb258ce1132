"""The real daemon (watchdog observer, DuckDB) on a root holding both layouts: it
registers v1 and seed runs, keeps a seed run pending until its ``_SUCCESS`` appears, catalogs
a failed run with its stderr tail and rejects a hostile one."""

from __future__ import annotations

import dataclasses

import pytest
from builders import live_run_ids, make_run, open_rejections, wait_for
from daemon_in_process import events, running_daemon
from seed_runs import (
    FAILED_STDERR,
    artifact_names,
    error_of,
    make_seed_run,
    paths_table,
    run_row,
)
from structlog.testing import capture_logs

from quantbot_bus.config import Config
from quantbot_bus.contract.layout import run_id_of
from quantbot_bus.fsutil import write_atomic
from quantbot_bus.writer import RunWriter


@pytest.fixture
def fast(bus: Config) -> Config:
    """Short export timer; pending runs are never rechecked on a timer and no rescan comes
    during the test, so a run registered after its ``_SUCCESS`` appeared was found by the
    observer's event on that file."""
    return dataclasses.replace(
        bus, pending_recheck_s=3600.0, rescan_interval_s=3600.0, export_interval_s=0.2
    )


def test_the_daemon_registers_both_layouts_and_waits_for_success(fast: Config) -> None:
    make_run(fast.root, "backtest", "v1-before")
    before_seed = make_seed_run(fast.root)
    with capture_logs() as logs, running_daemon(fast) as daemon:
        # the startup reconcile: both layouts
        assert {"v1-before", run_id_of(str(before_seed))} <= live_run_ids(fast)
        # a seed run written in the seed's order: everything but _SUCCESS
        late = make_seed_run(fast.root, success=False)
        late_id = run_id_of(str(late))
        wait_for(lambda: str(late) in daemon.pending, "the run without _SUCCESS pending")
        pend = [e for e in events(logs, "run.pending") if e["run_dir"] == str(late)]
        assert "no _SUCCESS yet" in pend[0]["reason"]
        make_run(fast.root, "backtest", "v1-during")  # a v1 run meanwhile is registered
        wait_for(lambda: "v1-during" in live_run_ids(fast), "the v1 run registered")
        assert late_id not in live_run_ids(fast)
        write_atomic(late / "_SUCCESS", "2026-03-02T09:31:01.000Z\n")  # the inotify event
        wait_for(lambda: late_id in live_run_ids(fast), "registered once _SUCCESS appeared")
        assert str(late) not in daemon.pending
        # a failed run: cataloged failed with its stderr tail
        failed = make_seed_run(fast.root, status="failed", success=False, stderr=FAILED_STDERR)
        failed_id = run_id_of(str(failed))
        # (written in the seed's order, run.json before the logs: it may be cataloged first
        # without its stderr, then updated by the event on logs/stderr.txt)
        wait_for(
            lambda: str(error_of(fast, failed_id)).endswith("between 2026-02-03 and 2026-02-04"),
            "the failed run cataloged with its stderr tail",
        )
        assert run_row(fast, failed_id)["status"] == "failed"
        # a hostile one: rejected with its reason, the daemon carries on
        hostile = make_seed_run(fast.root, mutate=lambda doc, d: doc.update(status="done"))
        reason = wait_for(lambda: open_rejections(fast).get(str(hostile)), "the rejection")
        assert "field 'status' must be one of" in reason
        # the seed writer through the daemon
        with RunWriter(fast.root, "path-only", layout="seed", git=None) as w:
            w.write_table("truth/paths", paths_table(w.run_id))
        wait_for(lambda: w.run_id in live_run_ids(fast), "the RunWriter seed run")
        assert artifact_names(fast, w.run_id) == {"truth/paths": 4}
    registered = {e.get("run_id") for e in events(logs, "run.registered")}
    assert {"v1-during", late_id, failed_id, w.run_id} <= registered
