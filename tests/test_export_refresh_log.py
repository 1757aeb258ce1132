"""``export.refreshed``: one info line per export refresh that changed something (its ms, the runs
added and removed, the rows written), none for a refresh with nothing to do (an idle tick)."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from typing import Any

from builders import make_run, sync
from structlog.testing import capture_logs

from quantbot_bus.config import Config
from quantbot_bus.pipeline import Bus


def _refreshed(logs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for entry in logs:
        if entry["event"] == "export.refreshed":
            entry = dict(entry)
            assert isinstance(entry.pop("ms"), float)
            out.append(entry)
    return out


def test_each_refresh_that_changed_something_is_logged_once_at_info(bus: Config) -> None:
    make_run(bus.root, "path-only", "r1", tables={"results": 3, "extra": 4})
    make_run(bus.root, "path-only", "r2", tables={"results": 5})
    with capture_logs() as logs:
        sync(bus)
    assert _refreshed(logs) == [
        {"event": "export.refreshed", "log_level": "info", "added": 2, "removed": 0, "rows": 12}
    ]

    with capture_logs() as logs:  # nothing changed: no line
        sync(bus)
    assert _refreshed(logs) == []

    shutil.rmtree(bus.root / "path-only" / "r2")
    make_run(bus.root, "path-only", "r3", tables={"results": 2})
    with capture_logs() as logs:
        sync(bus)
    assert _refreshed(logs) == [
        {"event": "export.refreshed", "log_level": "info", "added": 1, "removed": 1, "rows": 2}
    ]


def test_an_idle_refresh_logs_nothing(bus: Config) -> None:
    """What the daemon's publisher does on a round without changes."""
    make_run(bus.root, "path-only", "r1")
    sync(bus)
    with Bus.open(bus, role="sync") as b, capture_logs() as logs:
        for _ in range(3):
            status = b.refresh_exports()
            assert status["changed_runs"] == {"added": 0, "removed": 0}
    assert [e for e in logs if e["event"].startswith("export.")] == []
