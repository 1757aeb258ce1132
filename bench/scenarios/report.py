"""The report scenario: the HTML dashboard's write time and page load on the main bus."""

from __future__ import annotations

from ..common import Result
from .context import Ctx
from .datasets import ensure_bus


def report(ctx: Ctx) -> None:
    """The dashboard on the main bus: ``write_report`` (median of 3) and the page's load in
    headless Chromium over a blank page's (bench/report.py)."""
    from ..report import measure_page

    cfg = ensure_bus(ctx, "main")
    m = measure_page(cfg)
    n = ctx.sizes.get("main", ctx.n_main)
    median, load = float(m["median_s"] or 0.0), m["load_s"]
    ctx.results += [
        Result(
            "report",
            f"write_report at {n:,} runs",
            median,
            "s",
            "<= 3 s",
            "PASS" if median <= 3.0 else "MISS",
            note=f"first {m['first_s']:.2f} s (imports matplotlib); {m['bytes'] / 1024:.0f} KiB",
        ),
        Result(
            "report",
            "page load in headless chromium",
            load,
            "s",
            "<= 1 s",
            "INFO" if load is None else ("PASS" if load <= 1.0 else "MISS"),
            note="no chromium" if load is None else f"over a blank page's {m['blank_s']:.2f} s",
        ),
    ]
