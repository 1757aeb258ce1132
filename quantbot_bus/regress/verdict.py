"""What a regression check decides and returns: :class:`Metric`, :class:`Trials`, :class:`Verdict`
and the decision rule :func:`decide` (the statistics are in :mod:`quantbot_bus.regress.stats`,
the comparison in :mod:`quantbot_bus.regress.detect`).

The decision rule (the same for every method). Let ``d = new − baseline`` for the metric and
``[low, high]`` its confidence interval at ``confidence`` (0.95 by default). Measured in the
metric's better direction (``d`` for higher-is-better metrics, ``−d`` for lower-is-better ones):

- **regression** — the whole interval is worse than ``−threshold``: the best the data allow is
  still a loss of more than ``threshold``;
- **improvement** — the whole interval is better than ``+threshold``;
- **no change** — anything else: no change larger than ``threshold`` is shown (the reason says
  when the interval is too wide to rule one out);
- **insufficient data** — fewer than ``min_baseline_runs`` baseline runs with at least
  ``min_obs`` observations each, a new run with fewer than ``min_obs``, or no variation to
  measure noise by. Never reported as "no change".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

Direction = Literal["higher", "lower"]
Statistic = Literal["mean", "sharpe"]
Outcome = Literal["regression", "improvement", "no change", "insufficient data"]


@dataclass(frozen=True)
class Metric:
    """What to compare: ``statistic`` ("mean" or "sharpe", per observation) of the per-call
    ``column`` (of ``backtest_call_results``, see :mod:`quantbot_bus.regress.series`);
    ``direction``: which way is better; ``threshold``: the smallest change that matters, in the
    metric's units (bps for a mean of ``return_bps``, Sharpe units for a Sharpe ratio)."""

    name: str
    direction: Direction
    threshold: float
    statistic: Statistic = "mean"
    column: str = "return_bps"

    def __post_init__(self) -> None:
        if self.direction not in ("higher", "lower"):
            raise ValueError(f"direction must be 'higher' or 'lower', got {self.direction!r}")
        if not (math.isfinite(self.threshold) and self.threshold >= 0):
            raise ValueError(f"threshold must be a finite number >= 0, got {self.threshold!r}")
        if self.statistic not in ("mean", "sharpe"):
            raise ValueError(f"statistic must be 'mean' or 'sharpe', got {self.statistic!r}")


MEAN_RETURN_BPS = Metric("mean_return_bps", "higher", 500.0)
"""The mean per-call return: a loss of more than 500 bps (5 % of the position) per call
matters."""

SHARPE_PER_CALL = Metric("sharpe_per_call", "higher", 0.05, statistic="sharpe")
"""The per-call Sharpe ratio of ``return_bps``: a drop of more than 0.05 matters (about what
500 bps of mean is at the policy backtest's ~12,000 bps per-call standard deviation)."""

WIN_RATE = Metric("win_rate", "higher", 0.05, column="win")
"""The share of winning calls: a drop of more than 5 points matters."""


@dataclass(frozen=True)
class Trials:
    """The sweep the new run won: ``count`` trials (configurations tried) whose per-observation
    Sharpe ratios have variance ``sharpe_variance`` (:func:`stats.trials_variance`)."""

    count: int
    sharpe_variance: float


@dataclass(frozen=True)
class Verdict:
    """The outcome of one metric's comparison; values are in the metric's units and
    ``change = new_value − baseline_value`` (its interval ``low``–``high``). ``p_value``: the
    bootstrap methods' two-sided p-value of "no change"; ``probability``: the PSR/DSR methods'
    probability that the new run's true Sharpe ratio beats the baseline's. Values that could
    not be computed are None."""

    metric: str
    verdict: Outcome
    method: str
    baseline_value: float | None
    new_value: float | None
    change: float | None
    low: float | None
    high: float | None
    p_value: float | None
    probability: float | None
    reason: str
    direction: Direction
    threshold: float
    confidence: float
    n_new: int
    n_baseline: int
    baseline_runs: int
    between_runs_sd: float | None = None


def decide(low: float, high: float, direction: Direction, threshold: float) -> Outcome:
    """The decision rule of the module docstring on the interval of ``new − baseline``."""
    worst, best = (low, high) if direction == "higher" else (-high, -low)
    if best < -threshold:
        return "regression"
    if worst > threshold:
        return "improvement"
    return "no change"


def _fmt(x: float) -> str:
    return f"{x:+,.4g}" if abs(x) < 1e4 else f"{x:+,.0f}"


def reason_text(
    outcome: Outcome, metric: Metric, new: float, base: float, lo: float, hi: float, conf: float
) -> str:
    """The sentence a person reads: values, change, interval, the verdict and what to do."""
    thr = metric.threshold
    worse = "below" if metric.direction == "higher" else "above"
    better = "above" if metric.direction == "higher" else "below"
    head = (
        f"{metric.name}: {new:,.4g} vs baseline {base:,.4g}, change {_fmt(new - base)}, "
        f"{conf:.0%} interval [{_fmt(lo)}, {_fmt(hi)}]"
    )
    if outcome == "regression":
        return (
            f"{head} lies wholly {worse} {_fmt(-thr if worse == 'below' else thr)} (the "
            "threshold): a regression. Compare this run's commit and inputs with the baseline "
            "runs'."
        )
    if outcome == "improvement":
        return f"{head} lies wholly {better} the threshold ±{thr:,.4g}: an improvement."
    worst = lo if metric.direction == "higher" else -hi
    text = f"{head}: no change larger than the threshold ±{thr:,.4g} is shown."
    if worst < -thr:
        text += (
            f" A loss of up to {-worst:,.4g} is not ruled out: more calls per run or more "
            "baseline runs narrow the interval."
        )
    return text


def insufficient(metric: Metric, method: str, why: str, conf: float, **kw: Any) -> Verdict:
    """An "insufficient data" verdict saying ``why``; ``kw`` the fields that are known."""
    fields: dict[str, Any] = {
        "baseline_value": None,
        "new_value": None,
        "change": None,
        "low": None,
        "high": None,
        "p_value": None,
        "probability": None,
    }
    fields.update(kw)
    return Verdict(
        metric=metric.name,
        verdict="insufficient data",
        method=method,
        reason=f"{metric.name}: insufficient data: {why}",
        direction=metric.direction,
        threshold=metric.threshold,
        confidence=conf,
        **fields,
    )
