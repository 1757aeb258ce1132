"""``quantbot-bus alerts``: the active conditions, and with ``--all`` the resolved ones too, as
JSON and as a table."""

from __future__ import annotations

import json
from pathlib import Path

from alerts_inputs import at, degraded_status
from click.testing import CliRunner

from quantbot_bus.alerts import Alerter, Facts
from quantbot_bus.cli import main
from quantbot_bus.config import Config
from quantbot_bus.timeutil import iso_utc


def test_cli_lists_active_and_resolved(tmp_path: Path, bus: Config) -> None:
    alerter = Alerter(bus, sinks=None)
    alerter.check(Facts(now=at(0), status=degraded_status("publish failed: x")))
    runner = CliRunner()
    args = [
        "--root",
        str(bus.root),
        "--state-dir",
        str(bus.state_dir),
        "--exports-dir",
        str(bus.exports_dir),
    ]
    result = runner.invoke(main, ["alerts", *args, "--format", "json"])
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.output)
    assert (
        row["key"] == "degraded"
        and row["status"] == "firing"
        and row["notified_at"] == iso_utc(at(0))
    )
    assert set(row) == {
        "status",
        "key",
        "rule",
        "severity",
        "first_seen_at",
        "last_seen_at",
        "resolved_at",
        "notified_at",
        "message",
        "details",
    }
    alerter.check(Facts(now=at(100), status=degraded_status(None)))
    assert json.loads(runner.invoke(main, ["alerts", *args, "--format", "json"]).output) == []
    rows = json.loads(runner.invoke(main, ["alerts", *args, "--all", "--format", "json"]).output)
    assert [(r["key"], r["status"], r["resolved_at"]) for r in rows] == [
        ("degraded", "resolved", iso_utc(at(100)))
    ]
    table = runner.invoke(main, ["alerts", *args, "--all", "--format", "table"]).output
    assert "degraded" in table and "resolved" in table
