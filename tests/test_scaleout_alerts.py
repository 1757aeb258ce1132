"""Alerts on the Iceberg backend: the scale-out daemon's lookout tells a real webhook receiver
when the object store becomes unreachable (``degraded``) and when it is back (resolved); a
``sync`` of the bucket that fails fires ``registration_failed``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from builders import wait_for
from receiver import Receiver, closed_port_url

pytestmark = pytest.mark.timeout(240)


def alerts_toml(directory: Path, url: str) -> Path:
    """``directory/quantbot-bus.toml``: alerts checked every half second, each notification
    allowed at once, no disk rule (this machine's disk is not the test's business)."""
    toml = directory / "quantbot-bus.toml"
    toml.write_text(
        f"""
[alerts]
check_interval_s = 0.5
min_interval_s = 0
[alerts.rules]
disk_low = false
[alerts.webhook]
url = "{url}"
retries = 0
"""
    )
    return toml


def test_the_scale_out_daemon_alerts_when_the_store_is_unreachable_and_when_it_is_back(
    scaleout: Any, receiver: Receiver
) -> None:
    from tcpproxy import TcpProxy

    alerts_toml(scaleout.tmp, receiver.url)  # the daemon's cwd: its ./quantbot-bus.toml
    proxy = TcpProxy(scaleout.s3.port)
    try:
        d = scaleout.daemon(AWS_ENDPOINT_URL=f"http://127.0.0.1:{proxy.port}").start()
        assert scaleout.writers(1, 2, tag="a")[0].wait(120) == 0
        d.wait_for(lambda: len(scaleout.run_counts("runs_d")) == 2, "the first 2 runs", 120)
        assert receiver.count() == 0  # all well: nothing to say
        proxy.cut()
        wait_for(lambda: receiver.count() >= 1, "the degraded alert", 120)
        [fired] = [r["body"] for r in receiver.requests]
        assert (fired["key"], fired["status"], fired["severity"]) == (
            "degraded",
            "firing",
            "critical",
        )
        assert fired["message"].startswith("the catalog backend is degraded: ")
        assert fired["details"]["backend"] == "iceberg"
        proxy.restore()
        wait_for(lambda: receiver.count() >= 2, "the resolution", 120)
        assert [(r["body"]["key"], r["body"]["status"]) for r in receiver.requests] == [
            ("degraded", "firing"),
            ("degraded", "resolved"),
        ]
        assert d.stop() == 0
    finally:
        proxy.close()


def test_a_failed_sync_of_the_bucket_fires_registration_failed(
    tmp_path: Path, receiver: Receiver
) -> None:
    """Nothing answers at the store's or PostgreSQL's address: the sync exits non-zero and the
    webhook hears why, once."""
    from click.testing import CliRunner

    from quantbot_bus.cli import main

    toml = alerts_toml(tmp_path, receiver.url)
    store = closed_port_url().removesuffix("/hook")
    env = {
        "AWS_ENDPOINT_URL": store,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
        "QUANTBOT_BUS_ROOT": "s3://nowhere/runs",
        "QUANTBOT_BUS_CATALOG": "iceberg",
        "QUANTBOT_BUS_CATALOG_URI": "postgresql://postgres@127.0.0.1:9/quantbot",
        "QUANTBOT_BUS_WAREHOUSE": "s3://nowhere/warehouse",
        "QUANTBOT_BUS_STATE_DIR": str(tmp_path / "state"),
    }
    for _ in range(2):
        result = CliRunner().invoke(main, ["sync", "--config", str(toml)], env=env)
        assert result.exit_code != 0, result.output
    [fired] = [r["body"] for r in receiver.requests]
    assert (fired["key"], fired["status"]) == ("registration_failed", "firing")
    assert fired["message"].startswith("runs are not being registered: sync failed: ")
    state = json.loads((tmp_path / "state" / "alerts.json").read_text())["conditions"]
    assert set(state) == {"registration_failed"}
