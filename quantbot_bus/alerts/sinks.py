"""The two synchronous sinks: the structured log event and the append-only ``alerts.jsonl``.

Both are cheap and local, so :class:`~.alerter.Alerter` calls them in its own thread; the slow
ones (webhook, command) run on their own threads (:mod:`.background`). A sink never raises: a
failure is logged (``alert.delivery_failed``) and the other sinks still get the notification.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Protocol

from ..log import get_logger
from .model import Notification

log = get_logger("quantbot_bus.alerts")


class Sink(Protocol):
    """Where notifications go: :meth:`send` never raises and never blocks for long."""

    name: str

    def send(self, note: Notification) -> None: ...

    def close(self, timeout: float) -> None: ...


class LogSink:
    """``alert.fired`` (warning; error when critical) or ``alert.resolved`` (info), bound with
    the key, rule, severity and message: one JSON line in the journal."""

    name = "log"

    def send(self, note: Notification) -> None:
        fields = {
            "key": note.key,
            "rule": note.rule,
            "severity": note.severity,
            "message": note.message,
            "first_seen_at": note.first_seen_at,
        }
        if note.status == "resolved":
            log.info(note.event, resolved_at=note.resolved_at, **fields)
        elif note.severity == "critical":
            log.error(note.event, reminder=note.reminder, **fields)
        else:
            log.warning(note.event, reminder=note.reminder, **fields)

    def close(self, timeout: float) -> None:
        return None


class JsonlSink:
    """Appends each notification's JSON as one line to ``path`` (``exports_dir/alerts.jsonl``):
    opened in append mode, written whole, flushed and fsynced; never rewritten or truncated."""

    name = "jsonl"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def send(self, note: Notification) -> None:
        line = (json.dumps(note.as_dict(), sort_keys=True, default=str) + "\n").encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                written = os.write(fd, line)
                if written != len(line):
                    raise OSError(f"short write ({written} of {len(line)} bytes)")
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            log.warning(
                "alert.delivery_failed",
                sink=self.name,
                key=note.key,
                path=str(self.path),
                error=f"{type(exc).__name__}: {exc}",
            )

    def close(self, timeout: float) -> None:
        return None
