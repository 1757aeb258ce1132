"""The filesystem observer: watchdog (inotify, or polling with ``--polling``) over the root.

Its event handler maps each event to a directory (a file event → its parent, a directory event →
the directory, a move → both ends), drops ignored names and marks it in the :class:`DirtySet`. It
never raises: an exception in a handler silently kills watchdog's dispatch thread. watchdog
reports an inotify queue overflow only as a WARNING from :data:`OVERFLOW_LOGGER`; a logging
handler turns it into a full rescan.

:class:`Watcher` starts the observer (falling back to polling when inotify's limits are reached),
says whether it is alive, restarts it once when it died (a second death within
:data:`OBSERVER_RESTART_WINDOW_S` raises :class:`DaemonError`: the process exits non-zero and
systemd starts a fresh one) and checks that inotify holds a watch for every run directory.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
import warnings
from pathlib import Path

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

from ..config import Config
from ..errors import DaemonError
from ..ignore import is_ignored
from ..log import get_logger
from .dirty import DirtySet
from .status import DaemonStatus

log = get_logger(__name__)

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


class _EventHandler(FileSystemEventHandler):
    """Maps every event to directories and marks them dirty. Never raises."""

    def __init__(self, dirty: DirtySet) -> None:
        self._dirty = dirty

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            paths = [event.src_path]
            if event.dest_path:
                paths.append(event.dest_path)
            dirs: list[Path] = []
            for raw in paths:
                path = Path(os.fsdecode(raw))
                if not raw or is_ignored(self._dirty.root, path):
                    continue  # hidden names, *.tmp, *.partial: never read, never a trigger
                dirs.append(path if event.is_directory else path.parent)
            if dirs:
                self._dirty.mark(dirs)
        except Exception:  # noqa: BLE001 - a raising handler kills watchdog's dispatch thread
            with contextlib.suppress(Exception):
                log.exception("watch.handler_error", event=repr(event))


class _OverflowHandler(logging.Handler):
    """Turns watchdog's queue-overflow WARNING into a rescan request."""

    def __init__(self, dirty: DirtySet) -> None:
        super().__init__(level=logging.WARNING)
        self._dirty = dirty

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if "overflow" in record.getMessage().lower():
                self._dirty.request_rescan("overflow")
        except Exception:  # noqa: BLE001 - a logging handler must never raise
            self.handleError(record)


class Watcher:
    """The observer over ``config.root`` feeding ``dirty``; its kind goes into ``status``."""

    def __init__(self, config: Config, dirty: DirtySet, status: DaemonStatus) -> None:
        self.config = config
        self.root = Path(config.root)
        self.kind = "polling" if config.polling else "inotify"
        #: The running watchdog observer (None before :meth:`start` and after :meth:`stop`).
        self.observer: BaseObserver | None = None
        self._dirty = dirty
        self._status = status
        self._restarted_at: float | None = None
        self._overflow_handler: _OverflowHandler | None = None
        self._short = False  # inotify holds fewer watches than there are run directories

    def start(self) -> None:
        """Start the observer, then listen for watchdog's overflow warning."""
        self._start_observer()
        self._overflow_handler = _OverflowHandler(self._dirty)
        wd_logger = logging.getLogger(OVERFLOW_LOGGER)
        wd_logger.addHandler(self._overflow_handler)
        if not wd_logger.isEnabledFor(logging.WARNING):
            wd_logger.setLevel(logging.WARNING)

    def stop(self) -> None:
        """Stop the observer and the overflow listener."""
        self._stop_observer()
        if self._overflow_handler is not None:
            logging.getLogger(OVERFLOW_LOGGER).removeHandler(self._overflow_handler)

    def alive(self) -> bool:
        """The observer thread, its emitters and (inotify) the shared reader thread are alive."""
        observer = self.observer
        if observer is None or not observer.is_alive():
            return False
        reader = getattr(observer, "_inotify_fd", None)  # watchdog 7: one reader thread per fd
        if isinstance(reader, threading.Thread) and not reader.is_alive():
            return False
        return all(emitter.is_alive() for emitter in list(observer.emitters))

    def check(self) -> None:
        """Restart a dead observer and ask for a full rescan; a second death within
        :data:`OBSERVER_RESTART_WINDOW_S` raises :class:`DaemonError`."""
        if self.alive():
            return
        now = time.monotonic()
        recent = self._restarted_at
        if recent is not None and now - recent < OBSERVER_RESTART_WINDOW_S:
            raise DaemonError(
                "the filesystem observer died twice within "
                f"{OBSERVER_RESTART_WINDOW_S:.0f} s; exiting so the service manager restarts us"
            )
        log.error("watch.observer_died", observer=self.kind, action="restart")
        self._stop_observer()
        self._start_observer()
        self._restarted_at = now
        log.warning("watch.restarted", observer=self.kind)
        self._dirty.request_rescan("observer_restart")

    def check_coverage(self, run_dirs: int) -> None:
        """Log ``watch.limit`` when inotify holds fewer watches than there are run directories.

        watchdog 7.1 ignores ENOSPC when it adds a watch below the root, so reaching the watch
        limit after startup is otherwise silent; those directories are then only seen by the
        timed rescans. Logged once per episode (again after coverage came back)."""
        if self.kind != "inotify":
            return
        held = _inotify_watches_held()
        short = held is not None and held < run_dirs + 1  # the root and every run dir need one
        if short and not self._short:
            log.warning(
                "watch.limit",
                watches_held=held,
                run_dirs=run_dirs,
                advice="inotify watch limit reached: new runs below unwatched directories are "
                f"found only by the rescan every {self.config.rescan_interval_s:g} s; raise "
                "fs.inotify.max_user_watches (sysctl) or run with --polling",
            )
        self._short = short

    def _new_observer(self, polling: bool) -> BaseObserver:
        observer = PollingObserver(timeout=self.config.poll_interval_s) if polling else Observer()
        observer.schedule(
            _EventHandler(self._dirty), str(self.root), recursive=True, event_filter=EVENT_FILTER
        )
        return observer

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
            observer.start()
        except OSError as exc:
            if polling or exc.errno not in (errno.ENOSPC, errno.EMFILE):
                raise DaemonError(f"cannot watch {self.root}: {exc}") from exc
            log.error(
                "watch.limit",
                error=str(exc),
                advice="raise fs.inotify.max_user_watches / max_user_instances "
                "(sysctl), or run with --polling; falling back to polling now",
            )
            polling = True
            observer = self._new_observer(True)
            observer.start()
        self.kind = "polling" if polling else "inotify"
        self._status.update(observer=self.kind)
        self.observer = observer

    def _stop_observer(self) -> None:
        observer = self.observer
        if observer is None:
            return
        with contextlib.suppress(Exception):
            observer.stop()
        with contextlib.suppress(Exception):
            if observer.is_alive():
                observer.join(timeout=10)
        self.observer = None


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
