"""False-positive and detection rates of the regression check (``quantbot_bus.regress``) on real
producer output.

``python -m bench.regress_fpr [--runs 105] [--baseline-runs 5] [--calls 200]``

1. Writes ``--runs`` policy backtests with the real producer (``run_backtest``, the function
   ``quantbot-bus backtest run`` calls), identical inputs, seeds 1..N, into a temporary root.
2. Harmless reruns: each run from seed ``k+1`` on is compared with the ``k`` runs before it
   (``--baseline-runs``, "the most recent earlier runs"), for each metric and method. A
   regression verdict there is a false positive. Also shown: the same interval at threshold 0
   (its nominal one-sided error is 2.5 %) and the raw rule "flag when the change is worse than
   the threshold", which ignores noise.
3. Detection: the same comparisons with the new run's returns shifted down by each ``--shifts``
   amount (bps), and with the run's worst grid policy in place of the one it selected (a real
   regression: the per-call returns the producer recorded for that policy).

Prints the counts and rates; the figures in docs/regressions.md come from one run of this
script. Not a timed test: it takes a few minutes.
"""

from __future__ import annotations

import argparse
import logging
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import structlog

from quantbot_bus.backtest.runner import DEFAULT_DATE_FROM, DEFAULT_DATE_TO, run_backtest
from quantbot_bus.regress import (
    MEAN_RETURN_BPS,
    SHARPE_PER_CALL,
    Metric,
    compare,
    policy_series,
    run_series,
    trial_sharpes,
)


def upper_bound(flagged: int, tried: int, level: float = 0.95) -> float:
    """Clopper–Pearson one-sided upper confidence bound of a rate (bisection on the binomial
    CDF)."""
    if tried == 0:
        return 1.0

    def cdf(p: float) -> float:
        return sum(math.comb(tried, k) * p**k * (1 - p) ** (tried - k) for k in range(flagged + 1))

    lo, hi = flagged / tried, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) > 1 - level else (lo, mid)
    return hi


def _verdict(
    new: np.ndarray, base: list[np.ndarray], metric: Metric, method: str, n_boot: int, seed: int
) -> str:
    return compare(new, base, metric, method=method, n_boot=n_boot, seed=seed).verdict


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=105, help="producer runs (seeds 1..N)")
    ap.add_argument("--baseline-runs", type=int, default=5, help="baseline runs per comparison")
    ap.add_argument("--calls", type=int, default=200, help="calls per run")
    ap.add_argument("--interval", default="5m")
    ap.add_argument("--horizon", type=int, default=240, help="minutes after each call")
    ap.add_argument("--shifts", default="1000,2000,3000", help="injected shifts, bps")
    ap.add_argument("--n-boot", type=int, default=999)
    ap.add_argument("--work-dir", default=None, help="keep the runs here (default: a temp dir)")
    args = ap.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    k = args.baseline_runs
    shifts = [float(s) for s in args.shifts.split(",") if s]
    root = Path(args.work_dir or tempfile.mkdtemp(prefix="qbus-regress-"))
    t0 = time.monotonic()
    try:
        dirs = [
            run_backtest(
                "policy",
                args.interval,
                DEFAULT_DATE_FROM,
                DEFAULT_DATE_TO,
                args.calls,
                seed,
                root,
                horizon_minutes=args.horizon,
            ).run_dir
            for seed in range(1, args.runs + 1)
        ]
        made = time.monotonic() - t0
        returns = [run_series(d) for d in dirs]
        worst = []
        for d in dirs:
            means = {p: float(policy_series(d, p).mean()) for p in trial_sharpes(d)}
            worst.append(policy_series(d, min(means, key=means.__getitem__)))
        print(
            f"{args.runs} policy runs ({args.calls} calls, {args.interval}, horizon "
            f"{args.horizon} min) written in {made:.0f} s; each run from seed {k + 1} compared "
            f"with the {k} runs before it"
        )
        cases: list[tuple[Metric, str]] = [
            (MEAN_RETURN_BPS, "bootstrap-mean"),
            (SHARPE_PER_CALL, "bootstrap-sharpe"),
            (SHARPE_PER_CALL, "psr"),
        ]
        print(
            f"\n{'metric':<16} {'method':<17} {'threshold':>9} {'tried':>5} {'flagged':>7} "
            f"{'FPR':>6} {'95% upper':>9} {'improv.':>7} {'at thr 0':>8} {'raw rule':>8}"
        )
        detection: list[str] = []
        for metric, method in cases:
            zero = replace(metric, threshold=0.0)
            tried = flagged = improved = flagged0 = raw = 0
            hits: dict[str, int] = {}
            for i in range(k, args.runs):
                base = returns[i - k : i]

                v = compare(returns[i], base, metric, method=method, n_boot=args.n_boot, seed=i)
                tried += 1
                flagged += v.verdict == "regression"
                improved += v.verdict == "improvement"
                flagged0 += _verdict(returns[i], base, zero, method, args.n_boot, i) == "regression"
                if v.change is not None:  # the raw rule: the point change alone
                    worse = v.change if metric.direction == "higher" else -v.change
                    raw += worse < -metric.threshold

                def shifted(s: float, i: int = i) -> Callable[[], np.ndarray]:
                    return lambda: returns[i] - s

                def worst_policy(i: int = i) -> np.ndarray:
                    return worst[i]

                injected: dict[str, Callable[[], np.ndarray]] = {
                    **{f"shift -{s:,.0f} bps": shifted(s) for s in shifts},
                    "worst grid policy": worst_policy,
                }
                for name, make in injected.items():
                    hits[name] = hits.get(name, 0) + (
                        _verdict(make(), base, metric, method, args.n_boot, i) == "regression"
                    )
            print(
                f"{metric.name:<16} {method:<17} {metric.threshold:>9g} {tried:>5} {flagged:>7} "
                f"{flagged / tried:>6.1%} {upper_bound(flagged, tried):>9.1%} {improved:>7} "
                f"{flagged0 / tried:>8.1%} {raw / tried:>8.1%}"
            )
            for name, n in hits.items():
                detection.append(
                    f"{metric.name:<16} {method:<17} {name:<20} {n:>5}/{tried:<5} {n / tried:>6.1%}"
                )
        print("\nDetection (verdict 'regression') of injected regressions:")
        print(f"{'metric':<16} {'method':<17} {'injected':<20} {'flagged':>11} {'rate':>6}")
        print("\n".join(detection))
        print(f"\ntotal {time.monotonic() - t0:.0f} s")
    finally:
        if args.work_dir is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
