"""The preparer: the publication's own thread (``quantbot-bus-prepare``, in the daemon).

It waits on one event, set after each publication and by :meth:`Preparer.stop`; each time it
is woken and its owner is not closed it runs one round (compaction, the next generation made
ahead, garbage collection: :meth:`Publication._prepare_round`), so the publishing thread goes
back to work at once. Several wake-ups while a round runs make one more round.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class Preparer:
    """A daemon thread running ``round_`` once per wake-up until ``closed()`` is true."""

    def __init__(self, round_: Callable[[], None], closed: Callable[[], bool]) -> None:
        self._round = round_
        self._closed = closed
        self._wanted = threading.Event()  # a publication happened, or the owner is stopping
        self._thread = threading.Thread(target=self._main, name="quantbot-bus-prepare", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Have it run a round (after a publication)."""
        self._wanted.set()

    def stop(self) -> None:
        """Wake it so it sees its owner closed, and wait until it has ended."""
        self._wanted.set()
        self._thread.join()

    def _main(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self._closed():
                return
            self._round()
