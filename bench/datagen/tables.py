"""The synthetic tables of the scenario data: the seed system's backtest tables
(``backtest_call_path_metrics``, ``backtest_policy_results``, ``backtest_call_results``) with
their real column names and seeded, fat-tailed values; which tables each run shape holds."""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Callable

import pyarrow as pa

ROWS_PER_TABLE = 1_000
SHAPES = ("path-only", "policy")
TABLES_BY_SHAPE: dict[str, tuple[str, ...]] = {
    "path-only": ("backtest_call_path_metrics", "backtest_call_results"),
    "policy": ("backtest_call_path_metrics", "backtest_call_results", "backtest_policy_results"),
}
CALLERS = tuple(f"caller_{i:02d}" for i in range(40))
BASE_TS_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z


def _ts(n: int) -> pa.Array:
    return pa.array([dt.datetime(2024, 2, 1, tzinfo=dt.UTC)] * n, pa.timestamp("us", tz="UTC"))


def _mints(rng: random.Random, n: int) -> list[str]:
    return [f"Mint{rng.getrandbits(40):011x}pump" for _ in range(n)]


def _fat_tail(rng: random.Random) -> float:
    """A Student-t(3)-like draw: normal over the root of a scaled chi-square(3)."""
    chi = sum(rng.gauss(0.0, 1.0) ** 2 for _ in range(3)) / 3.0
    return rng.gauss(0.0, 1.0) / math.sqrt(max(chi, 1e-9))


def _path_metrics(rng: random.Random, n: int, run_id: str) -> pa.Table:
    alert = sorted(BASE_TS_MS + rng.randrange(30 * 86_400_000) for _ in range(n))
    peak = [min(max(math.exp(_fat_tail(rng) * 0.6 + 0.4), 0.05), 80.0) for _ in range(n)]

    def t_hit(level: float, scale: float) -> pa.Array:
        return pa.array(
            [int(rng.expovariate(1 / scale)) + 60_000 if p >= level else None for p in peak],
            pa.int64(),
        )

    dd = [-min(rng.expovariate(1 / 1_500.0), 10_000.0) for _ in range(n)]
    return pa.table(
        {
            "run_id": pa.array([run_id] * n),
            "call_id": pa.array([f"call-{i:06d}" for i in range(n)]),
            "caller_name": pa.array([rng.choice(CALLERS) for _ in range(n)]),
            "mint": pa.array(_mints(rng, n)),
            "chain": pa.array(["solana"] * n),
            "interval": pa.array([rng.choice(("1m", "5m")) for _ in range(n)]),
            "alert_ts_ms": pa.array(alert, pa.int64()),
            "p0": pa.array([rng.lognormvariate(-9.0, 2.0) for _ in range(n)]),
            "hit_2x": pa.array([p >= 2.0 for p in peak]),
            "t_2x_ms": t_hit(2.0, 1_800_000.0),
            "hit_3x": pa.array([p >= 3.0 for p in peak]),
            "t_3x_ms": t_hit(3.0, 3_600_000.0),
            "hit_4x": pa.array([p >= 4.0 for p in peak]),
            "t_4x_ms": t_hit(4.0, 5_400_000.0),
            "dd_bps": pa.array(dd),
            "dd_to_2x_bps": pa.array(
                [d * 0.6 if p >= 2.0 else None for d, p in zip(dd, peak, strict=True)],
                pa.float64(),
            ),
            "alert_to_activity_ms": pa.array(
                [rng.randrange(120_000) for _ in range(n)], pa.int64()
            ),
            "peak_multiple": pa.array(peak),
            "created_at": _ts(n),
        }
    )


def _policy_results(rng: random.Random, n: int, run_id: str) -> pa.Table:
    entry = sorted(BASE_TS_MS + rng.randrange(30 * 86_400_000) for _ in range(n))
    exposed = [rng.randrange(60_000, 6 * 3_600_000) for _ in range(n)]
    ret = [_fat_tail(rng) * 900.0 for _ in range(n)]
    stop = [r < -800.0 for r in ret]
    entry_px = [rng.lognormvariate(-9.0, 2.0) for _ in range(n)]
    reasons = ("take_profit", "trailing_stop", "timeout")
    return pa.table(
        {
            "run_id": pa.array([run_id] * n),
            "policy_id": pa.array(
                [f"sl{rng.randrange(1, 6)}_tp{rng.randrange(1, 6)}" for _ in range(n)]
            ),
            "call_id": pa.array([f"call-{i:06d}" for i in range(n)]),
            "realized_return_bps": pa.array(ret),
            "stop_out": pa.array(stop),
            "max_adverse_excursion_bps": pa.array([-rng.expovariate(1 / 700.0) for _ in range(n)]),
            "time_exposed_ms": pa.array(exposed, pa.int64()),
            "tail_capture": pa.array([rng.random() for _ in range(n)]),
            "entry_ts_ms": pa.array(entry, pa.int64()),
            "exit_ts_ms": pa.array(
                [e + x for e, x in zip(entry, exposed, strict=True)], pa.int64()
            ),
            "entry_px": pa.array(entry_px),
            "exit_px": pa.array(
                [p * (1 + r / 10_000.0) for p, r in zip(entry_px, ret, strict=True)]
            ),
            "exit_reason": pa.array(["stop_loss" if s else rng.choice(reasons) for s in stop]),
            "created_at": _ts(n),
        }
    )


def _call_results(rng: random.Random, n: int, run_id: str) -> pa.Table:
    entry_px = [rng.lognormvariate(-9.0, 2.0) for _ in range(n)]
    ret = [_fat_tail(rng) * 900.0 for _ in range(n)]
    position = 100.0
    entry = sorted(BASE_TS_MS + rng.randrange(30 * 86_400_000) for _ in range(n))
    reasons = ("stop_loss", "take_profit", "trailing_stop", "timeout")
    return pa.table(
        {
            "run_id": pa.array([run_id] * n),
            "call_id": pa.array([f"call-{i:06d}" for i in range(n)]),
            "caller_name": pa.array([rng.choice(CALLERS) for _ in range(n)]),
            "mint": pa.array(_mints(rng, n)),
            "chain": pa.array(["solana"] * n),
            "policy_id": pa.array(["sl2_tp3"] * n),
            "entry_ts_ms": pa.array(entry, pa.int64()),
            "exit_ts_ms": pa.array(
                [e + rng.randrange(60_000, 3_600_000) for e in entry], pa.int64()
            ),
            "entry_px": pa.array(entry_px),
            "exit_px": pa.array(
                [p * (1 + r / 10_000.0) for p, r in zip(entry_px, ret, strict=True)]
            ),
            "exit_reason": pa.array([rng.choice(reasons) for _ in range(n)]),
            "position_usd": pa.array([position] * n),
            "pnl_usd": pa.array([position * r / 10_000.0 for r in ret]),
            "pnl_pct": pa.array([r / 100.0 for r in ret]),
            "return_bps": pa.array(ret),
            "win": pa.array([r > 0 for r in ret]),
            "drawdown_bps": pa.array([-rng.expovariate(1 / 700.0) for _ in range(n)]),
            "created_at": _ts(n),
        }
    )


#: The builder of each table: ``(rng, rows, run_id) -> pyarrow.Table``.
BUILDERS: dict[str, Callable[[random.Random, int, str], pa.Table]] = {
    "backtest_call_path_metrics": _path_metrics,
    "backtest_policy_results": _policy_results,
    "backtest_call_results": _call_results,
}
