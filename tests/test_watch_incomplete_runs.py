"""The daemon in-process on runs it cannot register yet or at all: pending until the Parquet
file is complete, rejected after the pending timeout and retried, corrupt and rejected.

Every test waits with generous deadlines (polling the reader-side snapshot or the status file),
never on tight timing. Runs are built with tests/builders/.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from builders import (
    live_run_ids,
    make_run,
    make_run_from_bytes,
    open_rejections,
    wait_for,
    write_parquet,
)
from daemon_in_process import events, running_daemon
from structlog.testing import capture_logs

from quantbot_bus.config import Config
from quantbot_bus.pipeline import Bus


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
