"""The rules over real daemon status dicts: commit failures and degraded publications, and a
stall (waiting work and no batch), which the Alerter's own watch sees when the status lag
does not."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from alerts_inputs import T0, alerter_for, at, degraded_status, only

from quantbot_bus.alerts import AlertSettings, Facts, evaluate
from quantbot_bus.alerts.facts import WaitWatch
from quantbot_bus.timeutil import iso_utc


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
