"""examples/query_catalog.py runs green against the exports of a real daemon (and of ``sync``).

The daemon is a real subprocess (``python -m quantbot_bus.cli daemon``, via reliability.helpers'
DaemonProcess) on a temporary bus; runs are dropped while it runs; the example script is run as a
user would, as a subprocess, while the daemon keeps running. Deadlines are generous; nothing asserts speed.
"""

# ruff: noqa: S608 - test SQL over paths and run ids the test itself made

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import duckdb
from builders import (
    CALLERS,
    DEADLINE_S,
    add_optimize_run,
    add_path_run,
    add_policy_run,
    sync,
)
from reliability.helpers import CLEAN_ENV, DaemonProcess

from quantbot_bus.config import Config
from quantbot_bus.errors import CatalogMissingError
from quantbot_bus.publication import current_generation

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "examples" / "query_catalog.py"


def summary_runs(cfg: Config, name: str) -> set[str]:
    """run_ids in the published summary file ``name``, read as file readers are told to:
    resolve ``exports/current`` once, read below that (immutable) generation."""
    try:
        path = current_generation(cfg.exports_dir) / "files" / f"{name}.parquet"
    except CatalogMissingError:
        return set()  # nothing published yet
    if not path.exists():
        return set()  # not written yet
    rel = duckdb.sql(f"SELECT run_id FROM '{path}'")
    assert rel is not None
    return {r[0] for r in rel.fetchall()}


def exported_runs(cfg: Config) -> set[str]:
    return summary_runs(cfg, "runs")


def run_example(exports_dir: Path) -> str:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(exports_dir)],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        env=CLEAN_ENV,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def check_output(out: str) -> None:
    assert "== recent runs" in out and "== best callers" in out and "== policies" in out
    for name in ("path-1", "pol-0", *CALLERS, "trail-10", "fixed-2x", "time-1h"):
        assert name in out, name


def drop_runs(cfg: Config) -> None:
    for i in range(3):
        add_path_run(cfg, f"path-{i}", n=40, seed=i)
    add_policy_run(cfg, "pol-0", n=10, seed=7)
    add_optimize_run(cfg, "opt-0", seed=8, created_at="2024-05-02T00:00:00Z")


def test_example_script_against_a_running_daemon(
    bus: Config, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    d = daemon_factory(bus, env={"QUANTBOT_BUS_EXPORT_INTERVAL_S": "0.2"}).start(wait=False)
    add_path_run(bus, "path-early", n=20, seed=99)  # present at start: reconcile
    d.wait_for(lambda: "path-early" in exported_runs(bus), "the first export")
    drop_runs(bus)  # dropped while it runs: inotify
    expected = {"path-early", "path-0", "path-1", "path-2", "pol-0", "opt-0"}
    d.wait_for(lambda: exported_runs(bus) == expected, "exports of every run")
    # Each summary file is rewritten on its own cadence: wait until the summaries published
    # after runs.parquet carry the policy run too.
    d.wait_for(lambda: "pol-0" in summary_runs(bus, "policy_comparison"), "the summaries")
    check_output(run_example(bus.exports_dir))
    status = json.loads((bus.exports_dir / "_export_status.json").read_text())
    assert all(entry["ok"] for entry in status["exports"].values()), status
    assert d.stop() == 0, d.tail()


def test_example_script_against_sync_exports(bus: Config) -> None:
    drop_runs(bus)
    sync(bus)
    check_output(run_example(bus.exports_dir))


def test_example_script_is_small() -> None:
    assert len(SCRIPT.read_text().splitlines()) <= 40
