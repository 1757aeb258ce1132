"""Shared pieces of the benchmark: results, machine facts, the daemon as a subprocess, READY.

Everything here drives the real thing: the daemon is ``python -m quantbot_bus.cli daemon`` in its
own process, READY=1 arrives on a real AF_UNIX datagram socket (``NOTIFY_SOCKET``), memory and
CPU come from ``/proc/<pid>/status`` and ``/proc/<pid>/stat``.

Modules: :mod:`.measure` (a figure, its verdict, median and percentile, waiting, machine facts),
:mod:`.notify` (READY over a notify socket), :mod:`.daemon` (the daemon as a subprocess, its RSS
guard), :mod:`.readers` (a bus and what its readers see), :mod:`.procfs` (a process's memory,
CPU and log).
"""

from __future__ import annotations

from .daemon import RSS_CAP_MB, DaemonKilled, DaemonProc, start_daemon
from .measure import Result, machine_info, median, percentile, verdict, wait_until
from .notify import NotifyListener
from .procfs import CLK_TCK, cpu_percent, cpu_seconds, log_events, rss_mb, tail
from .readers import (
    bus_config,
    current_generation,
    published_file_rows,
    read_status,
    visible_runs,
    wait_visible,
)

__all__ = [
    "CLK_TCK",
    "RSS_CAP_MB",
    "DaemonKilled",
    "DaemonProc",
    "NotifyListener",
    "Result",
    "bus_config",
    "cpu_percent",
    "cpu_seconds",
    "current_generation",
    "log_events",
    "machine_info",
    "median",
    "percentile",
    "published_file_rows",
    "read_status",
    "rss_mb",
    "start_daemon",
    "tail",
    "verdict",
    "visible_runs",
    "wait_until",
    "wait_visible",
]
