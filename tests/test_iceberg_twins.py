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

    for k, v in scaleout.s3.env.items():
        monkeypatch.setenv(k, v)
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
