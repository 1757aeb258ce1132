"""The catalog is exclusive: while a daemon runs (with no run yet, with one, with many),
``sync``, ``rebuild`` and a second ``daemon`` on the same state dir exit 10 naming its pid, the
working catalog is left where it is, the daemon still holds its DuckDB lock and keeps working.
A real daemon subprocess, real DuckDB files, a real reader process holding the publication open.
"""

from __future__ import annotations

import fcntl
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import pytest
from builders import live_count, live_run_ids, make_run, wait_for
from publication_reading import Holder
from reliability.helpers import DaemonProcess, run_cli

from quantbot_bus.config import Config

BUSY_EXIT = 10


def posix_lock_holder(path: Path) -> int | None:
    """The pid holding a POSIX (fcntl) lock on ``path`` (DuckDB locks its files so), or None.
    Asked with F_GETLK: no lock is taken, and this process holds none on ``path`` to drop."""
    fd = os.open(path, os.O_RDONLY)
    try:
        query = struct.pack("@hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        l_type, _whence, _start, _len, pid = struct.unpack(
            "@hhqqi4x", fcntl.fcntl(fd, fcntl.F_GETLK, query)
        )
    finally:
        os.close(fd)
    return None if l_type == fcntl.F_UNLCK else pid


@pytest.fixture
def holder(bus: Config) -> Iterator[Holder]:
    h = Holder(bus.exports_dir)
    yield h
    h.close()


@pytest.mark.parametrize("runs_before", [0, 1, 30], ids=["empty", "one-run", "thirty-runs"])
def test_sync_rebuild_and_a_second_daemon_are_refused_while_a_daemon_runs(
    bus: Config, daemon_factory: Callable[..., DaemonProcess], holder: Holder, runs_before: int
) -> None:
    d = daemon_factory(bus).start()  # empty root: READY after its first (empty) publication
    for wave in range(0, runs_before, 10):  # in batches: several publications
        ids = [f"r-{i:03d}" for i in range(wave, min(wave + 10, runs_before))]
        for run_id in ids:
            make_run(bus.root, "backtest", run_id)
        d.wait_live_runs(wave + len(ids))
    assert live_count(bus) == runs_before
    # Another process holds exports/bus.duckdb open read-only (a user's notebook, a shell).
    held = holder.must("open held connect")["gen"]
    assert holder.must("query held")["runs"] == runs_before
    catalog = bus.catalog_path
    before = os.stat(catalog)
    assert posix_lock_holder(catalog) == d.pid

    advice = {"sync": "status", "rebuild": "stop the daemon", "daemon": "--state-dir"}
    for command, hint in advice.items():
        done = run_cli(bus, command)
        assert done.returncode == BUSY_EXIT, (
            f"`{command}` beside a running daemon exited {done.returncode}:\n{done.stderr}"
        )
        assert f"pid {d.pid}" in done.stderr and "daemon" in done.stderr, done.stderr
        assert hint in done.stderr, f"`{command}` does not say what to do:\n{done.stderr}"
        assert d.alive(), f"the daemon died after `{command}`:\n{d.tail()}"

    # The working catalog is where it was (not moved to .bak) and still the daemon's: the
    # refused commands did not open it (opening + closing it would drop the daemon's lock).
    after = os.stat(catalog)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)
    assert not catalog.with_name(catalog.name + ".bak").exists()
    assert posix_lock_holder(catalog) == d.pid
    with pytest.raises(duckdb.IOException, match="lock"):
        duckdb.connect(str(catalog), read_only=True).close()

    # The daemon kept working: a run written now reaches a fresh reader...
    make_run(bus.root, "backtest", "after")
    wait_for(lambda: "after" in live_run_ids(bus), "the run written after the refusals")
    assert live_count(bus) == runs_before + 1
    # ... the held connection still reads its own generation ...
    answer = holder.must("query held")
    assert (answer["gen"], answer["runs"]) == (held, runs_before)
    # ... and the catalog is still exclusive after that publication.
    assert run_cli(bus, "sync").returncode == BUSY_EXIT
    assert posix_lock_holder(catalog) == d.pid
    holder.must("close held")
    assert not d.events("batch.failed")
    assert d.stop() == 0
    assert catalog.exists() and not catalog.with_name(catalog.name + ".bak").exists()
