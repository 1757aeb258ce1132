"""Re-exports of :mod:`quantbot_bus.daemon.status` under the old import path."""

from .daemon.status import (
    STALE_AFTER_S,
    STATUS_SIZE,
    WRITE_INTERVAL_S,
    StatusMissingError,
    pid_alive,
    read_status,
    write_status,
)

__all__ = [
    "STALE_AFTER_S",
    "STATUS_SIZE",
    "WRITE_INTERVAL_S",
    "StatusMissingError",
    "pid_alive",
    "read_status",
    "write_status",
]
