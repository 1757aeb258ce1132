"""The daemon in-process publishing: export refreshes coalesced and followed by the export
views, a failing export that does not stop registration, a failing publication retried.

Every test waits with generous deadlines (polling the reader-side snapshot or the status file),
never on tight timing. Runs are built with tests/builders/.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from typing import Any

import pytest
from builders import PATH, live_run_ids, make_run, wait_for
from daemon_in_process import events, running_daemon
from structlog.testing import capture_logs

from quantbot_bus import exports
from quantbot_bus.config import Config
from quantbot_bus.daemon.status import read_status


def test_export_failure_is_logged_and_registration_goes_on(
    fast: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_refresh(config: Config, con: Any, **kwargs: Any) -> dict[str, Any]:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(exports, "refresh", broken_refresh)  # fault injection
    with capture_logs() as logs:
        with running_daemon(fast):
            make_run(fast.root, "backtest", "despite-exports")
            wait_for(lambda: "despite-exports" in live_run_ids(fast), "registration")
            wait_for(lambda: events(logs, "export.failed"), "export.failed")
    assert "disk on fire" in events(logs, "export.failed")[0]["error"]


def test_export_refreshes_are_coalesced(fast: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = dataclasses.replace(fast, export_interval_s=120.0)
    calls: list[float] = []
    real_refresh = exports.refresh

    def counting_refresh(config: Config, con: Any, **kwargs: Any) -> dict[str, Any]:
        status = real_refresh(config, con, **kwargs)
        if not status.get("more"):  # a bounded call asking for more is part of one refresh
            calls.append(time.monotonic())
        return status

    monkeypatch.setattr(exports, "refresh", counting_refresh)
    with running_daemon(cfg) as daemon:
        wait_for(lambda: calls, "the startup refresh")
        first = daemon.batches
        for i in range(4):  # four separate batches
            make_run(cfg.root, "backtest", f"c-{i}")

            def live(i: int = i) -> bool:
                return f"c-{i}" in live_run_ids(cfg)

            wait_for(live, f"c-{i}")
        # the counter moves once the batch's publication is done, a little after readers see it
        wait_for(lambda: daemon.batches - first >= 4, "four batches counted")
        assert len(calls) == 1  # all within one interval: no refresh yet
    assert len(calls) == 2  # the stop flushes the one coalesced refresh


def test_the_export_views_follow_a_single_batch(fast: Config) -> None:
    """One batch, no later activity: the coalesced refresh still runs and readers see the rows."""

    def view_rows() -> list[tuple]:
        con = exports.open_query_connection(fast)  # the reader path of `quantbot-bus query`
        try:
            if "exports.backtest_call_path_metrics" not in exports.available_relations(con):
                return []
            return con.execute(
                "SELECT run_id, count(*) FROM exports.backtest_call_path_metrics GROUP BY run_id"
            ).fetchall()
        finally:
            con.close()

    with running_daemon(fast):
        make_run(fast.root, "backtest", "v-1", {PATH: 4})
        assert wait_for(view_rows, "the run's rows in the export view") == [("v-1", 4)]


def test_a_failing_publish_is_retried_and_nothing_is_lost(fast: Config) -> None:
    with capture_logs() as logs:
        with running_daemon(fast):
            fast.snapshot_path.unlink()
            (fast.snapshot_path / "blocker").mkdir(parents=True)  # os.replace onto it fails
            make_run(fast.root, "backtest", "during-failure")
            wait_for(lambda: events(logs, "batch.failed"), "batch.failed")
            status = wait_for(
                lambda: (s := read_status(fast.status_path))["state"] == "degraded" and s,
                "status says degraded",
            )
            assert "could not publish the catalog" in status["degraded"]
            shutil.rmtree(fast.snapshot_path)  # the fault goes away
            wait_for(lambda: read_status(fast.status_path)["state"] == "running", "status recovers")
            wait_for(lambda: "during-failure" in live_run_ids(fast), "the run after recovery")
    failed = events(logs, "batch.failed")[0]
    assert "could not publish the catalog to" in failed["error"]
    assert [e["run_id"] for e in events(logs, "run.registered")] == ["during-failure"]
