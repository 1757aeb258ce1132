"""One look at the bus: the alert check, then the dashboard page when it is due. The code the
daemon's lookout thread runs every tick (:mod:`quantbot_bus.daemon.lookout`) and a one-shot
``sync``/``rebuild`` runs once after its batch (:mod:`.oneshot`)::

    watch = Watch(config, daemon=True)       # an Alerter when [alerts] is on, the page schedule
    look = watch.look(status, source)         # alerts checked if due, then the page if due
    watch.close(ALERT_DRAIN_S)                # the webhook and the command deliver what they hold

Both read only the publication and the state dir's files (``alerts.json``, ``report.json``),
never the working catalog. The alert state (:class:`~.state.AlertState`) and the page's schedule
(:class:`~quantbot_bus.report.schedule.PageSchedule`) are files, so whichever process looks
next — the daemon or the next ``sync`` — carries on where the last one stopped: a condition is
notified once, the rate limits and the page's interval count across them. Nothing here raises
into the caller (``alert.check_failed``, ``report.failed`` are logged).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..log import get_logger
from ..timeutil import utc_now

if TYPE_CHECKING:
    from ..config import Config
    from ..report.schedule import PageSchedule
    from ..report.writer import ReportResult
    from .alerter import Alerter
    from .facts import ItemSource
    from .model import Notification

log = get_logger("quantbot_bus.alerts")

#: Seconds a stopping daemon, or a one-shot after its look, gives the webhook and command sinks
#: to deliver what they hold.
ALERT_DRAIN_S = 5.0


@dataclass(frozen=True)
class Look:
    """What one look did: the notifications it sent and the page it wrote (or None)."""

    notes: list[Notification] = field(default_factory=list)
    page: ReportResult | None = None


class Watch:
    """The alerter (when ``[alerts]`` is enabled) and the page schedule of one process.

    ``daemon``: True in the daemon (its status dict; the page's interval counts from its start);
    False for a one-shot, whose status is its own (:attr:`~.facts.Facts.daemon`: the rules
    about a running daemon are left as they are) and whose page interval counts from the
    recorded schedule. ``items``: the alerter's failed runs and rejections on the Iceberg
    backend (the scale-out daemon's; :func:`~.facts.gather_facts`)."""

    def __init__(self, config: Config, *, daemon: bool, items: ItemSource | None = None) -> None:
        from ..report.schedule import PageSchedule

        self.config = config
        self.daemon = daemon
        self.alerter: Alerter | None = None
        if config.alerts.enabled:
            from .alerter import Alerter

            self.alerter = Alerter(config, items=items)
        self.pages: PageSchedule = PageSchedule(config, start=utc_now() if daemon else None)

    def look(self, status: Mapping[str, Any] | None, source: object) -> Look:
        """The alert check (if ``check_interval_s`` has passed since this watch's last one),
        then the page (if :meth:`PageSchedule.due <quantbot_bus.report.schedule.PageSchedule.due>`
        for the publication ``source``, counting the notifications just sent). Never raises."""
        notes: list[Notification] = []
        if self.alerter is not None:
            try:
                notes = self.alerter.tick(self.config, status, daemon=self.daemon)
            except Exception as exc:  # noqa: BLE001 - Alerter.tick does not raise; belt and braces
                log.error("alert.check_failed", error=f"{type(exc).__name__}: {exc}")
        self.pages.note_alerts(len(notes))
        return Look(notes=notes, page=self.pages.refresh(source))

    def close(self, timeout: float = ALERT_DRAIN_S) -> dict[str, int]:
        """Let the webhook and command sinks deliver what they hold for up to ``timeout``
        seconds, then stop them; returns per sink the notifications they could not deliver
        (given up after their retries, or dropped), none when all went out."""
        if self.alerter is None:
            return {}
        self.alerter.close(timeout)
        return self.alerter.undelivered()
