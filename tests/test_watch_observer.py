"""The daemon in-process and its watchdog observer: a queue overflow triggers a rescan, a dead
observer is restarted once (twice stops the daemon), and one daemon per state dir.

Every test waits with generous deadlines (polling the reader-side snapshot or the status file),
never on tight timing. Runs are built with tests/builders/.
"""

from __future__ import annotations

import logging
import os

import pytest
from builders import live_run_ids, make_run, wait_for
from daemon_in_process import DaemonThread, events, running_daemon
from structlog.testing import capture_logs

from quantbot_bus.config import Config
from quantbot_bus.daemon.notify import Notifier
from quantbot_bus.daemon.observer import OVERFLOW_LOGGER
from quantbot_bus.daemon.status import read_status
from quantbot_bus.daemon.supervisor import Daemon
from quantbot_bus.errors import BusyError, DaemonError


def test_queue_overflow_warning_triggers_a_rescan(fast: Config) -> None:
    with capture_logs() as logs:
        with running_daemon(fast) as daemon:
            before = daemon.rescans
            # What watchdog's inotify reader logs when the kernel queue overflows.
            logging.getLogger(OVERFLOW_LOGGER).warning(
                "Inotify queue overflowed; filesystem events were lost"
            )
            wait_for(lambda: daemon.rescans > before, "rescan after overflow")
    assert events(logs, "watch.overflow")
    assert [e["reason"] for e in events(logs, "rescan.done")] == ["startup", "overflow"]


@pytest.mark.parametrize("which", ["observer", "inotify reader"])
def test_a_dead_observer_is_restarted_once(fast: Config, which: str) -> None:
    with capture_logs() as logs:
        with running_daemon(fast) as daemon:
            old = daemon._observer
            assert old is not None
            # The dispatch thread dies (as when a handler raised), or watchdog's inotify reader
            # thread does (as when a warning in it is turned into an error).
            thread = old if which == "observer" else old._inotify_fd  # type: ignore[attr-defined]
            thread.stop()
            thread.join()
            wait_for(lambda: events(logs, "watch.restarted"), "observer restart")
            assert daemon._observer is not old and daemon._observer is not None
            make_run(fast.root, "backtest", "after-restart")
            wait_for(lambda: "after-restart" in live_run_ids(fast), "run seen by new observer")


def test_an_observer_dying_twice_stops_the_daemon_with_an_error(fast: Config) -> None:
    run = DaemonThread(fast)
    daemon, errors = run.daemon, run.errors
    with capture_logs() as logs:
        run.start()
        wait_for(daemon.ready.is_set, "ready")
        first = daemon._observer
        assert first is not None
        first.stop()
        first.join()
        wait_for(lambda: daemon._observer not in (None, first), "the observer restarted once")
        second = daemon._observer
        assert second is not None
        second.stop()
        second.join()
        run.join()
    assert len(errors) == 1 and isinstance(errors[0], DaemonError)
    assert "observer died twice" in str(errors[0])
    assert [e["event"] for e in logs][-1] == "daemon.stopped"
    assert read_status(fast.status_path)["state"] == "stopped"


def test_a_second_daemon_on_the_same_state_dir_is_refused(fast: Config) -> None:
    with running_daemon(fast):
        with pytest.raises(BusyError, match=rf"quantbot-bus daemon \(pid {os.getpid()}\)"):
            Daemon(fast, notifier=Notifier(None)).run()
