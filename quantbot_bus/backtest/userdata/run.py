"""One backtest run over the user's calls and candles (rules: :mod:`..userdata`)."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from ...errors import BusError
from ...log import get_logger
from .. import optimize as opt
from ..market import DEFAULT_HORIZON_MINUTES
from ..runner import STRATEGIES, RunResult, write_backtest
from .calls import open_user_db, read_calls
from .candles import CANDLE_INTERVAL_MS, Progress, candle_source, query_candles, stream_calls

MARKET = "user-duckdb"
REPORT_TOKENS = 5  # tokens without candles named in messages

_log = get_logger("quantbot_bus.backtest.userdata")


@dataclass(frozen=True)
class UserRunResult:
    """The written run, and what was read to make it."""

    run: RunResult
    calls_source: str  # "<file name>:<table>"
    candles_source: str  # "<file name>:<table>" or "<folder>/ohlcv_candles_*.parquet"
    calls_read: int
    calls_with_candles: int
    tokens_without_candles: tuple[str, ...]  # distinct, newest call first

    @property
    def calls_without_candles(self) -> int:
        return self.calls_read - self.calls_with_candles


def run_user_backtest(
    strategy: str,
    interval: str,
    duckdb_path: str | os.PathLike[str],
    root: str | os.PathLike[str],
    *,
    candles_table: str | None = None,
    candles_dir: str | os.PathLike[str] | None = None,
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
    callers: Sequence[str] = (),
    horizon_minutes: int = DEFAULT_HORIZON_MINUTES,
    run_id: str | None = None,
    constraints: opt.Constraints | None = None,
    on_progress: Progress | None = None,
    layout: str = "v1",
) -> UserRunResult:
    """Backtest ``strategy`` over the calls in ``duckdb_path`` and their candles (from
    ``candles_table`` in that file or the daily files in ``candles_dir``) and write the run under
    ``root/backtest/<run_id>/`` (``layout="seed"``: ``root/YYYY-MM/run_id=<uuid>/``, as
    :func:`~quantbot_bus.backtest.runner.run_backtest`).

    ``params`` record ``market`` = ``user-duckdb``, ``calls_source`` (``<file name>:<table>``),
    ``candles_source``, the filters (``date_from``, ``date_to``: null when unbounded, ``callers``),
    ``calls_read``, ``calls_without_candles`` and ``calls`` (the calls in the run).
    ``on_progress(1)`` is called per call written. Raises ValueError for bad arguments and
    BusError (NotFoundError for what does not exist) for the data (module docstring).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if interval not in CANDLE_INTERVAL_MS:
        raise ValueError(
            f"interval must be one of {', '.join(CANDLE_INTERVAL_MS)}, got {interval!r}"
        )
    if date_from is not None and date_to is not None and date_from > date_to:
        raise ValueError(f"date_from {date_from} is after date_to {date_to}")
    if horizon_minutes < 1:
        raise ValueError(f"horizon_minutes must be >= 1, got {horizon_minutes}")
    if (candles_table is None) == (candles_dir is None):
        raise ValueError("give exactly one of candles_table and candles_dir")
    horizon_ms = horizon_minutes * 60_000
    file_name = Path(duckdb_path).name
    con = open_user_db(duckdb_path)
    try:
        calls, table = read_calls(
            con, file_name, date_from=date_from, date_to=date_to, callers=callers
        )
        calls_source = f"{file_name}:{table}"
        if not calls:
            raise BusError(
                f"no call in {calls_source} matches {_filters(date_from, date_to, callers)}"
            )
        source = candle_source(con, file_name, table=candles_table, directory=candles_dir)
        covered = {
            row[0]
            for row in query_candles(con, source, calls, interval, horizon_ms, covered_only=True)
        }
        with_candles = [c for i, c in enumerate(calls) if i in covered]
        missing = list(dict.fromkeys(c.mint for i, c in enumerate(calls) if i not in covered))
        _log.info(
            "backtest.calls_read",
            calls_source=calls_source,
            candles_source=source.label,
            calls=len(calls),
            with_candles=len(with_candles),
        )
        if missing:
            _log.warning(
                "backtest.calls_without_candles",
                calls=len(calls) - len(with_candles),
                of_calls=len(calls),
                tokens=len(missing),
                first_tokens=missing[:REPORT_TOKENS],
                interval=interval,
                candles_source=source.label,
            )
        if not with_candles:
            raise BusError(
                f"none of the {len(calls)} calls in {calls_source} has a {interval} candle in "
                f"{source.label} within {horizon_minutes} min after its alert "
                f"(first tokens: {', '.join(missing[:REPORT_TOKENS])})"
            )
        params: dict[str, Any] = {
            "strategy": strategy,
            "interval": interval,
            "date_from": None if date_from is None else date_from.isoformat(),
            "date_to": None if date_to is None else date_to.isoformat(),
            "callers": list(callers),
            "calls": len(with_candles),
            "calls_read": len(calls),
            "calls_without_candles": len(calls) - len(with_candles),
            "horizon_minutes": horizon_minutes,
            "market": MARKET,
            "calls_source": calls_source,
            "candles_source": source.label,
        }
        result = write_backtest(
            strategy,
            interval,
            CANDLE_INTERVAL_MS[interval],
            stream_calls(con, source, with_candles, interval, horizon_ms, on_progress),
            root,
            params=params,
            run_id=run_id,
            constraints=constraints,
            layout=layout,
        )
    except duckdb.Error as exc:  # a column of an unexpected type, a corrupt file...
        raise BusError(f"cannot read the calls or candles of {duckdb_path}: {exc}") from None
    finally:
        con.close()
    return UserRunResult(
        run=result,
        calls_source=calls_source,
        candles_source=source.label,
        calls_read=len(calls),
        calls_with_candles=len(with_candles),
        tokens_without_candles=tuple(missing),
    )


def _filters(date_from: dt.date | None, date_to: dt.date | None, callers: Sequence[str]) -> str:
    parts = [f"from {date_from or 'the start'} to {date_to or 'the end'}"]
    if callers:
        parts.append(f"callers {', '.join(callers)}")
    return "the filters (" + "; ".join(parts) + ")"
