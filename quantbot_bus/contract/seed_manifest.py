"""A seed run's ``run.json`` fields and what they mean for the catalog (docs/contract.md,
section 5): pure functions of the parsed document and the run directory's name, shared by the
local validation (:mod:`.seed`) and the object-store one (:mod:`quantbot_bus.objectstore.seed`).

Every check raises :class:`~.reasons._Stop` with an :class:`~.model.Invalid` naming the field.
"""

from __future__ import annotations

import math
import os
from datetime import UTC, datetime
from typing import Any

from .layout import SUCCESS_NAME, run_id_of
from .model import RUN_ID_RE, Invalid, metric_number
from .reasons import _show, _Stop

#: run.json status → the catalog's status (None: not finished yet).
_STATUS = {"completed": "success", "failed": "failed", "pending": None, "running": None}


def _bad(reason: str) -> _Stop:
    return _Stop(Invalid(f"run.json: {reason}"))


def _utc(value: Any, where: str) -> str:
    """An ISO-8601 timestamp as the catalog's UTC text; a time without an offset is UTC."""
    if not isinstance(value, str):
        raise _bad(f"field '{where}' must be an ISO-8601 timestamp string, got {_show(value)}")
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        raise _bad(
            f"field '{where}' is not an ISO-8601 timestamp: {_show(value)}; "
            'write e.g. "2026-03-01T12:00:00.000Z"'
        ) from None
    dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    return dt.isoformat(timespec="microseconds").replace("+00:00", "Z").replace(".000000Z", "Z")


def success_text_time(text: str) -> str | None:
    """The finish time written in a ``_SUCCESS`` file as UTC text, or None when the text is not
    a timestamp (the marker's presence is what counts; its text is a courtesy)."""
    if not text:
        return None
    try:
        return _utc(text, SUCCESS_NAME)
    except _Stop:
        return None


def modified_time(at: datetime) -> str:
    """A file's modification time (an mtime, an object's LastModified) as UTC text."""
    return _utc(at.astimezone(UTC).isoformat(), SUCCESS_NAME)


def _optional(doc: dict[str, Any], key: str, kind: type | tuple[type, ...], expect: str) -> Any:
    value = doc.get(key)
    if value is not None and (
        not isinstance(value, kind) or isinstance(value, bool) != (kind is bool)
    ):
        raise _bad(f"field '{key}' must be {expect} or null, got {_show(value)}")
    return value


def _number(value: Any, where: str) -> int | float:
    """A finite number, its JSON type kept (:func:`.model.metric_number`)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(f"field '{where}' must be a number, got {_show(value)}")
    try:
        number = metric_number(value)
    except OverflowError:
        raise _bad(f"field '{where}' is too large for a 64-bit float") from None
    if not math.isfinite(number):
        raise _bad(f"field '{where}' must be a finite number, got {_show(value)}")
    return number


def _params(doc: dict[str, Any]) -> dict[str, Any]:
    params = dict(_optional(doc, "parameters", dict, "an object") or {})
    dataset = _optional(doc, "dataset", dict, "an object") or {}
    for key, value in dataset.items():
        params.setdefault(f"dataset_{key}", value)
    return params


def _metrics(doc: dict[str, Any]) -> dict[str, int | float]:
    metrics: dict[str, int | float] = {}
    for key, value in (_optional(doc, "timing", dict, "an object of milliseconds") or {}).items():
        metrics[f"timing_{key}_ms"] = _number(value, f"timing.{key}")
    for key, value in (_optional(doc, "metrics", dict, "an object of numbers") or {}).items():
        metrics[str(key)] = _number(value, f"metrics.{key}")
    return metrics


def _manifest(doc: dict[str, Any], run_dir: str) -> tuple[str, str, str | None]:
    """run_id, run_type and the catalog status (None: not finished) of a run.json; ``run_dir``
    is the run directory's path (local, or its key prefix in a bucket): its last two parts
    (``YYYY-MM/run_id=<id>``) give the run_id the document must have."""
    run_id = doc.get("run_id")
    if not isinstance(run_id, str) or not RUN_ID_RE.fullmatch(run_id):
        raise _bad(
            "field 'run_id' must be 1-128 characters from A-Z a-z 0-9 . _ - starting with a "
            f"letter or digit, got {_show(run_id)}"
        )
    if run_id != run_id_of(run_dir):
        raise _Stop(
            Invalid(
                f"run_id {_show(run_id)} in run.json does not match the directory name "
                f"{_show(os.path.basename(run_dir.rstrip('/')))}; name the directory "
                "run_id=<run_id>",
                run_id=run_id,
            )
        )
    run_type = doc.get("run_type")
    if not isinstance(run_type, str) or not RUN_ID_RE.fullmatch(run_type):
        raise _bad(f"field 'run_type' must be a name like 'path-only', got {_show(run_type)}")
    status = doc.get("status")
    if not isinstance(status, str) or status not in _STATUS:
        raise _bad(f"field 'status' must be one of {', '.join(_STATUS)}, got {_show(status)}")
    return run_id, run_type, _STATUS[status]
