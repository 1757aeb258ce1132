"""Writing runs to object storage (real moto_server): two writers of one run id never replace
each other's objects, an upload that stopped half-way can be run again, and the producers and
`backtest run` write to an ``s3://`` root."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from scaleout import local_run

from quantbot_bus.errors import ContractError
from quantbot_bus.objectstore.location import S3Location
from quantbot_bus.objectstore.upload import upload_run

PROJECT = Path(__file__).resolve().parents[1]


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


def _keys(s3: Any, loc: S3Location) -> list[str]:
    listed = s3.client().list_objects_v2(Bucket=loc.bucket, Prefix=loc.key("backtest") + "/")
    return sorted(o["Key"] for o in listed.get("Contents", []))


def test_a_producer_script_writes_to_an_s3_root_with_no_catalog_settings(
    s3_server: Any, bucket: S3Location, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANTBOT_BUS_")}
    env["QUANTBOT_BUS_ROOT"] = "s3://another-bucket/runs"  # --root wins over it
    proc = subprocess.run(
        [sys.executable, str(PROJECT / "producers" / "backtest_policy.py"), "--calls", "8"]
        + ["--root", f"s3://{bucket.bucket}/{bucket.prefix}"],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
        cwd=tmp_path,
        env={**env, **s3_server.env},
    )
    assert proc.returncode == 0, proc.stderr
    run_id, where = proc.stdout.rstrip("\n").split("\t")
    assert where == f"s3://{bucket.bucket}/{bucket.key('backtest', run_id)}"
    names = [k.rsplit("/", 1)[1] for k in _keys(s3_server, bucket)]
    assert "metadata.json" in names and "backtest_call_results.parquet" in names
    assert not (tmp_path / "artifacts").exists()  # nothing written beside it


@pytest.mark.parametrize("how", ["flag", "config"])
def test_backtest_run_writes_to_an_s3_root(
    s3_server: Any, bucket: S3Location, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """``--root s3://...`` with no catalog settings (a producer's host), or the bus's own
    scale-out config."""
    from click.testing import CliRunner

    from quantbot_bus.cli import main

    for key in [k for k in os.environ if k.startswith("QUANTBOT_BUS_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    root = f"s3://{bucket.bucket}/{bucket.prefix}"
    args = ["backtest", "run", "--strategy", "path-only", "--calls", "8"]
    env = dict(s3_server.env)
    if how == "flag":
        args += ["--root", root]
    else:
        env.update(
            QUANTBOT_BUS_ROOT=root,
            QUANTBOT_BUS_CATALOG="iceberg",
            QUANTBOT_BUS_CATALOG_URI="postgresql://bus@127.0.0.1:5432/bus",  # not reached
            QUANTBOT_BUS_WAREHOUSE=f"s3://{bucket.bucket}/warehouse",
        )
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.output
    run_id, where = result.stdout.rstrip("\n").split("\t")
    assert where == f"s3://{bucket.bucket}/{bucket.key('backtest', run_id)}"
    assert bucket.key("backtest", run_id, "metadata.json") in _keys(s3_server, bucket)
    assert not (tmp_path / "artifacts").exists()


def test_a_run_writer_whose_upload_is_refused_keeps_the_run_and_names_it(
    s3_server: Any, bucket: S3Location, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer's half-way upload holds other bytes under the run id: the refused run is
    kept in its staging directory, which the error names, and can be put again elsewhere."""
    import pyarrow as pa

    from quantbot_bus.writer import RunWriter

    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    theirs = local_run(tmp_path / "b", "r1", edit=_edit_pnl(-5.0))
    (theirs / "metadata.json").unlink()
    upload_run(s3_server.client(), theirs, bucket, "backtest", "r1")  # half-way, no manifest
    root = f"s3://{bucket.bucket}/{bucket.prefix}"
    with pytest.raises(ContractError, match="already holds other bytes") as err:
        with RunWriter(root, "backtest", run_id="r1", git=None) as w:
            w.write_table("trades", pa.table({"run_id": ["r1"], "pnl": [1.0]}))
    assert f"the run is kept in {w.run_dir}" in str(err.value)
    assert (w.run_dir / "metadata.json").is_file() and (w.run_dir / "trades.parquet").is_file()
    other = S3Location(bucket.bucket, "elsewhere")
    upload_run(s3_server.client(), w.run_dir, other, "backtest", "r1")
    assert other.key("backtest", "r1", "metadata.json") in _keys(s3_server, other)


def test_a_file_over_one_put_is_refused_before_anything_is_put(
    s3_server: Any, bucket: S3Location, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quantbot_bus.objectstore import upload

    run = local_run(tmp_path / "a", "r1")
    monkeypatch.setattr(upload, "MAX_PUT_BYTES", (run / "trades.parquet").stat().st_size - 1)
    with pytest.raises(ContractError, match=r"trades\.parquet is [\d,]+ bytes; one object PUT"):
        upload_run(s3_server.client(), run, bucket, "backtest", "r1")
    assert _keys(s3_server, bucket) == []


def test_a_seed_run_whose_success_marker_failed_is_finished_by_running_the_upload_again(
    s3_server: Any, bucket: S3Location, tmp_path: Path
) -> None:
    """run.json went up, _SUCCESS did not (the upload stopped there): the same upload again
    finds its own run.json and writes _SUCCESS; another run.json is still refused."""
    import shutil

    import pyarrow as pa

    from quantbot_bus.writer import RunWriter

    with RunWriter(tmp_path / "local", "backtest", git=None, layout="seed") as w:
        w.write_table("results/trades", pa.table({"pnl": [1.0, 2.0]}))
    month, name = w.run_dir.relative_to(tmp_path / "local").parts
    partial = tmp_path / "partial"
    shutil.copytree(w.run_dir, partial)
    (partial / "_SUCCESS").unlink()
    client = s3_server.client()
    upload_run(client, partial, bucket, month, name)
    assert bucket.key(month, name, "_SUCCESS") not in _seed_keys(s3_server, bucket, month)
    upload_run(client, w.run_dir, bucket, month, name)
    assert bucket.key(month, name, "_SUCCESS") in _seed_keys(s3_server, bucket, month)
    (partial / "run.json").write_text((partial / "run.json").read_text().replace("{", "{ ", 1))
    with pytest.raises(ContractError, match="is already in"):
        upload_run(client, partial, bucket, month, name)


def _seed_keys(s3: Any, loc: S3Location, month: str) -> list[str]:
    listed = s3.client().list_objects_v2(Bucket=loc.bucket, Prefix=loc.key(month) + "/")
    return sorted(o["Key"] for o in listed.get("Contents", []))


@pytest.fixture
def conflicts(s3_server: Any) -> Any:
    """A proxy in front of moto_server that can answer PUTs with 409 ConditionalRequestConflict
    (another conditional write of the key in progress), and a client through it that does not
    retry by itself."""
    import boto3
    from botocore.config import Config as BotoConfig
    from tcpproxy import TcpProxy

    proxy = TcpProxy(s3_server.port)
    env = s3_server.env
    client = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{proxy.port}",
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_REGION"],
        config=BotoConfig(retries={"total_max_attempts": 1}),
    )
    yield SimpleNamespace(proxy=proxy, client=client)
    proxy.close()


def test_a_write_in_progress_that_clears_is_waited_for_and_the_upload_completes(
    s3_server: Any, bucket: S3Location, tmp_path: Path, conflicts: Any
) -> None:
    run = local_run(tmp_path, "r1")
    conflicts.proxy.refuse("PUT", "409 Conflict", "ConditionalRequestConflict", times=2)
    upload_run(conflicts.client, run, bucket, "backtest", "r1")
    assert conflicts.proxy.refused == 2
    objects = _objects(s3_server, bucket)
    assert (
        objects[bucket.key("backtest", "r1", "trades.parquet")]
        == (run / "trades.parquet").read_bytes()
    )
    assert bucket.key("backtest", "r1", "metadata.json") in objects


def test_a_write_still_in_progress_is_named_as_such_and_nothing_is_put(
    s3_server: Any, bucket: S3Location, tmp_path: Path, conflicts: Any
) -> None:
    """Refused three times and yet absent: the error says a write is under way (not that the
    bucket holds other bytes), and no object of the run is written."""
    from quantbot_bus.objectstore.upload import CONFLICT_TRIES

    run = local_run(tmp_path, "r1")
    conflicts.proxy.refuse("PUT", "409 Conflict", "ConditionalRequestConflict", times=100)
    with pytest.raises(ContractError) as err:
        upload_run(conflicts.client, run, bucket, "backtest", "r1")
    key = bucket.key("backtest", "r1", "trades.parquet")
    assert str(err.value) == (
        f"s3://{bucket.bucket}/{key} was not written: the bucket refused it "
        f"(ConditionalRequestConflict {CONFLICT_TRIES} times) but holds no object there: "
        "another writer's write or a deletion of it is under way; run the upload again "
        "later, or choose another run_id"
    )
    assert conflicts.proxy.refused == CONFLICT_TRIES
    assert _objects(s3_server, bucket) == {}
