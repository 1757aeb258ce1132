"""Scale-out: runs uploaded to a real S3-compatible server (moto_server) are registered into
Iceberg tables on a real PostgreSQL catalog by real daemon processes, each run exactly once."""

from __future__ import annotations

import signal
from typing import Any

from builders import wait_for


def _registered(so: Any, n: int) -> bool:
    return sum(so.run_counts("runs_d").values()) >= n


def test_a_daemon_registers_uploaded_runs_once_in_every_table(scaleout: Any) -> None:
    d = scaleout.daemon().start()
    for p in scaleout.writers(2, 10):
        assert p.wait(120) == 0
    wait_for(lambda: _registered(scaleout, 20), "20 runs in runs_d", 120)
    runs = scaleout.run_counts("runs_d")
    assert len(runs) == 20 and set(runs.values()) == {1}
    trades = scaleout.run_counts("trades")
    fills = scaleout.run_counts("fills")
    assert trades == {r: 3 for r in runs}
    assert fills == {r: 2 for r in runs}
    how = {e["reason"] for e in d.events("iceberg.rewrite")}
    assert how == {"the file has no string run_id column"}
    assert d.stop() == 0
    assert d.events("daemon.stopped")
