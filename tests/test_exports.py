"""Export views (issue 4): contents equal a direct computation over the raw run Parquet files.

Runs are real directories (tests/builders.py ``add_path_run`` and kin: real Parquet, then
metadata.json), registered by the real one-shot path :func:`quantbot_bus.pipeline.sync` (scan →
catalog → publish → refresh → files). Every summary is checked against the same numbers computed straight from the run files
with DuckDB; the caller leaderboard's cross-run quantiles within the documented 0.5 % (relative).

What a test reads as a user would, it reads from the publication: the views file
``exports/bus.duckdb`` or, for files, the current generation resolved once
(:func:`published`: ``<gen>/files/<name>``, ``<gen>/tables/<name>/*.parquet``). What it checks of
the internals (segments written, rewritten, orphaned) it reads from the private store
(:func:`store_table`: ``exports/.store/tables/<name>/``).
"""

# ruff: noqa: S608 - test SQL over paths and run ids the test itself made

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest
import structlog
from builders import (
    CALLERS,
    CALLS,
    FRONTIER,
    PATH,
    POLICY,
    add_optimize_run,
    add_path_run,
    add_policy_run,
    sync,
)

from quantbot_bus import exports
from quantbot_bus.catalog import Catalog
from quantbot_bus.config import Config, UserExport
from quantbot_bus.exports import compaction
from quantbot_bus.pipeline import Bus
from quantbot_bus.publication import compaction as publication_compaction
from quantbot_bus.publication import current_generation

REL_TOL = math.sqrt(exports.BIN_BASE) - 1 + 1e-9  # the documented quantile resolution


def read_status(cfg: Config) -> dict[str, Any]:
    return json.loads((cfg.exports_dir / exports.STATUS_NAME).read_text())


def published(cfg: Config) -> Path:
    """The current generation, resolved once: read a summary or user export file as
    ``published(cfg) / "files" / name``, an export table under ``published(cfg) / "tables"``."""
    return current_generation(cfg.exports_dir)


def published_table_glob(gen: Path, table: str) -> str:
    return str(gen / "tables" / table / "*.parquet")


def store_table(cfg: Config, table: str) -> Path:
    """The private directory a table's segments are written to (internals, not for readers)."""
    return cfg.exports_dir / exports.TABLES_DIR / table


def file_entries(cfg: Config, names: Any = None) -> dict[str, dict[str, Any]]:
    """The status entries of export files ``names`` (default: the summaries; each names its
    store ``file``)."""
    names = exports.summary_names() if names is None else names
    entries = read_status(cfg)["exports"]
    return {n: dict(entries[n]) for n in names if n in entries}


def rewritten(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> list[str]:
    """The export files written between two :func:`file_entries` (a write, even a failed one,
    gives the entry a new ``last_run_at``; a successful one a new store ``file`` name)."""
    return sorted(n for n in after if after[n] != before.get(n))


def raw_glob(cfg: Config, table: str) -> str:
    return str(cfg.root / "*" / "*" / f"{table}.parquet")


def raw_view(con: duckdb.DuckDBPyConnection, cfg: Config, table: str) -> str:
    """A relation over the raw run files of ``table``, run_id taken from the directory name."""
    name = f"raw_{table}"
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT * EXCLUDE (filename) "
        "REPLACE (string_split(filename, '/')[-2] AS run_id) FROM "
        f"read_parquet('{raw_glob(cfg, table)}', union_by_name = true, filename = true)"
    )
    return name


def rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple[Any, ...]]:
    return con.execute(sql).fetchall()


def first_column(cat: Catalog, sql: str) -> set[Any]:
    """The values of the first column of ``sql`` on the working catalog."""
    return {r[0] for r in cat.cursor().execute(sql).fetchall()}


def approx_rows(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> None:
    assert len(a) == len(b), (a, b)
    for ra, rb in zip(a, b, strict=True):
        assert len(ra) == len(rb)
        for va, vb in zip(ra, rb, strict=True):
            if isinstance(va, float) or isinstance(vb, float):
                assert va == pytest.approx(vb, rel=1e-9, abs=1e-9), (ra, rb)
            else:
                assert va == vb, (ra, rb)


def segment_files(cfg: Config, table: str) -> dict[str, int]:
    """The segment files of ``table`` in the store (the one real name of each), with mtimes."""
    d = store_table(cfg, table)
    return {p.name: p.stat().st_mtime_ns for p in sorted(d.glob("*.parquet"))}


@pytest.fixture
def con() -> Any:
    c = duckdb.connect()
    yield c
    c.close()


@pytest.fixture
def mixed_bus(bus: Config) -> Config:
    """Path-only, policy and optimize runs, synced once (dated 2024: the regression checks are
    told to take runs of any age)."""
    bus = dataclasses.replace(bus, regressions=dataclasses.replace(bus.regressions, max_age_days=0))
    for i in range(4):
        add_path_run(bus, f"path-{i}", n=60, seed=i, params={"seed": i, "lr": 0.1 * i})
    add_policy_run(bus, "policy-0", seed=10)
    add_policy_run(bus, "policy-1", seed=11, params={"seed": 11, "variant": "b"})
    add_optimize_run(bus, "opt-old", seed=20, created_at="2024-05-01T10:00:00Z")
    add_optimize_run(bus, "opt-new", seed=21, created_at="2024-05-02T10:00:00Z")
    sync(bus)
    return bus


# --------------------------------------------------------------------------- checks


def check_consolidated(con: duckdb.DuckDBPyConnection, cfg: Config, table: str) -> None:
    """The consolidated table holds exactly the raw rows of every live run (multiset equality)."""
    raw = raw_view(con, cfg, table)
    glob = published_table_glob(published(cfg), table)
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW cons AS SELECT * FROM read_parquet('{glob}', "
        "union_by_name = true)"
    )
    cols = [r[0] for r in con.execute(f"DESCRIBE {raw}").fetchall()]
    assert sorted(cols) == sorted(r[0] for r in con.execute("DESCRIBE cons").fetchall())
    sel = ", ".join(f'"{c}"' for c in cols)
    assert rows(con, "SELECT count(*) FROM cons") == rows(con, f"SELECT count(*) FROM {raw}")
    diff = rows(
        con,
        f"(SELECT {sel} FROM cons EXCEPT ALL SELECT {sel} FROM {raw}) UNION ALL "
        f"(SELECT {sel} FROM {raw} EXCEPT ALL SELECT {sel} FROM cons)",
    )
    assert diff == []


def check_leaderboard(con: duckdb.DuckDBPyConnection, cfg: Config) -> None:
    raw = raw_view(con, cfg, PATH)
    lb = str(published(cfg) / "files" / "caller_leaderboard.parquet")
    got = {r[0]: r for r in rows(con, f"SELECT * FROM '{lb}'")}
    want = rows(
        con,
        f"""SELECT caller_name, count(*), avg(hit_2x::INT), avg(hit_3x::INT), avg(hit_4x::INT),
                   quantile_disc(peak_multiple, 0.5), quantile_disc(peak_multiple, 0.9),
                   quantile_disc(dd_bps, 0.5), quantile_disc(t_2x_ms, 0.5),
                   count(DISTINCT run_id)
            FROM {raw} GROUP BY caller_name ORDER BY caller_name""",
    )
    assert sorted(got) == [w[0] for w in want]
    cols = [d[0] for d in con.execute(f"SELECT * FROM '{lb}' LIMIT 0").description]
    assert cols == [
        "caller_name",
        "calls",
        "hit_2x_rate",
        "hit_3x_rate",
        "hit_4x_rate",
        "median_peak_multiple",
        "p90_peak_multiple",
        "median_dd_bps",
        "median_t_2x_ms",
        "runs_seen",
    ]
    for w in want:
        g = got[w[0]]
        assert g[1] == w[1] and g[9] == w[9]
        for i in (2, 3, 4):  # rates: exact
            assert g[i] == pytest.approx(w[i], rel=1e-12)
        for i in (5, 6, 7, 8):  # quantiles: within the documented resolution
            if w[i] is None:
                assert g[i] is None
            elif w[i] == 0:
                assert g[i] == 0
            else:
                assert abs(g[i] - w[i]) <= REL_TOL * abs(w[i]), (w[0], i, g[i], w[i])


def check_run_summaries(con: duckdb.DuckDBPyConnection, cfg: Config) -> None:
    """Per run: path-only runs carry their call statistics; policy runs their trades; optimize
    runs their callers and their best policies' return (these frontiers have no trades)."""
    pm = raw_view(con, cfg, PATH)
    pr = raw_view(con, cfg, POLICY)
    cr = raw_view(con, cfg, CALLS)
    fr = raw_view(con, cfg, FRONTIER) if list(cfg.root.glob(f"*/*/{FRONTIER}.parquet")) else None
    got = rows(
        con,
        f"SELECT run_id, total_trades, total_pnl_usd, total_pnl_pct, avg_return_bps, win_rate, "
        f"max_drawdown_bps, median_drawdown_bps, total_calls, unique_callers "
        f"FROM '{published(cfg) / 'files' / 'run_summaries.parquet'}' ORDER BY run_id",
    )
    live = sorted(p.name for p in cfg.root.glob("*/*") if (p / "metadata.json").exists())
    assert [g[0] for g in got] == live
    want: list[tuple[Any, ...]] = []
    for run_id in live:
        p = rows(
            con,
            f"SELECT count(DISTINCT call_id), count(DISTINCT caller_name), min(dd_bps), "
            f"median(dd_bps) FROM {pm} WHERE run_id = '{run_id}'",
        )[0]
        q = rows(
            con,
            f"SELECT count(*), avg(realized_return_bps), avg((realized_return_bps > 0)::INT), "
            f"-max(abs(max_adverse_excursion_bps)), -median(abs(max_adverse_excursion_bps)), "
            f"count(DISTINCT call_id) FROM {pr} WHERE run_id = '{run_id}'",
        )[0]
        c = rows(
            con,
            f"SELECT count(*), sum(pnl_usd), sum(pnl_pct), avg(return_bps), avg(win::INT), "
            f"count(DISTINCT call_id), count(DISTINCT caller_name) FROM {cr} "
            f"WHERE run_id = '{run_id}'",
        )[0]
        f = (0, None)
        if fr is not None:
            f = rows(
                con,
                f"SELECT count(DISTINCT caller_name), avg(avg_return_bps) FILTER (WHERE rank = 1) "
                f"FROM {fr} WHERE run_id = '{run_id}'",
            )[0]
        has_p, has_q, has_c = p[0] > 0, q[0] > 0, c[0] > 0
        want.append(
            (
                run_id,
                c[0] if has_c else (q[0] if has_q else 0),
                c[1] if has_c else None,
                c[2] if has_c else None,
                c[3] if has_c else (q[1] if has_q else f[1]),
                c[4] if has_c else (q[2] if has_q else None),
                p[2] if has_p else (q[3] if has_q else None),
                p[3] if has_p else (q[4] if has_q else None),
                p[0] if has_p else (c[5] if has_c else (q[5] if has_q else 0)),
                p[1] if has_p else (c[6] if has_c else f[0]),
            )
        )
    approx_rows(got, want)


def check_policy_comparison(con: duckdb.DuckDBPyConnection, cfg: Config) -> None:
    pr = raw_view(con, cfg, POLICY)
    got = rows(
        con,
        "SELECT run_id, policy_id, trades, avg_realized_return_bps, median_realized_return_bps, "
        "stop_out_rate, win_rate, avg_time_exposed_ms "
        f"FROM '{published(cfg) / 'files' / 'policy_comparison.parquet'}' ORDER BY run_id, policy_id",
    )
    want = rows(
        con,
        f"""SELECT run_id, policy_id, count(*), avg(realized_return_bps),
                   median(realized_return_bps), avg(stop_out::INT),
                   avg((realized_return_bps > 0)::INT), avg(time_exposed_ms)
            FROM {pr} GROUP BY ALL ORDER BY run_id, policy_id""",
    )
    approx_rows(got, want)


def check_frontier_best(con: duckdb.DuckDBPyConnection, cfg: Config, newest: str) -> None:
    fr = raw_view(con, cfg, FRONTIER)
    got = rows(
        con,
        "SELECT run_id, caller_name, policy_params, objective_score, rank "
        f"FROM '{published(cfg) / 'files' / 'frontier_best.parquet'}' ORDER BY caller_name",
    )
    want = rows(
        con,
        f"""SELECT run_id, caller_name, policy_params, objective_score, rank FROM {fr}
            WHERE run_id = '{newest}' AND meets_constraints
            QUALIFY row_number() OVER (PARTITION BY caller_name
                                       ORDER BY objective_score DESC, rank) = 1
            ORDER BY caller_name""",
    )
    assert want and got == want


def check_all(cfg: Config, con: duckdb.DuckDBPyConnection) -> None:
    for table in (PATH, POLICY, CALLS, FRONTIER):
        if list(cfg.root.glob(f"*/*/{table}.parquet")):
            check_consolidated(con, cfg, table)
    check_leaderboard(con, cfg)
    check_run_summaries(con, cfg)
    check_policy_comparison(con, cfg)


# --------------------------------------------------------------------------- tests


def test_exports_equal_direct_computation_over_raw_files(mixed_bus: Config, con: Any) -> None:
    cfg = mixed_bus
    check_all(cfg, con)
    check_frontier_best(con, cfg, "opt-new")

    gen = published(cfg)
    runs = gen / "files" / "runs.parquet"
    got = rows(con, f"SELECT run_id, param_seed, param_lr, param_variant, metric_n FROM '{runs}'")
    by_id = {r[0]: r for r in got}
    assert len(by_id) == 8
    assert by_id["path-2"][1:4] == (2, pytest.approx(0.2), None)
    assert by_id["policy-1"][1:4] == (11, None, "b")
    assert by_id["opt-new"][4] == 3.0
    n_artifacts = rows(con, f"SELECT count(*) FROM '{gen / 'files' / 'artifacts.parquet'}'")
    assert n_artifacts == [(4 + 2 * 2 + 2 * 2,)]
    latest = rows(
        con,
        f"SELECT run_type, name, run_id FROM '{gen / 'files' / 'latest_artifacts.parquet'}' "
        "WHERE name = 'frontier'",
    )
    assert latest == [("backtest-optimize", "frontier", "opt-new")]

    status = json.loads((cfg.exports_dir / "_export_status.json").read_text())
    for name in exports.summary_names():
        entry = status["exports"][name]
        assert entry["ok"] is True and entry["error"] is None, name
        assert entry["rows"] >= (0 if name == "schema_conflicts" else 1), name  # none: no conflict
        assert set(entry) >= {"last_run_at", "rows", "ms", "ok", "error"}
        # the file the status names is the one published (same inode: a hard link)
        stored = cfg.exports_dir / exports.FILES_DIR / entry["file"]
        assert os.path.samefile(stored, gen / "files" / f"{name}.parquet"), name


def test_views_are_created_in_the_working_catalog(mixed_bus: Config) -> None:
    with Catalog.open(mixed_bus.catalog_path) as cat:
        cur = cat.cursor()
        views = dict(
            cur.execute(
                "SELECT view_name, sql FROM duckdb_views() WHERE schema_name = 'exports' "
                "AND database_name = current_database()"
            ).fetchall()
        )
        assert set(exports.summary_names()) | {PATH, POLICY, CALLS, FRONTIER, "summary"} == set(
            views
        )
        # A table's view lists its committed segment files (every one on disk, nothing else);
        # the summaries' views read the state tables that travel with the snapshot.
        # (through their pinned hard links in .v/: same files, kept a while after retirement)
        table_dir = mixed_bus.exports_dir.resolve() / exports.TABLES_DIR / PATH
        on_disk = sorted(table_dir.glob("*.parquet"))
        listed = re.findall(r"'([^']+\.parquet)'", views[PATH])
        assert on_disk and listed == [str(table_dir / ".v" / p.name) for p in on_disk]
        assert all(os.path.samefile(p, table_dir / ".v" / p.name) for p in on_disk)
        assert "exports_state.runs_flat" in views["runs"]
        assert "read_parquet" not in views["runs"] + views["caller_leaderboard"]
        n = cur.execute(f"SELECT count(*) FROM exports.{PATH}").fetchone()
        assert n == (4 * 60,)
        lb = cur.execute("SELECT count(*) FROM exports.caller_leaderboard").fetchone()
        assert lb == (len(CALLERS),)


def test_deleted_run_leaves_tables_and_summaries(mixed_bus: Config, con: Any) -> None:
    cfg = mixed_bus
    shutil.rmtree(cfg.root / "backtest-path" / "path-1")
    shutil.rmtree(cfg.root / "backtest-policy" / "policy-0")
    shutil.rmtree(cfg.root / "backtest-optimize" / "opt-new")
    sync(cfg)
    gen = published(cfg)
    for table in (PATH, POLICY, CALLS):
        ids = rows(
            con,
            f"SELECT DISTINCT run_id FROM read_parquet("
            f"'{published_table_glob(gen, table)}', union_by_name = true)",
        )
        assert "path-1" not in {i[0] for i in ids} and "policy-0" not in {i[0] for i in ids}
    check_all(cfg, con)
    check_frontier_best(con, cfg, "opt-old")  # the newest optimize run is now the older one
    for name in ("runs", "run_summaries", "artifacts"):
        found = rows(
            con,
            f"SELECT count(*) FROM '{gen / 'files' / (name + '.parquet')}' "
            "WHERE run_id IN ('path-1', 'policy-0', 'opt-new')",
        )
        assert found == [(0,)], name
    # Every path-only run deleted: no callers left, the tables' views stay consistent.
    for i in (0, 2, 3):
        shutil.rmtree(cfg.root / "backtest-path" / f"path-{i}")
    sync(cfg)
    gen = published(cfg)
    leaderboard = gen / "files" / "caller_leaderboard.parquet"
    assert rows(con, f"SELECT count(*) FROM '{leaderboard}'") == [(0,)]
    # no segment left, neither in what readers see nor in the store
    assert not list((gen / "tables" / PATH).glob("*.parquet"))
    assert not list(store_table(cfg, PATH).glob("*.parquet"))
    with Catalog.open(cfg.catalog_path) as cat:
        names = first_column(
            cat, "SELECT view_name FROM duckdb_views() WHERE schema_name = 'exports'"
        )
        assert PATH not in names and POLICY in names
        totals = (
            cat.cursor().execute("SELECT count(*) FROM exports_state.caller_hist_tot").fetchone()
        )
        assert totals == (0,)
    q = exports.open_query_connection(cfg)  # and what readers see
    try:
        reader_views = {
            r[0]
            for r in q.execute(
                "SELECT view_name FROM duckdb_views() WHERE schema_name = 'exports'"
            ).fetchall()
        }
    finally:
        q.close()
    assert PATH not in reader_views and POLICY in reader_views


def test_updated_run_replaces_its_rows(mixed_bus: Config, con: Any) -> None:
    cfg = mixed_bus
    before = segment_files(cfg, PATH)
    run_dir = cfg.root / "backtest-path" / "path-2"
    shutil.rmtree(run_dir)
    add_path_run(cfg, "path-2", n=25, seed=99)  # same run_id, new content -> new fingerprint
    sync(cfg)
    check_all(cfg, con)
    counts = rows(
        con,
        f"SELECT count(*) FROM read_parquet('{published_table_glob(published(cfg), PATH)}') "
        "WHERE run_id = 'path-2'",
    )
    assert counts == [(25,)]
    after = segment_files(cfg, PATH)
    assert before and not (set(before) & set(after))  # the one segment was rewritten, new name


def test_schema_evolved_run_unions_by_name(mixed_bus: Config, con: Any) -> None:
    cfg = mixed_bus
    add_path_run(cfg, "path-extra", n=10, seed=5, extra=True)
    sync(cfg)
    check_consolidated(con, cfg, PATH)
    glob = published_table_glob(published(cfg), PATH)
    got = rows(
        con,
        f"SELECT run_id = 'path-extra', count(*), count(liquidity_usd) FROM "
        f"read_parquet('{glob}', union_by_name = true) GROUP BY 1 ORDER BY 1",
    )
    assert got == [(False, 240, 0), (True, 10, 10)]
    # One segment holding runs of both schemas (a compaction of old and new) unions too.
    with Catalog.open(cfg.catalog_path) as cat:
        cur = cat.cursor()
        n = cur.execute(f"SELECT count(liquidity_usd), count(*) FROM exports.{PATH}").fetchone()
        assert n == (10, 250)
    check_leaderboard(con, cfg)


def test_failing_user_export_is_reported_and_others_stay_fresh(bus: Config, con: Any) -> None:
    cfg = dataclasses.replace(
        bus,
        exports=(
            UserExport("run_ids", "SELECT run_id FROM catalog.runs_d WHERE deleted_at IS NULL;"),
            UserExport("broken", "SELECT no_such_column FROM catalog.runs_d"),
            UserExport("callers_csv", "SELECT * FROM exports.caller_leaderboard", "csv"),
        ),
    ).validate()
    add_path_run(cfg, "p0", seed=1)
    with structlog.testing.capture_logs() as logs:
        status = sync(cfg)
    failed = [e for e in logs if e["event"] == "export.failed"]
    assert [e["export"] for e in failed] == ["broken"]
    assert "no_such_column" in failed[0]["error"]
    entries = status["exports"]
    assert entries["broken"]["ok"] is False and "no_such_column" in entries["broken"]["error"]
    assert entries["run_ids"] == {**entries["run_ids"], "ok": True, "rows": 1, "error": None}
    assert entries["callers_csv"]["ok"] is True
    # the broken export has no file: none published, none in the store, none named
    gen = published(cfg)
    assert not list((gen / "files").glob("broken.*"))
    assert not list((cfg.exports_dir / exports.FILES_DIR).glob("broken.*"))
    assert "file" not in entries["broken"]
    assert rows(con, f"SELECT * FROM '{gen / 'files' / 'run_ids.parquet'}'") == [("p0",)]

    add_path_run(cfg, "p1", seed=2)
    status = sync(cfg)
    assert status["exports"]["run_ids"]["rows"] == 2  # fresh despite the broken one
    assert status["exports"]["broken"]["ok"] is False
    gen = published(cfg)
    got = rows(con, f"SELECT * FROM '{gen / 'files' / 'run_ids.parquet'}' ORDER BY 1")
    assert got == [("p0",), ("p1",)]
    csv_rows = (gen / "files" / "callers_csv.csv").read_text().splitlines()
    assert csv_rows[0].startswith("caller_name,calls,")
    assert len(csv_rows) == 1 + len(CALLERS)
    with Catalog.open(cfg.catalog_path) as cat:  # registration went on
        assert cat.counts()["runs"] == 2


def test_one_more_run_writes_one_segment_and_leaves_the_others(bus: Config, con: Any) -> None:
    for i in range(5):
        add_path_run(bus, f"r{i}", n=10, seed=i)
        sync(bus)  # one refresh per run: five segments
    before = segment_files(bus, PATH)
    assert len(before) == 5
    time.sleep(0.01)  # a time gap: a file written again now would get a later mtime
    add_path_run(bus, "r5", n=10, seed=5)
    status = sync(bus)
    after = segment_files(bus, PATH)
    new = set(after) - set(before)
    assert len(new) == 1
    assert {k: after[k] for k in before} == before  # untouched: same names, same mtimes
    assert status["changed_runs"] == {"added": 1, "removed": 0}
    # A refresh with nothing changed writes no segment and rewrites no summary: every summary
    # keeps its store file (a rewrite is always a new name), no file is added to the store or
    # touched, and the new generation publishes those same files (same inodes).
    store = bus.exports_dir / exports.FILES_DIR
    files = {n: e["file"] for n, e in file_entries(bus).items()}
    assert sorted(files) == sorted(exports.summary_names())
    mtimes = {p.name: p.stat().st_mtime_ns for p in store.iterdir()}
    gen_before = published(bus)
    status = sync(bus)
    assert segment_files(bus, PATH) == after
    assert {n: e["file"] for n, e in file_entries(bus).items()} == files
    assert {p.name: p.stat().st_mtime_ns for p in store.iterdir()} == mtimes
    gen = published(bus)
    for name in exports.summary_names():
        published_file = gen / "files" / f"{name}.parquet"
        assert os.path.samefile(published_file, store / files[name]), name
        assert os.path.samefile(published_file, gen_before / "files" / f"{name}.parquet"), name
    assert status["changed_runs"] == {"added": 0, "removed": 0}
    check_consolidated(con, bus, PATH)


def test_compaction_keeps_segment_count_bounded_and_content_equal(
    bus: Config, con: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compaction, "MAX_SEGMENTS", 4)
    monkeypatch.setattr(compaction, "MERGE_FAN", 3)
    counts = []
    for i in range(14):
        add_path_run(bus, f"r{i:02d}", n=5 + i, seed=i)
        sync(bus)
        counts.append(len(segment_files(bus, PATH)))
        if i == 9:
            shutil.rmtree(bus.root / "backtest-path" / "r03")  # deletion inside a merged segment
    assert max(counts) <= 4
    assert counts[:4] == [1, 2, 3, 4]
    check_consolidated(con, bus, PATH)
    check_leaderboard(con, bus)
    with Catalog.open(bus.catalog_path) as cat:
        cur = cat.cursor()
        per_seg = cur.execute(
            "SELECT segment, sum(rows) FROM exports_state.run_segments GROUP BY ALL ORDER BY 1"
        ).fetchall()
        files = segment_files(bus, PATH)
        assert [s for s, _ in per_seg] == sorted(files)
        for seg, n in per_seg:  # the run -> segment map matches the files
            path = store_table(bus, PATH) / seg
            assert pq.read_metadata(path).num_rows == n


def test_crash_leftovers_are_cleaned_and_lost_segments_rebuilt(mixed_bus: Config, con: Any) -> None:
    cfg = mixed_bus
    table_dir = store_table(cfg, PATH)
    orphan = table_dir / "seg-9999999999-deadbeef.parquet"
    shutil.copy(next(iter(table_dir.glob("*.parquet"))), orphan)  # written, never committed
    leftover = cfg.exports_dir / f".runs.parquet{exports.TMP_MARK}0badf00d.tmp"
    leftover.write_bytes(b"half a file")
    files_dir = cfg.exports_dir / exports.FILES_DIR
    # and one where export files are written now (the store)
    file_leftover = files_dir / f".runs.0123456789ab.parquet{exports.TMP_MARK}0badf00d.tmp"
    file_leftover.write_bytes(b"half a file")
    lost = next(iter(store_table(cfg, POLICY).glob("*.parquet")))
    lost.unlink()
    with structlog.testing.capture_logs() as logs:
        sync(cfg)
    assert not orphan.exists() and not leftover.exists() and not file_leftover.exists()
    assert {"export.orphan_removed", "export.segment_missing"} <= {e["event"] for e in logs}
    check_all(cfg, con)


READER = textwrap.dedent(
    """
    import json, os, sys, time
    import pyarrow.parquet as pq
    from quantbot_bus.publication import current_generation
    exports_dir, stop_file = sys.argv[1], sys.argv[2]
    names = [n + ".parquet" for n in %r]
    reads = errors = 0
    seen_rows = set()
    gens = set()
    while not os.path.exists(stop_file):
        # Resolve `current` once per round and read everything below it. A generation never
        # changes and is kept while it can be read: no file of it may be missing or torn, and
        # reading a file by path (several opens: footer, then pages) is safe too.
        try:
            gen = current_generation(exports_dir)
        except Exception as exc:
            errors += 1
            print("ERROR current", type(exc).__name__, exc, file=sys.stderr)
            continue
        gens.add(gen.name)
        for name in names:
            try:
                table = pq.read_table(os.path.join(gen, "files", name))
                reads += 1
                if name == "runs.parquet":
                    seen_rows.add(table.num_rows)
            except Exception as exc:  # FileNotFoundError too: published before we started
                errors += 1
                print("ERROR", gen.name, name, type(exc).__name__, exc, file=sys.stderr)
        try:
            with open(os.path.join(exports_dir, "_export_status.json")) as fh:
                json.load(fh)
            reads += 1
        except Exception as exc:
            errors += 1
            print("ERROR status", type(exc).__name__, exc, file=sys.stderr)
        seg_dir = os.path.join(gen, "tables", "%s")
        try:
            segs = sorted(os.listdir(seg_dir))
        except Exception as exc:  # the table has live runs all along
            errors += 1
            print("ERROR", gen.name, "tables", type(exc).__name__, exc, file=sys.stderr)
            segs = []
        for seg in segs:
            if not seg.endswith(".parquet"):
                continue
            try:
                pq.read_table(os.path.join(seg_dir, seg))
                reads += 1
            except Exception as exc:  # a listed segment never vanishes from its generation
                errors += 1
                print("ERROR", gen.name, seg, type(exc).__name__, exc, file=sys.stderr)
    print(json.dumps({"reads": reads, "errors": errors, "generations": len(gens),
                      "runs_rows": sorted(seen_rows)}), flush=True)
    # Skip interpreter teardown: pyarrow's thread pool sometimes aborts there ("terminate
    # called without an active exception", seen 2 in ~20 runs); the reads are done and printed.
    os._exit(0)
    """
)


# Syncs (adding a run each; one in ``delete_every`` deletes one) while a reader reads: the fast
# suite's 10 still compact segments (MAX_SEGMENTS 3) and delete two runs under the reader, which
# reads thousands of times meanwhile; the soak makes 15.
@pytest.mark.parametrize(
    ("runs", "delete_every"),
    [
        pytest.param(10, 5, id="10-syncs"),
        pytest.param(15, 5, id="15-syncs", marks=pytest.mark.slow),
    ],
)
def test_concurrent_reader_never_sees_a_partial_export(
    bus: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runs: int, delete_every: int
) -> None:
    monkeypatch.setattr(compaction, "MAX_SEGMENTS", 3)  # compactions (file removals) happen too
    monkeypatch.setattr(compaction, "MERGE_FAN", 2)
    add_path_run(bus, "r000", n=200, seed=0)
    sync(bus)
    stop = tmp_path / "stop"
    script = tmp_path / "reader.py"
    script.write_text(READER % (list(exports.summary_names()), PATH))
    args = [str(script), str(bus.exports_dir), str(stop)]
    result = churn_while_reading(bus, args, stop, runs=runs, delete_every=delete_every)
    print(f"\n{result['reads']} reads during {runs} syncs")
    assert result["reads"] > 50
    # Every runs.parquet the reader saw was one a sync published: as many rows as there were
    # live runs after that sync (a deleted run left in it, or a torn file, would not match).
    seen = set(result["runs_rows"])
    assert seen and seen <= set(result["published"]), (sorted(seen), result["published"])


def churn_while_reading(
    cfg: Config, args: list[str], stop: Path, *, runs: int, delete_every: int
) -> dict[str, Any]:
    """Run a reader script (``python args...``) while syncs add ``runs`` runs, deleting an older
    one every ``delete_every``; stop it through the ``stop`` file; it must exit 0 and report no
    error. Returns the JSON it printed last, with ``published``: the number of live runs (run
    directories on disk) after the sync before the reader started and after each sync since."""

    def live_runs_on_disk() -> int:
        return sum(1 for d in (cfg.root / "backtest-path").iterdir() if d.is_dir())

    published = [live_runs_on_disk()]
    reader = subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(Path(__file__).resolve().parents[1]),
    )
    try:
        for i in range(1, runs + 1):
            add_path_run(cfg, f"r{i:03d}", n=200, seed=i)
            if i % delete_every == 0:
                shutil.rmtree(cfg.root / "backtest-path" / f"r{i - delete_every + 2:03d}")
            sync(cfg)
            published.append(live_runs_on_disk())
    finally:
        stop.write_text("stop")
        out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    assert result["errors"] == 0, err
    result["published"] = published
    return result


def test_refresh_without_changes_is_cheap_and_idempotent(mixed_bus: Config) -> None:
    """A second refresh on the same cursor finds nothing to do (no new segment, same status)."""
    with Catalog.open(mixed_bus.catalog_path) as cat:
        cur = cat.cursor()
        first = exports.refresh(mixed_bus, cur)
        second = exports.refresh(mixed_bus, cur)
    assert first["changed_runs"] == second["changed_runs"] == {"added": 0, "removed": 0}
    for name in exports.summary_names():
        assert second["exports"][name]["last_run_at"] == first["exports"][name]["last_run_at"]


def test_bin_value_resolution() -> None:
    for v in (1e-6, 0.37, 1.0, 1.005, 2.0, 3.999, 123.456, 9e12, -0.5, -2500.0, -9000.0):
        b = exports.bin_value(v)
        assert abs(b - v) <= REL_TOL * abs(v) and math.copysign(1, b) == math.copysign(1, v)
    assert exports.bin_value(0.0) == 0.0
    assert os.path.basename(exports.STATUS_NAME) == "_export_status.json"


# --------------------------------------------------------------------------- bounded catch-up


def register_only(cfg: Config) -> None:
    """Register what is on disk (scan + one batch, published) without refreshing the exports."""
    with Bus.open(cfg, role="sync") as pipe:
        pipe.commit(pipe.full_scan().batch)


def publish_exports(pipe: Bus) -> None:
    """Publish the export tables as they are now, then write and publish every export file
    (forced). ``pipe`` is a Bus opened for this: a fresh Bus publishes the tables it finds."""
    pipe.publish(force=True)
    pipe.write_files(force=True)


def refresh_until_done(cfg: Config, max_runs: int) -> list[dict[str, Any]]:
    statuses = []
    with Bus.open(cfg, role="sync") as pipe:
        assert pipe.catalog is not None
        cur = pipe.catalog.cursor()
        while True:
            statuses.append(exports.refresh(cfg, cur, max_runs=max_runs))
            if not statuses[-1]["more"]:
                cur.close()
                publish_exports(pipe)
                return statuses
            assert len(statuses) < 50, "the catch-up does not converge"


def check_catalog_summaries(cfg: Config) -> None:
    """runs/artifacts/latest_artifacts hold exactly what the catalog says (every live run)."""
    d = published(cfg) / "files"
    with Catalog.open(cfg.catalog_path) as cat:
        cur = cat.cursor()

        def same(file_sql: str, catalog_sql: str) -> None:
            got = sorted(cur.execute(file_sql).fetchall(), key=repr)
            want = sorted(cur.execute(catalog_sql).fetchall(), key=repr)
            assert got == want

        same(
            f"SELECT run_id, run_type, status, created_at, run_dir, fingerprint, params, metrics "
            f"FROM '{d / 'runs.parquet'}'",
            "SELECT run_id, run_type, status, created_at, run_dir, fingerprint, "
            "CAST(params AS VARCHAR), CAST(metrics AS VARCHAR) "
            "FROM catalog.runs_d WHERE deleted_at IS NULL",
        )
        same(
            f"SELECT * FROM '{d / 'artifacts.parquet'}'",
            "SELECT a.* EXCLUDE (arrow_schema, _seq), r.run_type FROM catalog.artifacts_f a "
            "JOIN catalog.runs_d r USING (run_id) WHERE r.deleted_at IS NULL",
        )
        same(
            f"SELECT * FROM '{d / 'latest_artifacts.parquet'}'",
            "SELECT * EXCLUDE (arrow_schema) FROM catalog.latest_artifacts_v",
        )
        order = cur.execute(f"SELECT run_id FROM '{d / 'runs.parquet'}'").fetchall()
        by_created = cur.execute(
            "SELECT run_id FROM catalog.runs_d WHERE deleted_at IS NULL ORDER BY created_at, run_id"
        ).fetchall()
        assert order == by_created


def test_bounded_catch_up_takes_max_runs_per_call_and_finishes_the_job(
    bus: Config, con: Any
) -> None:
    for i in range(3):
        add_path_run(bus, f"path-{i}", n=30, seed=i, created_at=f"2024-05-0{i + 1}T00:00:00Z")
    add_policy_run(bus, "policy-0", seed=10)
    add_optimize_run(bus, "opt-0", seed=20, created_at="2024-05-03T10:00:00Z")
    register_only(bus)

    order = ["opt-0", "path-0", "path-1", "path-2", "policy-0"]  # taken in by run_id
    statuses = []
    with Bus.open(bus, role="sync") as pipe:
        assert pipe.catalog is not None
        cur = pipe.catalog.cursor()
        for call in range(3):
            statuses.append(exports.refresh(bus, cur, max_runs=2))
            # Every call leaves consistent exports behind, holding the runs taken in so far.
            got = cur.execute("SELECT run_id FROM exports.runs ORDER BY 1").fetchall()
            assert got == [(r,) for r in order[: 2 * (call + 1)]]
            # policy-0, the only run with CALLS rows, comes in with the last call
            assert store_table(bus, CALLS).is_dir() == (call == 2)
        cur.close()
        publish_exports(pipe)
    assert [s["changed_runs"]["added"] for s in statuses] == [2, 2, 1]
    assert [s["more"] for s in statuses] == [True, True, False]
    check_all(bus, con)
    check_frontier_best(con, bus, "opt-0")
    check_catalog_summaries(bus)
    assert json.loads((bus.exports_dir / exports.STATUS_NAME).read_text())["more"] is False

    # Deletions all at once, updates and additions max_runs at a time; contents equal after.
    shutil.rmtree(bus.root / "backtest-path" / "path-0")
    shutil.rmtree(bus.root / "backtest-optimize" / "opt-0")
    shutil.rmtree(bus.root / "backtest-path" / "path-2")
    add_path_run(bus, "path-2", n=11, seed=77, created_at="2024-04-01T00:00:00Z")  # updated
    add_path_run(bus, "path-9", n=17, seed=9, extra=True)
    add_policy_run(bus, "policy-1", seed=11, params={"seed": 11, "variant": "b"})
    add_optimize_run(bus, "opt-1", seed=21, created_at="2024-05-04T10:00:00Z")
    register_only(bus)
    with Bus.open(bus, role="sync") as pipe:
        assert pipe.catalog is not None
        cur = pipe.catalog.cursor()
        status = exports.refresh(bus, cur, max_runs=1)
        assert status["more"] is True
        # both deletions, plus the one run taken in ("opt-1" comes first by run_id)
        assert status["changed_runs"] == {"added": 1, "removed": 2}
        got = cur.execute("SELECT run_id FROM exports.runs ORDER BY 1").fetchall()
        assert got == [("opt-1",), ("path-1",), ("path-2",), ("policy-0",)]
        # path-2 is still its old version until its turn comes (in the segments just written)
        n_old = rows(
            con,
            f"SELECT count(*) FROM read_parquet('{store_table(bus, PATH)}/*.parquet',"
            " union_by_name = true) WHERE run_id = 'path-2'",
        )
        assert n_old == [(30,)]
        cur.close()
    statuses = refresh_until_done(bus, max_runs=1)
    assert [s["changed_runs"]["added"] for s in statuses] == [1, 1, 1]
    assert statuses[0]["changed_runs"]["removed"] == 1  # path-2's old version, with its new one
    check_all(bus, con)
    check_frontier_best(con, bus, "opt-1")
    check_catalog_summaries(bus)


def test_refresh_rejects_a_max_runs_below_one(bus: Config) -> None:
    with Catalog.open(bus.catalog_path) as cat, pytest.raises(ValueError, match="max_runs"):
        exports.refresh(bus, cat.cursor(), max_runs=0)


def test_catch_up_works_under_a_small_duckdb_memory_limit(bus: Config, con: Any) -> None:
    for i in range(6):
        add_path_run(bus, f"path-{i}", n=2_000, seed=i)
    register_only(bus)
    with Bus.open(bus, role="sync") as pipe:
        assert pipe.catalog is not None
        pipe.catalog.con.execute("SET memory_limit = '64MB'")
        cur = pipe.catalog.cursor()
        while exports.refresh(bus, cur, max_runs=2)["more"]:
            pass
        cur.close()
        publish_exports(pipe)
    check_consolidated(con, bus, PATH)
    check_leaderboard(con, bus)


def test_runs_parquet_follows_new_keys_and_wider_types(bus: Config, con: Any) -> None:
    add_path_run(bus, "a", params={"seed": 1, "lr": 1})
    sync(bus)
    runs = published(bus) / "files" / "runs.parquet"
    assert rows(con, f"SELECT param_lr, typeof(param_lr) FROM '{runs}'") == [(1, "BIGINT")]
    # a later run widens lr to a float and brings a new key: the columns follow
    add_path_run(bus, "b", params={"seed": 2, "lr": 0.5, "tag": "x"})
    sync(bus)
    runs = published(bus) / "files" / "runs.parquet"
    got = rows(
        con, f"SELECT run_id, param_lr, typeof(param_lr), param_tag FROM '{runs}' ORDER BY 1"
    )
    assert got == [("a", 1.0, "DOUBLE", None), ("b", 0.5, "DOUBLE", "x")]
    # the run with the new key leaves: its column goes with it
    shutil.rmtree(bus.root / "backtest-path" / "b")
    sync(bus)
    runs = published(bus) / "files" / "runs.parquet"
    cols = [r[0] for r in rows(con, f"DESCRIBE SELECT * FROM '{runs}'")]
    assert "param_tag" not in cols and "param_lr" in cols
    assert rows(con, f"SELECT param_lr, typeof(param_lr) FROM '{runs}'") == [(1, "BIGINT")]
    check_catalog_summaries(bus)


def test_state_of_an_older_version_is_rebuilt(mixed_bus: Config, con: Any) -> None:
    with Catalog.open(mixed_bus.catalog_path) as cat:
        cat.cursor().execute("DELETE FROM exports_state.meta WHERE key = 'state_version'")
    with structlog.testing.capture_logs() as logs:
        statuses = refresh_until_done(mixed_bus, max_runs=3)
    assert any(e["event"] == "export.state_reset" for e in logs)
    assert sum(s["changed_runs"]["added"] for s in statuses) == 8
    check_all(mixed_bus, con)
    check_frontier_best(con, mixed_bus, "opt-new")
    check_catalog_summaries(mixed_bus)
    n_files = len(list(store_table(mixed_bus, PATH).glob("*.parquet")))
    with Catalog.open(mixed_bus.catalog_path) as cat:
        n_segs = (
            cat.cursor()
            .execute(
                "SELECT count(*) FROM exports_state.segments WHERE table_name = $t", {"t": PATH}
            )
            .fetchone()
        )
    assert n_segs == (n_files,)


def test_compaction_merges_like_sized_segments_only() -> None:
    """One new run never drags big segments into a merge (size tiers, not just 'smallest')."""
    small = [(f"s{i}", 1_000) for i in range(5)]
    big = [(f"b{i}", 500_000) for i in range(20)]
    assert compaction.merge_victims(small + big) == [s for s, _ in small]
    assert compaction.merge_victims(big) == [s for s, _ in big[: compaction.MERGE_FAN]]
    # sizes that grow by more than 3x each time: nothing alike to merge (yet)
    tiers = [(f"t{i}", 4**i) for i in range(12)]
    assert compaction.merge_victims(tiers) == []
    # ... until the count doubles the bound: then the smallest are merged anyway
    many = [(f"m{i}", 4**i) for i in range(2 * compaction.MAX_SEGMENTS + 1)]
    assert compaction.merge_victims(many) == [s for s, _ in many[: compaction.MERGE_FAN]]


# --------------------------------------------------------------------------- files vs views


def test_summary_views_are_the_generations_files(mixed_bus: Config) -> None:
    """exports.<summary> is its file in the reader's generation (same rows), and that file
    stays readable there when the store retires it (a hard link: same inode)."""
    cfg = mixed_bus
    gen = published(cfg)
    q = exports.open_query_connection(cfg)
    try:
        for name in exports.summary_names():
            from_view = q.execute(f"SELECT * FROM exports.{name}").fetchall()
            from_file = q.execute(
                f"SELECT * FROM read_parquet('{gen / 'files' / (name + '.parquet')}')"
            ).fetchall()
            assert from_view == from_file, name
    finally:
        q.close()
    for stored in (cfg.exports_dir / exports.FILES_DIR).iterdir():  # the store lets them go
        stored.unlink()
    n = exports.run_query(cfg, "SELECT count(*) FROM exports.runs").rows
    assert n == [(8,)]


def _set_entry_ms(cfg: Config, name: str, ms: float) -> None:
    path = cfg.exports_dir / exports.STATUS_NAME
    status = json.loads(path.read_text())
    status["exports"][name]["ms"] = ms
    path.write_text(json.dumps(status))


def test_whole_files_are_rewritten_at_most_once_per_ten_times_their_cost(bus: Config) -> None:
    """write_files holds back a file whose last write was too recent for its cost, says when
    it is due, and writes it when forced (the daemon on stop, sync) or once it is due."""
    cfg = bus
    add_path_run(cfg, "p0", seed=1)
    sync(cfg)
    add_path_run(cfg, "p1", seed=2)
    with Bus.open(cfg, role="sync") as pipe:
        pipe.commit(pipe.full_scan().batch)
        assert pipe.refresh_exports()["more"] is False
        pipe.publish()
        _set_entry_ms(cfg, "runs", 60_000.0)  # "the last write took a minute": due in ~10 min
        for name in exports.summary_names():  # the others cost nothing: due at once, whatever
            if name != "runs":  # their real cost was on a loaded machine
                _set_entry_ms(cfg, name, 0.0)
        before = file_entries(cfg)
        next_due = pipe.write_files()
        after = file_entries(cfg)
        held = rewritten(before, after)
        assert "runs" not in held
        # due 600 s after its last write, which was moments ago (generous for a loaded machine)
        assert next_due is not None and 540 < next_due <= 600
        assert "caller_leaderboard" in held  # the others are cheap: written at once
        gen = published(cfg)
        for name in held:  # ... and published
            stored = cfg.exports_dir / exports.FILES_DIR / after[name]["file"]
            assert os.path.samefile(gen / "files" / f"{name}.parquet", stored), name
        # still the old file, whole
        assert pq.read_metadata(gen / "files" / "runs.parquet").num_rows == 1
        # the view is that file (summaries lag the catalog by at most their cadence) ...
        assert exports.run_query(cfg, "SELECT count(*) FROM exports.runs").rows == [(1,)]
        # ... while the catalog itself is fresh with every batch
        assert exports.run_query(cfg, "SELECT count(*) FROM catalog.runs_d").rows == [(2,)]

        before = file_entries(cfg)
        pipe.write_files(force=True)
        assert rewritten(before, file_entries(cfg)) == ["runs"]
        assert pq.read_metadata(published(cfg) / "files" / "runs.parquet").num_rows == 2
        assert exports.run_query(cfg, "SELECT count(*) FROM exports.runs").rows == [(2,)]
        before = file_entries(cfg)
        pipe.write_files(force=True)
        assert rewritten(before, file_entries(cfg)) == []  # nothing fed it since


def test_view_readers_never_fail_while_refreshes_replace_files(
    bus: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader process querying the summary views through the snapshot while syncs add and
    delete runs (rewriting every summary file) sees no error and only whole states."""
    monkeypatch.setattr(compaction, "MAX_SEGMENTS", 3)  # compactions retire segment files too
    monkeypatch.setattr(compaction, "MERGE_FAN", 2)
    add_path_run(bus, "r000", n=200, seed=0)
    sync(bus)
    stop = tmp_path / "stop"
    script = tmp_path / "view_reader.py"
    script.write_text(
        textwrap.dedent(
            """
            import json, os, sys
            from quantbot_bus import exports
            from quantbot_bus.config import load_config
            cfg = load_config(None, overrides={"root": sys.argv[1], "exports_dir": sys.argv[2],
                                               "state_dir": sys.argv[3]})
            reads = errors = 0
            seen = set()
            TABLES = %r
            while not os.path.exists(sys.argv[4]):
                try:
                    runs = exports.run_query(cfg, "SELECT count(*) FROM exports.runs").rows
                    lb = exports.run_query(
                        cfg, "SELECT sum(runs_seen) FROM exports.caller_leaderboard").rows
                    exports.run_query(cfg, "SELECT count(*) FROM exports.run_summaries")
                    if TABLES:
                        exports.run_query(
                            cfg, "SELECT count(*) FROM exports.backtest_call_path_metrics")
                    seen.add(runs[0][0])
                    reads += 1
                except Exception as exc:
                    errors += 1
                    print("ERROR", type(exc).__name__, exc, file=sys.stderr)
            print(json.dumps({"reads": reads, "errors": errors, "seen": sorted(seen)}), flush=True)
            os._exit(0)  # no teardown (see READER above)
            """
        )
        % (True,)
    )
    args = [str(script), str(bus.root), str(bus.exports_dir), str(bus.state_dir), str(stop)]
    result = churn_while_reading(bus, args, stop, runs=12, delete_every=4)
    assert result["reads"] > 20
    # Only whole states: every count the views answered is one a sync published.
    seen = set(result["seen"])
    assert seen and seen <= set(result["published"]), (sorted(seen), result["published"])


def test_background_compaction_is_dropped_when_a_victim_changed_meanwhile(
    bus: Config, con: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon writes a merged segment without the catalog lock; if a refresh rewrote one of
    its victims meanwhile (a run in it was deleted), the commit drops the merge and its file,
    and the exports stay exact. An unchanged plan commits, and retires the victims."""
    monkeypatch.setattr(compaction, "MAX_SEGMENTS", 3)
    for i in range(4):
        add_path_run(bus, f"r{i}", n=10 + i, seed=i)
        register_only(bus)
        with Catalog.open(bus.catalog_path) as cat:
            exports.refresh(bus, cat.cursor())  # one segment per run, no compaction
    assert len(segment_files(bus, PATH)) == 4
    with Catalog.open(bus.catalog_path) as cat:
        cur = cat.cursor()
        plans = [m for m in exports.plan_compaction(cur) if m.table == PATH]
        assert len(plans) == 1 and len(plans[0].victims) >= 2
        written = exports.write_compaction(bus, plans)
        assert written[0].segment is not None
        merged_file = store_table(bus, PATH) / written[0].segment
        assert merged_file.exists()
        # meanwhile: a run of the smallest victim is deleted and the refresh rewrites it
        victim_run = cur.execute(
            "SELECT run_id FROM exports_state.run_segments WHERE table_name = $t AND segment = $s",
            {"t": PATH, "s": plans[0].victims[0]},
        ).fetchone()[0]
    shutil.rmtree(bus.root / "backtest-path" / victim_run)
    add_path_run(bus, "r9", n=9, seed=9)  # and a new run: 4 segments again after the refresh
    register_only(bus)
    with Bus.open(bus, role="sync") as pipe:
        assert pipe.catalog is not None
        cur = pipe.catalog.cursor()
        exports.refresh(bus, cur)
        assert exports.commit_compaction(bus, cur, written) == 0
        assert not merged_file.exists()
        # a fresh plan goes through
        assert exports.compact(bus, cur) == 1
        views = cur.execute(f"SELECT count(*) FROM exports.{PATH}").fetchone()
        cur.close()
        publish_exports(pipe)
    assert len(segment_files(bus, PATH)) <= 3
    check_consolidated(con, bus, PATH)
    check_leaderboard(con, bus)
    direct = con.execute(f"SELECT count(*) FROM read_parquet('{raw_glob(bus, PATH)}')").fetchone()
    assert views == direct


def test_a_publication_after_a_refresh_retired_a_segment_links_only_current_segments(
    bus: Config, con: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refresh retires an export segment (a run in it was deleted), then, before the Bus
    publishes the new table list, the publication compacts its catalog segments: that new
    generation must link the current export segments, not the retired one (whose file the
    refresh used to unlink at once: ``export.failed`` "No such file or directory")."""
    monkeypatch.setattr(publication_compaction, "MAX_SEGMENTS", 1)  # the catalog's: due at once
    add_path_run(bus, "r0", n=5, seed=0)
    add_path_run(bus, "r1", n=5, seed=1)
    sync(bus)
    (retired,) = segment_files(bus, PATH)  # both runs in one segment: r0 leaving rewrites it
    shutil.rmtree(bus.root / "backtest-path" / "r0")
    with structlog.testing.capture_logs() as logs:
        sync(bus)
    failed = [e for e in logs if e["log_level"] == "error"]
    assert failed == [], failed
    assert retired not in segment_files(bus, PATH)  # removed once no publication names it
    got = con.execute(
        f"SELECT DISTINCT run_id FROM read_parquet('{published_table_glob(published(bus), PATH)}')"
    ).fetchall()
    assert got == [("r1",)]
    check_consolidated(con, bus, PATH)


def test_lost_path_segment_rebuilds_the_leaderboard_histograms(mixed_bus: Config, con: Any) -> None:
    """Per-run histograms are not stored: a leaving run's are read back from its segment. When
    that segment file is gone, the totals are rebuilt from the segments, and stay exact."""
    cfg = mixed_bus
    check_leaderboard(con, cfg)
    lost = next(iter(store_table(cfg, PATH).glob("*.parquet")))
    lost.unlink()
    shutil.rmtree(cfg.root / "backtest-path" / "path-2")  # and a run leaves in the same refresh
    with structlog.testing.capture_logs() as logs:
        sync(cfg)
    assert "export.histograms_rebuilt" in {e["event"] for e in logs}
    check_all(cfg, con)
    # the ordinary path (rows read back from the segment) after that
    shutil.rmtree(cfg.root / "backtest-path" / "path-1")
    with structlog.testing.capture_logs() as logs:
        sync(cfg)
    assert "export.histograms_rebuilt" not in {e["event"] for e in logs}
    check_all(cfg, con)
    with Catalog.open(cfg.catalog_path) as cat:
        sql = "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'exports_state'"
        tables = first_column(cat, sql)
    assert "caller_hist_p" not in tables


def test_a_user_export_removed_from_the_config_leaves_the_status(bus: Config) -> None:
    with_export = dataclasses.replace(
        bus, exports=(UserExport("run_ids", "SELECT run_id FROM catalog.runs_d"),)
    ).validate()
    add_path_run(bus, "p0", seed=1)
    assert "run_ids" in sync(with_export)["exports"]
    status = sync(bus)  # nothing changed but the config
    assert "run_ids" not in status["exports"]
    assert "runs" in status["exports"]
