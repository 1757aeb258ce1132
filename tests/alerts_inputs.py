"""Inputs of the alert tests: a fixed clock (``T0``, :func:`at`), settings with just some
rules on, a daemon status dict that says the catalog is (or is not) degraded, and an
``Alerter`` whose state and ``alerts.jsonl`` live under a test's directory."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from quantbot_bus.alerts import Alerter, AlertSettings
from quantbot_bus.timeutil import iso_utc

T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def only(*rules: str, **kw: Any) -> AlertSettings:
    """Settings with just these rules on (and no background sinks)."""
    return AlertSettings(rules=rules, **kw)


def degraded_status(
    reason: str | None = "commit failed: OSError: [Errno 28] No space left",
) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "ready": True,
        "pending": 0,
        "last_batch_at": iso_utc(T0),
        "started_at": iso_utc(T0),
        "degraded": reason,
    }


def alerter_for(tmp_path: Path, settings: AlertSettings) -> Alerter:
    return Alerter(
        settings, tmp_path / "state" / "alerts.json", tmp_path / "exports" / "alerts.jsonl"
    )
