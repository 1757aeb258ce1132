"""User-defined exports: the ``[[exports]]`` tables of a config file (a name, SQL over the
reader-side catalog, a format), parsed and checked here and written by
:mod:`quantbot_bus.exports.files`."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .config_keys import check_keys
from .errors import ConfigError

EXPORT_KEYS = ("name", "sql", "format")
_EXPORT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


@dataclass(frozen=True)
class UserExport:
    """A user-defined export: ``sql`` over the reader-side catalog, written as ``name.format``."""

    name: str
    sql: str
    format: str = "parquet"


def parse_user_exports(raw: Any) -> tuple[UserExport, ...]:
    """The ``[[exports]]`` array of a config file, each table checked for its keys and types."""
    if not isinstance(raw, list):
        raise ConfigError("config field 'exports' must be an array of tables ([[exports]])")
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ConfigError(f"config field 'exports[{i}]' must be a table with name and sql")
        check_keys(item, EXPORT_KEYS, f"exports[{i}]")
        for key in ("name", "sql"):
            if not isinstance(item.get(key), str):
                raise ConfigError(f"config field 'exports[{i}].{key}' must be a string")
        fmt = item.get("format", "parquet")
        if not isinstance(fmt, str):
            raise ConfigError(f"config field 'exports[{i}].format' must be a string")
        out.append(UserExport(name=item["name"], sql=item["sql"], format=fmt))
    return tuple(out)


def check_user_exports(exports: Sequence[UserExport]) -> None:
    """Raise ConfigError naming the first export whose name is malformed, taken by a built-in
    summary or another export, or whose SQL is empty or format unknown."""
    seen: set[str] = set()
    reserved = _summary_names() if exports else ()
    for i, exp in enumerate(exports):
        where = f"exports[{i}]"
        if not _EXPORT_NAME.fullmatch(exp.name):
            raise ConfigError(
                f"config field '{where}.name' must match {_EXPORT_NAME.pattern}, got {exp.name!r}"
            )
        if exp.name in reserved:
            raise ConfigError(
                f"config field '{where}.name' is {exp.name!r}, the name of a built-in "
                f"summary export; pick another (reserved: {', '.join(reserved)})"
            )
        if exp.name in seen:
            raise ConfigError(f"config field '{where}.name' repeats the export name {exp.name!r}")
        seen.add(exp.name)
        if not exp.sql.strip():
            raise ConfigError(f"config field '{where}.sql' is empty")
        if exp.format not in ("parquet", "csv"):
            raise ConfigError(
                f"config field '{where}.format' must be parquet or csv, got {exp.format!r}"
            )


def _summary_names() -> tuple[str, ...]:
    """The built-in summary exports (``exports/<name>.parquet``, views ``exports.<name>``), as
    the exports' registry has them; a user export may not take one of these names."""
    from .exports.plugins import summary_names  # the exports import the config

    return summary_names()
