"""The benchmark scenarios. Each appends :class:`bench.common.Result` lines to the context.

Scale: ``--quick`` uses 1,000 runs where the full suite uses 10,000, 100 where it uses 1,000 and
2,000 where it uses 100,000. Shared data sets are built once and reused, in this order:

- ``main`` bus (10,000 runs): registered by the burst scenario's daemon, exports caught up; then
  used by query, growth (middle size) and export refresh (each adds a few runs);
- ``small`` bus (1,000 runs): registered by a second daemon burst (untimed), exports caught up;
  idle latency, growth (smallest size), export refresh;
- ``large`` bus (100,000 runs): 80,000 run dirs pre-seeded into the catalog and published once
  (the state a stopped daemon leaves), then 20,000 more dropped while no daemon runs, which the
  catch-up scenario's daemon registers; then latency at 100k, restart and growth (largest size).

``--only SCENARIO`` builds whatever that scenario needs.

One module per scenario (``burst``, ``query``, ``latency``, ``catch_up``, ``restart``, ``growth``,
``export_refresh``, ``report``); :mod:`.context` holds the shared :class:`Ctx` and constants,
:mod:`.datasets` builds the buses above.
"""

from __future__ import annotations

from collections.abc import Callable

from .burst import burst
from .catch_up import catch_up
from .context import Ctx
from .datasets import baseline_db, ensure_bus, ensure_large
from .export_refresh import export_refresh
from .growth import growth
from .latency import latency_idle
from .query import query
from .report import report
from .restart import restart

__all__ = [
    "SCENARIOS",
    "Ctx",
    "baseline_db",
    "burst",
    "catch_up",
    "ensure_bus",
    "ensure_large",
    "export_refresh",
    "growth",
    "latency_idle",
    "query",
    "report",
    "restart",
]

SCENARIOS: dict[str, Callable[[Ctx], None]] = {
    "burst": burst,
    "query": query,
    "latency-idle": latency_idle,
    "catch-up": catch_up,  # includes idle CPU, RSS and latency at 100k
    "restart": restart,
    "growth": growth,  # includes bytes per published batch
    "export-refresh": export_refresh,
    "report": report,
}
