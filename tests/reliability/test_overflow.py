"""inotify queue overflow and the inotify watch limit: zero runs missed, and the log says why.

Queue overflow, without touching any system-wide setting: the daemon is SIGSTOPped (so nobody
reads its inotify queue), the runs are renamed into the root (one IN_MOVED_TO each) until more
events are queued than ``/proc/sys/fs/inotify/max_queued_events`` allows, then SIGCONT. The kernel
drops the excess and queues IN_Q_OVERFLOW; the daemon must log ``watch.overflow``, rescan
(``rescan.done`` with reason ``overflow``) and register every run. The fast version renames 3,000
runs and tops the queue up with hidden scratch files created and removed in the watched directory
(three events each, ignored by the daemon); the slow version renames 20,000 runs and nothing else.
(Lowering ``max_queued_events`` instead would be global: every inotify user on the machine started
meanwhile would get the small queue.)

Watch limit: ``fs.inotify.max_user_watches`` is global too, but the kernel also counts watches
per user namespace (``/proc/sys/user/max_inotify_watches``), so the daemon runs under ``unshare
--user --map-root-user`` with a limit of 50 watches set inside its own namespace, for it alone.
The tree needs hundreds; the daemon must still register every run, through its timer rescans.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from quantbot_bus.config import Config

from .helpers import (
    DaemonProcess,
    RunFactory,
    assert_consistent,
    live_count,
    live_run_ids,
    wait_for,
)


def _max_queued_events() -> int:
    return int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())


def run_overflow(
    config: Config,
    tmp_path: Path,
    daemon_factory: Callable[..., DaemonProcess],
    n_runs: int,
) -> dict[str, Any]:
    queue = _max_queued_events()
    factory = RunFactory(tmp_path / "tpl")
    ids = [f"o-{i:05d}" for i in range(n_runs)]
    staging = tmp_path / "staging"
    factory.stage(staging, ids)
    target = config.root / "backtest"
    target.mkdir(parents=True)
    # A long timer: the rescan that catches up must be the one the overflow triggers.
    d = daemon_factory(config, env={"QUANTBOT_BUS_RESCAN_INTERVAL_S": "3600"}).start()
    d.signal(signal.SIGSTOP)
    try:
        for run_id in ids:
            os.rename(staging / run_id, target / run_id)
        events = n_runs
        noise = 0
        while events <= queue + 1000:  # top the queue up past its limit: 3 events per file
            scratch = target / f".scratch-{noise}"
            scratch.touch()
            scratch.unlink()
            noise += 1
            events += 3
    finally:
        d.signal(signal.SIGCONT)
    d.wait_live_runs(n_runs, timeout=300)
    status = d.wait_settled()
    assert status["pending"] == 0
    assert_consistent(config, set(ids))
    overflow = d.events("watch.overflow")
    assert overflow, "no watch.overflow in the log:\n" + d.tail()
    # The runs may all be registered from the events that fit in the queue before the rescan the
    # overflow asked for has finished: wait for it (it was flaky on a loaded machine).
    rescans = wait_for(
        lambda: [e for e in d.events("rescan.done") if e.get("reason") == "overflow"],
        "rescan.done with reason overflow in the log",
        60,
    )
    assert d.stop() == 0
    return {
        "runs": n_runs,
        "max_queued_events": queue,
        "queued_events_attempted": events,
        "noise_files": noise,
        "watch_overflow_events": len(overflow),
        "overflow_rescans": len(rescans),
        "runs_lost": n_runs - len(live_run_ids(config) & set(ids)),
    }


def test_queue_overflow_3000_runs(
    bus: Config,
    tmp_path: Path,
    daemon_factory: Callable[..., DaemonProcess],
    figures: dict[str, Any],
) -> None:
    figures.update(run_overflow(bus, tmp_path, daemon_factory, 3000))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_queue_overflow_20000_runs(
    bus: Config,
    tmp_path: Path,
    daemon_factory: Callable[..., DaemonProcess],
    figures: dict[str, Any],
) -> None:
    figures.update(run_overflow(bus, tmp_path, daemon_factory, 20_000))
    assert figures["noise_files"] == 0 or _max_queued_events() >= 20_000


WATCH_LIMIT = 50
_PATH_KEYS = ("path", "root", "run_dir", "timestamp")  # tmp_path names contain "limit"
_LIMITED = 'echo "$0" > /proc/sys/user/max_inotify_watches && exec "$@"'


def _user_namespaces_work() -> str | None:
    unshare = shutil.which("unshare")
    if unshare is None:
        return "the unshare tool (util-linux) is not installed"
    probe = subprocess.run(
        [unshare, "--user", "--map-root-user", "sh", "-c", _LIMITED, "7", "true"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if probe.returncode != 0:
        return f"cannot set a per-user-namespace inotify watch limit here: {probe.stderr.strip()}"
    return None


def test_watch_limit_reached_no_run_missed(
    bus: Config,
    tmp_path: Path,
    daemon_factory: Callable[..., DaemonProcess],
    figures: dict[str, Any],
) -> None:
    why = _user_namespaces_work()
    if why:
        pytest.skip(why)
    factory = RunFactory(tmp_path / "tpl")
    before = [f"b-{i:04d}" for i in range(300)]
    for i, run_id in enumerate(before):
        factory.make(bus.root / f"type{i % 3}", run_id, run_type=f"type{i % 3}")
    d = daemon_factory(
        bus,
        env={"QUANTBOT_BUS_RESCAN_INTERVAL_S": "2"},
        prefix=["unshare", "--user", "--map-root-user", "sh", "-c", _LIMITED, str(WATCH_LIMIT)],
    ).start()
    assert live_count(bus) == len(before)  # the startup reconcile does not need watches
    inotify_watches = _count_watches(d.pid)
    assert inotify_watches <= WATCH_LIMIT

    # New runs where the daemon has no watch: a new run-type directory (its creation is seen,
    # but no watch can be added for it), filled once the daemon has looked at it while empty.
    # Nothing inside it makes an event: only the timer rescans can find these runs.
    (bus.root / "late").mkdir()
    time.sleep(1.0)
    rescans_before = len(d.events("rescan.done"))
    after = [f"a-{i:04d}" for i in range(200)]
    for run_id in after:
        factory.make(bus.root / "late", run_id, run_type="late")
    d.wait_live_runs(len(before) + len(after), timeout=120)
    assert_consistent(bus, set(before) | set(after))
    assert d.wait_settled()["pending"] == 0
    assert [e for e in d.events("rescan.done")[rescans_before:] if e["reason"] == "timer"]
    figures.update(
        {
            "watch_limit": WATCH_LIMIT,
            "directories": sum(1 for _ in bus.root.rglob("*") if _.is_dir()) + 1,
            "watches_held": inotify_watches,
            "runs_after_limit": len(after),
            "runs_lost": 0,
            "rescans_until_found": len(d.events("rescan.done")) - rescans_before,
        }
    )
    assert d.stop() == 0


def test_watch_limit_reached_is_logged(
    bus: Config, tmp_path: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    why = _user_namespaces_work()
    if why:
        pytest.skip(why)
    factory = RunFactory(tmp_path / "tpl")
    for i in range(100):
        factory.make(bus.root / "backtest", f"b-{i:04d}")
    d = daemon_factory(
        bus,
        env={"QUANTBOT_BUS_RESCAN_INTERVAL_S": "2"},
        prefix=["unshare", "--user", "--map-root-user", "sh", "-c", _LIMITED, str(WATCH_LIMIT)],
    ).start()
    for i in range(20):
        factory.make(bus.root / "late", f"a-{i:04d}", run_type="late")
    d.wait_live_runs(120, timeout=120)
    d.stop()
    said = [
        e
        for e in d.events()
        if "limit" in " ".join(str(v) for k, v in e.items() if k not in _PATH_KEYS).lower()
        or "max_user_watches" in str(e)
    ]
    assert said, "nothing in the log says the watch limit was hit"


def _count_watches(pid: int) -> int:
    """inotify watches held by ``pid`` (lines ``inotify wd:`` in /proc/<pid>/fdinfo/*)."""
    total = 0
    for info in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            total += info.read_text().count("inotify wd:")
        except OSError:
            continue
    return total
