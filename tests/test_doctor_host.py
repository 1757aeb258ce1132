"""doctor's checks of the host: inotify watches against the directories to watch and inotify
instances counted from /proc (real instances opened), free disk against the thresholds, the
DuckDB version."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from quantbot_bus.config import Config
from quantbot_bus.ops import doctor


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


def test_duckdb_version() -> None:
    assert doctor.check_duckdb().status == "ok"
    assert doctor.check_duckdb("2.0.0").status == "ok"
    assert doctor.check_duckdb("10.1.0-dev12").status == "ok"
    old = doctor.check_duckdb("1.4.2")
    assert old.status == "fail" and old.fix is not None and "duckdb>=2.0" in old.fix
