"""inotify queue overflow and the inotify watch limit: zero runs missed, and the log says why.

Queue overflow, without touching any system-wide setting: the daemon is SIGSTOPped (so nobody
reads its inotify queue), the runs are renamed into the root (one IN_MOVED_TO each) until more
events are queued than ``/proc/sys/fs/inotify/max_queued_events`` allows, then SIGCONT. The kernel
drops the excess and queues IN_Q_OVERFLOW; the daemon must log ``watch.overflow``, rescan
(``rescan.done`` with reason ``overflow``) and register every run. The fast version renames 1,000
runs and tops the queue up with hidden scratch files created and removed in the watched directory
(three events each, ignored by the daemon); the slow version renames 20,000 runs and nothing else.
(Lowering ``max_queued_events`` instead would be global: every inotify user on the machine started
meanwhile would get the small queue.)

Watch limit: ``fs.inotify.max_user_watches`` is global too, but the kernel also counts watches
per user namespace (``/proc/sys/user/max_inotify_watches``), so the daemon runs under ``unshare
--user --map-root-user`` with a limit of 50 watches set inside its own namespace, for it alone.
A tree that needs more than that at startup makes the daemon say so and fall back to polling
(watchdog raises ENOSPC while it registers the tree). A tree that fits, filled up afterwards
until no watch is left, keeps inotify; the runs of a new run-type directory that got no watch
must then be found by the timer rescans (watchdog only logs the ENOSPC of a later directory).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from builders import RunFactory, live_count, live_run_ids, wait_for

from quantbot_bus.config import Config

from .helpers import DaemonProcess, assert_consistent


def _max_queued_events() -> int:
    return int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())


def run_overflow(
    config: Config,
    tmp_path: Path,
    daemon_factory: Callable[..., DaemonProcess],
    n_runs: int,
    *,
    top_up: bool = True,
) -> dict[str, Any]:
    """Overflow the daemon's inotify queue with ``n_runs`` renames (plus scratch files past the
    queue's limit when ``top_up``); the overflow must be logged and every run registered."""
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
        while top_up and events <= queue + 1000:  # past the queue's limit: 3 events per file
            scratch = target / f".scratch-{noise}"
            scratch.touch()
            scratch.unlink()
            noise += 1
            events += 3
    finally:
        d.signal(signal.SIGCONT)
    d.wait_live_runs(n_runs, timeout=300)
    d.wait_settled()  # fails unless the status says pending == 0 in time
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


def test_queue_overflow_1000_runs(
    bus: Config,
    tmp_path: Path,
    daemon_factory: Callable[..., DaemonProcess],
    figures: dict[str, Any],
) -> None:
    # The scratch files overflow the queue whatever the number of runs renamed before them:
    # 1,000 runs meet the same overflow, the same rescan and the same exactly-once check.
    figures.update(run_overflow(bus, tmp_path, daemon_factory, 1000))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_queue_overflow_20000_runs(
    bus: Config,
    tmp_path: Path,
    daemon_factory: Callable[..., DaemonProcess],
    figures: dict[str, Any],
) -> None:
    queue = _max_queued_events()
    if queue + 1000 >= 20_000:
        pytest.skip(f"max_queued_events is {queue}: 20,000 renames alone would not overflow it")
    # The renames alone overflow the queue: run_overflow asserts the watch.overflow it causes.
    figures.update(run_overflow(bus, tmp_path, daemon_factory, 20_000, top_up=False))


WATCH_LIMIT = 50
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
    run_factory: RunFactory,
    daemon_factory: Callable[..., DaemonProcess],
    figures: dict[str, Any],
) -> None:
    why = _user_namespaces_work()
    if why:
        pytest.skip(why)
    # 45 watches at startup (the root, backtest/ and 43 runs): inotify, not the polling fallback.
    before = [f"b-{i:04d}" for i in range(WATCH_LIMIT - 7)]
    for run_id in before:
        run_factory.make(bus.root / "backtest", run_id)
    d = daemon_factory(
        bus,
        env={"QUANTBOT_BUS_RESCAN_INTERVAL_S": "2"},
        prefix=["unshare", "--user", "--map-root-user", "sh", "-c", _LIMITED, str(WATCH_LIMIT)],
    ).start()
    assert (d.status() or {}).get("observer") == "inotify", d.tail()
    assert live_count(bus) == len(before)

    # Ten new empty directories take the last five watches; "late" (created after them: inotify
    # keeps the order) gets none, so nothing inside it makes an event. It is filled once the
    # daemon has looked at it while empty: the second rescan begun after the mkdir covers the
    # examination its creation asked for.
    rescans_before = len(d.events("rescan.done"))
    for i in range(10):
        (bus.root / f"pad-{i}").mkdir()
    (bus.root / "late").mkdir()
    d.wait_for(lambda: _count_watches(d.pid) == WATCH_LIMIT, f"{WATCH_LIMIT} watches held")
    d.wait_for(
        lambda: len(d.events("rescan.done")) >= rescans_before + 2, "two rescans after the mkdir"
    )
    rescans_before = len(d.events("rescan.done"))
    after = [f"a-{i:04d}" for i in range(200)]
    for run_id in after:
        run_factory.make(bus.root / "late", run_id, run_type="late")
    d.wait_live_runs(len(before) + len(after), timeout=120)
    assert_consistent(bus, set(before) | set(after))
    d.wait_settled()  # fails unless the status says pending == 0 in time

    # The late runs were found by timer rescans (their batches: "n" in rescan.done), not by
    # events. (Waited for: a rescan logs rescan.done just after it published its batch.)
    def registered_by_timer_rescans() -> int:
        timer = [e for e in d.events("rescan.done")[rescans_before:] if e["reason"] == "timer"]
        return sum(e["n"] for e in timer)

    d.wait_for(lambda: registered_by_timer_rescans() == len(after), "the late runs' rescans")
    assert (d.status() or {}).get("observer") == "inotify"
    figures.update(
        {
            "watch_limit": WATCH_LIMIT,
            "directories": sum(1 for _ in bus.root.rglob("*") if _.is_dir()) + 1,
            "watches_held": _count_watches(d.pid),
            "runs_after_limit": len(after),
            "runs_lost": 0,
            "rescans_until_found": len(d.events("rescan.done")) - rescans_before,
        }
    )
    assert d.stop() == 0


def test_watch_limit_reached_is_logged(
    bus: Config, run_factory: RunFactory, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    why = _user_namespaces_work()
    if why:
        pytest.skip(why)
    for i in range(100):
        run_factory.make(bus.root / "backtest", f"b-{i:04d}")
    d = daemon_factory(
        bus,
        env={"QUANTBOT_BUS_RESCAN_INTERVAL_S": "2"},
        prefix=["unshare", "--user", "--map-root-user", "sh", "-c", _LIMITED, str(WATCH_LIMIT)],
    ).start()
    for i in range(20):
        run_factory.make(bus.root / "late", f"a-{i:04d}", run_type="late")
    d.wait_live_runs(120, timeout=120)
    assert d.stop() == 0
    said = d.events("watch.limit")
    assert said, "nothing in the log says the watch limit was hit:\n" + d.tail()
    assert "fs.inotify.max_user_watches" in said[0]["advice"], said[0]


def _count_watches(pid: int) -> int:
    """inotify watches held by ``pid`` (lines ``inotify wd:`` in /proc/<pid>/fdinfo/*)."""
    total = 0
    for info in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            total += info.read_text().count("inotify wd:")
        except OSError:
            continue
    return total
