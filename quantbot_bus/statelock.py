"""The state-dir lock: ``state/daemon.lock``, held by the one process that may write the catalog.

:meth:`StateLock.acquire` takes it with ``flock`` (non-blocking) and writes ``"<pid> <role>"``
into it (role: ``daemon``, ``sync`` or ``rebuild``); a second daemon, a ``sync`` or a ``rebuild``
while another process holds it fails with :class:`~quantbot_bus.errors.BusyError` naming that pid
and what to do instead. ``quantbot-bus doctor`` reads the holder from ``/proc/locks``.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .errors import BusyError

_ADVICE = {
    "daemon": "stop it first (systemctl stop quantbot-bus, or Ctrl-C) or use another --state-dir",
    "sync": "the running daemon already keeps the catalog in sync (`quantbot-bus status` shows "
    "its progress); run `sync` only when no daemon runs",
    "rebuild": "stop the daemon first (systemctl stop quantbot-bus), then run `rebuild`",
}


class StateLock:
    """``state/daemon.lock``: held (``flock``) by the one process that may write the catalog."""

    def __init__(self, path: Path, role: str) -> None:
        self.path = Path(path)
        self.role = role
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").split()
            os.close(fd)
            pid = holder[0] if holder else "unknown"
            other = holder[1] if len(holder) > 1 else "daemon"
            raise BusyError(
                f"the catalog in {self.path.parent} is in use by a running quantbot-bus {other} "
                f"(pid {pid}); {_ADVICE.get(self.role, _ADVICE['sync'])}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {self.role}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock; the file stays
            self._fd = None
