"""The backtest summaries over seed-layout runs: the bus's producer writing the seed layout
(``--layout seed``) and runs built the way the seed system wrote them (``truth/paths``,
``policy/trades`` with the seed's columns), beside v1 runs; ``created_at`` a TIMESTAMP in every
summary; ``policy_comparison``'s excursion and tail-capture columns; ``policy_by_caller``, each
trade counted under its caller (NULL when the run does not name it).

Real producers, real Parquet, real ``sync``; every expected value is computed here from the
Parquet files with Polars and the standard library, not with the summaries' SQL.
"""

# ruff: noqa: S608 - SQL from this module's constants (summary names, column lists)

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import random
import shutil
import statistics
import uuid
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from builders import snapshot_query, sync
from seed_runs import make_seed_run
from structlog.testing import capture_logs

from quantbot_bus.backtest import optimize as opt
from quantbot_bus.backtest.runner import run_backtest
from quantbot_bus.config import Config
from quantbot_bus.exports.histograms import bin_value
from quantbot_bus.exports.store import TABLES_DIR
from quantbot_bus.provenance import git_info

D_FROM, D_TO = dt.date(2026, 1, 2), dt.date(2026, 1, 8)
SEED_CREATED = dt.datetime(2026, 3, 2, 9, 30)  # run_json()'s created_at, naive UTC
#: Every summary export of the backtest plug-in, and the columns that tell two runs apart.
SUMMARIES = (
    "run_summaries",
    "caller_leaderboard",
    "policy_comparison",
    "policy_by_caller",
    "frontier_best",
    "frontiers",
    "regressions",
)
RUN_COLUMNS = ("run_id", "created_at", "checked_at", "baseline_runs")
COMPARISON_COLUMNS = (
    "trades, avg_realized_return_bps, median_realized_return_bps, stop_out_rate, win_rate, "
    "avg_time_exposed_ms, avg_mae_bps, median_mae_bps, p95_mae_bps, avg_tail_capture, "
    "median_tail_capture"
)
BY_CALLER_COLUMNS = (
    "trades, avg_realized_return_bps, median_realized_return_bps, stop_out_rate, win_rate, "
    "avg_time_exposed_ms, avg_mae_bps, avg_tail_capture"
)


def new_bus(base: Path) -> Config:
    cfg = Config(root=base / "artifacts", exports_dir=base / "exports", state_dir=base / "state")
    cfg = cfg.validate()
    for d in (cfg.root, cfg.exports_dir, cfg.state_dir):
        d.mkdir(parents=True)
    return cfg


def produce(
    cfg: Config, strategy: str, layout: str, seed: int = 3, calls: int = 12
) -> tuple[str, Path]:
    """One run of the real producer (5-minute candles); (run_id, run_dir)."""
    result = run_backtest(
        strategy,
        "5m",
        D_FROM,
        D_TO,
        calls,
        seed,
        cfg.root,
        horizon_minutes=240,
        constraints=opt.Constraints(max_stop_out_rate=1.0, min_trades=1),
        layout=layout,
    )
    return result.run_id, result.run_dir


def query(cfg: Config, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    """Rows of ``sql`` over the publication, as dicts."""
    from quantbot_bus.catalog import open_reader

    con = open_reader(cfg.snapshot_path)
    try:
        cur = con.execute(sql, params or [])
        names = [d[0] for d in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    finally:
        con.close()


def without_runs(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """The rows without the columns that name or date the run, sorted."""
    return sorted(
        (tuple((k, v) for k, v in r.items() if k not in RUN_COLUMNS) for r in rows), key=repr
    )


def catalog_created(cfg: Config, run_id: str) -> dt.datetime:
    rows = snapshot_query(cfg, "SELECT created_at FROM catalog.runs_d WHERE run_id = ?", [run_id])
    value = rows[0][0]
    assert isinstance(value, dt.datetime)
    return value


# ---------------------------------------------------------------------------- expected values


def disc(values: list[float], q: float) -> float:
    """The ``ceil(n·q)``-th smallest value (what the leaderboard's histograms resolve)."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * q)) - 1]


def expected_leaderboard(frames: list[pl.DataFrame]) -> dict[str, dict[str, Any]]:
    """The leaderboard rows of the path-only runs whose call paths are ``frames``."""
    out: dict[str, dict[str, Any]] = {}
    calls = pl.concat([f.select(PATH_COLS) for f in frames])
    for (caller,), g in calls.group_by("caller_name"):
        n = g.height
        t2x = [v for v in g["t_2x_ms"].to_list() if v is not None]
        out[str(caller)] = {
            "calls": n,
            "hit_2x_rate": g["hit_2x"].sum() / n,
            "hit_3x_rate": g["hit_3x"].sum() / n,
            "hit_4x_rate": g["hit_4x"].sum() / n,
            "median_peak_multiple": bin_value(disc(g["peak_multiple"].to_list(), 0.5)),
            "p90_peak_multiple": bin_value(disc(g["peak_multiple"].to_list(), 0.9)),
            "median_dd_bps": bin_value(disc(g["dd_bps"].to_list(), 0.5)),
            "median_t_2x_ms": bin_value(disc(t2x, 0.5)) if t2x else None,
            "runs_seen": g["run_id"].n_unique(),
        }
    return out


def expected_comparison(trades: pl.DataFrame) -> dict[str, dict[str, Any]]:
    """policy_comparison's values per policy of one run's trades."""
    out: dict[str, dict[str, Any]] = {}
    for (policy,), g in trades.group_by("policy_id"):
        rr = g["realized_return_bps"].to_list()
        mae = [abs(v) for v in g["max_adverse_excursion_bps"].to_list()]
        tail = [v for v in g["tail_capture"].to_list() if v is not None]
        ordered = sorted(mae)
        pos = (len(ordered) - 1) * 0.95  # linear interpolation (quantile_cont)
        lo = math.floor(pos)
        p95 = ordered[lo] + (ordered[min(lo + 1, len(ordered) - 1)] - ordered[lo]) * (pos - lo)
        out[str(policy)] = {
            "trades": g.height,
            "avg_realized_return_bps": statistics.fmean(rr),
            "median_realized_return_bps": statistics.median(rr),
            "stop_out_rate": sum(g["stop_out"].to_list()) / g.height,
            "win_rate": sum(v > 0 for v in rr) / len(rr),
            "avg_time_exposed_ms": statistics.fmean(g["time_exposed_ms"].to_list()),
            "avg_mae_bps": -statistics.fmean(mae),
            "median_mae_bps": -statistics.median(mae),
            "p95_mae_bps": -p95,
            "avg_tail_capture": statistics.fmean(tail) if tail else None,
            "median_tail_capture": statistics.median(tail) if tail else None,
        }
    return out


def with_callers(trades: pl.DataFrame, *named_by: pl.DataFrame) -> pl.DataFrame:
    """One run's ``trades`` with each ``caller_name``: the trades' own (when they have the
    column), else that of the call in the first of the tables ``named_by`` that has it (each
    one row per ``call_id``), else null."""
    cols = ["caller_name"]
    out = (
        trades
        if "caller_name" in trades.columns
        else trades.with_columns(caller_name=pl.lit(None, pl.String))
    )
    for i, table in enumerate(named_by):
        assert table["call_id"].is_unique().all()
        cols.append(f"_caller_{i}")
        out = out.join(
            table.select("call_id", pl.col("caller_name").alias(cols[-1])), on="call_id", how="left"
        )
    return out.with_columns(caller_name=pl.coalesce(cols)).drop(cols[1:])


def expected_by_caller(trades: pl.DataFrame) -> dict[tuple[str, str | None], dict[str, Any]]:
    """policy_by_caller's values per (policy, caller) of one run's trades (``caller_name``
    filled in: :func:`with_callers`), computed by Polars."""
    rr = pl.col("realized_return_bps")
    groups = trades.group_by("policy_id", "caller_name").agg(
        trades=pl.len(),
        avg_realized_return_bps=rr.mean(),
        median_realized_return_bps=rr.median(),
        stop_out_rate=pl.col("stop_out").cast(pl.Float64).mean(),
        win_rate=(rr > 0).cast(pl.Float64).mean(),
        avg_time_exposed_ms=pl.col("time_exposed_ms").cast(pl.Float64).mean(),
        avg_mae_bps=-pl.col("max_adverse_excursion_bps").abs().mean(),
        avg_tail_capture=pl.col("tail_capture").mean(),
    )
    out: dict[tuple[str, str | None], dict[str, Any]] = {}
    for row in groups.iter_rows(named=True):
        out[(row.pop("policy_id"), row.pop("caller_name"))] = row
    return out


def assert_by_caller(
    cfg: Config, run_id: str, want: dict[tuple[str, str | None], dict[str, Any]]
) -> None:
    """The run's ``policy_by_caller`` rows are exactly ``want``'s groups, with its values."""
    rows = query(
        cfg,
        f"SELECT policy_id, caller_name, {BY_CALLER_COLUMNS} FROM exports.policy_by_caller "
        "WHERE run_id = ?",
        [run_id],
    )
    got = {(r.pop("policy_id"), r.pop("caller_name")): r for r in rows}
    assert len(got) == len(rows)  # one row per (policy, caller)
    assert sorted(got, key=repr) == sorted(want, key=repr)
    for key, values in want.items():
        assert_row(got[key], values, repr(key))


def assert_row(got: dict[str, Any], want: dict[str, Any], what: str) -> None:
    for key, value in want.items():
        if value is None or isinstance(value, (bool, int, str, dt.datetime)):
            assert got[key] == value, (what, key, got[key], value)
        else:
            assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-9), (what, key)


# ---------------------------------------------------------------------------- seed-system runs

#: The call-path columns the leaderboard reads.
PATH_COLS = [
    "run_id",
    "caller_name",
    "hit_2x",
    "hit_3x",
    "hit_4x",
    "t_2x_ms",
    "dd_bps",
    "peak_multiple",
]


def seed_paths(run_id: str, callers: list[str], n: int, seed: int) -> pa.Table:
    """``truth/paths`` with every column of the seed's table, coherent values."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for i in range(n):
        alert = 1_767_225_600_000 + i * 3_600_000
        peak = round(1.0 + rng.random() * 4.5, 6)
        hit = {m: peak >= m for m in (2, 3, 4)}
        t_hit = {m: (m - 1) * 300_000 + i * 60_000 if hit[m] else None for m in (2, 3, 4)}
        rows.append(
            {
                "run_id": run_id,
                "call_id": f"call_So1{i:03d}_{alert}_0",
                "caller_name": callers[i % len(callers)],
                "mint": f"So1{i:03d}",
                "chain": "solana",
                "interval": "5m",
                "alert_ts_ms": alert,
                "p0": 0.001 * (1 + i),
                "hit_2x": hit[2],
                "hit_3x": hit[3],
                "hit_4x": hit[4],
                "t_2x_ms": t_hit[2],
                "t_3x_ms": t_hit[3],
                "t_4x_ms": t_hit[4],
                "dd_bps": -round(rng.random() * 9_500, 3),
                "dd_to_2x_bps": -round(rng.random() * 3_000, 3) if hit[2] else None,
                "alert_to_activity_ms": rng.choice([0, 60_000, None]),
                "peak_multiple": peak,
            }
        )
    schema = pa.schema(
        [
            ("run_id", pa.string()),
            ("call_id", pa.string()),
            ("caller_name", pa.string()),
            ("mint", pa.string()),
            ("chain", pa.string()),
            ("interval", pa.string()),
            ("alert_ts_ms", pa.int64()),
            ("p0", pa.float64()),
            ("hit_2x", pa.bool_()),
            ("hit_3x", pa.bool_()),
            ("hit_4x", pa.bool_()),
            ("t_2x_ms", pa.int64()),
            ("t_3x_ms", pa.int64()),
            ("t_4x_ms", pa.int64()),
            ("dd_bps", pa.float64()),
            ("dd_to_2x_bps", pa.float64()),
            ("alert_to_activity_ms", pa.int64()),
            ("peak_multiple", pa.float64()),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def seed_trades(run_id: str, call_ids: list[str], seed: int) -> pa.Table:
    """``policy/trades`` with every column of the seed's table: two policies over the calls,
    and one trade of a call that the run's paths do not have (no caller for it)."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for policy in ("fixed-stop", "trail-25"):
        for k, call_id in enumerate([*call_ids, "call_orphan_0"]):
            entry = 1_767_225_600_000 + k * 3_600_000
            ret = round(rng.uniform(-5_000, 12_000), 3)
            held = rng.randrange(5, 240) * 60_000
            rows.append(
                {
                    "run_id": run_id,
                    "policy_id": policy,
                    "call_id": call_id,
                    "entry_ts_ms": entry,
                    "entry_px": 0.001,
                    "exit_ts_ms": entry + held,
                    "exit_px": 0.001 * (1 + ret / 10_000),
                    "exit_reason": "stop_loss" if ret < -3_000 else "take_profit",
                    "realized_return_bps": ret,
                    "stop_out": ret < -3_000,
                    "max_adverse_excursion_bps": -round(rng.random() * 6_000, 3),
                    "time_exposed_ms": held,
                    "tail_capture": None if k % 5 == 0 else round(rng.uniform(-0.5, 1.0), 6),
                }
            )
    schema = pa.schema(
        [
            ("run_id", pa.string()),
            ("policy_id", pa.string()),
            ("call_id", pa.string()),
            ("entry_ts_ms", pa.int64()),
            ("entry_px", pa.float64()),
            ("exit_ts_ms", pa.int64()),
            ("exit_px", pa.float64()),
            ("exit_reason", pa.string()),
            ("realized_return_bps", pa.float64()),
            ("stop_out", pa.bool_()),
            ("max_adverse_excursion_bps", pa.float64()),
            ("time_exposed_ms", pa.int64()),
            ("tail_capture", pa.float64()),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def seed_run(root: Path, run_type: str, tables: dict[str, pa.Table], run_id: str) -> Path:
    """A seed-system run (run.json, logs, ``_SUCCESS``) holding ``tables``."""
    artifacts = {
        name.rsplit("/", 1)[1]: {"rows": t.num_rows, "path": f"{name}.parquet"}
        for name, t in tables.items()
    }
    return make_seed_run(root, run_id, tables=tables, run_type=run_type, artifacts=artifacts)


# ---------------------------------------------------------------------------- tests


def test_producer_runs_read_the_same_in_both_layouts(tmp_path: Path) -> None:
    """The producer's runs in the seed layout give the rows the same runs give in the v1
    layout, in every summary; the values are the Parquet files'."""
    buses = {layout: new_bus(tmp_path / layout) for layout in ("v1", "seed")}
    runs: dict[str, dict[str, tuple[str, Path]]] = {}
    for layout, cfg in buses.items():
        runs[layout] = {s: produce(cfg, s, layout) for s in ("path-only", "policy", "optimize")}
        sync(cfg)
    got = {
        layout: {name: query(cfg, f"SELECT * FROM exports.{name}") for name in SUMMARIES}
        for layout, cfg in buses.items()
    }
    for name in SUMMARIES:
        assert got["v1"][name], f"{name} is empty"
        assert without_runs(got["seed"][name]) == without_runs(got["v1"][name]), name
    # every run of either layout is in run_summaries, dated as in the catalog
    for layout, cfg in buses.items():
        created = {run_id: catalog_created(cfg, run_id) for run_id, _ in runs[layout].values()}
        assert {r["run_id"] for r in got[layout]["run_summaries"]} == set(created)
        for name in ("run_summaries", "policy_comparison", "policy_by_caller", "frontiers"):
            for r in got[layout][name]:
                assert r["created_at"] == created[r["run_id"]], (layout, name)

    seed_cfg = buses["seed"]
    policy_id, policy_dir = runs["seed"]["policy"]
    trades = pl.read_parquet(policy_dir / "policy" / "backtest_policy_results.parquet")
    calls = pl.read_parquet(policy_dir / "policy" / "backtest_call_results.parquet")
    want = expected_comparison(trades)
    rows = query(
        seed_cfg,
        f"SELECT policy_id, {COMPARISON_COLUMNS} FROM exports.policy_comparison WHERE run_id = ?",
        [policy_id],
    )
    assert sorted(r["policy_id"] for r in rows) == sorted(want) and len(want) == 27
    for r in rows:
        assert_row(r, want[r["policy_id"]], r["policy_id"])

    # policy_by_caller: the trades per policy and caller, each caller from the run's call
    # results (by call_id), in both layouts
    for layout, folder in (("seed", "policy"), ("v1", "")):
        run_id, run_dir = runs[layout]["policy"]
        run_trades = pl.read_parquet(run_dir / folder / "backtest_policy_results.parquet")
        run_calls = pl.read_parquet(run_dir / folder / "backtest_call_results.parquet")
        want_callers = expected_by_caller(with_callers(run_trades, run_calls))
        assert sum(w["trades"] for w in want_callers.values()) == 27 * 12
        assert len(want_callers) > 27 and all(c is not None for _, c in want_callers)
        assert_by_caller(buses[layout], run_id, want_callers)

    # the leaderboard: the seed-layout path-only run's callers
    path_id, path_dir = runs["seed"]["path-only"]
    paths = pl.read_parquet(path_dir / "truth" / "backtest_call_path_metrics.parquet")
    board = {r["caller_name"]: r for r in got["seed"]["caller_leaderboard"]}
    want_board = expected_leaderboard([paths])
    assert sorted(board) == sorted(want_board)
    for caller, w in want_board.items():
        assert_row(board[caller], w, caller)

    # run_summaries of the seed-layout policy run: pnl from its call results
    summary = next(r for r in got["seed"]["run_summaries"] if r["run_id"] == policy_id)
    assert_row(
        summary,
        {
            "total_trades": 12,
            "total_pnl_usd": sum(calls["pnl_usd"].to_list()),
            "avg_return_bps": statistics.fmean(calls["return_bps"].to_list()),
            "win_rate": sum(calls["win"].to_list()) / 12,
            "max_drawdown_bps": -max(abs(v) for v in trades["max_adverse_excursion_bps"]),
            "total_calls": 12,
            "unique_callers": calls["caller_name"].n_unique(),
        },
        "run_summaries",
    )


@pytest.fixture
def seed_bus(tmp_path: Path) -> dict[str, Any]:
    """A bus holding seed-system runs (two path-only, one policy) beside the producer's
    path-only runs in both layouts, synced."""
    cfg = new_bus(tmp_path)
    ids = {k: str(uuid.uuid4()) for k in ("p1", "p2", "pol")}
    p1 = seed_paths(ids["p1"], ["seed_alpha", "seed_beta"], 24, seed=1)
    p2 = seed_paths(ids["p2"], ["seed_beta", "seed_gamma"], 18, seed=2)
    pol_paths = seed_paths(ids["pol"], ["seed_alpha", "seed_delta"], 10, seed=3)
    trades = seed_trades(ids["pol"], pol_paths.column("call_id").to_pylist(), seed=4)
    dirs = {
        "p1": seed_run(cfg.root, "path-only", {"truth/paths": p1}, ids["p1"]),
        "p2": seed_run(cfg.root, "path-only", {"truth/paths": p2}, ids["p2"]),
        "pol": seed_run(
            cfg.root, "policy", {"truth/paths": pol_paths, "policy/trades": trades}, ids["pol"]
        ),
    }
    v1_id, v1_dir = produce(cfg, "path-only", "v1", seed=5)
    seed_id, seed_dir = produce(cfg, "path-only", "seed", seed=6)
    sync(cfg)
    return {
        "cfg": cfg,
        "ids": {**ids, "v1": v1_id, "seed": seed_id},
        "dirs": {**dirs, "v1": v1_dir, "seed": seed_dir},
        "frames": {
            "p1": pl.from_arrow(p1),
            "p2": pl.from_arrow(p2),
            "pol_paths": pl.from_arrow(pol_paths),
            "trades": pl.from_arrow(trades),
            "v1": pl.read_parquet(v1_dir / "backtest_call_path_metrics.parquet"),
            "seed": pl.read_parquet(seed_dir / "truth" / "backtest_call_path_metrics.parquet"),
        },
    }


def test_seed_system_runs_feed_the_summaries(seed_bus: dict[str, Any]) -> None:
    cfg, ids, frames = seed_bus["cfg"], seed_bus["ids"], seed_bus["frames"]

    # the leaderboard: the path-only runs of every layout (the policy run's paths do not count)
    board = {r["caller_name"]: r for r in query(cfg, "SELECT * FROM exports.caller_leaderboard")}
    want = expected_leaderboard([frames[k] for k in ("p1", "p2", "v1", "seed")])
    assert sorted(board) == sorted(want)
    assert "seed_delta" not in board and board["seed_beta"]["runs_seen"] == 2
    for caller, w in want.items():
        assert_row(board[caller], w, caller)

    # run_summaries: a seed path-only run and the seed policy run (no pnl: no per-call results)
    summaries = {r["run_id"]: r for r in query(cfg, "SELECT * FROM exports.run_summaries")}
    assert set(summaries) == set(ids.values())
    p1 = frames["p1"]
    assert_row(
        summaries[ids["p1"]],
        {
            "run_type": "path-only",
            "total_trades": 0,
            "total_pnl_usd": None,
            "total_pnl_pct": None,
            "avg_return_bps": None,
            "win_rate": None,
            "max_drawdown_bps": min(p1["dd_bps"].to_list()),
            "median_drawdown_bps": statistics.median(p1["dd_bps"].to_list()),
            "total_calls": 24,
            "unique_callers": 2,
            "created_at": SEED_CREATED,
        },
        "path-only run",
    )
    trades, pol_paths = frames["trades"], frames["pol_paths"]
    rr = trades["realized_return_bps"].to_list()
    assert_row(
        summaries[ids["pol"]],
        {
            "run_type": "policy",
            "total_trades": 2 * 11,
            "total_pnl_usd": None,
            "total_pnl_pct": None,
            "avg_return_bps": statistics.fmean(rr),
            "win_rate": sum(v > 0 for v in rr) / len(rr),
            "max_drawdown_bps": min(pol_paths["dd_bps"].to_list()),
            "median_drawdown_bps": statistics.median(pol_paths["dd_bps"].to_list()),
            "total_calls": 10,
            "unique_callers": 2,
            "created_at": SEED_CREATED,
        },
        "policy run",
    )

    # policy_comparison: every column, the new ones included, from policy/trades
    rows = query(
        cfg,
        f"SELECT run_id, policy_id, {COMPARISON_COLUMNS}, created_at "
        "FROM exports.policy_comparison",
    )
    want_cmp = expected_comparison(trades)
    assert sorted((r["run_id"], r["policy_id"]) for r in rows) == [
        (ids["pol"], p) for p in sorted(want_cmp)
    ]
    for r in rows:
        assert_row(r, {**want_cmp[r["policy_id"]], "created_at": SEED_CREATED}, r["policy_id"])

    # policy_by_caller: the seed's trades per policy and caller, the callers from truth/paths;
    # the call the paths do not have counts under the NULL caller, one trade per policy
    want_callers = expected_by_caller(with_callers(trades, pol_paths))
    assert {k: w["trades"] for k, w in want_callers.items() if k[1] is None} == {
        ("fixed-stop", None): 1,
        ("trail-25", None): 1,
    }
    assert_by_caller(cfg, ids["pol"], want_callers)
    by_caller = query(cfg, "SELECT run_id, caller_name, created_at FROM exports.policy_by_caller")
    assert {(r["run_id"], r["created_at"]) for r in by_caller} == {(ids["pol"], SEED_CREATED)}
    assert by_caller[-1]["caller_name"] is None  # last: the NULL caller of the last policy


def test_created_at_is_a_utc_timestamp_in_every_summary(seed_bus: dict[str, Any]) -> None:
    cfg = seed_bus["cfg"]
    types = {
        table: data_type
        for table, data_type in snapshot_query(
            cfg,
            "SELECT table_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'exports' AND column_name = 'created_at'",
        )
    }
    for name in ("run_summaries", "policy_comparison", "policy_by_caller", "frontiers"):
        assert types[name] == "TIMESTAMP", (name, types[name])
    assert types["frontier_best"] == "TIMESTAMP" and types["runs"] == "TIMESTAMP"


def test_leaving_runs_leave_the_leaderboard(seed_bus: dict[str, Any]) -> None:
    """A seed-system run and a seed-layout producer run deleted in one sync: their calls leave
    the leaderboard (counts and histograms, from their own path tables); the rest stays."""
    cfg, dirs, frames = seed_bus["cfg"], seed_bus["dirs"], seed_bus["frames"]
    shutil.rmtree(dirs["p2"])
    shutil.rmtree(dirs["seed"])
    sync(cfg)
    board = {r["caller_name"]: r for r in query(cfg, "SELECT * FROM exports.caller_leaderboard")}
    want = expected_leaderboard([frames["p1"], frames["v1"]])
    assert sorted(board) == sorted(want) and "seed_gamma" not in board
    assert board["seed_beta"]["runs_seen"] == 1
    for caller, w in want.items():
        assert_row(board[caller], w, caller)
    left = {r[0] for r in snapshot_query(cfg, "SELECT run_id FROM exports.run_summaries")}
    assert left == {seed_bus["ids"][k] for k in ("p1", "pol", "v1")}


def test_a_lost_seed_path_segment_rebuilds_the_leaderboard_exactly(
    seed_bus: dict[str, Any],
) -> None:
    """The segment of ``truth__paths`` lost while a seed run leaves: the histograms are rebuilt
    from every path table's segments (the v1 and seed-layout producer runs' too), exact."""
    cfg, dirs, frames = seed_bus["cfg"], seed_bus["dirs"], seed_bus["frames"]
    lost = sorted((cfg.exports_dir / TABLES_DIR / "truth__paths").glob("*.parquet"))
    assert lost
    for path in lost:
        path.unlink()
    shutil.rmtree(dirs["p2"])
    with capture_logs() as logs:
        sync(cfg)
    assert "export.histograms_rebuilt" in {e["event"] for e in logs}
    board = {r["caller_name"]: r for r in query(cfg, "SELECT * FROM exports.caller_leaderboard")}
    want = expected_leaderboard([frames[k] for k in ("p1", "v1", "seed")])
    assert sorted(board) == sorted(want)
    for caller, w in want.items():
        assert_row(board[caller], w, caller)


def test_seed_layout_policy_runs_are_regression_baselines(tmp_path: Path) -> None:
    """Three seed-layout policy runs are the baseline of a later v1-layout run with the same
    params: read back from their own ``policy/backtest_call_results`` files."""
    cfg = new_bus(tmp_path)
    branch = (git_info() or {}).get("branch")  # what RunWriter records for these runs
    settings = dataclasses.replace(cfg.regressions, reference_branch=branch or "main")
    cfg = dataclasses.replace(cfg, regressions=settings)
    baseline = [produce(cfg, "policy", "seed", seed=s, calls=40) for s in (1, 2, 3)]
    sync(cfg)
    new_id, new_dir = produce(cfg, "policy", "v1", seed=4, calls=40)
    sync(cfg)
    rows = query(
        cfg,
        "SELECT metric, baseline_runs, n_new, n_baseline, baseline_value, new_value, reason "
        "FROM exports.regressions WHERE run_id = ? ORDER BY metric",
        [new_id],
    )
    assert [r["metric"] for r in rows] == ["mean_return_bps", "sharpe_per_call"]
    for r in rows:
        assert sorted(r["baseline_runs"]) == sorted(run_id for run_id, _ in baseline), r
        assert (r["n_new"], r["n_baseline"]) == (40, 3 * 40) and "left out" not in r["reason"]
    pooled = [
        v
        for _, run_dir in baseline
        for v in pl.read_parquet(run_dir / "policy" / "backtest_call_results.parquet")["return_bps"]
    ]
    new = pl.read_parquet(new_dir / "backtest_call_results.parquet")["return_bps"].to_list()
    assert rows[0]["baseline_value"] == pytest.approx(statistics.fmean(pooled), rel=1e-9)
    assert rows[0]["new_value"] == pytest.approx(statistics.fmean(new), rel=1e-9)


def test_the_seed_frontier_feeds_the_frontier_summaries(tmp_path: Path) -> None:
    """A seed ``optimization`` run's ``results/frontier`` (the seed's columns, no trades): its
    best constrained policy per caller, its rows with the Pareto flag, its run summary."""
    cfg = new_bus(tmp_path)
    run_id = str(uuid.uuid4())
    rows = [
        # caller, tp, sl, meets, objective, avg, median, stop-out
        ("seed_alpha", 2.0, 0.2, True, 1.5, 900.0, 400.0, 0.30),
        ("seed_alpha", 3.0, 0.2, True, 2.5, 1_200.0, 300.0, 0.45),
        ("seed_alpha", 5.0, 0.5, False, 4.0, 2_000.0, -100.0, 0.70),
        ("seed_beta", 2.0, 0.35, True, 0.5, 150.0, 50.0, 0.20),
        ("seed_beta", 3.0, 0.35, True, 0.4, 100.0, 20.0, 0.25),
    ]
    ranked: list[dict[str, Any]] = []
    for caller in ("seed_alpha", "seed_beta"):
        mine = sorted((r for r in rows if r[0] == caller), key=lambda r: (not r[3], -r[4]))
        for rank, r in enumerate(mine, start=1):
            ranked.append(
                {
                    "run_id": run_id,
                    "caller_name": caller,
                    "policy_params": f'{{"take_profit": {r[1]}, "stop_loss": {r[2]}}}',
                    "meets_constraints": r[3],
                    "objective_score": r[4],
                    "avg_return_bps": r[5],
                    "median_return_bps": r[6],
                    "stop_out_rate": r[7],
                    "rank": rank,
                }
            )
    seed_run(cfg.root, "optimization", {"results/frontier": pa.Table.from_pylist(ranked)}, run_id)
    sync(cfg)

    best = query(cfg, "SELECT * FROM exports.frontier_best ORDER BY caller_name")
    assert [(r["caller_name"], r["objective_score"], r["rank"], r["run_id"]) for r in best] == [
        ("seed_alpha", 2.5, 1, run_id),
        ("seed_beta", 0.5, 1, run_id),
    ]
    assert {r["created_at"] for r in best} == {SEED_CREATED}
    front = query(
        cfg,
        "SELECT caller_name, objective_score, pareto, kind, created_at FROM exports.frontiers "
        "ORDER BY caller_name, rank",
    )
    # on the Pareto set: no other row of the caller scores at least as high with a stop-out
    # rate at least as low (one strictly)
    want = []
    for caller, _tp, _sl, _meets, score, _avg, _med, stop in sorted(
        rows, key=lambda r: (r[0], not r[3], -r[4])
    ):
        dominated = any(
            o[0] == caller and o[4] >= score and o[7] <= stop and (o[4] > score or o[7] < stop)
            for o in rows
        )
        want.append((caller, score, not dominated, "policy", SEED_CREATED))
    assert [tuple(r.values()) for r in front] == want
    summary = query(cfg, "SELECT * FROM exports.run_summaries WHERE run_id = ?", [run_id])
    assert_row(
        summary[0],
        {
            "run_type": "optimization",
            "total_trades": 0,  # the seed's frontier has no trades column
            "avg_return_bps": statistics.fmean([1_200.0, 150.0]),  # the rank-1 rows, unweighted
            "win_rate": None,
            "total_pnl_usd": None,
            "unique_callers": 2,
            "created_at": SEED_CREATED,
        },
        "optimization run",
    )
