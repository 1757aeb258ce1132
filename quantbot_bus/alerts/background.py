"""A sink that delivers on its own thread from a bounded queue: the base of the webhook and the
command hook, so a slow or dead receiver never holds up the caller (the daemon's loop).

:meth:`BackgroundSink.send` only queues (a full queue drops its oldest notification, logged as
``alert.dropped``); the thread takes them in order and calls :meth:`deliver`, which may wait
between attempts with :meth:`pause` (cut short by :meth:`close`). :meth:`close` lets the thread
deliver what is queued until its timeout, then stops it; what is left is logged as dropped.
Every notification dropped unsent, and every one a subclass gives up on through :meth:`lost`, is
handed to ``on_lost`` (the :class:`~.alerter.Alerter` keeps them in its outbox: :mod:`.outbox`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from ..log import get_logger
from .model import Notification

log = get_logger("quantbot_bus.alerts")


class BackgroundSink:
    """Queue + one thread; subclasses implement :meth:`deliver` (and set ``name``)."""

    name = "background"

    def __init__(self, queue_size: int) -> None:
        self.queue_size = queue_size
        self.delivered = 0  # notifications delivered
        self.failed = 0  # notifications given up on (after their retries)
        self.dropped = 0  # notifications dropped unsent (queue full, or closed)
        self._items: deque[Notification] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._deadline: float | None = None  # time.monotonic() at which close() gives up
        self._busy = False
        #: called with each notification dropped unsent or given up on (see :meth:`lost`)
        self.on_lost: Callable[[Notification], None] | None = None
        self._thread = threading.Thread(target=self._run, name=f"alerts-{self.name}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ caller side

    def send(self, note: Notification) -> None:
        """Queue ``note``; returns at once."""
        with self._cond:
            if self._closing:
                self.dropped += 1
                log.warning("alert.dropped", sink=self.name, key=note.key, reason="sink closed")
                self.lost(note)
                return
            if len(self._items) >= self.queue_size:
                old = self._items.popleft()
                self.dropped += 1
                log.warning(
                    "alert.dropped",
                    sink=self.name,
                    key=old.key,
                    status=old.status,
                    reason="queue full",
                    queue_size=self.queue_size,
                )
                self.lost(old)
            self._items.append(note)
            self._cond.notify_all()

    def idle(self) -> bool:
        """Nothing queued and nothing being delivered."""
        with self._cond:
            return not self._items and not self._busy

    def start_close(self, timeout: float) -> None:
        """Take no more notifications; deliver what is queued within ``timeout`` seconds."""
        with self._cond:
            if not self._closing:
                self._closing = True
                self._deadline = time.monotonic() + max(0.0, timeout)
            self._cond.notify_all()

    def close(self, timeout: float) -> None:
        """Deliver what is queued for at most ``timeout`` seconds (or until the deadline of an
        earlier :meth:`start_close`), then stop the thread."""
        self.start_close(timeout)
        left = self.remaining() or 0.0
        self._thread.join(max(0.0, left) + 0.5)
        with self._cond:
            unsent = list(self._items)
            self._items.clear()
            self.dropped += len(unsent)
        if unsent:
            log.warning(
                "alert.dropped", sink=self.name, count=len(unsent), reason="closed before delivery"
            )
        for note in unsent:
            self.lost(note)

    def lost(self, note: Notification) -> None:
        """Hand ``note`` (not delivered) to ``on_lost``; never raises."""
        if self.on_lost is None:
            return
        try:
            self.on_lost(note)
        except Exception as exc:  # noqa: BLE001 - keeping it is best effort
            log.error("alert.outbox_failed", sink=self.name, key=note.key, error=str(exc)[:300])

    # ------------------------------------------------------------------ thread side

    def remaining(self) -> float | None:
        """Seconds left before :meth:`close` gives up, or None while not closing."""
        deadline = self._deadline
        return None if deadline is None else deadline - time.monotonic()

    def pause(self, seconds: float) -> bool:
        """Wait ``seconds`` (less when :meth:`close` is called meanwhile and its deadline comes
        first); False when the close deadline has passed (stop retrying)."""
        end = time.monotonic() + seconds
        with self._cond:
            while True:
                stop = end if self._deadline is None else min(end, self._deadline)
                left = stop - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        left_to_close = self.remaining()
        return left_to_close is None or left_to_close > 0

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._closing:
                    self._cond.wait()
                if not self._items:
                    return  # closing, everything delivered
                left = self.remaining()
                if left is not None and left <= 0:
                    return  # close() gave up: it counts what is left
                note = self._items.popleft()
                self._busy = True
            try:
                self.deliver(note)
            except Exception as exc:  # noqa: BLE001 - the thread must outlive any one failure
                self.failed += 1
                log.error(
                    "alert.delivery_failed",
                    sink=self.name,
                    key=note.key,
                    error=f"{type(exc).__name__}: {exc}",
                )
                self.lost(note)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def deliver(self, note: Notification) -> None:
        """Deliver one notification (on the sink's thread); count it in ``delivered`` or
        ``failed``. May call :meth:`pause` between attempts."""
        raise NotImplementedError
