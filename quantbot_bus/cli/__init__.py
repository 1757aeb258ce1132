"""The ``quantbot-bus`` command line: each command parses, calls one library function, formats.

``main`` is the click group (the console script ``quantbot_bus.cli:main``); the commands live in
one module per group and are registered here:

- :mod:`.run`: ``daemon``, ``sync``, ``rebuild`` (the writers, holding the state-dir lock)
- :mod:`.query`: ``runs``, ``show``, ``artifacts``, ``stats``, ``rejected``, ``query`` (readers)
- :mod:`.regressions`: ``regressions`` (regression checks of new runs)
- :mod:`.schema`: ``schema`` (artifact tables' schema history)
- :mod:`.status`: ``status``, ``doctor``
- :mod:`.pending`: ``pending`` (the incomplete runs the bus waits on)
- :mod:`.alerts`: ``alerts`` (the active alerts)
- :mod:`.backtest`: ``backtest run``
- :mod:`.report`: ``report`` (the HTML dashboard)
- :mod:`.systemd`: ``systemd install``, ``systemd uninstall``

:class:`BusGroup` is the one place an error becomes an exit code: a
:class:`~quantbot_bus.errors.BusError` is printed as one line on stderr and the process exits with
its code from :data:`quantbot_bus.errors.EXIT_CODES`.
"""

from __future__ import annotations

from typing import Any

import click

from ..config import Config
from ..errors import BusError, exit_code_for
from .alerts import alerts_cmd
from .backtest import backtest
from .options import config_options, emit, format_option
from .pending import pending_cmd
from .query import artifacts_cmd, query_command, rejected_cmd, runs_cmd, show_cmd, stats_cmd
from .regressions import regressions_cmd
from .report import report_cmd
from .run import daemon_cmd, rebuild_cmd, sync_cmd
from .schema import schema_cmd
from .status import doctor_cmd, status_cmd
from .systemd import systemd_group


class BusGroup(click.Group):
    """A click group that maps BusError to its exit code in one place."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BusError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exit_code_for(exc))


@click.group(cls=BusGroup)
@click.version_option(package_name="quantbot-bus")
def main() -> None:
    """quantbot-bus: an artifact bus for quant research runs.

    Producers drop runs under the artifacts root; the daemon catalogs them in DuckDB and keeps
    the exports fresh; these commands query the publication (exports/bus.duckdb).
    """


for _command in (
    backtest,
    daemon_cmd,
    status_cmd,
    pending_cmd,
    sync_cmd,
    rebuild_cmd,
    runs_cmd,
    show_cmd,
    artifacts_cmd,
    stats_cmd,
    rejected_cmd,
    schema_cmd,
    regressions_cmd,
    report_cmd,
    query_command,
    systemd_group,
    doctor_cmd,
    alerts_cmd,
):
    main.add_command(_command)


__all__ = ["main", "config_options", "format_option", "emit", "Config"]
