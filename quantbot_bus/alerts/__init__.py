"""Alerts (issue #15): rules over the bus's state, each condition notified once, and resolved.

The daemon's lookout thread holds a :class:`~.watch.Watch` (an :class:`Alerter` and the
dashboard's schedule) and looks every second; ``sync`` and ``rebuild`` look once after their
batch (:mod:`.oneshot`). ``quantbot-bus alerts`` lists what is active. docs/alerts.md: the rules,
their semantics, the sinks and the JSON they carry.

| module | what it is |
|---|---|
| :mod:`.settings` | ``[alerts]`` of the config: :class:`AlertSettings`, :func:`parse_alert_settings` |
| :mod:`.facts` | what a check looks at, gathered with bounded queries: :func:`gather_facts` |
| :mod:`.rules` | facts → the active :class:`Condition` set, one function per rule |
| :mod:`.model` | :class:`Condition`, :class:`Notification` (its JSON is the sinks' contract) |
| :mod:`.state` | the once-per-condition state machine and rate limits, ``state_dir/alerts.json`` |
| :mod:`.sinks` | the log event and ``exports_dir/alerts.jsonl`` (synchronous) |
| :mod:`.background` | a bounded queue and a thread: the base of the two slow sinks |
| :mod:`.webhook` | HTTP POST with timeout, retries and capped backoff |
| :mod:`.command` | a program with the notification on stdin |
| :mod:`.alerter` | :class:`Alerter`: facts → rules → state → sinks |
| :mod:`.watch` | :class:`~.watch.Watch`: one look, the alert check then the dashboard when due (the daemon's lookout and the one-shots share it) |
| :mod:`.oneshot` | ``sync``/``rebuild`` then one look: alerts and the page without the daemon |
| :mod:`.listing` | the rows of ``quantbot-bus alerts`` |

Importing the package is cheap (``config.py`` imports :mod:`.settings`); the rest is imported
on first use of a name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_attributes
from .settings import RULES, AlertSettings, CommandSettings, WebhookSettings, parse_alert_settings

if TYPE_CHECKING:  # the names __getattr__ imports, for type checkers
    from .alerter import JSONL_NAME, STATE_NAME, Alerter, jsonl_path_for, state_path_for
    from .facts import DiskUsage, Facts, gather_facts
    from .listing import ALERT_COLUMNS, list_alerts
    from .model import Condition, Conditions, Notification
    from .rules import evaluate
    from .state import AlertState

#: The names of the other modules, imported on first use.
__getattr__ = lazy_attributes(
    __name__,
    {
        "alerter": ("Alerter", "JSONL_NAME", "STATE_NAME", "jsonl_path_for", "state_path_for"),
        "facts": ("DiskUsage", "Facts", "gather_facts"),
        "listing": ("ALERT_COLUMNS", "list_alerts"),
        "model": ("Condition", "Conditions", "Notification"),
        "rules": ("evaluate",),
        "state": ("AlertState",),
    },
)


__all__ = [
    "ALERT_COLUMNS",
    "AlertSettings",
    "AlertState",
    "Alerter",
    "CommandSettings",
    "Condition",
    "Conditions",
    "DiskUsage",
    "Facts",
    "JSONL_NAME",
    "Notification",
    "RULES",
    "STATE_NAME",
    "WebhookSettings",
    "evaluate",
    "gather_facts",
    "jsonl_path_for",
    "list_alerts",
    "parse_alert_settings",
    "state_path_for",
]
