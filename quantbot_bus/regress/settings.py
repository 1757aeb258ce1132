"""The ``[regressions]`` section of the config: which runs are compared, with what, how strictly.

.. code-block:: toml

    [regressions]
    enabled = true                 # check every new successful policy run
    reference_branch = "main"      # baseline runs come from this git branch
    baseline_runs = 5              # the most recent earlier matching runs, at most this many
    min_baseline_runs = 3          # fewer usable ones: "insufficient data"
    ignore_params = ["seed"]       # params that may differ between a run and its baseline
    metrics = ["mean_return_bps", "sharpe_per_call"]
    confidence = 0.95
    max_age_days = 30              # runs created longer ago are not checked (0: no limit)
    [regressions.thresholds]       # per metric, in its units (default: the metric's own)
    mean_return_bps = 500

A run's baseline: the most recent earlier (``created_at``, then ``run_id``) successful runs of
the same ``run_type`` whose ``params`` equal the run's once the ``ignore_params`` are left out,
made on ``reference_branch``; runs that record no git branch count as on it (a producer without
git has one line of history).

A run created more than ``max_age_days`` before it reaches the exports is not checked (it is
still a baseline for later runs): a catch-up of an old tree (``rebuild``, a first ``sync``) is
history, not news, and checks cost about 0.05-0.25 s of CPU a run (docs/regressions.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..config_keys import check_keys
from ..errors import ConfigError
from .verdict import MEAN_RETURN_BPS, SHARPE_PER_CALL, WIN_RATE, Metric

#: The metrics a config may name.
METRICS: dict[str, Metric] = {m.name: m for m in (MEAN_RETURN_BPS, SHARPE_PER_CALL, WIN_RATE)}


@dataclass(frozen=True)
class RegressionSettings:
    """The ``[regressions]`` section (module docstring)."""

    enabled: bool = True
    reference_branch: str = "main"
    baseline_runs: int = 5
    min_baseline_runs: int = 3
    ignore_params: tuple[str, ...] = ("seed",)
    metrics: tuple[str, ...] = ("mean_return_bps", "sharpe_per_call")
    confidence: float = 0.95
    max_age_days: int = 30
    thresholds: tuple[tuple[str, float], ...] = field(default_factory=tuple)

    def metric_list(self) -> list[Metric]:
        """The configured metrics, with their thresholds."""
        overrides = dict(self.thresholds)
        return [
            replace(METRICS[name], threshold=overrides[name])
            if name in overrides
            else METRICS[name]
            for name in self.metrics
        ]


def _where(key: str) -> str:
    return f"config field 'regressions.{key}'"


def _int(raw: Mapping[str, Any], key: str, default: int, low: int) -> int:
    value = raw.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"{_where(key)} must be an integer >= {low}, got {value!r}")
    return value


def _names(raw: Mapping[str, Any], key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = raw.get(key, list(default))
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{_where(key)} must be an array of names, got {value!r}")
    return tuple(value)


def parse_regression_settings(raw: Any, *, base: Path | None = None) -> RegressionSettings:
    """The settings from the TOML table ``raw`` (``None``: the defaults); ConfigError names the
    bad field. (``base``, the config file's directory, is unused: no paths here.)"""
    del base
    if raw is None:
        return RegressionSettings()
    if not isinstance(raw, Mapping):
        raise ConfigError("config field 'regressions' must be a table ([regressions])")
    check_keys(raw, RegressionSettings.__dataclass_fields__, "regressions")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{_where('enabled')} must be true or false, got {enabled!r}")
    branch = raw.get("reference_branch", "main")
    if not isinstance(branch, str) or not branch:
        raise ConfigError(f"{_where('reference_branch')} must be a branch name, got {branch!r}")
    baseline_runs = _int(raw, "baseline_runs", 5, 1)
    min_runs = _int(raw, "min_baseline_runs", 3, 1)
    if min_runs > baseline_runs:
        raise ConfigError(
            f"{_where('min_baseline_runs')} ({min_runs}) must not exceed "
            f"regressions.baseline_runs ({baseline_runs})"
        )
    metrics = _names(raw, "metrics", RegressionSettings.metrics)
    for name in metrics:
        if name not in METRICS:
            raise ConfigError(
                f"{_where('metrics')} names {name!r}; known metrics: {', '.join(METRICS)}"
            )
    confidence = raw.get("confidence", 0.95)
    if not isinstance(confidence, float) or not 0.5 <= confidence < 1:
        raise ConfigError(
            f"{_where('confidence')} must be a number in [0.5, 1), got {confidence!r}"
        )
    thresholds = raw.get("thresholds", {})
    if not isinstance(thresholds, Mapping):
        raise ConfigError(f"{_where('thresholds')} must be a table of metric = number")
    pairs = []
    for name, value in thresholds.items():
        if name not in METRICS:
            raise ConfigError(
                f"{_where('thresholds.' + name)} is not a metric; known: {', '.join(METRICS)}"
            )
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
            or value < 0
        ):
            raise ConfigError(
                f"{_where('thresholds.' + name)} must be a number >= 0, got {value!r}"
            )
        pairs.append((name, float(value)))
    return RegressionSettings(
        enabled=enabled,
        reference_branch=branch,
        baseline_runs=baseline_runs,
        min_baseline_runs=min_runs,
        ignore_params=_names(raw, "ignore_params", RegressionSettings.ignore_params),
        metrics=metrics,
        confidence=confidence,
        max_age_days=_int(raw, "max_age_days", 30, 0),
        thresholds=tuple(sorted(pairs)),
    )
