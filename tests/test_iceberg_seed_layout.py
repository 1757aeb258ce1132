"""Seed-layout runs (``YYYY-MM/run_id=<id>/``) in a bucket beside v1 runs, on the scale-out
backend (real moto_server and PostgreSQL): found by the reconcile, checked with the local
validator's verdicts and reasons, registered once into runs_d and the artifact tables (named as
the local exports: ``truth/paths`` → ``truth__paths``), and taken out again when deleted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scaleout import local_run

from quantbot_bus.contract import Invalid, Valid, validate_run_dir
from quantbot_bus.contract.layout import run_id_of
from quantbot_bus.writer import RunWriter

pytestmark = pytest.mark.timeout(240)

PARAMS = {"strategy_id": "s-7", "policy_id": "fixed-stop"}


def _paths(n: int) -> pa.Table:
    """``truth/paths`` as a seed producer writes it: no run_id column."""
    return pa.table({"call_id": [f"c{i}" for i in range(n)], "peak_multiple": [1.5] * n})


def _trades(n: int) -> pa.Table:
    return pa.table({"call_id": [f"c{i}" for i in range(n)], "return_bps": [10.0] * n})


def _seed_run(root: Path | str, paths: int, trades: int, *, fail: str | None = None) -> Path:
    """A seed run written by ``RunWriter(layout="seed")`` below the local ``root``; ``fail``:
    raised inside the run, so it is written as failed (no _SUCCESS, the traceback in stderr)."""
    try:
        with RunWriter(
            root, "policy", layout="seed", params=PARAMS, producer=("seed-sim", "3.1"), git=None
        ) as w:
            w.write_table("truth/paths", _paths(paths))
            if trades:
                w.write_table("policy/trades", _trades(trades))
            w.set_metrics(calls=paths)
            if fail is not None:
                raise RuntimeError(fail)
    except RuntimeError:
        assert fail is not None
    return w.run_dir


def _upload(so: Any, root: Path, run_dir: Path, *, as_dir: str | None = None) -> None:
    """Upload a local seed run below the bucket's root as its producer would: every file with
    boto3 ``upload_file``, ``_SUCCESS`` last; ``as_dir``: under another run directory name."""
    client = so.s3.client()
    base = run_dir.parent.relative_to(root).as_posix() + "/" + (as_dir or run_dir.name)
    files = sorted(p for p in run_dir.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.name == "_SUCCESS")
    for path in files:
        key = f"runs/{base}/{path.relative_to(run_dir).as_posix()}"
        client.upload_file(str(path), so.bucket, key)


def _local_reason(root: Path, run_dir: Path) -> str:
    verdict = validate_run_dir(run_dir, root)
    assert isinstance(verdict, Invalid), verdict
    return verdict.reason


def test_seed_runs_in_a_bucket_register_like_on_the_local_backend(
    scaleout: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quantbot_bus.iceberg.delete import confirm_gone
    from quantbot_bus.iceberg.reader import open_iceberg_reader
    from quantbot_bus.objectstore.location import S3Location
    from quantbot_bus.objectstore.upload import upload_run
    from quantbot_bus.pipeline import sync

    scaleout.reach_s3(monkeypatch)  # this process reads the tables as a user would
    client = scaleout.s3.client()
    local = scaleout.tmp / "seed"
    for run_id in ("v1-a", "v1-b"):
        run = local_run(scaleout.tmp, run_id)
        upload_run(client, run, S3Location.parse(scaleout.root), "backtest", run_id)
    ok = [_seed_run(local, 4, 3), _seed_run(local, 6, 2)]
    failed = _seed_run(local, 5, 0, fail="candles missing for mint So1abc")
    late = _seed_run(local, 2, 1)
    doc = json.loads((late / "run.json").read_text())
    del doc["completed_at"]  # its finish time is then the one written in _SUCCESS
    (late / "run.json").write_text(json.dumps(doc))
    bad_parquet = _seed_run(local, 3, 1)
    (bad_parquet / "truth" / "paths.parquet").write_bytes(b"not parquet " * 10)
    moved = _seed_run(local, 3, 1)  # uploaded under another run_id= name
    month = moved.parent.name
    elsewhere = local / "elsewhere" / month / "run_id=not-its-id"
    shutil.copytree(moved, elsewhere)
    for run_dir in [*ok, failed, bad_parquet]:
        _upload(scaleout, local, run_dir)
    _upload(scaleout, local, moved, as_dir="run_id=not-its-id")
    for path in sorted(late.rglob("*")):
        if path.is_file() and path.name != "_SUCCESS":
            rel = path.relative_to(local).as_posix()
            client.upload_file(str(path), scaleout.bucket, f"runs/{rel}")
    hostile = f"runs/{month}/run_id=zz/../run.json"
    client.put_object(Bucket=scaleout.bucket, Key=hostile, Body=b"{}")
    ok_ids = [run_id_of(str(d)) for d in ok]
    failed_id, late_id = run_id_of(str(failed)), run_id_of(str(late))

    first = sync(scaleout.config())
    assert sorted(first.registered) == sorted(["v1-a", "v1-b", *ok_ids, failed_id])
    assert first.pending == [f"runs/{month}/{late.name}/run.json"]
    reasons = {r.run_dir.removeprefix(scaleout.root + "/"): r.reason for r in first.rejected}
    assert set(reasons) == {
        f"{month}/{bad_parquet.name}",
        f"{month}/run_id=not-its-id",
        f"{month}/run_id=zz/../run.json",
    }, reasons
    # the same reasons as the local validator gives for the same directories
    assert reasons[f"{month}/{bad_parquet.name}"] == _local_reason(local, bad_parquet)
    assert "is not a Parquet file" in reasons[f"{month}/{bad_parquet.name}"]
    mismatch = reasons[f"{month}/run_id=not-its-id"]
    assert mismatch == _local_reason(local / "elsewhere", elsewhere)
    assert "does not match the directory name 'run_id=not-its-id'" in mismatch
    assert "YYYY-MM/run_id=<id>/run.json" in reasons[f"{month}/run_id=zz/../run.json"]

    client.upload_file(
        str(late / "_SUCCESS"), scaleout.bucket, f"runs/{month}/{late.name}/_SUCCESS"
    )
    second = sync(scaleout.config())
    assert second.registered == [late_id] and second.pending == []
    assert second.rejected == []  # unchanged rejected runs are not validated again
    seed_ids = [*ok_ids, failed_id, late_id]
    # a deletion is proved by the run's manifest, run.json (a seed run has no metadata.json)
    with_runs = scaleout.catalog()
    assert confirm_gone(with_runs, client, S3Location.parse(scaleout.root), ok_ids) == []
    assert scaleout.run_counts("runs_d") == {r: 1 for r in ["v1-a", "v1-b", *seed_ids]}
    assert scaleout.run_counts("truth__paths") == {
        ok_ids[0]: 4,
        ok_ids[1]: 6,
        failed_id: 5,
        late_id: 2,
    }
    assert scaleout.run_counts("policy__trades") == {ok_ids[0]: 3, ok_ids[1]: 2, late_id: 1}
    assert scaleout.run_counts("trades") == {"v1-a": 3, "v1-b": 3}

    with open_iceberg_reader(scaleout.config()) as con:
        rows = con.execute(
            "SELECT run_id, status, run_type, producer, shape, params, metrics, error, "
            "finished_at FROM catalog.runs_d"
        ).fetchall()
        runs = {r[0]: r[1:] for r in rows}
        names = con.execute(
            "SELECT run_id, name, rows, registered_how FROM catalog.artifacts_f"
        ).fetchall()
        per_run = con.execute(
            "SELECT run_id, count(*) FROM exports.truth__paths GROUP BY run_id"
        ).fetchall()
    assert dict(per_run) == scaleout.run_counts("truth__paths")
    arts = {(r, n): (rows_, how) for r, n, rows_, how in names}
    assert arts[(ok_ids[0], "truth/paths")] == (4, "rewritten")  # no run_id column
    assert arts[(ok_ids[0], "policy/trades")] == (3, "rewritten")
    # runs_d holds what the local validator makes of the same directories
    for run_dir in [*ok, failed, late]:
        verdict = validate_run_dir(run_dir, local)
        assert isinstance(verdict, Valid), verdict
        info = verdict.run
        status, run_type, producer, shape, params, metrics, error, finished = runs[info.run_id]
        assert (status, run_type, producer, shape) == (
            info.status,
            "policy",
            "seed-sim",
            "seed-run-json",
        )
        assert json.loads(params) == info.params and json.loads(metrics) == info.metrics
        assert error == info.error
        assert finished.isoformat().replace("+00:00", "Z") == info.finished_at
    assert runs[failed_id][0] == "failed"
    assert runs[failed_id][6].endswith("RuntimeError: candles missing for mint So1abc")
    assert runs[ok_ids[0]][0] == "success" and runs[ok_ids[0]][6] is None

    # a seed run deleted from the bucket leaves every table (its run.json HEAD confirms it)
    gone = f"runs/{month}/{ok[0].name}/"
    for obj in client.list_objects_v2(Bucket=scaleout.bucket, Prefix=gone)["Contents"]:
        client.delete_object(Bucket=scaleout.bucket, Key=obj["Key"])
    third = sync(scaleout.config())
    assert list(third.deleted) == [ok_ids[0]] and third.registered == []
    assert ok_ids[0] not in scaleout.run_counts("truth__paths")
    assert ok_ids[0] not in scaleout.run_counts("policy__trades")
    assert set(scaleout.run_counts("runs_d")) == {"v1-a", "v1-b", *seed_ids[1:]}

    # a file added to a registered seed run: its new version replaces the old one
    frontier = ok[1] / "results" / "frontier.parquet"
    frontier.parent.mkdir()
    pq.write_table(pa.table({"rank": [1, 2, 3, 4, 5]}), frontier)
    key = f"runs/{month}/{ok[1].name}/results/frontier.parquet"
    client.upload_file(str(frontier), scaleout.bucket, key)
    fourth = sync(scaleout.config())
    assert list(fourth.updated) == [ok_ids[1]] and fourth.registered == []
    assert scaleout.run_counts("results__frontier") == {ok_ids[1]: 5}
    assert scaleout.run_counts("truth__paths")[ok_ids[1]] == 6
    assert scaleout.run_counts("runs_d")[ok_ids[1]] == 1


def _upload_all_but_success(so: Any) -> tuple[Path, str]:
    """A seed run written locally and uploaded below ``runs/`` without its _SUCCESS (the
    producer has not finished); returns its local directory and its key prefix."""
    local = so.tmp / "seed"
    run = _seed_run(local, 3, 2)
    client = so.s3.client()
    for path in sorted(run.rglob("*")):
        if path.is_file() and path.name != "_SUCCESS":
            rel = path.relative_to(local).as_posix()
            client.upload_file(str(path), so.bucket, f"runs/{rel}")
    return run, f"runs/{run.parent.name}/{run.name}"


def test_a_pending_seed_run_registers_at_the_next_poll_once_its_success_arrives(
    scaleout: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A daemon looks at its pending runs every poll, between reconciles: a seed run's prefix
    is listed again then, so its _SUCCESS is seen at once (not at the next reconcile)."""
    from quantbot_bus.iceberg.bus import IcebergBus

    scaleout.reach_s3(monkeypatch)
    run, key = _upload_all_but_success(scaleout)
    client = scaleout.s3.client()
    bus = IcebergBus(scaleout.config())
    try:
        first = bus.poll(full=True)
        assert first.registered == [] and first.pending == [f"{key}/run.json"]
        client.upload_file(str(run / "_SUCCESS"), scaleout.bucket, f"{key}/_SUCCESS")
        polled = bus.poll()  # no reconcile: no listing of the bucket
        assert not polled.full and polled.registered == [run_id_of(str(run))]
        assert polled.pending == []
    finally:
        bus.close()
    assert scaleout.run_counts("truth__paths") == {run_id_of(str(run)): 3}


def test_a_seed_run_without_its_success_is_rejected_the_timeout_after_run_json_was_written(
    scaleout: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pending timeout of a seed run counts from run.json's LastModified (the local
    backend: its mtime), not from when the bus first saw it: a new bus rejects at its first
    poll a run whose run.json was written longer ago and whose _SUCCESS never came."""
    import dataclasses
    import time

    from quantbot_bus.iceberg.bus import IcebergBus

    scaleout.reach_s3(monkeypatch)
    run, key = _upload_all_but_success(scaleout)
    client = scaleout.s3.client()
    written = client.head_object(Bucket=scaleout.bucket, Key=f"{key}/run.json")["LastModified"]
    time.sleep(max(0.0, written.timestamp() + 2.0 - time.time()))  # it is 2 s old now
    bus = IcebergBus(dataclasses.replace(scaleout.config(), pending_timeout_s=2.0))
    try:
        polled = bus.poll(full=True)
    finally:
        bus.close()
    assert polled.pending == [] and [r.run_id for r in polled.rejected] == [run_id_of(str(run))]
    assert polled.rejected[0].reason.endswith("(still incomplete after the pending timeout)")


def test_run_writer_uploads_a_seed_run_that_the_next_poll_finds_by_its_marker(
    scaleout: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``RunWriter(s3_root, layout="seed")``: the files, run.json, then _SUCCESS, then a marker
    ``_inbox/<time>/YYYY-MM/run_id=<id>`` that a daemon's poll (no reconcile) follows; a failed
    run too (run.json last); the same run id again is refused."""
    from quantbot_bus.errors import ContractError
    from quantbot_bus.iceberg.bus import IcebergBus

    scaleout.reach_s3(monkeypatch)
    bus = IcebergBus(scaleout.config())
    try:
        assert bus.poll(full=True).registered == []  # the cursor starts; nothing there yet
        ok = _seed_run(scaleout.root, 3, 2)
        failed = _seed_run(scaleout.root, 2, 0, fail="the feed went away")
        ids = sorted(run_id_of(str(r)) for r in (ok, failed))
        keys = sorted(
            o["Key"]
            for o in scaleout.s3.client().list_objects_v2(Bucket=scaleout.bucket)["Contents"]
        )
        markers = [k for k in keys if k.startswith("runs/_inbox/")]
        assert sorted(m.rsplit("=", 1)[1] for m in markers) == ids
        assert all(k.split("/")[-1].startswith("run_id=") for k in markers)
        polled = bus.poll()
        assert not polled.full and sorted(polled.registered) == ids
        assert polled.rejected == [] and polled.pending == []
    finally:
        bus.close()
    assert scaleout.run_counts("runs_d") == {i: 1 for i in ids}
    assert scaleout.run_counts("truth__paths") == {run_id_of(str(ok)): 3, run_id_of(str(failed)): 2}
    with pytest.raises(ContractError, match="already in"):
        with RunWriter(
            scaleout.root, "policy", run_id=run_id_of(str(ok)), layout="seed", git=None
        ) as w:
            w.write_table("truth/paths", _paths(1))
