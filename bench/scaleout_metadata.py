"""The ``metadata`` figure of :mod:`bench.scaleout`: an Iceberg table's metadata bytes over many
one-run commits, with the daemon's maintenance and without."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pyarrow as pa


def metadata_growth(b: Any, kept: int, raw: int) -> list[tuple[str, float, str]]:
    """On ``b`` (a :class:`bench.scaleout.Bench`): ``kept`` one-run commits with the daemon's maintenance every 50, then ``raw`` without.

    At each quarter: the bytes under ``metadata/`` by kind (table metadata JSON, manifest
    lists, manifests) and the mean wall time of a commit in that quarter."""
    from quantbot_bus.iceberg.commit import append_once
    from quantbot_bus.iceberg.maintenance import expire_snapshots, remove_orphan_files
    from quantbot_bus.iceberg.tables import ensure_table, open_catalog
    from quantbot_bus.objectstore.location import S3Settings

    bucket = "qb" + uuid.uuid4().hex[:12]
    b.s3.make_bucket(bucket)
    out = []
    schema = pa.schema([pa.field("run_id", pa.string(), nullable=False)])
    props = S3Settings.from_env(b.s3.env).pyiceberg_properties()
    for maintained, commits in ((True, kept), (False, raw)):
        if commits <= 0:
            continue
        db = b.database()
        cat = open_catalog(
            f"postgresql://postgres@127.0.0.1:{b.pg.port}/{db}",
            f"s3://{bucket}/wh-{db}",
            props,
        )
        table = ensure_table(cat, "growth", schema)
        quarters: list[tuple[dict[str, int], float]] = []
        started = time.perf_counter()
        for i in range(commits):
            append_once(
                cat,
                "growth",
                [f"k{i}"],
                lambda tx, add, p: tx.append(
                    pa.table({"run_id": add}, schema=schema), snapshot_properties=p
                ),
            )
            if maintained and (i + 1) % 50 == 0:
                table = cat.load_table("quantbot.growth")
                expire_snapshots(table, max_age_s=0)
                remove_orphan_files(table, b.client, min_age_s=0)
            if (i + 1) % max(1, commits // 4) == 0 and len(quarters) < 4:
                per_commit = (time.perf_counter() - started) / max(1, commits // 4)
                quarters.append((_metadata_bytes(b.client, bucket, table.location()), per_commit))
                print(f"  {'kept' if maintained else 'raw'} {i + 1}: {quarters[-1]}", flush=True)
                started = time.perf_counter()
        label = "with maintenance" if maintained else "without maintenance"
        out.append(
            (
                f"metadata_{'kept' if maintained else 'raw'}_mb",
                sum(quarters[-1][0].values()) / 1e6,
                f"{commits} one-run commits {label}; at each quarter MB "
                + ", ".join(f"{sum(q.values()) / 1e6:.2f}" for q, _ in quarters)
                + " (table JSON "
                + ", ".join(f"{q['json'] / 1e6:.2f}" for q, _ in quarters)
                + "; manifest lists "
                + ", ".join(f"{q['lists'] / 1e6:.2f}" for q, _ in quarters)
                + "; manifests "
                + ", ".join(f"{q['manifests'] / 1e6:.2f}" for q, _ in quarters)
                + "); ms per commit "
                + ", ".join(f"{t * 1000:.0f}" for _, t in quarters),
            )
        )
    return out


def _metadata_bytes(client: Any, bucket: str, location: str) -> dict[str, int]:
    """Bytes under a table's ``metadata/``: table JSON, manifest lists, manifests."""
    prefix = location.split(f"s3://{bucket}/", 1)[1] + "/metadata/"
    sizes = {"json": 0, "lists": 0, "manifests": 0}
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    for page in pages:
        for o in page.get("Contents", []):
            name = o["Key"].rsplit("/", 1)[-1]
            kind = (
                "json"
                if name.endswith(".json")
                else "lists"
                if name.startswith("snap-")
                else "manifests"
            )
            sizes[kind] += o["Size"]
    return sizes


def compaction_gain(b: Any, commits: int) -> list[tuple[str, float, str]]:
    """On ``b``: ``commits`` one-run commits to a ``runs_d``-like table (the daemon's schema),
    then a full scan (median of 3) before and after :func:`~quantbot_bus.iceberg.compaction.compact`
    (timed), and what a deletion of one run costs before and after."""
    import statistics

    from quantbot_bus.iceberg.commit import append_once
    from quantbot_bus.iceberg.compaction import compact
    from quantbot_bus.iceberg.delete import delete_keys
    from quantbot_bus.iceberg.tables import RUNS_SCHEMA, ensure_table, open_catalog
    from quantbot_bus.objectstore.location import S3Settings

    bucket = "qb" + uuid.uuid4().hex[:12]
    b.s3.make_bucket(bucket)
    db = b.database()
    props = S3Settings.from_env(b.s3.env).pyiceberg_properties()
    cat = open_catalog(
        f"postgresql://postgres@127.0.0.1:{b.pg.port}/{db}", f"s3://{bucket}/wh", props
    )
    ensure_table(cat, "runs_d", RUNS_SCHEMA)
    import datetime as dt

    now = dt.datetime(2026, 12, 7, 12, 0)
    params = '{"strategy": "policy", "take_profit": 2.0, "stop_loss": 0.5}'

    def row(i: int) -> pa.Table:
        return pa.Table.from_pylist(
            [
                {
                    "run_id": f"run-{i:06d}",
                    "run_type": "backtest",
                    "status": "success",
                    "created_at": now,
                    "params": params,
                    "metrics": '{"total_return_bps": 12.5}',
                    "run_dir": f"s3://{bucket}/runs/backtest/run-{i:06d}",
                    "artifact_count": 3,
                    "total_rows": 1000,
                    "total_bytes": 50_000,
                    "fingerprint": uuid.uuid4().hex,
                    "registered_at": now,
                    "registered_by": "bench:1",
                }
            ],
            schema=RUNS_SCHEMA,
        )

    def commit(i: int) -> None:
        data = row(i)

        def act(tx: Any, add: list[str], p: dict[str, str]) -> None:
            tx.append(data, snapshot_properties=p)

        append_once(cat, "runs_d", [f"run-{i:06d}"], act)

    for i in range(commits):
        commit(i)

    def scan_ms() -> float:
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            n = cat.load_table("quantbot.runs_d").scan().to_arrow().num_rows
            times.append((time.perf_counter() - t0) * 1000)
        assert n >= commits - 2, n
        return statistics.median(times)

    def delete_ms(run_id: str) -> float:
        t0 = time.perf_counter()
        delete_keys(cat, "runs_d", [run_id])
        return (time.perf_counter() - t0) * 1000

    before, del_before = scan_ms(), delete_ms("run-000001")
    t0 = time.perf_counter()
    files = compact(cat, "runs_d")
    took = time.perf_counter() - t0
    after, del_after = scan_ms(), delete_ms("run-000002")
    note = (
        f"{commits} one-run commits: a full scan {before:.0f} ms over {commits} files,"
        f" {after:.0f} ms after compacting {files} files into one ({took:.1f} s);"
        f" deleting one run {del_before:.0f} ms before, {del_after:.0f} ms after"
    )
    print(f"  {note}", flush=True)
    return [("compaction_scan_ratio", before / after, note)]
