"""The catch-up scenario: runs dropped on a stopped daemon of the large bus, then its idle
CPU, its RSS and the latency of a steady stream at that size."""

from __future__ import annotations

import statistics
import time
from typing import Any

from ..common import (
    Result,
    cpu_percent,
    log_events,
    published_file_rows,
    rss_mb,
    start_daemon,
    verdict,
    visible_runs,
    wait_visible,
)
from .context import Ctx, _k
from .datasets import _export_status, _prepare_large
from .latency import _add_latency, _breakdown_note, _live


def catch_up(ctx: Ctx) -> None:
    """Runs dropped while the daemon was stopped: start it, time until a reader sees them all;
    then whether it goes idle within 30 s, its RSS, and the latency of a 10 runs/s stream."""
    cfg = _prepare_large(ctx)
    n, drop = ctx.n_large, ctx.n_drop
    hist = ctx.large_state["history"]
    window = 30
    d = start_daemon(cfg, ctx.work, "large-catchup", log_level="debug")
    res: dict[str, Any] = {}
    try:
        t_vis = wait_visible(d, cfg, n, 1800, interval=0.05)
        if t_vis is None:
            raise RuntimeError(f"only {visible_runs(cfg)} of {n} runs visible after 1800s")
        vis_s = t_vis - d.started
        ready_s = d.wait_ready(60)
        rss_visible = rss_mb(d.pid)
        ctx.large_state["caught_up"] = True
        ctx.buses["large"] = cfg
        ctx.sizes["large"] = n
        # Then: sample the CPU each second until it was < 1% for two seconds in a row, at most
        # `window` seconds.
        samples: list[float] = []
        idle_at = None
        while len(samples) < window:
            samples.append(round(cpu_percent(d.pid, 1.0), 1))
            d.check_alive()
            if len(samples) >= 2 and samples[-1] < 1.0 and samples[-2] < 1.0:
                idle_at = len(samples)
                break
        last5 = statistics.fmean(samples[-5:])
        mem = rss_mb(d.pid)
        exported = published_file_rows(cfg)
        status = _export_status(cfg)
        rescan = log_events(d.log_path, "rescan.done")
        res.update(
            visible_s=round(vis_s, 2),
            ready_s=round(ready_s, 2),
            rss_at_visible=rss_visible,
            cpu_samples=samples,
            idle_at_s=idle_at,
            rss=mem,
            exported_rows=exported,
            exports_more=status.get("more"),
            startup_rescan_ms=rescan[0].get("ms") if rescan else None,
            large=dict((k, v) for k, v in ctx.large_state.items() if k != "cfg"),
        )
        rate = drop / vis_s
        ctx.add(
            Result(
                "catch-up",
                f"{_k(drop)} dropped on a stopped daemon ({_k(n)} catalog)",
                rate,
                "runs/s",
                ">= 1,000 runs/s",
                verdict(rate >= 1000),
                res,
                f"{vis_s:.1f}s from Popen until exports/bus.duckdb shows all {n:,} (READY at "
                f"{ready_s:.1f}s; startup rescan {res['startup_rescan_ms']} ms); the other "
                f"{hist:,} were pre-seeded and published before the stop",
            )
        )
        progress = (
            f"exports hold {exported or 0:,} of {n:,} runs (catching up: {status.get('more')})"
        )
        ctx.add(
            Result(
                "catch-up",
                "then idle (CPU < 1% for 2 s) after",
                idle_at,
                "s",
                f"<= {window} s, CPU ~0",
                verdict(idle_at is not None),
                {},
                (
                    f"idle {idle_at}s after all were visible"
                    if idle_at
                    else f"not idle within {window}s: CPU {last5:.0f}% over its last 5 s"
                )
                + f"; {progress}",
            )
        )
        rss = mem.get("VmRSS", float("nan"))
        ctx.add(
            Result(
                "catch-up",
                f"daemon RSS at {_k(n)}",
                rss,
                "MB",
                "<= 200 MB",
                verdict(rss <= 200),
                {},
                f"{len(samples)}s after the catch-up; {rss_visible.get('VmRSS', 0):,.0f} MB when all were "
                f"visible; peak (VmHWM) {mem.get('VmHWM', 0):,.0f} MB; {progress}",
            )
        )
        # A steady 10 runs/s stream on the same daemon (its export backlog still running).
        seconds = 10.0 if ctx.quick else 30.0
        before = published_file_rows(cfg) or 0
        lat = _live(ctx, d, cfg, "l100k", 10.0, seconds)
        after = published_file_rows(cfg) or 0
        lat["exported_rows"] = [before, after]
        _add_latency(
            ctx,
            "latency 100k",
            f"10 runs/s for {seconds:.0f}s, {_k(n)} catalog",
            lat,
            f"default config; the exports held {before:,} of {n:,} runs before, {after:,} after "
            "(the catch-up of the history runs goes on meanwhile)"
            if before < n
            else "default config; exports caught up before",
        )
    finally:
        d.stop(timeout=10)
    # The same stream with the export refresh kept out of the way (registration + publication
    # only): export_interval_s set beyond the daemon's lifetime, so its publisher never starts a
    # refresh (its first one waits export_interval_s after boot).
    env = {"QUANTBOT_BUS_EXPORT_INTERVAL_S": str(round(time.monotonic() + 3_600))}
    d = start_daemon(cfg, ctx.work, "large-noexports", log_level="debug", env_extra=env)
    try:
        d.wait_ready(300)
        seconds = 5.0 if ctx.quick else 20.0
        lat = _live(ctx, d, cfg, "q100k", 10.0, seconds)
    finally:
        d.stop(timeout=10)
    p50, p99 = lat.get("p50_ms"), lat.get("p99_ms")
    ctx.add(
        Result(
            "latency 100k",
            f"p50 / p99, exports deferred ({_k(n)})",
            p50,
            "ms",
            "(reference)",
            "INFO",
            lat,
            f"p99 {p99} ms, max {lat.get('max_ms')} ms, missing {lat['missing']} of {lat['n']}; "
            "the registration path alone (no export refresh competes); "
            + _breakdown_note(lat["breakdown"]),
        )
    )
