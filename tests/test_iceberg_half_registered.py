"""A registration cut between its artifact tables' commits and ``runs_d``'s (real moto_server and
PostgreSQL): the artifact rows are in, the runs are not registered. Another daemon, and then the
first one restarted, finish it with every run's rows in every table exactly once."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.timeout(240)


class Cut(Exception):
    """The daemon's end, right before the ``runs_d`` commit."""


def test_runs_half_registered_are_finished_once_by_another_daemon_and_a_restart(
    scaleout: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quantbot_bus.iceberg import register
    from quantbot_bus.iceberg.bus import IcebergBus

    scaleout.reach_s3(monkeypatch)
    ids = ["h1", "h2", "h3"]
    for run_id in ids:
        scaleout.upload(run_id)
    real = register.append_once

    def cut_before_runs_d(catalog: Any, table: str, keys: Any, act: Any) -> Any:
        if table == "runs_d":
            raise Cut(f"killed before committing {sorted(keys)} to runs_d")
        return real(catalog, table, keys, act)

    first = IcebergBus(scaleout.config("a"))
    try:
        with monkeypatch.context() as m:
            m.setattr(register, "append_once", cut_before_runs_d)
            with pytest.raises(Cut):
                first.poll(full=True)
    finally:
        first.close()  # its claims given back, as a daemon stopping after a failed poll
    assert scaleout.run_counts("runs_d") == {}
    rows = {"runs_d": 1, "artifacts_f": 1, "trades": 3}  # a run's rows in each table
    assert dict(scaleout.run_counts("artifacts_f")) == dict.fromkeys(ids, rows["artifacts_f"])
    assert dict(scaleout.run_counts("trades")) == dict.fromkeys(ids, rows["trades"])

    other = IcebergBus(scaleout.config("b"))
    try:
        done = other.poll(full=True)
        assert sorted(done.registered) == ids
    finally:
        other.close()
    restarted = IcebergBus(scaleout.config("a"))
    try:
        again = restarted.poll(full=True)
        assert again.registered == [] and again.rejected == []
    finally:
        restarted.close()
    for table, n in rows.items():
        assert dict(scaleout.run_counts(table)) == dict.fromkeys(ids, n), table
