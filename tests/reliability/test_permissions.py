"""The daemon as an unprivileged user: read-only artifacts, no network, no world-writable files,
no symlink followed out of the root.

The test (root) runs the daemon as ``nobody`` (uid/gid 65534, no supplementary groups, via
``setpriv``) on a bus in a fresh ``/tmp`` directory: the artifacts tree is owned by root and only
readable by the daemon; the state and exports directories are owned by ``nobody``. When the
Python interpreter lives under a directory ``nobody`` cannot enter (pyenv under ``/root``), the
daemon is started in a private mount namespace where that directory is a tmpfs exposing only the
interpreter's tree (read-only bind mount): nothing changes for any other process. Skipped with the
reason when not root or when the tools are missing.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from builders import RunFactory, live_run_ids, open_rejections, snapshot_query, wait_for

from quantbot_bus.config import Config

from .helpers import DaemonProcess, exported_run_ids

UNPRIVILEGED = "nobody"


def _untraversable_ancestor(path: Path) -> Path | None:
    """The first ancestor of ``path`` that others may not enter (mode without o+x), if any."""
    for parent in reversed(path.parents):
        if parent != Path("/") and not os.stat(parent).st_mode & stat.S_IXOTH:
            return parent
    return None


def _prefix(base: Path, uid: int, gid: int) -> list[str]:
    drop = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
    interpreter = Path(os.path.realpath(sys.executable))
    hidden = _untraversable_ancestor(interpreter)
    if hidden is None:
        return drop
    child = hidden / interpreter.relative_to(hidden).parts[0]
    stash = base / "interpreter-stash"
    stash.mkdir()
    script = (
        'set -e; mount --bind -o ro "$1" "$2"; '
        'mount -t tmpfs -o mode=0755,size=1m tmpfs "$3"; mkdir "$3/$4"; '
        'mount --bind -o ro "$2" "$3/$4"; shift 4; exec "$@"'
    )
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        "sh",
        str(child),
        str(stash),
        str(hidden),
        child.name,
        *drop,
    ]


@pytest.fixture
def unprivileged_bus() -> Iterator[tuple[Config, Path, int, int]]:
    if os.geteuid() != 0:
        pytest.skip("needs root to start the daemon as another user")
    for tool in ("setpriv", "unshare"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} (util-linux) is not installed")
    try:
        user = pwd.getpwnam(UNPRIVILEGED)
    except KeyError:
        pytest.skip(f"there is no user {UNPRIVILEGED!r}")
    base = Path(tempfile.mkdtemp(prefix="qb-perm-", dir="/tmp"))
    try:
        base.chmod(0o755)
        config = Config(
            root=base / "artifacts", exports_dir=base / "exports", state_dir=base / "state"
        ).validate()
        config.root.mkdir(mode=0o755)
        for d in (config.exports_dir, config.state_dir, base / "home", base / "logs"):
            d.mkdir(mode=0o755)
            os.chown(d, user.pw_uid, user.pw_gid)
        yield config, base, user.pw_uid, user.pw_gid
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _socket_inodes(pid: int) -> set[int]:
    out = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


def _inodes_in(table: Path, column: int) -> set[int]:
    try:
        lines = table.read_text().splitlines()[1:]
    except OSError:
        return set()
    return {int(line.split()[column]) for line in lines if len(line.split()) > column}


def _network_sockets(pid: int) -> dict[str, set[int]]:
    """Socket inodes of ``pid`` by family: unix, and anything inet (tcp/udp/raw, v4 and v6)."""
    mine = _socket_inodes(pid)
    net = Path(f"/proc/{pid}/net")
    unix = _inodes_in(net / "unix", 6) & mine
    inet: set[int] = set()
    for name in ("tcp", "tcp6", "udp", "udp6", "raw", "raw6", "udplite", "udplite6"):
        inet |= _inodes_in(net / name, 9) & mine
    return {"all": mine, "unix": unix, "inet": inet}


def test_unprivileged_daemon_read_only_artifacts_no_network_no_world_writable_files(
    unprivileged_bus: tuple[Config, Path, int, int],
    daemon_factory: Callable[..., DaemonProcess],
    figures: dict[str, Any],
) -> None:
    config, base, uid, gid = unprivileged_bus
    factory = RunFactory(base / "tpl")
    for i in range(20):
        factory.make(config.root / "backtest", f"before-{i:02d}")

    # Symlinks out of the root: a run dir, and a whole run-type dir, pointing at complete runs.
    outside = base / "outside"
    factory.make(outside, "escaped-run")
    factory.make(outside / "typedir", "escaped-typed")
    (config.root / "backtest" / "link-run").symlink_to(outside / "escaped-run")
    (config.root / "linked-type").symlink_to(outside / "typedir")

    # A notify socket (AF_UNIX, as systemd gives): the only kind of socket allowed.
    notify = base / "notify.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(notify))
    notify.chmod(0o777)
    server.settimeout(60)

    d = daemon_factory(
        config,
        env={"NOTIFY_SOCKET": str(notify), "HOME": str(base / "home")},
        prefix=_prefix(base, uid, gid),
        log_dir=base / "logs",
    )
    try:
        d.start()
        while not server.recv(4096).startswith(b"READY=1"):  # STATUS= lines may come first
            pass
        status_line = Path(f"/proc/{d.pid}/status").read_text()
        uids = next(line for line in status_line.splitlines() if line.startswith("Uid:"))
        assert uids.split()[1:] == [str(uid)] * 4, uids  # real, effective, saved, fs
        assert live_run_ids(config) == {f"before-{i:02d}" for i in range(20)}

        samples = [_network_sockets(d.pid)]
        for i in range(10):
            factory.make(config.root / "backtest", f"while-{i:02d}")
        wait_for(
            lambda: {f"while-{i:02d}" for i in range(10)} <= live_run_ids(config),
            "runs dropped by another user while the daemon runs",
        )
        samples.append(_network_sockets(d.pid))
        wait_for(
            lambda: {f"while-{i:02d}" for i in range(10)} <= (exported_run_ids(config) or set()),
            "the exports refreshed with those runs",
        )
        samples.append(_network_sockets(d.pid))
        status = d.wait_settled()
        assert status["registered"] == 30
        assert d.stop() == 0
    finally:
        server.close()

    # No network socket at any sample: every socket it held was AF_UNIX.
    for sample in samples:
        assert sample["inet"] == set(), f"the daemon held a network socket: {sample}"
        assert sample["all"] == sample["unix"], f"a socket that is not AF_UNIX: {sample}"

    # Nothing out of the root: neither symlinked run was registered, every run_dir is inside.
    live = live_run_ids(config)
    assert not {"escaped-run", "escaped-typed"} & live
    root = str(config.root) + "/"
    dirs = [r[0] for r in snapshot_query(config, "SELECT run_dir FROM catalog.runs_d")]
    paths = [r[0] for r in snapshot_query(config, "SELECT path FROM catalog.artifacts_f")]
    assert all(
        p.startswith(root) and "/link-run" not in p and "/linked-type/" not in p
        for p in dirs + paths
    )
    rejected = open_rejections(config)

    # Files it created: owned by it, none world-writable; the artifacts tree untouched by it.
    created = []
    for top in (config.state_dir, config.exports_dir):
        for folder, subdirs, files in os.walk(top):
            for name in [*subdirs, *files]:
                st = os.lstat(Path(folder) / name)
                created.append((Path(folder) / name, st))
    assert created
    # A symlink's own mode is always lrwxrwxrwx and means nothing (exports/current and
    # exports/slots/<n> are symlinks to generations): what counts is the file it points to,
    # which must be the daemon's own, inside the directory, and not world-writable either.
    links = [(p, st) for p, st in created if stat.S_ISLNK(st.st_mode)]
    world_writable = [
        str(p) for p, st in created if not stat.S_ISLNK(st.st_mode) and st.st_mode & stat.S_IWOTH
    ]
    for link, _ in links:
        top = next(t for t in (config.state_dir, config.exports_dir) if t in link.parents)
        target = Path(os.path.realpath(link))
        assert top in target.parents, f"{link} points out of {top}: {target}"
        if target.exists():  # a views slot may still point at a generation removed meanwhile
            tst = os.stat(target)
            assert tst.st_uid == uid, f"{link} -> {target} is not the daemon's"
            if tst.st_mode & stat.S_IWOTH:
                world_writable.append(f"{link} -> {target}")
    assert world_writable == []
    assert {st.st_uid for _, st in created} == {uid}
    foreign = [
        str(p)
        for p in config.root.rglob("*")
        if os.lstat(p).st_uid != 0
        or (os.lstat(p).st_mode & stat.S_IWOTH and not p.is_symlink())  # links are always 777
    ]
    assert foreign == [], "the artifacts tree was written by the daemon"
    figures.update(
        {
            "user": f"{UNPRIVILEGED} ({uid}:{gid})",
            "socket_samples": len(samples),
            "sockets_seen": sorted({len(s["all"]) for s in samples}),
            "network_sockets": 0,
            "files_created_checked": len(created),
            "world_writable": 0,
            "symlinks_checked_by_target": len(links),
            "symlinks_out_of_root_registered": 0,
            "symlinked_rejections": len(rejected),
        }
    )
