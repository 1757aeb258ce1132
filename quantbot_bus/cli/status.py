"""The health commands: ``status`` (the daemon's status file) and ``doctor`` (every check of
:mod:`quantbot_bus.ops.doctor`, each with its fix)."""

from __future__ import annotations

import click

from ..config import Config
from .options import config_options, emit, format_option, resolve_format

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
#: Shown too when the status file is a scale-out daemon's (``catalog = "iceberg"``).
_SCALE_OUT_COLUMNS = (
    "backend",
    "backlog",
    "polls",
    "reconciles",
    "upkeep_at",
    "upkeep_error",
    "upkeep_since",
)
_CHECK_COLUMNS = ("name", "status", "detail", "fix")


@click.command("status")
@config_options
@format_option
def status_cmd(config: Config, fmt: str | None) -> None:
    """Show the daemon's status file: state, pid, counts, last batch, pending lag.

    state is running, degraded (running, but a commit or publication fails: see `degraded`),
    starting, stale (alive but not writing), stopped (clean stop) or dead.
    Exits 4 when the daemon has never run with this state dir.
    """
    from ..daemon.status import read_status

    data = read_status(config.status_path)
    columns = _STATUS_COLUMNS + (_SCALE_OUT_COLUMNS if data.get("backend") else ())
    if resolve_format(fmt) == "table":
        width = max(len(c) for c in columns)
        for col in columns:
            value = data.get(col)
            click.echo(f"{col.ljust(width)}  {'' if value is None else value}")
        return
    emit([data], fmt, columns)


@click.command("doctor")
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
    from ..errors import DoctorFailed
    from ..ops.doctor import format_checks, run_checks

    checks = run_checks(config, expect_daemon=expect_daemon)
    if resolve_format(fmt) == "table":
        click.echo(format_checks(checks), nl=False)
    else:
        emit([c.as_dict() for c in checks], fmt, _CHECK_COLUMNS)
    failed = [c.name for c in checks if not c.ok]
    if failed:
        raise DoctorFailed(f"{len(failed)} check(s) failed: {', '.join(failed)}")
