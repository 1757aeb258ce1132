"""The dirty set: what the observer hands to the worker.

A de-duplicated set of directories to examine, the reason for a full rescan if one was asked
for, and the event that wakes the worker. Filled from any thread (the observer's handler, the
overflow log handler, the supervisor); emptied by the worker.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path

from ..ignore import is_ignored
from ..log import get_logger

log = get_logger(__name__)


class DirtySet:
    """Directories to examine below ``root``, a pending rescan request, and the worker's wake."""

    def __init__(self, root: Path) -> None:
        self.root = root
        #: Set when there is work (dirty directories, a rescan request, a stop).
        self.wake = threading.Event()
        self._dirs: set[Path] = set()
        self._lock = threading.Lock()
        self._rescan_reason: str | None = None

    def mark(self, dirs: Iterable[Path]) -> None:
        """Queue directories for examination (ignored names dropped) and wake the worker."""
        keep = [d for d in dirs if not is_ignored(self.root, d)]
        if not keep:
            return
        with self._lock:
            self._dirs.update(keep)
        self.wake.set()

    def take(self, max_batch: int) -> set[Path]:
        """Up to ``max_batch`` directories, removed from the set; the rest wakes the worker again
        (the next batch)."""
        with self._lock:
            if len(self._dirs) <= max_batch:
                taken, self._dirs = self._dirs, set()
            else:
                taken = set()
                for _ in range(max_batch):
                    taken.add(self._dirs.pop())
                self.wake.set()  # the rest forms the next batch
        return taken

    def clear(self) -> None:
        """Forget every dirty directory (a full scan covers them)."""
        with self._lock:
            self._dirs.clear()

    def request_rescan(self, reason: str) -> None:
        """Ask the worker for a full rescan as soon as possible (overflow, observer restart)."""
        if reason == "overflow":
            log.warning("watch.overflow", root=str(self.root))
        with self._lock:
            self._rescan_reason = reason
        self.wake.set()

    def schedule_rescan(self, reason: str, *, keep_earlier: bool = False) -> None:
        """A full rescan at the worker's next round, without waking it. ``keep_earlier``: a
        reason asked for already stands."""
        with self._lock:
            if not (keep_earlier and self._rescan_reason):
                self._rescan_reason = reason

    def take_rescan(self) -> str | None:
        """The reason of the rescan asked for, if any (the request is then consumed)."""
        with self._lock:
            reason, self._rescan_reason = self._rescan_reason, None
        return reason
