"""The daemon in this process for the tests (tests/test_watch_*.py, test_seed_layout_daemon.py):
a real Daemon with a stop_event on its own thread, the log events of one name, and the bus with
short timers (the ``fast`` fixture)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from builders import DEADLINE_S, wait_for

from quantbot_bus.config import Config
from quantbot_bus.daemon.notify import Notifier
from quantbot_bus.daemon.supervisor import Daemon


@contextmanager
def running_daemon(config: Config, notifier: Notifier | None = None) -> Iterator[Daemon]:
    """Run a Daemon on ``config`` on a thread until the block ends; yields it once it is ready
    and re-raises what it raised."""
    stop = threading.Event()
    daemon = Daemon(config, stop_event=stop, notifier=notifier or Notifier(None))
    errors: list[BaseException] = []

    def target() -> None:
        try:
            daemon.run()
        except BaseException as exc:  # re-raised below
            errors.append(exc)

    thread = threading.Thread(target=target, name="daemon-under-test")
    thread.start()
    try:
        wait_for(lambda: daemon.ready.is_set() or errors, "daemon ready")
        if errors:
            raise errors[0]
        yield daemon
    finally:
        stop.set()
        thread.join(DEADLINE_S)
        assert not thread.is_alive(), "daemon did not stop within the deadline"
    if errors:
        raise errors[0]


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """The captured log events called ``name``, in order."""
    return [e for e in logs if e["event"] == name]


@pytest.fixture(name="fast")
def fast_bus(bus: Config) -> Config:
    """The bus config with short timers for tests."""
    return dataclasses.replace(bus, pending_recheck_s=0.2, export_interval_s=0.2)
