"""The systemd notify protocol (``sd_notify``), in a few lines over an AF_UNIX datagram socket.

Environment (set by systemd for ``Type=notify`` services; absent otherwise, then every call is a
no-op):

- ``NOTIFY_SOCKET``: the socket path, or ``@name`` for an abstract socket.
- ``WATCHDOG_USEC``: the watchdog period in microseconds (``WatchdogSec=``); the daemon pings
  ``WATCHDOG=1`` at half of it.
- ``WATCHDOG_PID``: if set, the watchdog is meant for that pid only (ignored by other processes).

Unlike the ``sdnotify`` package, a message that cannot be sent (socket missing or not bound yet)
is not dropped when it matters: ``READY=1`` and ``STOPPING=1`` are kept and sent again with the
next :meth:`Notifier.send` or :meth:`Notifier.retry`. Sending never raises; the first failure of
a streak is logged once (``notify.failed``).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Mapping

from ..log import get_logger

log = get_logger(__name__)

_STICKY = ("READY=1", "STOPPING=1")


class Notifier:
    """Send ``KEY=VALUE`` lines to the service manager. Thread-safe; never raises."""

    def __init__(
        self,
        socket_path: str | None,
        watchdog_usec: int | None = None,
    ) -> None:
        self.socket_path = socket_path or None
        self.watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self._sock: socket.socket | None = None
        self._owed: list[str] = []  # sticky lines whose send failed
        self._failing = False
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        """Read ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` (see module doc)."""
        env = os.environ if env is None else env
        usec: int | None = None
        raw = env.get("WATCHDOG_USEC", "").strip()
        if raw.isdigit():
            usec = int(raw)
        pid = env.get("WATCHDOG_PID", "").strip()
        if pid and pid != str(os.getpid()):
            usec = None  # the watchdog belongs to another process
        return cls(env.get("NOTIFY_SOCKET") or None, usec)

    @property
    def enabled(self) -> bool:
        return self.socket_path is not None

    def watchdog_interval(self) -> float | None:
        """Seconds between ``WATCHDOG=1`` pings (half of ``WATCHDOG_USEC``), None if disabled."""
        return None if self.watchdog_usec is None else self.watchdog_usec / 2_000_000

    def _address(self) -> str:
        assert self.socket_path is not None
        if self.socket_path.startswith("@"):
            return "\0" + self.socket_path[1:]
        return self.socket_path

    def send(self, state: str) -> bool:
        """Send ``state`` (newline-separated assignments). True if it was delivered."""
        if self.socket_path is None:
            return False
        with self._lock:
            lines = [*self._owed, *(x for x in state.split("\n") if x and x not in self._owed)]
            message = "\n".join(lines)
            try:
                if self._sock is None:
                    # Non-blocking: a receiver that stops reading (a full socket buffer) must
                    # never hang the worker; the send fails with EAGAIN and is retried later.
                    self._sock = socket.socket(
                        socket.AF_UNIX,
                        socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK,
                    )
                self._sock.sendto(message.encode(), self._address())
            except OSError as exc:
                if self._sock is not None:
                    self._sock.close()
                    self._sock = None
                self._owed = [x for x in lines if x in _STICKY]
                if not self._failing:
                    self._failing = True
                    log.warning(
                        "notify.failed",
                        socket=self.socket_path,
                        error=str(exc),
                        will_retry=bool(self._owed),
                    )
                return False
            if self._failing:
                log.info("notify.recovered", socket=self.socket_path)
            self._failing = False
            self._owed = []
            return True

    def retry(self) -> None:
        """Send again what is owed (READY/STOPPING that failed earlier); no-op otherwise."""
        if self._owed:
            self.send("")

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None
