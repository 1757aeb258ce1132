"""A deterministic synthetic memecoin market: callers issue calls on tokens with wild candle paths.

Everything derives from one integer seed through :class:`random.Random` (stable across Python
versions and platforms), and each call has its own generator (seeded by ``seed`` and the call's
index), so a call's path does not depend on how many other calls are generated.

The model, per token, on a 1-minute grid (5-minute candles are aggregated from the same 1m path,
so the two intervals tell the same story at different resolutions):

- diffusion with per-token volatility (0.4–1.8 % a minute) and a slow bleed, with fat tails: a
  scale mixture where 4 % of minutes are 3–6× as volatile;
- jumps: about 0.4 % of minutes jump by an exponential size, up more often than down;
- pumps: with the caller's pump probability the token pumps soon after the call, 1.3×–10× (log-uniform) over
  10–240 minutes, then gives part of it back;
- rugs: with the caller's rug probability liquidity is pulled at some minute: the price falls
  90–99.5 % (half of the time as a gap between candles) and trading nearly dies;
- a quiet start: some tokens trade nothing for the first minutes after the call (zero volume,
  flat price), which ``alert_to_activity_ms`` measures.

A call's alert falls at a random millisecond inside ``[date_from 00:00, date_to 24:00)`` UTC; its
path starts at the 5-minute boundary at or before the alert and runs ``horizon_minutes`` after it.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from .intervals import CANDLE_INTERVAL_MS, DEFAULT_HORIZON_MINUTES, SYNTHETIC_INTERVALS

INTERVAL_MS = {k: CANDLE_INTERVAL_MS[k] for k in SYNTHETIC_INTERVALS}
MINUTE_MS = 60_000
_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_HEX = "0123456789abcdef"
CALLER_NAMES = (
    "alpha_whale",
    "based_degen",
    "chad_signals",
    "diamond_dan",
    "early_bird",
    "frog_caller",
    "gem_hunter",
    "honest_harry",
    "insider_ivy",
    "jeet_jones",
    "moon_maxi",
    "rug_radar",
)


class Candle(NamedTuple):
    ts_ms: int  # candle open time, UTC epoch milliseconds
    open: float
    high: float
    low: float
    close: float
    volume: float  # quote volume (USD)


@dataclass(frozen=True)
class Caller:
    name: str
    pump_prob: float  # chance a call pumps
    rug_prob: float  # chance a call rugs
    quiet_prob: float  # chance a call starts with no trading


@dataclass(frozen=True)
class Call:
    call_id: str
    caller_name: str
    mint: str
    chain: str
    alert_ts_ms: int
    candles: tuple[Candle, ...]  # at the requested interval, from before the alert to the horizon

    def after_alert(self) -> tuple[Candle, ...]:
        """The candles opening at or after the alert: what a backtest may trade on."""
        return tuple(c for c in self.candles if c.ts_ms >= self.alert_ts_ms)


def make_callers(seed: int, n: int = len(CALLER_NAMES)) -> tuple[Caller, ...]:
    """``n`` callers with seeded traits: a few are good, a few are rug magnets."""
    if not 1 <= n <= len(CALLER_NAMES):
        raise ValueError(f"number of callers must be between 1 and {len(CALLER_NAMES)}, got {n}")
    rng = random.Random(f"callers/{seed}")
    return tuple(
        Caller(
            name=name,
            pump_prob=rng.uniform(0.05, 0.4),
            rug_prob=rng.uniform(0.1, 0.4),
            quiet_prob=rng.uniform(0.1, 0.5),
        )
        for name in CALLER_NAMES[:n]
    )


def _token_address(rng: random.Random, chain: str) -> str:
    if chain == "solana":
        return "".join(rng.choice(_BASE58) for _ in range(44))
    return "0x" + "".join(rng.choice(_HEX) for _ in range(40))


def _day_start_ms(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)


def simulate_minutes(
    rng: random.Random, caller: Caller, start_price: float, minutes: int, alert_minute: int
) -> list[Candle]:
    """A 1-minute path of ``minutes`` candles (ts relative: 0, 60 000, ...); the call is made
    during minute ``alert_minute``."""
    sigma = rng.uniform(0.004, 0.018)
    drift = -0.0006
    pump = rng.random() < caller.pump_prob
    pump_start = alert_minute + rng.randint(0, 120)
    pump_len = rng.randint(10, 240)
    pump_drift = rng.uniform(math.log(1.3), math.log(10.0)) / pump_len
    dump_len = rng.randint(30, 400)
    dump_drift = -math.log(rng.uniform(1.2, 4.0)) / dump_len
    rug = rng.random() < caller.rug_prob
    rug_minute = alert_minute + rng.randint(3, max(4, minutes - alert_minute - 1))
    rug_gap = rng.random() < 0.5
    quiet = rng.random() < caller.quiet_prob
    quiet_until = alert_minute + (rng.randint(1, 30) if quiet else 0)
    base_volume = math.exp(rng.gauss(math.log(2_000.0), 1.0))

    out: list[Candle] = []
    price = start_price
    rugged = False
    gauss, rand = rng.gauss, rng.random
    for m in range(minutes):
        if alert_minute <= m < quiet_until:  # nobody trades yet: flat, zero volume
            out.append(Candle(m * MINUTE_MS, price, price, price, price, 0.0))
            continue
        vol = sigma * (0.3 if rugged else 1.0)
        if rand() < 0.04:  # fat tails: a scale mixture
            vol *= 3.0 + 3.0 * rand()
        mu = drift
        if pump and pump_start <= m < pump_start + pump_len and not rugged:
            mu += pump_drift
        elif pump and pump_start + pump_len <= m < pump_start + pump_len + dump_len:
            mu += dump_drift
        r = mu + vol * gauss(0.0, 1.0)
        if rand() < 0.004:  # a jump
            size = rng.expovariate(1 / 0.3)
            r += size if rand() < 0.6 else -size
        open_ = price
        if rug and m == rug_minute:
            rugged = True
            crashed = price * (1.0 - rng.uniform(0.90, 0.995))
            if rug_gap:  # liquidity pulled between candles: the candle opens on the floor
                open_ = crashed
                close = crashed * math.exp(vol * gauss(0.0, 1.0))
            else:
                close = crashed
        else:
            close = open_ * math.exp(r)
        wick = vol * 0.8
        high = max(open_, close) * math.exp(wick * rand())
        low = min(open_, close) * math.exp(-wick * rand())
        volume = base_volume * (0.02 if rugged else 1.0) * (0.2 + rand()) * (1.0 + 25.0 * abs(r))
        out.append(Candle(m * MINUTE_MS, open_, high, low, close, volume))
        price = close
    return out


def aggregate(candles: Sequence[Candle], k: int) -> list[Candle]:
    """Aggregate consecutive groups of ``k`` candles (first open, max high, min low, last close,
    summed volume, first timestamp). A trailing incomplete group is dropped."""
    if k == 1:
        return list(candles)
    out = []
    for i in range(0, len(candles) - k + 1, k):
        group = candles[i : i + k]
        out.append(
            Candle(
                group[0].ts_ms,
                group[0].open,
                max(c.high for c in group),
                min(c.low for c in group),
                group[-1].close,
                sum(c.volume for c in group),
            )
        )
    return out


def generate_calls(
    seed: int,
    calls: int,
    interval: str,
    date_from: dt.date,
    date_to: dt.date,
    *,
    horizon_minutes: int = DEFAULT_HORIZON_MINUTES,
    callers: Sequence[Caller] | None = None,
) -> Iterator[Call]:
    """Yield ``calls`` calls in call-index order, one path at a time (memory stays flat)."""
    if interval not in INTERVAL_MS:
        raise ValueError(f"interval must be one of {', '.join(INTERVAL_MS)}, got {interval!r}")
    if date_from > date_to:
        raise ValueError(f"date_from {date_from} is after date_to {date_to}")
    if calls < 0:
        raise ValueError(f"calls must be >= 0, got {calls}")
    callers = make_callers(seed) if callers is None else callers
    weights = [1.0 + 0.25 * i for i in range(len(callers))]  # some callers are busier
    window_start = _day_start_ms(date_from)
    window_ms = _day_start_ms(date_to + dt.timedelta(days=1)) - window_start
    k = INTERVAL_MS[interval] // MINUTE_MS
    for i in range(calls):
        rng = random.Random(f"call/{seed}/{i}")
        caller = rng.choices(callers, weights)[0]
        chain = rng.choices(("solana", "base", "ethereum"), (0.85, 0.1, 0.05))[0]
        mint = _token_address(rng, chain)
        alert_ts = window_start + rng.randrange(window_ms)
        path_start = alert_ts - alert_ts % (5 * MINUTE_MS)
        alert_minute = (alert_ts - path_start) // MINUTE_MS
        minutes = alert_minute + 1 + horizon_minutes
        minutes += -minutes % 5  # whole 5-minute candles
        start_price = math.exp(rng.uniform(math.log(1e-6), math.log(1e-2)))
        path = simulate_minutes(rng, caller, start_price, minutes, alert_minute)
        candles = tuple(c._replace(ts_ms=c.ts_ms + path_start) for c in aggregate(path, k))
        yield Call(
            call_id=f"call-{seed}-{i:06d}",
            caller_name=caller.name,
            mint=mint,
            chain=chain,
            alert_ts_ms=alert_ts,
            candles=candles,
        )
