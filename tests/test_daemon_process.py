"""The daemon as a real subprocess: real inotify, real DuckDB, real SIGTERM/SIGKILL, real sockets.

Each test starts ``python -m quantbot_bus.cli daemon`` and watches it from the outside only: the
reader-side snapshot (fresh read-only connections), the status file, its JSON log lines, its exit
code. Deadlines are generous (30 s); nothing asserts speed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from builders import (
    DEADLINE_S,
    RunFactory,
    live_run_ids,
    make_run,
    make_run_from_bytes,
    make_ts_run,
    open_rejections,
    snapshot_query,
    wait_for,
    write_parquet,
)
from reliability.helpers import CLEAN_ENV, DaemonProcess

from quantbot_bus.catalog import open_reader
from quantbot_bus.config import Config
from quantbot_bus.daemon.status import read_status

Factory = Callable[..., DaemonProcess]


def run_counts(config: Config) -> tuple[int, int]:
    [(rows, distinct)] = snapshot_query(
        config, "SELECT count(*), count(DISTINCT run_id) FROM catalog.runs_d"
    )
    return rows, distinct


# ---------------------------------------------------------------------------- tests


def test_lifecycle_on_default_paths(tmp_path: Path, daemon_factory: Factory) -> None:
    """`make run`: no flags, defaults ./artifacts ./state ./exports; stop, restart, no dupes."""
    cfg = Config(
        root=tmp_path / "artifacts", state_dir=tmp_path / "state", exports_dir=tmp_path / "exports"
    )
    for i in range(3):
        make_run(cfg.root, "backtest", f"before-{i}")
    assert not cfg.state_dir.exists() and not cfg.exports_dir.exists()
    d = daemon_factory(cfg, path_flags=False, cwd=tmp_path).start()
    assert live_run_ids(cfg) == {"before-0", "before-1", "before-2"}  # reconciled before READY

    make_run(cfg.root, "backtest", "while-running")
    wait_for(lambda: "while-running" in live_run_ids(cfg), "run dropped while running")

    status = subprocess.run(
        [sys.executable, "-m", "quantbot_bus.cli", "status", "--format", "json"],
        cwd=tmp_path,
        env=CLEAN_ENV,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )
    assert status.returncode == 0, status.stderr
    [row] = json.loads(status.stdout)
    assert row["state"] == "running" and row["pid"] == d.pid and row["pid_alive"] is True

    second = subprocess.run(
        [sys.executable, "-m", "quantbot_bus.cli", "daemon"],
        cwd=tmp_path,
        env=CLEAN_ENV,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )
    assert second.returncode == 10  # BusyError: the state-dir lock is held
    assert f"quantbot-bus daemon (pid {d.pid})" in second.stderr  # names the holder and its role
    assert d.proc is not None
    assert d.proc.poll() is None  # the first daemon is not disturbed

    d.signal(signal.SIGTERM)
    assert d.wait() == 0
    names = [e["event"] for e in d.events()]
    assert "daemon.ready" in names and names[-1] == "daemon.stopped"
    assert json.loads(cfg.status_path.read_text())["stopped_at"] is not None

    for i in range(2):
        make_run(cfg.root, "policy", f"while-stopped-{i}")
    d2 = daemon_factory(cfg, path_flags=False, cwd=tmp_path).start()
    assert {"while-stopped-0", "while-stopped-1"} <= live_run_ids(cfg)
    assert run_counts(cfg) == (6, 6)
    registered = [e["run_id"] for e in d2.events("run.registered")]
    assert sorted(registered) == ["while-stopped-0", "while-stopped-1"]
    d2.signal(signal.SIGINT)
    assert d2.wait() == 0


@pytest.mark.parametrize(
    "n",
    [
        # 600 renames outlast the daemon's 5 ms settle: the kill after the first visible batch
        # still lands while most of the burst is queued or being validated.
        pytest.param(600, id="600-runs"),
        pytest.param(2000, id="2000-runs", marks=[pytest.mark.slow, pytest.mark.timeout(600)]),
    ],
)
def test_sigkill_mid_burst_then_restart_registers_each_run_exactly_once(
    bus: Config, run_factory: RunFactory, daemon_factory: Factory, n: int
) -> None:
    staging = bus.root / "backtest" / ".staging"
    ids = [f"k-{i:05d}" for i in range(n)]
    for run_id in ids:
        run_factory.make(staging, run_id)
    d = daemon_factory(bus).start()
    for run_id in ids:  # the burst: each run appears by one atomic rename
        os.rename(staging / run_id, bus.root / "backtest" / run_id)
    wait_for(lambda: live_run_ids(bus), "the first batch of the burst")
    d.signal(signal.SIGKILL)
    assert d.wait() == -signal.SIGKILL
    seen_before_kill = len(live_run_ids(bus))
    assert read_status(bus.status_path)["state"] == "dead"

    d2 = daemon_factory(bus).start()
    wait_for(lambda: len(live_run_ids(bus)) == n, f"all {n} runs after the restart")
    assert run_counts(bus) == (n, n)
    [(artifacts,)] = snapshot_query(bus, "SELECT count(*) FROM catalog.artifacts_f")
    assert artifacts == n
    d2.signal(signal.SIGTERM)
    assert d2.wait() == 0
    assert 0 < seen_before_kill <= n
    print(f"\n{seen_before_kill} of {n} runs registered before the SIGKILL")


def test_a_second_signal_exits_at_once(
    bus: Config, run_factory: RunFactory, daemon_factory: Factory
) -> None:
    for i in range(2000):
        run_factory.make(bus.root / "backtest", f"s-{i:05d}")
    d = daemon_factory(bus).start(wait=False)
    # The handlers are installed before the catalog is opened; the reconcile of 2,000 runs
    # that follows keeps the daemon busy while both signals arrive.
    wait_for(lambda: d.events("catalog.migrated"), "the daemon opened its catalog")
    d.signal(signal.SIGTERM)
    wait_for(lambda: d.events("daemon.signal"), "the first signal handled")
    d.signal(signal.SIGTERM)  # (two signals sent back to back would be delivered as one)
    assert d.wait() == 1
    assert not d.events("daemon.stopped")


def test_a_reader_holding_the_snapshot_blocks_nothing(bus: Config, daemon_factory: Factory) -> None:
    make_run(bus.root, "backtest", "first")
    d = daemon_factory(bus).start()
    held = open_reader(bus.snapshot_path)  # held for the whole test, in another process
    try:
        for wave in range(5):
            for i in range(10):
                make_run(bus.root, "backtest", f"w{wave}-{i}")

            # New readers see the new runs; none ever fails with a lock error.
            def seen(w: int = wave) -> bool:
                return {f"w{w}-{i}" for i in range(10)} <= live_run_ids(bus)

            wait_for(seen, f"wave {wave}")
            # The held connection keeps its consistent (old) view and keeps answering.
            assert held.execute("SELECT count(*) FROM catalog.runs_d").fetchone() == (1,)
    finally:
        held.close()
    assert len(live_run_ids(bus)) == 51
    d.signal(signal.SIGTERM)
    assert d.wait() == 0
    assert not d.events("batch.failed")
    assert not [e for e in d.events() if "lock" in json.dumps(e).lower()]


def test_pending_rejected_deleted_and_typescript_runs(
    bus: Config, tmp_path: Path, daemon_factory: Factory
) -> None:
    d = daemon_factory(bus).start()

    # metadata.json before its Parquet is complete: pending, then registered.
    content = write_parquet(tmp_path / "full.parquet", 2000)
    slow = make_run_from_bytes(
        bus.root, "backtest", "slow-1", content[:1000], rows=2000, declared=content
    )
    data = slow / "results.parquet"
    wait_for(lambda: (d.status() or {}).get("pending") == 1, "pending in the status file")
    assert d.events("run.pending")[0]["run_dir"] == str(slow)
    with open(data, "ab") as fh:
        fh.write(content[1000:])
    wait_for(lambda: "slow-1" in live_run_ids(bus), "slow-1 registered once complete")

    # A corrupt Parquet file: rejected with a reason; the daemon carries on.
    raw = bytearray(write_parquet(tmp_path / "bad.parquet", 10))
    raw[-8:-4] = b"\xff\xff\xff\x7f"  # the footer length points outside the file
    staged = make_run_from_bytes(bus.root / ".staging", "backtest", "bad-1", bytes(raw), rows=10)
    bad = bus.root / "backtest" / "bad-1"
    os.rename(staged, bad)  # hidden while it was made: never read half-made
    reason = wait_for(lambda: open_rejections(bus).get(str(bad)), "bad-1 rejected")
    assert "parquet" in reason.lower()
    make_run(bus.root, "backtest", "good-after-bad")
    wait_for(lambda: "good-after-bad" in live_run_ids(bus), "good run after the bad one")

    # A deleted run directory: soft-deleted, the row stays.
    shutil.rmtree(slow)
    wait_for(lambda: "slow-1" not in live_run_ids(bus), "slow-1 soft-deleted")
    assert snapshot_query(
        bus, "SELECT deleted_at IS NOT NULL FROM catalog.runs_d WHERE run_id = 'slow-1'"
    ) == [(True,)]

    # Exactly as the quantbot TypeScript producer writes a run.
    make_ts_run(
        bus.root,
        "ts-path-only-20240501",
        rows=7,
        backtest_type="path-only",
        table_name="backtest_call_path_metrics",
        callsProcessed=7,
    )
    wait_for(lambda: "ts-path-only-20240501" in live_run_ids(bus), "TypeScript-shaped run")
    [(run_type, params)] = snapshot_query(
        bus,
        "SELECT run_type, params FROM catalog.runs_d WHERE run_id = 'ts-path-only-20240501'",
    )
    assert run_type == "backtest"
    assert json.loads(params)["callsProcessed"] == 7

    # each export refresh that took runs in is one line at info (the daemon's publisher)
    wait_for(lambda: d.events("export.refreshed"), "an export refresh logged")
    d.signal(signal.SIGTERM)
    assert d.wait() == 0
    assert [e["run_dir"] for e in d.events("run.rejected")] == [str(bad)]
    refreshed = d.events("export.refreshed")
    assert {e["level"] for e in refreshed} == {"info"}
    assert all(e["added"] + e["removed"] > 0 and e["ms"] >= 0 for e in refreshed), refreshed


@pytest.mark.parametrize(
    "n",
    [
        # 1,000 run directories (a watch each) for the fast suite; the soak makes 6,000
        pytest.param(1000, id="1000-dirs"),
        pytest.param(6000, id="6000-dirs", marks=[pytest.mark.slow, pytest.mark.timeout(600)]),
    ],
)
def test_many_run_dirs_new_runs_detected_and_idle_cpu(
    bus: Config, run_factory: RunFactory, daemon_factory: Factory, n: int
) -> None:
    for i in range(n):
        run_factory.make(bus.root / f"type-{i % 3}", f"many-{i:05d}")
    d = daemon_factory(bus).start()
    assert len(live_run_ids(bus)) == n
    make_run(bus.root, "type-1", "one-more")
    wait_for(lambda: "one-more" in live_run_ids(bus), f"a new run among {n:,} directories")

    # Idle: nothing arrives; the daemon must not spin (a resource check, not a speed target).
    # First let the export refresh of all the runs finish (real work, not idling): it is done
    # when exports/_export_status.json has not changed for a few export intervals.
    export_status = bus.exports_dir / "_export_status.json"

    def exports_settled() -> bool:
        return export_status.exists() and time.time() - export_status.stat().st_mtime > 3.0

    wait_for(exports_settled, "the export refresh to finish", every=0.2)
    # Then a 3 s window with < 0.3 s of CPU must come: a spinning daemon never has one; a loaded
    # machine may stretch the last summary write into the first window, not into all of them.
    windows: list[float] = []

    def idle_window() -> bool:
        cpu0 = d.cpu_seconds()
        time.sleep(3.0)  # the idle window the CPU use is measured over
        windows.append(d.cpu_seconds() - cpu0)
        return windows[-1] < 0.3

    wait_for(idle_window, "a 3 s window with < 0.3 s of daemon CPU", timeout=60, every=0)

    d.signal(signal.SIGTERM)
    assert d.wait() == 0
    assert not d.events("watch.overflow")


def test_polling_mode(bus: Config, daemon_factory: Factory) -> None:
    d = daemon_factory(bus, args=["--polling"], env={"QUANTBOT_BUS_POLL_INTERVAL_S": "0.2"}).start()
    assert (d.status() or {}).get("observer") == "polling"
    make_run(bus.root, "backtest", "polled-1")
    wait_for(lambda: "polled-1" in live_run_ids(bus), "run seen by the polling observer")
    d.signal(signal.SIGTERM)
    assert d.wait() == 0


def _recv(sock: socket.socket) -> tuple[str, int | None, float]:
    size = struct.calcsize("3i")
    data, ancdata, _flags, _addr = sock.recvmsg(4096, socket.CMSG_SPACE(size))
    pid = None
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = struct.unpack("3i", payload[:size])[0]
    return data.decode(), pid, time.monotonic()


def test_notify_ready_watchdog_stopping_with_the_daemon_pid(
    bus: Config, daemon_factory: Factory
) -> None:
    with tempfile.TemporaryDirectory(prefix="qbn-") as short:  # AF_UNIX path length limit
        path = Path(short) / "notify.sock"
        server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        server.bind(str(path))
        server.settimeout(DEADLINE_S)
        make_run(bus.root, "backtest", "n-1")
        # WATCHDOG_PID must be the daemon's own pid, as systemd sets it: exec keeps the shell's.
        d = daemon_factory(
            bus,
            env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "2000000"},
            prefix=["/bin/sh", "-c", 'WATCHDOG_PID=$$ exec "$0" "$@"'],
        ).start(wait=False)
        messages = [_recv(server)]
        while sum("WATCHDOG=1" in m for m, _, _ in messages) < 3:
            messages.append(_recv(server))
        d.signal(signal.SIGTERM)
        while not any("STOPPING=1" in m for m, _, _ in messages):
            messages.append(_recv(server))
        assert d.wait() == 0
        server.close()

    kinds = [m.split("\n")[0] for m, _, _ in messages]
    ready = kinds.index("READY=1")
    assert messages[ready][0] == "READY=1\nSTATUS=registered 1, rejected 0, pending 0"
    assert kinds.index("WATCHDOG=1") > ready  # no watchdog ping before READY
    assert {p for _, p, _ in messages} == {d.pid}
    pings = [t for m, _, t in messages if "WATCHDOG=1" in m]
    gaps = sorted(b - a for a, b in zip(pings, pings[1:], strict=False))
    # Half of WATCHDOG_USEC (1 s); generous bounds, this is not a timing test.
    assert 0.5 <= gaps[len(gaps) // 2] <= 2.0, gaps
