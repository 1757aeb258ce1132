"""Catalog-level faults found by the kill cycles (in-process: real DuckDB files).

A daemon SIGKILLed while publishing the reader snapshot leaves its hidden temp copy
``exports/.bus.duckdb.<pid>.tmp`` behind (as big as the catalog). The next daemon has another
pid, so before the fix it never removed it: every such kill leaked a catalog-sized file.
``publish_snapshot`` now removes the temp copies of processes that no longer exist.
"""

from __future__ import annotations

import os
from pathlib import Path

from runs import make_run

from quantbot_bus import ingest
from quantbot_bus.catalog import Catalog
from quantbot_bus.config import Config


def _dead_pid() -> int:
    return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1  # never a live process


def test_publish_removes_snapshot_temp_files_of_dead_processes(bus: Config) -> None:
    make_run(bus.root, "backtest", "run-1")
    dest = bus.snapshot_path
    stale = dest.parent / f".{dest.name}.{_dead_pid()}.tmp"
    stale.write_bytes(b"\0" * 4096)  # what a SIGKILLed publish leaves
    alive = dest.parent / f".{dest.name}.1.tmp"  # pid 1 exists: maybe another publisher's
    alive.write_bytes(b"x")
    unrelated = dest.parent / ".something-else.tmp"
    unrelated.write_bytes(b"x")
    with Catalog.open(bus.catalog_path) as catalog:
        catalog.apply_batch(ingest.full_scan(bus, catalog).batch)
        catalog.publish_snapshot(dest)
    assert dest.is_file()
    assert not stale.exists()
    assert alive.exists() and unrelated.exists()
    assert not list(dest.parent.glob(f".{dest.name}.{os.getpid()}.tmp"))
