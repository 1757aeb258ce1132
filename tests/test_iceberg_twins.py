"""Two run directories with one run id in the bucket (real moto_server and PostgreSQL): one is
registered, once, and every other directory is rejected with a reason naming the first, whether
they arrive in one batch or later."""

from __future__ import annotations

from typing import Any

import pytest
from scaleout import local_run
from test_iceberg_changes import _open_rejections

pytestmark = pytest.mark.timeout(240)


def test_a_run_id_in_two_directories_is_registered_once_and_the_other_rejected(
    scaleout: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quantbot_bus.objectstore.location import S3Location
    from quantbot_bus.objectstore.upload import upload_run
    from quantbot_bus.pipeline import sync

    scaleout.reach_s3(monkeypatch)
    client, loc = scaleout.s3.client(), S3Location.parse(scaleout.root)

    def upload(run_type: str) -> str:
        def retype(meta: dict[str, Any], run_dir: Any) -> None:
            meta["run_type"] = run_type

        run = local_run(scaleout.tmp / run_type, "same-id", retype)
        return upload_run(client, run, loc, run_type, "same-id")

    first, second = upload("backtest"), upload("optimize")  # one batch
    result = sync(scaleout.config())
    assert result.registered == ["same-id"]
    assert [(r.run_dir, r.reason) for r in result.rejected] == [
        (
            second,
            f"run_id same-id is also used by {first}; run ids must be unique across run types",
        )
    ]
    assert scaleout.run_counts("runs_d") == {"same-id": 1}
    assert scaleout.run_counts("trades") == {"same-id": 3}

    third = upload("zeta")  # later, alone: found by its marker, then by the reconcile
    result = sync(scaleout.config())
    assert result.registered == []
    assert {r.run_dir: r.reason for r in result.rejected} == {
        d: f"run_id same-id is already registered from {first}; run ids must be unique across "
        "run types"
        for d in (second, third)
    }
    assert scaleout.run_counts("runs_d") == {"same-id": 1}
    assert sync(scaleout.config()).rejected == []  # recorded once per reason
    assert sorted(r["run_dir"] for r in _open_rejections(scaleout)) == [second, third]
    [row] = scaleout.catalog().load_table("quantbot.runs_d").scan().to_arrow().to_pylist()
    assert (row["run_dir"], row["run_type"]) == (first, "backtest")


def _upload_table(scaleout: Any, run_type: str, run_id: str, table: str, rows: int) -> str:
    """A run ``run_type/run_id`` with one table of ``rows`` rows, uploaded as RunWriter does."""
    import pyarrow as pa

    from quantbot_bus.objectstore.location import S3Location
    from quantbot_bus.objectstore.upload import upload_run
    from quantbot_bus.writer import RunWriter

    local = scaleout.tmp / f"local-{run_type}-{table}"
    with RunWriter(local, run_type, run_id=run_id, git=None) as w:
        w.write_table(table, pa.table({"run_id": [run_id] * rows, "x": list(range(rows))}))
    loc = S3Location.parse(scaleout.root)
    return upload_run(scaleout.s3.client(), local / run_type / run_id, loc, run_type, run_id)


def test_a_daemon_holding_a_run_ids_claim_keeps_others_off_every_directory_of_it(
    scaleout: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Claims are by run id: while daemon A holds r1 (in the middle of its poll, say), daemon B
    validates neither backtest/r1 nor optimize/r1, so the two directories never land, one per
    daemon, in different artifact tables."""
    from quantbot_bus.iceberg.bus import IcebergBus

    scaleout.reach_s3(monkeypatch)
    _upload_table(scaleout, "backtest", "r1", "trades", 3)
    _upload_table(scaleout, "optimize", "r1", "fills", 2)
    a, b = IcebergBus(scaleout.config("state-a")), IcebergBus(scaleout.config("state-b"))
    try:
        a.registrar.core()
        assert a.claims.claim(["r1"], 1) == {"r1"}
        polled = b.poll(full=True)
        assert (polled.registered, polled.rejected, polled.backlog) == ([], [], 2)
        polled = a.poll(full=True)
        assert polled.registered == ["r1"] and len(polled.rejected) == 1
    finally:
        a.close()
        b.close()
    assert scaleout.run_counts("runs_d") == {"r1": 1}
    assert (scaleout.run_counts("trades"), scaleout.run_counts("fills")) == ({"r1": 3}, {})


def test_the_registered_directory_deleted_while_another_of_its_run_id_exists(
    scaleout: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """backtest/r2 registered, then deleted, and optimize/r2 uploaded: the reconcile takes
    backtest/r2 out (its objects are gone: every table scans again) and the next registers
    optimize/r2."""
    from quantbot_bus.pipeline import sync

    scaleout.reach_s3(monkeypatch)
    _upload_table(scaleout, "backtest", "r2", "trades", 3)
    assert sync(scaleout.config()).registered == ["r2"]
    client = scaleout.s3.client()
    listed = client.list_objects_v2(Bucket=scaleout.bucket, Prefix="runs/backtest/r2/")
    for obj in listed["Contents"]:
        client.delete_object(Bucket=scaleout.bucket, Key=obj["Key"])
    second = _upload_table(scaleout, "optimize", "r2", "fills", 2)
    assert list(sync(scaleout.config()).deleted) == ["r2"]
    assert sync(scaleout.config()).registered == ["r2"]
    [row] = scaleout.catalog().load_table("quantbot.runs_d").scan().to_arrow().to_pylist()
    assert row["run_dir"] == second
    assert scaleout.catalog().load_table("quantbot.trades").scan().to_arrow().num_rows == 0
    assert scaleout.run_counts("fills") == {"r2": 2}
