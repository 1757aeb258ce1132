"""Regression detection for runs (issue #15, the library only): is a new run worse than its
baseline runs, beyond their noise?

``stats`` holds the statistics (studentized circular block bootstrap intervals for differences
of means and of Sharpe ratios after Ledoit & Wolf 2008; the probabilistic and deflated Sharpe
ratios of Bailey & López de Prado 2012 and 2014), ``bootstrap`` their resampling engine,
``verdict`` the types and the decision rule, ``detect`` the comparison (:func:`compare` →
:class:`Verdict`) and ``series`` the per-call return series read from a backtest run's Parquet
tables. Pure functions over arrays, no I/O except
``series``; docs/regressions.md says which method for which metric and why.
"""

from typing import TYPE_CHECKING

from ..lazy import lazy_attributes

if TYPE_CHECKING:
    from .detect import (
        MEAN_RETURN_BPS,
        SHARPE_PER_CALL,
        WIN_RATE,
        Metric,
        Trials,
        Verdict,
        compare,
        decide,
    )
    from .series import policy_series, run_series, trial_sharpes

#: The public names, imported on first use (NumPy and PyArrow load only when a check runs:
#: the config imports :mod:`.settings`, and every CLI call reads the config).
__getattr__ = lazy_attributes(
    __name__,
    {
        "detect": ("MEAN_RETURN_BPS", "SHARPE_PER_CALL", "WIN_RATE", "Metric", "Trials")
        + ("Verdict", "compare", "decide"),
        "series": ("policy_series", "run_series", "trial_sharpes"),
    },
)

__all__ = [
    "MEAN_RETURN_BPS",
    "SHARPE_PER_CALL",
    "WIN_RATE",
    "Metric",
    "Trials",
    "Verdict",
    "compare",
    "decide",
    "policy_series",
    "run_series",
    "trial_sharpes",
]
