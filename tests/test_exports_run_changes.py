"""The exports follow the runs: a deleted run leaves every table and summary, an updated
run replaces its rows, a run with new columns or wider parameter types unions by name, one more
run writes one segment, and a refresh with nothing changed writes nothing."""

# ruff: noqa: S608 - test SQL over paths and run ids the test itself made

from __future__ import annotations

import os
import shutil
import time
from typing import Any

from builders import CALLS, PATH, POLICY, add_path_run, sync
from exports_checks import (
    check_all,
    check_catalog_summaries,
    check_consolidated,
    check_frontier_best,
    check_leaderboard,
    file_entries,
    first_column,
    published,
    published_table_glob,
    rows,
    segment_files,
    store_table,
)

from quantbot_bus import exports
from quantbot_bus.catalog import Catalog
from quantbot_bus.config import Config


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


def test_refresh_without_changes_is_cheap_and_idempotent(mixed_bus: Config) -> None:
    """A second refresh on the same cursor finds nothing to do (no new segment, same status)."""
    with Catalog.open(mixed_bus.catalog_path) as cat:
        cur = cat.cursor()
        first = exports.refresh(mixed_bus, cur)
        second = exports.refresh(mixed_bus, cur)
    assert first["changed_runs"] == second["changed_runs"] == {"added": 0, "removed": 0}
    for name in exports.summary_names():
        assert second["exports"][name]["last_run_at"] == first["exports"][name]["last_run_at"]
