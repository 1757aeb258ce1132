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

With ``catalog = "iceberg"`` (:mod:`.scaleout`) the local root, inotify, exports and
publication checks do not apply; instead ``object_store`` (the bucket can be listed) and
``iceberg_catalog`` (the PostgreSQL catalog answers) run, beside duckdb, state_dir, disk.state
and status, then ``upkeep`` (the running daemon's last upkeep round went through, and none has
run for more than two hours).

The checks live by area: :mod:`.filesystem` (root, writability, disk), :mod:`.inotify`,
:mod:`.catalog` (duckdb, publication, working catalog) and :mod:`.daemon` (lock holder, status).

Nothing here writes anything. The checks see the machine as the user running ``doctor``: run it as
the service's user (``sudo -u USER quantbot-bus doctor --config ...``) for the permission checks to
say what the service will see.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

from ...config import Config
from .base import FAIL, OK, PROC, WARN, Check, format_checks
from .catalog import MIN_DUCKDB, check_duckdb, check_snapshot, check_working_catalog
from .daemon import check_status, daemon_lock_holder
from .filesystem import (
    DISK_FAIL_BYTES,
    DISK_WARN_BYTES,
    DISK_WARN_RATIO,
    TreeScan,
    check_disk,
    check_root,
    check_writable,
    scan_tree,
)
from .inotify import (
    INOTIFY_DIR,
    check_inotify_instances,
    check_inotify_watches,
    inotify_fds,
    inotify_instances_in_use,
)


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
    scan = scan_tree(config.root) if config.root.is_dir() and not config.object_root else None
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

    if config.catalog == "iceberg":
        from .scaleout import check_iceberg_catalog, check_object_store, check_upkeep

        scale_out: list[Callable[[], Check]] = [
            check_duckdb,
            lambda: check_writable("state_dir", config.state_dir),
            lambda: disk("disk.state", config.state_dir),
            lambda: check_object_store(config),
            lambda: check_iceberg_catalog(config),
            lambda: check_status(config, expect_daemon, now),
            lambda: check_upkeep(config, now),
        ]
        return [step() for step in scale_out]
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


__all__ = [
    "DISK_FAIL_BYTES",
    "DISK_WARN_BYTES",
    "DISK_WARN_RATIO",
    "FAIL",
    "INOTIFY_DIR",
    "MIN_DUCKDB",
    "OK",
    "PROC",
    "WARN",
    "Check",
    "TreeScan",
    "check_disk",
    "check_duckdb",
    "check_inotify_instances",
    "check_inotify_watches",
    "check_root",
    "check_snapshot",
    "check_status",
    "check_working_catalog",
    "check_writable",
    "daemon_lock_holder",
    "format_checks",
    "inotify_fds",
    "inotify_instances_in_use",
    "run_checks",
    "scan_tree",
]
