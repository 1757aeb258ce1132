"""``backtest run``: write one backtest run (:mod:`quantbot_bus.backtest`: the synthetic market, or
the user's own calls and candles with ``--calls-from-duckdb``) under the artifacts root and print
its id and directory."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Any

import click

from ..backtest.intervals import CANDLE_INTERVAL_MS, DEFAULT_HORIZON_MINUTES, SYNTHETIC_INTERVALS
from ..config import Config
from .options import config_options


def _date_option(ctx: click.Context, param: click.Parameter, value: str) -> Any:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date; use YYYY-MM-DD") from None


def _run_user_backtest(
    config: Config,
    strategy: str,
    interval: str,
    date_from: dt.date,
    date_to: dt.date,
    duckdb_file: Path | None,
    candles_table: str | None,
    candles_dir: Path | None,
    callers: tuple[str, ...],
    horizon_minutes: int,
    layout: str,
) -> None:
    """``backtest run --calls-from-duckdb``: check the options, run, print the run and a report."""
    from click.core import ParameterSource

    from ..backtest.userdata import REPORT_TOKENS, run_user_backtest

    ctx = click.get_current_context()

    def given(name: str) -> bool:
        return ctx.get_parameter_source(name) is not ParameterSource.DEFAULT

    if duckdb_file is None:
        option = "--candles" if candles_table else "--candles-dir" if candles_dir else "--caller"
        raise click.BadParameter(
            "applies only with --calls-from-duckdb FILE",
            param_hint=f"'{option}'",
        )
    for name, option in (("calls", "--calls"), ("seed", "--seed")):
        if given(name):
            raise click.BadParameter(
                "applies to the synthetic market only, not with --calls-from-duckdb",
                param_hint=f"'{option}'",
            )
    if (candles_table is None) == (candles_dir is None):
        raise click.BadParameter(
            "give exactly one of --candles TABLE and --candles-dir DIR",
            param_hint="'--calls-from-duckdb'",
        )
    first = date_from if given("date_from") else None
    last = date_to if given("date_to") else None
    if first is not None and last is not None and first > last:
        raise click.BadParameter(f"--from {first} is after --to {last}", param_hint="'--from'")
    result = run_user_backtest(
        strategy,
        interval,
        duckdb_file,
        config.write_root,
        candles_table=candles_table,
        candles_dir=candles_dir,
        date_from=first,
        date_to=last,
        callers=callers,
        horizon_minutes=horizon_minutes,
        layout=layout,
    )
    click.echo(
        f"read {result.calls_read} calls from {result.calls_source}; "
        f"{result.calls_with_candles} have {interval} candles in {result.candles_source}",
        err=True,
    )
    if result.tokens_without_candles:
        tokens = result.tokens_without_candles
        shown = ", ".join(tokens[:REPORT_TOKENS]) + (", ..." if len(tokens) > REPORT_TOKENS else "")
        click.echo(
            f"calls without candles: {result.calls_without_candles} "
            f"({len(tokens)} tokens: {shown}); left out of the run",
            err=True,
        )
    click.echo(f"{result.run.run_id}\t{result.run.location}")


@click.group()
def backtest() -> None:
    """Run the synthetic backtest producers (deterministic memecoin market), or backtest your
    own calls and candles from a DuckDB file (--calls-from-duckdb)."""


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
    type=click.Choice(list(CANDLE_INTERVAL_MS)),
    default="1m",
    show_default=True,
    help=f"Candle interval. The synthetic market has {' and '.join(SYNTHETIC_INTERVALS)}; "
    "--calls-from-duckdb takes any (the candles' own interval column must match).",
)
@click.option(
    "--horizon",
    "horizon_minutes",
    type=click.IntRange(min=1),
    default=DEFAULT_HORIZON_MINUTES,
    show_default=True,
    metavar="MINUTES",
    help="How long after each alert a call is followed (candles read, trades held at most).",
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
@click.option(
    "--calls-from-duckdb",
    "duckdb_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="FILE",
    help="Backtest the calls in this DuckDB file (canon.alerts_std, else user_calls_d; opened "
    "read-only) instead of the synthetic market; needs --candles or --candles-dir. --from/--to "
    "then filter the calls (unbounded unless given).",
)
@click.option(
    "--candles",
    "candles_table",
    default=None,
    metavar="TABLE",
    help="With --calls-from-duckdb: the candles table in that file (token_address, timestamp, "
    "interval, open, high, low, close, volume).",
)
@click.option(
    "--candles-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    metavar="DIR",
    help="With --calls-from-duckdb: a folder of daily ohlcv_candles_YYYY-MM-DD.parquet files.",
)
@click.option(
    "--caller",
    "callers",
    multiple=True,
    metavar="NAME",
    help="With --calls-from-duckdb: only this caller's calls (repeatable).",
)
@click.option(
    "--layout",
    type=click.Choice(["v1", "seed"]),
    default="v1",
    show_default=True,
    help="v1: ROOT/backtest/RUN_ID/ with metadata.json written last; seed: the seed system's "
    "ROOT/YYYY-MM/run_id=UUID/ with run.json, logs/ and _SUCCESS written last (docs/contract.md).",
)
@config_options(producer=True)
def backtest_run(
    config: Config,
    strategy: str,
    interval: str,
    date_from: Any,
    date_to: Any,
    calls: int,
    seed: int,
    duckdb_file: Path | None,
    candles_table: str | None,
    candles_dir: Path | None,
    callers: tuple[str, ...],
    layout: str,
    horizon_minutes: int,
) -> None:
    """Write one backtest run to ROOT/backtest/RUN_ID/ and print where it went
    (--layout seed: ROOT/YYYY-MM/run_id=UUID/).

    Output: one line, the run id and the run directory separated by a tab:

    \b
        RUN_ID<TAB>RUN_DIR
        backtest-20260108T120000-1f2e3d4c<TAB>/srv/bus/artifacts/backtest/backtest-20260108T120000-1f2e3d4c

    The same --seed and inputs give the same tables (apart from run_id and created_at).
    A progress bar is drawn on stderr when it is a terminal.

    With --calls-from-duckdb the calls and candles are the user's own (docs/operations.md,
    "Backtests over your own calls"); stdout is the same line, and stderr says how many calls
    were read and which tokens had no candles.
    """
    from ..backtest.runner import run_backtest
    from ..log import configure_logging

    configure_logging(config.log_level, config.log_format)  # logs to stderr, never stdout
    if duckdb_file is not None or candles_table or candles_dir or callers:
        user = (duckdb_file, candles_table, candles_dir, callers, horizon_minutes, layout)
        _run_user_backtest(config, strategy, interval, date_from, date_to, *user)
        return
    if interval not in SYNTHETIC_INTERVALS:
        raise click.BadParameter(
            f"the synthetic market has {' and '.join(SYNTHETIC_INTERVALS)} candles only; "
            f"{interval} needs your own candles (--calls-from-duckdb)",
            param_hint="'--interval'",
        )
    if date_from > date_to:
        raise click.BadParameter(
            f"--from {date_from} is after --to {date_to}", param_hint="'--from'"
        )
    inputs = (strategy, interval, date_from, date_to, calls, seed, config.write_root)
    if sys.stderr.isatty():
        with click.progressbar(length=calls, label=f"{strategy} backtest", file=sys.stderr) as bar:
            result = run_backtest(
                *inputs, on_progress=bar.update, layout=layout, horizon_minutes=horizon_minutes
            )
    else:
        result = run_backtest(*inputs, layout=layout, horizon_minutes=horizon_minutes)
    click.echo(f"{result.run_id}\t{result.location}")
