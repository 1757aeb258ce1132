"""The candles of the user's calls, from a table of their DuckDB file or a folder of daily
Parquet files (rules: :mod:`quantbot_bus.backtest.userdata`)."""

# ruff: noqa: S608 - SQL text from this module's constants, identifiers quoted by sqltext.q and
# file paths quoted by sqltext.lit; every value is bound.

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from ...errors import BusError, NotFoundError
from ...sqltext import lit, q
from ..intervals import CANDLE_INTERVAL_MS
from ..market import Call, Candle
from .calls import UserCall, relation_columns, require_columns

CANDLE_COLUMNS = (
    "token_address",
    "timestamp",
    "interval",
    "open",
    "high",
    "low",
    "close",
    "volume",
)
DAILY_FILE = "ohlcv_candles_{day}.parquet"
_CANDLES_PER_QUERY = 2_000_000  # about this many candles are sorted per query
_FETCH_ROWS = 50_000  # rows fetched at a time (memory stays flat)
_DAY_MS = 86_400_000
_NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "FLOAT", "DOUBLE", "REAL")

Progress = Callable[[int], None]


@dataclass(frozen=True)
class CandleSource:
    """Where candles are read from: a table of the user's file or a folder of daily files."""

    label: str  # for params and messages
    table: str | None = None  # the quoted relation
    directory: Path | None = None

    def relation(self, days: Sequence[dt.date]) -> str | None:
        """The SQL relation holding the candles of ``days``; None when no file covers them."""
        if self.table is not None:
            return self.table
        assert self.directory is not None
        files = [self.directory / DAILY_FILE.format(day=d.isoformat()) for d in sorted(days)]
        present = [lit(str(f)) for f in files if f.is_file()]
        if not present:
            return None
        return f"read_parquet([{', '.join(present)}], union_by_name = true)"


def candle_source(
    con: duckdb.DuckDBPyConnection,
    file_name: str,
    *,
    table: str | None = None,
    directory: str | os.PathLike[str] | None = None,
) -> CandleSource:
    """The candle source the user named (exactly one of ``table`` and ``directory``); raises
    NotFoundError when it does not exist and BusError when the table lacks a column."""
    if (table is None) == (directory is None):
        raise ValueError("give exactly one of a candles table and a candles directory")
    if directory is not None:
        d = Path(directory)
        if not d.is_dir():
            raise NotFoundError(f"candles directory {d} does not exist")
        return CandleSource(label=f"{d.name}/{DAILY_FILE.format(day='*')}", directory=d)
    assert table is not None
    schema, _, name = table.rpartition(".")
    found = relation_columns(con, name, schema or None)
    if found is None:
        raise NotFoundError(f"candles table {table} does not exist in {file_name}")
    require_columns(found[1], CANDLE_COLUMNS, f"candles table {table} in {file_name}")
    return CandleSource(label=f"{file_name}:{table}", table=found[0])


def _timestamp_ms(con: duckdb.DuckDBPyConnection, relation: str, label: str) -> str:
    """The SQL expression of a candle's open time in epoch ms (accepted types: module docstring);
    checks the relation's columns on the way."""
    described = con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()
    types = {str(r[0]): str(r[1]).upper() for r in described}
    require_columns(types, CANDLE_COLUMNS, f"candles in {label}")
    kind = types["timestamp"]
    col = 'k."timestamp"'
    if kind == "TIMESTAMP WITH TIME ZONE":
        return f"epoch_ms({col})"
    if kind.startswith("TIMESTAMP") or kind == "DATE":
        return f"epoch_ms(CAST({col} AS TIMESTAMP))"
    if kind.startswith(_NUMERIC) or kind.startswith(("UBIGINT", "UINTEGER", "DECIMAL")):
        x = f"CAST({col} AS DOUBLE)"
        return (
            f"CAST(round(CASE WHEN {x} < 1e11 THEN {x} * 1000 WHEN {x} >= 1e14 THEN {x} / 1000 "
            f"ELSE {x} END) AS BIGINT)"
        )
    raise BusError(
        f"column timestamp of the candles in {label} has type {kind}; expected epoch seconds, "
        "milliseconds or microseconds, or a TIMESTAMP"
    )


def _days(calls: Sequence[UserCall], horizon_ms: int) -> list[dt.date]:
    """Each alert's UTC day through the day of its last candle."""
    days: set[int] = set()
    for c in calls:
        days.update(
            range(c.alert_ts_ms // _DAY_MS, (c.alert_ts_ms + horizon_ms - 1) // _DAY_MS + 1)
        )
    epoch = dt.date(1970, 1, 1)
    return [epoch + dt.timedelta(days=d) for d in sorted(days)]


def query_candles(
    con: duckdb.DuckDBPyConnection,
    source: CandleSource,
    calls: Sequence[UserCall],
    interval: str,
    horizon_ms: int,
    *,
    covered_only: bool,
) -> Iterator[tuple[Any, ...]]:
    """The candles of ``calls`` as rows (i, ts_ms, open, high, low, close, volume), ``i`` the
    index in ``calls``, ordered by ``i``, open time, then volume (most first), fetched in
    batches; or, with ``covered_only``, the distinct ``(i,)`` having any."""
    relation = source.relation(_days(calls, horizon_ms))
    if relation is None:
        return
    ts_ms = _timestamp_ms(con, relation, source.label)
    select, order = (
        ("SELECT DISTINCT c.i", "")
        if covered_only
        else (
            "SELECT c.i, k.ts_ms, k.o, k.h, k.l, k.cl, k.v",
            "ORDER BY c.i, k.ts_ms, k.v DESC, k.o, k.cl",
        )
    )
    sql = f"""
        {select}
        FROM quantbot_calls AS c
        JOIN (SELECT CAST(k.token_address AS VARCHAR) AS token, {ts_ms} AS ts_ms,
                     CAST(k.{q("open")} AS DOUBLE) AS o, CAST(k.high AS DOUBLE) AS h,
                     CAST(k.low AS DOUBLE) AS l, CAST(k.{q("close")} AS DOUBLE) AS cl,
                     COALESCE(CAST(k.volume AS DOUBLE), 0) AS v
              FROM {relation} AS k
              WHERE k.{q("interval")} = ?
                AND CAST(k.token_address AS VARCHAR) IN (SELECT mint FROM quantbot_calls)) AS k
          ON k.token = c.mint AND k.ts_ms >= c.alert_ts_ms AND k.ts_ms < c.alert_ts_ms + ?
        WHERE k.o > 0 AND k.h > 0 AND k.l > 0 AND k.cl > 0
        {order}
    """
    keys = pa.table(
        {
            "i": pa.array(range(len(calls)), pa.int64()),
            "mint": pa.array([c.mint for c in calls], pa.string()),
            "alert_ts_ms": pa.array([c.alert_ts_ms for c in calls], pa.int64()),
        }
    )
    con.register("quantbot_calls", keys)
    try:
        result = con.execute(sql, [interval, horizon_ms])
        while batch := result.fetchmany(_FETCH_ROWS):
            yield from batch
    finally:
        con.unregister("quantbot_calls")


def stream_calls(
    con: duckdb.DuckDBPyConnection,
    source: CandleSource,
    calls: Sequence[UserCall],
    interval: str,
    horizon_ms: int,
    on_progress: Progress | None,
) -> Iterator[Call]:
    """``calls`` with their candles, one call at a time (one query per chunk of calls)."""
    size = max(1, _CANDLES_PER_QUERY // max(1, horizon_ms // CANDLE_INTERVAL_MS[interval]))
    for start in range(0, len(calls), size):
        chunk = calls[start : start + size]
        current = -1
        path: list[Candle] = []
        rows = query_candles(con, source, chunk, interval, horizon_ms, covered_only=False)
        for i, ts, o, h, low, c, v in rows:
            if i != current:
                if path:
                    yield _call(chunk[current], path, on_progress)
                current, path = i, []
            elif ts == path[-1].ts_ms:
                continue  # a second candle at this open time, with less volume
            path.append(Candle(ts, o, h, low, c, v))
        if path:
            yield _call(chunk[current], path, on_progress)


def _call(call: UserCall, path: list[Candle], on_progress: Progress | None) -> Call:
    if on_progress is not None:
        on_progress(1)
    return Call(
        call.call_id, call.caller_name, call.mint, call.chain, call.alert_ts_ms, tuple(path)
    )
