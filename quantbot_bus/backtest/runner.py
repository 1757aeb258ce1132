"""Run one backtest over the synthetic market and write it as a run directory.

``run_backtest(strategy, interval, date_from, date_to, calls, seed, root) -> RunResult`` is the
single entry point used by ``quantbot-bus backtest run`` and the scripts in ``producers/``.
``write_backtest`` runs a strategy over any stream of :class:`~.market.Call` and writes the run
(:mod:`.userdata` feeds it the user's own calls and candles). Each
strategy writes its tables with a different library on purpose, so the run contract is exercised
across writers:

=============  ================================================  ==============================
strategy       tables                                            written with
=============  ================================================  ==============================
path-only      backtest_call_path_metrics                        polars
policy         backtest_policy_results, backtest_call_results    pyarrow
optimize       summary                                           DuckDB ``COPY ... TO``
               policy_frontier, v1_baseline_frontier             pyarrow (``backtest.frontier``)
=============  ================================================  ==============================

Runs have ``run_type`` ``backtest``; the strategy and every input are in ``params``. Given the same
inputs and seed, the tables are identical except for ``run_id`` and ``created_at``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from ..config import load_config
from ..errors import BusError, exit_code_for
from ..log import configure_logging
from ..writer import RunWriter
from . import frontier as fr
from . import optimize as opt
from . import pathonly
from . import policy as pol
from . import v1baseline as v1
from .market import DEFAULT_HORIZON_MINUTES, INTERVAL_MS, Call, generate_calls

STRATEGIES = ("path-only", "policy", "optimize")
INTERVALS = tuple(INTERVAL_MS)
RUN_TYPE = "backtest"
PRODUCER_PREFIX = "quantbot-bus.producers"  # + path_only | policy | optimize
MARKET = "synthetic-memecoin-v1"
DEFAULT_DATE_TO = dt.date(2026, 1, 8)
DEFAULT_DATE_FROM = DEFAULT_DATE_TO - dt.timedelta(days=6)  # seven days, fixed: deterministic
POSITION_USD = 1_000.0

Progress = Callable[[int], None]


@dataclass(frozen=True)
class RunResult:
    """A written run: ``run_dir`` where it was written, ``location`` where it is now (the same
    directory, or its ``s3://`` URI once uploaded from a staging directory)."""

    run_id: str
    run_dir: Path
    metrics: dict[str, float | int] = field(default_factory=dict)
    location: str = ""


def producer_version() -> str:
    try:
        return metadata.version("quantbot-bus")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


def _calls(
    seed: int,
    calls: int,
    interval: str,
    date_from: dt.date,
    date_to: dt.date,
    horizon_minutes: int,
    on_progress: Progress | None,
) -> Iterator[Call]:
    for call in generate_calls(
        seed, calls, interval, date_from, date_to, horizon_minutes=horizon_minutes
    ):
        yield call
        if on_progress is not None:
            on_progress(1)


def _trade_all(
    calls: Iterable[Call], policies: Sequence[pol.Policy], interval_ms: int
) -> list[pol.CallTrades]:
    return [
        pol.trade_call(
            c.call_id, c.caller_name, c.mint, c.chain, c.after_alert(), policies, interval_ms
        )
        for c in calls
    ]


def _trade_optimize(
    calls: Iterable[Call], policies: Sequence[pol.Policy], interval_ms: int
) -> tuple[list[pol.CallTrades], dict[v1.V1Params, list[v1.V1Trade]]]:
    """Each call under the policy grid and under the V1 grid, in one pass over the calls."""
    grid = v1.v1_grid()
    results: list[pol.CallTrades] = []
    baseline: dict[v1.V1Params, list[v1.V1Trade]] = {p: [] for p in grid}
    for c in calls:
        candles = c.after_alert()
        results.append(
            pol.trade_call(
                c.call_id, c.caller_name, c.mint, c.chain, candles, policies, interval_ms
            )
        )
        for p in grid:
            t = v1.simulate_v1_trade(
                p, candles, interval_ms, call_id=c.call_id, caller_name=c.caller_name
            )
            if t is not None:
                baseline[p].append(t)
    return results, baseline


def run_backtest(
    strategy: str,
    interval: str,
    date_from: dt.date,
    date_to: dt.date,
    calls: int,
    seed: int,
    root: str | os.PathLike[str],
    *,
    run_id: str | None = None,
    on_progress: Progress | None = None,
    horizon_minutes: int = DEFAULT_HORIZON_MINUTES,
    constraints: opt.Constraints | None = None,
    layout: str = "v1",
) -> RunResult:
    """Run one backtest and write it under ``root/backtest/<run_id>/`` (``layout="seed"``:
    ``root/YYYY-MM/run_id=<uuid>/``, :mod:`quantbot_bus.writer_seed`).

    ``on_progress(n)`` is called as calls are processed (``calls`` in total).
    Raises ValueError for a bad strategy, interval, date range or call count, and
    :class:`~quantbot_bus.errors.ContractError` if the run directory already exists.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if interval not in INTERVAL_MS:
        raise ValueError(f"interval must be one of {', '.join(INTERVALS)}, got {interval!r}")
    if date_from > date_to:
        raise ValueError(f"date_from {date_from} is after date_to {date_to}")
    if calls < 1:
        raise ValueError(f"calls must be >= 1, got {calls}")
    if horizon_minutes < 1:
        raise ValueError(f"horizon_minutes must be >= 1, got {horizon_minutes}")
    params: dict[str, Any] = {
        "strategy": strategy,
        "interval": interval,
        "date_from": date_from.isoformat(),
        "date_to": date_to.isoformat(),
        "calls": calls,
        "seed": seed,
        "horizon_minutes": horizon_minutes,
        "market": MARKET,
    }
    stream = _calls(seed, calls, interval, date_from, date_to, horizon_minutes, on_progress)
    return write_backtest(
        strategy,
        interval,
        INTERVAL_MS[interval],
        stream,
        root,
        params=params,
        run_id=run_id,
        constraints=constraints,
        layout=layout,
    )


def write_backtest(
    strategy: str,
    interval: str,
    interval_ms: int,
    calls: Iterable[Call],
    root: str | os.PathLike[str],
    *,
    params: dict[str, Any],
    run_id: str | None = None,
    constraints: opt.Constraints | None = None,
    layout: str = "v1",
) -> RunResult:
    """Run ``strategy`` over ``calls`` (candles of ``interval``, ``interval_ms`` long) and write
    the run under ``root/backtest/<run_id>/`` with ``params`` plus the strategy's own parameters.

    The one writer behind :func:`run_backtest` (the synthetic market) and
    :func:`quantbot_bus.backtest.userdata.run_user_backtest` (calls and candles from a DuckDB file).
    ``calls`` is consumed once, lazily; every call has a candle opening at or after its alert.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    constraints = opt.Constraints() if constraints is None else constraints
    policies = pol.default_grid()
    params = dict(params)
    if strategy != "path-only":
        params["policy_grid"] = pol.GRID_DESCRIPTION
        params["policies"] = len(policies)
    if strategy == "policy":
        params["position_usd"] = POSITION_USD
    if strategy == "optimize":
        params["max_stop_out_rate"] = constraints.max_stop_out_rate
        params["min_trades"] = constraints.min_trades
        params["v1_grid"] = v1.GRID_DESCRIPTION

    writer = RunWriter(
        root,
        RUN_TYPE,
        run_id=run_id,
        producer=(f"{PRODUCER_PREFIX}.{strategy.replace('-', '_')}", producer_version()),
        params=params,
        layout=layout,
    )
    with writer as w:
        created_at = (w.started or w.created).replace(microsecond=0)
        if strategy == "path-only":
            df = pathonly.build_table(
                pathonly.call_row(c, interval, w.run_id, created_at) for c in calls
            )
            path_metrics = _seed_name(layout, "truth", "backtest_call_path_metrics")
            w.write_table(path_metrics, df)  # polars writes the Parquet
            w.set_metrics(**pathonly.summary_metrics(df))
        elif strategy == "policy":
            results = _trade_all(calls, policies, interval_ms)
            best = pol.best_policy_index(results, policies)
            w.write_table(
                _seed_name(layout, "policy", "backtest_policy_results"),
                pol.policy_results_table(results, policies, w.run_id, created_at),
            )
            call_results = pol.call_results_table(
                results, policies[best], best, w.run_id, created_at, POSITION_USD
            )
            w.write_table(_seed_name(layout, "policy", "backtest_call_results"), call_results)
            w.set_metrics(**_policy_metrics(results, policies, best, call_results))
        else:
            results, baseline = _trade_optimize(calls, policies, interval_ms)
            summary_path = w.path_for("summary")
            frontier, metrics = opt.optimize(
                opt.trades_table(results, policies),
                run_id=w.run_id,
                created_at=created_at,
                calls=len(results),
                constraints=constraints,
                summary_path=summary_path,
            )
            w.add_file("summary", summary_path)  # DuckDB wrote this file
            fr.write_policy_frontier(w, frontier)
            overall, per_caller = v1.baseline_rows(baseline, run_id=w.run_id, created_at=created_at)
            fr.write_v1_baseline_per_caller_frontiers(w, per_caller, overall=overall)
            metrics.update(v1.baseline_metrics(overall, per_caller))
            w.set_metrics(calls=len(results), **metrics)
    return RunResult(w.run_id, w.run_dir, dict(w.metrics), w.location)


def _seed_name(layout: str, folder: str, name: str) -> str:
    """A table's artifact name: in the seed layout inside ``folder`` (the others go to
    ``results/``, the seed writer's default)."""
    return f"{folder}/{name}" if layout == "seed" else name


def _policy_metrics(
    results: Sequence[pol.CallTrades],
    policies: Sequence[pol.Policy],
    best: int,
    call_results: Any,
) -> dict[str, float | int]:
    all_trades = [t for r in results for t in r.trades]
    best_trades = [r.trades[best] for r in results]
    n = len(best_trades)
    pnl = call_results.column("pnl_usd").to_pylist()
    return {
        "calls": len(results),
        "policies": len(policies),
        "trades": len(all_trades),
        "avg_return_bps": sum(t.realized_return_bps for t in all_trades) / len(all_trades),
        "stop_out_rate": sum(t.stop_out for t in all_trades) / len(all_trades),
        "best_policy_avg_return_bps": sum(t.realized_return_bps for t in best_trades) / n,
        "best_policy_win_rate": sum(t.realized_return_bps > 0 for t in best_trades) / n,
        "best_policy_stop_out_rate": sum(t.stop_out for t in best_trades) / n,
        "total_pnl_usd": sum(pnl),
    }


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date; use YYYY-MM-DD") from None


def producer_main(strategy: str, argv: Sequence[str] | None = None) -> int:
    """The command line of the scripts in ``producers/``: one run, prints ``run_id<TAB>run_dir``."""
    parser = argparse.ArgumentParser(
        description=f"Write one {strategy} backtest run over the synthetic memecoin market."
    )
    parser.add_argument(
        "--root",
        default=None,
        help="artifacts root (default: from the quantbot-bus config: $QUANTBOT_BUS_ROOT, "
        "./quantbot-bus.toml, else ./artifacts)",
    )
    parser.add_argument("--interval", choices=INTERVALS, default="1m")
    parser.add_argument("--from", dest="date_from", type=_date, default=DEFAULT_DATE_FROM)
    parser.add_argument("--to", dest="date_to", type=_date, default=DEFAULT_DATE_TO)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--layout",
        choices=("v1", "seed"),
        default="v1",
        help="v1: ROOT/backtest/RUN_ID/ with metadata.json; seed: ROOT/YYYY-MM/run_id=UUID/ "
        "with run.json and _SUCCESS",
    )
    args = parser.parse_args(argv)
    if args.date_from > args.date_to:
        parser.error(f"--from {args.date_from} is after --to {args.date_to}")
    if args.calls < 1:
        parser.error("--calls must be >= 1")
    try:
        config = load_config(overrides={"root": args.root}, producer=True)
        configure_logging(config.log_level, config.log_format)  # stderr; stdout is the result
        result = run_backtest(
            strategy,
            args.interval,
            args.date_from,
            args.date_to,
            args.calls,
            args.seed,
            config.write_root,
            layout=args.layout,
        )
    except BusError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return exit_code_for(exc)
    print(f"{result.run_id}\t{result.location}")
    return 0
