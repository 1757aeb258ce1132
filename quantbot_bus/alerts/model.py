"""The values alerts are made of: a :class:`Condition` (something wrong now) and a
:class:`Notification` (what the sinks deliver: a condition firing, reminded or resolved).

``Notification.as_dict()`` is the JSON every sink carries (one line of ``alerts.jsonl``, the
webhook's body, the command's stdin): a contract, documented in docs/alerts.md.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any

#: The version of the notification JSON (docs/alerts.md); bumped only on a breaking change.
SCHEMA_VERSION = 1
SEVERITIES = ("info", "warning", "critical")


@dataclass(frozen=True)
class Condition:
    """One thing that is wrong now. ``key`` is stable for as long as it stays wrong
    (``disk_low:/srv/bus/state``, ``run_failed:<run_id>``, ``degraded``...); ``rule`` names the
    rule that found it; ``message`` is one line a person can act on."""

    key: str
    rule: str
    severity: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Conditions:
    """What the rules found in one check: the active conditions, and the rules whose facts
    were incomplete (truncated at ``max_items`` or not readable this time). A condition of an
    incomplete rule that is missing from ``active`` is not taken as resolved."""

    active: tuple[Condition, ...] = ()
    incomplete: frozenset[str] = frozenset()

    def by_key(self) -> dict[str, Condition]:
        return {c.key: c for c in self.active}


@dataclass(frozen=True)
class Notification:
    """A condition's change as delivered: ``status`` is ``firing`` (new, or a reminder when
    ``reminder``) or ``resolved``; ``at`` is when it was sent, ``first_seen_at`` when the
    condition began, ``resolved_at`` when it cleared (ISO-8601 UTC strings)."""

    key: str
    rule: str
    severity: str
    status: str
    message: str
    details: dict[str, Any]
    first_seen_at: str
    at: str
    resolved_at: str | None = None
    reminder: bool = False

    @property
    def event(self) -> str:
        """The log event and the JSON ``event``: ``alert.fired`` or ``alert.resolved``."""
        return "alert.resolved" if self.status == "resolved" else "alert.fired"

    def as_dict(self) -> dict[str, Any]:
        """The notification JSON (docs/alerts.md, "The notification JSON")."""
        return {
            "schema_version": SCHEMA_VERSION,
            "source": "quantbot-bus",
            "host": _HOST,
            "event": self.event,
            "status": self.status,
            "reminder": self.reminder,
            "key": self.key,
            "rule": self.rule,
            "severity": self.severity,
            "message": self.message,
            "details": self.details,
            "first_seen_at": self.first_seen_at,
            "resolved_at": self.resolved_at,
            "at": self.at,
        }


_HOST = socket.gethostname()
