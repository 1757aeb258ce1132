"""Operating a scale-out bus (real moto_server and PostgreSQL): `doctor` probes the object store,
the catalog and the daemon's upkeep; `status` shows the scale-out daemon's own fields."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.timeout(240)


def test_doctor_checks_the_object_store_and_the_catalog(
    scaleout: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quantbot_bus.ops.doctor import run_checks

    scaleout.reach_s3(monkeypatch)
    config = scaleout.config()

    def by_name() -> dict[str, Any]:
        return {c.name: c for c in run_checks(config, expect_daemon=False)}

    checks = by_name()
    assert set(checks) == {
        "duckdb",
        "state_dir",
        "disk.state",
        "object_store",
        "iceberg_catalog",
        "status",
        "upkeep",
    }
    assert checks["upkeep"].detail.startswith("not checked: no status file at ")
    assert checks["object_store"].status == "ok"
    assert checks["iceberg_catalog"].status == "warn"  # nothing registered yet
    scaleout.pg.stop()
    try:
        down = by_name()["iceberg_catalog"]
    finally:
        scaleout.pg.start()
    assert down.status == "fail" and "OperationalError" in down.detail and down.fix
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    unreachable = by_name()["object_store"]
    assert unreachable.status == "fail" and "AWS_ENDPOINT_URL" in (unreachable.fix or "")


def test_status_shows_the_scale_out_daemons_fields(scaleout: Any) -> None:
    import json

    from click.testing import CliRunner

    from quantbot_bus.cli import main as cli

    d = scaleout.daemon().start()
    d.wait_for(lambda: (d.status() or {}).get("polls", 0) >= 1, "a first poll")
    out = CliRunner().invoke(cli, ["status", "--format", "json"], env=scaleout.env())
    assert out.exit_code == 0, out.output
    [row] = json.loads(out.output)
    assert (
        row["state"] == "running" and row["backend"] == "iceberg" and row["observer"] == "listing"
    )
    assert row["root"] == scaleout.root and row["backlog"] == 0 and row["polls"] >= 1
    # no upkeep round yet (the first begins a minute after the first poll)
    assert (row["upkeep_at"], row["upkeep_error"], row["upkeep_since"]) == (None, None, None)
    assert d.stop() == 0
