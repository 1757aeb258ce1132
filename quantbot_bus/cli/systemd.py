"""``systemd install`` / ``systemd uninstall``: the units of :mod:`quantbot_bus.ops.systemd`,
written to (or removed from) the unit directory, and what was done (or would be) printed."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

if TYPE_CHECKING:
    from ..ops.systemd import InstallResult


@click.group("systemd")
def systemd_group() -> None:
    """Install or remove the systemd units (daemon, or a periodic sync timer).

    The units are rendered from templates shipped in the package with this machine's paths:
    this environment's quantbot-bus executable and the data roots from the config file.
    """


def _scope_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--user, --unit-dir, --systemctl and --dry-run, shared by install and uninstall."""
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


def _print_result(result: InstallResult, verb: str) -> None:
    """Warnings on stderr; then each unit, created directory and systemctl call (``# would ...``
    lines and the rendered units with --dry-run); then the notes."""
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
        for d in result.created_dirs:
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
@_scope_options
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
    help="Enable the sync timer (every --interval minutes) instead of the long-running daemon.",
)
@click.option(
    "--interval",
    metavar="MINUTES",
    default=None,
    help="With --timer: minutes between syncs (OnUnitActiveSec=), a whole number from 1 to "
    "1440. [default: 5]",
)
@click.option(
    "--uninstall",
    is_flag=True,
    help="Remove the units instead, as `systemd uninstall` does (with --user, --unit-dir, "
    "--systemctl, --dry-run only).",
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
    interval: str | None,
    uninstall: bool,
    run_as: str | None,
    memory_max: str,
    executable: str | None,
    force: bool,
) -> None:
    """Render, write, reload and enable the units (--dry-run: only print them).

    Writes quantbot-bus.service, quantbot-bus-sync.service and quantbot-bus-sync.timer, then runs
    systemctl daemon-reload and enable --now quantbot-bus.service (or the timer with --timer,
    disabling the other; a timer installed before is restarted). Creates the data directories
    when missing. --interval without --timer or outside 1..1440 exits 2; a failing systemctl
    exits 8. --uninstall does what `systemd uninstall` does.
    """
    from ..errors import ConfigError
    from ..ops.systemd import install, resolve_config_path
    from ..ops.systemd import uninstall as uninstall_units

    if uninstall:
        ctx = click.get_current_context()
        install_only = ("config_path", "timer", "interval", "run_as", "memory_max", "executable")
        for name in (*install_only, "force"):
            if ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT):
                flag = "--config" if name == "config_path" else "--" + name.replace("_", "-")
                raise ConfigError(
                    f"--uninstall removes the units and takes no {flag} (only --user, "
                    "--unit-dir, --systemctl and --dry-run)"
                )
        removed = uninstall_units(
            user=user_mode,
            unit_dir=Path(unit_dir) if unit_dir else None,
            systemctl=shlex.split(systemctl_cmd),
            dry_run=dry_run,
        )
        _print_result(removed, "removed")
        return
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
        interval=interval,
    )
    _print_result(result, "wrote")


@systemd_group.command("uninstall")
@_scope_options
def systemd_uninstall_cmd(
    user_mode: bool, unit_dir: str | None, systemctl_cmd: str, dry_run: bool
) -> None:
    """Stop and disable the units, remove their files, reload. Never touches the data.

    Only removes files that `systemd install` wrote; does nothing when none are installed.
    """
    from ..ops.systemd import uninstall

    result = uninstall(
        user=user_mode,
        unit_dir=Path(unit_dir) if unit_dir else None,
        systemctl=shlex.split(systemctl_cmd),
        dry_run=dry_run,
    )
    _print_result(result, "removed")
