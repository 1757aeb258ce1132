"""Producers that crash, write in the wrong order, or change a run after it was registered.

The daemon is a real subprocess; the producers are real processes (or the test process writing
files the way a misbehaving producer would). Everything is checked through the reader snapshot,
the status file and the daemon's log.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

from builders import (
    DEADLINE_S,
    RunFactory,
    file_entry,
    live_run_ids,
    make_run,
    make_run_from_bytes,
    open_rejections,
    snapshot_query,
    v1_metadata,
    wait_for,
    write_metadata,
    write_parquet,
)

from quantbot_bus.config import Config

from .helpers import CLEAN_ENV, DaemonProcess

# A real producer: quantbot_bus.writer.RunWriter writing several large tables. It prints one line
# once the run directory exists, so the test can kill it while the tables are being written.
PRODUCER = textwrap.dedent(
    """
    import sys, time
    import pyarrow as pa
    from quantbot_bus.writer import RunWriter

    root, run_id = sys.argv[1], sys.argv[2]
    schema = pa.schema([("i", pa.int64()), ("x", pa.float64())])

    def batches():  # a long backtest streaming its results: ~0.4 s per table
        for b in range(40):
            time.sleep(0.01)
            yield pa.record_batch([pa.array(range(b * 5000, (b + 1) * 5000)), pa.array([0.5] * 5000)],
                                  schema=schema)

    with RunWriter(root, "backtest", run_id=run_id, producer=("crashy", "1"), git=None) as w:
        print("writing", flush=True)
        for k in range(4):
            w.write_table(f"t{k}", pa.RecordBatchReader.from_batches(schema, batches()))
    print("done", flush=True)
    """
)


def test_producer_sigkilled_mid_write(
    bus: Config,
    tmp_path: Path,
    run_factory: RunFactory,
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    d = daemon_factory(bus).start()
    script = tmp_path / "producer.py"
    script.write_text(PRODUCER)
    rng = random.Random(11)
    procs = {
        f"crashy-{i}": subprocess.Popen(
            [sys.executable, str(script), str(bus.root), f"crashy-{i}"],
            env=CLEAN_ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        for i in range(6)
    }
    for proc in procs.values():
        assert proc.stdout is not None
        while (line := proc.stdout.readline()) != b"writing\n":  # (its log lines go to stdout)
            assert line, "the producer exited before writing"
    # Each needs ~1.6 s (longer on a busy box): most kills land mid-write.
    t0 = time.monotonic()
    for run_id, at in sorted(
        ((run_id, rng.uniform(0.0, 2.0)) for run_id in procs), key=lambda item: item[1]
    ):
        time.sleep(max(0.0, t0 + at - time.monotonic()))  # each kill at its random moment
        procs[run_id].send_signal(signal.SIGKILL)
    outcomes: dict[str, bool] = {}  # run_id -> metadata.json present after the kill
    for run_id, proc in procs.items():
        assert proc.wait(DEADLINE_S) in (-signal.SIGKILL, 0)
        assert proc.stdout is not None
        proc.stdout.close()
        outcomes[run_id] = (bus.root / "backtest" / run_id / "metadata.json").exists()
    assert not all(outcomes.values()), "every producer finished before the kill: kill earlier"
    print(f"producers killed mid-write: {sum(not v for v in outcomes.values())}/{len(outcomes)}")

    run_factory.make(bus.root / "backtest", "after-crash")
    wait_for(lambda: "after-crash" in live_run_ids(bus), "a good run after the crashes")
    d.wait_settled()  # fails unless the status says pending == 0 in time
    live = live_run_ids(bus)
    for run_id, complete in outcomes.items():
        # A producer that got as far as metadata.json made a complete run; the others made none.
        assert (run_id in live) == complete, (run_id, complete)
    assert open_rejections(bus) == {}  # half-written runs are ignored, not rejected
    assert d.alive()
    assert d.stop() == 0


def test_metadata_before_parquet_pending_then_registered_or_rejected(
    bus: Config, tmp_path: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    """metadata.json first, Parquet written after it by another process (slowly): pending, then
    registered. The same producer killed half way: pending, then rejected after the timeout with
    the reason; once the file is completed, the rejected run is retried and registered."""
    d = daemon_factory(bus, env={"QUANTBOT_BUS_PENDING_TIMEOUT_S": "4"}).start()
    content = write_parquet(tmp_path / "full.parquet", 200_000, compression="none")
    writer_script = tmp_path / "slow_writer.py"
    writer_script.write_text(
        textwrap.dedent(
            """
            import sys, time
            src, dst, stop_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
            data = open(src, "rb").read()[:stop_at]
            with open(dst, "wb") as fh:
                for i in range(0, len(data), 256 * 1024):
                    fh.write(data[i : i + 256 * 1024])
                    fh.flush()
                    time.sleep(0.05)  # a slow writer: pending for a while
                print("done", flush=True)
                time.sleep(3600)  # the "killed" producer never gets further
            """
        )
    )

    def producer(run_id: str, stop_at: int) -> tuple[Path, subprocess.Popen[bytes]]:
        # metadata.json declaring the whole file, before a byte of it is written
        run_dir = make_run_from_bytes(
            bus.root, "backtest", run_id, None, rows=200_000, declared=content
        )
        proc = subprocess.Popen(
            [
                sys.executable,
                str(writer_script),
                str(tmp_path / "full.parquet"),
                str(run_dir / "results.parquet"),
                str(stop_at),
            ],
            stdout=subprocess.PIPE,
        )
        return run_dir, proc

    slow_dir, slow = producer("meta-first", len(content))
    killed_dir, killed = producer("meta-first-killed", len(content) // 3)
    try:
        wait_for(
            lambda: (
                {str(slow_dir), str(killed_dir)} <= {e["run_dir"] for e in d.events("run.pending")}
            ),
            "both runs pending",
        )
        assert slow.stdout is not None and killed.stdout is not None
        assert slow.stdout.readline() == b"done\n"
        wait_for(lambda: "meta-first" in live_run_ids(bus), "the slow run registered")
        assert killed.stdout.readline() == b"done\n"
        killed.send_signal(signal.SIGKILL)
        killed.wait(DEADLINE_S)
    finally:
        for p in (slow, killed):
            p.kill()
            p.wait(DEADLINE_S)
            if p.stdout is not None:
                p.stdout.close()
    reason = wait_for(
        lambda: open_rejections(bus).get(str(killed_dir)), "the killed producer's run rejected"
    )
    assert f"has {len(content) // 3} of its {len(content)} declared bytes" in reason
    assert "still incomplete after" in reason
    assert "meta-first-killed" not in live_run_ids(bus)
    d.wait_settled()  # fails unless the status says pending == 0 in time

    # The producer (or a person) completes the file: the rejected run is retried and registered.
    shutil.copyfile(tmp_path / "full.parquet", killed_dir / "results.parquet")
    wait_for(lambda: "meta-first-killed" in live_run_ids(bus), "the completed run registered")
    assert str(killed_dir) not in open_rejections(bus)
    [(rows,)] = snapshot_query(
        bus, "SELECT total_rows FROM catalog.runs_d WHERE run_id = 'meta-first-killed'"
    )
    assert rows == 200_000
    assert d.stop() == 0


def test_parquet_truncated_or_overwritten_after_registration(
    bus: Config, tmp_path: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    d = daemon_factory(bus, env={"QUANTBOT_BUS_PENDING_TIMEOUT_S": "3"}).start()
    runs: dict[str, Path] = {}
    originals: dict[str, bytes] = {}
    for run_id in ("truncated", "overwritten", "rewritten", "untouched"):
        runs[run_id] = make_run(bus.root, "backtest", run_id, {"results": 1000})
        originals[run_id] = (runs[run_id] / "results.parquet").read_bytes()
    wait_for(lambda: set(runs) <= live_run_ids(bus), "the four runs registered")

    # 1. truncated: shorter than declared -> pending (incomplete), then rejected; run withdrawn.
    with open(runs["truncated"] / "results.parquet", "r+b") as fh:
        fh.truncate(len(originals["truncated"]) // 2)
    # 2. overwritten in place with other bytes of the same size: sha256 mismatch -> rejected.
    other = bytearray(originals["overwritten"])
    other[len(other) // 2] ^= 0xFF
    (runs["overwritten"] / "results.parquet").write_bytes(bytes(other))
    # 3. overwritten by a new table AND a matching metadata.json: an update. Both renames come
    # right after each other (the entry is computed first): in between, the run is briefly a
    # mismatch, and a worker that looked then would reject it before seeing the new metadata.
    new_path = runs["rewritten"] / "results.parquet"
    write_parquet(tmp_path / "new.parquet", 5000)
    entry = file_entry(tmp_path / "new.parquet", file="results.parquet")
    new_meta = v1_metadata("rewritten", "backtest", [entry])
    os.replace(tmp_path / "new.parquet", new_path)
    write_metadata(runs["rewritten"], new_meta)

    reasons = wait_for(
        lambda: (
            (r := open_rejections(bus)).get(str(runs["truncated"]))
            and r.get(str(runs["overwritten"]))
            and r
        ),
        "the truncated and the overwritten runs rejected",
    )
    assert "declared bytes" in reasons[str(runs["truncated"])]
    assert "still incomplete after" in reasons[str(runs["truncated"])]
    assert "sha256" in reasons[str(runs["overwritten"])]
    wait_for(
        lambda: (
            snapshot_query(bus, "SELECT total_rows FROM catalog.runs_d WHERE run_id = 'rewritten'")
            == [(5000,)]
        ),
        "the rewritten run updated",
    )
    live = live_run_ids(bus)
    assert live == {"rewritten", "untouched"}
    deleted = dict(
        snapshot_query(
            bus,
            "SELECT run_id, deleted_at IS NOT NULL FROM catalog.runs_d "
            "WHERE run_id IN ('truncated', 'overwritten')",
        )
    )
    assert deleted == {"truncated": True, "overwritten": True}  # kept, marked deleted
    # Updated in place; or, when the worker looked between the two renames, rejected as a
    # mismatch first and registered again once the new metadata.json arrived.
    history = [
        e["event"]
        for e in d.events()
        if e.get("run_id") == "rewritten"
        and e["event"].startswith("run.")
        and e["event"] != "run.pending"
    ]
    if "run.rejected" in history:
        assert history[0] == "run.registered" and history[-1] in ("run.registered", "run.updated")
    else:
        assert history == ["run.registered", "run.updated"], history
    [(sha,)] = snapshot_query(
        bus, "SELECT sha256 FROM catalog.artifacts_f WHERE run_id = 'rewritten'"
    )
    assert sha == hashlib.sha256(new_path.read_bytes()).hexdigest()

    # Putting the original bytes back makes both valid again: they come back, rejections close.
    (runs["truncated"] / "results.parquet").write_bytes(originals["truncated"])
    (runs["overwritten"] / "results.parquet").write_bytes(originals["overwritten"])
    wait_for(lambda: live_run_ids(bus) == set(runs), "both runs back once restored")
    assert open_rejections(bus) == {}
    [(rows, distinct)] = snapshot_query(
        bus, "SELECT count(*), count(DISTINCT run_id) FROM catalog.runs_d"
    )
    assert rows == distinct == 4
    assert d.stop() == 0


def test_run_directory_deleted_while_being_validated(
    bus: Config, tmp_path: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    """A churner creates and deletes run directories as fast as it can (some the same path over
    and over), while good runs keep arriving; in the end the catalog equals the disk."""
    d = daemon_factory(bus).start()
    factory = RunFactory(tmp_path / "tpl", rows=2000)
    rng = random.Random(5)
    stop = threading.Event()
    churned = 0

    def churn() -> None:
        nonlocal churned
        while not stop.is_set():
            run_id = f"churn-{rng.randrange(20)}"  # the same 20 paths over and over
            run_dir = factory.make(bus.root / "churn", run_id, run_type="churn")
            time.sleep(rng.choice((0.0, 0.0005, 0.002, 0.01)))  # gone at random moments
            shutil.rmtree(run_dir)
            churned += 1

    thread = threading.Thread(target=churn, daemon=True)
    thread.start()
    try:
        for i in range(100):
            factory.make(bus.root / "backtest", f"steady-{i:03d}")
            time.sleep(0.02)  # steady runs spread over the churn
    finally:
        stop.set()
        thread.join(DEADLINE_S)
    expected = {f"steady-{i:03d}" for i in range(100)}
    wait_for(lambda: live_run_ids(bus) == expected, "exactly the steady runs live")
    d.wait_settled()  # fails unless the status says pending == 0 in time
    assert open_rejections(bus) == {}, "a rejection was left for a directory that is gone"
    assert d.alive()
    assert not d.events("batch.failed") and not d.events("worker.crashed")
    assert churned > 100
    assert d.stop() == 0
