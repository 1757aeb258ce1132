"""The daemon under test as a subprocess: ``python -m quantbot_bus.cli daemon`` started with a
notify socket (:func:`start_daemon`), its READY time, a guard thread that kills it past an RSS
cap, and its stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from quantbot_bus.config import Config

from .notify import NotifyListener
from .procfs import rss_mb, tail

#: The bench kills a daemon whose RSS passes this (MB): the machine is shared, and DuckDB's default
#: memory limit is 80% of RAM. Override with ``QBUS_BENCH_RSS_CAP_MB``.
RSS_CAP_MB = float(os.environ.get("QBUS_BENCH_RSS_CAP_MB", "4096"))


class DaemonKilled(RuntimeError):
    """The daemon under test died (or was killed by the RSS guard) during a scenario."""


class DaemonProc:
    """The daemon subprocess, its notify socket, and a guard thread sampling its RSS."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        started: float,
        log_path: Path,
        listener: NotifyListener,
    ) -> None:
        self.proc = proc
        self.started = started  # perf_counter just before Popen
        self.log_path = log_path
        self.listener = listener
        self.peak_rss_mb = 0.0
        self.killed_for_rss: float | None = None  # RSS (MB) at which the guard killed it
        self._guard = threading.Thread(target=self._watch_rss, name="rss-guard", daemon=True)
        self._guard.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _watch_rss(self) -> None:
        while self.proc.poll() is None:
            try:
                rss = rss_mb(self.pid).get("VmRSS", 0.0)
            except (OSError, ValueError):
                return
            self.peak_rss_mb = max(self.peak_rss_mb, rss)
            if rss > RSS_CAP_MB:
                self.killed_for_rss = rss
                self.proc.kill()
                return
            time.sleep(0.1)

    def check_alive(self) -> None:
        """Raise :class:`DaemonKilled` with the reason if the daemon is gone."""
        if self.proc.poll() is None:
            return
        if self.killed_for_rss is not None:
            raise DaemonKilled(
                f"the bench killed the daemon: RSS {self.killed_for_rss:,.0f} MB passed the "
                f"{RSS_CAP_MB:,.0f} MB guard (QBUS_BENCH_RSS_CAP_MB)"
            )
        raise DaemonKilled(
            f"the daemon exited with {self.proc.returncode}; log tail:\n{tail(self.log_path)}"
        )

    def wait_ready(self, timeout: float) -> float:
        """Seconds from Popen to READY=1 (raises if it does not come or the daemon dies)."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            t = self.listener.wait_for("READY=1", min(0.5, deadline - time.perf_counter()))
            if t is not None:
                return t - self.started
            self.check_alive()
        raise RuntimeError(f"no READY=1 within {timeout:.0f}s; log tail:\n{tail(self.log_path)}")

    def wait(self, pred: Any, timeout: float, interval: float = 0.02) -> bool:
        """:func:`wait_until` that raises :class:`DaemonKilled` as soon as the daemon is gone."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if pred():
                return True
            self.check_alive()
            time.sleep(interval)
        return bool(pred())

    def stop(self, timeout: float = 120.0) -> int:
        """SIGTERM, wait (it finishes the batch in hand); SIGKILL if it does not exit in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self.listener.close()
        self._guard.join(2)
        return self.proc.returncode


def start_daemon(
    cfg: Config,
    work: Path,
    name: str,
    *,
    log_level: str = "info",
    env_extra: dict[str, str] | None = None,
) -> DaemonProc:
    """Start ``python -m quantbot_bus.cli daemon`` on ``cfg`` with a notify socket in ``work``.

    Its log (JSON lines, info level as in production unless ``log_level``) goes to
    ``work/daemon-<name>.log``; ``env_extra`` adds ``QUANTBOT_BUS_*`` settings."""
    listener = NotifyListener(work / f"notify-{name}.sock")
    log_path = work / f"daemon-{name}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANTBOT_BUS_")}
    env["NOTIFY_SOCKET"] = str(listener.path)
    env.pop("WATCHDOG_USEC", None)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(env_extra or {})
    cmd = [
        sys.executable, "-m", "quantbot_bus.cli", "daemon",
        "--root", str(cfg.root),
        "--exports-dir", str(cfg.exports_dir),
        "--state-dir", str(cfg.state_dir),
        "--log-format", "json",
        "--log-level", log_level,
    ]  # fmt: skip
    with log_path.open("ab") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=str(work), env=env
        )
    return DaemonProc(proc, started, log_path, listener)
