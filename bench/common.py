"""Shared pieces of the benchmark: results, machine facts, the daemon as a subprocess, READY.

Everything here drives the real thing: the daemon is ``python -m quantbot_bus.cli daemon`` in its
own process, READY=1 arrives on a real AF_UNIX datagram socket (``NOTIFY_SOCKET``), memory and
CPU come from ``/proc/<pid>/status`` and ``/proc/<pid>/stat``.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from quantbot_bus.config import Config

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


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


def bus_config(base: Path) -> Config:
    """A Config for a bus under ``base`` (artifacts, exports, state), directories created."""
    cfg = Config(
        root=base / "artifacts", exports_dir=base / "exports", state_dir=base / "state"
    ).validate()
    for d in (cfg.root, cfg.exports_dir, cfg.state_dir):
        d.mkdir(parents=True, exist_ok=True)
    return cfg


# --- READY over a real notify socket -------------------------------------------------------------


class NotifyListener:
    """An AF_UNIX datagram socket standing in for systemd's ``NOTIFY_SOCKET``.

    A thread drains it all the time, as systemd does: a datagram socket nobody reads fills up and
    then blocks the sender (the daemon sends STATUS= after every batch).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.unlink(missing_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._drain, name="notify-listener", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while not self._closed:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.perf_counter()
            with self._cond:
                self.messages.append((now, data.decode("utf-8", "replace")))
                self._cond.notify_all()

    def _find(self, line: str) -> float | None:
        for t, msg in self.messages:
            if line in msg.split("\n"):
                return t
        return None

    def wait_for(self, line: str, timeout: float) -> float | None:
        """Block until a datagram holding ``line`` arrived; its perf_counter time, or None."""
        deadline = time.perf_counter() + timeout
        with self._cond:
            while True:
                found = self._find(line)
                left = deadline - time.perf_counter()
                if found is not None or left <= 0:
                    return found
                self._cond.wait(left)

    def close(self) -> None:
        self._closed = True
        self._thread.join(2)
        self.sock.close()
        self.path.unlink(missing_ok=True)


# --- the daemon as a subprocess ------------------------------------------------------------------


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


def tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


# --- what readers see ------------------------------------------------------------------------------


def current_generation(cfg: Config) -> Path | None:
    """``exports/current`` resolved once (read files below the result), or None before the
    first publication."""
    try:
        return Path(os.path.realpath(cfg.exports_dir / "current", strict=True))
    except OSError:
        return None


def published_file_rows(cfg: Config, name: str = "runs") -> int | None:
    """Rows of ``exports/current/files/<name>.parquet`` (what a file reader sees), or None."""
    gen = current_generation(cfg)
    if gen is None:
        return None
    try:
        return int(pq.read_metadata(gen / "files" / f"{name}.parquet").num_rows)
    except (OSError, ValueError):
        return None


def visible_runs(cfg: Config, prefix: str | None = None) -> int | None:
    """Live runs in ``catalog.runs_d`` of ``exports/bus.duckdb``, opened read-only by this
    process as a reader would (None when there is nothing to open yet)."""
    from quantbot_bus.catalog import open_reader

    try:
        con = open_reader(cfg.snapshot_path)
    except Exception:  # noqa: BLE001 - not published yet
        return None
    try:
        sql = "SELECT count(*) FROM catalog.runs_d WHERE deleted_at IS NULL"
        if prefix is None:
            row = con.execute(sql).fetchone()
        else:
            row = con.execute(sql + " AND starts_with(run_id, ?)", [prefix]).fetchone()
        return int(row[0]) if row else 0
    finally:
        con.close()


def wait_visible(
    d: DaemonProc | None, cfg: Config, n: int, timeout: float, interval: float = 0.02
) -> float | None:
    """Poll ``exports/bus.duckdb`` (a ``stat`` every ``interval``; a read-only open when it was
    replaced) until it shows at least ``n`` live runs; the ``perf_counter`` time of the ``stat``
    that led to it (as :mod:`bench.reader` does), or None on timeout."""
    deadline = time.perf_counter() + timeout
    last: tuple[int, int, int, str] | None = None
    while time.perf_counter() < deadline:
        t = time.perf_counter()
        try:
            st = os.stat(cfg.snapshot_path)
            sig = (st.st_ino, st.st_size, st.st_mtime_ns, os.readlink(cfg.exports_dir / "current"))
        except OSError:
            sig = None
        if sig is not None and sig != last:
            last = sig
            if (visible_runs(cfg) or 0) >= n:
                return t
        if d is not None:
            d.check_alive()
        time.sleep(interval)
    return None


def read_status(cfg: Config) -> dict[str, Any]:
    try:
        data = json.loads(cfg.status_path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# --- /proc -----------------------------------------------------------------------------------------


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


def wait_until(pred: Any, timeout: float, interval: float = 0.01) -> bool:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return bool(pred())


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
