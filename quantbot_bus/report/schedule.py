"""When the dashboard is rewritten: :class:`PageSchedule`, the one rule for the daemon's lookout
thread and for ``sync``/``rebuild``, kept in ``state_dir/report.json`` so it holds across
processes.

The page is written when ``[report]`` is enabled, what it shows changed since the last page — the
caller's *source* differs from the last page's (the daemon passes its publication generation,
a one-shot its :func:`published_source`) or alerts were sent since — and ``interval_s`` has
passed since the last attempt, or before any attempt since the schedule began counting: the
daemon's start, or the first ``sync``/``rebuild`` that found the page enabled. So a daemon
started and stopped again, or a single ``sync``, draws no page; a ``sync`` every few minutes
redraws it at most once per ``interval_s``, whichever process drew the last one.

``report.json`` (written atomically, only when it changes)::

    {"version": 1, "since": "...Z", "last_at": "...Z" | null, "source": "..." | null,
     "alerts": 0, "error": null}

``last_at``: the last attempt (a failed one waits ``interval_s`` too, logged ``report.failed``
and kept in ``error``); ``source``: what the last written page was drawn from; ``alerts``:
notifications sent since. A file that cannot be read starts the count again (logged
``report.schedule_unreadable``).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..fsutil import write_atomic
from ..log import get_logger
from ..timeutil import iso_utc, parse_utc, utc_now

if TYPE_CHECKING:
    from ..config import Config
    from .writer import ReportResult

log = get_logger(__name__)

#: The schedule's file in the state directory.
SCHEDULE_NAME = "report.json"
SCHEDULE_VERSION = 1


def schedule_path_for(config: Config) -> Path:
    """``state_dir/report.json``."""
    return Path(config.state_dir) / SCHEDULE_NAME


def published_source(exports_dir: Path) -> str | None:
    """What the current publication holds, as ``<catalog id>:<last published sequence>``: it
    changes when a batch changed the catalog, not with every generation (a ``sync`` publishes
    one each time). None when nothing is published or its manifest cannot be read."""
    from ..publication.layout import MANIFEST, current_generation

    try:
        data = json.loads((current_generation(exports_dir) / MANIFEST).read_text("utf-8"))
        return f"{data['catalog_id']}:{int(data['seq'])}"
    except Exception:  # noqa: BLE001 - nothing published yet, or a generation collected meanwhile
        return None


@dataclass
class _Record:
    """The persisted fields (module doc); times are ISO-8601 UTC strings."""

    since: str | None = None
    last_at: str | None = None
    source: str | None = None
    alerts: int = 0
    error: str | None = None


class PageSchedule:
    """The dashboard's schedule (module doc). ``start``: when the counting begins for this
    process (the daemon: its start); None (a one-shot): as recorded, or now when nothing is."""

    def __init__(self, config: Config, *, start: dt.datetime | None = None) -> None:
        self.config = config
        self.path = schedule_path_for(config)
        self.record = self._load()
        #: Pages written by this schedule (for tests and the log).
        self.written = 0
        if start is not None:
            self.record.since = iso_utc(start)
        elif self.record.since is None and self.config.report.enabled:
            self.record.since = iso_utc()
            self._save()

    def _load(self) -> _Record:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return _Record(
                since=_str(data.get("since")),
                last_at=_str(data.get("last_at")),
                source=_str(data.get("source")),
                alerts=int(data.get("alerts") or 0),
                error=_str(data.get("error")),
            )
        except FileNotFoundError:
            return _Record()
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.warning(
                "report.schedule_unreadable",
                path=str(self.path),
                error=f"{type(exc).__name__}: {exc}",
            )
            return _Record()

    def _save(self) -> None:
        data: dict[str, Any] = {"version": SCHEDULE_VERSION, **asdict(self.record)}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps(data, indent=1, sort_keys=True) + "\n")
        except OSError as exc:
            log.warning(
                "report.schedule_failed", path=str(self.path), error=f"{type(exc).__name__}: {exc}"
            )

    def note_alerts(self, sent: int) -> None:
        """Count ``sent`` notifications toward the next page (the page lists the open alerts)."""
        if sent > 0 and self.config.report.enabled:
            self.record.alerts += sent
            self._save()

    def due(self, source: object, now: dt.datetime | None = None) -> bool:
        """Whether the page should be written now for the publication ``source`` (None:
        nothing published: never)."""
        if not self.config.report.enabled or source is None:
            return False
        changed = str(source) != self.record.source or self.record.alerts > 0
        if not changed:
            return False
        anchors = [t for t in (parse_utc(self.record.since), parse_utc(self.record.last_at)) if t]
        if not anchors:
            return True
        now = utc_now() if now is None else now
        waited = (now.astimezone(dt.UTC).replace(tzinfo=None) - max(anchors)).total_seconds()
        return waited >= self.config.report.interval_s

    def refresh(self, source: object) -> ReportResult | None:
        """Write the page if :meth:`due` (:func:`~quantbot_bus.report.write_report`), record
        the attempt and return what was written; None when not due or it failed (logged as
        ``report.failed``). Never raises."""
        if not self.due(source):
            return None
        from .writer import write_report

        self.record.last_at = iso_utc()
        try:
            result = write_report(self.config)
        except Exception as exc:  # noqa: BLE001 - the page never stops the daemon or a sync
            self.record.error = f"{type(exc).__name__}: {exc}"
            log.error("report.failed", error=self.record.error)
            self._save()
            return None
        self.record.source, self.record.alerts, self.record.error = str(source), 0, None
        self._save()
        self.written += 1
        return result


def _str(value: Any) -> str | None:
    return None if value is None else str(value)
