"""Every command registered on ``main`` (walked recursively, whoever added it) has --help text."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from quantbot_bus.cli import main


def walk(
    group: click.Group, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], click.Command]]:
    found: list[tuple[tuple[str, ...], click.Command]] = [(path, group)]
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        if isinstance(command, click.Group):
            found += walk(command, (*path, name))
        else:
            found.append(((*path, name), command))
    return found


COMMANDS = walk(main)


def test_the_walk_finds_every_command_and_subcommand() -> None:
    """The whole command tree, subcommands of groups included (so the walk does recurse)."""
    assert sorted(" ".join(path) for path, _ in COMMANDS) == [
        "",
        "alerts",
        "artifacts",
        "backtest",
        "backtest run",
        "daemon",
        "doctor",
        "pending",
        "query",
        "rebuild",
        "regressions",
        "rejected",
        "report",
        "runs",
        "schema",
        "show",
        "stats",
        "status",
        "sync",
        "systemd",
        "systemd install",
        "systemd uninstall",
    ]


@pytest.mark.parametrize(
    ("path", "command"), [pytest.param(p, c, id=" ".join(p) or "main") for p, c in COMMANDS]
)
def test_every_command_has_help_text(path: tuple[str, ...], command: click.Command) -> None:
    assert (command.help or "").strip(), f"`quantbot-bus {' '.join(path)}` has no help text"
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    first_line = command.help.strip().splitlines()[0]  # type: ignore[union-attr]
    assert " ".join(first_line.split()) in " ".join(result.output.split())
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert (param.help or "").strip(), f"{' '.join(path)} {param.opts[0]} has no help"
