"""The commands that drive the Bus (the one writer of the working catalog): ``daemon``, ``sync``
and ``rebuild``. Each takes the state-dir lock; a second one beside the holder exits 10."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import click

from ..config import Config
from .options import config_options, emit, format_option, resolve_format, verbose_option

_SYNC_COLUMNS = ("registered", "updated", "unchanged", "deleted", "rejected", "pending", "ms")


@click.command("daemon")
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

    from ..daemon.supervisor import run_daemon
    from ..log import configure_logging

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


def _sync_row(result: Any, seconds: float) -> dict[str, Any]:
    """Counts of a sync/rebuild; ``ms`` is the whole command (scan, commit, publish, the
    alert check and the page)."""
    return {
        "registered": len(result.registered),
        "updated": len(result.updated),
        "unchanged": len(result.unchanged),
        "deleted": len(result.deleted),
        "rejected": len(result.rejected),
        "pending": len(result.pending),
        "ms": round(seconds * 1000, 1),
    }


def _one_shot(
    step: Callable[[Config], Any],
    config: Config,
    fmt: str | None,
    verbose: bool,
    stats: bool = False,
) -> None:
    """Run ``step(config)`` (``sync`` or ``rebuild``) with one-shot logging; print its counts
    and, with ``stats``, the catalog statistics (JSON: a ``stats`` key of the counts object;
    table and csv: a blank line, then the rows as ``quantbot-bus stats`` prints them)."""
    from ..log import configure_logging
    from ..output import jsonable
    from .query import emit_stats, read_stats

    configure_logging("info" if verbose else "warning", config.log_format)
    t0 = time.perf_counter()
    result = step(config)
    row = _sync_row(result, time.perf_counter() - t0)
    if not stats:
        emit([row], fmt, _SYNC_COLUMNS)
        return
    stats_rows = read_stats(config)
    if resolve_format(fmt) == "json":
        row["stats"] = [{k: jsonable(v) for k, v in r.items()} for r in stats_rows]
        emit([row], "json", (*_SYNC_COLUMNS, "stats"))
        return
    emit([row], fmt, _SYNC_COLUMNS)
    click.echo()
    emit_stats(stats_rows, fmt)


@click.command("sync")
@config_options
@format_option
@verbose_option
@click.option(
    "--stats",
    is_flag=True,
    help="After the sync, also print the catalog statistics (the rows of `quantbot-bus stats`).",
)
def sync_cmd(config: Config, fmt: str | None, verbose: bool, stats: bool) -> None:
    """Reconcile the artifacts root with the catalog once, then publish it for readers.

    New runs are registered, changed ones updated, vanished ones soft-deleted, broken ones
    rejected (see `quantbot-bus rejected`); runs still being written are counted as pending and
    left for the next sync. For cron, or a host without the daemon; while the daemon runs it
    already does this, and sync refuses to run beside it (naming its pid). Then, as the daemon
    does, checks the alert rules once and delivers their notifications ([alerts]) and rewrites
    the dashboard when due ([report]). Prints the counts (with --stats, then the catalog
    statistics).
    """
    from ..alerts.oneshot import sync

    _one_shot(sync, config, fmt, verbose, stats)


@click.command("rebuild")
@config_options
@format_option
@verbose_option
def rebuild_cmd(config: Config, fmt: str | None, verbose: bool) -> None:
    """Recreate the catalog from the artifacts on disk (they are the source of truth).

    The old working catalog is kept as bus.duckdb.bak next to it; soft-deleted runs and
    resolved rejections are forgotten. Refuses while the daemon runs: stop it first. Then
    checks the alert rules and rewrites the dashboard when due, as sync does. Prints the counts.
    """
    from ..alerts.oneshot import rebuild

    _one_shot(rebuild, config, fmt, verbose)
