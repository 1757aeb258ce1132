"""Regression checks run numpy's BLAS on one thread (threadpoolctl) and give the process's
setting back, also when checks of two threads overlap."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from quantbot_bus.regress import MEAN_RETURN_BPS, SHARPE_PER_CALL, Metric, compare, stats
from quantbot_bus.regress.detect import one_blas_thread


def blas_threads() -> list[int]:
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


@pytest.mark.parametrize("metric", [MEAN_RETURN_BPS, SHARPE_PER_CALL], ids=lambda m: m.name)
def test_a_check_runs_blas_on_one_thread_and_gives_the_others_back(
    metric: Metric, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two BLAS threads made the small products slower on a busy machine: a check runs on one,
    and the process's setting is back once it returns."""
    seen: list[list[int]] = []
    for name in ("mean_difference_interval", "sharpe_difference_interval"):
        real = getattr(stats, name)

        def spy(*a: Any, _real: Any = real, **k: Any) -> Any:
            seen.append(blas_threads())
            return _real(*a, **k)

        monkeypatch.setattr(stats, name, spy)
    rng = np.random.default_rng(3)
    with threadpool_limits(limits=2, user_api="blas"):
        if blas_threads() != [2]:  # OPENBLAS_NUM_THREADS=1 or an unseen BLAS: nothing to show
            pytest.skip(f"this numpy's BLAS threads cannot be set to 2: {blas_threads()}")
        compare(rng.normal(5, 100, 300), [rng.normal(5, 100, 300) for _ in range(4)], metric)
        assert seen == [[1]]
        assert blas_threads() == [2]


def test_overlapping_checks_keep_one_blas_thread_until_the_last_one_ends() -> None:
    """Two threads' checks overlap (the first to start ends first): the second still runs on
    one thread, and the setting comes back only when both are done."""
    with threadpool_limits(limits=2, user_api="blas"):
        if blas_threads() != [2]:
            pytest.skip(f"this numpy's BLAS threads cannot be set to 2: {blas_threads()}")
        first, second = one_blas_thread(), one_blas_thread()
        first.__enter__()
        second.__enter__()
        first.__exit__(None, None, None)
        assert blas_threads() == [1]
        second.__exit__(None, None, None)
        assert blas_threads() == [2]
