"""What the doctor tests share: the checks' names in order, disk thresholds any machine passes,
the checks by name, the snapshot check's detail for a publication, a status file of a running
daemon."""

from __future__ import annotations

import os
from typing import Any, TypedDict

from quantbot_bus.config import Config
from quantbot_bus.daemon.status import write_status
from quantbot_bus.ops import doctor
from quantbot_bus.publication import current_generation
from quantbot_bus.timeutil import iso_utc

NAMES = [
    "duckdb",
    "root",
    "state_dir",
    "exports_dir",
    "inotify.watches",
    "inotify.instances",
    "disk.state",
    "disk.exports",
    "snapshot",
    "catalog",
    "status",
]


class DiskThresholds(TypedDict):
    """The disk thresholds of :func:`quantbot_bus.ops.doctor.run_checks`."""

    disk_warn_bytes: int
    disk_warn_ratio: float
    disk_fail_bytes: int


# Disk thresholds that any machine passes, for tests about other checks.
EASY_DISK: DiskThresholds = {"disk_warn_bytes": 0, "disk_warn_ratio": 0.0, "disk_fail_bytes": 0}


def by_name(checks: list[doctor.Check]) -> dict[str, doctor.Check]:
    return {c.name: c for c in checks}


def published(bus: Config, runs: int) -> str:
    """The snapshot check's detail for the current publication holding ``runs`` runs."""
    gen = current_generation(bus.exports_dir).name
    return f"publication {gen} ({bus.snapshot_path}) opens: {runs} runs"


def running_status(bus: Config, **changes: Any) -> None:
    data = {
        "pid": os.getpid(),
        "started_at": iso_utc(),
        "updated_at": iso_utc(),
        "ready": True,
        "stopped_at": None,
        "registered": 3,
        "pending": 0,
        "rejected": 1,
    }
    data.update(changes)
    write_status(bus.status_path, data)
