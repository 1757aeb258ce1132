"""Doctor checks of the inotify limits: ``fs.inotify.max_user_watches`` against the directories
under the root (one watch each), ``max_user_instances`` against what this user's processes hold.
Both pass in polling mode."""

from __future__ import annotations

import os
from pathlib import Path

from ...config import Config
from .base import FAIL, OK, PROC, WARN, Check, dirs, user
from .filesystem import TreeScan

INOTIFY_DIR = Path("/proc/sys/fs/inotify")


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


def _limit(config: Config, name: str, inotify_dir: Path, key: str) -> int | Check:
    """The limit ``fs.inotify.<key>``, or the check's outcome when there is nothing to compare
    (polling mode, or the limit cannot be read)."""
    if config.polling:
        return Check(name, OK, "polling mode: inotify is not used")
    limit = _read_int(inotify_dir / key)
    if limit is None:
        return Check(
            name,
            WARN,
            f"cannot read {inotify_dir / key}",
            f"check the limit by hand: sysctl fs.inotify.{key}",
        )
    return limit


def check_inotify_watches(config: Config, scan: TreeScan | None, inotify_dir: Path) -> Check:
    name = "inotify.watches"
    limit = _limit(config, name, inotify_dir, "max_user_watches")
    if isinstance(limit, Check):
        return limit
    if scan is None:
        return Check(name, OK, f"limit {limit}; the root does not exist yet")
    need = scan.dirs
    suggest = max(524288, 1 << (4 * need).bit_length())
    if need >= limit:
        return Check(
            name,
            FAIL,
            f"{dirs(need)} under {config.root} need {need} watches, but "
            f"fs.inotify.max_user_watches is {limit}: new runs would go unnoticed",
            _sysctl_fix("max_user_watches", suggest),
        )
    if need * 2 > limit:
        return Check(
            name,
            WARN,
            f"{dirs(need)} use over half of fs.inotify.max_user_watches ({limit}), which "
            "every inotify user of this account shares (editors, IDEs)",
            _sysctl_fix("max_user_watches", suggest),
        )
    return Check(name, OK, f"{dirs(need)} to watch, limit {limit}")


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
    limit = _limit(config, name, inotify_dir, "max_user_instances")
    if isinstance(limit, Check):
        return limit
    used = inotify_instances_in_use(proc)
    free = limit - used
    detail = f"{used} of {limit} in use by {user()}'s processes"
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
