"""Alerts: the settings, the rules over real facts (a real catalog and publication, a real DuckDB
view of regressions, real status dicts, a real small filesystem), the once-per-condition state
machine across Alerters, the rate limits, the log events, ``alerts.jsonl`` and the CLI."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from builders import add_policy_run, corrupt_file, make_catalog, make_run, sync
from click.testing import CliRunner
from structlog.testing import capture_logs

from quantbot_bus.alerts import (
    Alerter,
    AlertSettings,
    Facts,
    evaluate,
    gather_facts,
    parse_alert_settings,
)
from quantbot_bus.alerts.facts import WaitWatch
from quantbot_bus.alerts.settings import RULES
from quantbot_bus.cli import main
from quantbot_bus.config import Config
from quantbot_bus.errors import ConfigError
from quantbot_bus.timeutil import iso_utc

T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def only(*rules: str, **kw: Any) -> AlertSettings:
    """Settings with just these rules on (and no background sinks)."""
    return AlertSettings(rules=rules, **kw)


def degraded_status(
    reason: str | None = "commit failed: OSError: [Errno 28] No space left",
) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "ready": True,
        "pending": 0,
        "last_batch_at": iso_utc(T0),
        "started_at": iso_utc(T0),
        "degraded": reason,
    }


def alerter_for(tmp_path: Path, settings: AlertSettings) -> Alerter:
    return Alerter(
        settings, tmp_path / "state" / "alerts.json", tmp_path / "exports" / "alerts.jsonl"
    )


# ---------------------------------------------------------------------------- settings

EXAMPLE_TOML = """
[alerts]
enabled = true
check_interval_s = 15
disk_min_free_percent = 7.5
disk_min_free_bytes = 2147483648
stalled_after_s = 1200
failed_window_s = 3600
regression_window_s = 86400
max_items = 50
repeat_after_s = 3600
min_interval_s = 120
max_per_minute = 10
log = true
jsonl = true

[alerts.rules]
regression = false
disk_low = true

[alerts.webhook]
url = "https://hooks.example.com/quantbot"
timeout_s = 3
retries = 5
backoff_s = 0.5
max_backoff_s = 20
queue_size = 200
headers = { Authorization = "Bearer x" }

[alerts.command]
argv = ["./notify.sh", "--json"]
timeout_s = 4
"""


def test_no_section_means_log_and_jsonl_with_every_rule() -> None:
    s = parse_alert_settings(None)
    assert s == AlertSettings()
    assert s.enabled and s.log and s.jsonl
    assert s.rules == RULES
    assert not s.webhook.enabled and not s.command.enabled


def test_the_documented_example_parses(tmp_path: Path) -> None:
    s = parse_alert_settings(tomllib.loads(EXAMPLE_TOML)["alerts"], base=tmp_path)
    assert s.check_interval_s == 15.0 and s.disk_min_free_percent == 7.5
    assert s.disk_min_free_bytes == 2 << 30 and s.max_items == 50 and s.max_per_minute == 10
    assert "regression" not in s.rules and "disk_low" in s.rules and "stalled" in s.rules
    assert s.webhook.url == "https://hooks.example.com/quantbot" and s.webhook.retries == 5
    assert s.webhook.headers == (("Authorization", "Bearer x"),)
    assert s.command.argv == (str(tmp_path / "notify.sh"), "--json")  # relative to the file
    assert s.command.timeout_s == 4.0


def test_the_docs_example_is_the_tested_one() -> None:
    """docs/alerts.md shows the TOML this file tests (so the doc cannot drift from the parser)."""
    doc = (Path(__file__).parent.parent / "docs" / "alerts.md").read_text(encoding="utf-8")
    assert EXAMPLE_TOML.strip() in doc


@pytest.mark.parametrize(
    ("raw", "field", "needle"),
    [
        ({"check_interval_s": 0}, "alerts.check_interval_s", "must be a number > 0, got 0"),
        ({"check_interval_s": True}, "alerts.check_interval_s", "got True"),
        ({"disk_min_free_percent": 101}, "alerts.disk_min_free_percent", "from 0 to 100"),
        ({"max_per_minute": 0}, "alerts.max_per_minute", "integer >= 1"),
        ({"log": "yes"}, "alerts.log", "true or false"),
        ({"nope": 1}, "alerts.nope", "unknown config field"),
        ({"rules": {"run_failed": 1}}, "alerts.rules.run_failed", "true or false"),
        ({"rules": {"typo": True}}, "alerts.rules.typo", "unknown"),
        ({"webhook": {"url": "ftp://x"}}, "alerts.webhook.url", "http:// or https://"),
        ({"webhook": {"timeout_s": 0}}, "alerts.webhook.timeout_s", "must be a number > 0, got 0"),
        ({"webhook": {"retries": -1}}, "alerts.webhook.retries", "integer >= 0"),
        ({"webhook": {"headers": {"X": "a\nb"}}}, "alerts.webhook.headers.X", "one-line"),
        ({"webhook": "http://x"}, "alerts.webhook", "must be a table"),
        ({"command": {"argv": "notify"}}, "alerts.command.argv", "array of strings"),
        ({"command": {"timeout_s": -1}}, "alerts.command.timeout_s", "> 0"),
    ],
)
def test_every_bad_field_is_named(raw: dict[str, Any], field: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_alert_settings(raw)
    assert f"'{field}'" in str(err.value) and needle in str(err.value)


# ---------------------------------------------------------------------------- facts from a catalog


@pytest.fixture
def catalog_bus(bus: Config) -> Config:
    """A published catalog with: a failed run that is the newest of its run type and params
    (active), a failed run a later success with the same params followed (not active), a
    failed run superseded by a later failure of the same params (only the later is active) and
    a rejected directory."""
    root = bus.root
    make_run(root, "backtest", "ok-a", params={"seed": 1}, created_at="2024-05-01T10:00:00Z")
    make_run(
        root,
        "backtest",
        "fail-a",
        status="failed",
        params={"seed": 1},
        created_at="2024-05-01T11:00:00Z",
    )
    make_run(
        root,
        "backtest",
        "fail-b",
        status="failed",
        params={"seed": 2},
        created_at="2024-05-01T10:00:00Z",
    )
    make_run(root, "backtest", "ok-b", params={"seed": 2}, created_at="2024-05-01T11:00:00Z")
    make_run(
        root,
        "policy",
        "fail-c1",
        status="failed",
        params={"seed": 3},
        created_at="2024-05-01T10:00:00Z",
    )
    make_run(
        root,
        "policy",
        "fail-c2",
        status="failed",
        params={"seed": 3},
        created_at="2024-05-01T11:00:00Z",
    )
    bad = make_run(root, "backtest", "broken")
    corrupt_file(bad / "results.parquet")
    make_catalog(bus)
    return bus


def test_rules_from_a_real_catalog(catalog_bus: Config) -> None:
    facts = gather_facts(catalog_bus, only("run_failed", "rejected", "regression"), None)
    keys = {c.key for c in evaluate(facts, only("run_failed", "rejected", "regression")).active}
    bad_dir = str(catalog_bus.root / "backtest" / "broken")
    assert keys == {"run_failed:fail-a", "run_failed:fail-c2", f"rejected:{bad_dir}"}
    assert facts.incomplete == frozenset()  # no regressions view yet: none, not unknown
    failed = {c.key: c for c in evaluate(facts, only("run_failed")).active}["run_failed:fail-a"]
    assert "quantbot-bus show fail-a" in failed.message and "test failure" in failed.message
    assert failed.details["run_type"] == "backtest" and failed.details["created_at"].endswith("Z")


def test_item_rules_are_bounded_and_say_so(catalog_bus: Config) -> None:
    settings = only("run_failed", max_items=1)
    facts = gather_facts(catalog_bus, settings, None)
    assert [r["run_id"] for r in facts.failed_runs] == ["fail-c2"]  # newest first
    assert "run_failed" in facts.incomplete
    # a window that ends before the runs were registered: none of them
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
    assert gather_facts(catalog_bus, settings, None, now=later).failed_runs == ()


def test_a_missing_publication_leaves_the_item_rules_incomplete(bus: Config) -> None:
    with capture_logs() as logs:
        facts = gather_facts(bus, only("run_failed", "rejected"), None)
    assert facts.incomplete == {"run_failed", "rejected"}
    assert any(e["event"] == "alert.facts_failed" and e["source"] == "publication" for e in logs)


def make_regressions_db(
    path: Path, rows: list[tuple[Any, ...]], *, params: bool = False
) -> duckdb.DuckDBPyConnection:
    """A real DuckDB file with a view ``exports.regressions`` of the lead's columns."""
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA exports")
    extra = ", params VARCHAR" if params else ""
    con.execute(
        "CREATE TABLE exports.verdicts (run_id VARCHAR, run_type VARCHAR, metric VARCHAR, "
        "verdict VARCHAR, baseline_value DOUBLE, new_value DOUBLE, change DOUBLE, "
        f"reason VARCHAR, created_at TIMESTAMP{extra})"
    )
    con.executemany(
        "INSERT INTO exports.verdicts VALUES (" + ", ".join("?" * len(rows[0])) + ")",  # noqa: S608
        rows,
    )
    con.execute("CREATE VIEW exports.regressions AS SELECT * FROM exports.verdicts")
    return con


def test_regressions_from_a_view(tmp_path: Path, bus: Config) -> None:
    t = T0.replace(tzinfo=None)
    h = dt.timedelta(hours=1)
    rows = [
        # mean_return: regressed, then a later run is fine -> cleared
        ("r1", "policy", "mean_return_bps", "regression", 4000, 3000, -1000, "CI below", t),
        ("r2", "policy", "mean_return_bps", "no change", 4000, 3900, -100, "CI spans 0", t + h),
        # sharpe: regressed, then only insufficient data -> still standing
        ("r1", "policy", "sharpe_per_call", "regression", 0.3, 0.1, -0.2, "CI below", t),
        ("r3", "policy", "sharpe_per_call", "insufficient data", None, None, None, "n<30", t + h),
        # another run type: its latest verdict is a regression
        ("p1", "path-only", "mean_return_bps", "improvement", 10, 20, 10, "", t),
        ("p2", "path-only", "mean_return_bps", "regression", 20, 5, -15, "worse", t + 2 * h),
        # too old for the window
        ("o1", "old", "mean_return_bps", "regression", 1, 0, -1, "", t - dt.timedelta(days=30)),
    ]
    con = make_regressions_db(tmp_path / "view.duckdb", rows)
    settings = only("regression")
    facts = gather_facts(bus, settings, None, now=at(3 * 3600), con=con)
    keys = [c.key for c in evaluate(facts, settings).active]
    assert keys == ["regression:p2:mean_return_bps", "regression:r1:sharpe_per_call"]
    assert facts.incomplete == frozenset()
    message = evaluate(facts, settings).active[0].message
    assert "path-only run p2 regressed on mean_return_bps" in message and "worse" in message
    con.close()


def test_regressions_keep_apart_runs_of_other_params(tmp_path: Path, bus: Config) -> None:
    t = T0.replace(tzinfo=None)
    rows = [
        ("a", "policy", "m", "regression", 1, 0, -1, "", t, '{"seed": 1}'),
        ("b", "policy", "m", "no change", 1, 1, 0, "", t + dt.timedelta(hours=1), '{"seed": 2}'),
    ]
    con = make_regressions_db(tmp_path / "view.duckdb", rows, params=True)
    facts = gather_facts(bus, only("regression"), None, now=at(7200), con=con)
    assert [r["run_id"] for r in facts.regressions] == ["a"]  # b's params differ: a stands
    con.close()


def test_the_real_regressions_view_is_read(bus: Config) -> None:
    """The publication ``sync`` makes has ``exports.regressions`` with the columns the rule
    reads: read without error (one run has no baseline: no regression)."""
    add_policy_run(bus, "p1")
    sync(bus)
    settings = only("regression")
    facts = gather_facts(bus, settings, None)
    assert facts.incomplete == frozenset() and facts.regressions == ()
    from quantbot_bus.alerts.facts import REGRESSION_COLUMNS, regression_columns
    from quantbot_bus.exports.query import open_query_connection

    with open_query_connection(bus) as con:
        columns = regression_columns(con)
    assert columns is not None and set(REGRESSION_COLUMNS) <= set(columns)


def test_a_regressions_view_without_its_columns_is_incomplete(tmp_path: Path, bus: Config) -> None:
    con = duckdb.connect(str(tmp_path / "v.duckdb"))
    con.execute("CREATE SCHEMA exports")
    con.execute("CREATE VIEW exports.regressions AS SELECT 'x' AS run_id")
    with capture_logs() as logs:
        facts = gather_facts(bus, only("regression"), None, con=con)
    assert facts.incomplete == {"regression"}
    assert any("lacks the column" in e.get("error", "") for e in logs)
    con.close()


# ---------------------------------------------------------------------------- status rules


def keys_of(
    status: dict[str, Any],
    settings: AlertSettings,
    now: dt.datetime = T0,
    waiting_s: float | None = None,
) -> set[str]:
    return {
        c.key for c in evaluate(Facts(now=now, status=status, waiting_s=waiting_s), settings).active
    }


def test_commit_failures_and_degraded_publications() -> None:
    both = only("registration_failed", "degraded")
    assert keys_of(degraded_status(), both) == {"registration_failed"}
    assert keys_of(degraded_status(), only("degraded")) == {"degraded"}  # it says it instead
    assert keys_of(degraded_status("publish failed: OSError: x"), both) == {"degraded"}
    scale_out = {**degraded_status("ConnectionError: postgres down"), "backend": "iceberg"}
    assert keys_of(scale_out, both) == {"degraded"}
    assert keys_of(degraded_status(None), both) == set()


def test_stalled_needs_waiting_work_and_no_batch() -> None:
    s = only("stalled", stalled_after_s=900)
    old = {**degraded_status(None), "last_batch_at": iso_utc(at(-3600)), "pending": 2}
    assert keys_of({**old, "oldest_pending_lag_s": 1000.0}, s) == {"stalled"}
    assert keys_of({**old, "oldest_pending_lag_s": 30.0}, s) == set()  # a run being written
    assert keys_of({**old, "oldest_pending_lag_s": 30.0}, s, waiting_s=950) == {"stalled"}
    recent = {**old, "last_batch_at": iso_utc(at(-60)), "oldest_pending_lag_s": 1000.0}
    assert keys_of(recent, s) == set()  # batches go through
    assert keys_of({**old, "pending": 0, "oldest_pending_lag_s": None}, s) == set()
    backlog = {**old, "pending": 0, "backlog": 600, "oldest_pending_lag_s": None}
    assert keys_of(backlog, s, waiting_s=1000) == {"stalled"}
    assert keys_of({"state": "stale", "pid": 1, "age_s": 99.0}, s) == {"stalled"}


def test_the_alerter_sees_a_stall_the_status_lag_hides(tmp_path: Path) -> None:
    """A hung worker stops updating ``oldest_pending_lag_s``; the alerter's own watch does not."""
    alerter = alerter_for(tmp_path, only("stalled", stalled_after_s=900))
    frozen = {
        **degraded_status(None),
        "last_batch_at": iso_utc(at(-3600)),
        "pending": 1,
        "oldest_pending_lag_s": 5.0,
    }
    assert alerter.check(Facts(now=at(0), status=frozen)) == []
    assert alerter.check(Facts(now=at(600), status=frozen)) == []
    [note] = alerter.check(Facts(now=at(901), status=frozen))
    assert note.key == "stalled" and note.status == "firing"
    watch = WaitWatch()
    assert watch.observe(frozen, at(0)) == 0.0
    assert watch.observe({**frozen, "last_batch_at": iso_utc(at(10))}, at(20)) == 0.0  # a batch
    assert watch.observe({**frozen, "pending": 0}, at(30)) is None


# ---------------------------------------------------------------------------- disk


def test_disk_low_by_threshold(bus: Config) -> None:
    """Every free percentage is below 100: the rule fires on the real filesystem."""
    settings = only("disk_low", disk_min_free_percent=100.0)
    facts = gather_facts(bus, settings, None)
    conditions = evaluate(facts, settings).active
    assert conditions and all(c.key.startswith("disk_low:") for c in conditions)
    assert len(conditions) == len(
        {os.stat(d).st_dev for d in (bus.root, bus.state_dir, bus.exports_dir)}
    )
    assert str(bus.root) in conditions[0].details["paths"]
    never = only("disk_low", disk_min_free_percent=0.0, disk_min_free_bytes=0)
    assert evaluate(gather_facts(bus, never, None), never).active == ()


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB tmpfs (we are root here), unmounted after the test."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({done.stderr.strip()}); test_disk_low_by_threshold covers the rule"
        )
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_low_on_a_full_tmpfs_fires_once_and_resolves(tmp_path: Path, small_fs: Path) -> None:
    cfg = Config(
        root=tmp_path / "artifacts", exports_dir=tmp_path / "exports", state_dir=small_fs / "state"
    ).validate()
    settings = only("disk_low", disk_min_free_percent=20.0, disk_min_free_bytes=0, min_interval_s=0)
    alerter = Alerter(settings, tmp_path / "alerts.json", tmp_path / "alerts.jsonl")
    assert alerter.check(gather_facts(cfg, settings, None)) == []
    filler = small_fs / "filler"
    filler.write_bytes(b"\0" * (1900 * 1024))
    [fired] = alerter.check(gather_facts(cfg, settings, None))
    assert fired.key == f"disk_low:{cfg.state_dir}" and fired.status == "firing"
    assert fired.details["free_percent"] < 20 and fired.details["total_bytes"] == 2 << 20
    assert alerter.check(gather_facts(cfg, settings, None)) == []  # once per condition
    filler.unlink()
    [resolved] = alerter.check(gather_facts(cfg, settings, None))
    assert (resolved.key, resolved.status) == (fired.key, "resolved")


# ---------------------------------------------------------------------------- the state machine


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


def test_tick_gathers_and_checks_at_most_every_interval(catalog_bus: Config) -> None:
    alerter = Alerter(catalog_bus)  # paths from the config, default settings
    assert alerter.state_path == catalog_bus.state_dir / "alerts.json"
    status = {**degraded_status(None), "last_batch_at": iso_utc(), "started_at": iso_utc()}
    notes = alerter.tick(catalog_bus, status)
    keys = {n.key for n in notes}
    assert {"run_failed:fail-a", "run_failed:fail-c2"} <= keys
    assert alerter.tick(catalog_bus, status) == []  # not due yet
    assert alerter.last_check_ms is not None
    alerter.close()


# ---------------------------------------------------------------------------- the CLI


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
