"""The daemon as a real subprocess, seen only from the outside (runs are built with tests/builders/).

:class:`DaemonProcess` starts ``python -m quantbot_bus.cli daemon`` (JSON log lines on stderr, one
log file per start), waits for readiness through the status file, sends real signals, restarts,
and waits for N runs in the reader-side snapshot. Everything the tests assert is read the way a
user would read it: the snapshot (fresh read-only DuckDB connections), the status file, the
exports, the log lines, the exit code.

"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
from builders import DEADLINE_S, live_count, live_run_ids, snapshot_query, wait_for

from quantbot_bus.config import Config
from quantbot_bus.errors import CatalogMissingError
from quantbot_bus.publication import current_generation

CLEAN_ENV = {
    k: v
    for k, v in os.environ.items()
    if not k.startswith(("QUANTBOT_BUS_", "NOTIFY_SOCKET", "WATCHDOG_"))
}


# ---------------------------------------------------------------------------- snapshot reads


def working_catalog_runs(config: Config) -> int | None:
    """Live runs in the daemon's *working* catalog, read while no daemon holds it (after a kill).

    Opened read-only on a copy, so the test never replays the WAL into the real file itself.
    """
    if not config.catalog_path.exists():
        return None
    scratch = config.state_dir.parent / "post-mortem"
    scratch.mkdir(exist_ok=True)
    copy = scratch / "bus.duckdb"
    for leftover in (copy, copy.with_name("bus.duckdb.wal")):
        leftover.unlink(missing_ok=True)
    copy.write_bytes(config.catalog_path.read_bytes())
    wal = config.catalog_path.with_name(config.catalog_path.name + ".wal")
    if wal.exists():
        copy.with_name("bus.duckdb.wal").write_bytes(wal.read_bytes())
    con = duckdb.connect()
    try:
        con.execute("ATTACH ? AS pm", [str(copy)])
        (n,) = con.execute(
            "SELECT count(*) FROM pm.catalog.runs_d WHERE deleted_at IS NULL"
        ).fetchall()[0]
        return int(n)
    finally:
        con.close()


# ---------------------------------------------------------------------------- the CLI and the daemon


def bus_flags(config: Config) -> list[str]:
    """The command-line options that point a quantbot-bus command at this bus."""
    return [
        "--root",
        str(config.root),
        "--exports-dir",
        str(config.exports_dir),
        "--state-dir",
        str(config.state_dir),
    ]


def run_cli(
    config: Config, command: str, *args: str, timeout: float = DEADLINE_S
) -> subprocess.CompletedProcess[str]:
    """``quantbot-bus COMMAND ARGS`` on this bus, in a subprocess (output captured as text; a
    daemon that did start is killed at ``timeout``)."""
    return subprocess.run(
        [sys.executable, "-m", "quantbot_bus.cli", command, *bus_flags(config), *args],
        cwd=config.state_dir.parent,
        env=CLEAN_ENV,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class DaemonProcess:
    """``quantbot-bus daemon`` as a real subprocess; start/kill/restart, logs per start.

    ``args`` are more daemon options (``--polling``); ``path_flags=False`` leaves out ``--root``,
    ``--exports-dir`` and ``--state-dir`` (the defaults, relative to ``cwd``, default: beside the
    state dir); ``env`` adds ``QUANTBOT_BUS_*`` settings; ``user``/``group`` run it as another
    user (Popen's setuid/setgid, supplementary groups dropped); ``prefix`` wraps the command
    (e.g. ``unshare``); ``log_dir`` is where its stderr goes (default: beside the state dir).
    """

    def __init__(
        self,
        config: Config,
        *,
        args: Sequence[str] = (),
        path_flags: bool = True,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        user: int | None = None,
        group: int | None = None,
        umask: int = 0o022,
        prefix: Sequence[str] = (),
        log_level: str = "info",
        log_dir: Path | None = None,
    ) -> None:
        self.config = config
        self.args = list(args)
        self.path_flags = path_flags
        self.cwd = cwd or config.state_dir.parent
        self.env = {
            **CLEAN_ENV,
            "QUANTBOT_BUS_PENDING_RECHECK_S": "0.2",
            "QUANTBOT_BUS_LOG_LEVEL": log_level,
            **(env or {}),
        }
        self.user = user
        self.group = group
        self.umask = umask
        self.prefix = list(prefix)
        self.log_dir = log_dir or config.state_dir.parent / "daemon-logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.logs: list[Path] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def command(self) -> list[str]:
        paths = bus_flags(self.config)
        return [
            *self.prefix,
            sys.executable,
            "-m",
            "quantbot_bus.cli",
            "daemon",
            *(paths if self.path_flags else []),
            "--log-format",
            "json",
            *self.args,
        ]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def log_path(self) -> Path:
        return self.logs[-1]

    def start(self, *, wait: bool = True, timeout: float = DEADLINE_S) -> DaemonProcess:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        log_path = self.log_dir / f"daemon-{self.starts:03d}.log"
        self.logs.append(log_path)
        kwargs: dict[str, Any] = {}
        if self.user is not None:
            kwargs.update(user=self.user, group=self.group, extra_groups=[])
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                umask=self.umask,
                **kwargs,
            )
        if wait:
            self.wait_ready(timeout)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def status(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.config.status_path.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def wait_for(self, condition: Callable[[], Any], what: str, timeout: float = DEADLINE_S) -> Any:
        """:func:`builders.wait_for` that fails at once, with the log's tail, if the daemon
        exits meanwhile."""

        def alive_and() -> Any:
            if not self.alive():
                raise AssertionError(
                    f"daemon exited with {self.returncode()} waiting for {what}:\n{self.tail()}"
                )
            return condition()

        return wait_for(alive_and, what, timeout, every=0.1)

    def wait_ready(self, timeout: float = DEADLINE_S) -> None:
        def ready() -> bool:
            status = self.status()
            return bool(status and status.get("pid") == self.pid and status.get("ready"))

        self.wait_for(ready, "the daemon to report ready", timeout)

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = DEADLINE_S) -> int:
        """Reap the daemon (it must exit within ``timeout``); returns its exit status."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> int:
        """SIGKILL and reap; returns the exit status (-9)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait(DEADLINE_S)

    def stop(self, timeout: float = DEADLINE_S) -> int:
        """SIGTERM (graceful stop) and reap; returns the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def restart(self, *, wait: bool = True) -> DaemonProcess:
        if self.alive():
            self.kill()
        return self.start(wait=wait)

    def ensure_dead(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)  # also ends a SIGSTOPped daemon
            self.proc.wait(DEADLINE_S)

    def events(self, name: str | None = None, *, every_start: bool = True) -> list[dict[str, Any]]:
        """Log records (JSON lines) of every start (or only the last), optionally one event."""
        out: list[dict[str, Any]] = []
        for path in self.logs if every_start else self.logs[-1:]:
            if not path.exists():
                continue
            for line in path.read_text(errors="replace").splitlines():
                try:
                    item = json.loads(line)
                except ValueError:
                    continue
                if isinstance(item, dict) and (name is None or item.get("event") == name):
                    out.append(item)
        return out

    def tail(self, lines: int = 40) -> str:
        if not self.logs or not self.logs[-1].exists():
            return ""
        return "\n".join(self.logs[-1].read_text(errors="replace").splitlines()[-lines:])

    def wait_live_runs(self, n: int, timeout: float = DEADLINE_S) -> int:
        """Wait until the snapshot holds exactly ``n`` live runs (the daemon must stay alive)."""

        self.wait_for(
            lambda: live_count(self.config) == n, f"{n} live runs in the snapshot", timeout
        )
        return n

    def wait_settled(self, timeout: float = DEADLINE_S) -> dict[str, Any]:
        """Wait until the status file says nothing is pending and the daemon is idle."""

        def settled() -> dict[str, Any] | None:
            status = self.status()
            if status and status.get("pid") == self.pid and status.get("pending") == 0:
                return status
            return None

        result: dict[str, Any] = self.wait_for(settled, "status pending == 0", timeout)
        return result

    def cpu_seconds(self) -> float:
        raw = Path(f"/proc/{self.pid}/stat").read_text()
        fields = raw[raw.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def assert_consistent(config: Config, expected_ids: set[str]) -> None:
    """Every expected run registered exactly once and live; exports/runs.parquet matches."""
    rows = snapshot_query(
        config,
        "SELECT count(*), count(DISTINCT run_id) FROM catalog.runs_d WHERE deleted_at IS NULL",
    )
    (total, distinct) = rows[0]
    live = live_run_ids(config)
    assert total == distinct, f"{total - distinct} duplicated run_ids among {total} live rows"
    missing = expected_ids - live
    extra = live - expected_ids
    assert not missing, f"{len(missing)} runs lost, e.g. {sorted(missing)[:5]}"
    assert not extra, f"{len(extra)} unexpected runs registered, e.g. {sorted(extra)[:5]}"
    [(artifacts,)] = snapshot_query(
        config,
        "SELECT count(*) FROM catalog.artifacts_f a JOIN catalog.runs_d r USING (run_id) "
        "WHERE r.deleted_at IS NULL",
    )
    assert artifacts == len(expected_ids)


def exported_run_ids(config: Config) -> set[str] | None:
    """run_ids in the published runs.parquet (None before the first one). Read as users are
    told to: resolve ``exports/current`` once, then read under that generation — never fails."""
    try:
        gen = current_generation(config.exports_dir)
    except CatalogMissingError:
        return None
    path = gen / "files" / "runs.parquet"
    if not path.exists():
        return None
    table = pq.read_table(path, columns=["run_id"])
    return set(table.column("run_id").to_pylist())
