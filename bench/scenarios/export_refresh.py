"""The export-refresh scenario (reference figures): the cost of refreshing, publishing and
rewriting the exports for one new run, and the leaderboard in-process."""

from __future__ import annotations

import time
from typing import Any

from quantbot_bus.config import Config

from ..common import Result, median
from .context import LEADERBOARD_RAW_SQL, LEADERBOARD_SQL, Ctx, _k
from .datasets import _export_status, _new_run, ensure_bus


def _refresh_cost(ctx: Ctx, cfg: Config, reps: int) -> dict[str, Any]:
    """Through :class:`quantbot_bus.pipeline.Bus` in this process (daemon stopped): register
    one new run (commit + publication), then time what the daemon's publisher does for it:
    ``refresh_exports`` (state, segments, views), the publication of the
    refreshed export tables, and ``write_files`` forced (the whole summary files, which the
    daemon writes at most once per ``FILE_WRITE_SPACING`` x their cost). Then the leaderboard
    in-process on a warm read-only connection to the publication."""
    from quantbot_bus.catalog import open_reader
    from quantbot_bus.pipeline import Bus

    with Bus.open(cfg, role="sync") as bus:
        t = time.perf_counter()
        while bus.refresh_exports().get("more"):  # bring the exports up to date (untimed)
            pass
        bus.publish(force=True)
        bus.write_files(force=True)
        catchup = time.perf_counter() - t
        refresh, publish, files = [], [], []
        for _ in range(reps):
            run_dir = _new_run(ctx, cfg)
            bus.commit(bus.examine([run_dir]).batch)
            t = time.perf_counter()
            status = bus.refresh_exports()
            refresh.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            bus.publish()
            publish.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            bus.write_files(force=True)
            files.append((time.perf_counter() - t) * 1000)
        assert bus.degraded is None, bus.degraded
    bad = [
        name
        for name, st in (_export_status(cfg).get("exports") or {}).items()
        if isinstance(st, dict) and st.get("ok") is False
    ]
    query_ms: dict[str, float] = {}
    con = open_reader(cfg.snapshot_path)
    try:
        for label, sql in (("materialised", LEADERBOARD_SQL), ("all rows", LEADERBOARD_RAW_SQL)):
            con.execute(sql).fetchall()  # warm-up
            qt = []
            for _ in range(reps):
                t = time.perf_counter()
                con.execute(sql).fetchall()
                qt.append((time.perf_counter() - t) * 1000)
            query_ms[label] = median(qt)
    finally:
        con.close()
    return {
        "refresh_ms": [round(x, 1) for x in refresh],
        "refresh_median_ms": median(refresh),
        "refresh_max_ms": max(refresh),
        "publish_ms": [round(x, 1) for x in publish],
        "publish_median_ms": median(publish),
        "files_ms": [round(x, 1) for x in files],
        "files_median_ms": median(files),
        "catchup_s": round(catchup, 2),
        "failed": bad,
        "status_ms": status.get("ms"),
        "leaderboard_ms": query_ms,
    }


def export_refresh(ctx: Ctx) -> None:
    reps = 3 if ctx.quick else 7
    small, main = ensure_bus(ctx, "small"), ensure_bus(ctx, "main")
    rs = {"small": _refresh_cost(ctx, small, reps), "main": _refresh_cost(ctx, main, reps)}
    for label, r in rs.items():
        size = _k(ctx.sizes[label])
        ctx.add(
            Result(
                "export refresh",
                f"one new run at {size}: refresh + publish",
                r["refresh_median_ms"] + r["publish_median_ms"],
                "ms",
                "(reference)",
                "INFO",
                r,
                f"refresh {r['refresh_median_ms']:.0f} ms (max "
                f"{r['refresh_max_ms']:.0f}) + publication of the export tables "
                f"{r['publish_median_ms']:.0f} ms; median of {reps}; failed exports: "
                f"{r['failed'] or 'none'}",
            )
        )
        ctx.add(
            Result(
                "export refresh",
                f"summary files rewrite at {size}",
                r["files_median_ms"],
                "ms",
                "(reference)",
                "INFO",
                {},
                "Bus.write_files(force=True): every summary file, then a publication",
            )
        )
    nm = _k(ctx.sizes["main"])
    for label in ("materialised", "all rows"):
        ms = rs["main"]["leaderboard_ms"][label]
        ctx.add(
            Result(
                "export refresh",
                f"leaderboard in-process, {label} ({nm})",
                ms,
                "ms",
                "(reference)",
                "INFO",
                {},
                f"median of {reps}, warm read-only connection to exports/bus.duckdb",
            )
        )
