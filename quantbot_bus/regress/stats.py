"""The statistics a regression check needs, as pure functions over return series.

A *series* is one run's per-observation returns in time order (a 1-D NumPy array, a list of
floats, or a pyarrow Array/ChunkedArray). Where a sample may span several runs (the baseline),
pass a list of series: each is resampled on its own and blocks never cross from one run into the
next. Sharpe ratios here are per observation (``mean / std`` with the population std, no
risk-free rate, not annualized), the unit the formulas below are stated in.

(a) :func:`mean_difference_interval` and (b) :func:`sharpe_difference_interval`: a studentized
circular block bootstrap confidence interval for ``statistic(new) − statistic(baseline)``
(Ledoit & Wolf 2008, "Robust performance hypothesis testing with the Sharpe ratio", Journal of
Empirical Finance 15(5): HAC standard error by the delta method, symmetric studentized
bootstrap interval), with the Politis & White (2004) block length; details in
:mod:`quantbot_bus.regress.bootstrap`. ``paired=True`` is Ledoit & Wolf's original setting
(two strategies over the same periods, resampled jointly); the default treats the two samples as
independent, which is what runs over different seeds or data are.

(c) :func:`probabilistic_sharpe_ratio`: ``PSR(SR*) = Φ((SR̂ − SR*)·√(n−1) /
√(1 − γ̂₃·SR̂ + (γ̂₄ − 1)/4·SR̂²))``, the probability that the true Sharpe ratio exceeds ``SR*``
given the sample's skewness ``γ̂₃`` and (non-excess) kurtosis ``γ̂₄`` (Bailey & López de Prado
2012, "The Sharpe ratio efficient frontier", Journal of Risk 15(2)).

(d) :func:`deflated_sharpe_ratio`: ``DSR = PSR(SR₀*)`` with ``SR₀* = √V·((1−γ)Φ⁻¹(1 − 1/N) +
γΦ⁻¹(1 − 1/(N·e)))``, the expected maximum Sharpe ratio of ``N`` trials whose Sharpe ratios have
variance ``V`` when none has any skill (γ the Euler–Mascheroni constant; Bailey & López de Prado
2014, "The deflated Sharpe ratio: correcting for selection bias, backtest overfitting and
non-normality", Journal of Portfolio Management 40(5)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import pyarrow as pa

from . import bootstrap as bs
from .bootstrap import Array, optimal_block_length

__all__ = [
    "Interval",
    "SampleMoments",
    "as_series",
    "deflated_sharpe_ratio",
    "expected_max_sharpe",
    "mean_difference_interval",
    "moments",
    "optimal_block_length",
    "probabilistic_sharpe_ratio",
    "psr_from_moments",
    "run_estimate",
    "sharpe_difference_interval",
    "sharpe_standard_error",
    "trials_variance",
]

EULER_GAMMA = 0.5772156649015329
_NORMAL = NormalDist()


def as_series(values: Any) -> Array:
    """One series as a float64 array; raises ValueError on nulls, NaN or infinities."""
    if isinstance(values, pa.ChunkedArray | pa.Array):
        values = values.to_numpy(zero_copy_only=False)
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"a series must be one-dimensional, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("a series holds nulls, NaN or infinite values")
    return x


def _segments(values: Any) -> list[Array]:
    """A sample: one series, or a list/tuple of series (one per run)."""
    if isinstance(values, list | tuple) and values and np.ndim(values[0]) != 0:
        return [as_series(v) for v in values]
    return [as_series(values)]


@dataclass(frozen=True)
class Interval:
    """A confidence interval for ``new − baseline`` of a statistic.

    ``estimate`` is the point difference, ``se`` its HAC standard error (plus any
    ``extra_variance``), ``low``/``high`` the
    symmetric studentized bootstrap interval ``estimate ± t_quantile·se`` at ``confidence``;
    ``p_value`` the two-sided bootstrap p-value of "no difference"
    (``(1 + #{|t*| ≥ |estimate|/se}) / (n_boot + 1)``); ``block_lengths`` the block length used
    for each run (new first)."""

    estimate: float
    low: float
    high: float
    se: float
    t_quantile: float
    p_value: float
    confidence: float
    n_boot: int
    block_lengths: tuple[int, ...]


def _interval(
    g: bs.Smooth,
    new: Any,
    baseline: Any,
    *,
    paired: bool,
    confidence: float,
    n_boot: int,
    seed: int,
    block_length: int | None,
    extra_variance: float,
) -> Interval:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_boot < 99:
        raise ValueError(f"n_boot must be >= 99, got {n_boot}")
    if block_length is not None and block_length < 1:
        raise ValueError(f"block_length must be >= 1, got {block_length}")
    if not extra_variance >= 0:
        raise ValueError(f"extra_variance must be >= 0, got {extra_variance}")
    a, b = _segments(new), _segments(baseline)
    if paired:
        if len(a) != 1 or len(b) != 1 or len(a[0]) != len(b[0]):
            raise ValueError("paired=True needs two single series of the same length")
        cols = np.concatenate([bs.moment_columns(a[0], g), bs.moment_columns(b[0], g)], axis=1)
        sides = [bs.Side((cols,), bs.paired_difference(g))]
    else:
        sides = [
            bs.Side(tuple(bs.moment_columns(s, g) for s in a), g, 1.0),
            bs.Side(tuple(bs.moment_columns(s, g) for s in b), g, -1.0),
        ]
    for seg in (s for side in sides for s in side.segments):
        if len(seg) < 2:
            raise ValueError("every series needs at least 2 observations")
    boot = bs.studentized(
        sides, n_boot=n_boot, rng=np.random.default_rng(seed), block_length=block_length
    )
    if not (boot.se > 0 and math.isfinite(boot.estimate)):
        raise ValueError("the series have no variation: the difference has no standard error")
    se = math.sqrt(boot.se**2 + extra_variance)
    ordered = np.sort(boot.abs_t)
    rank = min(len(ordered), math.ceil((n_boot + 1) * confidence)) - 1
    q = float(ordered[rank])
    p = (1 + int(np.sum(boot.abs_t >= abs(boot.estimate) / se))) / (n_boot + 1)
    return Interval(
        estimate=boot.estimate,
        low=boot.estimate - q * se,
        high=boot.estimate + q * se,
        se=se,
        t_quantile=q,
        p_value=p,
        confidence=confidence,
        n_boot=n_boot,
        block_lengths=boot.blocks,
    )


def mean_difference_interval(
    new: Any,
    baseline: Any,
    *,
    paired: bool = False,
    confidence: float = 0.95,
    n_boot: int = 999,
    seed: int = 0,
    block_length: int | None = None,
    extra_variance: float = 0.0,
) -> Interval:
    """(a) Studentized circular block bootstrap interval for ``mean(new) − mean(baseline)``
    (a list of series is pooled: the mean of all its observations). ``seed`` makes it
    reproducible; ``block_length`` overrides the automatic choice; ``extra_variance`` is added
    to the squared standard error (noise the resampling cannot see, such as the variance between
    runs; the studentized quantile is kept). Raises ValueError on
    non-finite values, a series shorter than 2 or no variation at all."""
    return _interval(
        bs.MEAN,
        new,
        baseline,
        paired=paired,
        confidence=confidence,
        n_boot=n_boot,
        seed=seed,
        block_length=block_length,
        extra_variance=extra_variance,
    )


def sharpe_difference_interval(
    new: Any,
    baseline: Any,
    *,
    paired: bool = False,
    confidence: float = 0.95,
    n_boot: int = 999,
    seed: int = 0,
    block_length: int | None = None,
    extra_variance: float = 0.0,
) -> Interval:
    """(b) Ledoit & Wolf (2008) interval for ``SR(new) − SR(baseline)``: delta-method HAC
    standard error of the Sharpe ratios from the means of ``(x, x²)``, studentized circular
    block bootstrap. Same arguments and errors as :func:`mean_difference_interval`."""
    return _interval(
        bs.SHARPE,
        new,
        baseline,
        paired=paired,
        confidence=confidence,
        n_boot=n_boot,
        seed=seed,
        block_length=block_length,
        extra_variance=extra_variance,
    )


def run_estimate(values: Any, statistic: str) -> tuple[float, float]:
    """One run's ``(statistic, HAC variance of it)`` for ``statistic`` "mean" or "sharpe",
    with its automatic block length: what a between-run comparison of runs needs."""
    g = {"mean": bs.MEAN, "sharpe": bs.SHARPE}[statistic]
    side = bs.Side((bs.moment_columns(as_series(values), g),), g)
    return bs.side_estimate(side, bs.side_blocks(side))


@dataclass(frozen=True)
class SampleMoments:
    """``n``, mean, population std, Sharpe ratio, skewness and non-excess kurtosis."""

    n: int
    mean: float
    std: float
    sharpe: float
    skew: float
    kurtosis: float


def moments(values: Any) -> SampleMoments:
    """The sample moments of a series (raises ValueError when it is constant or shorter
    than 2)."""
    x = as_series(values)
    if len(x) < 2:
        raise ValueError("moments need at least 2 observations")
    mean = float(x.mean())
    std = float(x.std())
    if not std > 0:
        raise ValueError("the series is constant: no Sharpe ratio")
    z = (x - mean) / std
    return SampleMoments(len(x), mean, std, mean / std, float(np.mean(z**3)), float(np.mean(z**4)))


def sharpe_standard_error(sharpe: float, n: int, skew: float = 0.0, kurtosis: float = 3.0) -> float:
    """``√((1 − γ₃·SR + (γ₄ − 1)/4·SR²) / (n − 1))``: the standard error of an estimated
    Sharpe ratio under non-normal returns (Bailey & López de Prado 2012, after Mertens 2002)."""
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    # ≥ (1 − γ₃·SR/2)² ≥ 0 because γ₄ ≥ γ₃² + 1; the floor only guards rounding
    var = max(1.0 - skew * sharpe + (kurtosis - 1.0) / 4.0 * sharpe**2, 1e-12)
    return math.sqrt(var / (n - 1))


def psr_from_moments(
    sharpe: float, benchmark: float, n: int, skew: float = 0.0, kurtosis: float = 3.0
) -> float:
    """(c) ``PSR(SR*)`` from the estimated Sharpe ratio, its sample size and higher moments."""
    se = sharpe_standard_error(sharpe, n, skew, kurtosis)
    return _NORMAL.cdf((sharpe - benchmark) / se)


def probabilistic_sharpe_ratio(values: Any, benchmark: float = 0.0) -> float:
    """(c) Probability that the series' true Sharpe ratio exceeds ``benchmark`` (per
    observation), corrected for its skewness and kurtosis (Bailey & López de Prado 2012)."""
    m = moments(values)
    return psr_from_moments(m.sharpe, benchmark, m.n, m.skew, m.kurtosis)


def expected_max_sharpe(n_trials: int, trials_sharpe_variance: float) -> float:
    """``SR₀*``: the expected maximum estimated Sharpe ratio among ``n_trials`` unskilled trials
    whose Sharpe ratios have variance ``trials_sharpe_variance`` (0 for a single trial)."""
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    if not trials_sharpe_variance >= 0:
        raise ValueError(f"trials_sharpe_variance must be >= 0, got {trials_sharpe_variance}")
    if n_trials == 1:
        return 0.0
    z = (1.0 - EULER_GAMMA) * _NORMAL.inv_cdf(1.0 - 1.0 / n_trials) + EULER_GAMMA * (
        _NORMAL.inv_cdf(1.0 - 1.0 / (n_trials * math.e))
    )
    return math.sqrt(trials_sharpe_variance) * z


def deflated_sharpe_ratio(values: Any, n_trials: int, trials_sharpe_variance: float) -> float:
    """(d) ``DSR = PSR(SR₀*)``: the probability that the series' true Sharpe ratio is positive,
    given that it is the best of ``n_trials`` trials whose Sharpe ratios have variance
    ``trials_sharpe_variance`` (Bailey & López de Prado 2014)."""
    return probabilistic_sharpe_ratio(values, expected_max_sharpe(n_trials, trials_sharpe_variance))


def trials_variance(sharpes: Sequence[float]) -> float:
    """The sample variance (ddof 1) of the trials' Sharpe ratios, for :func:`expected_max_sharpe`."""
    if len(sharpes) < 2:
        raise ValueError("the variance of trials needs at least 2 Sharpe ratios")
    return float(np.var(np.asarray(sharpes, dtype=np.float64), ddof=1))
