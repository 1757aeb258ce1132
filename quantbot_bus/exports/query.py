"""The query path: one read-only statement over the publication (``catalog.*``, ``exports.*``).

``quantbot-bus query`` opens the views file readers open (never the working catalog), checks
that the SQL is exactly one SELECT (or EXPLAIN), runs it, and returns the rows
(:func:`run_query`) or writes them to a Parquet or CSV file atomically (:func:`query_to_file`).
Errors become a :class:`~quantbot_bus.errors.QueryError` with a one-line message; an unknown
table lists the tables and views a query can use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from ..catalog import open_reader
from ..config import Config
from ..errors import QueryError
from ..fsutil import replaceable
from .store import copy_to

_READ_ONLY_TYPES = ("SELECT", "EXPLAIN")


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


def open_query_connection(config: Config) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the publication (``catalog.*`` and ``exports.*`` views), or
    to the Iceberg tables under the same names when ``catalog = "iceberg"``."""
    if config.catalog == "iceberg":
        from ..iceberg.reader import open_iceberg_reader

        return open_iceberg_reader(config)
    return open_reader(config.snapshot_path)


def available_relations(con: duckdb.DuckDBPyConnection) -> list[str]:
    """``schema.name`` of every table and view a query can use (catalog and exports)."""
    rows = con.execute(
        """
        SELECT DISTINCT CASE WHEN database_name = 'exports' THEN 'exports'
                             ELSE schema_name END || '.' || name AS rel
        FROM (SELECT database_name, schema_name, table_name AS name FROM duckdb_tables()
              UNION ALL
              SELECT database_name, schema_name, view_name FROM duckdb_views() WHERE NOT internal)
        WHERE (database_name = current_database() AND schema_name IN ('catalog', 'exports'))
           OR database_name = 'exports'
        ORDER BY rel
        """
    ).fetchall()
    return [r[0] for r in rows]


def check_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> str:
    """``sql`` without its trailing ``;`` if it is exactly one SELECT or EXPLAIN, else a
    :class:`QueryError` saying what is wrong."""
    text = sql.strip()
    if not text:
        raise QueryError("the query is empty: pass one SELECT statement")
    try:
        statements = con.extract_statements(text)
    except duckdb.Error as exc:
        raise QueryError(f"bad SQL: {_first_line(exc)}") from None
    if len(statements) != 1:
        raise QueryError(f"pass exactly one statement (got {len(statements)})")
    kind = statements[0].type.name
    if kind not in _READ_ONLY_TYPES:
        raise QueryError(
            f"quantbot-bus query is read-only: a {kind} statement is not allowed "
            "(use SELECT; to write a file use --format parquet|csv --output FILE)"
        )
    return text.rstrip(";").strip()


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _query_error(con: duckdb.DuckDBPyConnection, exc: duckdb.Error) -> Exception:
    message = _first_line(exc)
    if isinstance(exc, duckdb.ParserException):
        return QueryError(f"bad SQL: {message}")
    if isinstance(exc, duckdb.CatalogException) and "does not exist" in message:
        available = ", ".join(available_relations(con)) or "(none yet)"
        return QueryError(f"{message.split('!')[0]}; available tables and views: {available}")
    if "read-only" in message:
        return QueryError(f"quantbot-bus query is read-only: {message}")
    return QueryError(f"query failed: {message}")


def run_query(config: Config, sql: str) -> QueryResult:
    """Run one read-only statement over the reader-side catalog and the export views."""
    con = open_query_connection(config)
    try:
        text = check_read_only(con, sql)
        try:
            cur = con.execute(text)
            columns = [d[0] for d in cur.description or ()]
            return QueryResult(columns, cur.fetchall())
        except duckdb.Error as exc:
            raise _query_error(con, exc) from None
    finally:
        con.close()


def query_to_file(config: Config, sql: str, output: Path, fmt: str) -> int:
    """Write the result of one read-only SELECT to ``output`` (parquet or csv): atomically, or
    through it when it is a symlink, a device or a pipe (:func:`~quantbot_bus.fsutil.replaceable`)."""
    con = open_query_connection(config)
    try:
        text = check_read_only(con, sql)
        output = Path(output).absolute()
        try:
            return copy_to(
                con,
                text,
                {},
                output,
                "parquet" if fmt == "parquet" else "csv",
                atomic=replaceable(output),
            )
        except duckdb.Error as exc:
            raise _query_error(con, exc) from None
    finally:
        con.close()
