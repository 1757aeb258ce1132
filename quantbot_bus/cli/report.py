"""``quantbot-bus report``: write the static HTML dashboard (:mod:`quantbot_bus.report`)."""

from __future__ import annotations

import webbrowser
from pathlib import Path

import click

from ..config import Config
from .options import config_options, emit, format_option, resolve_format


@click.command("report")
@config_options
@format_option
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory to write index.html into (default: <exports_dir>/report).",
)
@click.option(
    "--open",
    "open_browser",
    is_flag=True,
    help="Open the page in a web browser ($BROWSER, else the desktop's); says so when none is found.",
)
@click.option(
    "--run",
    "run_id",
    default=None,
    help="The run of the tearsheet (default: the newest policy run).",
)
def report_cmd(
    config: Config, fmt: str | None, out_dir: Path | None, open_browser: bool, run_id: str | None
) -> None:
    """Write a static, self-contained HTML dashboard of the catalog and its exports.

    One page (index.html, no script, no external URL: it opens from file://) with plots:
    catalog statistics and runs over time, the caller leaderboard, policies side by side, the
    newest optimization frontiers with the Pareto set, a run tearsheet (cumulative return,
    underwater, monthly heatmap, rolling Sharpe), drawdown and MAE distributions, regressions
    and open alerts, rejected and pending runs. Reads the publication only, so it works while
    the daemon runs. Prints the path written (json: path, files, bytes, seconds). Exits 5 when
    --run names no run.
    """
    from ..log import configure_logging
    from ..report import write_report

    configure_logging("warning", config.log_format)  # stderr; stdout is the result
    result = write_report(config, out_dir, run_id=run_id)
    path = result.path.absolute()
    if open_browser and not webbrowser.open(path.as_uri()):
        click.echo(f"no web browser found here: open {path.as_uri()} in one", err=True)
    if resolve_format(fmt) == "table":
        click.echo(str(path))
        return
    row = {
        "path": str(path),
        "files": [str(f.absolute()) for f in result.files],
        "bytes": result.bytes,
        "seconds": round(result.seconds, 3),
    }
    emit([row], fmt, list(row))
