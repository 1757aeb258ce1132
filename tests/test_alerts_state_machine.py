"""The Alerter's once-per-condition state machine: fired once across Alerters on one state file,
resolved once, the append-only ``alerts.jsonl``, the per-condition interval and the global
cap, reminders, a corrupt state file, a check that never raises, alerts disabled."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alerts_inputs import alerter_for, at, degraded_status, only
from structlog.testing import capture_logs

from quantbot_bus.alerts import Alerter, AlertSettings, Facts
from quantbot_bus.timeutil import iso_utc


def test_fires_once_survives_a_restart_and_resolves(tmp_path: Path) -> None:
    settings = only("registration_failed")
    first = alerter_for(tmp_path, settings)
    with capture_logs() as logs:
        [fired] = first.check(Facts(now=at(0), status=degraded_status()))
        assert first.check(Facts(now=at(30), status=degraded_status())) == []
    assert fired.status == "firing" and fired.first_seen_at == iso_utc(at(0))
    events = [e for e in logs if e["event"].startswith("alert.")]
    assert [(e["event"], e["key"], e["log_level"]) for e in events] == [
        ("alert.fired", "registration_failed", "error")
    ]
    assert "No space left" in events[0]["message"]
    # a restarted daemon: a new Alerter on the same state file does not fire it again
    second = alerter_for(tmp_path, settings)
    assert second.check(Facts(now=at(60), status=degraded_status())) == []
    with capture_logs() as logs:
        [resolved] = second.check(Facts(now=at(120), status=degraded_status(None)))
    assert (resolved.status, resolved.resolved_at, resolved.first_seen_at) == (
        "resolved",
        iso_utc(at(120)),
        iso_utc(at(0)),
    )
    assert [(e["event"], e["log_level"]) for e in logs if e["event"].startswith("alert.")] == [
        ("alert.resolved", "info")
    ]
    assert second.check(Facts(now=at(180), status=degraded_status(None))) == []
    # the jsonl has both, one JSON object per line, in order
    lines = (tmp_path / "exports" / "alerts.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [(r["event"], r["status"], r["key"]) for r in records] == [
        ("alert.fired", "firing", "registration_failed"),
        ("alert.resolved", "resolved", "registration_failed"),
    ]
    assert records[0] == fired.as_dict() and records[0]["schema_version"] == 1


def test_the_jsonl_is_only_appended(tmp_path: Path) -> None:
    alerter = alerter_for(tmp_path, only("degraded", min_interval_s=0))
    path = tmp_path / "exports" / "alerts.jsonl"
    alerter.check(Facts(now=at(0), status=degraded_status("publish failed: x")))
    before = path.read_bytes()
    alerter.check(Facts(now=at(10), status=degraded_status(None)))
    after = path.read_bytes()
    assert after.startswith(before) and len(after.splitlines()) == 2


def test_an_incomplete_rule_does_not_resolve(tmp_path: Path) -> None:
    alerter = alerter_for(tmp_path, only("registration_failed", min_interval_s=0))
    assert len(alerter.check(Facts(now=at(0), status=degraded_status()))) == 1
    # no status this time (status rules incomplete): still firing, nothing sent
    gone = Facts(now=at(10), status=None, incomplete=frozenset({"registration_failed"}))
    assert alerter.check(gone) == []
    assert [e["key"] for e in alerter.active()] == ["registration_failed"]


def test_flapping_is_held_by_the_per_condition_interval(tmp_path: Path) -> None:
    alerter = alerter_for(tmp_path, only("degraded", min_interval_s=60))
    bad, good = degraded_status("publish failed: x"), degraded_status(None)
    assert [n.status for n in alerter.check(Facts(now=at(0), status=bad))] == ["firing"]
    assert alerter.check(Facts(now=at(10), status=good)) == []  # resolution held back
    assert alerter.check(Facts(now=at(20), status=bad)) == []  # back: nothing owed any more
    assert alerter.check(Facts(now=at(70), status=bad)) == []  # still firing, as told
    # cleared again 80 s after the firing was told: the interval has passed, it goes out
    [note] = alerter.check(Facts(now=at(80), status=good))
    assert (note.status, note.first_seen_at, note.resolved_at) == (
        "resolved",
        iso_utc(at(0)),
        iso_utc(at(80)),
    )


def test_a_held_resolution_goes_out_later(tmp_path: Path) -> None:
    alerter = alerter_for(tmp_path, only("degraded", min_interval_s=60))
    bad, good = degraded_status("publish failed: x"), degraded_status(None)
    alerter.check(Facts(now=at(0), status=bad))
    assert alerter.check(Facts(now=at(10), status=good)) == []
    [note] = alerter.check(Facts(now=at(61), status=good))
    assert (note.status, note.resolved_at) == ("resolved", iso_utc(at(10)))
    # back again right after its resolution: held until 60 s after that, then fired
    assert alerter.check(Facts(now=at(70), status=bad)) == []
    [again] = alerter.check(Facts(now=at(122), status=bad))
    assert again.status == "firing" and again.first_seen_at == iso_utc(at(70))


def test_the_global_cap_sends_critical_first_and_the_rest_later(tmp_path: Path) -> None:
    settings = only(
        "disk_low", "registration_failed", max_per_minute=2, disk_min_free_percent=100.0
    )
    alerter = alerter_for(tmp_path, settings)
    from quantbot_bus.alerts import DiskUsage

    disks = tuple(DiskUsage(paths=(f"/d{i}",), total=100, free=1) for i in range(3))
    facts = Facts(now=at(0), status=degraded_status(), disks=disks)
    with capture_logs() as logs:
        first = alerter.check(facts)
    assert len(first) == 2 and all(n.severity == "critical" for n in first)
    assert any(e["event"] == "alert.rate_limited" and e["held"] == 2 for e in logs)
    assert alerter.check(Facts(now=at(30), status=degraded_status(), disks=disks)) == []
    later = alerter.check(Facts(now=at(61), status=degraded_status(), disks=disks))
    assert len(later) == 2
    assert {n.key for n in first + later} == {
        "registration_failed",
        "disk_low:/d0",
        "disk_low:/d1",
        "disk_low:/d2",
    }


def test_reminders_after_repeat_after_s(tmp_path: Path) -> None:
    alerter = alerter_for(tmp_path, only("degraded", repeat_after_s=3600))
    bad = degraded_status("publish failed: x")
    assert not alerter.check(Facts(now=at(0), status=bad))[0].reminder
    assert alerter.check(Facts(now=at(1800), status=bad)) == []
    [again] = alerter.check(Facts(now=at(3600), status=bad))
    assert again.reminder and again.status == "firing" and again.first_seen_at == iso_utc(at(0))


def test_a_corrupt_state_file_is_logged_and_started_over(tmp_path: Path) -> None:
    path = tmp_path / "state" / "alerts.json"
    path.parent.mkdir()
    path.write_text("{not json")
    with capture_logs() as logs:
        alerter = alerter_for(tmp_path, only("degraded"))
    assert any(e["event"] == "alert.state_unreadable" for e in logs)
    assert len(alerter.check(Facts(now=at(0), status=degraded_status("publish failed: x")))) == 1
    assert json.loads(path.read_text())["conditions"]["degraded"]["notified"] == "firing"


def test_check_never_raises(tmp_path: Path) -> None:
    class Broken:
        name = "broken"

        def send(self, note: Any) -> None:
            raise RuntimeError("sink down")

        def close(self, timeout: float) -> None:
            return None

    alerter = Alerter(
        only("run_failed", "degraded"), tmp_path / "a.json", tmp_path / "a.jsonl", sinks=[Broken()]
    )
    with capture_logs() as logs:
        # a row without its run_id: the rule fails, the check logs it and returns nothing
        assert alerter.check(Facts(now=at(0), failed_runs=({"oops": 1},))) == []
        notes = alerter.check(Facts(now=at(1), status=degraded_status("publish failed: x")))
    assert [n.key for n in notes] == ["degraded"]  # delivered to no one, but the check went on
    events = [e["event"] for e in logs]
    assert "alert.check_failed" in events and "alert.delivery_failed" in events


def test_disabled_alerts_do_nothing(tmp_path: Path) -> None:
    alerter = alerter_for(tmp_path, AlertSettings(enabled=False))
    assert alerter.check(Facts(now=at(0), status=degraded_status())) == []
    assert not (tmp_path / "state" / "alerts.json").exists()
