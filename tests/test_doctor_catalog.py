"""doctor's checks of the working catalog and the publication: schema versions newer, older or
garbage, a publication that is not one, and the catalog never opened while a daemon holds its
lock (real processes holding real DuckDB files and locks)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import pytest
from builders import make_catalog
from doctor_checks import EASY_DISK, by_name

from quantbot_bus.catalog import SCHEMA_VERSION
from quantbot_bus.config import Config
from quantbot_bus.ops import doctor


def set_schema_version(path: Path, version: int) -> None:
    """The working catalog's ``catalog.schema_version`` (a table) says ``version``."""
    con = duckdb.connect()
    con.execute("ATTACH ? AS snap", [str(path)])
    con.execute("DELETE FROM snap.catalog.schema_version")
    con.execute("INSERT INTO snap.catalog.schema_version VALUES (?, now()::TIMESTAMP)", [version])
    con.close()


def test_schema_versions_newer_older_and_garbage(bus: Config) -> None:
    make_catalog(bus)
    set_schema_version(bus.catalog_path, SCHEMA_VERSION + 1)
    newer = doctor.check_working_catalog(bus, None)
    assert newer.status == "fail"
    assert f"schema version {SCHEMA_VERSION + 1}, newer" in newer.detail
    assert newer.fix is not None and "upgrade quantbot-bus" in newer.fix
    set_schema_version(bus.catalog_path, SCHEMA_VERSION - 1)
    older = doctor.check_working_catalog(bus, None)
    assert older.status == "warn" and "migrates" in (older.fix or "")

    bus.catalog_path.write_bytes(b"this is not a duckdb file" * 100)
    garbage = doctor.check_working_catalog(bus, None)
    assert garbage.status == "fail"
    assert garbage.fix == "stop the daemon, move the file aside and run `quantbot-bus rebuild`"

    # The publication: a file that is not a DuckDB database, or a DuckDB database that is not a
    # quantbot-bus publication (no catalog views), fails and says how it is published again.
    assert doctor.check_snapshot(bus, False).status == "ok"
    bus.snapshot_path.unlink()
    bus.snapshot_path.write_bytes(b"this is not a duckdb file" * 100)
    broken = doctor.check_snapshot(bus, False)
    assert broken.status == "fail"
    assert broken.detail.startswith(f"the publication {bus.snapshot_path} cannot be read: ")
    assert broken.fix is not None and "quantbot-bus sync" in broken.fix
    other = bus.exports_dir / "other.duckdb"
    duckdb.connect(str(other)).execute("CREATE TABLE t(x INT)").close()
    other.replace(bus.snapshot_path)
    foreign = doctor.check_snapshot(bus, False)
    assert foreign.status == "fail"
    assert foreign.detail.startswith(f"the publication {bus.snapshot_path} cannot be read: ")
    assert "catalog.runs_d" in foreign.detail


HOLD = """
import fcntl, os, sys, time
from quantbot_bus.catalog import Catalog
lock, catalog = sys.argv[1], sys.argv[2]
fd = None
if lock != "-":
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.pwrite(fd, f"{os.getpid()}\\n".encode(), 0)
cat = Catalog.open(catalog)
print("held", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def holder(bus: Config) -> Iterator[Callable[[bool], subprocess.Popen[str]]]:
    """Start a process holding the working catalog read-write (and the daemon lock if asked)."""
    procs: list[subprocess.Popen[str]] = []

    def start(with_lock: bool) -> subprocess.Popen[str]:
        lock = str(bus.lock_path) if with_lock else "-"
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD, lock, str(bus.catalog_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield start
    for proc in procs:
        proc.communicate("", timeout=30)


def test_catalog_is_never_opened_while_the_daemon_holds_the_lock(
    bus: Config, holder: Callable[[bool], subprocess.Popen[str]]
) -> None:
    make_catalog(bus)
    proc = holder(True)
    assert doctor.daemon_lock_holder(bus.lock_path) == proc.pid
    checks = by_name(doctor.run_checks(bus, **EASY_DISK))
    assert checks["catalog"].status == "ok"
    assert checks["catalog"].detail.startswith(f"the daemon (pid {proc.pid}) holds")
    assert checks["snapshot"].status == "ok"  # readers are unaffected
    # the daemon still has its file: a writer in that process would still work
    proc.communicate("", timeout=30)
    assert proc.returncode == 0
    assert doctor.daemon_lock_holder(bus.lock_path) is None  # lock released with the process


def test_a_busy_catalog_without_a_daemon_is_a_warning(
    bus: Config, holder: Callable[[bool], subprocess.Popen[str]]
) -> None:
    make_catalog(bus)
    proc = holder(False)  # like a running `sync`: holds the catalog, not the daemon lock
    check = doctor.check_working_catalog(bus, doctor.daemon_lock_holder(bus.lock_path))
    assert check.status == "warn"
    assert f"(PID {proc.pid})" in check.detail


def test_lock_holder_reads_proc_locks_not_the_pid_in_the_file(bus: Config) -> None:
    bus.lock_path.write_text("12345\n")  # a stale pid from a crashed daemon, no flock held
    assert doctor.daemon_lock_holder(bus.lock_path) is None
    fd = os.open(bus.lock_path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert doctor.daemon_lock_holder(bus.lock_path) == os.getpid()
    finally:
        os.close(fd)
    assert doctor.daemon_lock_holder(bus.state_dir / "missing.lock") is None
