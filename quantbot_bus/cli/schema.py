"""The ``schema`` command: artifact tables' schema history across runs (docs/cli-json.md).

Reads only the publication, like the other reader commands.
"""

from __future__ import annotations

from typing import Any

import click

from ..config import Config
from ..output import jsonable
from .options import config_options, emit, format_option, resolve_format

OVERVIEW_COLUMNS = (
    "table",
    "view",
    "runs",
    "versions",
    "first_created_at",
    "last_created_at",
    "conflicts",
    "flagged",
)
VERSION_COLUMNS = (
    "version",
    "first_run_id",
    "last_run_id",
    "first_created_at",
    "last_created_at",
    "runs",
    "columns",
    "changes",
    "flagged",
)
_TABLE_COLUMNS = ("version", "runs", "first_run_id", "last_run_id", "columns", "changes", "flagged")


@click.command("schema")
@click.argument("table", required=False)
@config_options
@format_option
def schema_cmd(config: Config, table: str | None, fmt: str | None) -> None:
    """Show an artifact table's schema history across runs.

    With TABLE: its schema versions in created_at order (consecutive runs with the same
    columns are one version), each with the columns added, dropped, widened or narrowed, the
    type conflicts, and the runs the exports left out of exports.TABLE for a conflicting type
    (with the reason). Without TABLE: every artifact table with its number of runs, schema
    versions, conflicting runs and flagged runs.
    """
    from ..catalog.schema_history import schema_history, schema_overview

    fmt = resolve_format(fmt)
    from ..exports.query import open_query_connection

    with open_query_connection(config) as con:
        if table is None:
            rows = [h.summary() for h in schema_overview(con)]
            emit(rows, fmt, OVERVIEW_COLUMNS)
            return
        history = schema_history(con, table)
    versions = [v.as_dict() for v in history.versions]
    if fmt != "table":
        emit([_jsonable(v) for v in versions], fmt, VERSION_COLUMNS)
        return
    click.echo(f"{table}: {len(versions)} schema version(s), view {history.view or '(none yet)'}")
    emit(
        [
            {
                "version": v.version,
                "runs": v.runs,
                "first_run_id": v.first_run_id,
                "last_run_id": v.last_run_id,
                "columns": ", ".join(f"{c} {t}" for c, t in v.typed_columns()),
                "changes": "; ".join(c.text() for c in v.changes),
                "flagged": len({f["run_id"] for f in v.flagged}) or "",
            }
            for v in history.versions
        ],
        "table",
        _TABLE_COLUMNS,
    )
    for v in history.versions:
        for f in v.flagged:
            click.echo(f["reason"])


def _jsonable(value: Any) -> Any:
    """Nested values with the top level's rules (time stamps as ISO-8601 ``Z`` strings)."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return jsonable(value)
