"""Readers never fail: reader processes of every documented path (DuckDB on ``exports/bus.duckdb``,
Polars and pyarrow below the resolved ``exports/current``) read while a real daemon subprocess
registers a burst (compaction, export refreshes, garbage collection with a short grace): zero
failures, and never a run without its artifacts.

Reader processes: ``tests/_publication_reader.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from builders import DEADLINE_S, RunFactory, snapshot_query, wait_for
from publication_reading import READER, generations
from reliability.helpers import CLEAN_ENV, DaemonProcess, assert_consistent

from quantbot_bus.config import Config
from quantbot_bus.errors import CatalogMissingError
from quantbot_bus.publication import MAX_SEGMENTS, current_generation

# The daemon, with the publication's grace period set (a test cannot wait 60 s per generation).
_SHORT_GRACE = textwrap.dedent(
    """
    import sys
    from quantbot_bus.publication import Publication
    Publication.__init__.__kwdefaults__["grace_s"] = float(sys.argv.pop(1))
    from quantbot_bus.cli import main
    main()
    """
)


class ShortGraceDaemon(DaemonProcess):
    """``quantbot-bus daemon`` whose publication removes generations after ``grace_s``."""

    def __init__(self, config: Config, *, grace_s: float, **kw: Any) -> None:
        super().__init__(config, **kw)
        self.grace_s = grace_s

    @property
    def command(self) -> list[str]:
        base = super().command
        args = base[base.index("quantbot_bus.cli") + 1 :]
        return [sys.executable, "-c", _SHORT_GRACE, str(self.grace_s), *args]


def published_runs(config: Config) -> int:
    """Rows of catalog/runs_d below the current generation (every run here is written once)."""
    try:
        gen = current_generation(config.exports_dir)
    except CatalogMissingError:  # nothing published yet
        return 0
    return sum(pq.read_metadata(f).num_rows for f in (gen / "catalog" / "runs_d").glob("*.parquet"))


READER_MODES = ("duckdb", "held", "polars", "pyarrow")
WAVE = 8  #: runs per wave; each wave is waited for (published) before the next one
#: (waves, reads by each reader at least): the fast suite's burst and the soak's. Each wave is one
#: publication of catalog rows; more of them than 2 x MAX_SEGMENTS segments, so the catalog
#: segments are compacted under the readers too. The fresh-connection reader is the slowest
#: (a new DuckDB instance per round): the burst is paced on it.
BURSTS = [
    pytest.param(20, 400, id="20-waves"),
    pytest.param(50, 800, id="50-waves", marks=[pytest.mark.slow, pytest.mark.timeout(600)]),
]
READER_GRACE_S = 3.0  #: the daemon's GC removes generations superseded this long ago
#: Export refreshes (each one a new export-table segment) at most this often: a dozen or more in
#: the burst, without dozens of segments making every read of exports.<table> slower.
EXPORT_INTERVAL_S = 2.5


@pytest.mark.parametrize(("waves", "reads_each"), BURSTS)
def test_readers_of_every_documented_path_never_fail_during_a_burst(
    waves: int,
    reads_each: int,
    bus: Config,
    tmp_path: Path,
    run_factory: RunFactory,
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    """Four reader processes (fresh DuckDB connections, one DuckDB connection held throughout,
    Polars, pyarrow) read while the daemon registers ``waves`` waves of 8 runs. Wave k is written once every
    reader has done (k-1)/waves of its ``reads_each`` reads, so each reader's reads and the
    publications interleave whatever the machine's speed and whichever reader is slowest; the daemon's grace period is 3 s, so generations
    are removed under the readers too."""
    run_factory.make(bus.root / "backtest", "first")
    d = daemon_factory(
        bus,
        cls=ShortGraceDaemon,
        grace_s=READER_GRACE_S,
        env={"QUANTBOT_BUS_EXPORT_INTERVAL_S": str(EXPORT_INTERVAL_S)},
    ).start()

    def exports_published() -> bool:
        gen = current_generation(bus.exports_dir)
        return (gen / "files" / "runs.parquet").is_file() and any(
            (gen / "tables" / run_factory.entry["name"]).glob("*.parquet")
        )

    wait_for(exports_published, "the first export files and tables in the current generation")

    stop = tmp_path / "stop-readers"
    outs = {mode: tmp_path / f"reader-{mode}.json" for mode in READER_MODES}
    errs = {mode: tmp_path / f"reader-{mode}.err" for mode in READER_MODES}
    readers: dict[str, subprocess.Popen[bytes]] = {}
    for mode in READER_MODES:
        with open(errs[mode], "wb") as err:
            readers[mode] = subprocess.Popen(
                [
                    sys.executable,
                    str(READER),
                    mode,
                    str(bus.exports_dir),
                    str(stop),
                    str(outs[mode]),
                    str(reads_each),
                    run_factory.entry["name"],
                ],
                env=CLEAN_ENV,
                stdin=subprocess.DEVNULL,
                stderr=err,
            )

    def check_alive() -> None:
        for mode, p in readers.items():
            if p.poll() is not None and not stop.exists():
                raise AssertionError(
                    f"reader {mode} exited {p.returncode} early:\n{errs[mode].read_text()}"
                )
        if not d.alive():
            raise AssertionError(f"daemon exited {d.returncode()}:\n{d.tail()}")

    def marked(suffix: str) -> bool:
        check_alive()
        return all(Path(f"{out}{suffix}").exists() for out in outs.values())

    def reads_by_reader() -> dict[str, int]:
        check_alive()
        done = {}
        for mode, out in outs.items():
            try:
                done[mode] = int(Path(f"{out}.progress").read_text())
            except (FileNotFoundError, ValueError):
                done[mode] = 0
        return done

    expected = {"first"}

    def every_reader_reaches(n: int) -> Callable[[], bool]:
        return lambda: min(reads_by_reader().values()) >= n

    def published(n: int) -> Callable[[], bool]:
        def check() -> bool:
            check_alive()
            return published_runs(bus) >= n

        return check

    try:
        wait_for(lambda: marked(".started"), "every reader's first round")
        for wave in range(1, waves + 1):
            due = (wave - 1) * reads_each // waves
            wait_for(every_reader_reaches(due), f"{due} reads by every reader before wave {wave}")
            for k in range(WAVE):
                run_id = f"w{wave:03d}-{k}"
                run_factory.make(bus.root / "backtest", run_id)
                expected.add(run_id)
            wait_for(published(len(expected)), f"wave {wave} published", every=0.05)
        wait_for(lambda: marked(".quota"), f"{reads_each} reads by every reader")
        # Garbage collection removes superseded generations while the readers go on reading.
        current = current_generation(bus.exports_dir).name

        def collected() -> set[str] | None:
            left = generations(bus)
            return left if len(left) < int(current) // 2 else None

        gens_left = wait_for(collected, f"fewer than half of {current} generations left")
    finally:
        stop.touch()
        for p in readers.values():
            try:
                p.wait(DEADLINE_S)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(DEADLINE_S)

    tallies = {}
    for mode, out in outs.items():
        code = readers[mode].returncode
        assert code == 0, f"reader {mode} exited {code}:\n{errs[mode].read_text()}"
        tallies[mode] = json.loads(out.read_text())
    reads = sum(t["reads"] for t in tallies.values())
    print(
        f"\n{reads} reads, {len(expected)} runs in {waves} waves, last generation {current}, "
        f"{len(gens_left)} generations left; "
        + "; ".join(
            f"{m}: {t['reads']} reads in {t['seconds']} s ({t['cpu_s']} s CPU), "
            f"{t['generations']} generations"
            for m, t in tallies.items()
        )
    )
    failed = {m: t["errors"] for m, t in tallies.items() if t["failures"] or t["inconsistent"]}
    print(f"daemon CPU {d.cpu_seconds():.1f} s")
    assert not failed, f"readers failed: {json.dumps(failed, indent=1)}"
    assert all(t["reads"] >= reads_each for t in tallies.values()), tallies
    for mode, t in tallies.items():
        counts = t["counts"]
        if mode == "held":  # one connection, one generation: its count never moves
            assert len(counts) == 1, f"the held connection's run count moved: {counts[:20]}"
            assert t["generations"] == 1, "the held connection's views moved to another generation"
            # superseded long before the end, yet kept: its views file is locked
            assert t["held_gen"] in gens_left and t["held_gen"] != current
            continue
        assert counts == sorted(set(counts)), f"{mode}: the run count went backwards: {counts}"
        assert len(counts) >= 2 and counts[-1] > counts[0], f"{mode} never saw the count grow"

    # Compaction ran: each wave published a segment per catalog table, yet the
    # current generation holds few.
    for table in ("runs_d", "artifacts_f"):
        segments = list((current_generation(bus.exports_dir) / "catalog" / table).glob("*.parquet"))
        assert len(segments) <= 2 * MAX_SEGMENTS < waves, f"{len(segments)} {table} segments"
    d.wait_live_runs(len(expected))
    assert_consistent(bus, expected)

    # The exports catch up with the catalog: the view and the file below `current`.
    def exports_caught_up() -> bool:
        [(viewed,)] = snapshot_query(bus, "SELECT count(*) FROM exports.runs")
        gen = current_generation(bus.exports_dir)
        filed = pq.read_metadata(gen / "files" / "runs.parquet").num_rows
        return viewed == filed == len(expected)

    wait_for(exports_caught_up, f"exports.runs and files/runs.parquet with {len(expected)} runs")
    for event in ("batch.failed", "export.failed", "publication.compaction_failed"):
        assert not d.events(event), d.events(event)[:3]
    assert d.stop() == 0
