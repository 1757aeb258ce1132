"""Compare a new run with its baseline runs on one metric: :func:`compare` → :class:`Verdict`.

The verdict follows the decision rule of :mod:`quantbot_bus.regress.verdict`: a **regression**
only when the whole confidence interval of ``new − baseline`` is worse than ``−threshold``; an
**improvement** when it is wholly better than ``+threshold``; **no change** otherwise; and
**insufficient data** (never "no change") with fewer than ``min_baseline_runs`` usable baseline
runs or ``min_obs`` observations.

The methods:

- ``bootstrap-mean`` — :func:`~quantbot_bus.regress.stats.mean_difference_interval`: new run
  against the pooled baseline runs, studentized circular block bootstrap (Ledoit & Wolf 2008).
- ``bootstrap-sharpe`` — :func:`~quantbot_bus.regress.stats.sharpe_difference_interval`, the
  Ledoit & Wolf (2008) Sharpe ratio difference.
- ``psr`` — the new run's Sharpe ratio against the baseline's as a fixed benchmark: interval
  ``SR̂ ± z·se`` with the non-normal standard error of Bailey & López de Prado (2012);
  ``probability`` = PSR(baseline Sharpe). Ignores the baseline's own noise: for a long baseline.
- ``dsr`` — as ``psr`` for a run that is the winner of a sweep of ``Trials.count`` trials whose
  baseline is not: the new Sharpe ratio is first lowered by the expected maximum of that many
  unskilled trials (Bailey & López de Prado 2014); ``probability`` = PSR(baseline + SR₀*).

For the bootstrap methods the baseline runs may disagree with each other by more than their own
noise (different seeds draw different markets). That between-run variance ``τ²`` is estimated
from the runs' statistics (DerSimonian & Laird 1986, "Meta-analysis in clinical trials",
Controlled Clinical Trials 7(3)) and, when positive, added to the standard error as
``τ²·(1 + Σ w_j²)`` (the new run's own draw plus the pooled baseline's, ``w_j`` the runs'
shares of the observations) before the bootstrap quantile is applied.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator, Sequence
from statistics import NormalDist
from typing import Any

import numpy as np

from . import stats
from .verdict import (
    MEAN_RETURN_BPS,
    SHARPE_PER_CALL,
    WIN_RATE,
    Direction,
    Metric,
    Outcome,
    Statistic,
    Trials,
    Verdict,
    decide,
    insufficient,
    reason_text,
)

__all__ = [
    "MEAN_RETURN_BPS",
    "METHODS",
    "SHARPE_PER_CALL",
    "WIN_RATE",
    "Direction",
    "Metric",
    "Outcome",
    "Statistic",
    "Trials",
    "Verdict",
    "between_runs_variance",
    "compare",
    "decide",
]

METHODS = ("auto", "bootstrap-mean", "bootstrap-sharpe", "psr", "dsr")


def between_runs_variance(estimates: Sequence[tuple[float, float]]) -> float:
    """DerSimonian–Laird ``τ²`` of runs' ``(statistic, variance)`` pairs (0 when they agree
    within their noise, or fewer than 2 runs)."""
    est = [(t, v) for t, v in estimates if v > 0 and math.isfinite(t)]
    if len(est) < 2:
        return 0.0
    w = np.array([1.0 / v for _, v in est])
    t = np.array([t for t, _ in est])
    q = float(np.sum(w * (t - np.sum(w * t) / np.sum(w)) ** 2))
    denom = float(np.sum(w) - np.sum(w**2) / np.sum(w))
    return max(0.0, (q - (len(est) - 1)) / denom) if denom > 0 else 0.0


def _statistic(x: np.ndarray, statistic: Statistic) -> float:
    if statistic == "mean":
        return float(x.mean())
    return stats.moments(x).sharpe


def compare(
    new_returns: Any,
    baseline_returns_list: Sequence[Any],
    metric: Metric,
    *,
    method: str = "auto",
    trials: Trials | None = None,
    confidence: float = 0.95,
    min_baseline_runs: int = 3,
    min_obs: int = 30,
    n_boot: int = 999,
    seed: int = 0,
) -> Verdict:
    """Compare a new run's per-observation series (e.g. per-call returns in time order) with
    those of its baseline runs (one series per run) on ``metric``.

    ``method`` "auto": "bootstrap-mean" for a mean, "bootstrap-sharpe" for a Sharpe ratio, or
    "dsr" when ``trials`` is given (pass it only when the new run won a sweep and its baseline
    runs did not: a baseline of winners of the same sweep carries the same selection bias).
    Reproducible for a given ``seed``. Raises ValueError for a bad argument or non-finite
    values; too little data is a verdict, not an error. numpy's BLAS uses one thread meanwhile
    (:func:`one_blas_thread`)."""
    with one_blas_thread():
        return _compare(
            new_returns,
            baseline_returns_list,
            metric,
            method=method,
            trials=trials,
            confidence=confidence,
            min_baseline_runs=min_baseline_runs,
            min_obs=min_obs,
            n_boot=n_boot,
            seed=seed,
        )


_BLAS: Any = None
_BLAS_LOCK = threading.Lock()
_blas_users = 0
_blas_limit: Any = None


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """A context in which numpy's BLAS (OpenBLAS) runs on one thread (threadpoolctl). The
    bootstrap's matrix products are small: on a busy 2-core machine two BLAS threads made a
    Sharpe check 2–8× slower than one (docs/regressions.md, "Cost"). Contexts of several threads
    may overlap: the first one in sets the limit, the last one out restores the setting."""
    global _BLAS, _blas_users, _blas_limit
    with _BLAS_LOCK:
        if _BLAS is None:  # made once numpy is loaded: it lists the BLAS libraries loaded then
            from threadpoolctl import ThreadpoolController

            _BLAS = ThreadpoolController()
        if _blas_users == 0:
            _blas_limit = _BLAS.limit(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _blas_users -= 1
            if _blas_users == 0:
                _blas_limit.restore_original_limits()
                _blas_limit = None


def _compare(
    new_returns: Any,
    baseline_returns_list: Sequence[Any],
    metric: Metric,
    *,
    method: str,
    trials: Trials | None,
    confidence: float,
    min_baseline_runs: int,
    min_obs: int,
    n_boot: int,
    seed: int,
) -> Verdict:
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "auto":
        method = f"bootstrap-{metric.statistic}" if trials is None else "dsr"
    if method in ("psr", "dsr", "bootstrap-sharpe") and metric.statistic != "sharpe":
        raise ValueError(f"method {method!r} compares Sharpe ratios; {metric.name} is a mean")
    if method == "bootstrap-mean" and metric.statistic != "mean":
        raise ValueError(f"method 'bootstrap-mean' compares means; {metric.name} is a Sharpe")
    if method == "dsr" and trials is None:
        raise ValueError("method 'dsr' needs trials=Trials(count, sharpe_variance)")
    if min_baseline_runs < 1 or min_obs < 2:
        raise ValueError("min_baseline_runs must be >= 1 and min_obs >= 2")
    new = stats.as_series(new_returns)
    runs = [stats.as_series(b) for b in baseline_returns_list]
    sharpe = metric.statistic == "sharpe"  # a Sharpe ratio needs variation in each run
    usable = [r for r in runs if len(r) >= min_obs and (not sharpe or np.ptp(r) > 0)]
    counts = {
        "n_new": len(new),
        "n_baseline": sum(len(r) for r in usable),
        "baseline_runs": len(usable),
    }
    dropped = len(runs) - len(usable)
    left_out = (
        f"{dropped} baseline run(s) with fewer than {min_obs} observations"
        + (" or no variation" if sharpe else "")
        + " left out"
    )
    if len(new) < min_obs:
        why = f"the new run has {len(new)} observations; at least {min_obs} are needed"
        return insufficient(metric, method, why, confidence, **counts)
    if len(usable) < min_baseline_runs:
        why = (
            f"{len(usable)} usable baseline run(s) ({left_out}); at least {min_baseline_runs} "
            "are needed: run the same inputs on the reference branch"
        )
        return insufficient(metric, method, why, confidence, **counts)
    pooled = np.concatenate(usable)
    if not np.ptp(np.concatenate([new, pooled]) if not sharpe else new) > 0:
        why = "the series are constant: there is no noise to measure a change against"
        return insufficient(metric, method, why, confidence, **counts)
    base_value = _statistic(pooled, metric.statistic)
    new_value = _statistic(new, metric.statistic)
    p_value = probability = tau = None
    shift = 0.0  # dsr: the expected best Sharpe ratio of the trials
    if method.startswith("bootstrap"):
        tau2 = between_runs_variance([stats.run_estimate(r, metric.statistic) for r in usable])
        weights = np.array([len(r) for r in usable]) / len(pooled)
        interval = (
            stats.mean_difference_interval
            if metric.statistic == "mean"
            else stats.sharpe_difference_interval
        )(
            new,
            usable,
            confidence=confidence,
            n_boot=n_boot,
            seed=seed,
            extra_variance=tau2 * (1.0 + float(np.sum(weights**2))),
        )
        change, p_value = interval.estimate, interval.p_value
        lo, hi = interval.low, interval.high
        tau = math.sqrt(tau2)
    else:
        m = stats.moments(new)
        if method == "dsr":
            assert trials is not None
            shift = stats.expected_max_sharpe(trials.count, trials.sharpe_variance)
        se = stats.sharpe_standard_error(m.sharpe, m.n, m.skew, m.kurtosis)
        z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
        change = m.sharpe - shift - base_value
        lo, hi = change - z * se, change + z * se
        probability = stats.psr_from_moments(m.sharpe, base_value + shift, m.n, m.skew, m.kurtosis)
    outcome = decide(lo, hi, metric.direction, metric.threshold)
    reason = reason_text(outcome, metric, base_value + change, base_value, lo, hi, confidence)
    if trials is not None and method == "dsr":
        reason += f" (Sharpe deflated by {shift:.4g}, the expected best of {trials.count} trials)"
    if dropped:
        reason += f" ({left_out})"
    if tau:
        reason += f" (baseline runs differ beyond their noise: between-run sd {tau:,.4g} added)"
    return Verdict(
        metric=metric.name,
        verdict=outcome,
        method=method,
        baseline_value=base_value,
        new_value=new_value,
        change=change,
        low=lo,
        high=hi,
        p_value=p_value,
        probability=probability,
        reason=reason,
        direction=metric.direction,
        threshold=metric.threshold,
        confidence=confidence,
        between_runs_sd=tau,
        **counts,
    )
