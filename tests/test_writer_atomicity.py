"""RunWriter's atomicity: metadata.json appears last (a concurrent observer never sees it early),
and a producer process sent SIGKILL mid-write leaves no metadata.json."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
from builders import wait_for
from writer_checks import assert_artifacts_match_files, leftovers, read_meta

from quantbot_bus.writer import RunWriter


def test_metadata_appears_last(tmp_path: Path) -> None:
    """A concurrent observer never sees metadata.json before every listed file is complete."""
    root = tmp_path / "artifacts"
    run_dir = root / "demo" / "watched"
    schema = pa.schema([("i", pa.int64())])

    def slow() -> Any:
        for b in range(20):
            time.sleep(0.01)  # a slow table: the observer gets many looks while it is written
            yield pa.record_batch([pa.array(range(b * 100, b * 100 + 100))], schema=schema)

    def produce() -> None:
        with RunWriter(root, "demo", run_id="watched", producer=("p", "1")) as w:
            w.write_table("first", pa.table({"a": [1]}))
            w.write_table("second", pa.RecordBatchReader.from_batches(schema, slow()))
            w.write_table("third", pl.DataFrame({"b": [1, 2]}))

    thread = threading.Thread(target=produce)
    thread.start()
    snapshots = 0
    seen_partial = False
    try:
        while True:
            done = not thread.is_alive()
            names = set(os.listdir(run_dir)) if run_dir.exists() else set()
            seen_partial |= any(n.endswith(".partial") for n in names)
            if "metadata.json" in names:
                meta = read_meta(run_dir)  # complete JSON the moment it exists (atomic rename)
                assert {a["file"] for a in meta["artifacts"]} <= names
                assert not any(n.endswith(".partial") for n in names)
                assert_artifacts_match_files(run_dir, meta)
                assert [a["name"] for a in meta["artifacts"]] == ["first", "second", "third"]
            snapshots += 1
            if done:
                break
    finally:
        thread.join(timeout=60)
    assert seen_partial and snapshots > 1
    assert leftovers(run_dir) == []
    assert read_meta(run_dir)["status"] == "success"


_SLOW_PRODUCER = textwrap.dedent(
    """
    import sys, time
    import pyarrow as pa
    from quantbot_bus.writer import RunWriter

    schema = pa.schema([("i", pa.int64()), ("s", pa.string())])

    def slow():
        for b in range(100_000):
            ids = list(range(b * 1000, (b + 1) * 1000))
            yield pa.record_batch([pa.array(ids), pa.array([str(i) for i in ids])], schema=schema)
            time.sleep(0.01)  # a long backtest: still writing when it is killed

    with RunWriter(sys.argv[1], "backtest", run_id="victim", producer=("p", "1")) as w:
        w.write_table("finished_first", pa.table({"a": [1, 2, 3]}))
        w.write_table("big", pa.RecordBatchReader.from_batches(schema, slow()))
    """
)


def test_sigkill_mid_write_leaves_no_metadata(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    run_dir = root / "backtest" / "victim"
    partial = run_dir / "big.parquet.partial"
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_PRODUCER, str(root)], stdout=subprocess.DEVNULL
    )

    def writing() -> bool:
        assert proc.poll() is None, "the producer exited before it was killed"
        return partial.exists() and partial.stat().st_size > 0

    try:
        wait_for(writing, "the producer to start writing its big table")
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    names = sorted(p.name for p in run_dir.iterdir())
    assert "metadata.json" not in names
    assert not any(n.endswith(".tmp") for n in names)
    assert names == ["big.parquet.partial", "finished_first.parquet"]
