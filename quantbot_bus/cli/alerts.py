"""``quantbot-bus alerts``: the active alerts (``state_dir/alerts.json``, written by the daemon's
alerter) and, with ``--all``, the recent resolved ones (``exports_dir/alerts.jsonl``).
JSON output: docs/cli-json.md."""

from __future__ import annotations

import click

from ..config import Config
from .options import config_options, emit, format_option, resolve_format

_TABLE_COLUMNS = ("status", "severity", "key", "first_seen_at", "resolved_at", "message")


@click.command("alerts")
@config_options
@format_option
@click.option(
    "--all",
    "include_resolved",
    is_flag=True,
    help="Also list the recent resolved alerts (from exports_dir/alerts.jsonl), newest first.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="With --all: at most this many resolved alerts (0 = all in the file's last 4 MiB).",
)
def alerts_cmd(config: Config, fmt: str | None, include_resolved: bool, limit: int) -> None:
    """Show the active alerts: each condition the daemon found and notified, critical first.

    Read from state_dir/alerts.json (the daemon's alert state); a condition held back by the rate
    limit shows with an empty notified_at. No active alert: "(no rows)", or [] in JSON.
    Rules, delivery and the notification JSON: docs/alerts.md.
    """
    from ..alerts import ALERT_COLUMNS, jsonl_path_for, list_alerts, state_path_for

    rows = list_alerts(
        state_path_for(config),
        jsonl_path_for(config),
        include_resolved=include_resolved,
        limit=limit,
    )
    columns = _TABLE_COLUMNS if resolve_format(fmt) == "table" else ALERT_COLUMNS
    emit(rows, fmt, columns)
