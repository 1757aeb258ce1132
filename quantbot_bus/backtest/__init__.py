"""Backtests over a deterministic synthetic memecoin market, written as bus runs.

``market`` makes the calls and candle paths, ``pathonly`` and ``policy`` hold the metric
definitions as small pure functions, ``optimize`` searches the policy grid in DuckDB,
``v1baseline`` trades the old system's V1 grid with a capital simulation, ``frontier`` writes
the frontier artifacts, ``runner.run_backtest`` ties one strategy to a
:class:`~quantbot_bus.writer.RunWriter`, and ``summaries`` registers the backtest summaries with
the exports (a plug-in; with ``leaderboard``, ``policy_summaries``, ``frontier_summaries`` and
``regression_summary``, reading the tables of either layout through ``sources``). Import the
submodule you need: importing this package loads nothing (the runner pulls in polars).
"""
