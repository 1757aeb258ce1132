"""Failed runs and rejections alerted on the Iceberg backend: a real scale-out daemon (moto_server,
a throwaway PostgreSQL) tells a real webhook receiver about a failed run and a run that breaks
the contract once each, resolves the rejection when the run is uploaded correctly, and after a
restart neither fires the still-open failed run again nor resolves it."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from receiver import Receiver
from test_scaleout_alerts import alerts_toml

from quantbot_bus.timeutil import parse_utc, utc_now

pytestmark = pytest.mark.timeout(240)


def _bodies(receiver: Receiver) -> list[dict[str, Any]]:
    with receiver.lock:
        return [r["body"] for r in receiver.requests]


def _said(receiver: Receiver) -> list[tuple[str, str]]:
    return [(b["key"], b["status"]) for b in _bodies(receiver)]


def _local_run(tmp: Path, run_id: str) -> Path:
    """A good run written locally by RunWriter (to be uploaded broken, then as it is)."""
    from quantbot_bus.writer import RunWriter

    with RunWriter(tmp / "local", "backtest", run_id=run_id, git=None, params={"k": 1}) as w:
        w.write_table("trades", pa.table({"run_id": [run_id] * 2, "pnl": [0.1, -0.2]}))
    return tmp / "local" / "backtest" / run_id


def test_failed_and_rejected_runs_fire_once_resolve_and_survive_a_restart(
    scaleout: Any, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quantbot_bus.iceberg.alert_facts import FACTS_NAME
    from quantbot_bus.objectstore.listing import marker_key
    from quantbot_bus.objectstore.location import S3Location
    from quantbot_bus.objectstore.upload import upload_run
    from quantbot_bus.writer import RunWriter

    scaleout.reach_s3(monkeypatch)
    alerts_toml(scaleout.tmp, receiver.url)  # the daemon's cwd: its ./quantbot-bus.toml
    client = scaleout.s3.client()
    loc = S3Location.parse(scaleout.root)
    d = scaleout.daemon().start()

    # a good run, a run that fails in the producer, a run whose metadata.json lacks `status`
    assert scaleout.writers(1, 1, tag="ok")[0].wait(120) == 0
    with pytest.raises(RuntimeError, match="the backtest blew up"):
        with RunWriter(scaleout.root, "backtest", run_id="fails-1", git=None) as w:
            w.write_table("trades", pa.table({"run_id": ["fails-1"], "pnl": [0.5]}))
            raise RuntimeError("the backtest blew up")
    good = _local_run(scaleout.tmp, "broken-1")
    meta = json.loads((good / "metadata.json").read_text())
    broken = scaleout.tmp / "broken"
    broken.mkdir()
    (broken / "trades.parquet").write_bytes((good / "trades.parquet").read_bytes())
    (broken / "metadata.json").write_text(
        json.dumps({k: v for k, v in meta.items() if k != "status"})
    )
    upload_run(client, broken, loc, "backtest", "broken-1")
    run_dir = f"{scaleout.root}/backtest/broken-1"

    d.wait_for(lambda: len(_bodies(receiver)) >= 2, "the two alerts", 120)
    assert sorted(_said(receiver)) == [
        ("rejected:" + run_dir, "firing"),
        ("run_failed:fails-1", "firing"),
    ]
    by_key = {b["key"]: b for b in _bodies(receiver)}
    failed = by_key["run_failed:fails-1"]
    assert failed["severity"] == "warning" and failed["rule"] == "run_failed"
    assert failed["message"].startswith(
        "backtest run fails-1 failed: RuntimeError: the backtest blew up; "
        "see `quantbot-bus show fails-1`"
    )
    assert failed["details"]["run_dir"] == f"{scaleout.root}/backtest/fails-1"
    rejected = by_key["rejected:" + run_dir]
    assert rejected["severity"] == "warning" and rejected["rule"] == "rejected"
    assert rejected["message"].startswith(f"run directory {run_dir} is rejected: ")
    assert "status" in rejected["details"]["reason"], rejected["details"]
    assert set(scaleout.run_counts("runs_d")) == {"ok0-00000", "fails-1"}

    # fixed: the right metadata.json over the broken one, and a completion marker for it
    client.put_object(
        Bucket=scaleout.bucket,
        Key=loc.key("backtest", "broken-1", "metadata.json"),
        Body=(good / "metadata.json").read_bytes(),
    )
    marker = marker_key(loc, "backtest", "broken-1", dt.datetime.now(dt.UTC))
    client.put_object(Bucket=scaleout.bucket, Key=marker, Body=b"")
    d.wait_for(lambda: len(_bodies(receiver)) >= 3, "the rejection's resolution", 120)
    assert _said(receiver)[2:] == [("rejected:" + run_dir, "resolved")]
    assert "broken-1" in scaleout.run_counts("runs_d")
    assert d.stop() == 0

    # restarted: the failed run is still open; its condition is checked again, quietly
    facts = json.loads((scaleout.tmp / "state" / FACTS_NAME).read_text())
    assert [r["run_id"] for r in facts["failed"]] == ["fails-1"] and facts["rejections"] == []
    restarted_at = utc_now().replace(tzinfo=None)
    d.start()
    d.wait_for(lambda: (d.status() or {}).get("polls", 0) >= 1, "the first poll", 120)
    polled_at = utc_now().replace(tzinfo=None)
    alerts_json = scaleout.tmp / "state" / "alerts.json"

    def checked_since_the_poll() -> bool:
        entry = json.loads(alerts_json.read_text())["conditions"].get("run_failed:fails-1")
        # wait_for gives up at once on an AssertionError: the restart resolved it
        assert entry and entry["status"] == "firing", (entry, _said(receiver))
        seen = parse_utc(entry["last_seen_at"])
        return seen is not None and seen > polled_at

    d.wait_for(checked_since_the_poll, "a check after the restarted daemon's first poll", 60)
    assert polled_at > restarted_at
    assert len(_said(receiver)) == 3, _said(receiver)
    assert d.stop() == 0
    assert len(_said(receiver)) == 3, _said(receiver)
    assert not d.events("alert.facts_failed")
