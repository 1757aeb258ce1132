"""A figure of the benchmark and how it is taken: :class:`Result` (one report line), the
verdict, median and nearest-rank percentile, polling until a condition holds, and the facts of
the machine it ran on."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa


@dataclass
class Result:
    """One line of the report: ``scenario  figure  target  PASS/MISS``."""

    scenario: str
    figure: str  # what was measured, e.g. "throughput"
    value: float | None
    unit: str
    target: str  # human text, e.g. ">= 1,000 runs/s"
    status: str  # PASS | MISS | INFO | ERROR
    details: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    def line(self) -> str:
        val = "n/a" if self.value is None else _fmt(self.value)
        text = f"{self.scenario:<15} {self.figure:<34} {val:>10} {self.unit:<8} target {self.target:<22} {self.status}"
        return text + (f"  ({self.note})" if self.note else "")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fmt(v: float) -> str:
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def percentile(xs: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(round(q / 100.0 * len(s) + 0.5)) - 1))
    return float(s[k])


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "python": sys.version.split()[0],
        "duckdb": duckdb.__version__,
        "pyarrow": pa.__version__,
        "platform": platform.platform(),
        "loadavg": os.getloadavg(),
    }
    try:
        import watchdog.version

        info["watchdog"] = watchdog.version.VERSION_STRING
    except Exception:  # noqa: BLE001 - informational only
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()
        info["mem_total_mb"] = int(mem[1]) // 1024
    except OSError:
        pass
    return info


def wait_until(pred: Any, timeout: float, interval: float = 0.01) -> bool:
    """Poll ``pred`` every ``interval`` until it is true or ``timeout`` passed; its last answer."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return bool(pred())
