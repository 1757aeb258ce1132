"""What a batch's registration costs on the scale-out backend (real PostgreSQL and S3 server):
work done per commit must not grow with the runs in the batch, per-snapshot work must not be
repeated per commit, and the rewrite reads and writes its objects through obstore."""

from __future__ import annotations

import json
import time
from typing import Any

import pyarrow as pa
import pytest

from quantbot_bus.iceberg.tables import DELETED_PROPERTY, KEYS_PROPERTY, _parse_keys, key_changes
from quantbot_bus.objectstore.location import parse_timestamp

pytestmark = pytest.mark.timeout(240)


def _snapshot(snapshot_id: int, added: list[str], deleted: tuple[str, ...] = ()) -> Any:
    from pyiceberg.table.snapshots import Operation, Snapshot, Summary

    props = {KEYS_PROPERTY: json.dumps(added)}
    if deleted:
        props[DELETED_PROPERTY] = json.dumps(list(deleted))
    return Snapshot.model_validate(
        {
            "snapshot-id": snapshot_id,
            "sequence-number": snapshot_id,
            "timestamp-ms": snapshot_id,
            "manifest-list": f"s3://b/m/{snapshot_id}.avro",
            "summary": Summary(Operation.APPEND, **props),
        }
    )


def test_each_snapshot_summary_is_parsed_once_however_many_commits_look_at_it() -> None:
    """Every commit judges its keys against every retained snapshot: a snapshot's key list
    is parsed the first time only (summaries never change), and the verdict stays the same."""
    snaps = [
        _snapshot(101, ["a", "b"]),
        _snapshot(102, ["c"], deleted=("a",)),
        _snapshot(103, ["a-again-" + "x" * 40]),
    ]
    first = key_changes(snaps)
    misses = _parse_keys.cache_info().misses
    for _ in range(5):  # five later commits over the same retained snapshots
        assert key_changes(snaps) == first
    assert _parse_keys.cache_info().misses == misses
    assert first == ({"b", "c", "a-again-" + "x" * 40}, {"a"})


def test_listing_timestamps_parse_as_botocore_would_but_without_dateutil(scaleout: Any) -> None:
    """The fast parser gives botocore's instant, timezone-aware, for the ISO 8601 of
    ListObjectsV2 and for every other form botocore accepts; a real listing through the bus's
    client goes through it (dateutil's parser cost more than the rest of a listing page)."""
    import datetime as dt

    from botocore.utils import parse_timestamp as botocore_parse

    from quantbot_bus.objectstore.location import S3Settings

    for raw in (
        "2026-12-06T21:55:31.000Z",
        "2026-12-06T21:55:31Z",
        "2026-12-06T23:55:31.250+02:00",
        "Sun, 06 Dec 2026 21:55:31 GMT",
        1765058131,
        "1765058131",
    ):
        ours, theirs = parse_timestamp(raw), botocore_parse(raw)
        assert ours.tzinfo is not None and ours.timestamp() == theirs.timestamp(), raw
    client = S3Settings.from_env(scaleout.s3.env).client()
    client.put_object(Bucket=scaleout.bucket, Key="runs/x/y/metadata.json", Body=b"{}")
    (obj,) = client.list_objects_v2(Bucket=scaleout.bucket, Prefix="runs/")["Contents"]
    # datetime.fromisoformat's UTC, not dateutil's tzutc(): the fast path parsed it
    assert obj["LastModified"].tzinfo is dt.UTC
    assert abs(obj["LastModified"].timestamp() - time.time()) < 600
    assert callable(client.upload_file)  # still a boto3 client (objectstore/upload.py uses it)


def _upload(so: Any, tag: str, n: int) -> list[str]:
    """``n`` runs as the bench puts them (each a ``trades`` file with its run id, registered
    in place, and a ``fills`` file without, rewritten), in this process: fast."""
    from bench.scaleout import upload_runs

    ids = [f"{tag}-{i:03d}" for i in range(n)]
    upload_runs(so.s3.client(), so.bucket, ids)
    return ids


def test_a_batch_copies_each_tables_metadata_per_commit_not_per_run(
    scaleout: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pyiceberg deep-copies a table's whole metadata (every retained snapshot) each time a
    transaction's metadata is read: a batch of 8 runs reads it as often as a batch of 2 (in
    place and rewritten files alike), and both register every row once."""
    from pyiceberg.table import Transaction

    from quantbot_bus.iceberg.bus import IcebergBus

    scaleout.reach_s3(monkeypatch)
    reads = [0]
    read = Transaction.__dict__["table_metadata"].fget

    def counted(tx: Any) -> Any:
        reads[0] += 1
        return read(tx)

    bus = IcebergBus(scaleout.config())
    try:
        _upload(scaleout, "warm", 1)
        assert len(bus.poll(full=True).registered) == 1  # the tables exist from here on
        monkeypatch.setattr(Transaction, "table_metadata", property(counted))
        per_batch = {}
        for tag, n in (("two", 2), ("eight", 8)):
            ids = _upload(scaleout, tag, n)
            reads[0] = 0
            assert sorted(bus.poll().registered) == ids
            per_batch[n] = reads[0]
    finally:
        bus.close()
    assert per_batch[8] == per_batch[2], per_batch
    assert len(scaleout.run_counts("runs_d")) == 11
    assert set(scaleout.run_counts("fills").values()) == {2}  # rewritten, each run once
    assert set(scaleout.run_counts("trades").values()) == {3}  # in place
    assert len(scaleout.run_counts("trades")) == len(scaleout.run_counts("fills")) == 11


def test_a_file_longer_than_the_tail_read_is_fetched_whole_and_rewritten(
    scaleout: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file without a run_id column and larger than the validation's tail read (so its
    bytes are not at hand) is fetched whole, rewritten with its run id below the warehouse
    and registered with all its rows."""
    import numpy as np

    from quantbot_bus.objectstore.validate import TAIL_READ
    from quantbot_bus.pipeline import sync
    from quantbot_bus.writer import RunWriter

    scaleout.reach_s3(monkeypatch)
    rows = 3 * TAIL_READ // 8  # random doubles do not compress: about 3 tail reads
    px = np.random.default_rng(7).random(rows)
    with RunWriter(scaleout.root, "backtest", run_id="big-fills", git=None) as w:
        w.write_table("fills", pa.table({"qty": np.arange(rows), "px": px}))
    assert sync(scaleout.config()).registered == ["big-fills"]
    table = scaleout.catalog().load_table("quantbot.fills")
    data = table.scan().to_arrow()
    assert data.num_rows == rows and set(data.column("run_id").to_pylist()) == {"big-fills"}
    assert data.sort_by("qty").column("px").to_numpy().tolist() == px.tolist()
    (path,) = {f.file.file_path for f in table.scan().plan_files()}
    assert path.startswith(f"{table.location()}/data/run_id=big-fills/"), path
    how = scaleout.catalog().load_table("quantbot.artifacts_f").scan().to_arrow()
    assert how.column("registered_how").to_pylist() == ["rewritten"]


def test_a_large_file_registered_in_place_is_validated_from_its_footer_alone(
    scaleout: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 15 MB Parquet file with its run_id column: the validation and the registration read
    its tail with ranged GETs, never the object (counted in bytes through a proxy in front of
    the S3 server)."""
    import numpy as np
    from tcpproxy import TcpProxy

    from quantbot_bus.pipeline import sync
    from quantbot_bus.writer import RunWriter

    scaleout.reach_s3(monkeypatch)
    rows = 2_000_000  # random doubles: 15 MB that do not compress
    with RunWriter(scaleout.root, "backtest", run_id="big-trades", git=None) as w:
        w.write_table(
            "trades",
            pa.table(
                {"run_id": ["big-trades"] * rows, "px": np.random.default_rng(3).random(rows)}
            ),
        )
    size = sum(
        o["Size"]
        for o in scaleout.s3.client().list_objects_v2(Bucket=scaleout.bucket, Prefix="runs/")[
            "Contents"
        ]
    )
    assert size > 15_000_000
    proxy = TcpProxy(scaleout.s3.port)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{proxy.port}")
        assert sync(scaleout.config()).registered == ["big-trades"]
        received = proxy.received
    finally:
        proxy.close()
    how = scaleout.catalog().load_table("quantbot.artifacts_f").scan().to_arrow()
    assert how.column("registered_how").to_pylist() == ["add_files"]  # in place
    assert scaleout.run_counts("trades") == {"big-trades": rows}
    # at least the footer went through the proxy (the counter sees the reads), far from all
    assert 10_000 < received < 1_000_000, f"{received:,} bytes read for a {size:,}-byte run"
