"""Unknown keys of a config table, named with a did-you-mean and reported all at once.

The top level (:mod:`quantbot_bus.config`) and each section's parser (``[regressions]``,
``[alerts]``, ``[report]``) describe their unknown keys with :func:`unknown_keys` and raise
:class:`UnknownKeysError`; the config loader gathers those of every table into one error:
``unknown config fields: 'rot' (did you mean 'root'?), 'max_bach' (did you mean 'max_batch'?)``.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from .errors import ConfigError


class UnknownKeysError(ConfigError):
    """A config table has keys no parser knows; ``items`` describes each (see module doc)."""

    def __init__(self, items: Iterable[str]) -> None:
        self.items = list(items)
        super().__init__(unknown_keys_message(self.items))


def unknown_keys(table: Mapping[str, Any], known: Collection[str], prefix: str = "") -> list[str]:
    """One item per key of ``table`` not in ``known``, in the table's order: ``'prefix.key'``
    and the closest known key (``(did you mean 'prefix.root'?)``), else the known keys."""
    dotted = f"{prefix}." if prefix else ""
    choices = sorted(known)
    items = []
    for key in table:
        if key in known:
            continue
        match = difflib.get_close_matches(str(key), choices, n=1)
        hint = f"did you mean '{dotted}{match[0]}'?" if match else f"known: {', '.join(choices)}"
        items.append(f"'{dotted}{key}' ({hint})")
    return items


def unknown_keys_in_array(array: Any, known: Collection[str], prefix: str) -> list[str]:
    """:func:`unknown_keys` of each table of an array of tables (``prefix[i].key``); nothing
    for anything else (its parser says what is wrong with it)."""
    if not isinstance(array, list):
        return []
    return [
        item
        for i, table in enumerate(array)
        if isinstance(table, Mapping)
        for item in unknown_keys(table, known, f"{prefix}[{i}]")
    ]


def unknown_keys_message(items: Iterable[str]) -> str:
    """The one message for the :func:`unknown_keys` items of one or more tables."""
    items = list(items)
    if len(items) == 1:
        return f"unknown config field {items[0]}"
    return f"unknown config fields: {', '.join(items)}"


def check_keys(table: Mapping[str, Any], known: Collection[str], prefix: str = "") -> None:
    """Raise :class:`UnknownKeysError` naming every key of ``table`` not in ``known``."""
    items = unknown_keys(table, known, prefix)
    if items:
        raise UnknownKeysError(items)
