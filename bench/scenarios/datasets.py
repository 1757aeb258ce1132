"""The shared data sets the scenarios run on (the ``main``, ``small`` and ``large`` buses and
the baseline's seed-style catalogs), built once per run and reused, and the helpers on them."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from quantbot_bus.config import Config

from .. import baseline as bl
from .. import datagen
from ..common import (
    DaemonKilled,
    DaemonProc,
    bus_config,
    cpu_percent,
    published_file_rows,
    read_status,
    rss_mb,
    start_daemon,
    visible_runs,
    wait_visible,
)
from .context import IDLE_WINDOW_S, Ctx, _mb


def _burst(
    ctx: Ctx,
    label: str,
    n: int,
    *,
    timeout: float,
    exports_timeout: float = 300.0,
    measure_idle: bool = False,
) -> dict[str, Any]:
    """Make ``n`` runs, start the daemon on them, time READY and the moment a reader finds every
    run in ``exports/bus.duckdb``; then (untimed for the figure) wait until the exports hold
    them all (``runs.parquet`` of the current generation).

    On success the bus becomes ``ctx.buses[label]``; if the daemon dies (or the RSS guard kills
    it) the result says so and the bus is not reused."""
    cfg = bus_config(ctx.work / f"bus-{label}")
    t = time.perf_counter()
    datagen.make_runs(cfg.root, ctx.tpl, n)
    gen_s = time.perf_counter() - t
    ctx.say(f"  [{label}] {n:,} run dirs made in {gen_s:.1f}s; starting the daemon")
    d = start_daemon(cfg, ctx.work, f"burst-{label}")
    out: dict[str, Any] = {"n": n, "gen_s": round(gen_s, 2), "exports_fresh": False, "error": None}
    try:
        t_vis = wait_visible(d, cfg, n, timeout)
        if t_vis is None:
            raise RuntimeError(f"only {visible_runs(cfg)} of {n} visible after {timeout:.0f}s")
        out["visible_s"] = t_vis - d.started
        out["ready_s"] = d.wait_ready(timeout)
        out["rss_at_visible_mb"] = rss_mb(d.pid)
        out["exports_fresh"] = d.wait(
            lambda: (published_file_rows(cfg) or 0) >= n, exports_timeout, 0.25
        )
        out["exports_s"] = (time.perf_counter() - d.started) if out["exports_fresh"] else None
        out["exported_rows"] = published_file_rows(cfg)
        if measure_idle and out["exports_fresh"]:
            out["settle"] = _settle(d, cfg, 60)
            out["rss_mb"] = rss_mb(d.pid)
            out["idle_cpu_pct"] = cpu_percent(d.pid, IDLE_WINDOW_S)
    except (DaemonKilled, RuntimeError) as exc:
        out["error"] = str(exc)
        out["exported_rows"] = published_file_rows(cfg)
    finally:
        out["exit_code"] = d.stop(timeout=60)
        out["peak_rss_mb"] = round(d.peak_rss_mb, 1)
    if out["error"] is None:  # every run visible; the exports may not be (see the notes)
        ctx.buses[label] = cfg
        ctx.sizes[label] = n
    if not out["exports_fresh"]:
        ctx.say(f"  [{label}] WARNING: the exports hold {out.get('exported_rows')} of {n:,} runs")
    return out


def _trickle(ctx: Ctx, label: str, n: int, chunk: int = 500) -> Config:
    """Build a bus the way it grows in use: runs arrive ``chunk`` at a time while the daemon
    runs, each chunk once the exports caught up with the previous one (untimed set-up)."""
    cfg = bus_config(ctx.work / f"bus-{label}-trickle")
    d = start_daemon(cfg, ctx.work, f"trickle-{label}")
    try:
        d.wait_ready(120)
        for start in range(0, n, chunk):
            datagen.make_runs(cfg.root, ctx.tpl, min(chunk, n - start), start=start)
            want = min(n, start + chunk)
            if not d.wait(lambda w=want: (published_file_rows(cfg) or 0) >= w, 600, 0.25):
                raise RuntimeError(f"exports never reached {want} runs")
        ctx.say(
            f"  [{label}] built by trickle: {n:,} runs, daemon peak RSS {d.peak_rss_mb:,.0f} MB"
        )
    finally:
        d.stop(timeout=60)
    ctx.buses[label] = cfg
    ctx.sizes[label] = n
    return cfg


def ensure_bus(ctx: Ctx, label: str) -> Config:
    """The ``main``/``small`` bus registered by a real daemon, exports fresh unless a warning
    said otherwise (built if missing: by a burst, or — when the daemon of a burst of that size
    died — by trickling runs in)."""
    if label not in ctx.buses:
        n = ctx.n_main if label == "main" else ctx.n_small
        if label not in ctx.failed_bursts:
            ctx.say(f"  building the {label} bus ({n:,} runs) with the daemon")
            res = _burst(ctx, label, n, timeout=600)
            if res["error"]:
                ctx.failed_bursts[label] = res
            elif res["exports_fresh"]:
                ctx.say(
                    f"  [{label}] visible after {res['visible_s']:.1f}s, exports fresh after "
                    f"{res['exports_s']:.1f}s"
                )
        if label not in ctx.buses:
            _trickle(ctx, label, n)
    return ctx.buses[label]


def _prepare_large(ctx: Ctx) -> Config:
    """The large bus as a stopped daemon leaves it, plus runs dropped meanwhile: ``n_large -
    n_drop`` run dirs pre-seeded into the catalog (:func:`datagen.preseed_catalog`) and
    published once through :class:`quantbot_bus.pipeline.Bus` (the base generation), then
    ``n_drop`` new run dirs that no daemon has seen."""
    from quantbot_bus.pipeline import Bus

    if "cfg" in ctx.large_state:
        return ctx.large_state["cfg"]
    n, drop = ctx.n_large, ctx.n_drop
    hist = n - drop
    cfg = bus_config(ctx.work / "bus-large")
    t = time.perf_counter()
    datagen.make_runs(cfg.root, ctx.tpl, hist)
    gen_s = time.perf_counter() - t
    with Bus.open(cfg, role="sync") as bus:
        assert bus.catalog is not None
        seed_s = datagen.preseed_catalog(bus.catalog, cfg.root, ctx.tpl, 0, hist)
        t = time.perf_counter()
        pub = bus.publish(force=True)
        pub_s = time.perf_counter() - t
    t = time.perf_counter()
    datagen.make_runs(cfg.root, ctx.tpl, drop, start=hist)
    drop_s = time.perf_counter() - t
    assert pub is not None
    ctx.large_state.update(
        cfg=cfg,
        history=hist,
        gen_s=round(gen_s, 1),
        seed_s=round(seed_s, 1),
        base_publish_s=round(pub_s, 2),
        base_publish_bytes=pub.bytes_written,
        base_publish_rows=pub.rows,
        drop_gen_s=round(drop_s, 1),
    )
    ctx.say(
        f"  [large] {hist:,} run dirs in {gen_s:.1f}s, pre-seeded in {seed_s:.1f}s, base "
        f"generation published in {pub_s:.2f}s ({pub.rows:,} rows, {_mb(pub.bytes_written)}); "
        f"{drop:,} more dropped in {drop_s:.1f}s"
    )
    return cfg


def ensure_large(ctx: Ctx) -> Config:
    """The large bus with every run registered (the catch-up done, untimed if not measured)."""
    if "caught_up" not in ctx.large_state:
        cfg = _prepare_large(ctx)
        d = start_daemon(cfg, ctx.work, "large-setup")
        try:
            if wait_visible(d, cfg, ctx.n_large, 1800) is None:
                raise RuntimeError("the large bus never showed every run")
        finally:
            d.stop(timeout=10)
        ctx.large_state["caught_up"] = True
        ctx.buses["large"] = cfg
        ctx.sizes["large"] = ctx.n_large
    return ctx.large_state["cfg"]


def baseline_db(ctx: Ctx, n: int) -> Path:
    """A seed-style catalog with ``n`` runs pre-seeded (one Arrow insert per table)."""
    if n in ctx.baseline_dbs:
        return ctx.baseline_dbs[n]
    db = ctx.work / f"baseline-{n}" / "alerts.duckdb"
    root = ctx.work / "baseline-seeded-runs"  # paths only; the baseline never re-reads them
    runs = []
    for i in range(n):
        rid = datagen.run_id_for(i)
        runs.append(
            (rid, root / "backtest" / rid, datagen.metadata_for(rid, i, ctx.tpl.variant_for(i)))
        )
    secs = bl.preseed(db, runs)
    ctx.say(f"  baseline catalog with {n:,} runs pre-seeded in {secs:.1f}s")
    ctx.baseline_dbs[n] = db
    return db


def _new_run(ctx: Ctx, cfg: Config, prefix: str = "add") -> Path:
    return datagen.make_run(cfg.root, ctx.tpl, ctx.new_index(), prefix=prefix)


def _export_status(cfg: Config) -> dict[str, Any]:
    try:
        data = json.loads((cfg.exports_dir / "_export_status.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _settle(d: DaemonProc, cfg: Config, timeout: float) -> dict[str, Any]:
    """Wait until the exports are fresh (``runs.parquet`` of the current generation holds every
    registered run) and the daemon is idle (CPU < 2% over two consecutive seconds), at most
    ``timeout`` seconds."""
    t0 = time.perf_counter()
    fresh = idle = False
    quiet = 0
    while time.perf_counter() - t0 < timeout:
        d.check_alive()
        registered = read_status(cfg).get("registered") or 0
        fresh = registered > 0 and (published_file_rows(cfg) or 0) >= registered
        try:
            quiet = quiet + 1 if cpu_percent(d.pid, 1.0) < 2.0 else 0
        except OSError:
            d.check_alive()
            raise
        idle = quiet >= 2
        if fresh and idle:
            break
    return {
        "settle_s": round(time.perf_counter() - t0, 1),
        "exports_fresh": fresh,
        "idle": idle,
        "exported_rows": published_file_rows(cfg),
        "registered": read_status(cfg).get("registered"),
    }
