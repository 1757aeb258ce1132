"""The publisher thread: keeps the exports up to date, at most once per ``export_interval_s``.

Each round, when the worker said the catalog changed (:class:`ExportsDue`): waits out the rest of
the interval (a burst of batches → one round at its end), has the Bus refresh the export state
and segments (one bounded chunk; a catch-up asks for the next round at once) and publish them,
writes the due summary and user export files (published too) and compacts small segments in the
background. A failing step is logged (``export.failed``), retried after the interval, and never
holds up registration.

:attr:`Publisher.stop_event` ends the waiting (the daemon is stopping); :meth:`Publisher.finish`,
once the worker is done, writes every pending file, publishes it and ends the thread.
"""

from __future__ import annotations

import threading
import time

from ..config import Config
from ..log import get_logger
from ..pipeline import Bus
from . import IDLE_TICK_S
from .status import DaemonStatus

log = get_logger(__name__)


class ExportsDue:
    """The worker's word to the publisher: the catalog changed, the exports are due."""

    def __init__(self) -> None:
        self.dirty = False
        #: Wakes the publisher.
        self.wake = threading.Event()

    def request(self, *, wake: bool = True) -> None:
        """Mark the exports due; ``wake``: start the round now rather than at the next tick."""
        self.dirty = True
        if wake:
            self.wake.set()


class Publisher:
    """The export-refresh thread over ``bus`` (see module doc)."""

    def __init__(
        self,
        bus: Bus,
        config: Config,
        status: DaemonStatus,
        due: ExportsDue,
        catalog_broken: threading.Event,
    ) -> None:
        self.bus = bus
        self.config = config
        #: Set when the daemon stops: no more waiting for the interval.
        self.stop_event = threading.Event()
        self._status = status
        self._due = due
        self._catalog_broken = catalog_broken  # set by the worker until it reopened the catalog
        self._finish = threading.Event()
        self._more = False  # the last refresh left changed runs for the next one
        self._last_export = 0.0
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._main, name="quantbot-bus-publisher", daemon=True
        )
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def finish(self) -> None:
        """The last round (write every pending file, publish), then end the thread; waits."""
        if self._thread is None:
            return
        self._finish.set()
        self._due.wake.set()
        self._thread.join()

    def _main(self) -> None:
        try:
            self._loop()
        except BaseException as exc:
            log.critical("publisher.crashed", error=f"{type(exc).__name__}: {exc}", exc_info=True)
            raise

    def _loop(self) -> None:
        files_due_at: float | None = None  # when held-back export files become due
        while True:
            timeout = IDLE_TICK_S
            if files_due_at is not None:
                timeout = min(timeout, max(0.0, files_due_at - time.monotonic()))
            self._due.wake.wait(timeout)
            self._due.wake.clear()
            stopping = self._finish.is_set()
            refreshed = self._refresh_round(stopping) if self._due.dirty else False
            due = files_due_at is not None and time.monotonic() >= files_due_at
            if refreshed or due or stopping:
                nxt = self.bus.write_files(force=stopping)
                files_due_at = None if nxt is None else time.monotonic() + float(nxt)
            if refreshed and not stopping:
                self.bus.compact()
            self._status.note_publication(self.bus)
            if stopping:  # the final flush was tried once (a failed one is not retried)
                return

    def _refresh_round(self, stopping: bool) -> bool:
        """Wait out the interval (unless stopping or catching up), then one refresh; a catch-up
        asks for the next round at once. Returns whether the refresh went through."""
        wait = self._last_export + self.config.export_interval_s - time.monotonic()
        if wait > 0 and not self.stop_event.is_set() and not self._more:
            self.stop_event.wait(wait)  # coalesce a burst into one refresh
        self._due.dirty = False
        refreshed = self._refresh_exports()
        if self._more and not stopping:
            # A catch-up: one bounded chunk per round, each published and its files
            # written (on their cadence), so readers see it advance; next chunk at once.
            self._due.request()
        return refreshed

    def _refresh_exports(self) -> bool:
        """One bounded refresh of the export state, then a publication carrying it. ``more``
        in its status (kept in ``_more``) asks for another round. Returns whether the refresh
        went through."""
        self._last_export = time.monotonic()
        bus = self.bus
        if bus.catalog is None or self._catalog_broken.is_set():
            self._due.dirty = True  # the worker reopens it (and logs why); then we go on
            return False
        try:
            self._more = False
            status = bus.refresh_exports()
            self._more = bool(status.get("more"))
            if bus.publish_due:
                bus.publish()
        except Exception as exc:  # noqa: BLE001 - exports never stop registration
            # e.g. disk full: try again after the next interval, even if no run changes.
            self._due.dirty = True
            log.error("export.failed", error=f"{type(exc).__name__}: {exc}")
            return False
        return True
