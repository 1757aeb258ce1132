"""Doctor checks of the daemon: who holds the state-dir lock (read from ``/proc/locks``, never
taken), and whether the status file says the daemon is alive and well."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from ...config import Config
from ...daemon.status import STALE_AFTER_S, StatusMissingError, pid_alive, read_status
from .base import FAIL, OK, PROC, WARN, Check


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
    if state == "degraded" and data.get("backend") == "iceberg":
        return Check(
            name,
            FAIL,
            f"daemon pid {pid} runs degraded: {data.get('degraded')}; readers keep reading the "
            "tables as last committed, and new runs wait in the bucket (nothing is lost)",
            "bring back what the error names: PostgreSQL at catalog_uri, the object store at "
            "AWS_ENDPOINT_URL (the iceberg_catalog and object_store checks above probe them), "
            "or free space for the ledger in state_dir; "
            f"the daemon retries every 30 s at most and catches up by itself; see {journal}",
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
