"""What every scenario shares: the run context (:class:`Ctx`, scale and results), the
figures' constants and the number formatting of their labels."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantbot_bus.config import Config

from .. import datagen
from ..common import Result

IDLE_WINDOW_S = 5.0

#: The materialised leaderboard, as a user reads it.
LEADERBOARD_SQL = (
    "SELECT caller_name, calls, hit_2x_rate, median_peak_multiple, median_dd_bps, runs_seen "
    "FROM exports.caller_leaderboard ORDER BY hit_2x_rate DESC, calls DESC LIMIT 20"
)
#: The same question asked ad hoc over every consolidated row.
LEADERBOARD_RAW_SQL = (
    "SELECT caller_name, count(*) AS calls, avg(CAST(hit_2x AS DOUBLE)) AS hit_2x_rate, "
    "median(peak_multiple) AS median_peak, median(dd_bps) AS median_dd_bps "
    "FROM exports.backtest_call_path_metrics GROUP BY caller_name "
    "ORDER BY hit_2x_rate DESC LIMIT 20"
)


@dataclass
class Ctx:
    quick: bool
    work: Path
    say: Callable[[str], None]
    results: list[Result] = field(default_factory=list)
    buses: dict[str, Config] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    baseline_dbs: dict[int, Path] = field(default_factory=dict)
    failed_bursts: dict[str, dict[str, Any]] = field(default_factory=dict)
    large_state: dict[str, Any] = field(default_factory=dict)
    next_index: int = 5_000_000  # run indices for runs added by scenarios (unique ids)
    _tpl: datagen.Template | None = None

    @property
    def n_main(self) -> int:
        return 1_000 if self.quick else 10_000

    @property
    def n_small(self) -> int:
        return 100 if self.quick else 1_000

    @property
    def n_large(self) -> int:
        return 2_000 if self.quick else 100_000

    @property
    def n_drop(self) -> int:
        """Runs of the large bus dropped on the stopped daemon (the rest are pre-seeded)."""
        return 500 if self.quick else 20_000

    @property
    def tpl(self) -> datagen.Template:
        if self._tpl is None:
            self._tpl = datagen.make_template(self.work / "template")
        return self._tpl

    def add(self, result: Result) -> None:
        self.results.append(result)
        self.say(result.line())

    def new_index(self) -> int:
        self.next_index += 1
        return self.next_index


def _k(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def _mb(nbytes: float) -> str:
    return f"{nbytes / 1e6:.2f} MB" if nbytes >= 1e5 else f"{nbytes / 1e3:.1f} kB"
