"""What the daemon in-process tells the outside: its status file and ``quantbot-bus status``,
and the sd_notify messages (READY, WATCHDOG, STOPPING) on a real datagram socket.

Every test waits with generous deadlines (polling the reader-side snapshot or the status file),
never on tight timing. Runs are built with tests/builders/.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from builders import DEADLINE_S, make_run
from click.testing import CliRunner
from daemon_in_process import running_daemon

from quantbot_bus.catalog import Catalog
from quantbot_bus.cli import main
from quantbot_bus.config import Config
from quantbot_bus.daemon.notify import Notifier
from quantbot_bus.daemon.status import read_status


def test_status_file_and_status_command(fast: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(fast.root.parent)  # the bus directory: defaults find the state dir
    runner = CliRunner()
    missing = runner.invoke(main, ["status", "--format", "json"])
    assert missing.exit_code == 4
    assert "daemon has never run with this state dir" in missing.output

    make_run(fast.root, "backtest", "s-1")
    with running_daemon(fast):
        status = read_status(fast.status_path)
        assert status["state"] == "running"
        assert status["pid"] == os.getpid()
        assert status["registered"] == 1
        assert status["snapshot_published_at"] is not None
        result = runner.invoke(main, ["status", "--format", "json"])
        assert result.exit_code == 0, result.output
        [row] = json.loads(result.output)
        assert row["state"] == "running" and row["registered"] == 1 and row["pending"] == 0
    after = read_status(fast.status_path)
    assert after["state"] == "stopped" and after["ready"] is False
    Catalog.open(fast.catalog_path).close()  # the daemon closed the working catalog
    table = runner.invoke(main, ["status", "--format", "table"])
    assert table.exit_code == 0
    assert "state" in table.output and "stopped" in table.output


def test_notify_ready_watchdog_stopping_in_process(fast: Config) -> None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="qbw-") as d:
        path = Path(d) / "notify.sock"
        server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        server.bind(str(path))
        server.settimeout(DEADLINE_S)
        notifier = Notifier(str(path), watchdog_usec=400_000)
        received: list[str] = []
        with running_daemon(fast, notifier=notifier):
            while not any("WATCHDOG=1" in m for m in received):
                received.append(server.recv(4096).decode())
        while not any("STOPPING=1" in m for m in received):
            received.append(server.recv(4096).decode())
        server.close()
    assert received[0] == "READY=1\nSTATUS=registered 0, rejected 0, pending 0"
    assert any(m.startswith("WATCHDOG=1\nSTATUS=") for m in received)
    assert received[-1].startswith("STOPPING=1")
