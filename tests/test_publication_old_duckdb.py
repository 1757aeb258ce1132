"""The views file opens in the DuckDB CLI users get from pip (1.5.6) and in Python duckdb 1.4.5
(located as :func:`old_duckdb_cli` / :func:`old_duckdb_python` say; skipped only when absent),
on a bus published by ``sync``; real DuckDB files, the old readers as real processes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from builders import DEADLINE_S, make_run, sample_table, snapshot_query
from reliability.helpers import CLEAN_ENV

from quantbot_bus.config import Config
from quantbot_bus.pipeline import sync
from quantbot_bus.publication import current_generation

# one worker builds the module's `published_bus` once (make test runs --dist loadgroup)
pytestmark = pytest.mark.xdist_group("test_publication_old_duckdb")

REPO = Path(__file__).resolve().parent.parent

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
