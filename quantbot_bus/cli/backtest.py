"""``backtest run``: write one synthetic backtest run (:mod:`quantbot_bus.backtest`) under the
artifacts root and print its id and directory."""

from __future__ import annotations

import datetime as dt
import sys
from typing import Any

import click

from ..config import Config
from .options import config_options


def _date_option(ctx: click.Context, param: click.Parameter, value: str) -> Any:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date; use YYYY-MM-DD") from None


@click.group()
def backtest() -> None:
    """Run the synthetic backtest producers (deterministic memecoin market)."""


@backtest.command("run")
@click.option(
    "--strategy",
    type=click.Choice(["path-only", "policy", "optimize"]),
    required=True,
    help="path-only: call path metrics (polars); policy: stop/take-profit/trailing grid "
    "(pyarrow); optimize: best policy per caller under constraints (DuckDB COPY).",
)
@click.option(
    "--interval",
    type=click.Choice(["1m", "5m"]),
    default="1m",
    show_default=True,
    help="Candle interval.",
)
@click.option(
    "--from",
    "date_from",
    default="2026-01-02",
    metavar="DATE",
    show_default=True,
    callback=_date_option,
    help="First day of calls (YYYY-MM-DD, UTC).",
)
@click.option(
    "--to",
    "date_to",
    default="2026-01-08",
    metavar="DATE",
    show_default=True,
    callback=_date_option,
    help="Last day of calls, inclusive (YYYY-MM-DD, UTC).",
)
@click.option(
    "--calls",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="Number of calls to simulate.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Market seed.")
@config_options
def backtest_run(
    config: Config,
    strategy: str,
    interval: str,
    date_from: Any,
    date_to: Any,
    calls: int,
    seed: int,
) -> None:
    """Write one backtest run to ROOT/backtest/RUN_ID/ and print where it went.

    Output: one line, the run id and the run directory separated by a tab:

    \b
        RUN_ID<TAB>RUN_DIR
        backtest-20260108T120000-1f2e3d4c<TAB>/srv/bus/artifacts/backtest/backtest-20260108T120000-1f2e3d4c

    The same --seed and inputs give the same tables (apart from run_id and created_at).
    A progress bar is drawn on stderr when it is a terminal.
    """
    from ..backtest.runner import run_backtest
    from ..log import configure_logging

    configure_logging(config.log_level, config.log_format)  # logs to stderr, never stdout
    if date_from > date_to:
        raise click.BadParameter(
            f"--from {date_from} is after --to {date_to}", param_hint="'--from'"
        )
    inputs = (strategy, interval, date_from, date_to, calls, seed, config.root)
    if sys.stderr.isatty():
        with click.progressbar(length=calls, label=f"{strategy} backtest", file=sys.stderr) as bar:
            result = run_backtest(*inputs, on_progress=bar.update)
    else:
        result = run_backtest(*inputs)
    click.echo(f"{result.run_id}\t{result.run_dir}")
