"""A reader of the publication, run as a separate process by the publication tests
(tests/test_publication_burst.py; the ``holder`` mode: tests/publication_reading.py).

    python tests/_publication_reader.py MODE EXPORTS_DIR STOP_FILE OUT_JSON MIN_READS TABLE
    python tests/_publication_reader.py holder EXPORTS_DIR

Reads the bus the way a user does, in a loop, until ``STOP_FILE`` exists *and* it has done at
least ``MIN_READS`` reads; then writes its tally to ``OUT_JSON``. It never raises: every failure
(an exception of any kind from a read) is counted and the first few messages kept. It creates
``OUT_JSON.started`` after its first round and ``OUT_JSON.quota`` once it has done ``MIN_READS``
reads, and keeps its read count in ``OUT_JSON.progress`` (at most every 0.2 s), so the test can
pace its burst on the slowest reader and wait on them.

Each reader uses one thread (DuckDB ``threads=1``, ``POLARS_MAX_THREADS=1``, pyarrow's CPU pool
of 1): six processes share two cores here, and idle pool threads spinning would only slow all.

Modes (one documented read path each):

- ``duckdb``: a fresh read-only connection per round to ``exports/bus.duckdb`` (alternately
  ``duckdb.connect(path, read_only=True)`` and ``ATTACH ... (READ_ONLY)`` as the CLI does);
  queries ``catalog.runs_d``, ``catalog.artifacts_f`` joined to runs, ``exports.runs`` and
  ``exports.<TABLE>``.
- ``held``: ONE read-only connection opened at start and kept for the whole life of the process;
  the same queries, again and again (its view must not change: it belongs to one generation).
- ``polars``: resolve ``exports/current`` once per round (``current_generation``), then
  ``scan_parquet``/``read_parquet`` of ``catalog/runs_d``, ``catalog/artifacts_f``,
  ``tables/<TABLE>`` and ``files/runs.parquet`` below the resolved directory.
- ``pyarrow``: resolve ``exports/current`` once per round (``os.path.realpath``), then
  ``pq.read_table`` / ``pyarrow.dataset`` of the same.

Consistency (every mode, every round): each run in ``catalog.runs_d`` has at least one row in
``catalog.artifacts_f`` (the producers' runs all have one artifact), checked on one generation.
``counts`` records each distinct run count seen, in order (for "the count grew" and "it never
went backwards": generations only move forward).

``holder``: keeps named read-only connections to ``EXPORTS_DIR/bus.duckdb`` open on command, one
JSON answer line per command line on stdin: ``open NAME connect|attach``, ``query NAME``,
``close NAME``, ``quit``. Answers ``{"ok": true, "gen": ..., "runs": ..., "artifacts": ...,
"exported": ...}`` (``exported``: rows of ``exports.runs``, null before it is published) or
``{"ok": false, "error": ...}``.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any


def main() -> None:
    if sys.argv[1] == "holder":
        holder(Path(sys.argv[2]))
        return
    mode, exports_s, stop_s, out_s, min_reads_s, table = sys.argv[1:7]
    exports = Path(exports_s)
    stop = Path(stop_s)
    min_reads = int(min_reads_s)
    tally: dict[str, Any] = {
        "mode": mode,
        "pid": os.getpid(),
        "reads": 0,
        "rounds": 0,
        "failures": 0,
        "inconsistent": 0,
        "errors": [],
        "counts": [],
        "generations": 0,
        "held_gen": None,
    }
    seen_gens: set[str] = set()

    def fail(kind: str, message: str) -> None:
        if kind == "inconsistent":
            tally["inconsistent"] += 1
        else:
            tally["failures"] += 1
        if len(tally["errors"]) < 5:
            tally["errors"].append(f"{kind}: {message}")

    def saw(count: int) -> None:
        counts = tally["counts"]
        if not counts or counts[-1] != count:
            counts.append(count)

    round_fn = _ROUNDS[mode](exports, table, tally)
    started = Path(out_s + ".started")
    quota = Path(out_s + ".quota")
    progress = Path(out_s + ".progress")
    progress_tmp = Path(out_s + ".progress.tmp")
    t0 = last_progress = time.monotonic()
    while True:
        if tally["reads"] and not started.exists():
            started.touch()
        if tally["reads"] >= min_reads:
            if not quota.exists():
                quota.touch()
            if stop.exists():
                break
        try:
            reads, count, orphans, gen = round_fn()
        except Exception as exc:  # noqa: BLE001 - every failure is counted, never raised
            fail("failure", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}")
            tally["reads"] += 1  # the attempt counts as a read (that failed)
            continue
        tally["reads"] += reads
        tally["rounds"] += 1
        if time.monotonic() - last_progress >= 0.2:
            progress_tmp.write_text(str(tally["reads"]))
            os.replace(progress_tmp, progress)
            last_progress = time.monotonic()
        if gen:
            seen_gens.add(gen)
        saw(count)
        if orphans:
            fail("inconsistent", f"{orphans} run(s) without artifacts in generation {gen}")
    tally["seconds"] = round(time.monotonic() - t0, 2)
    tally["cpu_s"] = round(time.process_time(), 2)
    tally["generations"] = len(seen_gens)
    Path(out_s).write_text(json.dumps(tally))


# ---------------------------------------------------------------------------- the modes

_JOINED = "SELECT count(*) FROM catalog.artifacts_f AS a JOIN catalog.runs_d AS r USING (run_id)"
_WITH_ARTIFACTS = (
    "SELECT count(DISTINCT run_id) FROM catalog.artifacts_f AS a "
    "JOIN catalog.runs_d AS r USING (run_id)"
)


def _duckdb_queries(con: Any, table: str) -> tuple[int, int, int]:
    """Four reads on one connection (one generation): the runs, the runs that have artifacts
    (artifacts_f joined to runs_d: every run must be among them), an exports file view and an
    exports table view."""
    (count,) = con.execute("SELECT count(DISTINCT run_id) FROM catalog.runs_d").fetchone()
    (with_artifacts,) = con.execute(_WITH_ARTIFACTS).fetchone()
    con.execute("SELECT count(*), max(run_id) FROM exports.runs").fetchone()
    con.execute(f'SELECT count(*) FROM exports."{table}"').fetchone()  # noqa: S608 - a test table name
    return 4, int(count), int(count) - int(with_artifacts)


def _duckdb_round(exports: Path, table: str, tally: dict[str, Any]) -> Any:
    import duckdb

    path = str(exports / "bus.duckdb")
    state = {"i": 0}

    def one() -> tuple[int, int, int, str]:
        state["i"] += 1
        if state["i"] % 2:
            con = duckdb.connect(path, read_only=True, config={"threads": 1})
        else:  # how quantbot_bus.catalog.open_reader (the CLI) opens it
            con = duckdb.connect(config={"threads": 1})
            con.execute("ATTACH ? AS bus (READ_ONLY)", [path])
            con.execute("USE bus")
        try:
            reads, count, orphans = _duckdb_queries(con, table)
            gen = _views_gen(con) if orphans or state["i"] % 10 == 0 else ""
        finally:
            con.close()
        return reads, count, orphans, gen

    return one


def _held_round(exports: Path, table: str, tally: dict[str, Any]) -> Any:
    import duckdb

    con = duckdb.connect(str(exports / "bus.duckdb"), read_only=True, config={"threads": 1})
    gen = _views_gen(con)
    tally["held_gen"] = gen

    state = {"i": 0}

    def one() -> tuple[int, int, int, str]:
        state["i"] += 1
        reads, count, orphans = _duckdb_queries(con, table)
        if state["i"] % 10 == 0:  # what its views read now (a slot re-pointed would show)
            return reads, count, orphans, _views_gen(con)
        return reads, count, orphans, gen

    return one


def _views_gen(con: Any) -> str:
    """The generation directory a views file reads now: its runs_d view reads
    ``<base>/catalog/runs_d/*.parquet``; ``<base>`` resolves to ``exports/gen/<N>``."""
    (sql,) = con.execute(
        "SELECT sql FROM duckdb_views() WHERE schema_name = 'catalog' AND view_name = 'runs_d' "
        "AND database_name = current_database()"
    ).fetchone()
    marker = "/catalog/runs_d/"
    end = sql.index(marker)
    base = sql[sql.rindex("'", 0, end) + 1 : end]
    return os.path.basename(os.path.realpath(base))


def _polars_round(exports: Path, table: str, tally: dict[str, Any]) -> Any:
    os.environ["POLARS_MAX_THREADS"] = "1"
    import polars as pl

    from quantbot_bus.publication import current_generation

    def one() -> tuple[int, int, int, str]:
        gen = current_generation(exports)  # resolved once; everything below reads under it
        runs = pl.scan_parquet(gen / "catalog" / "runs_d" / "*.parquet").select("run_id").collect()
        arts = pl.read_parquet(gen / "catalog" / "artifacts_f" / "*.parquet", columns=["run_id"])
        rows = pl.scan_parquet(gen / "tables" / table / "*.parquet").select(pl.len()).collect()
        flat = pl.read_parquet(gen / "files" / "runs.parquet")
        assert rows.item() >= 0 and flat.height >= 0
        run_ids = set(runs["run_id"].to_list())
        orphans = len(run_ids - set(arts["run_id"].to_list()))
        return 4, len(run_ids), orphans, gen.name

    return one


def _pyarrow_round(exports: Path, table: str, tally: dict[str, Any]) -> Any:
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    pa.set_cpu_count(1)

    def one() -> tuple[int, int, int, str]:
        gen = Path(os.path.realpath(exports / "current", strict=True))
        runs = pq.read_table(gen / "catalog" / "runs_d", columns=["run_id"])
        arts = ds.dataset(gen / "catalog" / "artifacts_f", format="parquet").to_table(
            columns=["run_id"]
        )
        rows = ds.dataset(gen / "tables" / table, format="parquet").count_rows()
        flat = pq.read_table(gen / "files" / "runs.parquet")
        assert rows >= 0 and flat.num_rows >= 0
        run_ids = set(runs.column("run_id").to_pylist())
        orphans = len(run_ids - set(arts.column("run_id").to_pylist()))
        return 4, len(run_ids), orphans, gen.name

    return one


def holder(exports: Path) -> None:
    import duckdb

    path = str(exports / "bus.duckdb")
    cons: dict[str, Any] = {}
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        try:
            answer: dict[str, Any] = {"ok": True}
            if words[0] == "quit":
                break
            if words[0] == "open":
                name, how = words[1], words[2]
                if how == "connect":
                    con = duckdb.connect(path, read_only=True)
                else:
                    con = duckdb.connect()
                    con.execute("ATTACH ? AS bus (READ_ONLY)", [path])
                    con.execute("USE bus")
                cons[name] = con
                answer["gen"] = _views_gen(con)
            elif words[0] == "query":
                con = cons[words[1]]
                answer["gen"] = _views_gen(con)
                answer["runs"] = con.execute("SELECT count(*) FROM catalog.runs_d").fetchone()[0]
                answer["artifacts"] = con.execute(_JOINED).fetchone()[0]
                has_runs_view = con.execute(
                    "SELECT count(*) FROM duckdb_views() WHERE schema_name = 'exports' "
                    "AND view_name = 'runs' AND database_name = current_database()"
                ).fetchone()[0]
                answer["exported"] = (
                    con.execute("SELECT count(*) FROM exports.runs").fetchone()[0]
                    if has_runs_view
                    else None  # no export file published yet
                )
            elif words[0] == "close":
                cons.pop(words[1]).close()
            else:
                raise ValueError(f"unknown command {line!r}")
        except Exception as exc:  # noqa: BLE001 - reported to the test
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    for con in cons.values():
        con.close()


_ROUNDS = {
    "duckdb": _duckdb_round,
    "held": _held_round,
    "polars": _polars_round,
    "pyarrow": _pyarrow_round,
}


if __name__ == "__main__":
    main()
