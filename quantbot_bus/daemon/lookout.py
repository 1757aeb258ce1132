"""The lookout thread: the alert checks and the dashboard, from what readers see.

Every :data:`~quantbot_bus.daemon.IDLE_TICK_S` it hands the daemon's status to the
:class:`~quantbot_bus.alerts.Alerter` (which checks the rules every ``alerts.check_interval_s``),
and it rewrites the dashboard (:func:`quantbot_bus.report.write_report`) when ``[report]`` is
enabled, the publication generation changed or an alert was sent since the last page, and
``report.interval_s`` has passed (the first page ``interval_s`` after the start: a daemon
started and stopped again draws none). Both read only the publication and the state dir's
files, never the working catalog, so neither ever holds up a batch. A failure is logged
(``alert.check_failed``, ``report.failed``) and the loop goes on; the thread does not die.

:attr:`Lookout.stop_event` ends it; :meth:`Lookout.stop` also lets the alert sinks deliver what
they hold (a few seconds at most).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from ..config import Config
from ..log import get_logger
from . import IDLE_TICK_S
from .status import DaemonStatus

if TYPE_CHECKING:
    from ..alerts import Alerter

log = get_logger(__name__)

#: Seconds the stopping daemon gives the webhook and command sinks to deliver.
ALERT_DRAIN_S = 5.0


class Lookout:
    """The alerts-and-dashboard thread of a daemon (see module doc)."""

    def __init__(self, config: Config, status: DaemonStatus) -> None:
        self.config = config
        self.stop_event = threading.Event()
        self._status = status
        self._alerter: Alerter | None = None
        self._report_gen: object = None  # the generation the last page was drawn from
        #: time.monotonic() of the last page; the first comes ``interval_s`` after the start
        #: (a daemon started and stopped again, as in a test or a restart loop, draws none)
        self._report_at = time.monotonic()
        self._alerts_sent = 0  # notifications since the last page
        #: Pages written (for tests and the log).
        self.reports = 0
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.config.alerts.enabled:
            from ..alerts import Alerter

            self._alerter = Alerter(self.config)
        self._thread = threading.Thread(target=self._main, name="quantbot-bus-lookout", daemon=True)
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """End the loop, then let the alert sinks deliver for up to :data:`ALERT_DRAIN_S`."""
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join()
        if self._alerter is not None:
            self._alerter.close(ALERT_DRAIN_S)

    def _main(self) -> None:
        try:
            while not self.stop_event.wait(IDLE_TICK_S):
                self.tick()
        except BaseException as exc:
            log.critical("lookout.crashed", error=f"{type(exc).__name__}: {exc}", exc_info=True)
            raise

    def tick(self) -> None:
        """One round: the alert check if due, then the page if due. Never raises."""
        if self._alerter is not None:
            try:
                self._alerts_sent += len(self._alerter.tick(self.config, self._status.snapshot()))
            except Exception as exc:  # noqa: BLE001 - Alerter.tick does not raise; belt and braces
                log.error("alert.check_failed", error=f"{type(exc).__name__}: {exc}")
        if self._report_due():
            self._write_report()

    def _report_due(self) -> bool:
        settings = self.config.report
        if not settings.enabled or self._status.get("generation") is None:
            return False
        changed = self._status.get("generation") != self._report_gen or self._alerts_sent > 0
        waited = time.monotonic() - self._report_at >= settings.interval_s
        return changed and waited

    def _write_report(self) -> None:
        from ..report import write_report

        gen = self._status.get("generation")
        self._report_at = time.monotonic()
        try:
            write_report(self.config)
        except Exception as exc:  # noqa: BLE001 - the page never stops the daemon
            log.error("report.failed", error=f"{type(exc).__name__}: {exc}")
            return
        self._report_gen = gen
        self._alerts_sent = 0
        self.reports += 1
