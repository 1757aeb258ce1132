"""Readers never block the daemon, the daemon never blocks readers.

One connection to the reader-side snapshot is held open by the test process for the whole test;
four reader subprocesses open the snapshot, query it and close it in a tight loop (and run the
``quantbot-bus runs`` CLI now and then) while the daemon takes a burst of runs. Zero errors of
any kind are allowed on the reader side (a lock error would be the typical one), and the daemon
must log no failed batch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from builders import SOAK, RunFactory, wait_for

from quantbot_bus.catalog import open_reader
from quantbot_bus.config import Config

from .helpers import CLEAN_ENV, DaemonProcess, assert_consistent

READER = textwrap.dedent(
    """
    import json, subprocess, sys, time
    from pathlib import Path
    from quantbot_bus.catalog import open_reader

    snapshot, exports, stop_file, out = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4]
    queries = errors = cli = 0
    seen = []
    first_error = None
    while not stop_file.exists():
        try:
            con = open_reader(Path(snapshot))
            try:
                (n,) = con.execute(
                    "SELECT count(*) FROM catalog.runs_d WHERE deleted_at IS NULL").fetchone()
                con.execute("SELECT run_type, count(*) FROM catalog.runs_d GROUP BY 1").fetchall()
                con.execute("SELECT * FROM catalog.latest_artifacts_v").fetchall()
            finally:
                con.close()
            seen.append(n)
            queries += 1
            Path(out + ".seen").write_text(str(n))  # what it saw last (the test waits on it)
        except Exception as exc:
            errors += 1
            first_error = first_error or f"{type(exc).__name__}: {exc}"
        if queries % 50 == 0:
            done = subprocess.run(
                [sys.executable, "-m", "quantbot_bus.cli", "runs", "--format", "json",
                 "--limit", "5", "--exports-dir", exports],
                capture_output=True, text=True)
            cli += 1
            if done.returncode != 0:
                errors += 1
                first_error = first_error or done.stderr
    monotonic = all(a <= b for a, b in zip(seen, seen[1:]))
    Path(out).write_text(json.dumps({"queries": queries, "errors": errors, "cli": cli,
                                     "first_error": first_error, "monotonic": monotonic,
                                     "last": seen[-1] if seen else None}))
    """
)


def test_held_reader_and_four_looping_readers_see_no_error(
    bus: Config,
    tmp_path: Path,
    run_factory: RunFactory,
    daemon_factory: Callable[..., DaemonProcess],
    figures: dict[str, Any],
) -> None:
    ids = [f"r-{i:05d}" for i in range(1500 if SOAK else 600)]
    wave = len(ids) // 5
    run_factory.stage(tmp_path / "staging", ids)
    run_factory.make(bus.root / "backtest", "first")
    d = daemon_factory(bus).start()

    held = open_reader(bus.snapshot_path)  # held for the whole test
    script = tmp_path / "reader.py"
    script.write_text(READER)
    stop_file = tmp_path / "stop"
    readers = [
        subprocess.Popen(
            [
                sys.executable,
                str(script),
                str(bus.snapshot_path),
                str(bus.exports_dir),
                str(stop_file),
                str(tmp_path / f"reader-{i}.json"),
            ],
            env=CLEAN_ENV,
        )
        for i in range(4)
    ]
    try:
        wait_for(
            lambda: all(Path(f"{tmp_path}/reader-{i}.json.seen").exists() for i in range(4)),
            "every reader's first query",
        )
        for i, run_id in enumerate(ids):
            os.rename(tmp_path / "staging" / run_id, bus.root / "backtest" / run_id)
            if i % wave == wave - 1:  # five waves; the held reader answers between them
                assert held.execute("SELECT count(*) FROM catalog.runs_d").fetchone() == (1,)
                time.sleep(0.5)  # a gap between waves: each is published on its own
        d.wait_live_runs(len(ids) + 1, timeout=120)

        def last_seen(i: int) -> str:
            return Path(f"{tmp_path}/reader-{i}.json.seen").read_text()

        want = str(len(ids) + 1)
        wait_for(lambda: all(last_seen(i) == want for i in range(4)), "every reader at the end")
    finally:
        stop_file.touch()
        for p in readers:
            p.wait(60)
    # The held connection still answers, with its consistent (old) view.
    assert held.execute("SELECT count(*) FROM catalog.runs_d").fetchone() == (1,)
    held.close()

    results = [json.loads((tmp_path / f"reader-{i}.json").read_text()) for i in range(4)]
    errors = sum(r["errors"] for r in results)
    assert errors == 0, [r["first_error"] for r in results if r["first_error"]]
    assert all(r["monotonic"] for r in results), "a reader saw the run count go backwards"
    assert all(r["last"] == len(ids) + 1 for r in results), [r["last"] for r in results]
    assert all(r["queries"] > 10 for r in results)
    assert_consistent(bus, {*ids, "first"})
    assert not d.events("batch.failed")
    assert d.stop() == 0
    figures.update(
        {
            "held_readers": 1,
            "looping_readers": len(readers),
            "reader_queries": sum(r["queries"] for r in results),
            "cli_calls": sum(r["cli"] for r in results),
            "reader_errors": errors,
            "lock_errors": errors,
        }
    )
