"""The daemon's status file (``Config.status_path``): written atomically, read by ``status``.

The daemon rewrites it (temp file in the same directory, fsync, ``os.replace``) after every batch
and every few seconds while idle, so a reader never sees a half-written file. Fields (JSON object):

==========================  ==================================================================
``pid``                     the daemon's process id
``started_at``              ISO-8601 UTC, when the daemon started
``updated_at``              ISO-8601 UTC, when this file was written
``ready``                   true once the startup reconcile is done (false again after stop)
``stopped_at``              ISO-8601 UTC of a clean stop, else null
``observer``                ``inotify`` or ``polling``
``root``                    the artifacts root being watched
``last_batch_at``           ISO-8601 UTC of the last committed batch, or null
``last_batch_n``            items (valid + gone + rejected) in that batch
``last_batch_ms``           milliseconds it took (examine + commit + publish)
``registered``              live runs in the catalog
``rejected``                open rejections
``pending``                 runs whose metadata.json exists but whose files are not complete
``deleted``                 soft-deleted runs
``oldest_pending_lag_s``    seconds since the oldest pending run was first seen, or null
``snapshot_published_at``   ISO-8601 UTC of the last publication readers see, or null
``generation``              the number of that publication (``exports/gen/<N>``), or null
``degraded``                why the last commit or publication failed (e.g. disk full), or null
==========================  ==================================================================

:func:`read_status` adds ``pid_alive`` (is that process still there), ``age_s`` (seconds since
``updated_at``) and ``state``: ``running`` (pid alive and file fresh), ``degraded`` (running, but ``degraded`` says
what fails: readers keep the last good publication, the daemon retries), ``starting`` (alive, not
ready yet), ``stale`` (alive but not written for :data:`STALE_AFTER_S`), ``stopped`` (clean stop)
or ``dead`` (the process is gone without a clean stop).

:class:`DaemonStatus` is the running daemon's copy of these fields, shared by its threads.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import math
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CatalogMissingError
from ..fsutil import write_atomic
from ..log import get_logger
from ..timeutil import age_s, iso_utc

if TYPE_CHECKING:
    from ..pipeline import Bus

log = get_logger(__name__)

#: A running daemon rewrites the file at least this often (seconds).
WRITE_INTERVAL_S = 5.0
#: Older than this while the pid is alive: reported as ``stale``.
STALE_AFTER_S = 30.0
#: The status file's size (padded): rewritable in place when the disk is full.
STATUS_SIZE = 4096


class StatusMissingError(CatalogMissingError):
    """There is no status file: the daemon has never run with this state directory."""


def write_status(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` atomically (temp + fsync + ``os.replace``).

    The text is padded with spaces to :data:`STATUS_SIZE` bytes, so that on a full disk
    (ENOSPC: exactly when the status matters) it is written over the old file in place, in
    blocks the file already has; a reader that catches that write half done retries
    (:func:`read_status`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"
    text = text.ljust(STATUS_SIZE - 1) + "\n" if len(text) < STATUS_SIZE else text
    try:
        write_atomic(path, text)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        raw = text.encode()
        fd = os.open(path, os.O_WRONLY)
        try:
            if os.fstat(fd).st_size != len(raw):
                raise  # no room to grow it: the ENOSPC stands
            os.pwrite(fd, raw, 0)
        finally:
            os.close(fd)


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists (signal 0)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_status(path: Path, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """Read the status file and add ``pid_alive``, ``age_s`` and ``state`` (see module doc).

    Raises :class:`StatusMissingError` when the file does not exist or cannot be read.
    """
    for attempt in range(3):
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise StatusMissingError(
                f"no status file at {path}: the daemon has never run with this state dir "
                f"(start it with `quantbot-bus daemon`, or pass the right --state-dir/--config)"
            ) from None
        except OSError as exc:  # a permission, a directory in its place: say so, no traceback
            raise StatusMissingError(
                f"cannot read the status file {path} ({exc.strerror or exc}): run this as the "
                "daemon's user, or give this user read access to the state dir"
            ) from None
        try:
            data = json.loads(text)
            break
        except json.JSONDecodeError as exc:  # an in-place write (disk full) caught half done
            if attempt == 2:
                raise StatusMissingError(f"status file {path} is not valid JSON ({exc})") from None
            time.sleep(0.05)
    if not isinstance(data, dict):
        raise StatusMissingError(f"status file {path} does not hold a JSON object")
    updated = data.get("updated_at")
    elapsed = age_s(updated, now) if isinstance(updated, str) else math.inf
    age = None if math.isinf(elapsed) else max(0.0, elapsed)
    pid = data.get("pid")
    alive = isinstance(pid, int) and pid_alive(pid)
    if data.get("stopped_at"):
        state = "stopped"
    elif not alive:
        state = "dead"
    elif age is None or age > STALE_AFTER_S:
        state = "stale"
    elif not data.get("ready"):
        state = "starting"
    elif data.get("degraded"):
        state = "degraded"
    else:
        state = "running"
    data["pid_alive"] = alive
    data["age_s"] = None if age is None else round(age, 3)
    data["state"] = state
    return data


class DaemonStatus:
    """The running daemon's status fields (see module doc) behind one lock, and their file.

    Every thread of the daemon updates it; :meth:`write` writes it to ``path`` under the same lock
    (so a later state is never overwritten by an earlier one)."""

    def __init__(self, path: Path, *, root: Path | str, observer: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._worker_error: str | None = None  # why the last worker round failed, if it did
        self._data: dict[str, Any] = {
            "pid": os.getpid(),
            "started_at": iso_utc(),
            "ready": False,
            "stopped_at": None,
            "observer": observer,
            "root": str(root),
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

    def get(self, key: str) -> Any:
        return self._data.get(key)

    def snapshot(self) -> dict[str, Any]:
        """A copy of every field, as the status file would hold them now."""
        with self._lock:
            return dict(self._data)

    def update(self, **fields: Any) -> None:
        with self._lock:
            self._data.update(fields)

    def set_counts(self, counts: dict[str, int], **fields: Any) -> None:
        """The catalog's counts (:meth:`Bus.counts`), and any other ``fields``."""
        self.update(
            registered=counts.get("runs", 0),
            rejected=counts.get("rejections", 0),
            deleted=counts.get("deleted", 0),
            **fields,
        )

    def line(self) -> str:
        """The one-line summary sent to systemd (``STATUS=``)."""
        s = self._data
        return f"registered {s['registered']}, rejected {s['rejected']}, pending {s['pending']}"

    def set_worker_error(self, why: str | None) -> None:
        """Why the worker's last round failed (None: it went through); part of ``degraded``."""
        with self._lock:
            self._worker_error = why

    @property
    def worker_error(self) -> str | None:
        return self._worker_error

    def note_publication(self, bus: Bus) -> None:
        """Take the generation and the ``degraded`` reason from ``bus``; write the file when
        ``degraded`` changed."""
        m = bus.publication.manifest
        with self._lock:
            if m.gen and m.gen != self._data.get("generation"):
                self._data["snapshot_published_at"] = iso_utc()
                self._data["generation"] = m.gen
            degraded = bus.degraded or self._worker_error
            changed = self._data.get("degraded") != degraded
            self._data["degraded"] = degraded
        if changed:
            self.write()

    def write(self) -> None:
        """Stamp ``updated_at`` and write the file; a failure is logged (``status.failed``)."""
        with self._lock:
            self._data["updated_at"] = iso_utc()
            data = dict(self._data)
            try:
                write_status(self.path, data)
            except OSError as exc:
                log.warning("status.failed", error=str(exc), path=str(self.path))
