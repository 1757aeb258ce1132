"""Lazy package attributes: a package's public names imported from their modules on first use
(PEP 562), so importing the package — which the config and every CLI command do — does not load
what only some paths need (DuckDB, PyArrow, NumPy, matplotlib).

A package lists, per module, the names it re-exports::

    __getattr__ = lazy_attributes(__name__, {"writer": ("write_report", "ReportResult")})

and imports the same names under ``if TYPE_CHECKING:`` for type checkers.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_attributes(package: str, modules: Mapping[str, Iterable[str]]) -> Callable[[str], Any]:
    """The ``__getattr__`` of ``package``: ``name`` from ``package.<module>`` (``modules``:
    module -> the names it defines), imported on first use; AttributeError for any other."""
    home = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = home.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    return __getattr__
