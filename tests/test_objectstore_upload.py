"""Uploading a run to object storage (real moto_server): two writers of one run id never replace
each other's objects, and an upload that stopped half-way can be run again."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from scaleout import local_run

from quantbot_bus.errors import ContractError
from quantbot_bus.objectstore.location import S3Location
from quantbot_bus.objectstore.upload import upload_run


@pytest.fixture
def bucket(s3_server: Any) -> S3Location:
    name = "qb" + uuid.uuid4().hex[:12]
    s3_server.make_bucket(name)
    return S3Location(name, "runs")


def _objects(s3: Any, loc: S3Location) -> dict[str, bytes]:
    client = s3.client()
    listed = client.list_objects_v2(Bucket=loc.bucket, Prefix=loc.key("backtest"))
    return {
        o["Key"]: client.get_object(Bucket=loc.bucket, Key=o["Key"])["Body"].read()
        for o in listed.get("Contents", [])
    }


def _edit_pnl(pnl: float) -> Any:
    """A run whose trades table holds other values (other Parquet bytes)."""

    def edit(meta: dict[str, Any], run_dir: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"run_id": ["r1"], "pnl": [pnl]}), run_dir / "trades.parquet")

    return edit


def test_a_second_writer_of_a_committed_run_changes_none_of_its_objects(
    s3_server: Any, bucket: S3Location, tmp_path: Path
) -> None:
    first = local_run(tmp_path / "a", "r1")
    second = local_run(tmp_path / "b", "r1", edit=_edit_pnl(99.0))
    client = s3_server.client()
    upload_run(client, first, bucket, "backtest", "r1")
    before = _objects(s3_server, bucket)
    with pytest.raises(ContractError, match=r"trades\.parquet already holds other bytes"):
        upload_run(client, second, bucket, "backtest", "r1")
    assert _objects(s3_server, bucket) == before
    assert (
        before[bucket.key("backtest", "r1", "trades.parquet")]
        == (first / "trades.parquet").read_bytes()
    )


def test_an_upload_stopped_half_way_is_finished_by_running_it_again(
    s3_server: Any, bucket: S3Location, tmp_path: Path
) -> None:
    run = local_run(tmp_path / "a", "r1")
    client = s3_server.client()
    # the data files are up, the manifest is not: what a writer killed half-way leaves
    meta = run / "metadata.json"
    text = meta.read_bytes()
    meta.unlink()
    upload_run(client, run, bucket, "backtest", "r1")
    assert bucket.key("backtest", "r1", "metadata.json") not in _objects(s3_server, bucket)
    meta.write_bytes(text)
    upload_run(client, run, bucket, "backtest", "r1")
    got = _objects(s3_server, bucket)
    assert got[bucket.key("backtest", "r1", "metadata.json")] == text
    assert (
        got[bucket.key("backtest", "r1", "trades.parquet")] == (run / "trades.parquet").read_bytes()
    )


def test_another_writer_cannot_finish_a_half_way_upload_with_other_bytes(
    s3_server: Any, bucket: S3Location, tmp_path: Path
) -> None:
    mine = local_run(tmp_path / "a", "r1")
    theirs = local_run(tmp_path / "b", "r1", edit=_edit_pnl(-5.0))
    (mine / "metadata.json").unlink()
    client = s3_server.client()
    upload_run(client, mine, bucket, "backtest", "r1")
    partial = _objects(s3_server, bucket)
    with pytest.raises(ContractError, match="another writer is writing this run id"):
        upload_run(client, theirs, bucket, "backtest", "r1")
    assert _objects(s3_server, bucket) == partial  # no manifest, data untouched
