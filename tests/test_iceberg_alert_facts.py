"""The Iceberg backend's alert facts (:class:`~quantbot_bus.iceberg.alert_facts.RunAlertFacts`):
failed runs and rejections from what a daemon's polls committed, resolved by later runs, the
ledger, deletions and full listings; kept across restarts in an atomically written file; bounded
by ``max_items`` and the failed-run window; and the same conditions as the local backend's."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alerts_inputs import T0, alerter_for, at, only
from builders import corrupt_file, make_catalog, make_run
from iceberg_alert_runs import LOC, Runs, uri
from structlog.testing import capture_logs

from quantbot_bus.alerts import evaluate, gather_facts
from quantbot_bus.alerts.settings import AlertSettings
from quantbot_bus.config import Config
from quantbot_bus.iceberg.alert_facts import FACTS_NAME, RunAlertFacts
from quantbot_bus.iceberg.result import PollResult
from quantbot_bus.iceberg.rows import Rejected
from quantbot_bus.objectstore.listing import MARKER_KEEP_S, BadKey, RunObject
from quantbot_bus.objectstore.validate import ObjectRun

DAY = 86400.0


@pytest.fixture
def runs(tmp_path: Path) -> Iterator[Runs]:
    r = Runs(tmp_path)
    yield r
    r.ledger.close()


def facts_for(tmp_path: Path, settings: AlertSettings | None = None) -> RunAlertFacts:
    settings = settings or only("run_failed", "rejected")
    return RunAlertFacts.load(tmp_path / "state" / FACTS_NAME, settings, LOC)


def failed_ids(facts: RunAlertFacts, now: dt.datetime) -> list[str]:
    return [r["run_id"] for r in facts.item_facts(now).failed_runs]


def rejected_dirs(facts: RunAlertFacts, now: dt.datetime) -> list[str]:
    return [r["run_dir"] for r in facts.item_facts(now).rejections]


def test_a_failed_run_this_daemon_registered_is_kept_until_a_later_run_of_its_key(
    tmp_path: Path, runs: Runs
) -> None:
    (tmp_path / "state").mkdir()
    facts = facts_for(tmp_path)
    ok = runs.run("ok-1", created_at="2024-05-01T09:00:00Z")
    fail = runs.run("fail-1", "failed", created_at="2024-05-01T10:00:00Z")
    other = runs.run("fail-9", "failed", created_at="2024-05-01T10:00:00Z", params={"seed": 9})
    theirs = runs.run("fail-2", "failed", created_at="2024-05-01T10:00:00Z", params={"seed": 2})
    assert facts.record(runs.poll([ok, fail, other], [theirs]), runs.known, now=T0)
    # registered by another daemon first: that daemon alerts on it, not this one
    assert failed_ids(facts, T0) == ["fail-9", "fail-1"]
    row = facts.item_facts(T0).failed_runs[1]
    assert set(row) == {"run_id", "run_type", "error", "run_dir", "created_at", "registered_at"}
    assert row["run_dir"] == uri("backtest", "fail-1")
    assert row["created_at"] == "2024-05-01T10:00:00Z"
    # an older run of the key registered late ends nothing; a later one (another daemon's) does
    late = runs.run("ok-0", created_at="2024-05-01T08:00:00Z")
    assert not facts.record(runs.poll([late]), runs.known, now=at(10))
    assert failed_ids(facts, at(10)) == ["fail-9", "fail-1"]
    rerun = runs.run("ok-2", created_at="2024-05-01T11:00:00Z")
    assert facts.record(runs.poll([], [rerun]), runs.known, now=at(20))
    assert failed_ids(facts, at(20)) == ["fail-9"]
    # a failed run older than a kept failure of its key is not the newest: not kept
    newer = runs.run("fail-9b", "failed", created_at="2024-05-01T12:00:00Z", params={"seed": 9})
    older = runs.run("fail-9a", "failed", created_at="2024-05-01T09:00:00Z", params={"seed": 9})
    facts.record(runs.poll([newer]), runs.known, now=at(30))
    facts.record(runs.poll([older]), runs.known, now=at(40))
    assert failed_ids(facts, at(40)) == ["fail-9b"]
    # one poll with a failure and a later run of its key, in either order: nothing kept
    # (run ids sorting the other way round: the order is created_at's)
    fixed = runs.run("a-ok-5", created_at="2024-05-01T11:00:00Z", params={"seed": 5})
    broke = runs.run("b-fail-5", "failed", created_at="2024-05-01T10:00:00Z", params={"seed": 5})
    facts.record(runs.poll([fixed, broke]), runs.known, now=at(45))
    assert failed_ids(facts, at(45)) == ["fail-9b"]
    # deleted from the bucket (a reconcile took it out of the tables): gone
    assert facts.record(runs.poll(deleted=("fail-9b",)), runs.known, now=at(50))
    assert failed_ids(facts, at(50)) == []
    # taken out of the tables as its changed version broke the contract: a rejection instead
    facts.record(runs.poll([runs.run("fail-6", "failed", params={"seed": 6})]), runs.known)
    out = Rejected(uri("backtest", "fail-6"), "fail-6", "bad (the run changed after ...)")
    runs.ledger.remove("runs_d", ["fail-6"])  # as the poll that took it out does
    assert facts.record(runs.poll(rejected=[out]), runs.known, now=at(60))
    assert failed_ids(facts, at(60)) == []
    assert rejected_dirs(facts, at(60)) == [out.run_dir]


def test_a_failed_run_replaced_by_its_new_version_is_judged_by_that_version(
    tmp_path: Path, runs: Runs
) -> None:
    """A failed run written again (iceberg/changes.py replaced it: ``updated``): a new version
    that succeeds ends the alert, one that fails again keeps it."""
    import dataclasses

    (tmp_path / "state").mkdir()
    facts = facts_for(tmp_path)
    first = runs.run("fail-7", "failed", params={"seed": 7})
    again = runs.run("fail-8", "failed", params={"seed": 8})
    facts.record(runs.poll([first, again]), runs.known, now=T0)
    assert sorted(failed_ids(facts, T0)) == ["fail-7", "fail-8"]

    def new_version(run: ObjectRun, status: str) -> ObjectRun:
        error = None if status == "success" else "still broken"
        info = dataclasses.replace(run.info, status=status, error=error)
        return dataclasses.replace(run, info=info)

    replaced = PollResult(updated=("fail-7", "fail-8"))
    replaced.validated = [new_version(first, "success"), new_version(again, "failed")]
    assert facts.record(replaced, runs.known, now=at(10))
    assert failed_ids(facts, at(10)) == ["fail-8"]
    [row] = facts.item_facts(at(10)).failed_runs
    assert row["error"] == "still broken"


def test_failed_runs_leave_after_their_window(tmp_path: Path, runs: Runs) -> None:
    (tmp_path / "state").mkdir()
    facts = facts_for(tmp_path, only("run_failed", failed_window_s=DAY))
    facts.record(runs.poll([runs.run("f", "failed")]), runs.known, now=T0)
    assert failed_ids(facts, at(DAY)) == ["f"]  # registered exactly a window ago: still in
    assert failed_ids(facts, at(DAY + 1)) == []  # out of the window as the lookout reads it
    assert facts.counts()["failed"] == 1
    assert facts.record(runs.poll(), runs.known, now=at(DAY + 1))  # the next poll prunes it
    assert facts.counts()["failed"] == 0
    saved = json.loads((tmp_path / "state" / FACTS_NAME).read_text())
    assert saved["failed"] == []


def test_a_rejection_clears_when_its_run_registers_or_its_directory_is_gone(
    tmp_path: Path, runs: Runs
) -> None:
    (tmp_path / "state").mkdir()
    facts = facts_for(tmp_path)
    a, b, c = uri("backtest", "a"), uri("backtest", "b"), uri("backtest", "c")
    marker = LOC.uri(LOC.key("_inbox", "20240501T120000.000000Z", "backtest", ".."))
    poll = runs.poll(
        rejected=[
            Rejected(a, "a", "artifact 'trades' is not a Parquet file"),
            Rejected(b, "b-declared", "run_id 'b-declared' does not match the directory name"),
            Rejected(c, "c", "metadata.json: field 'status' is required"),
            Rejected(marker, None, "'..' in a marker"),
        ]
    )
    facts.record(poll, runs.known, now=T0)
    assert set(rejected_dirs(facts, T0)) == {a, b, c, marker}
    row = {r["run_dir"]: r for r in facts.item_facts(T0).rejections}[a]
    assert set(row) == {"run_dir", "run_id", "reason", "first_seen_at", "last_seen_at", "attempts"}
    assert row["attempts"] == 1 and row["first_seen_at"] == "2024-05-01T12:00:00Z"
    # seen again with another reason: the same condition, its reason and count updated
    facts.record(
        runs.poll(rejected=[Rejected(a, "a", "now another problem")]), runs.known, now=at(5)
    )
    row = facts.item_facts(at(5)).rejections[0]  # most recently seen first
    assert (row["run_dir"], row["reason"], row["attempts"]) == (a, "now another problem", 2)
    assert row["first_seen_at"] == "2024-05-01T12:00:00Z"
    # registered later by another daemon: the ledger follows its commits (by the run id the
    # directory's name gives: a seed-layout run_id=<id> directory's too)
    seed = LOC.uri(LOC.key("2024-05", "run_id=s1"))
    facts.record(runs.poll(rejected=[Rejected(seed, "s1", "bad run.json")]), runs.known, now=at(6))
    runs.ledger.add("runs_d", ["b", "a", "s1"])
    assert facts.record(runs.poll(), runs.known, now=at(10))
    assert set(rejected_dirs(facts, at(10))) == {c, marker}
    # a full reconcile's listing without c's directory: gone; markers are not listed by it
    listing: list[RunObject | BadKey] = [
        RunObject("backtest", "x", LOC.key("backtest", "x", "metadata.json")),
        BadKey(LOC.key("backtest", "..", "evil", "metadata.json"), "bad"),
    ]
    still = runs.poll(full=True)
    still.listing = [
        *listing,
        RunObject("backtest", "c", LOC.key("backtest", "c", "metadata.json")),
    ]
    assert not facts.record(still, runs.known, now=at(20))
    gone = runs.poll(full=True)
    gone.listing = listing
    assert facts.record(gone, runs.known, now=at(30))
    assert rejected_dirs(facts, at(30)) == [marker]
    # a bad marker's rejection clears when maintenance has deleted the marker
    facts.record(runs.poll(), runs.known, now=at(MARKER_KEEP_S - 1))
    assert rejected_dirs(facts, at(MARKER_KEEP_S)) == [marker]
    assert facts.record(runs.poll(), runs.known, now=at(MARKER_KEEP_S + 1))
    assert rejected_dirs(facts, at(MARKER_KEEP_S + 1)) == []


def test_a_bad_key_rejection_clears_when_a_full_listing_no_longer_has_it(
    tmp_path: Path, runs: Runs
) -> None:
    (tmp_path / "state").mkdir()
    facts = facts_for(tmp_path)
    key = LOC.key("backtest", "..", "evil", "metadata.json")
    facts.record(runs.poll(rejected=[Rejected(LOC.uri(key), None, "bad")]), runs.known, now=T0)
    present = runs.poll(full=True)
    present.listing = [BadKey(key, "bad")]
    assert not facts.record(present, runs.known, now=at(1))
    assert facts.record(runs.poll(full=True), runs.known, now=at(2))  # empty bucket
    assert rejected_dirs(facts, at(2)) == []


def test_kept_across_a_restart_and_saved_only_when_changed(tmp_path: Path, runs: Runs) -> None:
    (tmp_path / "state").mkdir()
    path = tmp_path / "state" / FACTS_NAME
    facts = facts_for(tmp_path)
    assert not facts.record(runs.poll(), runs.known, now=T0)
    assert not path.exists()  # nothing to keep yet
    rejected = Rejected(uri("backtest", "r"), "r", "broken")
    poll = runs.poll([runs.run("f", "failed")], rejected=[rejected])
    facts.record(poll, runs.known, now=T0)
    inode = path.stat().st_ino
    assert not facts.record(runs.poll(), runs.known, now=at(1))
    assert path.stat().st_ino == inode  # nothing changed: not rewritten
    assert not list(path.parent.glob(".*.tmp"))
    again = facts_for(tmp_path)
    assert again.item_facts(at(2)) == facts.item_facts(at(2))
    assert failed_ids(again, at(2)) == ["f"] and rejected_dirs(again, at(2)) == [rejected.run_dir]
    # a broken file is logged and started afresh (the daemon keeps running)
    path.write_text("{not json")
    with capture_logs() as logs:
        fresh = facts_for(tmp_path)
    assert fresh.counts() == {"failed": 0, "rejections": 0}
    assert [e["event"] for e in logs] == ["alert.facts_failed"]


def test_at_most_max_items_kept_and_the_rule_incomplete_while_forgotten_ones_may_be_active(
    tmp_path: Path, runs: Runs
) -> None:
    (tmp_path / "state").mkdir()
    settings = only("run_failed", "rejected", max_items=3, failed_window_s=DAY)
    facts = facts_for(tmp_path, settings)
    failed = [
        runs.run(f"f{i}", "failed", params={"seed": i}, created_at=f"2024-05-01T0{i}:00:00Z")
        for i in range(5)
    ]
    facts.record(runs.poll(failed[:2]), runs.known, now=T0)
    facts.record(runs.poll(failed[2:]), runs.known, now=at(60))
    got = facts.item_facts(at(60))
    assert [r["run_id"] for r in got.failed_runs] == ["f4", "f3", "f2"]  # the newest three
    assert got.incomplete == {"run_failed"}
    # the forgotten ones were registered at T0: past their window they would be gone anyway
    assert facts.item_facts(at(DAY - 1)).incomplete == {"run_failed"}
    assert facts.item_facts(at(DAY + 1)).incomplete == frozenset()
    dirs = [uri("backtest", f"r{i}") for i in range(5)]
    for i, d in enumerate(dirs):
        facts.record(runs.poll(rejected=[Rejected(d, f"r{i}", "bad")]), runs.known, now=at(i))
    got = facts.item_facts(at(10))
    assert [r["run_dir"] for r in got.rejections] == dirs[:1:-1]  # most recently seen first
    assert "rejected" in got.incomplete
    saved = json.loads((tmp_path / "state" / FACTS_NAME).read_text())
    assert len(saved["rejections"]) == 3 and saved["rejected_dropped"] is True
    # restarted with the flag; one of the three registered: fewer than max_items, complete again
    again = facts_for(tmp_path, settings)
    assert "rejected" in again.item_facts(at(10)).incomplete
    runs.ledger.add("runs_d", ["r4"])
    again.record(runs.poll(), runs.known, now=at(20))
    assert "rejected" not in again.item_facts(at(20)).incomplete
    assert len(again.item_facts(at(20)).rejections) == 2


def _iceberg_config(tmp_path: Path) -> Config:
    return Config(
        root=Path("artifacts"),
        object_root=LOC.url,
        catalog="iceberg",
        state_dir=tmp_path / "state",
        exports_dir=tmp_path / "exports",
    )


def test_gather_facts_on_iceberg_reads_the_daemons_facts_and_never_regressions(
    tmp_path: Path, runs: Runs
) -> None:
    (tmp_path / "state").mkdir()
    config = _iceberg_config(tmp_path)
    settings = only("run_failed", "rejected", "regression")
    facts = facts_for(tmp_path, settings)
    poll = runs.poll([runs.run("f", "failed")], rejected=[Rejected(uri("backtest", "r"), "r", "x")])
    facts.record(poll, runs.known, now=T0)
    got = gather_facts(config, settings, None, now=at(1), items=facts)
    assert [r["run_id"] for r in got.failed_runs] == ["f"]
    assert [r["run_dir"] for r in got.rejections] == [uri("backtest", "r")]
    assert got.incomplete == {"regression"}  # no regression checks on this backend
    # a one-shot sync passes no source: the item rules stay as they are
    alone = gather_facts(config, settings, None, now=at(1))
    assert {"run_failed", "rejected", "regression"} <= alone.incomplete
    assert alone.failed_runs == () and alone.rejections == ()

    class Broken:
        def item_facts(self, now: dt.datetime) -> Any:
            raise OSError("gone")

    with capture_logs() as logs:
        broken = gather_facts(config, settings, None, now=at(1), items=Broken())
    assert {"run_failed", "rejected", "regression"} <= broken.incomplete
    assert [(e["event"], e["source"]) for e in logs] == [("alert.facts_failed", "daemon")]


def test_the_same_conditions_as_the_local_backend(bus: Config, runs: Runs) -> None:
    """The same runs through the local catalog and through the Iceberg facts: the same
    run_failed keys, severities and messages; a rejection's message alike."""
    specs = [
        ("ok-a", "success", {"seed": 1}, "10"),
        ("fail-a", "failed", {"seed": 1}, "11"),
        ("fail-b", "failed", {"seed": 2}, "10"),
        ("ok-b", "success", {"seed": 2}, "11"),
        ("fail-c1", "failed", {"seed": 3}, "10"),
        ("fail-c2", "failed", {"seed": 3}, "11"),
    ]
    for run_id, status, params, hour in specs:
        created = f"2024-05-01T{hour}:00:00Z"
        make_run(bus.root, "backtest", run_id, status=status, params=params, created_at=created)
    broken = make_run(bus.root, "backtest", "broken")
    corrupt_file(broken / "results.parquet")
    make_catalog(bus)
    settings = only("run_failed", "rejected")
    local = evaluate(gather_facts(bus, settings, None), settings)
    [local_rejection] = [c for c in local.active if c.rule == "rejected"]

    facts = RunAlertFacts.load(bus.state_dir / FACTS_NAME, settings, LOC)
    validated = [
        runs.run(i, s, params=p, created_at=f"2024-05-01T{h}:00:00Z") for i, s, p, h in specs
    ]
    # the local rejection's directory and reason, as a poll would record them
    rejected = Rejected(str(broken), "broken", str(local_rejection.details["reason"]))
    facts.record(runs.poll(validated, rejected=[rejected]), runs.known)
    config = _iceberg_config(bus.state_dir.parent)
    ours = evaluate(gather_facts(config, settings, None, items=facts), settings)

    def shape(conditions: Any) -> set[tuple[str, str, str, str]]:
        return {(c.key, c.rule, c.severity, c.message) for c in conditions.active}

    assert shape(ours) == shape(local)
    assert {c.key for c in ours.active if c.rule == "run_failed"} == {
        "run_failed:fail-a",
        "run_failed:fail-c2",
    }
    assert ours.incomplete == local.incomplete == frozenset()


def test_a_restarted_daemon_neither_resolves_nor_fires_again(tmp_path: Path, runs: Runs) -> None:
    """The alerter's state and the facts, both from their files after a restart: the check
    says nothing about a failed run that is still open."""
    (tmp_path / "state").mkdir()
    config = _iceberg_config(tmp_path)
    settings = only("run_failed", "rejected", min_interval_s=0)
    facts = facts_for(tmp_path, settings)
    facts.record(runs.poll([runs.run("f", "failed")]), runs.known, now=T0)
    first = alerter_for(tmp_path, settings)
    notes = first.check(gather_facts(config, settings, None, now=at(1), items=facts))
    assert [(n.key, n.status) for n in notes] == [("run_failed:f", "firing")]
    first.close(0)
    again = alerter_for(tmp_path, settings)
    restarted = facts_for(tmp_path, settings)
    assert again.check(gather_facts(config, settings, None, now=at(2), items=restarted)) == []
    later = runs.run("f2", created_at="2024-05-01T11:00:00Z")
    restarted.record(runs.poll([later]), runs.known, now=at(3))
    notes = again.check(gather_facts(config, settings, None, now=at(4), items=restarted))
    assert [(n.key, n.status) for n in notes] == [("run_failed:f", "resolved")]
    again.close(0)


def test_a_second_directory_of_a_registered_run_id_stays_rejected(tmp_path: Path) -> None:
    """Its run id is registered (from the other directory): that does not resolve it."""
    from quantbot_bus.iceberg.twins import TWIN_REASON_END

    (tmp_path / "state").mkdir()
    facts = facts_for(tmp_path, only("rejected"))
    twin = uri("optimize", "r1")
    reason = f"run_id r1 is already registered from {uri('backtest', 'r1')}{TWIN_REASON_END}"
    facts.record(PollResult(rejected=[Rejected(twin, "r1", reason)]), lambda ids: {"r1"}, now=T0)
    assert rejected_dirs(facts, T0) == [twin]
