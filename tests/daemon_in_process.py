"""The daemon in this process for the tests (tests/test_watch_*.py, test_seed_layout_daemon.py):
a real Daemon with a stop_event on its own thread, the log events of one name, and the bus with
short timers (the ``fast`` fixture)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
from builders import DEADLINE_S, wait_for

from quantbot_bus.config import Config
from quantbot_bus.daemon.notify import Notifier
from quantbot_bus.daemon.supervisor import Daemon


class DaemonThread:
    """A real Daemon on ``config`` run on its own thread; :attr:`errors` holds what ``run()``
    raised, :attr:`stop` ends it."""

    def __init__(self, config: Config, notifier: Notifier | None = None) -> None:
        self.stop = threading.Event()
        self.daemon = Daemon(config, stop_event=self.stop, notifier=notifier or Notifier(None))
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, name="daemon-under-test")

    def _run(self) -> None:
        try:
            self.daemon.run()
        except BaseException as exc:  # the test looks at it
            self.errors.append(exc)

    def start(self) -> DaemonThread:
        self.thread.start()
        return self

    def join(self) -> None:
        """Wait for the thread to end (at most :data:`~builders.DEADLINE_S`)."""
        self.thread.join(DEADLINE_S)
        assert not self.thread.is_alive(), "daemon did not stop within the deadline"


@contextmanager
def running_daemon(config: Config, notifier: Notifier | None = None) -> Iterator[Daemon]:
    """Run a Daemon on ``config`` on a thread until the block ends; yields it once it is ready
    and re-raises what it raised."""
    run = DaemonThread(config, notifier).start()
    try:
        wait_for(lambda: run.daemon.ready.is_set() or run.errors, "daemon ready")
        if run.errors:
            raise run.errors[0]
        yield run.daemon
    finally:
        run.stop.set()
        run.join()
    if run.errors:
        raise run.errors[0]


def events(logs: Sequence[Mapping[str, Any]], name: str) -> list[Mapping[str, Any]]:
    """The captured log events called ``name``, in order."""
    return [e for e in logs if e["event"] == name]


@pytest.fixture(name="fast")
def fast_bus(bus: Config) -> Config:
    """The bus config with short timers for tests."""
    return dataclasses.replace(bus, pending_recheck_s=0.2, export_interval_s=0.2)
