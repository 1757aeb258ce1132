"""The scale-out daemon's upkeep runs in a thread of its own (real moto_server and PostgreSQL, the
daemon in this process): a long round does not hold up the polls, a round that fails is tried
again, and the last round shows in the status."""

from __future__ import annotations

import re
import threading
from typing import Any

import pytest
from builders import wait_for
from structlog.testing import capture_logs

pytestmark = pytest.mark.timeout(240)


def _start(scaleout: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, threading.Thread]:
    from quantbot_bus.daemon import scaleout as daemon_module
    from quantbot_bus.daemon.scaleout import ScaleOutDaemon

    scaleout.reach_s3(monkeypatch)
    monkeypatch.setattr(daemon_module, "MAINTENANCE_FIRST_S", 0.0)
    daemon = ScaleOutDaemon(scaleout.config())
    thread = threading.Thread(target=daemon.run, name="test-daemon")
    thread.start()
    return daemon, thread


def test_runs_register_while_a_long_upkeep_round_runs(
    scaleout: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The round (a compaction of 64 MiB on slow storage, say) is held until a run uploaded
    after it began is registered by the polls; the real round then runs on its own connections."""
    from quantbot_bus.iceberg.maintenance import Upkeep

    real_run = Upkeep.run
    began, release = threading.Event(), threading.Event()
    rounds: list[dict[str, Any]] = []

    def held_round(self: Upkeep) -> dict[str, Any]:
        began.set()
        release.wait(120)
        done = real_run(self)
        rounds.append(done)
        return done

    monkeypatch.setattr(Upkeep, "run", held_round)
    scaleout.upload("before")
    daemon, thread = _start(scaleout, monkeypatch)
    try:
        assert began.wait(60), "no upkeep round began"
        scaleout.upload("during")
        wait_for(
            lambda: scaleout.run_counts("runs_d")["during"] == 1, "a poll during the round", 90
        )
        assert not rounds  # the round is still held
        _check_upkeep_while_held(scaleout.config())
        release.set()
        wait_for(lambda: rounds, "the round's end", 90)
        assert {"runs_d", "artifacts_f", "quantbot_claims", "_inbox"} <= set(rounds[0])
        wait_for(lambda: daemon.status.get("upkeep_at"), "the round in the status", 30)
        assert daemon.status.get("upkeep_error") is None
        ended = "last upkeep round ended at "
        wait_for(lambda: _upkeep(scaleout.config()).detail.startswith(ended), "doctor: ended", 30)
        assert _upkeep(scaleout.config()).status == "ok"
    finally:
        release.set()
        daemon.stop_event.set()
        thread.join(90)
    assert not thread.is_alive()
    assert scaleout.run_counts("runs_d") == {"before": 1, "during": 1}


def _upkeep(config: Any, hung_after_s: float | None = None) -> Any:
    from quantbot_bus.ops.doctor.scaleout import UPKEEP_HUNG_S, check_upkeep

    return check_upkeep(config, None, UPKEEP_HUNG_S if hung_after_s is None else hung_after_s)


def _check_upkeep_while_held(config: Any) -> None:
    """``doctor``'s upkeep check of the status file the daemon writes while its round is held:
    fine, then hung once the round is older than the limit (2 h; 1 s here)."""
    from quantbot_bus.daemon.status import read_status

    wait_for(
        lambda: read_status(config.status_path).get("upkeep_since"), "the round in the status", 30
    )
    assert _upkeep(config).status == "ok"
    wait_for(lambda: _upkeep(config, 1.0).status == "warn", "the held round seen as hung", 30)
    hung = _upkeep(config, 1.0)
    assert re.fullmatch(
        r"an upkeep round has run for \d+ s \(since [0-9T:.-]+Z?\): it is hung; until a "
        r"round ends, small files and snapshots pile up \(registration goes on\)",
        hung.detail,
    ), hung.detail
    assert hung.fix.startswith("restart the daemon (systemctl restart quantbot-bus)")


def test_a_failed_round_is_retried_and_the_polls_go_on(
    scaleout: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quantbot_bus.daemon import scaleout as daemon_module
    from quantbot_bus.iceberg.maintenance import Upkeep

    calls: list[float] = []

    def failing_round(self: Upkeep) -> dict[str, Any]:
        calls.append(0.0)
        raise ConnectionError("PostgreSQL went away")

    monkeypatch.setattr(Upkeep, "run", failing_round)
    monkeypatch.setattr(daemon_module, "MAINTENANCE_RETRY_S", 0.2)
    with capture_logs() as logs:
        daemon, thread = _start(scaleout, monkeypatch)
        try:
            wait_for(lambda: len(calls) >= 3, "three rounds, each retried", 60)
            scaleout.upload("r1")
            wait_for(lambda: scaleout.run_counts("runs_d")["r1"] == 1, "a poll", 90)
            wait_for(lambda: _upkeep(scaleout.config()).status == "warn", "doctor's warning", 30)
            warned = _upkeep(scaleout.config())
            assert warned.detail.startswith("the last upkeep round failed at ")
            assert ": ConnectionError: PostgreSQL went away; it is tried again" in warned.detail
        finally:
            daemon.stop_event.set()
            thread.join(90)
    assert not thread.is_alive()
    status = daemon.status.get("upkeep_error"), daemon.status.get("upkeep_at")
    assert status[0] == "ConnectionError: PostgreSQL went away" and status[1], status
    failed = [e for e in logs if e["event"] == "iceberg.maintenance_failed"]
    assert len(failed) >= 3
    assert failed[0]["error"] == "ConnectionError: PostgreSQL went away"
    assert daemon.status.get("degraded") is None  # the polls went through all along
    found = _upkeep(scaleout.config())  # the daemon's last status file: stopped, nothing to check
    assert (found.status, found.detail) == (
        "ok",
        "not checked: the daemon's status is stopped (see status)",
    )


def test_a_maintainer_stopped_before_it_started_stops_at_once() -> None:
    """The daemon stops (its lookout failed to start, say) before its first poll went through:
    the upkeep thread that never started is no reason for an error."""
    from quantbot_bus.daemon.maintainer import Maintainer

    m = Maintainer(lambda: None, first_s=0.0, every_s=1.0, retry_s=1.0)
    assert m.stop(5.0) is True
    assert m.rounds == 0
