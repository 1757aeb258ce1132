"""The incomplete runs as readers see them: ``state_dir/pending.json``.

The daemon's worker (its :class:`~quantbot_bus.daemon.pending.PendingRuns`) and ``sync`` /
``rebuild`` (:meth:`quantbot_bus.pipeline.Bus.reconcile`) write it atomically whenever the set
of pending runs or a reason changes; ``quantbot-bus pending`` reads it (:func:`read_pending`).
It lists at most :data:`MAX_LISTED` runs, oldest first, and says how many more there are::

    {"updated_at": "...Z", "writer": "daemon", "pid": 123, "pending_timeout_s": 600.0,
     "total": 2, "more": 0,
     "runs": [{"run_dir": "...", "run_id": "r1" | null, "reason": "...",
               "first_seen": "...Z", "reject_after": "...Z" | null}, ...]}

``reject_after`` is when the pending rule rejects the run if it is still incomplete (its
metadata.json's mtime + ``pending_timeout_s``; on the Iceberg backend, which writes the file
too, its metadata.json's LastModified, or when the daemon first saw it if earlier, +
``pending_timeout_s``).
A reader adds each run's ``age_s`` (seconds since ``first_seen``).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .contract.layout import marker_path
from .errors import CatalogMissingError
from .fsutil import write_atomic
from .log import get_logger
from .timeutil import age_s, iso_utc, parse_utc

if TYPE_CHECKING:
    from .config import Config

log = get_logger(__name__)

#: The file's name in the state directory.
PENDING_FILE = "pending.json"
#: At most this many runs are listed (the oldest); ``more`` counts the rest.
MAX_LISTED = 1000


class PendingMissingError(CatalogMissingError):
    """There is no pending list: neither the daemon nor ``sync`` has run with this state dir."""


def pending_path(state_dir: str | os.PathLike[str]) -> Path:
    """Where the pending list of the bus with this state directory is."""
    return Path(state_dir) / PENDING_FILE


@dataclass(frozen=True)
class PendingEntry:
    """One incomplete run: its directory, its run_id when metadata.json names one, why it is
    pending and since when (``time.time()``)."""

    run_dir: str
    run_id: str | None
    reason: str
    first_seen: float
    #: when the pending rule rejects it (``time.time()``); None: its metadata.json's mtime +
    #: ``pending_timeout_s`` (a run in a local root)
    reject_after: float | None = None


def _iso(ts: float) -> str:
    return iso_utc(dt.datetime.fromtimestamp(ts, dt.UTC))


def _reject_after(run_dir: str, timeout_s: float) -> str | None:
    try:
        return _iso(os.stat(marker_path(run_dir)).st_mtime + timeout_s)
    except (OSError, ValueError, OverflowError):
        return None  # gone meanwhile: the next look settles it


def write_pending(
    path: Path, entries: Iterable[PendingEntry], *, writer: str, timeout_s: float
) -> bool:
    """Replace the pending list at ``path`` with ``entries`` (atomically); whether it was
    written. Never raises (the list is a convenience for readers, never a reason to fail a
    batch)."""
    runs = sorted(entries, key=lambda e: (e.first_seen, e.run_dir))
    listed = runs[:MAX_LISTED]
    doc = {
        "updated_at": iso_utc(),
        "writer": writer,
        "pid": os.getpid(),
        "pending_timeout_s": timeout_s,
        "total": len(runs),
        "more": len(runs) - len(listed),
        "runs": [
            {
                "run_dir": e.run_dir.encode("utf-8", "backslashreplace").decode("utf-8"),
                "run_id": e.run_id,
                "reason": e.reason,
                "first_seen": _iso(e.first_seen),
                "reject_after": (
                    _iso(e.reject_after)
                    if e.reject_after is not None
                    else _reject_after(e.run_dir, timeout_s)
                ),
            }
            for e in listed
        ],
    }
    try:
        write_atomic(path, json.dumps(doc, indent=1) + "\n")
    except OSError as exc:
        log.warning("pending.write_failed", path=str(path), error=f"{type(exc).__name__}: {exc}")
        return False
    return True


def previous_first_seen(path: Path) -> dict[str, float]:
    """run_dir -> first seen (``time.time()``) of the runs the file at ``path`` lists, so a
    one-shot ``sync`` keeps the age of a run that was pending before; ``{}`` if unreadable."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        out: dict[str, float] = {}
        now = time.time()
        for run in doc["runs"]:
            seen = parse_utc(run["first_seen"])
            if seen is not None:
                out[run["run_dir"]] = min(now, seen.timestamp())
        return out
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def read_pending(path: Path, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """The pending list at ``path`` (see the module doc), each run with its ``age_s`` added.

    Raises :class:`PendingMissingError` when there is none (neither the daemon nor ``sync`` has run
    with this state directory) or it is unreadable."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PendingMissingError(
            f"no pending list at {path}: neither the daemon nor `quantbot-bus sync` has run "
            "with this state dir (start one, or pass the right --state-dir/--config)"
        ) from None
    except (OSError, ValueError) as exc:
        raise PendingMissingError(f"the pending list {path} cannot be read: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("runs"), list):
        raise PendingMissingError(f"the pending list {path} does not hold a list of runs")
    for run in doc["runs"]:
        seen = run.get("first_seen")
        elapsed = age_s(seen, now) if isinstance(seen, str) else math.inf
        run["age_s"] = round(max(0.0, elapsed), 1) if math.isfinite(elapsed) else None
    return doc


def write_scan_pending(
    config: Config, pending: dict[str, str], run_ids: dict[str, str], *, writer: str
) -> None:
    """``sync``/``rebuild``'s list of the runs still pending (run_dir -> reason): a run listed
    before keeps its first-seen time."""
    path = pending_path(config.state_dir)
    seen = previous_first_seen(path)
    now = time.time()
    entries = [PendingEntry(d, run_ids.get(d), why, seen.get(d, now)) for d, why in pending.items()]
    write_pending(path, entries, writer=writer, timeout_s=config.pending_timeout_s)
