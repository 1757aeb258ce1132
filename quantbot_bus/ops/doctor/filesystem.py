"""Doctor checks of the directories the bus uses: the artifacts root can be listed all the way
down, the state and exports directories are writable, and their filesystems have free space."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ...config import Config
from .base import FAIL, OK, WARN, Check, dirs, existing_ancestor, human, user

#: Free space below either of these is a warning; below :data:`DISK_FAIL_BYTES` a failure.
DISK_WARN_BYTES = 1 << 30
DISK_WARN_RATIO = 0.05
DISK_FAIL_BYTES = 100 << 20


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
            f"artifacts root {root} cannot be listed by {user()}",
            f"give the service user read access: chmod o+rx {root} (or add it to the group "
            f"owning it, with g+rx)",
        )
    assert scan is not None
    if scan.unreadable:
        first = scan.unreadable[0]
        return Check(
            "root",
            FAIL,
            f"{len(scan.unreadable)} of {dirs(scan.dirs)} under {root} cannot be listed "
            f"by {user()}, e.g. {first}; runs there are never seen",
            f"make them readable by the service user: chmod -R g+rX,o+rX {first} (producers "
            "should write with a umask like 022 or 027 plus a shared group)",
        )
    return Check("root", OK, f"{root}: {dirs(scan.dirs)}, all readable")


def check_writable(name: str, path: Path, extra_files: tuple[Path, ...] = ()) -> Check:
    """``path`` (a directory the daemon writes) is writable, and so are ``extra_files`` in it."""
    if path.exists() and not path.is_dir():
        return Check(name, FAIL, f"{path} is not a directory", f"move {path} aside or fix {name}")
    if not path.exists():
        parent = existing_ancestor(path)
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
            f"{path} does not exist and {parent} is not writable by {user()}",
            f"sudo mkdir -p {path} && sudo chown {user()} {path}",
        )
    if not os.access(path, os.W_OK | os.X_OK):
        return Check(
            name,
            FAIL,
            f"{path} is not writable by {user()}",
            f"sudo chown -R {user()} {path} (the user the daemon runs as), or chmod u+rwx {path}",
        )
    for file in extra_files:
        if file.exists() and not os.access(file, os.R_OK | os.W_OK):
            return Check(
                name,
                FAIL,
                f"{file} is not writable by {user()}",
                f"sudo chown {user()} {file}",
            )
    return Check(name, OK, f"{path} is writable by {user()}")


def check_disk(
    name: str,
    path: Path,
    *,
    warn_bytes: int = DISK_WARN_BYTES,
    warn_ratio: float = DISK_WARN_RATIO,
    fail_bytes: int = DISK_FAIL_BYTES,
) -> Check:
    where = existing_ancestor(path)
    try:
        st = os.statvfs(where)
    except OSError as exc:
        return Check(name, WARN, f"cannot stat the filesystem of {path}: {exc}", None)
    free = st.f_bavail * st.f_frsize
    total = st.f_blocks * st.f_frsize
    ratio = free / total if total else 0.0
    detail = f"{human(free)} free of {human(total)} ({ratio:.0%}) at {where}"
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
