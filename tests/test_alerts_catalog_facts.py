"""Alert facts from a real catalog and publication: failed runs (the newest of their run type
and params) and rejected directories, bounded item rules, a missing publication, and the
Alerter's ``tick`` gathering them at most every check interval."""

from __future__ import annotations

import datetime as dt

import pytest
from alerts_inputs import degraded_status, only
from builders import corrupt_file, make_catalog, make_run
from structlog.testing import capture_logs

from quantbot_bus.alerts import Alerter, evaluate, gather_facts
from quantbot_bus.config import Config
from quantbot_bus.timeutil import iso_utc


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
