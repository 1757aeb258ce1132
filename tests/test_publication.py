"""The publication as users reach it: a real daemon subprocess, real DuckDB files, real readers.

- The catalog is exclusive: while a daemon runs (with no run yet, with one, with many),
  ``sync``, ``rebuild`` and a second ``daemon`` on the same state dir exit 10 naming its pid, the
  working catalog is left where it is, the daemon still holds its DuckDB lock and keeps working.
- Readers never fail: reader processes of every documented path (DuckDB on ``exports/bus.duckdb``,
  Polars and pyarrow below the resolved ``exports/current``) read while the daemon registers a
  burst (compaction, export refreshes, garbage collection with a short grace): zero failures, and
  never a run without its artifacts.
- A connection kept open keeps its generation through new generations and garbage collection;
  once closed, the next collection removes it. (A second ``duckdb.connect`` of the same path in
  the same process is harmless; a second open through ATTACH, closed, drops the process's lock:
  the documented known limit, kept as a strict xfail.)
- The views file opens in the DuckDB CLI users get from pip (1.5.6) and in Python duckdb 1.4.5
  (located as :func:`old_duckdb_cli` / :func:`old_duckdb_python` say; skipped only when absent).

Reader processes: ``tests/_publication_reader.py``.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest
from builders import (
    DEADLINE_S,
    RunFactory,
    live_count,
    live_run_ids,
    make_run,
    sample_table,
    snapshot_query,
    wait_for,
)
from reliability.helpers import CLEAN_ENV, DaemonProcess, assert_consistent, run_cli

from quantbot_bus.config import Config
from quantbot_bus.errors import CatalogMissingError
from quantbot_bus.pipeline import Bus, sync
from quantbot_bus.publication import MAX_SEGMENTS, current_generation

REPO = Path(__file__).resolve().parent.parent
READER = Path(__file__).with_name("_publication_reader.py")
BUSY_EXIT = 10


# ---------------------------------------------------------------------------- helpers


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


def posix_lock_holder(path: Path) -> int | None:
    """The pid holding a POSIX (fcntl) lock on ``path`` (DuckDB locks its files so), or None.
    Asked with F_GETLK: no lock is taken, and this process holds none on ``path`` to drop."""
    fd = os.open(path, os.O_RDONLY)
    try:
        query = struct.pack("@hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        l_type, _whence, _start, _len, pid = struct.unpack(
            "@hhqqi4x", fcntl.fcntl(fd, fcntl.F_GETLK, query)
        )
    finally:
        os.close(fd)
    return None if l_type == fcntl.F_UNLCK else pid


def generations(config: Config) -> set[str]:
    """The published generation directories present under exports/gen (the current one and
    older: a directory above it is being made, nobody reads it yet)."""
    current = int(current_generation(config.exports_dir).name)
    return {
        p.name
        for p in (config.exports_dir / "gen").iterdir()
        if p.name.isdigit() and int(p.name) <= current
    }


def published_runs(config: Config) -> int:
    """Rows of catalog/runs_d below the current generation (every run here is written once)."""
    try:
        gen = current_generation(config.exports_dir)
    except CatalogMissingError:  # nothing published yet
        return 0
    return sum(pq.read_metadata(f).num_rows for f in (gen / "catalog" / "runs_d").glob("*.parquet"))


def register(owner: Bus, run_id: str, **kw: Any) -> None:
    """One run written and committed by an in-process Bus (one batch: one new generation)."""
    run_dir = make_run(owner.config.root, "backtest", run_id, **kw)
    result = owner.commit(owner.examine([run_dir]).batch)
    assert result.registered == [run_id], result


class Holder:
    """A reader process that keeps named connections to exports/bus.duckdb open on command."""

    def __init__(self, exports_dir: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(READER), "holder", str(exports_dir)],
            env=CLEAN_ENV,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the holder process died (exit {self.proc.poll()}) on {command!r}"
        answer: dict[str, Any] = json.loads(line)
        return answer

    def must(self, command: str) -> dict[str, Any]:
        answer = self.ask(command)
        assert answer["ok"], f"{command!r}: {answer['error']}"
        return answer

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            with_stdin = self.proc.stdin
            try:
                with_stdin.write("quit\n")
                with_stdin.flush()
            except OSError:
                pass
            try:
                self.proc.wait(DEADLINE_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(DEADLINE_S)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def holder(bus: Config) -> Iterator[Holder]:
    h = Holder(bus.exports_dir)
    yield h
    h.close()


# ---------------------------------------------------------------------------- 1. exclusive


@pytest.mark.parametrize("runs_before", [0, 1, 30], ids=["empty", "one-run", "thirty-runs"])
def test_sync_rebuild_and_a_second_daemon_are_refused_while_a_daemon_runs(
    bus: Config, daemon_factory: Callable[..., DaemonProcess], holder: Holder, runs_before: int
) -> None:
    d = daemon_factory(bus).start()  # empty root: READY after its first (empty) publication
    for wave in range(0, runs_before, 10):  # in batches: several publications
        ids = [f"r-{i:03d}" for i in range(wave, min(wave + 10, runs_before))]
        for run_id in ids:
            make_run(bus.root, "backtest", run_id)
        d.wait_live_runs(wave + len(ids))
    assert live_count(bus) == runs_before
    # Another process holds exports/bus.duckdb open read-only (a user's notebook, a shell).
    held = holder.must("open held connect")["gen"]
    assert holder.must("query held")["runs"] == runs_before
    catalog = bus.catalog_path
    before = os.stat(catalog)
    assert posix_lock_holder(catalog) == d.pid

    advice = {"sync": "status", "rebuild": "stop the daemon", "daemon": "--state-dir"}
    for command, hint in advice.items():
        done = run_cli(bus, command)
        assert done.returncode == BUSY_EXIT, (
            f"`{command}` beside a running daemon exited {done.returncode}:\n{done.stderr}"
        )
        assert f"pid {d.pid}" in done.stderr and "daemon" in done.stderr, done.stderr
        assert hint in done.stderr, f"`{command}` does not say what to do:\n{done.stderr}"
        assert d.alive(), f"the daemon died after `{command}`:\n{d.tail()}"

    # The working catalog is where it was (not moved to .bak) and still the daemon's: the
    # refused commands did not open it (opening + closing it would drop the daemon's lock).
    after = os.stat(catalog)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)
    assert not catalog.with_name(catalog.name + ".bak").exists()
    assert posix_lock_holder(catalog) == d.pid
    with pytest.raises(duckdb.IOException, match="lock"):
        duckdb.connect(str(catalog), read_only=True).close()

    # The daemon kept working: a run written now reaches a fresh reader...
    make_run(bus.root, "backtest", "after")
    wait_for(lambda: "after" in live_run_ids(bus), "the run written after the refusals")
    assert live_count(bus) == runs_before + 1
    # ... the held connection still reads its own generation ...
    answer = holder.must("query held")
    assert (answer["gen"], answer["runs"]) == (held, runs_before)
    # ... and the catalog is still exclusive after that publication.
    assert run_cli(bus, "sync").returncode == BUSY_EXIT
    assert posix_lock_holder(catalog) == d.pid
    holder.must("close held")
    assert not d.events("batch.failed")
    assert d.stop() == 0
    assert catalog.exists() and not catalog.with_name(catalog.name + ".bak").exists()


# ---------------------------------------------------------------------------- 2. readers


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


# ---------------------------------------------------------------------------- 3. held + GC


def test_a_connection_kept_open_keeps_its_generation_through_gc(
    bus: Config, holder: Holder
) -> None:
    """Two connections held by a reader process (``duckdb.connect(read_only=True)`` and
    ``ATTACH ... (READ_ONLY)``, as the CLI opens it) on two generations; 40 generations later,
    with a zero grace period, garbage collection removes every generation but the current one
    and the two held; each connection still answers with its own generation; closed, its
    generation goes at the next collection."""
    make_run(bus.root, "backtest", "r-000")
    with Bus.open(bus, role="sync") as owner:
        owner.publication.grace_s = 0.0
        owner.reconcile()
        gen_a = holder.must("open a connect")["gen"]
        register(owner, "r-001")
        gen_b = holder.must("open b attach")["gen"]
        assert gen_b > gen_a
        for i in range(2, 40):
            register(owner, f"r-{i:03d}")
        while owner.publication.gc():  # a backlog goes over several calls
            pass
        current = current_generation(bus.exports_dir).name
        assert generations(bus) == {gen_a, gen_b, current}

        a = holder.must("query a")
        b = holder.must("query b")
        assert (a["gen"], a["runs"], a["artifacts"], a["exported"]) == (gen_a, 1, 1, 1)
        assert (b["gen"], b["runs"], b["artifacts"]) == (gen_b, 2, 2)
        assert live_count(bus) == 40  # a fresh reader sees the newest

        holder.must("close a")
        while owner.publication.gc():  # a backlog goes over several calls
            pass
        assert generations(bus) == {gen_b, current}
        b = holder.must("query b")
        assert (b["gen"], b["runs"], b["artifacts"]) == (gen_b, 2, 2)

        holder.must("close b")
        register(owner, "r-040")  # the next publication collects too (at most once a second)
        while owner.publication.gc():  # a backlog goes over several calls
            pass
        assert generations(bus) == {current_generation(bus.exports_dir).name}
    assert live_count(bus) == 41


@pytest.mark.parametrize(
    "second",
    [
        "connect",  # duckdb.connect(path) again: DuckDB hands back the same instance (one file)
        pytest.param(
            "attach",
            marks=pytest.mark.xfail(
                strict=True,
                reason="known limit (docs/ARCHITECTURE.md): a process that opens bus.duckdb a "
                "second time through ATTACH (open_reader, the CLI's way) and closes it drops its "
                "POSIX lock on the file (locks belong to the process); its first connection is "
                "then protected by the grace period only",
            ),
        ),
    ],
)
def test_a_kept_connection_survives_a_second_open_and_close_in_the_same_process(
    bus: Config, holder: Holder, second: str
) -> None:
    make_run(bus.root, "backtest", "r-000")
    with Bus.open(bus, role="sync") as owner:
        owner.publication.grace_s = 0.0
        owner.reconcile()
        gen_a = holder.must("open a connect")["gen"]
        assert holder.must(f"open b {second}")["gen"] == gen_a  # the same file, a second time
        holder.must("close b")
        for i in range(1, 6):
            register(owner, f"r-{i:03d}")
        while owner.publication.gc():  # a backlog goes over several calls
            pass
        a = holder.ask("query a")
    assert a["ok"], a["error"]
    assert (a["gen"], a["runs"]) == (gen_a, 1)


# ---------------------------------------------------------------------------- 4. old DuckDB

# CI installs the old DuckDB readers into REPO/.venv-oldduck:
#   python3 -m venv .venv-oldduck && .venv-oldduck/bin/pip install duckdb-cli==1.5.6 duckdb==1.4.5
OLD_VENV = REPO / ".venv-oldduck"


def old_duckdb_cli() -> Path | None:
    """The DuckDB CLI to check against: $QBUS_OLD_DUCKDB_CLI, else .venv-oldduck/bin/duckdb,
    else a ``duckdb`` beside this Python or on PATH; None when there is none."""
    named = os.environ.get("QBUS_OLD_DUCKDB_CLI")
    if named:
        return Path(named)  # named: it must be there (a missing one fails, never skips)
    for candidate in (OLD_VENV / "bin" / "duckdb", Path(sys.executable).parent / "duckdb"):
        if candidate.is_file():
            return candidate
    found = shutil.which("duckdb")
    return Path(found) if found else None


def old_duckdb_python() -> Path | None:
    """A Python whose duckdb is the old one: $QBUS_OLD_DUCKDB_PYTHON, else .venv-oldduck."""
    named = os.environ.get("QBUS_OLD_DUCKDB_PYTHON")
    if named:
        return Path(named)
    candidate = OLD_VENV / "bin" / "python"
    return candidate if candidate.is_file() else None


OLD_READER_SQL = [
    "SELECT count(*) FROM catalog.runs_d",
    "SELECT count(*) FROM catalog.artifacts_f JOIN catalog.runs_d USING (run_id)",
    "SELECT count(*) FROM catalog.rejections_f WHERE resolved_at IS NULL",
    "SELECT count(*) FROM catalog.latest_artifacts_v",
    "SELECT count(*) FROM exports.runs",
    "SELECT count(*) FROM exports.trades",
    "SELECT count(*) FROM exports.caller_leaderboard",
]


@pytest.fixture(scope="module")
def published_bus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, list[int]]:
    """A bus published by ``sync`` in 12 rounds: runs with two tables, a rejection, merged
    catalog segments, export files and tables; built once per test process, as the tests that
    take it only read it (read-only connections). Returns the bus and the answers to
    :data:`OLD_READER_SQL` of this process's DuckDB (the reference the old readers must match)."""
    base = tmp_path_factory.mktemp("published-bus")
    bus = Config(
        root=base / "artifacts", exports_dir=base / "exports", state_dir=base / "state"
    ).validate()
    for d in (bus.root, bus.exports_dir, bus.state_dir):
        d.mkdir(parents=True)
    tables = {"results": sample_table(3), "trades": sample_table(2, offset=10)}
    make_run(bus.root, "backtest", "bad-run", schema_version=99)
    for round_ in range(12):
        for k in range(2):
            make_run(bus.root, "policy" if k else "backtest", f"r-{round_:02d}-{k}", tables=tables)
        sync(bus)
    merged = list((current_generation(bus.exports_dir) / "catalog" / "runs_d").glob("*.parquet"))
    assert len(merged) < 12  # 12 publications of rows, compacted
    answers = [snapshot_query(bus, sql)[0][0] for sql in OLD_READER_SQL]
    assert answers[:4] == [24, 48, 1, 4]  # runs, their artifacts, the rejection, latest
    return bus, answers


def test_sync_publishes_every_run_in_the_exports(bus: Config) -> None:
    """After each ``sync``, the export file and view below the current generation hold every
    run (what the old-reader tests read: ``exports.runs``)."""
    for i in range(4):
        make_run(bus.root, "backtest", f"r-{i}")
        sync(bus)
        gen = current_generation(bus.exports_dir)
        filed = pq.read_metadata(gen / "files" / "runs.parquet").num_rows
        [(viewed,)] = snapshot_query(bus, "SELECT count(*) FROM exports.runs")
        assert (filed, viewed) == (i + 1, i + 1), f"sync #{i + 1}: exports lag the catalog"


@pytest.fixture
def old_cli() -> Path:
    exe = old_duckdb_cli()
    if exe is None:
        pytest.skip("no DuckDB CLI: pip install duckdb-cli==1.5.6 (see OLD_VENV)")
    return exe


@pytest.fixture
def old_python() -> Path:
    python = old_duckdb_python()
    if python is None:
        pytest.skip("no Python with duckdb 1.4.5: pip install duckdb==1.4.5 (see OLD_VENV)")
    return python


def test_the_duckdb_cli_from_pip_reads_the_published_bus(
    old_cli: Path, published_bus: tuple[Config, list[int]]
) -> None:
    exe = old_cli
    bus, answered = published_bus
    version = subprocess.run(
        [str(exe), "--version"], capture_output=True, text=True, timeout=DEADLINE_S
    )
    assert version.returncode == 0, version.stderr
    # As the README says: `duckdb -readonly exports/bus.duckdb`, from the bus's directory.
    answers = []
    for sql in OLD_READER_SQL:
        done = subprocess.run(
            [str(exe), "-readonly", "exports/bus.duckdb", "-csv", "-noheader", "-c", sql],
            cwd=bus.exports_dir.parent,
            env=CLEAN_ENV,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=DEADLINE_S,
        )
        assert done.returncode == 0, f"DuckDB CLI {version.stdout.strip()}: {sql}\n{done.stderr}"
        answers.append(int(done.stdout.strip()))
    assert answers == answered, f"DuckDB CLI {version.stdout.strip()} reads otherwise"
    # ... and typed into its prompt (stdin), the README's query
    done = subprocess.run(
        [str(exe), "-readonly", "-csv", "exports/bus.duckdb"],
        cwd=bus.exports_dir.parent,
        env=CLEAN_ENV,
        input="SELECT run_id FROM catalog.runs_d ORDER BY run_id;\n",
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )
    assert done.returncode == 0, done.stderr
    ids = done.stdout.split()
    assert ids[0] == "run_id" and len(ids) == 1 + answered[0], done.stdout


OLD_PYTHON_READER = textwrap.dedent(
    """
    import json, sys
    import duckdb
    path, queries = sys.argv[1], json.loads(sys.argv[2])
    out = {"version": duckdb.__version__}
    con = duckdb.connect(path, read_only=True)
    out["connect"] = [con.execute(sql).fetchone()[0] for sql in queries]
    con.close()
    con = duckdb.connect()
    con.execute("ATTACH '" + path.replace("'", "''") + "' AS bus (READ_ONLY)")  # 1.4: no ? here
    con.execute("USE bus")
    out["attach"] = [con.execute(sql).fetchone()[0] for sql in queries]
    con.close()
    print(json.dumps(out))
    """
)


def test_python_duckdb_1_4_reads_the_published_bus(
    old_python: Path, published_bus: tuple[Config, list[int]]
) -> None:
    python = old_python
    bus, answered = published_bus
    done = subprocess.run(
        [str(python), "-c", OLD_PYTHON_READER, str(bus.snapshot_path), json.dumps(OLD_READER_SQL)],
        env=CLEAN_ENV,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["version"].startswith("1."), f"{python} has duckdb {got['version']}, not an old one"
    assert got["connect"] == answered and got["attach"] == answered, got
