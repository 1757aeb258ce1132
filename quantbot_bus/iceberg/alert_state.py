"""The state behind :class:`~quantbot_bus.iceberg.alert_facts.RunAlertFacts` and its file
(``state_dir/iceberg-alert-facts.json``): the failed runs and open rejections a daemon keeps,
and their JSON form."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from ..output import jsonable
from ..timeutil import parse_utc

FACTS_VERSION = 1

#: The keys of a failed run's row (those of ``alerts.facts.failed_runs``).
FAILED_KEYS = ("run_id", "run_type", "error", "run_dir", "created_at", "registered_at")
#: The keys of a rejection's row (those of ``alerts.facts.open_rejections``).
REJECTION_KEYS = ("run_dir", "run_id", "reason", "first_seen_at", "last_seen_at", "attempts")


def naive(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC).replace(tzinfo=None) if moment.tzinfo else moment


def iso(moment: dt.datetime) -> str:
    """A naive UTC time as the local backend's rows carry it (``...Z``, full precision)."""
    text: str = jsonable(moment)
    return text


@dataclass
class Failed:
    """A failed run this daemon registered: its row and its run type and params (the key a
    later run ends it by), ``t`` its ``created_at`` (else its registration) as naive UTC."""

    row: dict[str, Any]
    params: str
    t: dt.datetime
    registered: dt.datetime

    @property
    def order(self) -> tuple[dt.datetime, str]:
        return (self.t, str(self.row["run_id"]))

    @property
    def group(self) -> tuple[str, str]:
        return (str(self.row["run_type"]), self.params)


@dataclass
class State:
    failed: dict[str, Failed] = field(default_factory=dict)  # run id -> entry
    rejections: dict[str, dict[str, Any]] = field(default_factory=dict)  # run dir -> row
    #: failed runs were forgotten (the bound): incomplete until this (naive UTC) time
    failed_dropped_until: dt.datetime | None = None
    #: rejections were forgotten (the bound): incomplete until fewer than max_items are open
    rejected_dropped: bool = False


def decode(doc: Any) -> State:
    """The state a facts file's JSON ``doc`` holds (ValueError, KeyError or TypeError when it is
    not one)."""
    if not isinstance(doc, dict) or doc.get("version") != FACTS_VERSION:
        raise ValueError(f"not a version {FACTS_VERSION} facts file")
    state = State()
    for item in doc["failed"]:
        row = {k: item.get(k) for k in FAILED_KEYS}
        t, registered = parse_utc(row["created_at"]), parse_utc(row["registered_at"])
        if t is None or registered is None:
            raise ValueError(f"failed run {row['run_id']!r} without its times")
        state.failed[str(row["run_id"])] = Failed(row, str(item["params"]), t, registered)
    for item in doc["rejections"]:
        row = {k: item.get(k) for k in REJECTION_KEYS}
        state.rejections[str(row["run_dir"])] = row
    state.failed_dropped_until = parse_utc(doc.get("failed_dropped_until"))
    state.rejected_dropped = bool(doc.get("rejected_dropped"))
    return state


def encode(s: State) -> str:
    """The facts file's text for ``s``."""
    doc = {
        "version": FACTS_VERSION,
        "failed": [{**e.row, "params": e.params} for e in s.failed.values()],
        "rejections": list(s.rejections.values()),
        "failed_dropped_until": iso(s.failed_dropped_until) if s.failed_dropped_until else None,
        "rejected_dropped": s.rejected_dropped,
    }
    return json.dumps(doc, sort_keys=True, indent=1) + "\n"
