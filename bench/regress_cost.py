"""What one regression check costs: ``compare`` of a new run against 5 baseline runs, per metric
and run length (``python -m bench.regress_cost``). Fat-tailed per-call returns (Student t, 4
degrees of freedom, ~12,000 bps spread), the bus's defaults (999 resamples, automatic blocks).
Prints milliseconds per check, the median of 5 after a warm-up."""

from __future__ import annotations

import statistics
import time

import numpy as np

from quantbot_bus.regress import MEAN_RETURN_BPS, SHARPE_PER_CALL, compare


def main() -> None:
    rng = np.random.default_rng(1)
    print(f"{'calls':>6} {'metric':<16} {'ms/check':>9}")
    for n in (200, 1000, 5000):
        new = rng.standard_t(4, n) * 12_000 + 4_000
        base = [rng.standard_t(4, n) * 12_000 + 4_000 for _ in range(5)]
        for metric in (MEAN_RETURN_BPS, SHARPE_PER_CALL):
            compare(new, base, metric)
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                compare(new, base, metric)
                times.append((time.perf_counter() - t0) * 1000)
            print(f"{n:>6} {metric.name:<16} {statistics.median(times):>9.1f}")


if __name__ == "__main__":
    main()
