"""What ``quantbot-bus alerts`` shows: the active alerts from ``state_dir/alerts.json`` and, with
``--all``, the recent resolutions from the end of ``exports_dir/alerts.jsonl``.

Read only: it never takes a lock or writes, so it runs beside the daemon. Rows (the JSON
contract, docs/cli-json.md) have :data:`ALERT_COLUMNS`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .model import SEVERITIES
from .state import AlertState

#: The columns of ``quantbot-bus alerts`` rows.
ALERT_COLUMNS = (
    "status",
    "key",
    "rule",
    "severity",
    "first_seen_at",
    "last_seen_at",
    "resolved_at",
    "notified_at",
    "message",
    "details",
)
#: ``--all`` reads at most this much of the end of ``alerts.jsonl``.
TAIL_BYTES = 4 << 20


def active_alerts(state_path: Path) -> list[dict[str, Any]]:
    """The firing conditions, critical first, then newest first (``notified_at`` null: held
    back by the rate limit, not notified yet)."""
    state = AlertState.load(state_path)
    rows = [
        {c: entry.as_dict().get(c) for c in ALERT_COLUMNS}
        for entry in state.entries.values()
        if entry.status == "firing"
    ]
    rank = {s: i for i, s in enumerate(reversed(SEVERITIES))}
    rows.sort(key=lambda r: r["first_seen_at"] or "", reverse=True)
    rows.sort(key=lambda r: rank.get(str(r["severity"]), len(rank)))
    return rows


def tail_records(path: Path, max_bytes: int = TAIL_BYTES) -> list[dict[str, Any]]:
    """The JSON objects of the last ``max_bytes`` of a JSON-lines file, oldest first (a line cut
    by the start of the window, or one that does not parse, is skipped)."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            start = max(0, size - max_bytes)
            fh.seek(start)
            data = fh.read()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    if start > 0:
        lines = lines[1:]
    records = []
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def recent_resolved(jsonl_path: Path, limit: int) -> list[dict[str, Any]]:
    """The last ``limit`` resolutions in ``alerts.jsonl``, newest first (0: all it read)."""
    rows = []
    for record in reversed(tail_records(jsonl_path)):
        if record.get("status") != "resolved":
            continue
        row = {c: record.get(c) for c in ALERT_COLUMNS}
        row["notified_at"] = record.get("at")
        rows.append(row)
        if limit and len(rows) >= limit:
            break
    return rows


def list_alerts(
    state_path: Path, jsonl_path: Path, *, include_resolved: bool = False, limit: int = 50
) -> list[dict[str, Any]]:
    """The active alerts, then (``include_resolved``) the last ``limit`` resolved ones."""
    rows = active_alerts(state_path)
    if include_resolved:
        rows += recent_resolved(jsonl_path, limit)
    return rows
