"""The worker thread: group commit of what the observer marked dirty.

It sleeps until the :class:`DirtySet` wakes it, settles ``settle_ms``, takes *all* dirty
directories (up to ``max_batch``) and has the Bus examine them, commit them in one catalog
transaction and publish them (a new generation readers see). Directories that become dirty
meanwhile form the next batch (group commit, not a fixed debounce window). It also runs the full
rescan (every ``rescan_interval_s``, or at once after an overflow or an observer restart),
re-examines pending runs every ``pending_recheck_s`` and retries a failed commit or publication
with back-off (0.5 s doubling to 30 s; ``degraded`` in the status meanwhile; a failed commit
also reopens the catalog and rescans). A committed change tells the publisher
(:class:`ExportsDue`).

:attr:`Worker.stop_event` ends the loop after the batch in hand; :attr:`Worker.heartbeat` says
when it last made progress (the supervisor's watchdog pings depend on it).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from ..catalog import Batch
from ..config import Config
from ..errors import BusError, DaemonError
from ..log import get_logger
from ..pendingfile import pending_path, previous_first_seen
from ..pipeline import Bus
from ..timeutil import iso_utc
from . import IDLE_TICK_S
from .dirty import DirtySet
from .notify import Notifier
from .observer import Watcher
from .pending import PendingRuns
from .publisher import ExportsDue
from .status import DaemonStatus

log = get_logger(__name__)


class Worker:
    """The batch loop over ``bus`` (see module doc). :meth:`tick` is one round; the supervisor
    also calls it directly for the startup reconcile, before :meth:`start`."""

    def __init__(
        self,
        bus: Bus,
        config: Config,
        *,
        dirty: DirtySet,
        status: DaemonStatus,
        watcher: Watcher,
        exports: ExportsDue,
        catalog_broken: threading.Event,
        notifier: Notifier,
    ) -> None:
        self.bus = bus
        self.config = config
        #: Set when the daemon stops: the loop ends after the batch in hand.
        self.stop_event = threading.Event()
        #: ``time.monotonic()`` of the worker's last sign of progress.
        self.heartbeat = time.monotonic()
        self.batches = 0  # committed batches
        self.rescans = 0  # full scans done, the startup reconcile included
        self.pending = PendingRuns(
            Path(config.root),
            config.pending_recheck_s,
            previous_first_seen(pending_path(config.state_dir)),
        )
        self._dirty = dirty
        self._status = status
        self._watcher = watcher
        self._exports = exports
        #: Set while the catalog needs reopening (a commit failed); read by the publisher.
        self._catalog_broken = catalog_broken
        self._notifier = notifier
        self._next_rescan = 0.0
        self._backoff = 0.0
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ the thread

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="quantbot-bus-worker", daemon=True)
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """End the loop after the batch in hand (returns at once; see :meth:`join`)."""
        self.stop_event.set()
        self._dirty.wake.set()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def _main(self) -> None:
        wake = self._dirty.wake
        try:
            while not self.stop_event.is_set():
                self.heartbeat = time.monotonic()
                woke = wake.wait(self._next_timeout())
                if self.stop_event.is_set():
                    break
                if woke and self.config.settle_ms > 0:
                    time.sleep(self.config.settle_ms / 1000)
                wake.clear()
                self.tick()
                if self._backoff:  # failing (e.g. disk full): wait, still alive for the watchdog
                    self._back_off()
        except Exception:
            log.exception("worker.crashed")
            raise

    def _back_off(self) -> None:
        until = time.monotonic() + self._backoff
        while not self.stop_event.wait(min(IDLE_TICK_S, until - time.monotonic())):
            self.heartbeat = time.monotonic()
            if time.monotonic() >= until:
                break

    def _next_timeout(self) -> float:
        now = time.monotonic()
        return self.pending.timeout(now, min(IDLE_TICK_S, max(0.0, self._next_rescan - now)))

    # ------------------------------------------------------------------ one round

    def tick(self) -> None:
        """One round of work: a full scan, or the dirty dirs (+ due pending rechecks), then a
        publication if due. A failure is logged and retried with back-off."""
        try:
            self._round()
        except Exception as exc:  # noqa: BLE001 - log, keep the items, retry with back-off
            self._failed(exc)

    def _round(self) -> None:
        if self._catalog_broken.is_set():
            self.bus.reopen_catalog()
            self._catalog_broken.clear()
        now = time.monotonic()
        reason = self._dirty.take_rescan()
        if reason is None and now >= self._next_rescan and self._next_rescan > 0:
            reason = "timer"
        if reason is not None:
            self._dirty.clear()  # the scan covers them; later events stay queued
            self._full_scan(reason)
        else:
            dirs = self._dirty.take(self.config.max_batch)  # the Bus maps each to its run dir
            dirs.update(self.pending.take_due(now))
            if dirs:
                self._examine(dirs)
        self.publish()  # when due: e.g. a failed publication is retried
        if self.bus.degraded is not None:
            raise DaemonError(self.bus.degraded)
        self._backoff = 0.0
        if self._status.worker_error is not None:
            self._status.set_worker_error(None)
            self._status.note_publication(self.bus)

    def _failed(self, exc: Exception) -> None:
        self._backoff = min(30.0, max(0.5, self._backoff * 2))
        log.error(
            "batch.failed",
            error=f"{type(exc).__name__}: {exc}",
            retry_in_s=self._backoff,
            exc_info=not isinstance(exc, BusError),  # a traceback for the unexpected
        )
        why = self.bus.degraded or str(exc)
        if not why.startswith("publish failed"):
            self._catalog_broken.set()  # not only the publication: reopen the catalog
        self._dirty.schedule_rescan("retry", keep_earlier=True)
        self._status.set_worker_error(why)
        self._status.note_publication(self.bus)

    def _full_scan(self, reason: str) -> None:
        t0 = time.monotonic()
        outcome = self.bus.full_scan()
        self.heartbeat = time.monotonic()
        self.pending.forget(None, outcome.pending)
        n = self._commit(outcome.batch, outcome.pending, t0, outcome.pending_ids)
        self.rescans += 1
        self._next_rescan = time.monotonic() + self.config.rescan_interval_s
        self._watcher.check_coverage(int(self._status.get("registered") or 0))
        log.info(
            "rescan.done",
            reason=reason,
            n=n,
            pending=len(self.pending),
            ms=round((time.monotonic() - t0) * 1000, 1),
        )

    def _examine(self, dirs: set[Path]) -> None:
        t0 = time.monotonic()
        outcome = self.bus.examine(sorted(dirs))
        self.heartbeat = time.monotonic()
        self.pending.forget(dirs, outcome.pending)
        self._commit(outcome.batch, outcome.pending, t0, outcome.pending_ids)

    def _commit(
        self, batch: Batch, pending: dict[str, str], t0: float, run_ids: dict[str, str]
    ) -> int:
        """Pending bookkeeping (the Bus's pending rule, the readers' list), then one batch,
        committed and published by the Bus; status and log. Returns the batch size."""
        bus = self.bus
        self.pending.record(pending, run_ids)
        self.pending.drop_rejected(pending, bus.expire_pending(pending, batch, run_ids))
        self.pending.publish_list(
            pending_path(self.config.state_dir), self.config.pending_timeout_s
        )
        if len(batch) == 0:
            self._update_pending_status()
            return 0
        # apply_batch logs run.registered/updated/deleted/rejected and batch.committed.
        result = bus.commit(batch)
        self.heartbeat = time.monotonic()
        counts = bus.counts()
        changed = result.changed
        if changed:
            self._exports.request()
        ms = (time.monotonic() - t0) * 1000
        self.batches += 1
        log.debug(
            "batch.published",
            n=len(batch),
            ms=round(ms, 1),
            changed=changed,
            pending=len(self.pending),
        )
        self._status.set_counts(
            counts, last_batch_at=iso_utc(), last_batch_n=len(batch), last_batch_ms=round(ms, 1)
        )
        self._status.note_publication(bus)
        self._update_pending_status()
        self._status.write()
        if changed:
            self._notifier.send("STATUS=" + self._status.line())
        return len(batch)

    # ------------------------------------------------------------------ also at startup

    def publish(self) -> None:
        """Publish if due (the Bus keeps a failure as ``degraded`` and retries when due)."""
        if self.bus.publish_due:
            self.bus.try_publish()
            self._status.note_publication(self.bus)

    def refresh_counts(self) -> None:
        """The catalog's counts and the pending runs into the status."""
        if self.bus.catalog is None or self._catalog_broken.is_set():
            return
        self._status.set_counts(self.bus.counts())
        self._update_pending_status()

    def _update_pending_status(self) -> None:
        self._status.update(
            pending=len(self.pending), oldest_pending_lag_s=self.pending.oldest_lag_s()
        )
