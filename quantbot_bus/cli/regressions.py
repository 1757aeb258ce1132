"""The ``regressions`` command: the regression checks of new runs against their baselines.

It reads the ``exports.regressions`` view of the publication (computed by the exports when a run
comes in; docs/regressions.md). JSON output: docs/cli-json.md.
"""

from __future__ import annotations

from typing import Any

import click

from ..config import Config
from .options import UtcDateTime, config_options, emit, format_option, resolve_format

_TABLE_COLUMNS = ("run_id", "created_at", "metric", "verdict", "baseline_value", "new_value")
_TABLE_TAIL = ("change", "low", "high", "n_baseline_runs")
_CHOICES = {
    "regression": "regression",
    "improvement": "improvement",
    "no-change": "no change",
    "insufficient": "insufficient data",
}


@click.command("regressions")
@config_options
@format_option
@click.option(
    "--verdict",
    "verdicts",
    type=click.Choice([*_CHOICES, "all"]),
    multiple=True,
    help="Only these verdicts (repeatable; default: regression).",
)
@click.option(
    "--since", type=UtcDateTime(), default=None, help="Runs created at or after (ISO-8601, UTC)."
)
@click.option("--run-id", default=None, help="Only the checks of this run.")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="At most this many rows (0 = all).",
)
def regressions_cmd(
    config: Config,
    fmt: str | None,
    verdicts: tuple[str, ...],
    since: Any,
    run_id: str | None,
    limit: int,
) -> None:
    """List regression checks of runs against their baseline runs, newest run first.

    Each row is one metric of one run: the baseline's and the run's value, the change with its
    confidence interval, and the verdict (regression, improvement, no change, insufficient
    data) with a reason. By default only regressions; --run-id shows every verdict of a run
    unless --verdict is given; it exits 5 when there is no such run (or it was deleted).
    """
    from ..catalog.queries import REGRESSION_COLUMNS, list_regressions

    chosen = set(verdicts) or ({"all"} if run_id is not None else {"regression"})
    wanted = tuple(v for c, v in _CHOICES.items() if c in chosen or "all" in chosen)
    from ..exports.query import open_query_connection

    with open_query_connection(config) as con:
        rows = list_regressions(con, verdicts=wanted, since=since, run_id=run_id, limit=limit)
    fmt = resolve_format(fmt)
    if fmt == "table":
        rows = [{**r, "n_baseline_runs": len(r["baseline_runs"] or ())} for r in rows]
        emit(rows, fmt, (*_TABLE_COLUMNS, *_TABLE_TAIL))
        return
    emit(rows, fmt, REGRESSION_COLUMNS)
