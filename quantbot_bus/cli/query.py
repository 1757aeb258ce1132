"""The reader commands: ``runs``, ``show``, ``artifacts``, ``stats``, ``rejected`` and ``query``.

They read only the reader-side publication (``config.snapshot_path``), never the working catalog,
so they work while the daemon runs. JSON output: docs/cli-json.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from ..config import Config
from ..output import FORMATS, render
from .options import UtcDateTime, config_options, emit, format_option, resolve_format

_RUNS_TABLE_COLUMNS = (
    "run_id",
    "run_type",
    "status",
    "producer",
    "created_at",
    "git_branch",
    "artifact_count",
    "total_rows",
)
_SHOW_ARTIFACT_COLUMNS = ("name", "rows", "bytes", "path")


@click.command("runs")
@config_options
@format_option
@click.option("--run-type", default=None, help="Only runs of this run type.")
@click.option(
    "--status", type=click.Choice(["success", "failed"]), default=None, help="Only this status."
)
@click.option("--producer", default=None, help="Only runs from this producer name.")
@click.option("--git-branch", default=None, help="Only runs made on this git branch.")
@click.option(
    "--since", type=UtcDateTime(), default=None, help="Created at or after (ISO-8601, UTC)."
)
@click.option("--until", type=UtcDateTime(), default=None, help="Created before (ISO-8601, UTC).")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="At most this many runs (0 = all).",
)
@click.option(
    "--include-deleted", is_flag=True, help="Also list soft-deleted runs (deleted_at set)."
)
def runs_cmd(
    config: Config,
    fmt: str | None,
    run_type: str | None,
    status: str | None,
    producer: str | None,
    git_branch: str | None,
    since: Any,
    until: Any,
    limit: int,
    include_deleted: bool,
) -> None:
    """List cataloged runs, newest first (by created_at)."""
    from ..catalog import RUN_LIST_COLUMNS, list_runs
    from ..exports.query import open_query_connection

    with open_query_connection(config) as con:
        rows = list_runs(
            con,
            run_type=run_type,
            status=status,
            producer=producer,
            git_branch=git_branch,
            since=since,
            until=until,
            limit=limit,
            include_deleted=include_deleted,
        )
    fmt = resolve_format(fmt)
    columns: Sequence[str] = RUN_LIST_COLUMNS
    if fmt == "table":
        columns = _RUNS_TABLE_COLUMNS + (("deleted_at",) if include_deleted else ())
    emit(rows, fmt, columns)


@click.command("show")
@config_options
@format_option
@click.argument("run_id")
def show_cmd(config: Config, fmt: str | None, run_id: str) -> None:
    """Show one run (soft-deleted ones too): its fields, params, metrics and artifacts.

    Exits 5 when there is no run with that id.
    """
    from ..catalog import get_run
    from ..exports.query import open_query_connection

    with open_query_connection(config) as con:
        run = get_run(con, run_id)
    fmt = resolve_format(fmt)
    if fmt != "table":
        from ..output import _jsonable  # nested rows: same value rules as the top level

        run["artifacts"] = [{k: _jsonable(v) for k, v in a.items()} for a in run["artifacts"]]
        emit([run], fmt)
        return
    fields = [{"field": k, "value": v} for k, v in run.items() if k != "artifacts"]
    emit(fields, "table", ("field", "value"))
    click.echo()
    emit(run["artifacts"], "table", _SHOW_ARTIFACT_COLUMNS)


@click.command("artifacts")
@config_options
@format_option
@click.option("--run-id", default=None, help="Only the artifacts of this run.")
@click.option("--name", default=None, help="Only artifacts (tables) with this name.")
def artifacts_cmd(config: Config, fmt: str | None, run_id: str | None, name: str | None) -> None:
    """List the artifacts of live runs: absolute Parquet paths, one per line.

    The bare paths are for piping, e.g. into DuckDB's read_parquet; with --format the full
    rows are printed instead (run_id, run_type, name, path, rows, bytes, sha256, ...).
    Exits 5 when --run-id names no run, or a deleted one.
    """
    from ..catalog import ARTIFACT_COLUMNS, list_artifacts
    from ..exports.query import open_query_connection

    with open_query_connection(config) as con:
        rows = list_artifacts(con, run_id=run_id, name=name)
    if fmt is None:
        for row in rows:
            click.echo(row["path"])
        return
    emit(rows, fmt, ARTIFACT_COLUMNS)


@click.command("stats")
@config_options
@format_option
def stats_cmd(config: Config, fmt: str | None) -> None:
    """Count live runs per run type and status, with artifacts, rows and bytes.

    The last row is the total (run_type and status null; "(all)" in the table).
    """
    emit_stats(read_stats(config), fmt)


def read_stats(config: Config) -> list[dict[str, Any]]:
    """The rows of ``stats``, from the publication (also ``sync --stats``)."""
    from ..catalog import run_stats
    from ..exports.query import open_query_connection

    with open_query_connection(config) as con:
        return run_stats(con)


def emit_stats(rows: list[dict[str, Any]], fmt: str | None) -> None:
    """Print ``stats`` rows; the table shows the total row's null run_type/status as (all)."""
    from ..catalog import STATS_COLUMNS

    fmt = resolve_format(fmt)
    if fmt == "table":
        rows = [
            {**r, "run_type": "(all)", "status": "(all)"}
            if r["run_type"] is None and r["status"] is None
            else r
            for r in rows
        ]
    emit(rows, fmt, STATS_COLUMNS)


@click.command("rejected")
@config_options
@format_option
def rejected_cmd(config: Config, fmt: str | None) -> None:
    """List run directories that were rejected and not fixed yet, with the reason.

    Fix the run (or delete it) and the daemon or the next `sync` picks it up again.
    """
    from ..catalog import REJECTION_COLUMNS, list_rejections
    from ..exports.query import open_query_connection

    with open_query_connection(config) as con:
        rows = list_rejections(con)
    emit(rows, fmt, REJECTION_COLUMNS)


@click.command("query")
@click.argument("sql")
@click.option(
    "--format",
    "fmt",
    type=click.Choice((*FORMATS, "parquet")),
    default=None,
    help="table, json or csv (default: table on a terminal, json when piped); parquet needs --output.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the result to FILE instead of stdout (written atomically).",
)
@config_options
def query_command(config: Config, sql: str, fmt: str | None, output: str | None) -> None:
    """Run one read-only SQL statement over the published catalog and the export views.

    Tables: catalog.runs_d, catalog.artifacts_f, catalog.rejections_f, catalog.latest_artifacts_v;
    views: exports.runs, exports.run_summaries, exports.caller_leaderboard,
    exports.policy_comparison, exports.policy_by_caller, exports.frontier_best,
    exports.frontiers, exports.<artifact table name>, ...

    Example: quantbot-bus query "SELECT * FROM exports.caller_leaderboard LIMIT 10"
    """
    from pathlib import Path

    from ..errors import QueryError
    from ..exports import query_to_file, run_query
    from ..fsutil import replaceable, write_atomic

    if fmt == "parquet" and output is None:
        raise QueryError("--format parquet writes a binary file: add --output FILE")
    if output is not None and fmt in (None, "parquet", "csv"):
        fmt = fmt or ("parquet" if output.endswith(".parquet") else "csv")
        rows = query_to_file(config, sql, Path(output), fmt)
        click.echo(f"{rows} rows written to {output}")
        return
    result = run_query(config, sql)
    if output is not None:
        text = render(result.dicts(), fmt or "json", result.columns)
        dest = Path(output)
        if replaceable(dest):
            write_atomic(dest, text)
        else:  # through the link (e.g. /dev/stdout) or into the device or pipe
            dest.write_text(text, encoding="utf-8")
        click.echo(f"{len(result.rows)} rows written to {output}")
        return
    emit(result.dicts(), fmt, result.columns)
