"""The lookout thread: the alert checks and the dashboard, from what readers see.

Every :data:`~quantbot_bus.daemon.IDLE_TICK_S` it takes one look with a
:class:`~quantbot_bus.alerts.watch.Watch` (the code ``sync`` and ``rebuild`` run once after
their batch): the daemon's status to the :class:`~quantbot_bus.alerts.Alerter` (which checks the
rules every ``alerts.check_interval_s``), then the dashboard
(:func:`quantbot_bus.report.write_report`) when ``[report]`` is enabled, the publication
generation changed or an alert was sent since the last page, and ``report.interval_s`` has
passed (the first page ``interval_s`` after the start: a daemon started and stopped again draws
none; :mod:`quantbot_bus.report.schedule`). Both read only the publication and the state dir's
files, never the working catalog, so neither ever holds up a batch. A failure is logged
(``alert.check_failed``, ``report.failed``) and the loop goes on; the thread does not die.

:attr:`Lookout.stop_event` ends it; :meth:`Lookout.stop` also lets the alert sinks deliver what
they hold (a few seconds at most).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from ..alerts.watch import ALERT_DRAIN_S, Watch
from ..config import Config
from ..log import get_logger
from . import IDLE_TICK_S
from .status import DaemonStatus

if TYPE_CHECKING:
    from ..alerts import Alerter
    from ..alerts.facts import ItemSource

log = get_logger(__name__)

__all__ = ["ALERT_DRAIN_S", "Lookout"]


class Lookout:
    """The alerts-and-dashboard thread of a daemon (see module doc). ``items``: the failed runs
    and rejections on the Iceberg backend, which the scale-out daemon's poll thread records
    (:class:`~quantbot_bus.iceberg.alert_facts.RunAlertFacts`)."""

    def __init__(
        self, config: Config, status: DaemonStatus, *, items: ItemSource | None = None
    ) -> None:
        self.config = config
        self.items = items
        self.stop_event = threading.Event()
        self._status = status
        self._watch: Watch | None = None
        self._thread: threading.Thread | None = None

    @property
    def _alerter(self) -> Alerter | None:
        return None if self._watch is None else self._watch.alerter

    @property
    def reports(self) -> int:
        """Pages written (for tests and the log)."""
        return 0 if self._watch is None else self._watch.pages.written

    def start(self) -> None:
        self._watch = Watch(self.config, daemon=True, items=self.items)
        self._thread = threading.Thread(target=self._main, name="quantbot-bus-lookout", daemon=True)
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """End the loop, then let the alert sinks deliver for up to :data:`ALERT_DRAIN_S`."""
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join()
        if self._watch is not None:
            self._watch.close(ALERT_DRAIN_S)

    def _main(self) -> None:
        try:
            while not self.stop_event.wait(IDLE_TICK_S):
                self.tick()
        except BaseException as exc:
            log.critical("lookout.crashed", error=f"{type(exc).__name__}: {exc}", exc_info=True)
            raise

    def tick(self) -> None:
        """One look: the alert check if due, then the page if due. Never raises."""
        if self._watch is None:
            self._watch = Watch(self.config, daemon=True, items=self.items)
        self._watch.look(self._status.snapshot(), self._status.get("generation"))
