"""The once-per-condition state machine, persisted in ``state_dir/alerts.json``.

Each condition key has an entry: ``status`` (``firing`` or ``resolved``), when it was first and
last seen, and what was last *notified* about it (``notified``: ``firing``, ``resolved`` or null,
at ``notified_at``). One :meth:`AlertState.transition` per check:

- a new condition (or one back after its resolution was notified) → ``firing``, notify it;
- still active and notified → nothing; a reminder after ``repeat_after_s`` when that is > 0;
- cleared → ``resolved``, notify it if its firing was notified (else it is dropped unsaid);
- a condition of an incomplete rule (:class:`~.model.Conditions`) that is not in the active set
  is left as it is.

Rate limits: at most one notification per key per ``min_interval_s`` and ``max_per_minute`` in
all. A notification held back is not lost: the entry still says what is owed (``status`` differs
from ``notified``) and a later check sends it when allowed; if the condition flapped back
meanwhile, nothing is owed any more (flapping collapses). Critical first when the cap bites.

The file is rewritten atomically (:func:`~quantbot_bus.fsutil.write_atomic`) after a check that
changed it, so a restarted daemon does not notify again what it already notified.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..fsutil import write_atomic
from ..log import get_logger
from ..timeutil import iso_utc, parse_utc
from .model import SEVERITIES, Condition, Conditions, Notification
from .settings import AlertSettings

log = get_logger("quantbot_bus.alerts")

STATE_VERSION = 1
_WINDOW_S = 60.0  # the window of ``max_per_minute``


@dataclass
class Entry:
    """One condition key's state (see module doc); times are ISO-8601 UTC strings."""

    key: str
    rule: str
    severity: str
    message: str
    details: dict[str, Any]
    status: str
    first_seen_at: str
    last_seen_at: str
    resolved_at: str | None = None
    notified: str | None = None
    notified_at: str | None = None
    notifications: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Entry:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})

    def owed(self) -> bool:
        """Something not yet told: a firing never notified, or a resolution of a notified
        firing."""
        if self.status == "firing":
            return self.notified != "firing"
        return self.notified == "firing"


def _naive(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _since(iso: str | None, now: dt.datetime) -> float:
    then = parse_utc(iso)
    return float("inf") if then is None else (now - then).total_seconds()


class AlertState:
    """The entries by key and the recent notification times; :meth:`load` / :meth:`save`."""

    def __init__(
        self, entries: dict[str, Entry] | None = None, sent: list[str] | None = None
    ) -> None:
        self.entries: dict[str, Entry] = entries or {}
        self.sent: list[str] = sent or []  # ISO times of the notifications of the last minute
        self.changed = False

    # ------------------------------------------------------------------ file

    @classmethod
    def load(cls, path: Path) -> AlertState:
        """The state in ``path``; empty when it does not exist or cannot be read (logged as
        ``alert.state_unreadable``: conditions notified before may be notified once more)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            entries = {k: Entry.from_dict(v) for k, v in data["conditions"].items()}
            sent = [s for s in data.get("sent", []) if isinstance(s, str)]
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning(
                "alert.state_unreadable", path=str(path), error=f"{type(exc).__name__}: {exc}"
            )
            return cls()
        return cls(entries, sent)

    def to_json(self, now: dt.datetime) -> str:
        data = {
            "version": STATE_VERSION,
            "updated_at": iso_utc(now),
            "conditions": {k: e.as_dict() for k, e in sorted(self.entries.items())},
            "sent": self.sent,
        }
        return json.dumps(data, indent=1, sort_keys=True, default=str) + "\n"

    def save(self, path: Path, now: dt.datetime) -> None:
        """Write the state atomically (raises OSError: the caller logs it)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, self.to_json(now))
        self.changed = False

    def firing(self) -> list[Entry]:
        """The entries whose condition is active now (notified or not yet)."""
        return [e for e in self.entries.values() if e.status == "firing"]

    # ------------------------------------------------------------------ the machine

    def transition(
        self, conditions: Conditions, now: dt.datetime, settings: AlertSettings
    ) -> list[Notification]:
        """Apply one check's conditions at ``now`` and return what to notify (see module doc)."""
        now = _naive(now)
        stamp = iso_utc(now)
        active = conditions.by_key()
        for key, condition in active.items():
            self._seen(key, condition, stamp)
        for entry in list(self.entries.values()):
            if entry.key in active or entry.status != "firing":
                continue
            if entry.rule in conditions.incomplete:
                continue
            if entry.notified != "firing":
                del self.entries[entry.key]  # cleared before anyone was told: nothing to say
                self.changed = True
                continue
            entry.status, entry.resolved_at = "resolved", stamp
            self.changed = True
        notes = self._due(now, stamp, settings)
        self._prune(now, settings)
        return notes

    def _seen(self, key: str, condition: Condition, stamp: str) -> None:
        entry = self.entries.get(key)
        if entry is None or entry.status == "resolved":
            back = entry is not None and entry.notified == "firing"  # resolution still owed
            self.entries[key] = Entry(
                key=key,
                rule=condition.rule,
                severity=condition.severity,
                message=condition.message,
                details=condition.details,
                status="firing",
                first_seen_at=entry.first_seen_at if back and entry else stamp,
                last_seen_at=stamp,
                notified=entry.notified if entry else None,
                notified_at=entry.notified_at if entry else None,
                notifications=entry.notifications if entry else 0,
            )
            self.changed = True
            return
        entry.last_seen_at = stamp
        if (entry.message, entry.details, entry.severity) != (
            condition.message,
            condition.details,
            condition.severity,
        ):
            entry.message, entry.details = condition.message, condition.details
            entry.severity = condition.severity
        self.changed = True  # last_seen_at moved

    def _due(self, now: dt.datetime, stamp: str, settings: AlertSettings) -> list[Notification]:
        """The owed notifications (and reminders) the rate limits allow now, marked sent."""
        self.sent = [s for s in self.sent if _since(s, now) < _WINDOW_S]
        candidates: list[tuple[Entry, bool]] = []
        for entry in self.entries.values():
            if entry.owed():
                candidates.append((entry, False))
            elif (
                entry.status == "firing"
                and settings.repeat_after_s > 0
                and _since(entry.notified_at, now) >= settings.repeat_after_s
            ):
                candidates.append((entry, True))
        rank = {s: i for i, s in enumerate(reversed(SEVERITIES))}
        candidates.sort(key=lambda c: (c[1], rank.get(c[0].severity, len(rank)), c[0].key))
        notes: list[Notification] = []
        held: list[str] = []
        for entry, reminder in candidates:
            too_soon = _since(entry.notified_at, now) < settings.min_interval_s
            if (too_soon and not reminder) or len(self.sent) >= settings.max_per_minute:
                held.append(entry.key)
                continue
            entry.notified, entry.notified_at = entry.status, stamp
            entry.notifications += 1
            self.sent.append(stamp)
            self.changed = True
            notes.append(
                Notification(
                    key=entry.key,
                    rule=entry.rule,
                    severity=entry.severity,
                    status=entry.status,
                    message=entry.message,
                    details=entry.details,
                    first_seen_at=entry.first_seen_at,
                    at=stamp,
                    resolved_at=entry.resolved_at if entry.status == "resolved" else None,
                    reminder=reminder,
                )
            )
        if held:
            log.info("alert.rate_limited", held=len(held), keys=held[:10])
        return notes

    def _prune(self, now: dt.datetime, settings: AlertSettings) -> None:
        """Forget resolved entries once their resolution was told and ``min_interval_s`` passed
        (until then a quick return of the condition still waits its turn)."""
        for key, entry in list(self.entries.items()):
            if (
                entry.status == "resolved"
                and entry.notified == "resolved"
                and _since(entry.notified_at, now) >= settings.min_interval_s
            ):
                del self.entries[key]
                self.changed = True
