"""SIGKILL the daemon at many moments of a 2,000-run burst, restart it, and lose nothing.

Each cycle: start the daemon (wait for ready), rename a pre-built burst of 2,000 complete runs into
the root, SIGKILL the daemon at a kill point, look at what it left on disk (post-mortem), and go on
with the next cycle. After the last cycle a final daemon must hold every run exactly once, with
nothing pending, the exports equal to the catalog, and a clean SIGTERM stop.

Kill points (rotated over the cycles):

- ``random``: a uniformly random delay after the burst starts (0 .. 1.2 x the last ingest time);
  mostly lands in validation, sometimes in a commit or a publish.
- ``wal``: the moment the test sees ``state/bus.duckdb.wal`` change size (polled every ms):
  DuckDB writes the WAL at COMMIT, so the kill lands during that commit or within about a
  millisecond after it, before the batch is published.
- ``publication``: the moment a generation directory above ``exports/current`` has its manifest
  (written right before the swap; one made ahead has none yet) or a publication temp name
  (``.qbpub-*``) exists: mid-publication.
- ``export``: the moment an export temp file (``.*.qbexp-*.tmp``) exists: mid-export.
- ``startup``: a random delay after the process starts, without waiting for ready: during the
  startup reconcile of the previous cycles' leftovers (the burst is renamed in first).

What is recorded after each kill (honestly: evidence read from disk, not the daemon's mind):
``committed`` = live runs in a copy of the working catalog (WAL replayed on the copy),
``published`` = live runs in the publication (exports/bus.duckdb), ``logged`` = distinct run.registered ids in the
log. ``committed > published`` proves the kill hit after a COMMIT and before that batch's
publication; ``committed > logged`` that it hit between the COMMIT and its log lines; a half-made
generation or a leftover export temp file that it hit mid-write; a non-empty WAL that the restart had to
replay committed-but-not-checkpointed work. A kill inside an *open* transaction leaves no trace
on disk (DuckDB writes nothing before COMMIT for batches this size), so it cannot be told apart
from a kill during validation; those are counted together as ``in_flight``.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from builders import (
    DEADLINE_S,
    SOAK,
    RunFactory,
    live_count,
    live_run_ids,
    snapshot_query,
    wait_for,
)

from quantbot_bus.config import Config

from .helpers import DaemonProcess, assert_consistent, exported_run_ids, working_catalog_runs

#: Runs per cycle: 2,000 in the soak, 300 in the fast suite. 300 renames still outlast the
#: daemon's 5 ms settle, so each burst is several batches (commits, publications, export
#: writes) that every kill point can hit; the final daemon still replays all of them.
BURST = 2000 if SOAK else 300
KILL_POINTS = ("random", "wal", "publication", "export", "startup")


def _wal(config: Config) -> Path:
    return config.catalog_path.with_name(config.catalog_path.name + ".wal")


def _export_tmps(config: Config) -> list[Path]:
    out = []
    for folder, _dirs, files in os.walk(config.exports_dir):
        out += [Path(folder) / f for f in files if ".qbexp-" in f and f.endswith(".tmp")]
    return out


def _publication_partials(config: Config) -> list[Path]:
    """Generation dirs above the current one that have their manifest, and publication temp
    names: a publication in progress (or, after a kill, one the next start must clean up)."""
    exports_dir = config.exports_dir
    try:
        current = int(Path(os.readlink(exports_dir / "current")).name)
    except (OSError, ValueError):
        current = 0
    # a generation made ahead (no manifest yet) is not a publication in progress: its manifest
    # is written right before the swap
    out = [
        p
        for p in (exports_dir / "gen").glob("*")
        if p.name.isdigit() and int(p.name) > current and (p / "manifest.json").exists()
    ]
    return out + list(exports_dir.glob(".*.qbpub-*"))


def _trigger(point: str, config: Config) -> Callable[[], bool]:
    """A condition that becomes true at the kill point (polled by the killer thread)."""
    if point == "wal":
        wal = _wal(config)
        base = wal.stat().st_size if wal.exists() else -1

        def wal_changed() -> bool:
            try:
                return wal.stat().st_size != base
            except FileNotFoundError:
                return False

        return wal_changed
    if point == "publication":
        return lambda: bool(_publication_partials(config))
    if point == "export":
        return lambda: bool(_export_tmps(config))
    raise ValueError(point)


class Killer(threading.Thread):
    """SIGKILLs the daemon when ``trigger`` fires (polled every ms) or after ``delay``."""

    def __init__(
        self, daemon: DaemonProcess, delay: float, trigger: Callable[[], bool] | None
    ) -> None:
        super().__init__(name="killer", daemon=True)
        self.daemon_process = daemon
        self.delay = delay
        self.trigger = trigger
        self.fired_by = "timeout"
        self.at: float = 0.0

    def run(self) -> None:
        t0 = time.monotonic()
        deadline = t0 + self.delay
        while time.monotonic() < deadline:
            if self.trigger is not None and self.trigger():
                self.fired_by = "trigger"
                break
            time.sleep(0.001 if self.trigger is not None else min(0.01, self.delay))
        self.daemon_process.signal(signal.SIGKILL)
        self.at = time.monotonic() - t0


def post_mortem(
    config: Config, d: DaemonProcess, committed_before: int, tmps_before: set[Path]
) -> dict[str, Any]:
    """What the killed daemon left on disk, and what that proves about the kill point.

    ``committed_before``: live runs in the working catalog when this daemon started;
    ``tmps_before``: temp files already there then (only new ones are evidence of this kill).
    """
    wal = _wal(config)
    evidence: dict[str, Any] = {
        "wal_bytes": wal.stat().st_size if wal.exists() else 0,
        "publication_partial": bool(set(_publication_partials(config)) - tmps_before),
        "export_tmp": bool(set(_export_tmps(config)) - tmps_before),
        "committed": working_catalog_runs(config) or 0,
        "published": live_count(config),
        "logged": committed_before
        + len({e["run_id"] for e in d.events("run.registered", every_start=False)}),
    }
    return evidence


def classify(ev: dict[str, Any], on_disk: int) -> list[str]:
    kinds = []
    if ev["committed"] > ev["published"]:
        kinds.append("after_commit_before_publish")
    if ev["committed"] > ev["logged"]:
        kinds.append("between_commit_and_log")
    if ev["publication_partial"]:
        kinds.append("mid_publication")
    if ev["export_tmp"]:
        kinds.append("mid_export_write")
    if ev["committed"] < on_disk:
        kinds.append("in_flight")  # validation or an open transaction: indistinguishable
    if ev["wal_bytes"]:
        kinds.append("wal_replay_needed")
    return kinds or ["idle"]


def run_kill_cycles(
    config: Config,
    tmp_path: Path,
    daemon_factory: Callable[..., DaemonProcess],
    cycles: int,
    seed: int,
) -> dict[str, Any]:
    rng = random.Random(seed)
    factory = RunFactory(tmp_path / "template")
    (config.root / "backtest").mkdir(parents=True, exist_ok=True)
    d = daemon_factory(config)
    expected: set[str] = set()
    # First guess of a burst's ingest time (~250 runs/s on a busy 2-core box, at most 3 s): the
    # first random kill lands within it, mid-burst; re-measured below.
    ingest_s = min(3.0, BURST / 250)
    points: Counter[str] = Counter()
    evidence_kinds: Counter[str] = Counter()
    trigger_missed = 0
    kills = 0
    committed = 0
    for cycle in range(cycles):
        point = KILL_POINTS[cycle % len(KILL_POINTS)]
        tmps_before = set(_publication_partials(config)) | set(_export_tmps(config))
        ids = [f"k{cycle:02d}-{i:05d}" for i in range(BURST)]
        staging = tmp_path / f"staging-{cycle}"
        factory.stage(staging, ids)
        if point == "startup":
            # The burst lands while the daemon is down; the kill hits the startup reconcile.
            for run_id in ids:
                os.rename(staging / run_id, config.root / "backtest" / run_id)
            expected.update(ids)
            d.start(wait=False)
            killer = Killer(d, rng.uniform(0.3, 0.3 + ingest_s), None)
            killer.start()
        else:
            d.start()
            trigger = None if point == "random" else _trigger(point, config)
            delay = rng.uniform(0.0, 1.2 * ingest_s) if point == "random" else 3 * ingest_s + 5
            killer = Killer(d, delay, trigger)
            killer.start()
            t0 = time.monotonic()
            for run_id in ids:  # the burst: each run appears by one atomic rename
                os.rename(staging / run_id, config.root / "backtest" / run_id)
            expected.update(ids)
        killer.join(DEADLINE_S)
        assert d.proc is not None
        assert d.proc.wait(DEADLINE_S) == -signal.SIGKILL, d.tail()
        kills += 1
        if point not in ("random", "startup") and killer.fired_by != "trigger":
            trigger_missed += 1
        fired = killer.fired_by == "trigger" or point in ("random", "startup")
        points[point if fired else f"{point}_missed"] += 1
        ev = post_mortem(config, d, committed, tmps_before)
        committed = ev["committed"]
        kinds = classify(ev, len(expected))
        evidence_kinds.update(kinds)
        print(f"cycle {cycle}: {point} ({killer.fired_by}, {killer.at:.3f} s): {ev} -> {kinds}")
        # Never a duplicate, whatever the kill point.
        [(rows, distinct)] = snapshot_query(
            config, "SELECT count(*), count(DISTINCT run_id) FROM catalog.runs_d"
        ) or [(0, 0)]
        assert rows == distinct
        if point == "random" and cycle == 0:
            # Calibrate the random window on a full ingest of the first burst.
            t0 = time.monotonic()
            d.start()
            d.wait_live_runs(len(expected), timeout=120)
            ingest_s = max(0.5, time.monotonic() - t0)
            d.kill()
            kills += 1
            committed = working_catalog_runs(config) or 0

    # The final daemon: everything registered exactly once, nothing pending, exports match.
    d.start()
    d.wait_live_runs(len(expected), timeout=180)
    d.wait_settled()  # fails unless the status says pending == 0 in time
    assert_consistent(config, expected)
    wait_for(
        lambda: exported_run_ids(config) == expected,
        "exports/runs.parquet to hold exactly the live runs",
        timeout=120,
    )
    [(open_rejections,)] = snapshot_query(
        config, "SELECT count(*) FROM catalog.rejections_f WHERE resolved_at IS NULL"
    )
    assert open_rejections == 0
    assert d.stop() == 0
    assert not d.events("worker.crashed")
    # Half-made generations and temp names of killed publications are cleaned up, not leaked.
    assert _publication_partials(config) == []
    lost = len(expected - live_run_ids(config))
    return {
        "cycles": cycles,
        "runs": len(expected),
        "kills_survived": kills,
        "kill_points": dict(points),
        "trigger_missed": trigger_missed,
        "evidence": dict(evidence_kinds),
        "kills_after_commit_before_publish": evidence_kinds["after_commit_before_publish"],
        "runs_lost": lost,
    }


def run_series(
    tmp_path: Path,
    daemon_factory: Callable[..., DaemonProcess],
    series: int,
    cycles: int,
    seed: int,
) -> dict[str, Any]:
    """``series`` fresh buses of ``cycles`` kill cycles each (a bus of 10 cycles holds 20,000
    runs; a fresh one bounds the time per cycle), figures summed."""
    total: dict[str, Any] = {}
    for k in range(series):
        base = tmp_path / f"series-{k}"
        config = Config(
            root=base / "artifacts", exports_dir=base / "exports", state_dir=base / "state"
        ).validate()
        for d in (config.root, config.exports_dir, config.state_dir):
            d.mkdir(parents=True)
        figures = run_kill_cycles(config, base, daemon_factory, cycles, seed + k)
        for key, value in figures.items():
            if isinstance(value, dict):
                merged = total.setdefault(key, {})
                for kk, vv in value.items():
                    merged[kk] = merged.get(kk, 0) + vv
            else:
                total[key] = total.get(key, 0) + value
    total["series"] = series
    return total


def test_sigkill_cycles_fast(
    tmp_path: Path,
    daemon_factory: Callable[..., DaemonProcess],
    figures: dict[str, Any],
) -> None:
    """3 cycles (random, WAL-write, mid-publication kill points) in the fast suite."""
    # run_kill_cycles asserts that every run is live exactly once (assert_consistent) and that
    # the exports hold exactly the live runs: the figures only report.
    figures.update(run_series(tmp_path, daemon_factory, series=1, cycles=3, seed=7))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigkill_cycles_soak(
    tmp_path: Path,
    daemon_factory: Callable[..., DaemonProcess],
    figures: dict[str, Any],
) -> None:
    """20 cycles (50 with QUANTBOT_BUS_SOAK=1), every kill point in turn: series of 10 cycles."""
    series = 5 if SOAK else 2
    figures.update(
        run_series(tmp_path, daemon_factory, series=series, cycles=10, seed=int(time.time()))
    )
