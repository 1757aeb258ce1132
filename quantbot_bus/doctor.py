"""``quantbot-bus doctor``: check what breaks a long-running bus in the field, and say how to fix it.

Each check returns a :class:`Check` with ``status`` ``ok``, ``warn`` or ``fail``, a one-line
``detail`` and, unless it is ok, a ``fix`` a person can act on. :func:`run_checks` runs them all:

==================  ========================================================================
name                what it looks at
==================  ========================================================================
duckdb              the installed duckdb is >= 2.0 (the working catalog's format)
root                the artifacts root exists and every directory under it can be listed
state_dir           the state directory (and the working catalog in it) is writable
exports_dir         the exports directory is writable
inotify.watches     fs.inotify.max_user_watches vs. the directories under the root (one watch
                    per directory); skipped in polling mode
inotify.instances   fs.inotify.max_user_instances vs. the inotify instances this user holds
disk.state          free space on the state directory's filesystem
disk.exports        free space on the exports directory's filesystem
snapshot            the publication (exports/bus.duckdb) opens read-only and answers a query
catalog             the working catalog's schema version, opened read-only and only when no
                    daemon holds the state lock (never read-write: that is the daemon's file)
status              the daemon's status file is fresh (when a daemon is expected)
==================  ========================================================================

Nothing here writes anything. The checks see the machine as the user running ``doctor``: run it as
the service's user (``sudo -u USER quantbot-bus doctor --config ...``) for the permission checks to
say what the service will see.
"""

from __future__ import annotations

import datetime as dt
import os
import pwd
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .config import Config
from .status import STALE_AFTER_S, StatusMissingError, pid_alive, read_status

OK, WARN, FAIL = "ok", "warn", "fail"

#: Free space below either of these is a warning; below :data:`DISK_FAIL_BYTES` a failure.
DISK_WARN_BYTES = 1 << 30
DISK_WARN_RATIO = 0.05
DISK_FAIL_BYTES = 100 << 20

INOTIFY_DIR = Path("/proc/sys/fs/inotify")
PROC = Path("/proc")
MIN_DUCKDB = (2, 0)


@dataclass(frozen=True)
class Check:
    """One check's outcome: ``status`` is ``ok``, ``warn`` or ``fail``; ``fix`` when not ok."""

    name: str
    status: str
    detail: str
    fix: str | None = None

    @property
    def ok(self) -> bool:
        """False only for a failure (a warning still counts as ok for the exit code)."""
        return self.status != FAIL

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TreeScan:
    """Directories under the root (root included), and those that could not be listed."""

    dirs: int
    unreadable: list[Path]


def scan_tree(root: Path) -> TreeScan:
    """Count directories under ``root`` with an ``os.scandir`` walk (symlinks not followed)."""
    count = 0
    unreadable: list[Path] = []
    stack = [root]
    while stack:
        current = stack.pop()
        count += 1
        try:
            with os.scandir(current) as it:
                for entry in it:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(Path(entry.path))
                    except OSError:
                        continue
        except OSError:
            unreadable.append(current)
    return TreeScan(count, unreadable)


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _dirs(n: int) -> str:
    return f"{n} directory" if n == 1 else f"{n} directories"


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


# --- individual checks -------------------------------------------------------------------------


def check_duckdb(version: str | None = None) -> Check:
    """duckdb >= 2.0 for the daemon and sync: the working catalog is a DuckDB 2 file (readers of
    the publication need only DuckDB >= 1.2)."""
    if version is None:
        import duckdb

        version = duckdb.__version__
    parts = []
    for piece in version.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    if tuple(parts) >= MIN_DUCKDB:
        return Check("duckdb", OK, f"duckdb {version}")
    return Check(
        "duckdb",
        FAIL,
        f"duckdb {version} is older than 2.0; the daemon and sync need it for the working "
        "catalog (readers of exports/bus.duckdb need only DuckDB >= 1.2)",
        "pip install --upgrade 'duckdb>=2.0' in the daemon's environment",
    )


def check_root(config: Config, scan: TreeScan | None) -> Check:
    root = config.root
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        return Check(
            "root",
            FAIL,
            f"artifacts root {root} {what}",
            f"mkdir -p {root} (producers write runs there), or set root in the config",
        )
    if not os.access(root, os.R_OK | os.X_OK):
        return Check(
            "root",
            FAIL,
            f"artifacts root {root} cannot be listed by {_user()}",
            f"give the service user read access: chmod o+rx {root} (or add it to the group "
            f"owning it, with g+rx)",
        )
    assert scan is not None
    if scan.unreadable:
        first = scan.unreadable[0]
        return Check(
            "root",
            FAIL,
            f"{len(scan.unreadable)} of {_dirs(scan.dirs)} under {root} cannot be listed "
            f"by {_user()}, e.g. {first}; runs there are never seen",
            f"make them readable by the service user: chmod -R g+rX,o+rX {first} (producers "
            "should write with a umask like 022 or 027 plus a shared group)",
        )
    return Check("root", OK, f"{root}: {_dirs(scan.dirs)}, all readable")


def check_writable(name: str, path: Path, extra_files: tuple[Path, ...] = ()) -> Check:
    """``path`` (a directory the daemon writes) is writable, and so are ``extra_files`` in it."""
    if path.exists() and not path.is_dir():
        return Check(name, FAIL, f"{path} is not a directory", f"move {path} aside or fix {name}")
    if not path.exists():
        parent = _existing_ancestor(path)
        if os.access(parent, os.W_OK | os.X_OK):
            return Check(
                name,
                WARN,
                f"{path} does not exist yet; the daemon creates it, but a systemd service needs "
                "it to exist (ReadWritePaths=)",
                f"mkdir -p {path} (`quantbot-bus systemd install` creates it for you)",
            )
        return Check(
            name,
            FAIL,
            f"{path} does not exist and {parent} is not writable by {_user()}",
            f"sudo mkdir -p {path} && sudo chown {_user()} {path}",
        )
    if not os.access(path, os.W_OK | os.X_OK):
        return Check(
            name,
            FAIL,
            f"{path} is not writable by {_user()}",
            f"sudo chown -R {_user()} {path} (the user the daemon runs as), or chmod u+rwx {path}",
        )
    for file in extra_files:
        if file.exists() and not os.access(file, os.R_OK | os.W_OK):
            return Check(
                name,
                FAIL,
                f"{file} is not writable by {_user()}",
                f"sudo chown {_user()} {file}",
            )
    return Check(name, OK, f"{path} is writable by {_user()}")


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _sysctl_fix(key: str, value: int) -> str:
    return (
        f"sudo sysctl -w fs.inotify.{key}={value} and keep it across reboots: echo "
        f"fs.inotify.{key}={value} | sudo tee /etc/sysctl.d/90-quantbot-bus.conf; or set "
        "polling = true in the config"
    )


def check_inotify_watches(config: Config, scan: TreeScan | None, inotify_dir: Path) -> Check:
    name = "inotify.watches"
    if config.polling:
        return Check(name, OK, "polling mode: inotify is not used")
    limit = _read_int(inotify_dir / "max_user_watches")
    if limit is None:
        return Check(
            name,
            WARN,
            f"cannot read {inotify_dir / 'max_user_watches'}",
            "check the limit by hand: sysctl fs.inotify.max_user_watches",
        )
    if scan is None:
        return Check(name, OK, f"limit {limit}; the root does not exist yet")
    need = scan.dirs
    suggest = max(524288, 1 << (4 * need).bit_length())
    if need >= limit:
        return Check(
            name,
            FAIL,
            f"{_dirs(need)} under {config.root} need {need} watches, but "
            f"fs.inotify.max_user_watches is {limit}: new runs would go unnoticed",
            _sysctl_fix("max_user_watches", suggest),
        )
    if need * 2 > limit:
        return Check(
            name,
            WARN,
            f"{_dirs(need)} use over half of fs.inotify.max_user_watches ({limit}), which "
            "every inotify user of this account shares (editors, IDEs)",
            _sysctl_fix("max_user_watches", suggest),
        )
    return Check(name, OK, f"{_dirs(need)} to watch, limit {limit}")


def inotify_fds(pid_dir: Path) -> int:
    """Inotify instances one process holds (``/proc/PID/fd`` links to ``anon_inode:inotify``)."""
    count = 0
    try:
        with os.scandir(pid_dir / "fd") as fds:
            for fd in fds:
                try:
                    if os.readlink(fd.path) == "anon_inode:inotify":
                        count += 1
                except OSError:
                    continue
    except OSError:
        return 0
    return count


def inotify_instances_in_use(proc: Path = PROC, uid: int | None = None) -> int:
    """Inotify instances held by the processes of ``uid`` (default: this user)."""
    uid = os.geteuid() if uid is None else uid
    total = 0
    try:
        entries = list(os.scandir(proc))
    except OSError:
        return 0
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
        except OSError:
            continue
        total += inotify_fds(Path(entry.path))
    return total


def check_inotify_instances(config: Config, inotify_dir: Path, proc: Path) -> Check:
    name = "inotify.instances"
    if config.polling:
        return Check(name, OK, "polling mode: inotify is not used")
    limit = _read_int(inotify_dir / "max_user_instances")
    if limit is None:
        return Check(
            name,
            WARN,
            f"cannot read {inotify_dir / 'max_user_instances'}",
            "check the limit by hand: sysctl fs.inotify.max_user_instances",
        )
    used = inotify_instances_in_use(proc)
    free = limit - used
    detail = f"{used} of {limit} in use by {_user()}'s processes"
    suggest = max(1024, 1 << (2 * limit).bit_length())
    if free < 1:
        return Check(
            name,
            FAIL,
            detail + ": the daemon cannot start an inotify observer",
            _sysctl_fix("max_user_instances", suggest),
        )
    if free < 4:
        return Check(
            name,
            WARN,
            detail + ": only " + str(free) + " left",
            _sysctl_fix("max_user_instances", suggest),
        )
    return Check(name, OK, detail)


def check_disk(
    name: str,
    path: Path,
    *,
    warn_bytes: int = DISK_WARN_BYTES,
    warn_ratio: float = DISK_WARN_RATIO,
    fail_bytes: int = DISK_FAIL_BYTES,
) -> Check:
    where = _existing_ancestor(path)
    try:
        st = os.statvfs(where)
    except OSError as exc:
        return Check(name, WARN, f"cannot stat the filesystem of {path}: {exc}", None)
    free = st.f_bavail * st.f_frsize
    total = st.f_blocks * st.f_frsize
    ratio = free / total if total else 0.0
    detail = f"{_human(free)} free of {_human(total)} ({ratio:.0%}) at {where}"
    fix = (
        f"free space on the filesystem holding {path}: prune old runs from the artifacts root "
        "(the daemon soft-deletes them), or move the directory to a bigger disk and update the "
        "config; a full disk makes every catalog commit fail"
    )
    if free < fail_bytes:
        return Check(name, FAIL, detail, fix)
    if free < warn_bytes or ratio < warn_ratio:
        return Check(name, WARN, detail, fix)
    return Check(name, OK, detail)


def daemon_lock_holder(lock_path: Path, proc: Path = PROC) -> int | None:
    """Pid of the process holding the daemon's flock on ``lock_path``, or None.

    Reads ``/proc/locks`` (never takes the lock itself, so a daemon starting at the same moment is
    not disturbed); falls back to the pid written in the file if ``/proc/locks`` is unreadable.
    """
    try:
        st = lock_path.stat()
    except OSError:
        return None
    try:
        text = (proc / "locks").read_text()
    except OSError:
        try:
            pid = int(lock_path.read_text().strip() or "0")
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None
    for line in text.splitlines():
        fields = line.split()
        if "->" in fields:  # a waiter, not a holder
            continue
        if len(fields) < 6 or fields[1] != "FLOCK":
            continue
        try:
            major, minor, ino = fields[5].split(":")
            if (
                int(major, 16) == os.major(st.st_dev)
                and int(minor, 16) == os.minor(st.st_dev)
                and int(ino) == st.st_ino
            ):
                return int(fields[4])
        except ValueError:
            continue
    return None


def _schema_version(path: Path) -> int:
    """``max(version)`` of ``catalog.schema_version`` in the DuckDB file, opened read-only."""
    import duckdb

    from .catalog import DB_ALIAS

    con = duckdb.connect()
    try:
        con.execute(f"ATTACH ? AS {DB_ALIAS} (READ_ONLY)", [str(path)])
        try:
            row = con.execute(
                f"SELECT max(version) FROM {DB_ALIAS}.catalog.schema_version"  # noqa: S608
            ).fetchone()
        except duckdb.CatalogException:
            raise ValueError(
                "it is not a quantbot-bus catalog (no catalog.schema_version)"
            ) from None
    finally:
        con.close()
    return int(row[0]) if row and row[0] is not None else 0


def _version_check(name: str, path: Path, what: str) -> Check:
    import duckdb

    from .catalog import SCHEMA_VERSION

    try:
        version = _schema_version(path)
    except (duckdb.Error, ValueError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "could not set lock" in text.lower() or "conflicting lock" in text.lower():
            return Check(
                name,
                WARN,
                f"{what} {path} is busy (another process holds it): {text}",
                "run doctor again when `quantbot-bus sync` has finished",
            )
        return Check(
            name,
            FAIL,
            f"{what} {path} cannot be read: {text}",
            "stop the daemon, move the file aside and run `quantbot-bus rebuild`"
            if name == "catalog"
            else "the daemon or `quantbot-bus sync` rewrites it on its next batch; if this "
            "persists, run `quantbot-bus sync` (or restart the daemon) and check its log",
        )
    if version > SCHEMA_VERSION:
        return Check(
            name,
            FAIL,
            f"{what} {path} has schema version {version}, newer than this quantbot-bus "
            f"understands ({SCHEMA_VERSION})",
            "upgrade quantbot-bus in this environment (pip install --upgrade quantbot-bus)",
        )
    if version < SCHEMA_VERSION:
        return Check(
            name,
            WARN,
            f"{what} {path} has schema version {version}; this quantbot-bus uses {SCHEMA_VERSION}",
            "restart the daemon (or run `quantbot-bus sync`): it migrates the catalog and "
            "publishes a new snapshot",
        )
    return Check(name, OK, f"{what} {path} opens, schema version {version}")


def check_snapshot(config: Config, daemon_expected: bool) -> Check:
    """The publication readers open (``exports/bus.duckdb``) opens and answers a query."""
    import duckdb

    from .catalog import open_reader
    from .errors import BusError
    from .publication import current_generation

    path = config.snapshot_path
    if not path.exists():
        return Check(
            "snapshot",
            FAIL if daemon_expected else WARN,
            f"no catalog snapshot at {path} yet: readers have nothing to query",
            "start the daemon (systemctl start quantbot-bus) or run `quantbot-bus sync`",
        )
    try:
        con = open_reader(path)
        try:
            row = con.execute("SELECT count(*) FROM catalog.runs_d").fetchone()
        finally:
            con.close()
        gen = current_generation(config.exports_dir).name
    except (BusError, duckdb.Error) as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return Check(
            "snapshot",
            FAIL,
            f"the publication {path} cannot be read: {text}",
            "the daemon or `quantbot-bus sync` publishes a new one with its next batch; if this "
            "persists, run `quantbot-bus sync` (or restart the daemon) and check its log",
        )
    runs = row[0] if row else 0
    return Check("snapshot", OK, f"publication {gen} ({path}) opens: {runs} runs")


def check_working_catalog(config: Config, holder: int | None) -> Check:
    path = config.catalog_path
    if holder is not None:
        return Check(
            "catalog",
            OK,
            f"the daemon (pid {holder}) holds {path}; not opened (the publication check covers it)",
        )
    if not path.exists():
        return Check(
            "catalog",
            OK,
            f"no working catalog at {path} yet: the daemon or `quantbot-bus sync` creates it",
        )
    return _version_check("catalog", path, "working catalog")


def check_status(config: Config, expect_daemon: bool | None, now: dt.datetime | None) -> Check:
    """The status file is fresh. ``expect_daemon`` None: expected if a status file exists."""
    name = "status"
    journal = "journalctl -u quantbot-bus -n 100 (add --user for a user service)"
    try:
        data = read_status(config.status_path, now=now)
    except StatusMissingError as exc:
        if expect_daemon:
            return Check(name, FAIL, str(exc), "start it: systemctl start quantbot-bus")
        return Check(
            name,
            OK,
            f"no status file at {config.status_path}: no daemon has run with this state dir "
            "(fine with the sync timer; --expect-daemon makes this a failure)",
        )
    state = data.get("state")
    pid = data.get("pid")
    age = data.get("age_s")
    if state == "running":
        return Check(
            name,
            OK,
            f"daemon pid {pid} running, status written {age:.0f}s ago; "
            f"{data.get('registered')} runs, {data.get('pending')} pending, "
            f"{data.get('rejected')} rejected",
        )
    if state == "degraded":
        return Check(
            name,
            FAIL,
            f"daemon pid {pid} runs degraded: {data.get('degraded')}; readers keep the last "
            "good publication and nothing registered is lost",
            "free disk space on the state and exports filesystems (or fix the error named); "
            f"the daemon catches up by itself; see {journal}",
        )
    if state == "starting":
        return Check(name, OK, f"daemon pid {pid} starting (startup reconcile in progress)")
    if state == "stale":
        return Check(
            name,
            FAIL,
            f"daemon pid {pid} is alive but has not written {config.status_path} for "
            f"{age if age is None else round(age)}s (more than {STALE_AFTER_S:.0f}s): it is hung",
            f"systemd's watchdog restarts a hung daemon; otherwise systemctl restart "
            f"quantbot-bus (or kill {pid}) and read {journal}",
        )
    if state == "dead":
        return Check(
            name,
            FAIL,
            f"daemon pid {pid} is gone without a clean stop (crash, OOM kill or SIGKILL)",
            f"read {journal}; systemctl restart quantbot-bus (Restart=on-failure does it)",
        )
    # stopped cleanly
    return Check(
        name,
        FAIL if expect_daemon else WARN,
        f"the daemon stopped cleanly at {data.get('stopped_at')}",
        "start it if it should run: systemctl start quantbot-bus",
    )


# --- all of them -------------------------------------------------------------------------------


def run_checks(
    config: Config,
    *,
    expect_daemon: bool | None = None,
    inotify_dir: Path = INOTIFY_DIR,
    proc: Path = PROC,
    now: dt.datetime | None = None,
    disk_warn_bytes: int = DISK_WARN_BYTES,
    disk_warn_ratio: float = DISK_WARN_RATIO,
    disk_fail_bytes: int = DISK_FAIL_BYTES,
) -> list[Check]:
    """Run every check for ``config``; ``expect_daemon`` None means "if a status file exists"."""
    scan = scan_tree(config.root) if config.root.is_dir() else None
    holder = daemon_lock_holder(config.lock_path, proc)
    daemon_expected = bool(expect_daemon) or (
        expect_daemon is None and (holder is not None or config.status_path.exists())
    )

    def disk(name: str, path: Path) -> Check:
        return check_disk(
            name,
            path,
            warn_bytes=disk_warn_bytes,
            warn_ratio=disk_warn_ratio,
            fail_bytes=disk_fail_bytes,
        )

    steps: list[Callable[[], Check]] = [
        check_duckdb,
        lambda: check_root(config, scan),
        lambda: check_writable("state_dir", config.state_dir, (config.catalog_path,)),
        lambda: check_writable("exports_dir", config.exports_dir),
        lambda: check_inotify_watches(config, scan, inotify_dir),
        lambda: check_inotify_instances(config, inotify_dir, proc),
        lambda: disk("disk.state", config.state_dir),
        lambda: disk("disk.exports", config.exports_dir),
        lambda: check_snapshot(config, daemon_expected),
        lambda: check_working_catalog(config, holder),
        lambda: check_status(config, expect_daemon, now),
    ]
    return [step() for step in steps]


def format_checks(checks: list[Check]) -> str:
    """``ok|WARN|FAIL name: detail`` per check, an indented ``fix:`` line when not ok."""
    label = {OK: "ok  ", WARN: "WARN", FAIL: "FAIL"}
    lines = []
    for c in checks:
        lines.append(f"{label[c.status]} {c.name}: {c.detail}")
        if c.fix and c.status != OK:
            lines.append(f"     fix: {c.fix}")
    return "\n".join(lines) + "\n"
