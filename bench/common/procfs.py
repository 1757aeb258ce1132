"""A process seen from outside: its memory and CPU from ``/proc/<pid>``, and its log (the
last lines; the JSON events of a daemon log)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of ``pid`` in MB, from /proc/<pid>/status."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(rest.split()[0]) / 1024.0
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all threads) in seconds, from /proc/<pid>/stat."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_percent(pid: int, seconds: float) -> float:
    """Average CPU use of ``pid`` over ``seconds`` wall time, in percent of one core."""
    c0, t0 = cpu_seconds(pid), time.perf_counter()
    time.sleep(seconds)
    c1, t1 = cpu_seconds(pid), time.perf_counter()
    return 100.0 * (c1 - c0) / (t1 - t0)


def tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def log_events(path: Path, *events: str, offset: int = 0) -> list[dict[str, Any]]:
    """The JSON log lines of a daemon log (from byte ``offset``) whose ``event`` is one of
    ``events``."""
    out: list[dict[str, Any]] = []
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            lines = fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return out
    for line in lines:
        if not line.startswith("{"):
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("event") in events:
            out.append(rec)
    return out
