"""The daemon's lookout thread end to end: a real daemon process configured by a TOML file sends
its alerts to a real HTTP server and writes ``alerts.jsonl`` and the dashboard page, resolves an
alert when its condition clears, and delivers what it holds when SIGTERM stops it."""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from builders import make_run, wait_for
from daemon_in_process import DaemonThread
from receiver import Receiver
from reliability.helpers import DaemonProcess

from quantbot_bus.config import Config
from quantbot_bus.daemon.status import read_status
from quantbot_bus.errors import DaemonError

Factory = Callable[..., DaemonProcess]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    server = r.start()
    yield r
    server.shutdown()
    server.server_close()


def _config(tmp_path: Path, receiver: Receiver, report: bool = True) -> tuple[Config, Path]:
    cfg = Config(
        root=tmp_path / "artifacts",
        exports_dir=tmp_path / "exports",
        state_dir=tmp_path / "state",
    )
    toml = tmp_path / "quantbot-bus.toml"
    toml.write_text(
        f"""
[alerts]
check_interval_s = 0.2
min_interval_s = 0
[alerts.rules]
stalled = false
disk_low = false
[alerts.webhook]
url = "{receiver.url}"
timeout_s = 2
[report]
enabled = {"true" if report else "false"}
interval_s = 2
"""
    )
    return cfg, toml


def _bodies(receiver: Receiver) -> list[dict[str, Any]]:
    with receiver.lock:
        return [r["body"] for r in receiver.requests]


def _seen(receiver: Receiver, status: str, rule: str) -> list[dict[str, Any]]:
    return [b for b in _bodies(receiver) if b["status"] == status and b["rule"] == rule]


def test_alerts_reach_the_webhook_and_the_page_is_written(
    tmp_path: Path, receiver: Receiver, daemon_factory: Factory
) -> None:
    cfg, toml = _config(tmp_path, receiver)
    make_run(cfg.root, "backtest", "good-1")
    make_run(
        cfg.root, "backtest", "broke-1", status="failed", error="Traceback: boom", params={"v": 1}
    )
    bad = cfg.root / "backtest" / "hostile-1"
    bad.mkdir(parents=True)
    (bad / "metadata.json").write_text("{not json")
    d = daemon_factory(cfg, env={"QUANTBOT_BUS_CONFIG": str(toml)}).start()

    wait_for(lambda: _seen(receiver, "firing", "run_failed"), "the failed run's alert")
    wait_for(lambda: _seen(receiver, "firing", "rejected"), "the rejection's alert")
    [failed] = _seen(receiver, "firing", "run_failed")
    assert failed["key"] == "run_failed:broke-1" and failed["source"] == "quantbot-bus"
    [rejected] = _seen(receiver, "firing", "rejected")
    assert rejected["key"] == f"rejected:{bad}"
    lines = (cfg.exports_dir / "alerts.jsonl").read_text().splitlines()
    assert {json.loads(line)["key"] for line in lines} >= {"run_failed:broke-1", f"rejected:{bad}"}

    page = cfg.exports_dir / "report" / "index.html"
    wait_for(lambda: page.is_file() and "broke-1" in page.read_text(), "the dashboard page")
    text = page.read_text()
    assert "<script" not in text and "hostile-1" in text  # the open alert and the rejection

    # the condition clears: the directory is removed, its rejection closes, the alert resolves
    shutil.rmtree(bad)
    wait_for(lambda: _seen(receiver, "resolved", "rejected"), "the rejection's resolution")
    assert len(_seen(receiver, "firing", "rejected")) == 1  # fired once, not per check

    d.signal(signal.SIGTERM)
    assert d.wait() == 0
    state = json.loads((cfg.state_dir / "alerts.json").read_text())
    assert "run_failed:broke-1" in json.dumps(state)


def test_a_restarted_daemon_does_not_notify_again_and_the_page_can_be_off(
    tmp_path: Path, receiver: Receiver, daemon_factory: Factory
) -> None:
    cfg, toml = _config(tmp_path, receiver, report=False)
    make_run(cfg.root, "backtest", "broke-1", status="failed", error="boom", params={"v": 1})
    d = daemon_factory(cfg, env={"QUANTBOT_BUS_CONFIG": str(toml)}).start()
    wait_for(lambda: _seen(receiver, "firing", "run_failed"), "the failed run's alert")
    assert d.stop() == 0
    sent = len(_bodies(receiver))

    d = daemon_factory(cfg, env={"QUANTBOT_BUS_CONFIG": str(toml)}).start()
    make_run(cfg.root, "backtest", "broke-2", status="failed", error="boom", params={"v": 2})
    wait_for(
        lambda: any(b["key"] == "run_failed:broke-2" for b in _bodies(receiver)),
        "the second failed run's alert",
    )
    assert d.stop() == 0
    keys = [b["key"] for b in _bodies(receiver)[sent:]]
    assert keys.count("run_failed:broke-1") == 0 and keys.count("run_failed:broke-2") == 1
    assert not (cfg.exports_dir / "report").exists()


@pytest.mark.parametrize("thread", ["publisher", "lookout"])
def test_a_thread_that_ends_stops_the_daemon_with_an_error(bus: Config, thread: str) -> None:
    """Registration must not carry on silently without exports or alerts: the supervisor
    stops the daemon (systemd restarts it) when the publisher or the lookout ends."""
    run = DaemonThread(bus).start()
    daemon, errors = run.daemon, run.errors
    wait_for(daemon.ready.is_set, "ready")
    if thread == "publisher":
        publisher = daemon._publisher
        assert publisher is not None
        publisher.finish()  # its thread returns, as after an unexpected exit
    else:
        daemon._lookout.stop()
    run.join()
    assert len(errors) == 1 and isinstance(errors[0], DaemonError)
    assert f"the {thread} thread stopped" in str(errors[0])
    assert read_status(bus.status_path)["state"] == "stopped"
