"""doctor: every check against real directories, real DuckDB files, real locks and processes."""

from __future__ import annotations

import ctypes
import datetime as dt
import fcntl
import json
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from builders import make_catalog, make_run
from click.testing import CliRunner

from quantbot_bus.catalog import SCHEMA_VERSION
from quantbot_bus.cli import main
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
# Disk thresholds that any machine passes, for tests about other checks.
EASY_DISK = {"disk_warn_bytes": 0, "disk_warn_ratio": 0.0, "disk_fail_bytes": 0}


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


def fake_limits(tmp_path: Path, watches: int, instances: int) -> Path:
    """A directory shaped like /proc/sys/fs/inotify with the given limits."""
    d = tmp_path / "inotify-limits"
    d.mkdir(exist_ok=True)
    (d / "max_user_watches").write_text(f"{watches}\n")
    (d / "max_user_instances").write_text(f"{instances}\n")
    return d


@pytest.fixture
def inotify_instances() -> Iterator[Callable[[int], None]]:
    """Open real inotify instances in this process (closed afterwards)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fds: list[int] = []

    def open_n(n: int) -> None:
        for _ in range(n):
            fd = libc.inotify_init1(os.O_CLOEXEC)
            assert fd >= 0, os.strerror(ctypes.get_errno())
            fds.append(fd)

    yield open_n
    for fd in fds:
        os.close(fd)


# --- the whole run ------------------------------------------------------------------------------


def test_a_healthy_bus_passes_every_check(bus: Config) -> None:
    for sub in ("a/r1", "a/r2", "b/r3"):
        make_run(bus.root, *sub.split("/"))  # a run directory each
    make_catalog(bus)
    running_status(bus)
    checks = doctor.run_checks(bus, **EASY_DISK)
    assert [c.name for c in checks] == NAMES
    assert {c.name: c.status for c in checks if c.status != "ok"} == {}
    found = by_name(checks)
    assert found["root"].detail == f"{bus.root}: 6 directories, all readable"
    assert found["inotify.watches"].detail.startswith("6 directories to watch, limit ")
    assert found["snapshot"].detail == published(bus, 3)  # read from the publication
    assert found["catalog"].detail == (
        f"working catalog {bus.catalog_path} opens, schema version {SCHEMA_VERSION}"
    )
    assert found["status"].detail.startswith(f"daemon pid {os.getpid()} running")
    assert all(c.fix is None for c in checks)


def test_a_fresh_bus_warns_but_does_not_fail(bus: Config) -> None:
    checks = by_name(doctor.run_checks(bus, **EASY_DISK))
    assert checks["snapshot"].status == "warn"
    assert "quantbot-bus sync" in (checks["snapshot"].fix or "")
    assert checks["status"].status == "ok"
    assert all(c.ok for c in checks.values())
    expected = doctor.run_checks(bus, expect_daemon=True, **EASY_DISK)
    assert [c.name for c in expected if not c.ok] == ["snapshot", "status"]


def test_missing_root_fails_with_a_fix(tmp_path: Path) -> None:
    cfg = Config(
        root=tmp_path / "nope", exports_dir=tmp_path / "e", state_dir=tmp_path / "s"
    ).validate()
    checks = by_name(doctor.run_checks(cfg, **EASY_DISK))
    assert checks["root"].status == "fail"
    assert checks["root"].detail == f"artifacts root {tmp_path / 'nope'} does not exist"
    assert checks["root"].fix is not None and f"mkdir -p {tmp_path / 'nope'}" in checks["root"].fix
    assert checks["state_dir"].status == "warn"  # missing but creatable
    assert "ReadWritePaths" in checks["state_dir"].detail


# --- permissions (as an unprivileged user: root bypasses permission bits) ---------------------


def as_unprivileged(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` where permission bits apply: in place when not root; as root, in a forked
    child that drops to nobody (65534) first, returning its JSON-able result."""
    if os.geteuid() != 0:
        return fn()
    read_fd, write_fd = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            payload = json.dumps(fn()).encode()
        except BaseException as exc:  # report anything to the parent
            payload = json.dumps({"child_error": repr(exc)}).encode()
            code = 1
        with os.fdopen(write_fd, "wb") as fh:
            fh.write(payload)
        os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as fh:
        data = fh.read()
    _, status = os.waitpid(pid, 0)
    result = json.loads(data)
    assert os.waitstatus_to_exitcode(status) == 0, result
    return result


@pytest.fixture
def open_bus() -> Iterator[Config]:
    """A bus in a world-traversable temp dir (pytest's tmp_path is private to root)."""
    base = Path(tempfile.mkdtemp(prefix="qb-doctor-"))
    try:
        base.chmod(0o755)
        cfg = Config(
            root=base / "artifacts", exports_dir=base / "exports", state_dir=base / "state"
        ).validate()
        for d in (cfg.root, cfg.exports_dir, cfg.state_dir):
            d.mkdir()
            d.chmod(0o755)
        yield cfg
    finally:
        for d in base.rglob("*"):
            if d.is_dir():
                d.chmod(0o755)
        subprocess.run(["rm", "-rf", str(base)], check=True)


def test_unwritable_state_and_unreadable_subdir_fail(open_bus: Config) -> None:
    cfg = open_bus
    (cfg.root / "ok_run").mkdir(mode=0o755)
    secret = cfg.root / "private"
    secret.mkdir()
    (secret / "hidden_run").mkdir()
    secret.chmod(0o700)
    cfg.state_dir.chmod(0o555)
    cfg.exports_dir.chmod(0o777)

    def checks() -> dict[str, dict[str, Any]]:
        scan = doctor.scan_tree(cfg.root)
        return {
            "root": doctor.check_root(cfg, scan).as_dict(),
            "state_dir": doctor.check_writable("state_dir", cfg.state_dir).as_dict(),
            "exports_dir": doctor.check_writable("exports_dir", cfg.exports_dir).as_dict(),
        }

    got = as_unprivileged(checks)
    assert got["root"]["status"] == "fail"
    assert f"e.g. {secret}" in got["root"]["detail"]
    assert "cannot be listed" in got["root"]["detail"]
    assert "chmod -R g+rX,o+rX" in got["root"]["fix"]
    assert got["state_dir"]["status"] == "fail"
    assert got["state_dir"]["detail"].startswith(f"{cfg.state_dir} is not writable by ")
    assert "chown" in got["state_dir"]["fix"]
    assert got["exports_dir"]["status"] == "ok"


def test_unreadable_root_fails(open_bus: Config) -> None:
    open_bus.root.chmod(0o700)
    got = as_unprivileged(lambda: doctor.check_root(open_bus, None).as_dict())
    assert got["status"] == "fail"
    assert got["detail"].startswith(f"artifacts root {open_bus.root} cannot be listed by ")


def test_a_working_catalog_that_is_not_writable_fails(open_bus: Config) -> None:
    make_catalog(open_bus)
    open_bus.state_dir.chmod(0o777)  # the directory is writable for everyone...
    open_bus.catalog_path.chmod(0o444)  # ...the catalog file in it is not
    got = as_unprivileged(
        lambda: doctor.check_writable(
            "state_dir", open_bus.state_dir, (open_bus.catalog_path,)
        ).as_dict()
    )
    assert got["status"] == "fail"
    assert got["detail"].startswith(f"{open_bus.catalog_path} is not writable by ")


# --- inotify -----------------------------------------------------------------------------------


def test_inotify_watches_against_the_directory_count(bus: Config, tmp_path: Path) -> None:
    for i in range(11):
        (bus.root / f"r{i}").mkdir()  # 12 directories with the root
    scan = doctor.scan_tree(bus.root)
    assert scan.dirs == 12 and scan.unreadable == []

    fail = doctor.check_inotify_watches(bus, scan, fake_limits(tmp_path, 10, 128))
    assert fail.status == "fail"
    assert fail.detail == (
        f"12 directories under {bus.root} need 12 watches, but fs.inotify.max_user_watches "
        "is 10: new runs would go unnoticed"
    )
    assert fail.fix is not None
    assert "sudo sysctl -w fs.inotify.max_user_watches=524288" in fail.fix
    assert "/etc/sysctl.d/" in fail.fix and "polling = true" in fail.fix

    warn = doctor.check_inotify_watches(bus, scan, fake_limits(tmp_path, 20, 128))
    assert warn.status == "warn"
    ok = doctor.check_inotify_watches(bus, scan, fake_limits(tmp_path, 100, 128))
    assert (ok.status, ok.detail) == ("ok", "12 directories to watch, limit 100")

    polling = Config(**{**bus.__dict__, "polling": True})
    assert doctor.check_inotify_watches(polling, scan, fake_limits(tmp_path, 1, 1)).status == "ok"
    missing = doctor.check_inotify_watches(bus, scan, tmp_path / "no-such-dir")
    assert missing.status == "warn" and "cannot read" in missing.detail


def test_inotify_instances_are_counted_from_proc(
    bus: Config, tmp_path: Path, inotify_instances: Callable[[int], None]
) -> None:
    me = Path(f"/proc/{os.getpid()}")
    before = doctor.inotify_fds(me)
    inotify_instances(3)
    assert doctor.inotify_fds(me) == before + 3
    assert doctor.inotify_instances_in_use() >= 3

    used = doctor.inotify_instances_in_use()
    full = doctor.check_inotify_instances(bus, fake_limits(tmp_path, 10**6, 3), doctor.PROC)
    assert full.status == "fail"
    assert "the daemon cannot start an inotify observer" in full.detail
    assert full.fix is not None and "fs.inotify.max_user_instances=1024" in full.fix
    roomy = doctor.check_inotify_instances(
        bus, fake_limits(tmp_path, 10**6, used + 10**4), doctor.PROC
    )
    assert roomy.status == "ok"


# --- disk ---------------------------------------------------------------------------------------


def test_disk_thresholds(bus: Config) -> None:
    ok = doctor.check_disk("disk.state", bus.state_dir, warn_bytes=0, warn_ratio=0, fail_bytes=0)
    assert ok.status == "ok" and ok.detail.endswith(f"at {bus.state_dir}")
    warn = doctor.check_disk("disk.state", bus.state_dir, warn_bytes=1 << 60)
    assert warn.status == "warn" and warn.fix is not None and "full disk" in warn.fix
    fail = doctor.check_disk("disk.state", bus.state_dir, fail_bytes=1 << 60)
    assert fail.status == "fail"
    missing = doctor.check_disk("disk.x", bus.state_dir / "not" / "yet", warn_bytes=0)
    assert missing.detail.endswith(f"at {bus.state_dir}")  # measured on the nearest parent


# --- duckdb, snapshot and catalog ----------------------------------------------------------------


def test_duckdb_version() -> None:
    assert doctor.check_duckdb().status == "ok"
    assert doctor.check_duckdb("2.0.0").status == "ok"
    assert doctor.check_duckdb("10.1.0-dev12").status == "ok"
    old = doctor.check_duckdb("1.4.2")
    assert old.status == "fail" and old.fix is not None and "duckdb>=2.0" in old.fix


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


# --- status ----------------------------------------------------------------------------------------


def dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(proc.stdout)


def test_status_states(bus: Config) -> None:
    running_status(bus)
    assert doctor.check_status(bus, None, None).status == "ok"

    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)
    stale = doctor.check_status(bus, None, later)
    assert stale.status == "fail" and "it is hung" in stale.detail
    assert stale.fix is not None and "journalctl -u quantbot-bus" in stale.fix

    running_status(bus, pid=dead_pid())
    dead = doctor.check_status(bus, None, None)
    assert dead.status == "fail" and "without a clean stop" in dead.detail

    running_status(bus, stopped_at=iso_utc(), ready=False)
    assert doctor.check_status(bus, None, None).status == "warn"
    assert doctor.check_status(bus, True, None).status == "fail"

    bus.status_path.unlink()
    assert doctor.check_status(bus, None, None).status == "ok"
    missing = doctor.check_status(bus, True, None)
    assert missing.status == "fail" and "no status file" in missing.detail


# --- the command -----------------------------------------------------------------------------------


def cli_args(bus: Config, *extra: str) -> list[str]:
    return [
        "doctor",
        "--root",
        str(bus.root),
        "--state-dir",
        str(bus.state_dir),
        "--exports-dir",
        str(bus.exports_dir),
        *extra,
    ]


def test_cli_text_output_and_exit_codes(bus: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QUANTBOT_BUS_CONFIG", raising=False)
    make_catalog(bus)
    running_status(bus)
    res = CliRunner().invoke(main, cli_args(bus, "--format", "table"))
    lines = res.stdout.splitlines()
    statuses = [line.split()[0] for line in lines if not line.startswith(" ")]
    assert [line.split()[1].rstrip(":") for line in lines if not line.startswith(" ")] == NAMES
    assert set(statuses) <= {"ok", "WARN"}  # the disks of this machine may warn
    assert res.exit_code == 0, res.output
    assert f"ok   snapshot: {published(bus, 0)}" in lines

    bus.state_dir.joinpath("status.json").unlink()
    (bus.root).rmdir()
    res = CliRunner().invoke(main, cli_args(bus, "--format", "table", "--expect-daemon"))
    assert res.exit_code == 9
    lines = res.stdout.splitlines()
    root_line = lines.index(f"FAIL root: artifacts root {bus.root} does not exist")
    assert lines[root_line + 1].startswith("     fix: mkdir -p ")
    assert res.stderr == "Error: 2 check(s) failed: root, status\n"


def test_cli_json_output(bus: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QUANTBOT_BUS_CONFIG", raising=False)
    res = CliRunner().invoke(main, cli_args(bus))  # not a terminal: JSON by default
    data = json.loads(res.stdout)
    assert [d["name"] for d in data] == NAMES
    assert all(set(d) == {"name", "status", "detail", "fix"} for d in data)
    assert {d["status"] for d in data} <= {"ok", "warn", "fail"}
    snapshot = next(d for d in data if d["name"] == "snapshot")
    assert snapshot["status"] == "warn" and snapshot["fix"]
    assert res.exit_code == (9 if any(d["status"] == "fail" for d in data) else 0)


def test_format_checks() -> None:
    text = doctor.format_checks(
        [
            doctor.Check("a", "ok", "fine"),
            doctor.Check("b", "warn", "meh", "do x"),
            doctor.Check("c", "fail", "bad", "do y"),
        ]
    )
    assert text == ("ok   a: fine\nWARN b: meh\n     fix: do x\nFAIL c: bad\n     fix: do y\n")
