"""The ``quantbot-bus`` command line: each command parses, calls one library function, formats.

Errors derived from :class:`quantbot_bus.errors.BusError` become one line on stderr and the
exit code from :data:`quantbot_bus.errors.EXIT_CODES`.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from typing import Any

import click

from .config import Config, load_config
from .errors import BusError, exit_code_for
from .output import FORMATS, render


class BusGroup(click.Group):
    """A click group that maps BusError to its exit code in one place."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BusError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exit_code_for(exc))


def config_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Shared options: --config, --root, --exports-dir, --state-dir. Passes ``config: Config``."""

    @click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        default=None,
        help="TOML config file (default: $QUANTBOT_BUS_CONFIG, else ./quantbot-bus.toml if present).",
    )
    @click.option("--root", default=None, help="Artifacts root (default ./artifacts).")
    @click.option("--exports-dir", default=None, help="Exports directory (default ./exports).")
    @click.option("--state-dir", default=None, help="Daemon state directory (default ./state).")
    @functools.wraps(fn)
    def wrapper(
        config_path: str | None,
        root: str | None,
        exports_dir: str | None,
        state_dir: str | None,
        **kwargs: Any,
    ) -> Any:
        config = load_config(
            config_path,
            overrides={"root": root, "exports_dir": exports_dir, "state_dir": state_dir},
        )
        return fn(config=config, **kwargs)

    return wrapper


def format_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Shared --format option: table on a terminal, json when stdout is not a terminal."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(FORMATS),
        default=None,
        help="Output format (default: table on a terminal, json when piped).",
    )(fn)


def emit(
    rows: Sequence[dict[str, Any]], fmt: str | None, columns: Sequence[str] | None = None
) -> None:
    """Print rows in the chosen format (table on a terminal, json when stdout is piped)."""
    if fmt is None:
        fmt = "table" if sys.stdout.isatty() else "json"
    click.echo(render(rows, fmt, columns), nl=False)


@click.group(cls=BusGroup)
@click.version_option(package_name="quantbot-bus")
def main() -> None:
    """quantbot-bus: an artifact bus for quant research runs.

    Producers drop runs under the artifacts root; the daemon catalogs them in DuckDB and keeps
    the exports fresh; these commands query the publication (exports/bus.duckdb).
    """


# --- commands are registered below, one section per concept. Helpers: add your commands in
# --- your own section with a small edit; never rewrite this file whole.

# [section: backtest]


def _date_option(ctx: click.Context, param: click.Parameter, value: str) -> Any:
    import datetime as dt

    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date; use YYYY-MM-DD") from None


@main.group()
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
    from .backtest import run_backtest
    from .log import configure_logging

    configure_logging(config.log_level, config.log_format)  # logs to stderr, never stdout
    if date_from > date_to:
        raise click.BadParameter(
            f"--from {date_from} is after --to {date_to}", param_hint="'--from'"
        )
    if sys.stderr.isatty():
        with click.progressbar(length=calls, label=f"{strategy} backtest", file=sys.stderr) as bar:
            result = run_backtest(
                strategy,
                interval,
                date_from,
                date_to,
                calls,
                seed,
                config.root,
                on_progress=bar.update,
            )
    else:
        result = run_backtest(strategy, interval, date_from, date_to, calls, seed, config.root)
    click.echo(f"{result.run_id}\t{result.run_dir}")


# [section: daemon]


@main.command("daemon")
@config_options
@click.option(
    "--polling",
    is_flag=True,
    default=None,
    help="Use the polling observer instead of inotify (network filesystems, watch limits).",
)
@click.option(
    "--log-format",
    type=click.Choice(["auto", "json", "console"]),
    default=None,
    help="Log format (default: config log_format; auto = console on a terminal, JSON lines otherwise).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default=None,
    help="Log level (default: config log_level, info).",
)
def daemon_cmd(
    config: Config, polling: bool | None, log_format: str | None, log_level: str | None
) -> None:
    """Watch the artifacts root and register runs until SIGTERM/SIGINT.

    Reconciles the whole root against the catalog first, then watches it; publishes the
    publication after every batch and keeps the exports fresh. Creates the artifacts,
    state and exports directories when missing. The first SIGTERM/SIGINT stops cleanly
    (exit 0); a second one exits at once.
    """
    import dataclasses

    from .log import configure_logging
    from .watch import run_daemon

    changes: dict[str, Any] = {}
    if polling:
        changes["polling"] = True
    if log_format:
        changes["log_format"] = log_format
    if log_level:
        changes["log_level"] = log_level
    if changes:
        config = dataclasses.replace(config, **changes).validate()
    configure_logging(config.log_level, config.log_format)
    run_daemon(config)


_STATUS_COLUMNS = (
    "state",
    "pid",
    "pid_alive",
    "ready",
    "started_at",
    "updated_at",
    "age_s",
    "observer",
    "root",
    "registered",
    "rejected",
    "pending",
    "deleted",
    "oldest_pending_lag_s",
    "last_batch_at",
    "last_batch_n",
    "last_batch_ms",
    "snapshot_published_at",
    "generation",
    "degraded",
    "stopped_at",
)


@main.command("status")
@config_options
@format_option
def status_cmd(config: Config, fmt: str | None) -> None:
    """Show the daemon's status file: state, pid, counts, last batch, pending lag.

    state is running, degraded (running, but a commit or publication fails: see `degraded`),
    starting, stale (alive but not writing), stopped (clean stop) or dead.
    Exits 4 when the daemon has never run with this state dir.
    """
    from .status import read_status

    data = read_status(config.status_path)
    if fmt in (None, "table") and (fmt == "table" or sys.stdout.isatty()):
        width = max(len(c) for c in _STATUS_COLUMNS)
        for col in _STATUS_COLUMNS:
            value = data.get(col)
            click.echo(f"{col.ljust(width)}  {'' if value is None else value}")
        return
    emit([data], fmt, _STATUS_COLUMNS)


# [section: query]
# sync/rebuild write the working catalog; every other query command reads only the reader-side
# publication (config.snapshot_path), so they work while the daemon runs. JSON output: docs/cli-json.md.

_SYNC_COLUMNS = ("registered", "updated", "unchanged", "deleted", "rejected", "pending", "ms")
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


def _resolve_format(fmt: str | None) -> str:
    """The --format default: table on a terminal, json when piped (as :func:`emit`)."""
    return fmt if fmt is not None else ("table" if sys.stdout.isatty() else "json")


class _UtcDateTime(click.ParamType):
    """An ISO-8601 date or date-time; naive values are UTC, others are converted to UTC."""

    name = "DATETIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        import datetime as dt

        if isinstance(value, dt.datetime):
            return value
        try:
            parsed = dt.datetime.fromisoformat(str(value).strip())
        except ValueError:
            self.fail(
                f"{value!r} is not an ISO-8601 date or date-time "
                "(e.g. 2024-05-01 or 2024-05-01T12:00:00Z)",
                param,
                ctx,
            )
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
        return parsed


def _sync_row(result: Any, seconds: float) -> dict[str, Any]:
    """Counts of a sync/rebuild; ``ms`` is the whole command (scan, commit, publish)."""
    return {
        "registered": len(result.registered),
        "updated": len(result.updated),
        "unchanged": len(result.unchanged),
        "deleted": len(result.deleted),
        "rejected": len(result.rejected),
        "pending": len(result.pending),
        "ms": round(seconds * 1000, 1),
    }


def _one_shot_logging(config: Config, verbose: bool) -> None:
    from .log import configure_logging

    configure_logging("info" if verbose else "warning", config.log_format)


_verbose_option = click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Log every registered/updated/deleted run to stderr (default: only rejections).",
)


@main.command("sync")
@config_options
@format_option
@_verbose_option
def sync_cmd(config: Config, fmt: str | None, verbose: bool) -> None:
    """Reconcile the artifacts root with the catalog once, then publish it for readers.

    New runs are registered, changed ones updated, vanished ones soft-deleted, broken ones
    rejected (see `quantbot-bus rejected`); runs still being written are counted as pending and
    left for the next sync. For cron, or a host without the daemon; while the daemon runs it
    already does this, and sync refuses to run beside it (naming its pid). Prints the counts.
    """
    import time

    from .pipeline import sync

    _one_shot_logging(config, verbose)
    t0 = time.perf_counter()
    result = sync(config)
    emit([_sync_row(result, time.perf_counter() - t0)], fmt, _SYNC_COLUMNS)


@main.command("rebuild")
@config_options
@format_option
@_verbose_option
def rebuild_cmd(config: Config, fmt: str | None, verbose: bool) -> None:
    """Recreate the catalog from the artifacts on disk (they are the source of truth).

    The old working catalog is kept as bus.duckdb.bak next to it; soft-deleted runs and
    resolved rejections are forgotten. Refuses while the daemon runs: stop it first. Prints
    the counts.
    """
    import time

    from .pipeline import rebuild

    _one_shot_logging(config, verbose)
    t0 = time.perf_counter()
    result = rebuild(config)
    emit([_sync_row(result, time.perf_counter() - t0)], fmt, _SYNC_COLUMNS)


@main.command("runs")
@config_options
@format_option
@click.option("--run-type", default=None, help="Only runs of this run type.")
@click.option(
    "--status", type=click.Choice(["success", "failed"]), default=None, help="Only this status."
)
@click.option("--producer", default=None, help="Only runs from this producer name.")
@click.option("--git-branch", default=None, help="Only runs made on this git branch.")
@click.option(
    "--since", type=_UtcDateTime(), default=None, help="Created at or after (ISO-8601, UTC)."
)
@click.option("--until", type=_UtcDateTime(), default=None, help="Created before (ISO-8601, UTC).")
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
    from .catalog import RUN_LIST_COLUMNS, list_runs, open_reader

    with open_reader(config.snapshot_path) as con:
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
    fmt = _resolve_format(fmt)
    columns: Sequence[str] = RUN_LIST_COLUMNS
    if fmt == "table":
        columns = _RUNS_TABLE_COLUMNS + (("deleted_at",) if include_deleted else ())
    emit(rows, fmt, columns)


@main.command("show")
@config_options
@format_option
@click.argument("run_id")
def show_cmd(config: Config, fmt: str | None, run_id: str) -> None:
    """Show one run (soft-deleted ones too): its fields, params, metrics and artifacts.

    Exits 5 when there is no run with that id.
    """
    from .catalog import get_run, open_reader

    with open_reader(config.snapshot_path) as con:
        run = get_run(con, run_id)
    fmt = _resolve_format(fmt)
    if fmt != "table":
        from .output import _jsonable  # nested rows: same value rules as the top level

        run["artifacts"] = [{k: _jsonable(v) for k, v in a.items()} for a in run["artifacts"]]
        emit([run], fmt)
        return
    fields = [{"field": k, "value": v} for k, v in run.items() if k != "artifacts"]
    emit(fields, "table", ("field", "value"))
    click.echo()
    emit(run["artifacts"], "table", _SHOW_ARTIFACT_COLUMNS)


@main.command("artifacts")
@config_options
@format_option
@click.option("--run-id", default=None, help="Only the artifacts of this run.")
@click.option("--name", default=None, help="Only artifacts (tables) with this name.")
def artifacts_cmd(config: Config, fmt: str | None, run_id: str | None, name: str | None) -> None:
    """List the artifacts of live runs: absolute Parquet paths, one per line.

    The bare paths are for piping, e.g. into DuckDB's read_parquet; with --format the full
    rows are printed instead (run_id, run_type, name, path, rows, bytes, sha256, ...).
    """
    from .catalog import ARTIFACT_COLUMNS, list_artifacts, open_reader

    with open_reader(config.snapshot_path) as con:
        rows = list_artifacts(con, run_id=run_id, name=name)
    if fmt is None:
        for row in rows:
            click.echo(row["path"])
        return
    emit(rows, fmt, ARTIFACT_COLUMNS)


@main.command("stats")
@config_options
@format_option
def stats_cmd(config: Config, fmt: str | None) -> None:
    """Count live runs per run type and status, with artifacts, rows and bytes.

    The last row is the total (run_type and status null; "(all)" in the table).
    """
    from .catalog import STATS_COLUMNS, open_reader, run_stats

    with open_reader(config.snapshot_path) as con:
        rows = run_stats(con)
    fmt = _resolve_format(fmt)
    if fmt == "table":
        rows = [
            {**r, "run_type": "(all)", "status": "(all)"}
            if r["run_type"] is None and r["status"] is None
            else r
            for r in rows
        ]
    emit(rows, fmt, STATS_COLUMNS)


@main.command("rejected")
@config_options
@format_option
def rejected_cmd(config: Config, fmt: str | None) -> None:
    """List run directories that were rejected and not fixed yet, with the reason.

    Fix the run (or delete it) and the daemon or the next `sync` picks it up again.
    """
    from .catalog import REJECTION_COLUMNS, list_rejections, open_reader

    with open_reader(config.snapshot_path) as con:
        rows = list_rejections(con)
    emit(rows, fmt, REJECTION_COLUMNS)


# [section: exports]


@main.command("query")
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
    exports.policy_comparison, exports.frontier_best, exports.<artifact table name>, ...

    Example: quantbot-bus query "SELECT * FROM exports.caller_leaderboard LIMIT 10"
    """
    from pathlib import Path

    from .errors import QueryError
    from .exports import query_to_file, run_query

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
        Path(output).write_text(text, encoding="utf-8")
        click.echo(f"{len(result.rows)} rows written to {output}")
        return
    emit(result.dicts(), fmt, result.columns)


# [section: systemd]


@main.group("systemd")
def systemd_group() -> None:
    """Install or remove the systemd units (daemon, or a 5-minute sync timer).

    The units are rendered from templates shipped in the package with this machine's paths:
    this environment's quantbot-bus executable and the data roots from the config file.
    """


def _systemd_scope_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option(
        "--dry-run", is_flag=True, help="Print what would be written and run; change nothing."
    )(fn)
    fn = click.option(
        "--systemctl",
        "systemctl_cmd",
        default="systemctl",
        show_default=True,
        help="The systemctl command to run (split like a shell would).",
    )(fn)
    fn = click.option(
        "--unit-dir",
        type=click.Path(file_okay=False),
        default=None,
        help="Where the unit files go (default /etc/systemd/system, or ~/.config/systemd/user with --user).",
    )(fn)
    fn = click.option(
        "--user",
        "user_mode",
        is_flag=True,
        help="A user service (systemctl --user) instead of a system one.",
    )(fn)
    return fn


def _print_install_result(result: Any, verb: str) -> None:
    import shlex

    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    if result.dry_run:
        for unit in result.units:
            if verb == "wrote":
                click.echo(f"# {unit.path}")
                click.echo(unit.content, nl=False)
                click.echo()
            else:
                click.echo(f"# would remove {unit.path}")
        for d in getattr(result, "created_dirs", []):
            click.echo(f"# would create {d}")
        for cmd in result.commands:
            click.echo(f"# would run: {shlex.join(cmd)}")
    else:
        for unit in result.units:
            click.echo(f"{verb} {unit.path}")
        for d in result.created_dirs:
            click.echo(f"created {d}")
        for cmd in result.commands:
            click.echo(f"ran: {shlex.join(cmd)}")
    for note in result.notes:
        click.echo(f"note: {note}")


@systemd_group.command("install")
@_systemd_scope_options
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="The TOML config the service runs with (default: $QUANTBOT_BUS_CONFIG, else ./quantbot-bus.toml).",
)
@click.option(
    "--timer",
    is_flag=True,
    help="Enable the 5-minute sync timer instead of the long-running daemon.",
)
@click.option(
    "--run-as",
    default=None,
    help="System service: the user it runs as (default: owner of the state dir, else of the config).",
)
@click.option("--memory-max", default="4G", show_default=True, help="MemoryMax= for the services.")
@click.option(
    "--executable",
    type=click.Path(dir_okay=False),
    default=None,
    help="The quantbot-bus executable (default: the one next to this Python).",
)
@click.option("--force", is_flag=True, help="Overwrite unit files that quantbot-bus did not write.")
def systemd_install_cmd(
    user_mode: bool,
    unit_dir: str | None,
    systemctl_cmd: str,
    dry_run: bool,
    config_path: str | None,
    timer: bool,
    run_as: str | None,
    memory_max: str,
    executable: str | None,
    force: bool,
) -> None:
    """Render, write, reload and enable the units (--dry-run: only print them).

    Writes quantbot-bus.service, quantbot-bus-sync.service and quantbot-bus-sync.timer, then runs
    systemctl daemon-reload and enable --now quantbot-bus.service (or the timer with --timer,
    disabling the other). Creates the data directories when missing. Exits 8 if systemctl fails.
    """
    import shlex
    from pathlib import Path

    from .systemd import install, resolve_config_path

    result = install(
        resolve_config_path(config_path),
        user=user_mode,
        unit_dir=Path(unit_dir) if unit_dir else None,
        systemctl=shlex.split(systemctl_cmd),
        dry_run=dry_run,
        executable=Path(executable) if executable else None,
        run_as=run_as,
        memory_max=memory_max,
        timer=timer,
        force=force,
    )
    _print_install_result(result, "wrote")


@systemd_group.command("uninstall")
@_systemd_scope_options
def systemd_uninstall_cmd(
    user_mode: bool, unit_dir: str | None, systemctl_cmd: str, dry_run: bool
) -> None:
    """Stop and disable the units, remove their files, reload. Never touches the data.

    Only removes files that `systemd install` wrote; does nothing when none are installed.
    """
    import shlex
    from pathlib import Path

    from .systemd import uninstall

    result = uninstall(
        user=user_mode,
        unit_dir=Path(unit_dir) if unit_dir else None,
        systemctl=shlex.split(systemctl_cmd),
        dry_run=dry_run,
    )
    _print_install_result(result, "removed")


@main.command("doctor")
@config_options
@format_option
@click.option(
    "--expect-daemon/--no-expect-daemon",
    default=None,
    help="Fail when no daemon is running (default: expected if it has run with this state dir).",
)
def doctor_cmd(config: Config, fmt: str | None, expect_daemon: bool | None) -> None:
    """Check what breaks a long-running bus, and say how to fix each problem.

    Checks duckdb >= 2.0, permissions on the root, state and exports directories, inotify watch
    and instance limits against the directories under the root, free disk, the publication and the
    catalog (schema version; read-only, never while the daemon holds it) and the status file.
    Prints `ok|WARN|FAIL name: detail` per check plus a `fix:` line; exits 9 if any check fails.
    """
    from .doctor import format_checks, run_checks
    from .errors import DoctorFailed

    checks = run_checks(config, expect_daemon=expect_daemon)
    if fmt == "table" or (fmt is None and sys.stdout.isatty()):
        click.echo(format_checks(checks), nl=False)
    else:
        emit([c.as_dict() for c in checks], fmt, ("name", "status", "detail", "fix"))
    failed = [c.name for c in checks if not c.ok]
    if failed:
        raise DoctorFailed(f"{len(failed)} check(s) failed: {', '.join(failed)}")


__all__ = ["main", "config_options", "format_option", "emit", "Config"]


if __name__ == "__main__":
    main()
