"""The one way to wait for something, and the suite's time and size knobs."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

#: Deadline for anything that should happen "soon" (generous: the suite shares 2 busy cores).
DEADLINE_S = 60.0
#: The long (soak) sizes of the scaled tests: ``make soak`` sets QUANTBOT_BUS_SOAK=1.
SOAK = os.environ.get("QUANTBOT_BUS_SOAK") == "1"


# ---------------------------------------------------------------------------- waiting


def wait_for(
    condition: Callable[[], Any], what: str, timeout: float = DEADLINE_S, every: float = 0.05
) -> Any:
    """Poll ``condition`` until it returns something truthy and return that; on timeout fail
    naming ``what``. ``condition`` may raise AssertionError to give up at once (a process that
    died, say)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)
