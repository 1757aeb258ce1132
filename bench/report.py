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
import tempfile
import time
from pathlib import Path

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


def measure(n: int, keep: bool = False) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="qbus-report-"))
    try:
        t0 = time.perf_counter()
        cfg = build_bus(work, n)
        built = time.perf_counter() - t0
        results = [write_report(cfg) for _ in range(3)]
        secs = sorted(r.seconds for r in results)
        return {
            "runs": n,
            "build_s": built,
            "bytes": results[-1].bytes,
            "first_s": results[0].seconds,
            "median_s": secs[1],
        }
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[1_000, 10_000])
    parser.add_argument("--keep", action="store_true", help="keep the data dir")
    args = parser.parse_args()
    configure_logging("warning", "console")
    for n in args.sizes:
        m = measure(n, args.keep)
        print(
            f"runs={m['runs']:>6}  index.html={m['bytes'] / 1024:7.1f} KiB  "
            f"write_report median={m['median_s']:.2f} s (first {m['first_s']:.2f} s)  "
            f"[bus built in {m['build_s']:.0f} s]",
            flush=True,
        )


if __name__ == "__main__":
    main()
