"""The calls in the user's DuckDB file (rules: :mod:`quantbot_bus.backtest.userdata`)."""

# ruff: noqa: S608 - SQL text from this module's constants and identifiers quoted by sqltext.q

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from ...errors import BusError, NotFoundError
from ...sqltext import q


@dataclass(frozen=True)
class UserCall:
    """One call read from the user's file (no candles yet)."""

    call_id: str
    caller_name: str
    mint: str
    chain: str
    alert_ts_ms: int


def open_user_db(path: str | os.PathLike[str]) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the user's DuckDB file; NotFoundError when it does not exist."""
    p = Path(path)
    if not p.is_file():
        raise NotFoundError(f"DuckDB file {p} does not exist")
    try:
        return duckdb.connect(str(p), read_only=True)
    except duckdb.Error as exc:
        raise BusError(f"cannot open {p} as a DuckDB file read-only: {exc}") from None


def relation_columns(
    con: duckdb.DuckDBPyConnection, name: str, schema: str | None = None
) -> tuple[str, dict[str, str]] | None:
    """(quoted relation, {column: type}) of table or view ``name`` (in ``schema``, else in
    ``main`` first, then any schema); None when it does not exist."""
    rows = con.execute(
        "SELECT table_schema, column_name, data_type FROM information_schema.columns "
        "WHERE table_catalog = current_database() AND table_name = ? "
        "AND (? IS NULL OR table_schema = ?) "
        "ORDER BY table_schema <> 'main', table_schema, ordinal_position",
        [name, schema, schema],
    ).fetchall()
    if not rows:
        return None
    first = rows[0][0]
    return f"{q(first)}.{q(name)}", {c: t for s, c, t in rows if s == first}


def require_columns(columns: dict[str, str], needed: Sequence[str], what: str) -> None:
    missing = [c for c in needed if c not in columns]
    if missing:
        raise BusError(
            f"{what} lacks column(s) {', '.join(missing)} (it has: {', '.join(columns)})"
        )


def _day_ms(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)


def read_calls(
    con: duckdb.DuckDBPyConnection,
    file_name: str,
    *,
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
    callers: Sequence[str] = (),
) -> tuple[list[UserCall], str]:
    """The calls in the file matching the filters, newest first, and the table they came from
    (rules in the module docstring)."""
    found = relation_columns(con, "alerts_std", "canon")
    if found is not None:
        table = "canon.alerts_std"
        rel, cols = found
        require_columns(cols, ("mint", "alert_ts_ms"), f"view {table} in {file_name}")
        names = [
            f"NULLIF(CAST({q(c)} AS VARCHAR), '')"
            for c in ("caller_name_norm", "caller_raw_name")
            if c in cols
        ]
        ts = "alert_ts_ms"
    else:
        found = relation_columns(con, "user_calls_d")
        if found is None:
            raise NotFoundError(
                f"{file_name} has neither the view canon.alerts_std nor the table user_calls_d: "
                "no calls to read"
            )
        table = "user_calls_d"
        rel, cols = found
        require_columns(
            cols, ("mint", "call_ts_ms", "caller_name"), f"table {table} in {file_name}"
        )
        names = ["NULLIF(CAST(caller_name AS VARCHAR), '')"]
        ts = "call_ts_ms"
    caller = "COALESCE(" + ", ".join([*names, "'unknown'"]) + ")"
    chain = "NULLIF(CAST(chain AS VARCHAR), '')" if "chain" in cols else "NULL"
    where = ["mint IS NOT NULL", "mint <> ''", "ts IS NOT NULL"]
    args: list[Any] = []
    if date_from is not None:
        where.append("ts >= ?")
        args.append(_day_ms(date_from))
    if date_to is not None:
        where.append("ts < ?")
        args.append(_day_ms(date_to + dt.timedelta(days=1)))
    if callers:
        where.append("list_contains(?, caller)")
        args.append(list(callers))
    excluded = relation_columns(con, "ohlcv_exclusions_d")
    if excluded is not None:
        require_columns(excluded[1], ("token_address",), f"table ohlcv_exclusions_d in {file_name}")
        where.append(
            f"mint NOT IN (SELECT CAST(token_address AS VARCHAR) FROM {excluded[0]} "
            "WHERE token_address IS NOT NULL)"
        )
    rows = con.execute(
        f"""
        SELECT mint, ts, caller, COALESCE(max(chain), 'solana') AS chain
        FROM (SELECT CAST(mint AS VARCHAR) AS mint, CAST({q(ts)} AS BIGINT) AS ts,
                     {caller} AS caller, {chain} AS chain
              FROM {rel})
        WHERE {" AND ".join(where)}
        GROUP BY mint, ts, caller
        ORDER BY ts DESC, mint, caller
        """,
        args,
    ).fetchall()
    calls = [
        UserCall(f"call_{mint}_{ts}_{i}", caller_name, mint, chain, ts)
        for i, (mint, ts, caller_name, chain) in enumerate(rows)
    ]
    return calls, table
