"""The burst scenario: 10,000 runs at once on a starting daemon, against the seed baseline."""

from __future__ import annotations

import time

from .. import baseline as bl
from ..common import Result, median, verdict
from .context import IDLE_WINDOW_S, Ctx, _k
from .datasets import _burst


def burst(ctx: Ctx) -> None:
    n = ctx.n_main
    window = 3.0 if ctx.quick else 20.0
    res = _burst(ctx, "main", n, timeout=900, measure_idle=True)
    if res["error"]:
        ctx.failed_bursts["main"] = res
    vis = res.get("visible_s")
    rate = n / vis if vis else None
    peak = f"daemon peak RSS {res['peak_rss_mb']:,.0f} MB"

    # The baseline on the same runs, over a fixed window (running it to the end would take long).
    bdir = ctx.work / "baseline-burst"
    daemon = bl.BaselineDaemon(
        ctx.work / "bus-main" / "artifacts", bdir / "alerts.duckdb", bdir / "exports"
    )
    t0 = time.perf_counter()
    daemon.run(max_seconds=window)
    took = time.perf_counter() - t0
    done = daemon.processed
    b_rate = len(done) / (done[-1].finished - done[0].started) if len(done) > 1 else 0.0
    ratio = rate / b_rate if (b_rate and rate) else None
    ctx.add(
        Result(
            "burst",
            f"{_k(n)} runs: start -> visible to readers",
            rate,
            "runs/s",
            ">= 1,000 runs/s",
            verdict(rate is not None and rate >= 1000),
            res,
            (
                f"{vis:.2f}s from Popen until exports/bus.duckdb shows all {n:,} in "
                f"catalog.runs_d (READY at {res['ready_s']:.2f}s); {peak}"
            )
            if vis
            else f"never visible: {res['error'] or 'timed out'}; {peak}",
        )
    )
    ctx.add(
        Result(
            "burst",
            "baseline (seed daemon) throughput",
            b_rate,
            "runs/s",
            "(reference)",
            "INFO",
            {
                "window_s": round(took, 2),
                "processed": len(done),
                "per_run_ms_median": median([p.ms for p in done]) if done else None,
                "estimated_s_for_all": round(n / b_rate, 1) if b_rate else None,
            },
            f"{len(done)} runs in a {window:.0f}s window; all {n:,} would take >= {n / b_rate:,.0f}s"
            if b_rate
            else "baseline processed nothing",
        )
    )
    ctx.add(
        Result(
            "burst",
            "speed-up vs baseline",
            ratio,
            "x",
            ">= 50x",
            verdict(ratio is not None and ratio >= 50),
            {},
            "same runs, same machine, this run; the baseline's rate is taken on an almost empty "
            "catalog (it only slows as history grows), so the ratio is conservative",
        )
    )
    exp_s = res.get("exports_s")
    ctx.add(
        Result(
            "burst",
            f"{_k(n)} runs: start -> exports hold them all",
            n / exp_s if exp_s else None,
            "runs/s",
            "(reference)",
            "INFO",
            {},
            f"{exp_s:.1f}s until runs.parquet of the current generation has {n:,} rows "
            "(consolidated tables, summaries)"
            if exp_s
            else f"exports not caught up: {res.get('exported_rows')} of {n:,}",
        )
    )
    if res.get("rss_mb"):
        st = res.get("settle", {})
        ctx.add(
            Result(
                "burst",
                f"daemon RSS at {_k(n)}, idle",
                res["rss_mb"].get("VmRSS"),
                "MB",
                "(reference)",
                "INFO",
                {},
                f"after the exports caught up and {st.get('settle_s')}s of settling; "
                f"CPU {res.get('idle_cpu_pct', float('nan')):.1f}% over {IDLE_WINDOW_S:.0f}s; "
                f"peak (VmHWM) {res['rss_mb'].get('VmHWM', 0):,.0f} MB",
            )
        )
