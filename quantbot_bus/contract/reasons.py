"""How a verdict's reason is worded and carried out of the nested checks.

Every check raises :class:`_Stop` with an :class:`Incomplete` or :class:`Invalid`; the values and
paths it names are rendered short and printable by the helpers here."""

from __future__ import annotations

import os
import re
from typing import Any

from .model import Incomplete, Invalid

_MAX_REASON = 2000


class _Stop(Exception):
    """Internal: carries the verdict out of the nested checks."""

    def __init__(self, result: Incomplete | Invalid) -> None:
        super().__init__(result.reason)
        self.result = result


def _clean(reason: str) -> str:
    """A reason that is valid UTF-8 (lone surrogates escaped) and of bounded length."""
    text = reason.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) > _MAX_REASON:
        text = text[: _MAX_REASON - 15] + "... (truncated)"
    return text


def _show(value: Any, limit: int = 60) -> str:
    """A short, printable rendering of a JSON value for error messages."""
    if isinstance(value, str):
        if len(value) > limit:
            return repr(value[:limit]) + f"... ({len(value)} characters)"
        return repr(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value) if abs(value) < 10**30 else "a huge integer"
    if isinstance(value, list):
        return f"a list of {len(value)} item{'' if len(value) == 1 else 's'}"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__  # pragma: no cover - JSON only yields the types above


def _show_path(path: str | os.PathLike[str]) -> str:
    return repr(os.fspath(path))


def _field_path(parts: Any) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and re.fullmatch(r"[A-Za-z_$][A-Za-z0-9_$]*", part):
            out += f".{part}" if out else part
        else:
            out += f"[{_show(part, 40)}]"
    return out
