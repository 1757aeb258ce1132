"""Backtests over a deterministic synthetic memecoin market, written as bus runs.

``market`` makes the calls and candle paths, ``pathonly`` and ``policy`` hold the metric
definitions as small pure functions, ``optimize`` searches the policy grid in DuckDB and
``runner.run_backtest`` ties one strategy to a :class:`~quantbot_bus.writer.RunWriter`.
"""

from __future__ import annotations

from .runner import INTERVALS, STRATEGIES, RunResult, run_backtest

__all__ = ["INTERVALS", "STRATEGIES", "RunResult", "run_backtest"]
