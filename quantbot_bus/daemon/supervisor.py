"""The daemon: a driver of the run pipeline (:class:`quantbot_bus.pipeline.Bus`) that watches.

:class:`Daemon` runs in the thread that calls :meth:`Daemon.run` (the supervisor) and starts the
others, each in its own module: the observer (:mod:`.observer`), the worker (:mod:`.worker`),
the publisher (:mod:`.publisher`) and the lookout (:mod:`.lookout`: alerts and the dashboard).
They share small objects only: the :class:`DirtySet` (observer → worker), :class:`ExportsDue`
(worker → publisher), the ``catalog_broken`` event (worker → publisher, supervisor) and the
:class:`DaemonStatus` (everyone → ``state/status.json``; the lookout reads a snapshot).

Startup order: :meth:`Bus.open` (the state-dir lock: one writer per state dir; then the working
catalog, migrated) → start the observer (so nothing created during the reconcile is missed) →
reconcile (full scan, one batch, published) → process the events that arrived meanwhile →
publish (readers always find a generation) → start the worker, the publisher and the lookout →
``READY=1``
and ``daemon.ready``.

While running, the supervisor checks that the observer, the worker, the publisher and the
lookout are alive (a dead observer is restarted once, see :class:`Watcher`; any other dead thread
stops the daemon with an error, so systemd restarts it), pings the systemd watchdog while the
worker makes progress, rewrites the status file every :data:`WRITE_INTERVAL_S` and waits for
``stop_event``.

Stop (``stop_event`` set, e.g. by the first SIGTERM/SIGINT): ``STOPPING=1``, the worker finishes
the batch in hand (committed and published), the exports get a last refresh if due and every
pending export file is written and published, the catalog is closed and the lock released, the
status file says ``stopped``; nothing is removed. A second signal exits at once (see
:func:`install_signal_handlers`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from types import FrameType

from watchdog.observers.api import BaseObserver

from ..config import Config
from ..errors import DaemonError
from ..log import get_logger
from ..pipeline import Bus
from ..timeutil import iso_utc
from . import IDLE_TICK_S
from .dirty import DirtySet
from .lookout import Lookout
from .notify import Notifier
from .observer import Watcher
from .publisher import ExportsDue, Publisher
from .status import WRITE_INTERVAL_S, DaemonStatus
from .worker import Worker

log = get_logger(__name__)


class Daemon:
    """The long-running watcher. ``run()`` blocks until ``stop_event`` is set.

    ``stop_event`` lets tests (and signal handlers) stop it; ``notifier`` defaults to
    :meth:`Notifier.from_env`.
    """

    def __init__(
        self,
        config: Config,
        stop_event: threading.Event | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.stop_event = stop_event if stop_event is not None else threading.Event()
        self.notifier = notifier if notifier is not None else Notifier.from_env()
        #: Set once the startup reconcile is done and READY=1 was sent.
        self.ready = threading.Event()
        self.root = Path(config.root)
        self.bus: Bus | None = None
        self._dirty = DirtySet(self.root)
        self._status = DaemonStatus(
            config.status_path, root=self.root, observer="polling" if config.polling else "inotify"
        )
        self._watcher = Watcher(config, self._dirty, self._status)
        self._exports = ExportsDue()
        self._catalog_broken = threading.Event()
        self._worker: Worker | None = None
        self._publisher: Publisher | None = None
        self._lookout = Lookout(config, self._status)

    # ------------------------------------------------------------------ inputs (any thread)

    def mark_dirty(self, dirs: Iterable[Path]) -> None:
        """Queue directories for examination and wake the worker (called by the observer)."""
        self._dirty.mark(dirs)

    def request_rescan(self, reason: str) -> None:
        """Ask the worker for a full rescan as soon as possible (overflow, observer restart)."""
        self._dirty.request_rescan(reason)

    # ------------------------------------------------------------------ what it did

    @property
    def pending(self) -> dict[str, str]:
        """Pending run dirs and why (a copy)."""
        return {} if self._worker is None else self._worker.pending.reasons()

    @property
    def batches(self) -> int:
        """Committed batches."""
        return 0 if self._worker is None else self._worker.batches

    @property
    def rescans(self) -> int:
        """Full scans done, the startup reconcile included."""
        return 0 if self._worker is None else self._worker.rescans

    @property
    def observer_kind(self) -> str:
        """``inotify`` or ``polling`` (after a fallback: what actually runs)."""
        return self._watcher.kind

    @property
    def _observer(self) -> BaseObserver | None:
        return self._watcher.observer

    # ------------------------------------------------------------------ lifecycle

    def run(self) -> None:
        """Start, reconcile, watch until ``stop_event`` is set, then stop cleanly."""
        Path(self.config.root).mkdir(parents=True, exist_ok=True)
        self.bus = Bus.open(self.config, role="daemon")
        try:
            self._start(self.bus)
            self._supervise()
        finally:
            self._shutdown()

    def _start(self, bus: Bus) -> None:
        """Observer, reconcile, the worker and the publisher, then READY (see module doc)."""
        worker = self._worker = Worker(
            bus,
            self.config,
            dirty=self._dirty,
            status=self._status,
            watcher=self._watcher,
            exports=self._exports,
            catalog_broken=self._catalog_broken,
            notifier=self.notifier,
        )
        publisher = self._publisher = Publisher(
            bus, self.config, self._status, self._exports, self._catalog_broken
        )
        self._watcher.start()
        # Reconcile the whole root, then whatever the observer saw meanwhile.
        self._dirty.schedule_rescan("startup")
        worker.tick()
        worker.tick()
        worker.publish()  # readers get a generation even if nothing changed
        worker.refresh_counts()
        self._exports.request(wake=False)  # the publisher's first tick takes it
        worker.start()
        publisher.start()
        self._lookout.start()
        self._status.update(ready=True)
        self._status.write()
        self.notifier.send("READY=1\nSTATUS=" + self._status.line())
        self.ready.set()
        log.info(
            "daemon.ready",
            root=str(self.config.root),
            observer=self.observer_kind,
            registered=self._status.get("registered"),
            pending=self._status.get("pending"),
        )

    def _supervise(self) -> None:
        interval = self.notifier.watchdog_interval()
        tick = IDLE_TICK_S if interval is None else min(IDLE_TICK_S, interval / 2)
        heartbeat_limit = max(IDLE_TICK_S * 3, 2 * interval) if interval else None
        next_ping = time.monotonic()
        last_status = time.monotonic()
        while not self.stop_event.wait(tick):
            if not self.stop_event.is_set():
                self._watcher.check()
            worker = self._worker
            if worker is None or not worker.is_alive():
                raise DaemonError("the worker thread died; see the log (worker.crashed)")
            self._check_threads()
            now = time.monotonic()
            if interval is not None and heartbeat_limit is not None and now >= next_ping:
                self._ping_watchdog(worker, now, heartbeat_limit)
                next_ping = now + interval
            self.notifier.retry()
            if now - last_status >= WRITE_INTERVAL_S:
                self._status.write()
                last_status = now

    def _check_threads(self) -> None:
        """The publisher and the lookout must run as long as the daemon does: one that ended
        (a bug) stops the daemon with an error, and systemd restarts it (exports and alerts
        would otherwise go stale while registration carries on)."""
        if self.stop_event.is_set():
            return
        if self._publisher is not None and not self._publisher.is_alive():
            raise DaemonError("the publisher thread stopped; see the log (publisher.crashed)")
        if not self._lookout.is_alive():
            raise DaemonError("the lookout thread stopped; see the log (lookout.crashed)")

    def _ping_watchdog(self, worker: Worker, now: float, heartbeat_limit: float) -> None:
        """``WATCHDOG=1`` only while the worker made progress recently and the observer runs."""
        if now - worker.heartbeat <= heartbeat_limit and self._watcher.alive():
            self.notifier.send("WATCHDOG=1\nSTATUS=" + self._status.line())
        else:
            log.warning(
                "daemon.unhealthy",
                worker_idle_s=round(now - worker.heartbeat, 1),
                observer_alive=self._watcher.alive(),
            )

    def _shutdown(self) -> None:
        self.stop_event.set()
        worker, publisher = self._worker, self._publisher
        if worker is not None:
            worker.stop()
        if publisher is not None:
            publisher.stop_event.set()
        self._lookout.stop_event.set()
        if self.ready.is_set():
            log.info("daemon.stopping")
        self.notifier.send("STOPPING=1\nSTATUS=stopping")
        if worker is not None:
            worker.join()
        if publisher is not None:
            publisher.finish()
        self._lookout.stop()
        self._watcher.stop()
        if self.bus is not None:
            if worker is not None and not self._catalog_broken.is_set():
                with contextlib.suppress(Exception):
                    worker.publish()
            self._status.update(ready=False, stopped_at=iso_utc())
            with contextlib.suppress(OSError):
                self._status.write()
            self.bus.close()  # closes the catalog, then releases the state-dir lock
            self.bus = None
        self.notifier.close()
        log.info("daemon.stopped")


def install_signal_handlers(stop_event: threading.Event) -> None:
    """First SIGTERM/SIGINT: set ``stop_event`` (graceful stop). Second: exit at once (status 1)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop_event.is_set():
            os._exit(1)
        log.info("daemon.signal", signal=signal.Signals(signum).name, action="stopping")
        stop_event.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run_daemon(config: Config) -> None:
    """Run the daemon in the foreground with signal handlers (what ``quantbot-bus daemon`` does)."""
    stop = threading.Event()
    install_signal_handlers(stop)
    if config.catalog == "iceberg":
        from .scaleout import ScaleOutDaemon

        ScaleOutDaemon(config, stop_event=stop).run()
        return
    Daemon(config, stop_event=stop).run()
