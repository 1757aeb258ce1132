"""Snapshot expiry and orphan cleanup (quantbot_bus.iceberg.maintenance) on a real PostgreSQL
catalog and a real S3-compatible server, with tables filled by real exactly-once appends."""

from __future__ import annotations

import time
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from structlog.testing import capture_logs

from quantbot_bus.iceberg.commit import append_once, present_keys
from quantbot_bus.iceberg.maintenance import (
    expire_snapshots,
    maintain,
    referenced_files,
    remove_orphan_files,
)
from quantbot_bus.iceberg.tables import ensure_table, identifier
from quantbot_bus.objectstore.location import S3Settings

SCHEMA = pa.schema([pa.field("run_id", pa.string(), nullable=False), ("v", pa.int64())])


def _appending(data: pa.Table) -> Any:
    """The ``act`` of :func:`append_once` that appends ``data``."""
    return lambda tx, keys, props: tx.append(data, snapshot_properties=props)


def _fill(so: Any, name: str, commits: int, rows: int = 1) -> list[str]:
    """``commits`` exactly-once appends of ``rows`` rows each to table ``name`` (one key per
    commit); returns the keys, oldest first."""
    catalog = so.catalog()
    ensure_table(catalog, name, SCHEMA)
    keys = [f"{name}-{i:04d}" for i in range(commits)]
    for key in keys:
        data = pa.Table.from_pylist([{"run_id": key, "v": v} for v in range(rows)], schema=SCHEMA)
        assert append_once(catalog, name, [key], _appending(data)) == [key]
    return keys


def _table(so: Any, name: str) -> Any:
    return so.catalog().load_table(identifier(name))


def _prefix(table: Any) -> str:
    """The key prefix of ``table``'s location in its bucket ('warehouse/quantbot.db/t/')."""
    return table.location().split("://", 1)[1].split("/", 1)[1].rstrip("/") + "/"


def _objects(so: Any, prefix: str) -> dict[str, int]:
    """Key -> size of every object under ``prefix``."""
    pages = (
        so.s3.client().get_paginator("list_objects_v2").paginate(Bucket=so.bucket, Prefix=prefix)
    )
    return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}


KINDS = [
    ("metadata.json", lambda n: n.endswith(".metadata.json")),
    ("manifest lists", lambda n: n.startswith("snap-")),
    ("manifests", lambda n: n.endswith(".avro")),
    ("other", lambda n: True),
]


def _sizes(objects: dict[str, int]) -> str:
    """Objects and bytes per kind: metadata files, manifest lists, manifests, the rest."""
    kinds: dict[str, list[int]] = {}
    for key, size in objects.items():
        name = key.rsplit("/", 1)[-1]
        kind = next(k for k, test in KINDS if test(name))
        kinds.setdefault(kind, []).append(size)
    parts = [f"{k} {len(v)} / {sum(v)} B" for k, v in sorted(kinds.items())]
    return f"{sum(objects.values())} B in all ({', '.join(parts)})"


def _rows(table: Any) -> list[str]:
    return sorted(table.scan(selected_fields=("run_id",)).to_arrow().column("run_id").to_pylist())


def test_expiry_keeps_the_newest_snapshots_every_row_and_shrinks_the_metadata(
    scaleout: Any,
) -> None:
    # 30 commits of 3 rows: pyiceberg deep-copies the whole metadata several times per commit,
    # so commit n costs O(n) and 150 one-row commits take minutes on a busy 2-core machine
    keys = _fill(scaleout, "t", 30, rows=3)
    table = _table(scaleout, "t")
    assert len(table.snapshots()) == 30
    current = table.current_snapshot().snapshot_id
    meta = _prefix(table) + "metadata/"
    before = _objects(scaleout, meta)

    assert expire_snapshots(table, keep=12) == 0  # every snapshot is younger than an hour
    assert expire_snapshots(table, keep=12, max_age_s=0) == 18
    table = _table(scaleout, "t")
    assert len(table.snapshots()) == 12
    assert table.current_snapshot().snapshot_id == current
    assert _rows(table) == sorted(keys * 3)
    assert set(keys[-12:]) <= present_keys(table)
    assert not set(keys[:18]) & present_keys(table)
    assert expire_snapshots(table, keep=12, max_age_s=0) == 0

    client = S3Settings.from_env(scaleout.s3.env).client()
    removed = remove_orphan_files(table, client, min_age_s=0)
    after = _objects(scaleout, meta)
    print(f"\nmetadata/ before: {_sizes(before)}")
    print(f"after expiry + orphan removal ({removed} deleted): {_sizes(after)}")
    assert removed >= 18  # at least the expired snapshots' manifest lists
    assert sum(after.values()) < sum(before.values())
    assert set(after) <= set(before) | {table.metadata_location.split("/", 3)[3]}
    assert _rows(_table(scaleout, "t")) == sorted(keys * 3)
    assert remove_orphan_files(table, client, min_age_s=0) == 0

    # the exactly-once check still sees the newest keys: appending one again adds nothing
    assert _fill_more(scaleout, "t", keys[-1]) == []
    assert len(_rows(_table(scaleout, "t"))) == 90


def _fill_more(so: Any, name: str, key: str) -> list[str]:
    data = pa.Table.from_pylist([{"run_id": key, "v": -1}], schema=SCHEMA)
    return append_once(so.catalog(), name, [key], _appending(data))


def test_orphan_removal_deletes_only_old_unreferenced_objects_under_the_table(
    scaleout: Any,
) -> None:
    keys = _fill(scaleout, "t", 5)
    # a producer's file registered in place (add_files), outside the table location
    outside = "runs/backtest/x/trades.parquet"
    data = pa.Table.from_pylist([{"run_id": "x", "v": 1}] * 4, schema=SCHEMA)
    settings = S3Settings.from_env(scaleout.s3.env)
    pq.write_table(data, f"{scaleout.bucket}/{outside}", filesystem=settings.arrow_filesystem())
    uri = f"s3://{scaleout.bucket}/{outside}"
    append_once(
        scaleout.catalog(),
        "t",
        ["x"],
        lambda tx, ks, props: tx.add_files([uri], snapshot_properties=props),
    )
    table = _table(scaleout, "t")
    base = _prefix(table)
    orphan = base + "data/orphan-00000.parquet"
    sibling = base.rstrip("/") + "2/data/x.parquet"  # another table's prefix starts the same
    marker = base + "data/"  # a directory marker, as some S3 tools make
    s3 = scaleout.s3.client()
    for key in (orphan, sibling, marker, "runs/backtest/x/stray.parquet"):
        s3.put_object(Bucket=scaleout.bucket, Key=key, Body=b"not referenced")
    needed = {u.split("/", 3)[3] for u in referenced_files(table)}
    assert outside in needed

    client = settings.client()
    assert remove_orphan_files(table, client) == 0  # the orphan is younger than an hour
    assert orphan in _objects(scaleout, base)
    assert remove_orphan_files(table, client, min_age_s=0) == 1
    left = set(_objects(scaleout, ""))
    assert orphan not in left
    assert {sibling, marker, "runs/backtest/x/stray.parquet"} <= left
    assert needed <= left
    assert _rows(_table(scaleout, "t")) == sorted(keys + ["x"] * 4)

    # a stale table object: the catalog applies the expiry to the newest metadata, so a
    # snapshot appended since survives, and so does the one that was current when loaded
    stale = _table(scaleout, "t")
    assert _fill_more(scaleout, "t", "late") == ["late"]
    assert expire_snapshots(stale, keep=1, max_age_s=0) == 5
    fresh = _table(scaleout, "t")
    assert len(fresh.snapshots()) == 2 and present_keys(fresh) == {"x", "late"}
    assert len(_rows(fresh)) == 10


def test_maintain_does_every_table_and_survives_a_broken_one(scaleout: Any) -> None:
    keys = _fill(scaleout, "a", 3)
    _fill(scaleout, "b", 2)
    broken = _table(scaleout, "b").metadata_location.split("/", 3)[3]
    s3 = scaleout.s3.client()
    s3.delete_object(Bucket=scaleout.bucket, Key=broken)  # table b cannot be loaded any more
    orphan = _prefix(_table(scaleout, "a")) + "metadata/lost-commit.avro"
    s3.put_object(Bucket=scaleout.bucket, Key=orphan, Body=b"x")
    outside = "runs/backtest/x/trades.parquet"
    s3.put_object(Bucket=scaleout.bucket, Key=outside, Body=b"x")

    settings = S3Settings.from_env(scaleout.s3.env)
    with capture_logs() as logs:
        assert maintain(scaleout.catalog(), settings) == {"a": {"expired": 0, "orphans_removed": 0}}
        later = time.time() + 2 * 3600  # two hours on: the orphan is old enough to go
        result = maintain(scaleout.catalog(), settings, now=later)
    assert result == {"a": {"expired": 0, "orphans_removed": 1}}  # 3 snapshots < KEEP_SNAPSHOTS
    events = [(e["event"], e.get("table")) for e in logs]
    assert events.count(("iceberg.maintenance_failed", "quantbot.b")) == 2
    assert events.count(("iceberg.orphans_removed", "quantbot.a")) == 2
    left = _objects(scaleout, "")
    assert orphan not in left and outside in left
    assert _rows(_table(scaleout, "a")) == keys
