"""SQL text the exports generate: quoted identifiers and literals, optional columns.

SQL in this package is assembled only from its own constants and from identifiers quoted with
:func:`q` (column names read back from DESCRIBE, validated table names); every value (run ids,
paths, keys) is a bound parameter. Paths inside CREATE VIEW (which cannot take parameters) are
our own absolute paths, quoted with :func:`lit`.
"""

# ruff: noqa: S608 - see the module docstring

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..sqltext import lit, q

if TYPE_CHECKING:
    import duckdb

__all__ = ["col", "columns", "lit", "q"]


def col(cols: Iterable[str], name: str, sql_type: str) -> str:
    """Column ``name`` if the relation with columns ``cols`` has it, else a typed NULL."""
    return q(name) if name in set(cols) else f"CAST(NULL AS {sql_type})"


def columns(con: duckdb.DuckDBPyConnection, relation: str) -> list[str]:
    """The column names of ``relation`` (one DESCRIBE)."""
    return [r[0] for r in con.execute(f"DESCRIBE {relation}").fetchall()]
