"""READY over a real notify socket: :class:`NotifyListener`, the bench's stand-in for
systemd's ``NOTIFY_SOCKET``."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path


class NotifyListener:
    """An AF_UNIX datagram socket standing in for systemd's ``NOTIFY_SOCKET``.

    A thread drains it all the time, as systemd does: a datagram socket nobody reads fills up and
    then blocks the sender (the daemon sends STATUS= after every batch).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.unlink(missing_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._drain, name="notify-listener", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while not self._closed:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.perf_counter()
            with self._cond:
                self.messages.append((now, data.decode("utf-8", "replace")))
                self._cond.notify_all()

    def _find(self, line: str) -> float | None:
        for t, msg in self.messages:
            if line in msg.split("\n"):
                return t
        return None

    def wait_for(self, line: str, timeout: float) -> float | None:
        """Block until a datagram holding ``line`` arrived; its perf_counter time, or None."""
        deadline = time.perf_counter() + timeout
        with self._cond:
            while True:
                found = self._find(line)
                left = deadline - time.perf_counter()
                if found is not None or left <= 0:
                    return found
                self._cond.wait(left)

    def close(self) -> None:
        self._closed = True
        self._thread.join(2)
        self.sock.close()
        self.path.unlink(missing_ok=True)
