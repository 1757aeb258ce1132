"""Incomplete runs: a registered run whose file is deleted is rejected at once ("artifact missing:
NAME"), a run never registered waits naming the missing file, and ``quantbot-bus pending`` lists
what the bus waits on (the daemon's, or the last sync's ``state_dir/pending.json``)."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from builders import (
    live_run_ids,
    make_run,
    make_run_from_bytes,
    open_rejections,
    snapshot_query,
    wait_for,
    write_parquet,
)
from click.testing import CliRunner
from reliability.helpers import DaemonProcess, run_cli

from quantbot_bus import pipeline
from quantbot_bus.cli import main
from quantbot_bus.config import Config
from quantbot_bus.pendingfile import (
    MAX_LISTED,
    PendingEntry,
    pending_path,
    read_pending,
    write_pending,
)
from quantbot_bus.timeutil import parse_utc


def cli(bus: Config, *args: str) -> tuple[int, str, str]:
    flags = ["--root", str(bus.root), "--exports-dir", str(bus.exports_dir)]
    flags += ["--state-dir", str(bus.state_dir)]
    result = CliRunner().invoke(main, [args[0], *flags, *args[1:]], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def listed(bus: Config) -> dict[str, dict[str, object]]:
    """The pending list as `quantbot-bus pending --format json` prints it, by run_dir."""
    code, out, err = cli(bus, "pending", "--format", "json")
    assert code == 0, err
    return {row["run_dir"]: row for row in json.loads(out)}


def on_disk(bus: Config) -> dict[str, dict[str, Any]]:
    """The pending list file by run_dir, {} while there is none."""
    path = pending_path(bus.state_dir)
    return {r["run_dir"]: r for r in read_pending(path)["runs"]} if path.exists() else {}


def test_daemon_lists_a_waiting_run_and_rejects_a_deleted_file_at_once(
    bus: Config, tmp_path: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    d = daemon_factory(bus).start()  # pending_timeout_s: the default 600 s
    kept = make_run(bus.root, "policy", "kept")
    content = write_parquet(tmp_path / "later.parquet", 3)
    waiting = make_run_from_bytes(bus.root, "policy", "waiting", None, rows=3, declared=content)
    wait_for(lambda: "kept" in live_run_ids(bus), "kept registered")
    wait_for(lambda: str(waiting) in on_disk(bus), "the waiting run in the pending list")

    # the CLI as a user runs it, in a subprocess
    proc = run_cli(bus, "pending", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)
    assert row["run_dir"] == str(waiting)
    assert row["run_id"] == "waiting"
    assert row["reason"].startswith("waiting for the producer: artifact missing: results.parquet")
    assert isinstance(row["age_s"], float) and 0 <= row["age_s"] < 600
    assert row["reject_after"] > row["first_seen"]  # ISO-8601 UTC: compares as text

    # a registered run loses a file: rejected at once, not pending for pending_timeout_s
    t0 = time.monotonic()
    (kept / "results.parquet").unlink()
    reasons = wait_for(lambda: open_rejections(bus).get(str(kept)), "kept rejected", timeout=30)
    elapsed = time.monotonic() - t0
    assert reasons.startswith("artifact missing: results.parquet (registered with run 'kept'")
    assert "kept" not in live_run_ids(bus)
    assert elapsed < 30 < bus.pending_timeout_s
    assert str(kept) not in listed(bus)
    assert not [e for e in d.events("run.pending") if e["run_dir"] == str(kept)]

    # the file is back: registered again; the waiting run's file written: it leaves the list
    write_parquet(kept / "results.parquet")
    (waiting / "results.parquet").write_bytes(content)
    wait_for(lambda: {"kept", "waiting"} <= live_run_ids(bus), "both registered")
    wait_for(lambda: not on_disk(bus), "the pending list empty")
    assert d.alive()


def test_sync_rejects_a_deleted_file_and_keeps_the_pending_list(bus: Config) -> None:
    kept = make_run(bus.root, "policy", "kept")
    assert pipeline.sync(bus).registered == ["kept"]
    code, _, err = cli(bus, "pending")
    assert code == 0, err  # sync wrote an (empty) list

    (kept / "results.parquet").unlink()
    fresh = make_run(bus.root, "policy", "fresh")
    (fresh / "results.parquet").unlink()  # never registered: waits
    res = pipeline.sync(bus)
    assert [r.run_dir for r in res.rejected] == [str(kept)]
    assert res.rejected[0].reason.startswith("artifact missing: results.parquet")
    assert "still incomplete" not in res.rejected[0].reason
    assert list(res.pending) == [str(fresh)]
    first = listed(bus)
    assert list(first) == [str(fresh)]
    assert "artifact missing: results.parquet" in str(first[str(fresh)]["reason"])

    pipeline.sync(bus)  # still pending: the same first-seen time, so its age grows
    again = listed(bus)
    assert again[str(fresh)]["first_seen"] == first[str(fresh)]["first_seen"]


def test_no_pending_list_exits_4(bus: Config) -> None:
    code, _, err = cli(bus, "pending")
    assert code == 4
    assert "no pending list at" in err and "sync" in err


def test_the_list_is_capped_and_says_how_many_more(bus: Config) -> None:
    now = time.time()
    entries = [
        PendingEntry(str(bus.root / f"r{i:05d}"), None, "waiting", now - i)
        for i in range(MAX_LISTED + 5)
    ]
    write_pending(pending_path(bus.state_dir), entries, writer="daemon", timeout_s=600.0)
    doc = json.loads(pending_path(bus.state_dir).read_text())
    assert (doc["total"], doc["more"], len(doc["runs"])) == (MAX_LISTED + 5, 5, MAX_LISTED)
    assert doc["runs"][0]["run_dir"].endswith(f"r{MAX_LISTED + 4:05d}")  # oldest first
    code, out, err = cli(bus, "pending", "--format", "csv")
    assert code == 0
    assert len(out.splitlines()) == MAX_LISTED + 1
    assert "5 more pending runs" in err


@pytest.mark.parametrize("text", ["{not json", "[]"])
def test_an_unreadable_list_is_an_error(bus: Config, text: str) -> None:
    pending_path(bus.state_dir).write_text(text)
    code, _, err = cli(bus, "pending")
    assert code == 4 and "pending list" in err


def test_a_failed_write_of_the_list_is_tried_again_at_the_next_batch(tmp_path: Path) -> None:
    """A list that could not be written (disk full, say) is written at the next batch even if
    no run changed meanwhile: readers never keep a stale list."""
    from quantbot_bus.daemon.pending import PendingRuns

    run_dir = tmp_path / "artifacts" / "backtest" / "r1"
    run_dir.mkdir(parents=True)
    runs = PendingRuns(tmp_path / "artifacts", recheck_s=2.0)
    runs.record({str(run_dir): "waiting for the producer"}, {str(run_dir): "r1"})
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the state dir should be")
    runs.publish_list(blocked / "pending.json", 600.0)  # fails: its parent is a file
    good = tmp_path / "state" / "pending.json"
    good.parent.mkdir()
    runs.publish_list(good, 600.0)  # nothing changed since, and still written
    doc = json.loads(good.read_text())
    assert [r["run_id"] for r in doc["runs"]] == ["r1"]
    good.unlink()
    runs.publish_list(good, 600.0)  # written, and nothing changed since: not again
    assert not good.exists()


def test_a_run_rejected_for_staying_incomplete_keeps_its_run_id(bus: Config) -> None:
    run_dir = make_run_from_bytes(bus.root, "backtest", "slow-1", None, rows=3)  # never written
    old = time.time() - 3600
    os.utime(run_dir / "metadata.json", (old, old))  # written an hour ago
    pipeline.sync(dataclasses.replace(bus, pending_timeout_s=600))
    rows = snapshot_query(bus, "SELECT run_dir, run_id, reason FROM catalog.rejections_f")
    assert [(d, r) for d, r, _ in rows] == [(str(run_dir), "slow-1")]
    assert "still incomplete after" in rows[0][2]


def test_a_restarted_daemon_keeps_when_a_pending_run_was_first_seen(
    bus: Config, tmp_path: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    """The age `pending` shows counts from when the first daemon saw the run, not from the
    restart (the list it left says so)."""
    content = write_parquet(tmp_path / "later.parquet", 3)
    waiting = make_run_from_bytes(bus.root, "policy", "waiting", None, rows=3, declared=content)
    first = daemon_factory(bus).start()
    wait_for(lambda: str(waiting) in on_disk(bus), "the waiting run in the pending list")
    seen = on_disk(bus)[str(waiting)]["first_seen"]
    assert first.stop() == 0
    second = daemon_factory(bus).start()
    pid = second.pid

    def written_by_second() -> dict[str, Any] | None:
        path = pending_path(bus.state_dir)
        doc = json.loads(path.read_text()) if path.exists() else {}
        return doc if doc.get("pid") == pid else None

    doc = wait_for(written_by_second, "the restarted daemon's pending list")
    [row] = doc["runs"]
    first_seen, seen_at = parse_utc(row["first_seen"]), parse_utc(seen)
    assert first_seen is not None and seen_at is not None
    kept = first_seen - seen_at
    assert row["run_dir"] == str(waiting) and abs(kept.total_seconds()) < 0.002, (row, seen)
    (waiting / "results.parquet").write_bytes(content)
    wait_for(lambda: "waiting" in live_run_ids(bus), "registered once its file is there")
    assert second.stop() == 0
