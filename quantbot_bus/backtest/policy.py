"""Exit policies (stop-loss / take-profit / trailing stop) simulated on one candle path.

Simulation rules (:func:`simulate_policy`), deliberately conservative about what happens inside
a candle, whose high/low order is unknown:

- entry at the open of the first candle (``entry_ts_ms`` = its open time);
- on each candle, stops are checked before the take-profit: the active stop level is the higher of
  the stop-loss level ``entry × (1 − stop_loss)`` and, once the peak so far reached
  ``entry × trail_activation``, the trailing level ``peak × (1 − trailing_stop)``, where the peak
  is the max high of the *previous* candles (and the entry price);
- if the candle's low touches the stop level, exit at the stop level, or at the open when the
  candle opens below it (a gap); reason ``stop_loss`` or ``trailing_stop`` (whichever level is the
  active one); else if the high reaches ``entry × take_profit``, exit there, or at the open when it
  opens above (reason ``take_profit``); else after ``max_hold_ms`` exit at the close (``timeout``);
  at the end of the path exit at the last close (``end_of_path``);
- ``exit_ts_ms`` = the exit candle's open time + ``interval_ms`` (an exit is known by the close);
  ``time_exposed_ms`` = exit_ts_ms − entry_ts_ms;
- ``realized_return_bps`` = (exit / entry − 1) × 10 000 (no fees); ``stop_out`` = exit by stop-loss;
- ``max_adverse_excursion_bps`` = (lowest price seen while holding / entry − 1) × 10 000, capped at
  0; on a stop exit candle the lowest price counted is the exit price;
- ``tail_capture`` = (exit / entry − 1) / (peak_multiple − 1) where ``peak_multiple`` is the max
  high of the whole path / entry: the share of the best possible move that was kept (null when the
  path never rose above the entry).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa

from .market import Candle

EXIT_REASONS = ("stop_loss", "trailing_stop", "take_profit", "timeout", "end_of_path")


@dataclass(frozen=True)
class Policy:
    stop_loss: float | None = None  # fraction below entry, e.g. 0.3 -> stop at 0.7 x entry
    take_profit: float | None = None  # multiple of entry, e.g. 3.0 -> sell at 3 x entry
    trailing_stop: float | None = None  # fraction below the running peak
    trail_activation: float = 1.0  # the trailing stop arms once the peak reached this multiple
    max_hold_ms: int | None = None

    def __post_init__(self) -> None:
        if self.stop_loss is not None and not 0 < self.stop_loss < 1:
            raise ValueError(f"stop_loss must be in (0, 1), got {self.stop_loss}")
        if self.take_profit is not None and not self.take_profit > 1:
            raise ValueError(f"take_profit must be > 1, got {self.take_profit}")
        if self.trailing_stop is not None and not 0 < self.trailing_stop < 1:
            raise ValueError(f"trailing_stop must be in (0, 1), got {self.trailing_stop}")
        if not self.trail_activation >= 1:
            raise ValueError(f"trail_activation must be >= 1, got {self.trail_activation}")
        if self.max_hold_ms is not None and self.max_hold_ms <= 0:
            raise ValueError(f"max_hold_ms must be > 0, got {self.max_hold_ms}")

    @property
    def policy_id(self) -> str:
        """A stable readable id, e.g. ``sl30-tp3x-tr25@1.5x``."""

        def pct(v: float | None) -> str:
            return "none" if v is None else f"{round(v * 100):d}"

        tp = "none" if self.take_profit is None else f"{self.take_profit:g}x"
        trail = pct(self.trailing_stop)
        if self.trailing_stop is not None and self.trail_activation != 1.0:
            trail += f"@{self.trail_activation:g}x"
        pid = f"sl{pct(self.stop_loss)}-tp{tp}-tr{trail}"
        if self.max_hold_ms is not None:
            pid += f"-hold{self.max_hold_ms // 60_000}m"
        return pid

    def params_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class Trade:
    entry_ts_ms: int
    exit_ts_ms: int
    entry_px: float
    exit_px: float
    exit_reason: str
    realized_return_bps: float
    stop_out: bool
    max_adverse_excursion_bps: float
    time_exposed_ms: int
    tail_capture: float | None


GRID_DESCRIPTION = (
    "stop_loss 0.2|0.35|0.5 x take_profit 2x|3x|5x x trailing_stop none|0.25|0.4 armed at 1.5x"
)


def default_grid() -> tuple[Policy, ...]:
    """The policy grid searched by the policy and optimize backtests (27 policies)."""
    return tuple(
        Policy(stop_loss=sl, take_profit=tp, trailing_stop=tr, trail_activation=1.5)
        for sl, tp, tr in itertools.product((0.2, 0.35, 0.5), (2.0, 3.0, 5.0), (None, 0.25, 0.4))
    )


def simulate_policy(
    policy: Policy,
    candles: Sequence[Candle],
    interval_ms: int,
    *,
    path_high: float | None = None,
) -> Trade:
    """Trade one path with ``policy`` (rules in the module docstring).

    ``path_high``: the max high of ``candles`` when the caller already knows it (saves a pass when
    a whole grid is simulated on the same path).
    """
    if not candles:
        raise ValueError("cannot trade an empty path")
    if interval_ms <= 0:
        raise ValueError(f"interval_ms must be > 0, got {interval_ms}")
    entry = candles[0].open
    if not entry > 0:
        raise ValueError(f"entry price must be > 0, got {entry!r}")
    entry_ts = candles[0].ts_ms
    sl_level = None if policy.stop_loss is None else entry * (1.0 - policy.stop_loss)
    tp_level = None if policy.take_profit is None else entry * policy.take_profit
    trail = policy.trailing_stop
    arm_level = entry * policy.trail_activation
    peak = entry
    lowest = entry
    exit_px = candles[-1].close
    reason = "end_of_path"
    exit_candle = candles[-1]
    for c in candles:
        level, why = sl_level, "stop_loss"
        if trail is not None and peak >= arm_level:
            trail_level = peak * (1.0 - trail)
            if level is None or trail_level >= level:
                level, why = trail_level, "trailing_stop"
        if level is not None and c.low <= level:
            exit_px, reason, exit_candle = min(c.open, level), why, c
            lowest = min(lowest, exit_px)
            break
        lowest = min(lowest, c.low)
        if tp_level is not None and c.high >= tp_level:
            exit_px, reason, exit_candle = max(c.open, tp_level), "take_profit", c
            break
        if (
            policy.max_hold_ms is not None
            and c.ts_ms + interval_ms - entry_ts >= policy.max_hold_ms
        ):
            exit_px, reason, exit_candle = c.close, "timeout", c
            break
        peak = max(peak, c.high)
    exit_ts = exit_candle.ts_ms + interval_ms
    path_peak = (max(c.high for c in candles) if path_high is None else path_high) / entry
    ret = exit_px / entry - 1.0
    return Trade(
        entry_ts_ms=entry_ts,
        exit_ts_ms=exit_ts,
        entry_px=entry,
        exit_px=exit_px,
        exit_reason=reason,
        realized_return_bps=ret * 10_000.0,
        stop_out=reason == "stop_loss",
        max_adverse_excursion_bps=min(0.0, (lowest / entry - 1.0) * 10_000.0),
        time_exposed_ms=exit_ts - entry_ts,
        tail_capture=ret / (path_peak - 1.0) if path_peak > 1.0 else None,
    )


# -- tables (written with pyarrow) -----------------------------------------------------------

POLICY_RESULTS_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("policy_id", pa.string()),
        ("call_id", pa.string()),
        ("realized_return_bps", pa.float64()),
        ("stop_out", pa.bool_()),
        ("max_adverse_excursion_bps", pa.float64()),
        ("time_exposed_ms", pa.int64()),
        ("tail_capture", pa.float64()),
        ("entry_ts_ms", pa.int64()),
        ("exit_ts_ms", pa.int64()),
        ("entry_px", pa.float64()),
        ("exit_px", pa.float64()),
        ("exit_reason", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)

CALL_RESULTS_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("call_id", pa.string()),
        ("caller_name", pa.string()),
        ("mint", pa.string()),
        ("chain", pa.string()),
        ("policy_id", pa.string()),
        ("entry_ts_ms", pa.int64()),
        ("exit_ts_ms", pa.int64()),
        ("entry_px", pa.float64()),
        ("exit_px", pa.float64()),
        ("exit_reason", pa.string()),
        ("position_usd", pa.float64()),
        ("pnl_usd", pa.float64()),
        ("pnl_pct", pa.float64()),
        ("return_bps", pa.float64()),
        ("win", pa.bool_()),
        ("drawdown_bps", pa.float64()),
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)

_TRADE_FIELDS = (
    "realized_return_bps",
    "stop_out",
    "max_adverse_excursion_bps",
    "time_exposed_ms",
    "tail_capture",
    "entry_ts_ms",
    "exit_ts_ms",
    "entry_px",
    "exit_px",
    "exit_reason",
)


@dataclass(frozen=True)
class CallTrades:
    """One call and its trade under each policy of the grid (same order as the grid)."""

    call_id: str
    caller_name: str
    mint: str
    chain: str
    trades: tuple[Trade, ...]


def trade_call(
    call_id: str,
    caller_name: str,
    mint: str,
    chain: str,
    candles: Sequence[Candle],
    policies: Sequence[Policy],
    interval_ms: int,
) -> CallTrades:
    high = max(c.high for c in candles)
    trades = tuple(simulate_policy(p, candles, interval_ms, path_high=high) for p in policies)
    return CallTrades(call_id, caller_name, mint, chain, trades)


def policy_results_table(
    results: Sequence[CallTrades],
    policies: Sequence[Policy],
    run_id: str,
    created_at: dt.datetime,
) -> pa.Table:
    """``backtest_policy_results``: one row per (policy, call), grouped by policy."""
    cols: dict[str, list[Any]] = {name: [] for name in POLICY_RESULTS_SCHEMA.names}
    for k, policy in enumerate(policies):
        pid = policy.policy_id
        for r in results:
            t = r.trades[k]
            cols["policy_id"].append(pid)
            cols["call_id"].append(r.call_id)
            for f in _TRADE_FIELDS:
                cols[f].append(getattr(t, f))
    n = len(cols["call_id"])
    cols["run_id"] = [run_id] * n
    cols["created_at"] = [created_at] * n
    return pa.table(cols, schema=POLICY_RESULTS_SCHEMA)


def best_policy_index(results: Sequence[CallTrades], policies: Sequence[Policy]) -> int:
    """The grid policy with the highest mean realized return (ties: the earlier policy)."""
    if not results:
        return 0
    means = [
        statistics.fmean(r.trades[k].realized_return_bps for r in results)
        for k in range(len(policies))
    ]
    return max(range(len(policies)), key=lambda k: (means[k], -k))


def call_results_table(
    results: Sequence[CallTrades],
    policy: Policy,
    k: int,
    run_id: str,
    created_at: dt.datetime,
    position_usd: float,
) -> pa.Table:
    """``backtest_call_results``: each call's trade under ``policy`` (grid index ``k``), with pnl
    for a ``position_usd`` position: pnl_usd = position × (exit/entry − 1), pnl_pct in percent,
    return_bps in basis points, win = pnl_usd > 0, drawdown_bps = the trade's max adverse
    excursion."""
    rows = []
    for r in results:
        t = r.trades[k]
        ret = t.exit_px / t.entry_px - 1.0
        rows.append(
            {
                "run_id": run_id,
                "call_id": r.call_id,
                "caller_name": r.caller_name,
                "mint": r.mint,
                "chain": r.chain,
                "policy_id": policy.policy_id,
                "entry_ts_ms": t.entry_ts_ms,
                "exit_ts_ms": t.exit_ts_ms,
                "entry_px": t.entry_px,
                "exit_px": t.exit_px,
                "exit_reason": t.exit_reason,
                "position_usd": position_usd,
                "pnl_usd": position_usd * ret,
                "pnl_pct": ret * 100.0,
                "return_bps": t.realized_return_bps,
                "win": ret > 0,
                "drawdown_bps": t.max_adverse_excursion_bps,
                "created_at": created_at,
            }
        )
    return pa.Table.from_pylist(rows, schema=CALL_RESULTS_SCHEMA)
