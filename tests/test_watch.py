"""The daemon in-process: a real Daemon with a stop_event, the real watchdog observer, real DuckDB.

Every test waits with generous deadlines (polling the reader-side snapshot or the status file),
never on tight timing. Runs are built with tests/builders/.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from builders import (
    DEADLINE_S,
    PATH,
    RunFactory,
    live_run_ids,
    make_run,
    make_run_from_bytes,
    open_rejections,
    snapshot_query,
    wait_for,
    write_parquet,
)
from click.testing import CliRunner
from structlog.testing import capture_logs

from quantbot_bus import exports
from quantbot_bus.catalog import Catalog
from quantbot_bus.cli import main
from quantbot_bus.config import Config
from quantbot_bus.daemon.notify import Notifier
from quantbot_bus.daemon.observer import OVERFLOW_LOGGER
from quantbot_bus.daemon.status import read_status
from quantbot_bus.daemon.supervisor import Daemon
from quantbot_bus.errors import BusyError, DaemonError
from quantbot_bus.pipeline import Bus

# ---------------------------------------------------------------------------- the daemon


@contextmanager
def running_daemon(config: Config, notifier: Notifier | None = None) -> Iterator[Daemon]:
    stop = threading.Event()
    daemon = Daemon(config, stop_event=stop, notifier=notifier or Notifier(None))
    errors: list[BaseException] = []

    def target() -> None:
        try:
            daemon.run()
        except BaseException as exc:  # surfaced in the test below
            errors.append(exc)

    thread = threading.Thread(target=target, name="daemon-under-test")
    thread.start()
    try:
        wait_for(lambda: daemon.ready.is_set() or errors, "daemon ready")
        if errors:
            raise errors[0]
        yield daemon
    finally:
        stop.set()
        thread.join(DEADLINE_S)
        assert not thread.is_alive(), "daemon did not stop within the deadline"
    if errors:
        raise errors[0]


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


@pytest.fixture
def fast(bus: Config) -> Config:
    """The bus config with short timers for tests."""
    return dataclasses.replace(bus, pending_recheck_s=0.2, export_interval_s=0.2)


# ---------------------------------------------------------------------------- tests


def test_startup_reconciles_before_ready_then_watches(fast: Config) -> None:
    before = [make_run(fast.root, "backtest", f"old-{i}") for i in range(3)]
    with capture_logs() as logs:
        with running_daemon(fast) as daemon:
            # Registered by the reconcile, before READY: visible at once, no waiting.
            assert live_run_ids(fast) == {p.name for p in before}
            assert daemon.rescans == 1, logs
            make_run(fast.root, "backtest", "live-1")
            wait_for(lambda: "live-1" in live_run_ids(fast), "live run in the snapshot")
    names = [e["event"] for e in logs]
    assert names.index("rescan.done") < names.index("daemon.ready"), logs
    assert events(logs, "rescan.done")[0]["reason"] == "startup"
    registered = {e["run_id"]: e for e in events(logs, "run.registered")}
    assert set(registered) == {"old-0", "old-1", "old-2", "live-1"}
    assert registered["live-1"]["latency_ms"] >= 0
    assert names[-1] == "daemon.stopped", logs


def test_an_empty_root_still_gets_a_snapshot_for_readers(fast: Config) -> None:
    with running_daemon(fast):
        assert fast.snapshot_path.exists()
        assert snapshot_query(fast, "SELECT count(*) FROM catalog.runs_d") == [(0,)]
        assert read_status(fast.status_path)["snapshot_published_at"] is not None


def test_restart_is_idempotent(fast: Config) -> None:
    for i in range(5):
        make_run(fast.root, "backtest", f"r-{i}")
    with running_daemon(fast):
        pass
    with capture_logs() as logs:
        with running_daemon(fast):
            make_run(fast.root, "backtest", "r-new")
            wait_for(lambda: "r-new" in live_run_ids(fast), "new run after restart")
    assert [e["run_id"] for e in events(logs, "run.registered")] == ["r-new"]
    rows = snapshot_query(fast, "SELECT count(*), count(DISTINCT run_id) FROM catalog.runs_d")
    assert rows == [(6, 6)]


def test_a_burst_is_committed_in_few_batches(fast: Config, run_factory: RunFactory) -> None:
    staging = fast.root / "backtest" / ".staging"
    ids = [f"burst-{i:04d}" for i in range(300)]
    for run_id in ids:
        run_factory.make(staging, run_id)
    with running_daemon(fast) as daemon:
        start = daemon.batches
        for run_id in ids:  # each run appears by one rename, like a producer staging its dir
            os.rename(staging / run_id, fast.root / "backtest" / run_id)
        wait_for(lambda: len(live_run_ids(fast)) == 300, "300 runs registered")
        batches = daemon.batches - start
    # Group commit: runs arriving during a commit join the next batch instead of one each.
    assert 1 <= batches < 150


def test_pending_until_the_parquet_is_complete(
    fast: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = write_parquet(tmp_path / "full.parquet", 500)
    examined: list[list[Path]] = []  # the directories of every examination, once it is done
    real_examine = Bus.examine

    def spy(self: Bus, dirs: Any) -> Any:
        dirs = [Path(d) for d in dirs]
        outcome = real_examine(self, dirs)
        examined.append(dirs)
        return outcome

    monkeypatch.setattr(Bus, "examine", spy)
    with capture_logs() as logs:
        with running_daemon(fast):
            half = content[: len(content) // 2]  # the Parquet file is still being written
            run_dir = make_run_from_bytes(
                fast.root, "backtest", "slow-1", half, rows=500, declared=content
            )
            data = run_dir / "results.parquet"
            wait_for(lambda: events(logs, "run.pending"), "run.pending")
            wait_for(
                lambda: sum(run_dir in dirs for dirs in examined) >= 3,
                "three rechecks of the pending run",
            )
            # Rechecked again and again: still not registered, not rejected.
            assert "slow-1" not in live_run_ids(fast)
            assert open_rejections(fast).get(str(run_dir)) is None
            with open(data, "ab") as fh:
                fh.write(content[len(content) // 2 :])
            wait_for(lambda: "slow-1" in live_run_ids(fast), "completed run registered")
    assert events(logs, "run.pending")[0]["run_dir"] == str(run_dir)


def test_pending_too_long_is_rejected_then_retried_when_completed(
    fast: Config, tmp_path: Path
) -> None:
    cfg = dataclasses.replace(fast, pending_timeout_s=1.0)
    content = write_parquet(tmp_path / "full.parquet", 500)
    with running_daemon(cfg) as daemon:
        run_dir = make_run_from_bytes(
            cfg.root, "backtest", "stuck-1", content[:100], rows=500, declared=content
        )
        data = run_dir / "results.parquet"
        reason = wait_for(lambda: open_rejections(cfg).get(str(run_dir)), "timeout rejection")
        assert "still incomplete after" in reason
        assert daemon.pending == {}
        data.write_bytes(content)  # the producer finally finishes: the dir changed → retried
        wait_for(lambda: "stuck-1" in live_run_ids(cfg), "registered after the retry")
        assert open_rejections(cfg).get(str(run_dir)) is None


def test_corrupt_parquet_is_rejected_and_the_daemon_carries_on(fast: Config) -> None:
    with capture_logs() as logs:
        with running_daemon(fast):
            junk = b"this is not a parquet file at all" * 10  # declared as it is
            bad = make_run_from_bytes(fast.root, "backtest", "bad-1", junk, rows=10)
            reason = wait_for(lambda: open_rejections(fast).get(str(bad)), "rejection of bad-1")
            make_run(fast.root, "backtest", "good-after-bad")
            wait_for(lambda: "good-after-bad" in live_run_ids(fast), "good run after a bad one")
    assert "bad-1" not in live_run_ids(fast)
    assert "parquet" in reason.lower()
    rejected = events(logs, "run.rejected")
    assert [e["run_dir"] for e in rejected] == [str(bad)]


def test_deleted_run_is_soft_deleted_and_comes_back(fast: Config, tmp_path: Path) -> None:
    run_dir = make_run(fast.root, "backtest", "gone-1")
    keep = tmp_path / "keep"
    with running_daemon(fast):
        assert "gone-1" in live_run_ids(fast)
        shutil.move(run_dir, keep)
        wait_for(lambda: "gone-1" not in live_run_ids(fast), "soft delete")
        rows = snapshot_query(
            fast, "SELECT deleted_at IS NOT NULL FROM catalog.runs_d WHERE run_id = 'gone-1'"
        )
        assert rows == [(True,)]
        shutil.move(keep, run_dir)
        wait_for(lambda: "gone-1" in live_run_ids(fast), "run back after it reappeared")


def test_a_renamed_in_subtree_of_runs_is_found(fast: Config, run_factory: RunFactory) -> None:
    staged = fast.root / ".incoming"
    for i in range(20):
        run_factory.make(staged / "sweep", f"sweep-{i}")
    with running_daemon(fast):
        os.rename(staged / "sweep", fast.root / "sweep")
        wait_for(lambda: len(live_run_ids(fast)) == 20, "the 20 runs of the moved subtree")


def test_queue_overflow_warning_triggers_a_rescan(fast: Config) -> None:
    with capture_logs() as logs:
        with running_daemon(fast) as daemon:
            before = daemon.rescans
            # What watchdog's inotify reader logs when the kernel queue overflows.
            logging.getLogger(OVERFLOW_LOGGER).warning(
                "Inotify queue overflowed; filesystem events were lost"
            )
            wait_for(lambda: daemon.rescans > before, "rescan after overflow")
    assert events(logs, "watch.overflow")
    assert [e["reason"] for e in events(logs, "rescan.done")] == ["startup", "overflow"]


@pytest.mark.parametrize("which", ["observer", "inotify reader"])
def test_a_dead_observer_is_restarted_once(fast: Config, which: str) -> None:
    with capture_logs() as logs:
        with running_daemon(fast) as daemon:
            old = daemon._observer
            assert old is not None
            # The dispatch thread dies (as when a handler raised), or watchdog's inotify reader
            # thread does (as when a warning in it is turned into an error).
            thread = old if which == "observer" else old._inotify_fd  # type: ignore[attr-defined]
            thread.stop()
            thread.join()
            wait_for(lambda: events(logs, "watch.restarted"), "observer restart")
            assert daemon._observer is not old and daemon._observer is not None
            make_run(fast.root, "backtest", "after-restart")
            wait_for(lambda: "after-restart" in live_run_ids(fast), "run seen by new observer")


def test_an_observer_dying_twice_stops_the_daemon_with_an_error(fast: Config) -> None:
    daemon = Daemon(fast, stop_event=threading.Event(), notifier=Notifier(None))
    errors: list[BaseException] = []

    def target() -> None:
        try:
            daemon.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    with capture_logs() as logs:
        thread.start()
        wait_for(daemon.ready.is_set, "ready")
        first = daemon._observer
        assert first is not None
        first.stop()
        first.join()
        wait_for(lambda: daemon._observer not in (None, first), "the observer restarted once")
        second = daemon._observer
        assert second is not None
        second.stop()
        second.join()
        thread.join(DEADLINE_S)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], DaemonError)
    assert "observer died twice" in str(errors[0])
    assert [e["event"] for e in logs][-1] == "daemon.stopped"
    assert read_status(fast.status_path)["state"] == "stopped"


def test_a_second_daemon_on_the_same_state_dir_is_refused(fast: Config) -> None:
    with running_daemon(fast):
        with pytest.raises(BusyError, match=rf"quantbot-bus daemon \(pid {os.getpid()}\)"):
            Daemon(fast, notifier=Notifier(None)).run()


def test_status_file_and_status_command(fast: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(fast.root.parent)  # the bus directory: defaults find the state dir
    runner = CliRunner()
    missing = runner.invoke(main, ["status", "--format", "json"])
    assert missing.exit_code == 4
    assert "daemon has never run with this state dir" in missing.output

    make_run(fast.root, "backtest", "s-1")
    with running_daemon(fast):
        status = read_status(fast.status_path)
        assert status["state"] == "running"
        assert status["pid"] == os.getpid()
        assert status["registered"] == 1
        assert status["snapshot_published_at"] is not None
        result = runner.invoke(main, ["status", "--format", "json"])
        assert result.exit_code == 0, result.output
        [row] = json.loads(result.output)
        assert row["state"] == "running" and row["registered"] == 1 and row["pending"] == 0
    after = read_status(fast.status_path)
    assert after["state"] == "stopped" and after["ready"] is False
    Catalog.open(fast.catalog_path).close()  # the daemon closed the working catalog
    table = runner.invoke(main, ["status", "--format", "table"])
    assert table.exit_code == 0
    assert "state" in table.output and "stopped" in table.output


def test_export_failure_is_logged_and_registration_goes_on(
    fast: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_refresh(config: Config, con: Any, **kwargs: Any) -> dict[str, Any]:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(exports, "refresh", broken_refresh)  # fault injection
    with capture_logs() as logs:
        with running_daemon(fast):
            make_run(fast.root, "backtest", "despite-exports")
            wait_for(lambda: "despite-exports" in live_run_ids(fast), "registration")
            wait_for(lambda: events(logs, "export.failed"), "export.failed")
    assert "disk on fire" in events(logs, "export.failed")[0]["error"]


def test_export_refreshes_are_coalesced(fast: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = dataclasses.replace(fast, export_interval_s=120.0)
    calls: list[float] = []
    real_refresh = exports.refresh

    def counting_refresh(config: Config, con: Any, **kwargs: Any) -> dict[str, Any]:
        status = real_refresh(config, con, **kwargs)
        if not status.get("more"):  # a bounded call asking for more is part of one refresh
            calls.append(time.monotonic())
        return status

    monkeypatch.setattr(exports, "refresh", counting_refresh)
    with running_daemon(cfg) as daemon:
        wait_for(lambda: calls, "the startup refresh")
        first = daemon.batches
        for i in range(4):  # four separate batches
            make_run(cfg.root, "backtest", f"c-{i}")
            wait_for(lambda i=i: f"c-{i}" in live_run_ids(cfg), f"c-{i}")
        assert daemon.batches - first >= 4
        assert len(calls) == 1  # all within one interval: no refresh yet
    assert len(calls) == 2  # the stop flushes the one coalesced refresh


def test_notify_ready_watchdog_stopping_in_process(fast: Config) -> None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="qbw-") as d:
        path = Path(d) / "notify.sock"
        server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        server.bind(str(path))
        server.settimeout(DEADLINE_S)
        notifier = Notifier(str(path), watchdog_usec=400_000)
        received: list[str] = []
        with running_daemon(fast, notifier=notifier):
            while not any("WATCHDOG=1" in m for m in received):
                received.append(server.recv(4096).decode())
        while not any("STOPPING=1" in m for m in received):
            received.append(server.recv(4096).decode())
        server.close()
    assert received[0] == "READY=1\nSTATUS=registered 0, rejected 0, pending 0"
    assert any(m.startswith("WATCHDOG=1\nSTATUS=") for m in received)
    assert received[-1].startswith("STOPPING=1")


def test_example_config_lists_every_key_with_its_default_and_env_name() -> None:
    import tomllib

    from quantbot_bus.config import load_config

    example = Path(__file__).parent.parent / "daemon" / "quantbot-bus.example.toml"
    text = example.read_text()
    keys = set(tomllib.loads(text))
    fields = {f.name for f in dataclasses.fields(Config) if not f.metadata} - {"exports"}
    assert keys == fields
    assert "[[exports]]" in text
    for name in fields:
        assert f"QUANTBOT_BUS_{name.upper()}" in text, name
    loaded = load_config(example, env={})
    for name in fields - {"root", "exports_dir", "state_dir"}:
        assert getattr(loaded, name) == getattr(Config(), name), name


def test_the_export_views_follow_a_single_batch(fast: Config) -> None:
    """One batch, no later activity: the coalesced refresh still runs and readers see the rows."""

    def view_rows() -> list[tuple]:
        con = exports.open_query_connection(fast)  # the reader path of `quantbot-bus query`
        try:
            if "exports.backtest_call_path_metrics" not in exports.available_relations(con):
                return []
            return con.execute(
                "SELECT run_id, count(*) FROM exports.backtest_call_path_metrics GROUP BY run_id"
            ).fetchall()
        finally:
            con.close()

    with running_daemon(fast):
        make_run(fast.root, "backtest", "v-1", {PATH: 4})
        assert wait_for(view_rows, "the run's rows in the export view") == [("v-1", 4)]


def test_a_failing_publish_is_retried_and_nothing_is_lost(fast: Config) -> None:
    with capture_logs() as logs:
        with running_daemon(fast):
            fast.snapshot_path.unlink()
            (fast.snapshot_path / "blocker").mkdir(parents=True)  # os.replace onto it fails
            make_run(fast.root, "backtest", "during-failure")
            wait_for(lambda: events(logs, "batch.failed"), "batch.failed")
            status = wait_for(
                lambda: (s := read_status(fast.status_path))["state"] == "degraded" and s,
                "status says degraded",
            )
            assert "could not publish the catalog" in status["degraded"]
            shutil.rmtree(fast.snapshot_path)  # the fault goes away
            wait_for(lambda: read_status(fast.status_path)["state"] == "running", "status recovers")
            wait_for(lambda: "during-failure" in live_run_ids(fast), "the run after recovery")
    failed = events(logs, "batch.failed")[0]
    assert "could not publish the catalog to" in failed["error"]
    assert [e["run_id"] for e in events(logs, "run.registered")] == ["during-failure"]
