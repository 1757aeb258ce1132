"""What the export tests share: where a test reads the exports, and the checks that their
contents equal a direct computation over the raw run Parquet files.

Runs are real directories (tests/builders/ ``add_path_run`` and kin: real Parquet, then
metadata.json), registered by the real one-shot path :func:`quantbot_bus.pipeline.sync` (scan →
catalog → publish → refresh → files). Every summary is checked against the same numbers computed
straight from the run files with DuckDB; the caller leaderboard's cross-run quantiles within the
documented 0.5 % (relative).

What a test reads as a user would, it reads from the publication: the views file
``exports/bus.duckdb`` or, for files, the current generation resolved once
(:func:`published`: ``<gen>/files/<name>``, ``<gen>/tables/<name>/*.parquet``). What it checks of
the internals (segments written, rewritten, orphaned) it reads from the private store
(:func:`store_table`: ``exports/.store/tables/<name>/``)."""

# ruff: noqa: S608 - test SQL over paths and run ids the test itself made

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import duckdb
import pytest
from builders import (
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
from quantbot_bus.config import Config
from quantbot_bus.pipeline import Bus
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


def mixed_runs(bus: Config) -> Config:
    """Path-only, policy and optimize runs, synced once (dated 2024: the regression checks are
    told to take runs of any age). Returns the bus's config with that regression setting."""
    bus = dataclasses.replace(bus, regressions=dataclasses.replace(bus.regressions, max_age_days=0))
    for i in range(4):
        add_path_run(bus, f"path-{i}", n=60, seed=i, params={"seed": i, "lr": 0.1 * i})
    add_policy_run(bus, "policy-0", seed=10)
    add_policy_run(bus, "policy-1", seed=11, params={"seed": 11, "variant": "b"})
    add_optimize_run(bus, "opt-old", seed=20, created_at="2024-05-01T10:00:00Z")
    add_optimize_run(bus, "opt-new", seed=21, created_at="2024-05-02T10:00:00Z")
    sync(bus)
    return bus


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
