"""The daemon for ``catalog = "iceberg"``: one thread polling the bucket (litestream's shape:
reconcile first, then new keys every ``poll_interval_s``, a full reconcile every
``rescan_interval_s``), and an upkeep thread (:mod:`.maintainer`: compaction, snapshot expiry,
orphan cleanup) beside it.

A failed poll (the object store or PostgreSQL down, slow or erroring) never stops it: the status
says ``degraded`` with the reason, the next poll waits a capped, doubling backoff (1 s up to
:data:`MAX_BACKOFF_S`), and a poll that goes through clears it. Nothing is lost meanwhile: the
cursors move only after a poll's runs are registered (:mod:`quantbot_bus.iceberg.bus`).

With ``[alerts]`` on, a :class:`~.lookout.Lookout` thread checks the status rules (``degraded``,
``stalled``, ``disk_low``) on this daemon's status, as the local daemon's does, and
``run_failed`` and ``rejected`` on what this daemon committed: after each poll that went through,
the poll thread hands its registered runs and recorded rejections to a
:class:`~quantbot_bus.iceberg.alert_facts.RunAlertFacts` (``state_dir/iceberg-alert-facts.json``)
that the lookout reads. Registration is exactly once across daemons, so each failed run and each
rejection is alerted by one daemon. ``regression`` and the dashboard need the local publication
and do not run on this backend (docs/alerts.md, docs/scale-out.md "Faults").
"""

from __future__ import annotations

import threading
import time

from ..config import Config
from ..iceberg.alert_facts import RunAlertFacts, load_for
from ..iceberg.bus import IcebergBus
from ..iceberg.result import PollResult
from ..log import get_logger
from ..statelock import StateLock
from ..timeutil import iso_utc
from .lookout import Lookout
from .maintainer import Maintainer
from .notify import Notifier
from .status import DaemonStatus

log = get_logger(__name__)

MAX_BACKOFF_S = 30.0
#: Compaction, snapshot expiry and orphan cleanup (:mod:`quantbot_bus.iceberg.maintenance`): the
#: first round this long after the start, then one every :data:`MAINTENANCE_INTERVAL_S`, or
#: :data:`MAINTENANCE_RETRY_S` after a round that failed; at a stop, the round under way is
#: waited for at most :data:`MAINTENANCE_STOP_WAIT_S` (``TimeoutStopSec`` is 90 s).
MAINTENANCE_FIRST_S = 60.0
MAINTENANCE_INTERVAL_S = 3600.0
MAINTENANCE_RETRY_S = 300.0
MAINTENANCE_STOP_WAIT_S = 30.0


class ScaleOutDaemon:
    def __init__(self, config: Config, *, stop_event: threading.Event | None = None) -> None:
        self.config = config
        self.stop_event = stop_event or threading.Event()
        self.notifier = Notifier.from_env()
        self.status = DaemonStatus(config.status_path, root=config.object_root, observer="listing")
        self.status.update(backend="iceberg")
        self.polls = 0
        self.reconciles = 0
        #: the failed runs and rejections this daemon committed, for the lookout (alerts on)
        self.alert_facts: RunAlertFacts | None = None
        #: the upkeep thread (made by :meth:`run`)
        self.maintainer: Maintainer | None = None

    def run(self) -> None:
        config = self.config
        config.state_dir.mkdir(parents=True, exist_ok=True)
        lock = StateLock(config.lock_path, "daemon")
        lock.acquire()
        bus = IcebergBus(config)
        log.info("daemon.started", root=config.object_root, backend="iceberg", daemon=bus.daemon_id)
        lookout = None
        if config.alerts.enabled:
            self.alert_facts = load_for(config, bus.loc)
            lookout = Lookout(config, self.status, items=self.alert_facts)
        self.maintainer = Maintainer(
            bus.maintain,
            first_s=MAINTENANCE_FIRST_S,
            every_s=MAINTENANCE_INTERVAL_S,
            retry_s=MAINTENANCE_RETRY_S,
        )
        try:
            if lookout is not None:
                lookout.start()
            self._loop(bus)
        finally:
            self.maintainer.stop(MAINTENANCE_STOP_WAIT_S)
            if lookout is not None:
                lookout.stop()  # the alert sinks deliver what they hold (a few seconds)
            bus.close()
            self.status.update(ready=False, stopped_at=iso_utc())
            self.status.write()
            self.notifier.send("STOPPING=1")
            self.notifier.close()
            lock.release()
            log.info("daemon.stopped")

    def _loop(self, bus: IcebergBus) -> None:
        backoff = 0.0
        last_full = -float("inf")
        last_ping = 0.0
        claimed = 0
        while not self.stop_event.is_set():
            now = time.monotonic()
            full = now - last_full >= self.config.rescan_interval_s
            try:
                result = bus.poll(full=full)
            except Exception as exc:  # the store or the catalog failed: degraded, retried
                backoff = min(MAX_BACKOFF_S, max(1.0, backoff * 2))
                reason = f"{type(exc).__name__}: {str(exc)[:300]}"
                if self.status.get("degraded") != reason:
                    log.warning("daemon.degraded", reason=reason, retry_in_s=backoff)
                self.status.update(degraded=reason, ready=True)
                bus.drop_connections()
            else:
                if self.status.get("degraded"):
                    log.info("daemon.recovered")
                backoff = 0.0
                claimed = result.claimed
                if full:
                    last_full = now
                    self.reconciles += 1
                self.polls += 1
                counts = bus.counts()
                n = len(result.registered) + len(result.already) + len(result.rejected)
                fields: dict[str, object] = {
                    "degraded": None,
                    "ready": True,
                    "pending": len(result.pending),
                    "backlog": result.backlog,
                    "polls": self.polls,
                    "reconciles": self.reconciles,
                }
                if n:
                    fields.update(
                        last_batch_at=iso_utc(),
                        last_batch_n=n,
                        last_batch_ms=round(result.seconds * 1000, 1),
                    )
                    log.info(
                        "batch.committed",
                        registered=len(result.registered),
                        already=len(result.already),
                        rejected=len(result.rejected),
                        pending=len(result.pending),
                        full=full,
                        ms=round(result.seconds * 1000, 1),
                    )
                self.status.set_counts(counts, **fields)
                self._hand_off(bus, result)
                if self.maintainer is not None:
                    self.maintainer.start()  # after the first poll that went through
            if self.maintainer is not None:  # the upkeep's last round, as its thread left it
                up = self.maintainer.upkeep
                self.status.update(upkeep_at=up.at, upkeep_error=up.error, upkeep_since=up.since)
            if self.polls == 1 or backoff:
                self.notifier.send("READY=1")
            self.status.write()
            self.notifier.send(f"STATUS={self.status.line()}")
            interval = self.notifier.watchdog_interval()
            if interval is not None and time.monotonic() - last_ping >= interval:
                self.notifier.send("WATCHDOG=1")
                last_ping = time.monotonic()
            # more backlog than one poll takes: poll again at once, unless other daemons hold it
            busy = not backoff and self.status.get("backlog") and claimed
            self.stop_event.wait(0 if busy else backoff or self.config.poll_interval_s)

    def _hand_off(self, bus: IcebergBus, result: PollResult) -> None:
        """Give the poll's commits to the alert facts (never raises: logged)."""
        if self.alert_facts is None:
            return
        try:
            self.alert_facts.record(result, lambda ids: bus.ledger.known("runs_d", ids))
        except Exception as exc:  # noqa: BLE001 - alerts never stop registration
            log.warning("alert.facts_failed", source="poll", error=f"{type(exc).__name__}: {exc}")
