"""Disk full while the daemon writes its catalog, the publication or an export.

The state and exports directories live on a small tmpfs mounted for the test (root only; the test
is skipped with the reason when mounting is not permitted). Once the daemon has registered a
first wave of runs, a filler file takes every free byte, and a second wave of runs arrives. The
daemon must say so in its log and in ``status`` (``degraded``, with the reason), stay alive, leave
readers the last good generation, and register the second wave once the filler is removed.
"""

from __future__ import annotations

import errno
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from builders import RunFactory, live_run_ids, wait_for

from quantbot_bus.catalog import open_reader
from quantbot_bus.config import Config
from quantbot_bus.daemon.status import read_status
from quantbot_bus.publication import current_generation

from .helpers import DaemonProcess, assert_consistent, exported_run_ids

SIZE = "32m"


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "small-fs"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE},mode=0755", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(path: Path) -> int:
    """Write ``path`` until the filesystem is full; returns the bytes written."""
    written = 0
    block = b"\0" * (1 << 20)
    with open(path, "wb", buffering=0) as fh:
        while True:
            try:
                written += fh.write(block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(block) == 1:
                    break
                block = block[: len(block) // 16] or b"\0"
    return written


@pytest.mark.parametrize(
    "full",
    [
        "state+exports",
        "exports",
    ],
)
def test_disk_full_keeps_the_last_good_state_and_catches_up(
    full: str,
    tmp_path: Path,
    small_fs: Path,
    daemon_factory: Callable[..., DaemonProcess],
    figures: dict[str, Any],
) -> None:
    """``state+exports``: the catalog commit itself hits ENOSPC (its WAL); ``exports``: the
    catalog is on a disk with space, the snapshot and the exports are not."""
    config = Config(
        root=tmp_path / "artifacts",
        exports_dir=small_fs / "exports",
        state_dir=(small_fs if full == "state+exports" else tmp_path) / "state",
    ).validate()
    factory = RunFactory(tmp_path / "tpl", rows=200)
    first = {f"first-{i:03d}" for i in range(100)}
    for run_id in sorted(first):
        factory.make(config.root / "backtest", run_id)
    d = daemon_factory(
        config,
        env={"QUANTBOT_BUS_EXPORT_INTERVAL_S": "0.2"},
        log_dir=tmp_path / "daemon-logs",  # the log is not on the filesystem that fills up
    )
    try:
        d.start()
        wait_for(lambda: exported_run_ids(config) == first, "the first wave exported")
        good_snapshot = config.snapshot_path.read_bytes()
        good_gen = current_generation(config.exports_dir)
        good_runs_export = (good_gen / "files" / "runs.parquet").read_bytes()

        filler = small_fs / "filler"
        filled = _fill(filler)
        second = {f"second-{i:03d}" for i in range(100)}
        for run_id in sorted(second):
            factory.make(config.root / "backtest", run_id)

        def failure_logged() -> list[dict[str, Any]]:
            return [
                e
                for e in d.events()
                if e.get("level") in ("error", "warning")
                and "space" in str(e.get("error", "")).lower()
            ]

        wait_for(failure_logged, "the daemon to log the full disk")
        # `status` says so (the daemon is alive but cannot commit or publish), with the reason
        status = wait_for(
            lambda: (s := read_status(config.status_path))["state"] == "degraded" and s,
            "status: degraded",
        )
        assert "space" in status["degraded"].lower(), status
        time.sleep(3)  # stay full for a while: the daemon retries with back-off meanwhile
        assert d.alive(), d.tail()
        # Readers: the last good snapshot (the first wave) and exports, intact and readable.
        # (Not byte-equal to the copy above: a snapshot carrying new export views may have been
        # published after it, before the disk filled up.)
        con = open_reader(config.snapshot_path)
        try:
            ids = {r[0] for r in con.execute("SELECT run_id FROM catalog.runs_d").fetchall()}
        finally:
            con.close()
        assert ids == first
        # The exports are refreshed even while the snapshot cannot be written (a deleted or
        # replaced export file can free enough room for a small one), so they hold the first
        # wave and possibly part of the second — always whole, readable files.
        seen: list[set[str]] = []

        def exports_readable() -> bool:
            ids_now = exported_run_ids(config)  # None while mid-replacement: try again
            if ids_now is not None:
                seen.append(ids_now)
            return ids_now is not None

        wait_for(exports_readable, "a readable runs.parquet")
        assert first <= seen[-1] <= first | second
        failures = failure_logged()

        # Space returns: the daemon catches up with everything.
        filler.unlink()
        everything = first | second
        wait_for(lambda: live_run_ids(config) == everything, "the second wave registered", 120)
        wait_for(lambda: exported_run_ids(config) == everything, "the exports caught up", 15)
        wait_for(lambda: read_status(config.status_path)["degraded"] is None, "status: healthy")
        assert read_status(config.status_path)["state"] == "running"
        assert_consistent(config, everything)
        d.wait_settled()  # fails unless the status says pending == 0 in time
        assert d.stop() == 0
        figures.update(
            {
                "full": full,
                "filesystem": f"tmpfs {SIZE}",
                "filler_bytes": filled,
                "failures_logged": len(failures),
                "failure_events": sorted({e["event"] for e in failures}),
                "snapshot_bytes_before": len(good_snapshot),
                "runs_export_bytes_before": len(good_runs_export),
                "runs_lost": len(everything - live_run_ids(config)),
            }
        )
    finally:
        d.ensure_dead()
        print(d.tail(60))
