"""The reconcile on the scale-out backend (real moto_server and PostgreSQL): runs deleted from
the bucket leave the Iceberg tables, and a rejected run is not validated again until one of its
objects changes."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from scaleout import local_run

pytestmark = pytest.mark.timeout(240)


def test_a_run_deleted_from_the_bucket_leaves_every_table_and_may_come_back(
    scaleout: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reconcile takes a deleted run out of runs_d, artifacts_f and its artifact tables
    (after which every table still scans: no data file points at a deleted object); the same
    run id uploaded again is registered again, once."""
    import pyarrow as pa

    from quantbot_bus.pipeline import sync
    from quantbot_bus.writer import RunWriter

    scaleout.reach_s3(monkeypatch)
    # run ids longer than the 16 characters of pyiceberg's default column bounds: a delete
    # by row could not prove a file holds one run alone and would read the deleted object
    tag = "run-ids-longer-than-sixteen-chars"
    for p in scaleout.writers(1, 3, tag=tag):
        assert p.wait(120) == 0
    ids = [f"{tag}0-{i:05d}" for i in range(3)]
    gone_id, kept = ids[1], {ids[0], ids[2]}
    assert sorted(sync(scaleout.config()).registered) == ids
    client = scaleout.s3.client()
    listed = client.list_objects_v2(Bucket=scaleout.bucket, Prefix=f"runs/backtest/{gone_id}/")
    for obj in listed["Contents"]:
        client.delete_object(Bucket=scaleout.bucket, Key=obj["Key"])

    result = sync(scaleout.config())
    assert result.registered == [] and list(result.deleted) == [gone_id]
    assert scaleout.run_counts("runs_d") == {r: 1 for r in kept}
    assert scaleout.run_counts("artifacts_f") == {r: 2 for r in kept}
    assert scaleout.run_counts("trades") == {r: 3 for r in kept}  # in place: the file is gone
    assert scaleout.run_counts("fills") == {r: 2 for r in kept}  # rewritten copy
    assert list(sync(scaleout.config()).deleted) == []  # done once

    with RunWriter(scaleout.root, "backtest", run_id=gone_id, git=None) as w:
        w.write_table("trades", pa.table({"run_id": [gone_id] * 4, "pnl": [1.0] * 4}))
    assert sync(scaleout.config()).registered == [gone_id]
    assert scaleout.run_counts("runs_d") == {r: 1 for r in ids}
    assert scaleout.run_counts("trades") == {**{r: 3 for r in kept}, gone_id: 4}
    assert sync(scaleout.config("state-other-host")).registered == []


def test_a_rejected_run_is_validated_again_only_when_its_objects_change(
    scaleout: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each reconcile lists every run; one rejected before whose objects are unchanged costs no
    request. Fixed (deleted and uploaded again), it is validated and registered."""
    from quantbot_bus.iceberg.bus import IcebergBus
    from quantbot_bus.objectstore.location import S3Location
    from quantbot_bus.objectstore.upload import upload_run

    scaleout.reach_s3(monkeypatch)
    client = scaleout.s3.client()
    loc = S3Location.parse(scaleout.root)

    scaleout.upload("good")
    scaleout.upload("bad", incomplete=True)
    # incomplete runs are rejected at once
    bus = IcebergBus(dataclasses.replace(scaleout.config(), pending_timeout_s=0.0))

    def fetched_bad(since: int) -> list[str]:
        """GETs of the bad run's objects the S3 server answered after request ``since``."""
        return [
            r
            for r in scaleout.s3.requests()[since:]
            if r.startswith("GET ") and "/backtest/bad/" in r and "list-type" not in r
        ]

    try:
        mark = len(scaleout.s3.requests())
        first = bus.poll(full=True)
        assert first.registered == ["good"]
        assert [r.run_id for r in first.rejected] == ["bad"]
        assert fetched_bad(mark)  # the server's log sees the validation's GETs

        mark = len(scaleout.s3.requests())
        again = bus.poll(full=True)
        assert again.registered == [] and again.rejected == [] and again.pending == []
        assert fetched_bad(mark) == []  # listed, not fetched

        for obj in client.list_objects_v2(Bucket=scaleout.bucket, Prefix="runs/backtest/bad/")[
            "Contents"
        ]:
            client.delete_object(Bucket=scaleout.bucket, Key=obj["Key"])
        upload_run(client, local_run(scaleout.tmp / "fixed", "bad"), loc, "backtest", "bad")
        fixed = bus.poll(full=True)
        assert fixed.registered == ["bad"]
    finally:
        bus.close()
    assert set(scaleout.run_counts("runs_d")) == {"good", "bad"}


def test_completion_markers_older_than_a_week_are_deleted_and_their_runs_still_found(
    scaleout: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hourly maintenance deletes markers over MARKER_KEEP_S old (and only those); a
    fresh daemon's reconcile still registers a run whose marker is gone."""
    import datetime as dt

    from quantbot_bus.iceberg.bus import IcebergBus
    from quantbot_bus.objectstore.listing import INBOX, MARKER_KEEP_S, Lister, marker_key
    from quantbot_bus.objectstore.location import S3Location
    from quantbot_bus.objectstore.upload import upload_run

    scaleout.reach_s3(monkeypatch)
    client = scaleout.s3.client()
    loc = S3Location.parse(scaleout.root)
    upload_run(client, local_run(scaleout.tmp, "old-run"), loc, "backtest", "old-run")
    now = dt.datetime.now(dt.UTC)
    ages = {"old": MARKER_KEEP_S + 3600, "older": MARKER_KEEP_S * 3, "young": 60}
    for name, age in ages.items():
        key = marker_key(loc, "backtest", f"m-{name}", now - dt.timedelta(seconds=age))
        client.put_object(Bucket=scaleout.bucket, Key=key, Body=b"")

    def markers() -> list[str]:
        listed = client.list_objects_v2(Bucket=scaleout.bucket, Prefix=loc.key(INBOX) + "/")
        return sorted(o["Key"].rsplit("/", 1)[1] for o in listed.get("Contents", []))

    assert markers() == ["m-old", "m-older", "m-young", "old-run"]
    assert Lister(client, loc).expire_markers(now=now) == 2
    assert markers() == ["m-young", "old-run"]
    assert Lister(client, loc).expire_markers(now=now) == 0
    # a week on, the run's own marker goes too; a new daemon finds the run by its reconcile
    later = now + dt.timedelta(seconds=MARKER_KEEP_S + 60)
    assert Lister(client, loc).expire_markers(now=later) == 2
    assert markers() == []
    bus = IcebergBus(scaleout.config("state-new-host"))
    try:
        assert bus.poll(full=True).registered == ["old-run"]
        assert "_inbox" in bus.maintain()
    finally:
        bus.close()


def test_a_backlog_larger_than_a_poll_drains_once_per_run_across_two_daemons(
    scaleout: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More runs than one poll takes: each poll takes at most MAX_POLL_RUNS from the head of
    its daemon's order, the two daemons' claims keep them off each other's runs, a reconcile
    adds no registered run back to the backlog, and every run ends registered once."""
    from quantbot_bus.iceberg import bus as bus_mod

    scaleout.reach_s3(monkeypatch)
    monkeypatch.setattr(bus_mod, "MAX_POLL_RUNS", 4)
    monkeypatch.setattr(bus_mod, "HEAD_FACTOR", 2)
    for p in scaleout.writers(2, 9, tag="b"):
        assert p.wait(120) == 0
    expected = {f"b{i}-{j:05d}" for i in range(2) for j in range(9)}
    a, b = bus_mod.IcebergBus(scaleout.config("a")), bus_mod.IcebergBus(scaleout.config("b"))
    try:
        ra, rb = a.poll(full=True), b.poll(full=True)
        assert len(ra.registered) == 4 and len(rb.registered) == 4  # one poll's worth each
        assert not set(ra.registered) & set(rb.registered)  # claims: no run taken twice
        assert ra.already == [] and rb.already == []
        done = set(ra.registered) | set(rb.registered)
        polls = 0
        while len(done) < len(expected):
            polls += 1
            assert polls < 20, f"no progress: {sorted(expected - done)}"
            for bus in (a, b):
                r = bus.poll()
                assert not set(r.registered) & done
                done |= set(r.registered)
        again = a.poll(full=True)  # everything registered: nothing comes back
        assert again.backlog == 0 and again.registered == [] and again.claimed == 0
    finally:
        a.close()
        b.close()
    assert scaleout.run_counts("runs_d") == {r: 1 for r in expected}


def test_pending_lists_an_incomplete_run_in_the_bucket_until_its_file_arrives(
    scaleout: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``quantbot-bus pending`` on the Iceberg backend: after a sync, the run whose declared
    file is not uploaded yet is listed with its reason and when it will be rejected (its
    metadata.json's LastModified + the timeout); once the file is there, the next sync
    registers it and the list is empty."""
    import datetime as dt
    import json

    from click.testing import CliRunner

    from quantbot_bus.cli import main as cli
    from quantbot_bus.objectstore.location import S3Location
    from quantbot_bus.objectstore.upload import upload_run

    scaleout.reach_s3(monkeypatch)
    client = scaleout.s3.client()
    loc = S3Location.parse(scaleout.root)
    kept: dict[str, bytes] = {}

    def hold_trades(meta: dict[str, Any], run_dir: Any) -> None:
        kept["trades"] = (run_dir / "trades.parquet").read_bytes()
        (run_dir / "trades.parquet").unlink()  # declared, uploaded later

    upload_run(client, local_run(scaleout.tmp, "late", hold_trades), loc, "backtest", "late")

    def pending() -> list[dict[str, Any]]:
        out = CliRunner().invoke(cli, ["pending", "--format", "json"], env=scaleout.env())
        assert out.exit_code == 0, out.output
        return list(json.loads(out.output))

    sync = CliRunner().invoke(cli, ["sync", "--format", "json"], env=scaleout.env())
    assert sync.exit_code == 0, sync.output
    [row] = pending()
    assert row["run_dir"] == f"{scaleout.root}/backtest/late" and row["run_id"] == "late"
    assert "'trades'" in row["reason"] and "does not exist yet" in row["reason"], row
    seen = dt.datetime.fromisoformat(row["first_seen"].replace("Z", "+00:00"))
    reject = dt.datetime.fromisoformat(row["reject_after"].replace("Z", "+00:00"))
    timeout_s = scaleout.config().pending_timeout_s
    written = _last_modified(client, loc.bucket, loc.key("backtest", "late", "metadata.json"))
    assert reject <= seen + dt.timedelta(seconds=timeout_s), row
    assert abs((reject - written).total_seconds() - timeout_s) < 0.002, (row, written)

    client.put_object(
        Bucket=scaleout.bucket,
        Key=loc.key("backtest", "late", "trades.parquet"),
        Body=kept["trades"],
    )
    sync = CliRunner().invoke(cli, ["sync", "--format", "json"], env=scaleout.env())
    assert sync.exit_code == 0, sync.output
    assert pending() == []
    assert scaleout.run_counts("runs_d") == {"late": 1}


def _last_modified(client: Any, bucket: str, key: str) -> Any:
    """``key``'s LastModified as a GET gives it (what the validation reads)."""
    return client.head_object(Bucket=bucket, Key=key)["LastModified"]


def test_the_pending_timeout_counts_from_when_metadata_json_was_written(
    scaleout: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An incomplete run is rejected ``pending_timeout_s`` after its metadata.json was written
    (its LastModified, as the validation's GET gives it), as the local backend counts from its
    mtime, not from when this process first saw it: a one-shot ``sync`` or a daemon just
    restarted, looking for the first time, rejects a run incomplete for longer at once. A sync
    with a longer timeout keeps it pending."""
    import time

    from quantbot_bus.objectstore.location import S3Location
    from quantbot_bus.pipeline import sync

    scaleout.reach_s3(monkeypatch)
    scaleout.upload("stale", incomplete=True)
    loc = S3Location.parse(scaleout.root)
    written = _last_modified(
        scaleout.s3.client(), loc.bucket, loc.key("backtest", "stale", "metadata.json")
    )
    patient = sync(dataclasses.replace(scaleout.config("state-a"), pending_timeout_s=3600.0))
    assert (patient.registered, patient.rejected, len(patient.pending)) == ([], [], 1)
    time.sleep(max(0.0, written.timestamp() + 2.0 - time.time()))  # it is 2 s old now
    hasty = sync(dataclasses.replace(scaleout.config("state-b"), pending_timeout_s=2.0))
    assert [r.run_id for r in hasty.rejected] == ["stale"] and hasty.pending == []
    assert hasty.rejected[0].reason.endswith("(still incomplete after the pending timeout)")
    assert scaleout.run_counts("rejections_f") == {"stale": 1}


def test_runs_of_another_root_sharing_the_tables_are_looked_up_once_not_every_reconcile(
    scaleout: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two roots (two prefixes of one bucket) register into the same tables. A reconcile of
    one finds the other's runs registered and unlisted: they are checked once (never deleted),
    then passed over; one that the other root deletes and this root registers later is this
    root's to delete again."""
    from quantbot_bus.config import load_config
    from quantbot_bus.pipeline import sync

    scaleout.reach_s3(monkeypatch)
    other_root = f"s3://{scaleout.bucket}/other"
    other = load_config(  # its claims (b2's, below) lapse in 2 s, not the default minute
        env={
            **scaleout.env("state-other"),
            "QUANTBOT_BUS_ROOT": other_root,
            "QUANTBOT_BUS_CLAIM_LEASE_S": "2",
        },
        cwd=scaleout.tmp,
    )
    assert other.claim_lease_s == 2.0
    for run_id in ("a1", "a2"):
        scaleout.upload(run_id)
    for run_id in ("b1", "b2", "b3"):
        scaleout.upload(run_id, root=other_root)
    assert sorted(sync(scaleout.config()).registered) == ["a1", "a2"]
    assert sorted(sync(other).registered) == ["b1", "b2", "b3"]

    def runs_d_reads(since: int) -> list[str]:
        """GETs of runs_d's data files (a look-up of registered rows) after request ``since``."""
        return [
            r
            for r in scaleout.s3.requests()[since:]
            if r.startswith("GET ") and "/runs_d/data/" in r
        ]

    first = sync(scaleout.config())  # a reconcile: b1..b3 are looked up, found elsewhere
    assert list(first.deleted) == []
    mark = len(scaleout.s3.requests())
    again = sync(scaleout.config())
    assert list(again.deleted) == []
    assert runs_d_reads(mark) == []  # nothing to look up any more
    assert set(scaleout.run_counts("runs_d")) == {"a1", "a2", "b1", "b2", "b3"}

    # b2 leaves the other root (and the tables), then arrives in this root, then leaves it
    client = scaleout.s3.client()
    for prefix in ("other/backtest/b2/",):
        for obj in client.list_objects_v2(Bucket=scaleout.bucket, Prefix=prefix)["Contents"]:
            client.delete_object(Bucket=scaleout.bucket, Key=obj["Key"])
    assert list(sync(other).deleted) == ["b2"]
    scaleout.upload("b2")
    assert sync(scaleout.config()).registered == ["b2"]
    for obj in client.list_objects_v2(Bucket=scaleout.bucket, Prefix="runs/backtest/b2/")[
        "Contents"
    ]:
        client.delete_object(Bucket=scaleout.bucket, Key=obj["Key"])
    assert list(sync(scaleout.config()).deleted) == ["b2"]
    assert set(scaleout.run_counts("runs_d")) == {"a1", "a2", "b1", "b3"}
