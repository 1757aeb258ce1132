"""The options several commands share, as decorators, and the ``--format`` default they imply.

- :func:`config_options`: ``--config``, ``--root`` (alias ``--base-dir``), ``--exports-dir``,
  ``--state-dir``; the command receives the loaded ``config: Config``.
- :func:`format_option`: ``--format table|json|csv``; :func:`resolve_format` and :func:`emit`
  apply its default (table on a terminal, json when stdout is piped).
- :data:`verbose_option`: ``-v/--verbose`` of the one-shot writers (``sync``, ``rebuild``).
- :class:`UtcDateTime`: an ISO-8601 date or date-time option value, as naive UTC.
"""

from __future__ import annotations

import datetime as dt
import functools
import sys
from collections.abc import Callable, Sequence
from typing import Any

import click

from ..config import load_config
from ..output import FORMATS, render
from ..timeutil import parse_utc


def config_options(fn: Callable[..., Any] | None = None, *, producer: bool = False) -> Any:
    """Shared options: --config, --root (or --base-dir), --exports-dir, --state-dir. Passes
    ``config: Config``. ``@config_options(producer=True)``: a command that only writes runs
    (an ``s3://`` root needs no catalog settings there)."""
    if fn is None:
        return functools.partial(config_options, producer=producer)

    @click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        default=None,
        help="TOML config file (default: $QUANTBOT_BUS_CONFIG, else ./quantbot-bus.toml if present).",
    )
    @click.option(
        "--root",
        "--base-dir",
        "root",
        default=None,
        help="Artifacts root (default ./artifacts); --base-dir is another name for it.",
    )
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
            producer=producer,
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


verbose_option = click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Log every registered/updated/deleted run to stderr (default: only rejections).",
)


def resolve_format(fmt: str | None) -> str:
    """The --format default: table on a terminal, json when piped."""
    return fmt if fmt is not None else ("table" if sys.stdout.isatty() else "json")


def emit(
    rows: Sequence[dict[str, Any]], fmt: str | None, columns: Sequence[str] | None = None
) -> None:
    """Print rows in the chosen format (table on a terminal, json when stdout is piped)."""
    click.echo(render(rows, resolve_format(fmt), columns), nl=False)


class UtcDateTime(click.ParamType):
    """An ISO-8601 date or date-time; naive values are UTC, others are converted to UTC."""

    name = "DATETIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, dt.datetime):
            return value
        parsed = parse_utc(str(value).strip())
        if parsed is None:
            self.fail(
                f"{value!r} is not an ISO-8601 date or date-time "
                "(e.g. 2024-05-01 or 2024-05-01T12:00:00Z)",
                param,
                ctx,
            )
        return parsed
