"""The scale-out daemon's upkeep thread: one round of ``work`` (the catalog's compaction, snapshot
expiry, orphan cleanup: :class:`~quantbot_bus.iceberg.maintenance.Upkeep`) ``first_s`` after
:meth:`Maintainer.start` (the daemon starts it after its first poll that went through), then
every ``every_s``; a round that raised is logged (``iceberg.maintenance_failed``) and
tried again after ``retry_s``.

A thread of its own, so a long round (a compaction reads and rewrites up to 64 MiB) never holds
up the polls, nor the watchdog pings that the poll thread sends: under systemd a round longer
than ``WatchdogSec`` would have had the daemon killed, at every start again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import NamedTuple

from ..log import get_logger
from ..timeutil import iso_utc

log = get_logger(__name__)


class UpkeepState(NamedTuple):
    """The upkeep's last round as the status shows it (``upkeep_at``, ``upkeep_error``,
    ``upkeep_since``)."""

    at: str | None
    error: str | None
    since: str | None


class Maintainer:
    def __init__(
        self,
        work: Callable[[], object],
        *,
        first_s: float,
        every_s: float,
        retry_s: float,
        stop_event: threading.Event | None = None,
    ) -> None:
        self.work = work
        self.first_s, self.every_s, self.retry_s = first_s, every_s, retry_s
        self.stop_event = stop_event or threading.Event()
        self.rounds = 0
        #: for status, replaced whole (read without a lock, never half of one round and half of
        #: the next): when the last round ended (ISO UTC), its error (None: it went through),
        #: when the round under way began (None between rounds: to tell a hung one)
        self.upkeep = UpkeepState(None, None, None)
        self._thread = threading.Thread(target=self._main, name="iceberg-upkeep", daemon=True)

    def start(self) -> Maintainer:
        """Start the thread (once; later calls do nothing)."""
        if self._thread.ident is None:
            self._thread.start()
        return self

    def stop(self, wait_s: float) -> bool:
        """Stop after the round under way, waiting at most ``wait_s`` for it; False if it is
        still running (it ends with the process: a commit it had not made is not made, and the
        files it wrote are orphans that a later cleanup removes)."""
        self.stop_event.set()
        if self._thread.ident is None:  # never started
            return True
        self._thread.join(wait_s)
        alive = self._thread.is_alive()
        if alive:
            log.warning("iceberg.maintenance_abandoned", waited_s=wait_s)
        return not alive

    def _main(self) -> None:
        wait = self.first_s
        while not self.stop_event.wait(wait):
            self.upkeep = self.upkeep._replace(since=iso_utc())
            error: str | None = None
            try:
                self.work()
            except Exception as exc:  # noqa: BLE001 - the catalog went away: tried again soon
                error = f"{type(exc).__name__}: {str(exc)[:300]}"
                log.warning("iceberg.maintenance_failed", error=error)
                wait = self.retry_s
            else:
                wait = self.every_s
            self.upkeep = UpkeepState(iso_utc(), error, None)
            self.rounds += 1
