"""The dashboard's cost: the size of ``index.html`` and the time ``write_report`` takes on a bus of
N runs (``python -m bench.report 1000 10000``).

Per size: N runs of the benchmark's templates (:mod:`bench.datagen`: path-only and policy runs,
1,000 calls each, hard-linked), one policy run of 10,000 calls written with
:class:`~quantbot_bus.writer.RunWriter` (the newest: the tearsheet's run) and one real optimize
run (:func:`~quantbot_bus.backtest.runner.run_backtest`, for the frontiers); ``sync``, then
``write_report`` three times (the first pays matplotlib's import). Prints one line per size.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypedDict

from quantbot_bus import pipeline
from quantbot_bus.backtest.runner import run_backtest
from quantbot_bus.config import Config
from quantbot_bus.log import configure_logging
from quantbot_bus.report import write_report
from quantbot_bus.writer import RunWriter

from . import datagen

TEARSHEET_CALLS = 10_000


def build_bus(work: Path, n: int) -> Config:
    """A synced bus of ``n`` template runs + a 10k-call policy run + an optimize run."""
    cfg = Config(root=work / "artifacts", exports_dir=work / "exports", state_dir=work / "state")
    for d in (cfg.root, cfg.exports_dir, cfg.state_dir):
        d.mkdir(parents=True)
    tpl = datagen.make_template(work / "tpl")
    datagen.make_runs(cfg.root, tpl, n)
    day = dt.date(2026, 1, 8)
    run_backtest("optimize", "1m", day - dt.timedelta(days=6), day, 40, 0, cfg.root)
    rng = random.Random(7)
    with RunWriter(cfg.root, "backtest", run_id="report-bench-10k", producer=("bench", "1")) as w:
        w.write_table(
            "backtest_call_results", datagen._call_results(rng, TEARSHEET_CALLS, w.run_id)
        )
        w.write_table(
            "backtest_policy_results", datagen._policy_results(rng, TEARSHEET_CALLS, w.run_id)
        )
    pipeline.sync(cfg.validate())
    return cfg


def chromium_load_s(page: Path, reps: int = 3) -> dict[str, float] | None:
    """Seconds headless Chromium takes to load and render ``page`` from ``file://`` (``--dump-dom``
    after the load), minus the same for a blank page in the same run (the browser's own start);
    medians of ``reps``. None without a ``chromium``."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        return None
    blank = page.parent / "blank.html"
    blank.write_text("<!doctype html><title>blank</title>")

    def load(target: Path) -> float:
        with tempfile.TemporaryDirectory(prefix="qbus-chromium-") as profile:
            t0 = time.perf_counter()
            subprocess.run(
                [exe, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                 "--dump-dom", target.as_uri()],
                check=True, capture_output=True, timeout=120,
            )  # fmt: skip
            return time.perf_counter() - t0

    try:
        pages = sorted(load(page) for _ in range(reps))
        blanks = sorted(load(blank) for _ in range(reps))
    finally:
        blank.unlink(missing_ok=True)
    return {"page_s": pages[reps // 2], "blank_s": blanks[reps // 2]}


class PageTimes(TypedDict):
    """What :func:`measure_page` measured: the page's size, ``write_report``'s seconds, and
    Chromium's load over a blank page (None without a Chromium)."""

    bytes: int
    first_s: float
    median_s: float
    cpu_s: float
    load_s: float | None
    blank_s: float | None


def measure_page(cfg: Config) -> PageTimes:
    """``write_report`` three times on ``cfg``'s bus (median, first; and the median CPU seconds
    of this process per call), the page's size, and its load in headless Chromium over a blank
    page's."""
    results, cpu = [], []
    for _ in range(3):
        c0 = time.process_time()
        results.append(write_report(cfg))
        cpu.append(time.process_time() - c0)
    secs = sorted(r.seconds for r in results)
    browser = chromium_load_s(results[-1].path)
    return {
        "bytes": results[-1].bytes,
        "first_s": results[0].seconds,
        "median_s": secs[1],
        "cpu_s": sorted(cpu)[1],
        "load_s": None if browser is None else browser["page_s"] - browser["blank_s"],
        "blank_s": None if browser is None else browser["blank_s"],
    }


def measure(n: int, keep: bool = False) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="qbus-report-"))
    try:
        t0 = time.perf_counter()
        cfg = build_bus(work, n)
        built = time.perf_counter() - t0
        return {"runs": n, "build_s": built, "dir": work, **measure_page(cfg)}
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def kept_bus(work: Path) -> Config:
    """The config of a bus that ``--keep`` left in ``work``."""
    return Config(root=work / "artifacts", exports_dir=work / "exports", state_dir=work / "state")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[1_000, 10_000])
    parser.add_argument(
        "--keep", action="store_true", help="keep the data dir (its path is printed)"
    )
    parser.add_argument(
        "--bus",
        type=Path,
        help="measure the page of a bus that --keep left (no build; sizes ignored): run old and "
        "new code on it in alternating processes",
    )
    args = parser.parse_args()
    configure_logging("warning", "console")
    if args.bus is not None:
        m: Mapping[str, Any] = measure_page(kept_bus(args.bus))
        print(
            f"bus={args.bus}  index.html={(m['bytes'] or 0) / 1024:7.1f} KiB  "
            f"write_report median={m['median_s']:.2f} s (first {m['first_s']:.2f} s; "
            f"CPU {m['cpu_s']:.2f} s)  chromium load={m['load_s']} s over blank {m['blank_s']} s",
            flush=True,
        )
        return
    for n in args.sizes:
        m = measure(n, args.keep)
        print(
            f"runs={m['runs']:>6}  index.html={m['bytes'] / 1024:7.1f} KiB  "
            f"write_report median={m['median_s']:.2f} s (first {m['first_s']:.2f} s; "
            f"CPU {m['cpu_s']:.2f} s)  "
            f"chromium load={m['load_s']} s over blank {m['blank_s']} s  "
            f"[bus built in {m['build_s']:.0f} s"
            + (f", kept in {m['dir']}]" if args.keep else "]"),
            flush=True,
        )


if __name__ == "__main__":
    main()
