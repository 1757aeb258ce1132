"""Alerts and the dashboard without the daemon: ``quantbot-bus sync`` (and ``rebuild``), run in
process on real runs, check the alert rules once after their batch and deliver to a real local
HTTP server; a condition is notified once across syncs and the daemon's lookout (one state
file), resolved once, and the daemon-only ``stalled`` rule is left alone. The page is written by
a sync when its schedule (kept across runs in ``state_dir/report.json``) says so."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from builders import cli, make_run, sync, wait_for
from receiver import Receiver, closed_port_url

from quantbot_bus.alerts import Alerter, AlertSettings, Facts, evaluate
from quantbot_bus.config import Config, load_config
from quantbot_bus.daemon.lookout import Lookout
from quantbot_bus.daemon.status import DaemonStatus
from quantbot_bus.report.schedule import SCHEDULE_NAME
from quantbot_bus.timeutil import iso_utc, parse_utc, utc_now

pytestmark = pytest.mark.usefixtures("cli_env")


def write_config(
    bus: Config,
    url: str | None = None,
    *,
    report: bool = False,
    interval_s: float = 60,
    extra: str = "",
) -> Path:
    """The bus's TOML: alerts with every notification allowed at once (min_interval_s = 0), no
    disk or regression rule (this machine's disk is not the test's business), the webhook at
    ``url``, the page on or off."""
    toml = bus.state_dir.parent / "quantbot-bus.toml"
    hook = f'[alerts.webhook]\nurl = "{url}"\ntimeout_s = 5\nretries = 0\n' if url else ""
    toml.write_text(
        f"""
[alerts]
min_interval_s = 0
{extra}
[alerts.rules]
disk_low = false
regression = false
{hook}
[report]
enabled = {"true" if report else "false"}
interval_s = {interval_s}
"""
    )
    return toml


def run_sync(bus: Config, toml: Path, command: str = "sync") -> dict[str, Any]:
    """``quantbot-bus <command> --config TOML --format json`` in process; its counts."""
    result = cli(bus, command, "--config", str(toml), "--format", "json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    return dict(row)


def posts(receiver: Receiver, status: str | None = None) -> list[dict[str, Any]]:
    with receiver.lock:
        bodies = [r["body"] for r in receiver.requests]
    return [b for b in bodies if status is None or b["status"] == status]


def alert_state(bus: Config) -> dict[str, Any]:
    conditions: dict[str, Any] = json.loads((bus.state_dir / "alerts.json").read_text())[
        "conditions"
    ]
    return conditions


def load(bus: Config, toml: Path) -> Config:
    """The config ``quantbot-bus --config TOML`` with the bus's directories loads."""
    dirs = {"root": bus.root, "exports_dir": bus.exports_dir, "state_dir": bus.state_dir}
    return load_config(str(toml), overrides={k: str(v) for k, v in dirs.items()})


def stalled_status() -> dict[str, Any]:
    """A daemon's status with runs waiting two hours and no batch for as long: ``stalled``."""
    then = iso_utc(utc_now() - dt.timedelta(hours=2))
    return {
        "pid": os.getpid(),
        "pending": 2,
        "started_at": then,
        "last_batch_at": then,
        "oldest_pending_lag_s": 7200.0,
        "degraded": None,
    }


# ---------------------------------------------------------------------------- alerts from sync


def test_a_failed_run_fires_once_across_syncs_and_resolves_once(
    bus: Config, receiver: Receiver
) -> None:
    toml = write_config(bus, receiver.url)
    make_run(bus.root, "backtest", "ok-1", params={"v": 1})
    failed = make_run(
        bus.root, "backtest", "broke-1", status="failed", error="Traceback: boom", params={"v": 2}
    )

    assert run_sync(bus, toml)["registered"] == 2
    # the sync drained its webhook before it returned: the POST is there, and only it
    [fired] = posts(receiver)
    assert (fired["status"], fired["key"], fired["event"]) == (
        "firing",
        "run_failed:broke-1",
        "alert.fired",
    )
    assert "boom" in fired["message"]
    lines = (bus.exports_dir / "alerts.jsonl").read_text().splitlines()
    assert [json.loads(line)["key"] for line in lines] == ["run_failed:broke-1"]
    assert alert_state(bus)["run_failed:broke-1"]["notified"] == "firing"

    assert run_sync(bus, toml)["unchanged"] == 2  # nothing new: nothing sent
    assert len(posts(receiver)) == 1

    shutil.rmtree(failed)  # the failure goes away: the run is soft-deleted by the next sync
    assert run_sync(bus, toml)["deleted"] == 1
    assert len(posts(receiver, "firing")) == 1
    [resolved] = posts(receiver, "resolved")
    assert resolved["key"] == "run_failed:broke-1" and resolved["event"] == "alert.resolved"
    assert resolved["resolved_at"] is not None

    run_sync(bus, toml)
    assert len(posts(receiver)) == 2  # resolved once, not per sync


def test_rebuild_checks_too_and_a_rejection_fires_once(bus: Config, receiver: Receiver) -> None:
    toml = write_config(bus, receiver.url)
    bad = bus.root / "backtest" / "hostile-1"
    bad.mkdir(parents=True)
    (bad / "metadata.json").write_text("{not json")
    run_sync(bus, toml)
    [fired] = posts(receiver)
    assert fired["key"] == f"rejected:{bad}" and fired["rule"] == "rejected"

    # rebuild recreates the catalog: the rejection is found again, the same condition (notified)
    assert run_sync(bus, toml, "rebuild")["rejected"] == 1
    make_run(bus.root, "backtest", "broke-2", status="failed", error="x", params={"v": 3})
    run_sync(bus, toml, "rebuild")
    assert [p["key"] for p in posts(receiver)] == [f"rejected:{bad}", "run_failed:broke-2"]


def test_a_condition_the_daemons_lookout_notified_is_not_notified_again_by_sync(
    bus: Config, receiver: Receiver
) -> None:
    """One state file for both: the daemon's lookout thread code (``Lookout.tick``) notifies,
    then a sync (the daemon stopped, cron took over) finds the same condition and says nothing."""
    toml = write_config(bus, receiver.url)
    make_run(bus.root, "backtest", "broke-1", status="failed", error="boom", params={"v": 1})
    sync(bus)  # registered by the pipeline alone, as the daemon's worker would: nothing checked
    assert posts(receiver) == []

    config = load(bus, toml)
    status = DaemonStatus(bus.status_path, root=bus.root, observer="inotify")
    status.update(ready=True, last_batch_at=iso_utc(), generation=1)
    lookout = Lookout(config, status)
    lookout.tick()
    lookout.stop()  # drains the webhook
    assert [p["key"] for p in posts(receiver)] == ["run_failed:broke-1"]

    run_sync(bus, toml)
    assert len(posts(receiver)) == 1


def test_the_stalled_rule_is_left_alone_by_sync(bus: Config, receiver: Receiver) -> None:
    """``stalled`` is about a running daemon: a sync neither fires it (runs pending, no batch
    for "long" with stalled_after_s tiny) nor resolves the one a daemon left firing."""
    settings = AlertSettings(rules=("stalled",))
    now = utc_now()
    as_daemon = evaluate(Facts(now=now, status=stalled_status()), settings)
    assert [c.key for c in as_daemon.active] == ["stalled"]  # these facts do fire for a daemon
    as_sync = evaluate(Facts(now=now, status=stalled_status(), daemon=False), settings)
    assert as_sync.active == () and "stalled" in as_sync.incomplete

    toml = write_config(bus, receiver.url, extra="stalled_after_s = 0.001")
    waiting = make_run(bus.root, "backtest", "still-writing")
    (waiting / "results.parquet").unlink()  # metadata.json there, the file not yet: pending
    assert run_sync(bus, toml)["pending"] == 1
    assert run_sync(bus, toml)["pending"] == 1
    assert posts(receiver) == []

    # a daemon (its Alerter and status) left `stalled` firing; then syncs take over
    config = load(bus, toml)
    alerter = Alerter(config.alerts, bus.state_dir / "alerts.json", bus.exports_dir / "a.jsonl")
    alerter.check(Facts(now=utc_now(), status=stalled_status()))
    alerter.close(5)
    assert [(p["key"], p["status"]) for p in posts(receiver)] == [("stalled", "firing")]
    run_sync(bus, toml)
    assert len(posts(receiver)) == 1  # not resolved by the sync, nor fired again
    assert alert_state(bus)["stalled"]["status"] == "firing"


def test_a_webhook_that_is_down_does_not_fail_the_sync(bus: Config) -> None:
    toml = write_config(bus, closed_port_url())
    make_run(bus.root, "backtest", "broke-1", status="failed", error="boom", params={"v": 1})
    result = cli(bus, "sync", "--config", str(toml), "--format", "json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["registered"] == 1
    events = {}
    for line in result.stderr.splitlines():
        event = json.loads(line)
        events[event["event"]] = event
    assert events["alert.fired"]["key"] == "run_failed:broke-1"  # the log sink has it
    assert events["alert.webhook_failed"]["level"] == "warning"
    assert "Connection refused" in events["alert.webhook_failed"]["error"]
    assert events["alert.undelivered"]["level"] == "warning"
    assert events["alert.undelivered"]["sinks"] == {"webhook": 1}
    lines = (bus.exports_dir / "alerts.jsonl").read_text().splitlines()
    assert [json.loads(line)["key"] for line in lines] == ["run_failed:broke-1"]


def test_what_the_webhook_could_not_deliver_goes_out_at_the_next_sync_once(
    bus: Config, receiver: Receiver
) -> None:
    """The receiver is down for one sync: its notification waits in the outbox, and the next
    sync (the receiver back, at a new address) sends it, the same notification, once."""
    make_run(bus.root, "backtest", "broke-1", status="failed", error="boom", params={"v": 1})
    run_sync(bus, write_config(bus, closed_port_url()))
    outbox = bus.state_dir / "alerts-outbox.json"
    kept = json.loads(outbox.read_text())["sinks"]["webhook"]
    assert [(n["key"], n["status"]) for n in kept] == [("run_failed:broke-1", "firing")]
    [logged] = [json.loads(x) for x in (bus.exports_dir / "alerts.jsonl").read_text().splitlines()]

    toml = write_config(bus, receiver.url)
    run_sync(bus, toml)  # nothing new in the catalog: only the kept notification goes out
    [sent] = receiver.requests
    assert sent["body"] == logged  # the very notification (its time, its message)
    assert not outbox.exists()
    run_sync(bus, toml)
    assert receiver.count() == 1


def test_a_failed_sync_fires_registration_failed_once_and_the_next_good_one_resolves_it(
    bus: Config, receiver: Receiver
) -> None:
    toml = write_config(bus, receiver.url)
    make_run(bus.root, "backtest", "ok-1", params={"v": 1})
    run_sync(bus, toml)
    catalog = bus.state_dir / "bus.duckdb"
    kept = catalog.rename(catalog.with_name("kept.duckdb"))
    catalog.write_text("this is not a DuckDB file")  # the working catalog broken: syncs fail

    for _ in range(2):
        result = cli(bus, "sync", "--config", str(toml), "--format", "json")
        assert result.exit_code == 4, result.output
        assert "cannot open the catalog" in result.stderr
    [fired] = posts(receiver)  # once, not per failed sync
    assert (fired["key"], fired["status"], fired["severity"]) == (
        "registration_failed",
        "firing",
        "critical",
    )
    assert fired["message"].startswith(
        "runs are not being registered: sync failed: CatalogError: cannot open the catalog"
    )
    assert fired["message"].endswith(
        "the next sync tries again: check free space and the sync's output"
    )

    kept.replace(catalog)
    make_run(bus.root, "backtest", "ok-2", params={"v": 1})
    assert run_sync(bus, toml)["registered"] == 1
    assert [(p["key"], p["status"]) for p in posts(receiver)] == [
        ("registration_failed", "firing"),
        ("registration_failed", "resolved"),
    ]


def test_a_sync_refused_because_a_daemon_holds_the_catalog_alerts_nothing(
    bus: Config, receiver: Receiver
) -> None:
    from quantbot_bus.statelock import StateLock

    toml = write_config(bus, receiver.url)
    make_run(bus.root, "backtest", "ok-1", params={"v": 1})
    run_sync(bus, toml)
    daemon = StateLock(bus.lock_path, "daemon")
    daemon.acquire()
    try:
        result = cli(bus, "sync", "--config", str(toml), "--format", "json")
    finally:
        daemon.release()
    assert result.exit_code != 0 and "daemon" in result.stderr
    assert posts(receiver) == [] and "alert.fired" not in result.stderr


# ---------------------------------------------------------------------------- the page from sync


def test_the_page_is_written_by_sync_when_due_and_not_within_the_interval(bus: Config) -> None:
    toml = write_config(bus, report=True, interval_s=1)
    page = bus.exports_dir / "report" / "index.html"

    def interval_passed() -> bool:
        data = json.loads((bus.state_dir / SCHEDULE_NAME).read_text())
        last = parse_utc(data["last_at"] or data["since"])
        assert last is not None
        return utc_now().replace(tzinfo=None) >= last + dt.timedelta(seconds=1.01)

    make_run(bus.root, "firsttype", "ok-1")  # run types are on the page (its catalog table)
    run_sync(bus, toml)
    # the first sync starts the count, as a daemon's start does: no page yet
    assert not page.exists()
    assert json.loads((bus.state_dir / SCHEDULE_NAME).read_text())["last_at"] is None
    wait_for(interval_passed, "the report interval to pass")

    run_sync(bus, toml)
    assert page.is_file() and "firsttype" in page.read_text()
    first = page.stat()
    schedule = json.loads((bus.state_dir / SCHEDULE_NAME).read_text())
    assert schedule["last_at"] and schedule["source"] and schedule["error"] is None

    # the interval passed again, but nothing changed (no run, no alert): not drawn again
    wait_for(interval_passed, "the report interval to pass again")
    assert run_sync(bus, toml)["unchanged"] == 1
    again = page.stat()
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)

    # a new run changes the catalog, but the last page is within the interval: not rewritten
    toml = write_config(bus, report=True, interval_s=3600)
    make_run(bus.root, "secondtype", "ok-2")
    assert run_sync(bus, toml)["registered"] == 1
    again = page.stat()
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    assert "secondtype" not in page.read_text()
    assert json.loads((bus.state_dir / SCHEDULE_NAME).read_text()) == schedule
