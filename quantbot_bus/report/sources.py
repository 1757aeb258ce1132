"""The dashboard's inputs outside the publication: the daemon's status file, the pending list
and the open alerts.

They live in the state directory and are written by other parts of the bus (the daemon's status,
``pending.json`` by the daemon or ``sync``, :mod:`quantbot_bus.alerts`); each is read by one
small function here, and a missing file is "nothing to show", never an error (a report must
render on a fresh bus).
"""

from __future__ import annotations

from typing import Any

from ..config import Config
from ..daemon.status import StatusMissingError, read_status

#: The alerts file in the state directory (the daemon's alerter writes it).
ALERTS_NAME = "alerts.json"


def read_daemon_status(config: Config) -> tuple[dict[str, Any] | None, str]:
    """The daemon's status (``read_status``: pending runs, state, generation), or None and why."""
    try:
        return read_status(config.status_path), ""
    except StatusMissingError as exc:
        return None, str(exc)


def read_pending_list(config: Config) -> dict[str, Any] | None:
    """``state_dir/pending.json`` (:func:`quantbot_bus.pendingfile.read_pending`: ``total``,
    ``writer``, ``updated_at``, the runs with their ``age_s``), or None when there is none."""
    from ..pendingfile import PendingMissingError, pending_path, read_pending

    try:
        return read_pending(pending_path(config.state_dir))
    except PendingMissingError:
        return None


def read_alerts(config: Config) -> list[dict[str, Any]]:
    """The firing alerts of ``state_dir/alerts.json`` (the rows of ``quantbot-bus alerts``:
    ``key``, ``rule``, ``severity``, ``first_seen_at``, ``last_seen_at``, ``message``, ...),
    critical first; none when the file does not exist."""
    from ..alerts.listing import active_alerts

    return active_alerts(config.state_dir / ALERTS_NAME)
