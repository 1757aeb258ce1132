"""The daemon: a driver of the run pipeline (:class:`quantbot_bus.pipeline.Bus`) that watches.

Threads (see docs/ARCHITECTURE.md):

- **observer** (watchdog; inotify, or polling with ``--polling``): its handler only maps each event
  to a directory, adds it to a de-duplicated dirty set and wakes the worker. It never raises (an
  exception in a handler silently kills watchdog's dispatch thread).
- **worker**: waits for dirty directories; when woken it settles ``settle_ms``, takes *all* dirty
  directories (up to ``max_batch``), maps each to its run directory and has the Bus examine them,
  commit them in one catalog transaction and publish them (a new generation readers see).
  Directories that become dirty meanwhile form the next batch (group commit, not a fixed
  debounce window). It also runs the periodic full rescan (``rescan_interval_s``, or at once
  after an inotify queue overflow), re-examines pending runs every ``pending_recheck_s`` and
  retries a failed publication (with back-off; ``degraded`` in the status meanwhile).
- **publisher**: at most once per ``export_interval_s`` (a catch-up: one bounded chunk per round,
  back to back) has the Bus refresh the export state and segments and publish them, write the
  due summary and user export files (published too) and compact small segments in the
  background. A failing step is logged (``export.failed``) and never stops registration.
- the **supervisor** (the thread that calls :meth:`Daemon.run`): checks that the observer and the
  worker are alive, pings the systemd watchdog while the worker makes progress, rewrites the status
  file every few seconds, and waits for ``stop_event``.

Startup order: :meth:`Bus.open` (the state-dir lock: one writer per state dir; then the working
catalog, migrated) → start the observer (so nothing created during the reconcile is missed) →
reconcile (full scan, one batch, published) → process the events that arrived meanwhile →
publish (readers always find a generation) → ``READY=1`` and ``daemon.ready``.

Stop (``stop_event`` set, e.g. by the first SIGTERM/SIGINT): ``STOPPING=1``, the worker finishes
the batch in hand (committed and published), the exports get a last refresh if due and every
pending export file is written and published, the catalog is closed and the lock released, the
status file says ``stopped``; nothing is removed. A second signal exits at once (see
:func:`install_signal_handlers`).

Observer death: the first time the observer (or one of its emitters) is found dead it is restarted
and a full rescan is scheduled (``watch.restarted``); if it dies again within
:data:`OBSERVER_RESTART_WINDOW_S`, :meth:`Daemon.run` raises :class:`DaemonError` so the process
exits non-zero and systemd (``Restart=on-failure``) starts a fresh one.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import threading
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from .catalog import Batch
from .config import Config
from .errors import BusError, DaemonError
from .ignore import is_ignored
from .log import get_logger
from .notify import Notifier
from .pipeline import Bus
from .status import WRITE_INTERVAL_S, write_status
from .timeutil import iso_utc

log = get_logger("quantbot_bus.watch")

#: The event types the observer asks for. Explicit on purpose: with watchdog's default mask a
#: tree of ~5,000 directories falls into an endless inotify queue-overflow loop.
EVENT_FILTER: list[type[FileSystemEvent]] = [
    DirCreatedEvent,
    FileCreatedEvent,
    DirMovedEvent,
    FileMovedEvent,
    FileClosedEvent,
    DirDeletedEvent,
    FileDeletedEvent,
]
#: watchdog reports an inotify queue overflow only as a WARNING from this logger.
OVERFLOW_LOGGER = "watchdog.observers.inotify_c"
#: A second observer death within this many seconds of a restart ends the daemon (exit non-zero).
OBSERVER_RESTART_WINDOW_S = 600.0
#: The worker loop wakes at least this often (heartbeat, timers) even when idle.
IDLE_TICK_S = 1.0


@dataclass
class _Pending:
    first_seen: float  # time.monotonic()
    first_seen_wall: float  # time.time()
    reason: str


class _EventHandler(FileSystemEventHandler):
    """Maps every event to directories and hands them to the daemon. Never raises."""

    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            paths = [event.src_path]
            if event.dest_path:
                paths.append(event.dest_path)
            dirs: list[Path] = []
            for raw in paths:
                path = Path(os.fsdecode(raw))
                if not raw or is_ignored(self._daemon.root, path):
                    continue  # hidden names, *.tmp, *.partial: never read, never a trigger
                dirs.append(path if event.is_directory else path.parent)
            if dirs:
                self._daemon.mark_dirty(dirs)
        except Exception:  # noqa: BLE001 - a raising handler kills watchdog's dispatch thread
            with contextlib.suppress(Exception):
                log.exception("watch.handler_error", event=repr(event))


class _OverflowHandler(logging.Handler):
    """Turns watchdog's queue-overflow WARNING into a rescan request."""

    def __init__(self, daemon: Daemon) -> None:
        super().__init__(level=logging.WARNING)
        self._daemon = daemon

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if "overflow" in record.getMessage().lower():
                self._daemon.request_rescan("overflow")
        except Exception:  # noqa: BLE001 - a logging handler must never raise
            self.handleError(record)


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
        self.observer_kind = "polling" if config.polling else "inotify"
        self.batches = 0  # committed batches (for tests and status)
        self.rescans = 0  # full scans done, the startup reconcile included

        self._root = Path(config.root)
        self.root = self._root
        self._dirty: set[Path] = set()
        self._dirty_lock = threading.Lock()
        self._wake = threading.Event()
        self._rescan_reason: str | None = None
        self._pending: dict[str, _Pending] = {}
        self.bus: Bus | None = None
        self._observer: BaseObserver | None = None
        self._observer_restarted_at: float | None = None
        self._overflow_handler: _OverflowHandler | None = None
        self._worker: threading.Thread | None = None
        self._publisher: threading.Thread | None = None
        self._publisher_stop = threading.Event()
        self._watch_short = False
        self._export_wake = threading.Event()
        self._exports_dirty = False
        self._export_more = False  # the last refresh left changed runs for the next one
        self._last_export = 0.0
        self._heartbeat = time.monotonic()
        self._next_rescan = 0.0
        self._next_recheck = 0.0
        self._catalog_broken = False
        self._worker_error: str | None = None  # why the last worker round failed, if it did
        self._backoff = 0.0
        self._status_lock = threading.Lock()
        self._status: dict[str, Any] = {
            "pid": os.getpid(),
            "started_at": iso_utc(),
            "ready": False,
            "stopped_at": None,
            "observer": self.observer_kind,
            "root": str(self._root),
            "last_batch_at": None,
            "last_batch_n": 0,
            "last_batch_ms": None,
            "registered": 0,
            "rejected": 0,
            "pending": 0,
            "deleted": 0,
            "oldest_pending_lag_s": None,
            "snapshot_published_at": None,
            "generation": None,
            "degraded": None,
        }

    # ------------------------------------------------------------------ inputs (any thread)

    def mark_dirty(self, dirs: Iterable[Path]) -> None:
        """Queue directories for examination and wake the worker (called by the observer)."""
        keep = [d for d in dirs if not is_ignored(self._root, d)]
        if not keep:
            return
        with self._dirty_lock:
            self._dirty.update(keep)
        self._wake.set()

    def request_rescan(self, reason: str) -> None:
        """Ask the worker for a full rescan as soon as possible (overflow, observer restart)."""
        if reason == "overflow":
            log.warning("watch.overflow", root=str(self._root))
        self._rescan_reason = reason
        self._wake.set()

    @property
    def pending(self) -> dict[str, str]:
        """Pending run dirs and why (a copy)."""
        return {k: v.reason for k, v in list(self._pending.items())}

    # ------------------------------------------------------------------ lifecycle

    def run(self) -> None:
        """Start, reconcile, watch until ``stop_event`` is set, then stop cleanly."""
        cfg = self.config
        Path(cfg.root).mkdir(parents=True, exist_ok=True)
        self.bus = Bus.open(cfg, role="daemon")
        try:
            self._start_observer()
            self._overflow_handler = _OverflowHandler(self)
            wd_logger = logging.getLogger(OVERFLOW_LOGGER)
            wd_logger.addHandler(self._overflow_handler)
            if not wd_logger.isEnabledFor(logging.WARNING):
                wd_logger.setLevel(logging.WARNING)
            # Reconcile the whole root, then whatever the observer saw meanwhile.
            self._rescan_reason = "startup"
            self._tick()
            self._tick()
            self._publish()  # readers get a generation even if nothing changed
            self._refresh_counts()
            self._exports_dirty = True
            self._worker = threading.Thread(
                target=self._worker_main, name="quantbot-bus-worker", daemon=True
            )
            self._publisher = threading.Thread(
                target=self._publisher_main, name="quantbot-bus-publisher", daemon=True
            )
            self._worker.start()
            self._publisher.start()
            with self._status_lock:
                self._status["ready"] = True
            self._write_status()
            self.notifier.send("READY=1\nSTATUS=" + self._status_line())
            self.ready.set()
            log.info(
                "daemon.ready",
                root=str(cfg.root),
                observer=self.observer_kind,
                registered=self._status["registered"],
                pending=self._status["pending"],
            )
            self._supervise()
        finally:
            self._shutdown()

    def _supervise(self) -> None:
        interval = self.notifier.watchdog_interval()
        tick = IDLE_TICK_S if interval is None else min(IDLE_TICK_S, interval / 2)
        heartbeat_limit = max(IDLE_TICK_S * 3, 2 * interval) if interval else None
        next_ping = time.monotonic()
        last_status = time.monotonic()
        while not self.stop_event.wait(tick):
            self._check_observer()
            worker = self._worker
            if worker is None or not worker.is_alive():
                raise DaemonError("the worker thread died; see the log (worker.crashed)")
            now = time.monotonic()
            if interval is not None and heartbeat_limit is not None and now >= next_ping:
                if now - self._heartbeat <= heartbeat_limit and self._observer_alive():
                    self.notifier.send("WATCHDOG=1\nSTATUS=" + self._status_line())
                else:
                    log.warning(
                        "daemon.unhealthy",
                        worker_idle_s=round(now - self._heartbeat, 1),
                        observer_alive=self._observer_alive(),
                    )
                next_ping = now + interval
            self.notifier.retry()
            if now - last_status >= WRITE_INTERVAL_S:
                self._write_status()
                last_status = now

    def _shutdown(self) -> None:
        self.stop_event.set()
        self._wake.set()
        if self.ready.is_set():
            log.info("daemon.stopping")
        self.notifier.send("STOPPING=1\nSTATUS=stopping")
        if self._worker is not None:
            self._worker.join()
        if self._publisher is not None:
            self._publisher_stop.set()
            self._export_wake.set()
            self._publisher.join()
        self._stop_observer()
        if self._overflow_handler is not None:
            logging.getLogger(OVERFLOW_LOGGER).removeHandler(self._overflow_handler)
        if self.bus is not None:
            if not self._catalog_broken:
                with contextlib.suppress(Exception):
                    self._publish()
            self._status["ready"] = False
            self._status["stopped_at"] = iso_utc()
            with contextlib.suppress(OSError):
                self._write_status()
            self.bus.close()  # closes the catalog, then releases the state-dir lock
            self.bus = None
        self.notifier.close()
        log.info("daemon.stopped")

    # ------------------------------------------------------------------ observer

    def _new_observer(self, polling: bool) -> BaseObserver:
        if polling:
            return PollingObserver(timeout=self.config.poll_interval_s)
        return Observer()

    def _start_observer(self) -> None:
        # watchdog warns when `mkdir -p a/b` races its recursive watch setup (the callback is
        # re-added to the same watch: harmless). Under an "error" warnings filter that warning
        # would kill its inotify reader thread, so it is silenced here, and only it.
        warnings.filterwarnings(
            "ignore", message=r"Callback with id .* already exists", category=RuntimeWarning
        )
        polling = self.config.polling
        try:
            observer = self._new_observer(polling)
            observer.schedule(
                _EventHandler(self), str(self._root), recursive=True, event_filter=EVENT_FILTER
            )
            observer.start()
        except OSError as exc:
            if polling or exc.errno not in (errno.ENOSPC, errno.EMFILE):
                raise DaemonError(f"cannot watch {self._root}: {exc}") from exc
            log.error(
                "watch.limit",
                error=str(exc),
                advice="raise fs.inotify.max_user_watches / max_user_instances "
                "(sysctl), or run with --polling; falling back to polling now",
            )
            polling = True
            observer = self._new_observer(True)
            observer.schedule(
                _EventHandler(self), str(self._root), recursive=True, event_filter=EVENT_FILTER
            )
            observer.start()
        self.observer_kind = "polling" if polling else "inotify"
        self._status["observer"] = self.observer_kind
        self._observer = observer

    def _observer_alive(self) -> bool:
        """The observer thread, its emitters and (inotify) the shared reader thread are alive."""
        observer = self._observer
        if observer is None or not observer.is_alive():
            return False
        reader = getattr(observer, "_inotify_fd", None)  # watchdog 7: one reader thread per fd
        if isinstance(reader, threading.Thread) and not reader.is_alive():
            return False
        return all(emitter.is_alive() for emitter in list(observer.emitters))

    def _check_observer(self) -> None:
        if self._observer_alive() or self.stop_event.is_set():
            return
        now = time.monotonic()
        recent = self._observer_restarted_at
        if recent is not None and now - recent < OBSERVER_RESTART_WINDOW_S:
            raise DaemonError(
                "the filesystem observer died twice within "
                f"{OBSERVER_RESTART_WINDOW_S:.0f} s; exiting so the service manager restarts us"
            )
        log.error("watch.observer_died", observer=self.observer_kind, action="restart")
        self._stop_observer()
        self._start_observer()
        self._observer_restarted_at = now
        log.warning("watch.restarted", observer=self.observer_kind)
        self.request_rescan("observer_restart")

    def _stop_observer(self) -> None:
        observer = self._observer
        if observer is None:
            return
        with contextlib.suppress(Exception):
            observer.stop()
        with contextlib.suppress(Exception):
            if observer.is_alive():
                observer.join(timeout=10)
        self._observer = None

    # ------------------------------------------------------------------ worker

    def _worker_main(self) -> None:
        try:
            while not self.stop_event.is_set():
                self._heartbeat = time.monotonic()
                woke = self._wake.wait(self._next_timeout())
                if self.stop_event.is_set():
                    break
                if woke and self.config.settle_ms > 0:
                    time.sleep(self.config.settle_ms / 1000)
                self._wake.clear()
                self._tick()
                if self._backoff:  # failing (e.g. disk full): wait, still alive for the watchdog
                    until = time.monotonic() + self._backoff
                    while not self.stop_event.wait(min(IDLE_TICK_S, until - time.monotonic())):
                        self._heartbeat = time.monotonic()
                        if time.monotonic() >= until:
                            break
        except Exception:
            log.exception("worker.crashed")
            raise

    def _next_timeout(self) -> float:
        now = time.monotonic()
        timeout = min(IDLE_TICK_S, max(0.0, self._next_rescan - now))
        if self._pending:
            timeout = min(timeout, max(0.0, self._next_recheck - now))
        return timeout

    def _take_dirty(self) -> set[Path]:
        with self._dirty_lock:
            if len(self._dirty) <= self.config.max_batch:
                taken, self._dirty = self._dirty, set()
            else:
                taken = set()
                for _ in range(self.config.max_batch):
                    taken.add(self._dirty.pop())
                self._wake.set()  # the rest forms the next batch
        return taken

    def _tick(self) -> None:
        """One round of work: a full scan, or the dirty dirs (+ due pending rechecks)."""
        try:
            if self._catalog_broken:
                self._reopen_catalog()
            now = time.monotonic()
            reason = self._rescan_reason
            if reason is None and now >= self._next_rescan and self._next_rescan > 0:
                reason = "timer"
            if reason is not None:
                self._rescan_reason = None
                with self._dirty_lock:
                    self._dirty.clear()  # the scan covers them; later events stay queued
                self._full_scan(reason)
            else:
                dirs = self._take_dirty()  # the Bus maps each to its run dir (ingest)
                if self._pending and now >= self._next_recheck:
                    dirs.update(Path(p) for p in self._pending)
                    self._next_recheck = now + self.config.pending_recheck_s
                if dirs:
                    self._examine(dirs)
            self._publish()  # when due: e.g. a failed publication is retried
            bus = self._bus()
            if bus.degraded is not None:
                raise DaemonError(bus.degraded)
            self._backoff = 0.0
            if self._worker_error is not None:
                self._worker_error = None
                self._note_publication()
        except Exception as exc:  # noqa: BLE001 - log, keep the items, retry with back-off
            self._backoff = min(30.0, max(0.5, self._backoff * 2))
            log.error(
                "batch.failed",
                error=f"{type(exc).__name__}: {exc}",
                retry_in_s=self._backoff,
                exc_info=not isinstance(exc, BusError),  # a traceback for the unexpected
            )
            owner = self.bus
            why = (owner.degraded if owner is not None else None) or str(exc)
            if not why.startswith("publish failed"):
                self._catalog_broken = True  # not only the publication: reopen the catalog
            self._rescan_reason = self._rescan_reason or "retry"
            self._worker_error = why
            self._note_publication()

    def _bus(self) -> Bus:
        if self.bus is None:
            raise DaemonError("the daemon is not running")
        return self.bus

    def _reopen_catalog(self) -> None:
        self._bus().reopen_catalog()
        self._catalog_broken = False

    def _full_scan(self, reason: str) -> None:
        t0 = time.monotonic()
        outcome = self._bus().full_scan()
        self._heartbeat = time.monotonic()
        self._pending_forget(None, outcome.pending)
        n = self._commit(outcome.batch, outcome.pending, t0)
        self.rescans += 1
        self._next_rescan = time.monotonic() + self.config.rescan_interval_s
        self._check_watch_coverage()
        log.info(
            "rescan.done",
            reason=reason,
            n=n,
            pending=len(self._pending),
            ms=round((time.monotonic() - t0) * 1000, 1),
        )

    def _check_watch_coverage(self) -> None:
        """Log ``watch.limit`` when inotify holds fewer watches than there are run directories.

        watchdog 7.1 ignores ENOSPC when it adds a watch below the root, so reaching the watch
        limit after startup is otherwise silent; those directories are then only seen by the
        timed rescans. Logged once per episode (again after coverage came back)."""
        if self.observer_kind != "inotify":
            return
        held = _inotify_watches_held()
        runs = int(self._status.get("registered") or 0)
        short = held is not None and held < runs + 1  # the root and every run dir need one
        if short and not self._watch_short:
            log.warning(
                "watch.limit",
                watches_held=held,
                run_dirs=runs,
                advice="inotify watch limit reached: new runs below unwatched directories are "
                f"found only by the rescan every {self.config.rescan_interval_s:g} s; raise "
                "fs.inotify.max_user_watches (sysctl) or run with --polling",
            )
        self._watch_short = short

    def _examine(self, dirs: set[Path]) -> None:
        t0 = time.monotonic()
        outcome = self._bus().examine(sorted(dirs))
        self._heartbeat = time.monotonic()
        self._pending_forget(dirs, outcome.pending)
        self._commit(outcome.batch, outcome.pending, t0)

    def _pending_forget(self, covered: set[Path] | None, still: dict[str, str]) -> None:
        """Drop pending entries the examination covered that are no longer incomplete."""
        covered_keys = None if covered is None else {str(d) for d in covered}
        for key in list(self._pending):
            if key in still:
                continue
            if covered_keys is None or key in covered_keys:
                del self._pending[key]
                continue
            for parent in Path(key).parents:
                if str(parent) in covered_keys:
                    del self._pending[key]
                    break
                if parent == self._root:
                    break

    def _commit(self, batch: Batch, pending: dict[str, str], t0: float) -> int:
        """Pending bookkeeping (the Bus's pending rule), then one batch, committed and
        published by the Bus; status and log. Returns the batch size."""
        bus = self._bus()
        now = time.monotonic()
        for run_dir, why in pending.items():
            entry = self._pending.get(run_dir)
            if entry is None:
                self._pending[run_dir] = _Pending(now, time.time(), why)
                log.info("run.pending", run_dir=run_dir, reason=why)
                if len(self._pending) == 1:
                    self._next_recheck = now + self.config.pending_recheck_s
            else:
                entry.reason = why
        still = bus.expire_pending(pending, batch)
        for run_dir in pending:
            if run_dir not in still:
                self._pending.pop(run_dir, None)  # rejected: it is in the batch
        if len(batch) == 0:
            self._update_pending_status()
            return 0
        # apply_batch logs run.registered/updated/deleted/rejected and batch.committed.
        result = bus.commit(batch)
        self._heartbeat = time.monotonic()
        counts = bus.counts()
        changed = bool(result.registered or result.updated or result.deleted or result.rejected)
        if changed:
            self._exports_dirty = True
            self._export_wake.set()
        ms = (time.monotonic() - t0) * 1000
        self.batches += 1
        log.debug(
            "batch.published",
            n=len(batch),
            ms=round(ms, 1),
            changed=changed,
            pending=len(self._pending),
        )
        with self._status_lock:
            self._status.update(
                last_batch_at=iso_utc(),
                last_batch_n=len(batch),
                last_batch_ms=round(ms, 1),
                registered=counts.get("runs", 0),
                rejected=counts.get("rejections", 0),
                deleted=counts.get("deleted", 0),
            )
        self._note_publication()
        self._update_pending_status()
        self._write_status()
        if changed:
            self.notifier.send("STATUS=" + self._status_line())
        return len(batch)

    def _publish(self) -> None:
        """Publish if due (the Bus keeps a failure as ``degraded`` and retries when due)."""
        bus = self._bus()
        if bus.publish_due:
            bus.try_publish()
            self._note_publication()

    def _note_publication(self) -> None:
        bus = self.bus
        if bus is None:
            return
        m = bus.publication.manifest
        with self._status_lock:
            if m.gen and m.gen != self._status.get("generation"):
                self._status["snapshot_published_at"] = iso_utc()
                self._status["generation"] = m.gen
            degraded = bus.degraded or self._worker_error
            changed = self._status.get("degraded") != degraded
            self._status["degraded"] = degraded
        if changed:
            self._write_status()

    def _refresh_counts(self) -> None:
        bus = self.bus
        if bus is None or bus.catalog is None or self._catalog_broken:
            return
        counts = bus.counts()
        with self._status_lock:
            self._status.update(
                registered=counts.get("runs", 0),
                rejected=counts.get("rejections", 0),
                deleted=counts.get("deleted", 0),
            )
        self._update_pending_status()

    def _update_pending_status(self) -> None:
        now = time.monotonic()
        oldest = min((p.first_seen for p in list(self._pending.values())), default=None)
        with self._status_lock:
            self._status["pending"] = len(self._pending)
            self._status["oldest_pending_lag_s"] = (
                None if oldest is None else round(now - oldest, 3)
            )

    # ------------------------------------------------------------------ exports

    def _publisher_main(self) -> None:
        interval = self.config.export_interval_s
        files_due_at: float | None = None  # when held-back export files become due
        while True:
            timeout = IDLE_TICK_S
            if files_due_at is not None:
                timeout = min(timeout, max(0.0, files_due_at - time.monotonic()))
            self._export_wake.wait(timeout)
            self._export_wake.clear()
            stopping = self._publisher_stop.is_set()
            refreshed = False
            if self._exports_dirty:
                wait = self._last_export + interval - time.monotonic()
                if wait > 0 and not self.stop_event.is_set() and not self._export_more:
                    self.stop_event.wait(wait)  # coalesce a burst into one refresh
                self._exports_dirty = False
                refreshed = self._refresh_exports()
                if self._export_more and not stopping:
                    # A catch-up: one bounded chunk per round, each published and its files
                    # written (on their cadence), so readers see it advance; next chunk at once.
                    self._exports_dirty = True
                    self._export_wake.set()
            due = files_due_at is not None and time.monotonic() >= files_due_at
            if refreshed or due or stopping:
                nxt = self._bus().write_files(force=stopping)
                files_due_at = None if nxt is None else time.monotonic() + float(nxt)
            if refreshed and not stopping:
                self._bus().compact()
            self._note_publication()
            if stopping:  # the final flush was tried once (a failed one is not retried)
                return

    def _refresh_exports(self) -> bool:
        """One bounded refresh of the export state, then a publication carrying it. ``more``
        in its status (kept in ``_export_more``) asks the publisher for another round.
        Returns whether the refresh went through."""
        self._last_export = time.monotonic()
        t0 = time.monotonic()
        bus = self._bus()
        if bus.catalog is None or self._catalog_broken:
            self._exports_dirty = True  # the worker reopens it (and logs why); then we go on
            return False
        try:
            self._export_more = False
            status = bus.refresh_exports()
            self._export_more = bool(status.get("more"))
            if bus.publish_due:
                bus.publish()
        except Exception as exc:  # noqa: BLE001 - exports never stop registration
            # e.g. disk full: try again after the next interval, even if no run changes.
            self._exports_dirty = True
            log.error("export.failed", error=f"{type(exc).__name__}: {exc}")
            return False
        log.debug("export.refreshed", ms=round((time.monotonic() - t0) * 1000, 1))
        return True

    # ------------------------------------------------------------------ status

    def _status_line(self) -> str:
        s = self._status
        return f"registered {s['registered']}, rejected {s['rejected']}, pending {s['pending']}"

    def _write_status(self) -> None:
        with self._status_lock:
            self._status["updated_at"] = iso_utc()
            data = dict(self._status)
            try:
                write_status(self.config.status_path, data)
            except OSError as exc:
                log.warning("status.failed", error=str(exc), path=str(self.config.status_path))


def _inotify_watches_held() -> int | None:
    """inotify watches this process holds (``inotify wd:`` lines in /proc/self/fdinfo)."""
    total = 0
    try:
        entries = list(Path("/proc/self/fdinfo").iterdir())
    except OSError:
        return None
    for info in entries:
        try:
            total += info.read_text().count("inotify wd:")
        except OSError:
            continue
    return total


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
    Daemon(config, stop_event=stop).run()
