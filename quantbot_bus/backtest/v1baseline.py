"""The V1 baseline: the old system's take-profit × stop-loss grid, traded with a capital simulation.

The old system specified it (docs: producers/README.md, "Frontiers") but never implemented it.
Pure functions, on the candles of :mod:`quantbot_bus.backtest.market`:

- **grid** (:func:`v1_grid`): take-profit multiple {1.5, 2, 2.5, 3, 4, 5} × stop-loss multiple
  {0.85, 0.88, 0.90, 0.92, 0.95} (the stop sits at ``entry × sl_mult``), max hold 48 h, no
  trailing stop: 30 parameter sets.
- **one trade** (:func:`simulate_v1_trade`): entry at the *close* of the first candle opening at
  or after the alert, at that candle's close time; then candle by candle, the stop first (low ≤
  the stop: exit at the stop, or at the open when the candle opens below it), then the target
  (high ≥ ``entry × tp_mult``: exit there, or at the open when it opens above), then the hold
  (the candle's close time − entry time ≥ 48 h: exit at its close, ``timeout``); when the data
  ends first, at the last close (``end_of_path``; the synthetic market runs 12 h past the alert).
  The exit time is the exit candle's close time.
- **capital** (:func:`simulate_capital`): 10 000 of cash; trades in entry-time order (ties: call
  id); before an entry, every position exiting at or before it is closed (in exit order) and its
  proceeds return to cash. A trade is skipped when 25 positions are open, or when its size
  ``min(4 % of cash, 200 / (1 − sl_mult))`` (risk = size × (1 − sl_mult) ≤ 200) is below 10.
  Costs are 30 bps taker fee + 10 bps slippage = 40 bps of the notional on each leg: the entry
  takes ``size × 1.004`` from cash, the exit returns ``size × exit/entry × 0.996``. The final
  capital, once every position is closed, is the objective (highest best).
- **flags**: ``collapsed_capital`` = final capital below the start; ``extreme_params`` =
  ``sl_mult < 0.88`` or ``tp_mult > 4``. A caller's flags are those of its best (rank 1) row.
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
import json
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .market import Candle

TP_MULTS = (1.5, 2.0, 2.5, 3.0, 4.0, 5.0)
SL_MULTS = (0.85, 0.88, 0.90, 0.92, 0.95)
MAX_HOLD_MS = 48 * 3_600_000
GRID_DESCRIPTION = "tp_mult 1.5|2|2.5|3|4|5 x sl_mult 0.85|0.88|0.9|0.92|0.95, hold 48h, no trail"


@dataclass(frozen=True)
class V1Params:
    """One V1 parameter set: take-profit and stop-loss as multiples of the entry price."""

    tp_mult: float
    sl_mult: float
    max_hold_ms: int = MAX_HOLD_MS

    def __post_init__(self) -> None:
        if not self.tp_mult > 1:
            raise ValueError(f"tp_mult must be > 1, got {self.tp_mult}")
        if not 0 < self.sl_mult < 1:
            raise ValueError(f"sl_mult must be in (0, 1), got {self.sl_mult}")
        if self.max_hold_ms <= 0:
            raise ValueError(f"max_hold_ms must be > 0, got {self.max_hold_ms}")

    def params_json(self) -> str:
        return json.dumps(
            {
                "tp_mult": self.tp_mult,
                "sl_mult": self.sl_mult,
                "max_hold_ms": self.max_hold_ms,
                "trailing_stop": None,
            },
            sort_keys=True,
        )

    @property
    def extreme(self) -> bool:
        """ "Requires extreme params": a stop below 0.88 × entry or a target above 4×."""
        return self.sl_mult < 0.88 or self.tp_mult > 4


def v1_grid() -> tuple[V1Params, ...]:
    """The 30 V1 parameter sets, take-profit major."""
    return tuple(V1Params(tp, sl) for tp, sl in itertools.product(TP_MULTS, SL_MULTS))


@dataclass(frozen=True)
class V1Trade:
    """One call traded with one V1 parameter set (prices and times in the candles' units)."""

    call_id: str
    caller_name: str
    entry_ts_ms: int
    exit_ts_ms: int
    entry_px: float
    exit_px: float
    exit_reason: str  # stop_loss | take_profit | timeout | end_of_path

    @property
    def stop_out(self) -> bool:
        return self.exit_reason == "stop_loss"


def simulate_v1_trade(
    params: V1Params,
    candles: Sequence[Candle],
    interval_ms: int,
    *,
    call_id: str = "",
    caller_name: str = "",
) -> V1Trade | None:
    """Trade ``candles`` (the first one opens at or after the alert) with ``params``; ``None``
    when there is no candle or the entry price is not positive (rules: module docstring)."""
    if not candles or not candles[0].close > 0:
        return None
    entry, entry_ts = candles[0].close, candles[0].ts_ms + interval_ms
    stop, target = entry * params.sl_mult, entry * params.tp_mult
    exit_px, reason, exit_ts = entry, "end_of_path", entry_ts
    for c in candles[1:]:
        close_ts = c.ts_ms + interval_ms
        if c.low <= stop:
            exit_px, reason, exit_ts = min(c.open, stop), "stop_loss", close_ts
            break
        if c.high >= target:
            exit_px, reason, exit_ts = max(c.open, target), "take_profit", close_ts
            break
        exit_px, exit_ts = c.close, close_ts
        if close_ts - entry_ts >= params.max_hold_ms:
            reason = "timeout"
            break
    return V1Trade(call_id, caller_name, entry_ts, exit_ts, entry, exit_px, reason)


@dataclass(frozen=True)
class CapitalRules:
    """The V1 capital simulation's rules (the defaults are the V1 baseline's)."""

    start: float = 10_000.0
    max_fraction: float = 0.04  # of the free cash, per position
    max_risk: float = 200.0  # size × (1 − sl_mult), per position
    max_open: int = 25
    min_size: float = 10.0
    cost_bps: float = 30.0 + 10.0  # taker fee + slippage, on each leg


@dataclass(frozen=True)
class CapitalResult:
    """What one capital simulation ends with."""

    final_capital: float
    trades: int  # positions taken
    skipped: int  # trades not taken: 25 open positions, or a size below the minimum
    fees_paid: float  # fees and slippage, both legs
    max_open_positions: int
    net_returns_bps: tuple[float, ...]  # per position taken, after costs, in entry order
    stop_outs: int


def simulate_capital(
    trades: Iterable[V1Trade], sl_mult: float, rules: CapitalRules = CapitalRules()
) -> CapitalResult:
    """Run the capital simulation over ``trades`` (rules: module docstring)."""
    cost = rules.cost_bps / 10_000.0
    risk_cap = rules.max_risk / (1.0 - sl_mult)
    cash, fees, skipped, stop_outs, peak = rules.start, 0.0, 0, 0, 0
    returns: list[float] = []
    open_: list[tuple[int, int, float]] = []  # (exit_ts_ms, sequence, proceeds): a heap
    for seq, t in enumerate(sorted(trades, key=lambda t: (t.entry_ts_ms, t.call_id))):
        while open_ and open_[0][0] <= t.entry_ts_ms:
            cash += heapq.heappop(open_)[2]
        size = min(cash * rules.max_fraction, risk_cap)
        if len(open_) >= rules.max_open or size < rules.min_size:
            skipped += 1
            continue
        paid = size * (1.0 + cost)
        gross = size * t.exit_px / t.entry_px
        proceeds = gross * (1.0 - cost)
        cash -= paid
        fees += size * cost + gross * cost
        heapq.heappush(open_, (t.exit_ts_ms, seq, proceeds))
        peak = max(peak, len(open_))
        returns.append((proceeds / paid - 1.0) * 10_000.0)
        stop_outs += t.stop_out
    cash += sum(p for _, _, p in open_)
    return CapitalResult(cash, len(returns), skipped, fees, peak, tuple(returns), stop_outs)


def frontier_row(
    result: CapitalResult,
    params: V1Params,
    *,
    run_id: str,
    caller_name: str | None,
    created_at: dt.datetime,
    rules: CapitalRules = CapitalRules(),
) -> dict[str, Any]:
    """One V1 frontier row (before the typed parameter columns and the rank are added)."""
    r = result.net_returns_bps
    return {
        "run_id": run_id,
        "caller_name": caller_name,
        "scope": "all" if caller_name is None else "caller",
        "policy_params": params.params_json(),
        "meets_constraints": result.final_capital >= rules.start,
        "objective_score": result.final_capital,
        "avg_return_bps": statistics.fmean(r) if r else None,
        "median_return_bps": statistics.median(r) if r else None,
        "stop_out_rate": result.stop_outs / result.trades if result.trades else None,
        "trades": result.trades,
        "skipped_trades": result.skipped,
        "initial_capital": rules.start,
        "final_capital": result.final_capital,
        "total_return_pct": (result.final_capital / rules.start - 1.0) * 100.0,
        "fees_paid": result.fees_paid,
        "max_open_positions": result.max_open_positions,
        "collapsed_capital": result.final_capital < rules.start,
        "extreme_params": params.extreme,
        "created_at": created_at,
    }


def baseline_rows(
    trades_by_params: Mapping[V1Params, Sequence[V1Trade]],
    *,
    run_id: str,
    created_at: dt.datetime,
    rules: CapitalRules = CapitalRules(),
) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """The V1 frontier rows: every call as one portfolio (``caller_name`` None), and each
    caller's calls as its own portfolio of ``rules.start``. Returns (overall, per caller)."""
    overall: list[dict[str, Any]] = []
    per_caller: dict[str, list[dict[str, Any]]] = {}
    for params, trades in trades_by_params.items():
        by_caller: dict[str | None, list[V1Trade]] = {None: list(trades)}
        for t in trades:
            by_caller.setdefault(t.caller_name, []).append(t)
        for caller, group in by_caller.items():
            result = simulate_capital(group, params.sl_mult, rules)
            row = frontier_row(
                result, params, run_id=run_id, caller_name=caller, created_at=created_at,
                rules=rules,
            )  # fmt: skip
            if caller is None:
                overall.append(row)
            else:
                per_caller.setdefault(caller, []).append(row)
    return overall, per_caller


def baseline_metrics(
    overall: Sequence[Mapping[str, Any]], per_caller: Mapping[str, Sequence[Mapping[str, Any]]]
) -> dict[str, float | int]:
    """Run metrics: the best overall parameter set and the per-caller flags (of each caller's
    highest final capital)."""
    if not overall:
        return {}

    def top(rows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:  # rank 1's order
        return min(rows, key=lambda r: (-r["final_capital"], r["policy_params"]))

    best = top(overall)
    bests = [top(rows) for rows in per_caller.values() if rows]
    params = json.loads(best["policy_params"])
    return {
        "v1_best_final_capital": best["final_capital"],
        "v1_best_tp_mult": params["tp_mult"],
        "v1_best_sl_mult": params["sl_mult"],
        "v1_best_trades": best["trades"],
        "v1_callers_collapsed": sum(b["collapsed_capital"] for b in bests),
        "v1_callers_extreme_params": sum(b["extreme_params"] for b in bests),
    }
