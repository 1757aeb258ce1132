"""Backtests over the user's own calls and candles, read from a DuckDB file they name.

``calls`` reads the calls, ``candles`` finds their candles, ``run`` writes the run.

``run_user_backtest(strategy, interval, duckdb_path, root, candles_table=... | candles_dir=...)``
reads the calls, finds their candles, and hands both to
:func:`quantbot_bus.backtest.runner.write_backtest` as the same :class:`~.market.Call` structures
the synthetic market makes, so the run is written (and registered) like any other backtest run.
The DuckDB file is opened read-only and never modified.

Calls (newest first), from the first of:

- the view ``canon.alerts_std``: ``mint``, ``alert_ts_ms`` (epoch ms), ``chain``, caller name =
  ``caller_name_norm``, else ``caller_raw_name``;
- the table ``user_calls_d`` (older files): ``mint``, ``call_ts_ms``, ``caller_name``, ``chain``
  when the column exists.

A call is a distinct (mint, alert time, caller name); the chain is ``solana`` when missing, the
caller ``unknown`` when both names are. Filters: ``date_from``/``date_to`` (UTC days, inclusive;
``None`` = unbounded) and ``callers`` (exact names). Tokens listed in
``ohlcv_exclusions_d.token_address`` are left out when that table exists. Call ids are
``call_<mint>_<alert_ts_ms>_<index>``, ``index`` counting the calls read, newest first, from 0.

Candles: columns ``token_address``, ``timestamp``, ``interval``, ``open``, ``high``, ``low``,
``close``, ``volume`` (``chain`` may be there; candles are matched by token address alone), from
either a table in the same DuckDB file (``candles_table``, ``name`` or ``schema.name``) or the
daily Parquet files ``ohlcv_candles_YYYY-MM-DD.parquet`` in ``candles_dir`` (only the days the
calls need are read: each alert's day through the day of alert + horizon; a missing day file is
no candles for that day). Only rows whose ``interval`` equals the run's interval (``1s``,
``15s``, ``1m``, ``5m``, ``15m``, ``1h``, ``4h``, ``1d``) are used, and a call's path is the
candles opening in ``[alert_ts_ms, alert_ts_ms + horizon)``.

``timestamp`` is a candle's open time, accepted as a TIMESTAMP / TIMESTAMP WITH TIME ZONE / DATE
column (a TIMESTAMP without zone is read as UTC) or a number read row by row by its size: below
1e11 seconds, from 1e14 on microseconds, milliseconds in between. Rows with a missing or
non-positive open, high, low or close are skipped; a missing volume is 0; of two candles of one
token with the same open time the one with more volume is kept.

A call without candles is reported (:attr:`UserRunResult.calls_without_candles`, the log event
``backtest.calls_without_candles``), not fatal; the run holds the calls that have candles. No
call with candles, a missing file, table or folder, or missing columns raise a
:class:`~quantbot_bus.errors.BusError` naming what is missing.
"""

from .calls import UserCall, open_user_db, read_calls
from .candles import CANDLE_COLUMNS, CANDLE_INTERVAL_MS, DAILY_FILE, CandleSource, candle_source
from .run import MARKET, REPORT_TOKENS, UserRunResult, run_user_backtest

__all__ = [
    "CANDLE_COLUMNS",
    "CANDLE_INTERVAL_MS",
    "DAILY_FILE",
    "MARKET",
    "REPORT_TOKENS",
    "CandleSource",
    "UserCall",
    "UserRunResult",
    "candle_source",
    "open_user_db",
    "read_calls",
    "run_user_backtest",
]
