"""Claims (iceberg/claims.py) on a real PostgreSQL: daemons sharing a bucket divide the listed
runs, a restarted daemon takes its own claims back, a lapsed lease frees a run for the others."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from quantbot_bus.iceberg.claims import Claims, claim_owner


def _claims(scaleout: Any, owner: str, lease_s: float = 300) -> Claims:
    return Claims(scaleout.catalog().engine, owner, lease_s)


def test_two_daemons_claim_disjoint_runs_in_their_own_order(scaleout: Any) -> None:
    a, b = _claims(scaleout, "host-a:/state"), _claims(scaleout, "host-b:/state")
    keys = [f"runs/backtest/r{i:03d}/metadata.json" for i in range(10)]
    got_a = a.claim(keys, 4)
    assert got_a == set(keys[:4])  # the first four of its order
    got_b = b.claim(list(reversed(keys)), 8)
    assert got_b == set(keys[4:])  # what a holds is skipped; only six were left
    assert a.claim(keys, 10) == set(keys[:4])  # its own again (renewed), none of b's
    restarted = _claims(scaleout, "host-b:/state")  # same host and state dir: b after a crash
    assert restarted.claim(keys, 10) == set(keys[4:])


def test_a_lapsed_lease_frees_the_run_and_old_claims_are_deleted(scaleout: Any) -> None:
    a = _claims(scaleout, "host-a:/state", lease_s=0.5)
    b = _claims(scaleout, "host-b:/state")
    assert a.claim(["k1", "k2"], 10) == {"k1", "k2"}
    assert b.claim(["k1", "k2"], 10) == set()
    time.sleep(1.0)  # the lease runs out (PostgreSQL's clock decides)
    assert b.claim(["k1"], 10) == {"k1"}
    assert a.expire(keep_expired_s=0) == 1  # k2: expired and unclaimed; k1 is b's now
    assert a.claim(["k1", "k2"], 10) == {"k2"}


def test_release_gives_back_only_the_owners_claims_on_those_keys(scaleout: Any) -> None:
    keys = [f"runs/backtest/r{i:03d}/metadata.json" for i in range(6)]
    a, b = _claims(scaleout, "host-a:/state"), _claims(scaleout, "host-b:/state")
    assert a.claim(keys, 10) == set(keys)
    assert b.release(keys) == 0  # not b's
    assert a.release(keys[:4]) == 4
    assert b.claim(keys, 10) == set(keys[:4])  # at once, not after the lease


def test_a_stopping_bus_gives_back_its_undecided_runs_only(
    scaleout: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pending run (its Parquet file not uploaded yet) goes back to the others when the bus
    stops; a run it registered stays claimed until the lease ends (another daemon whose ledger
    lags must not validate it again)."""

    from quantbot_bus.iceberg.bus import IcebergBus

    scaleout.reach_s3(monkeypatch)
    scaleout.upload("done")
    scaleout.upload("later", incomplete=True)  # pending: its trades.parquet is not there yet
    bus = IcebergBus(scaleout.config("state-a"))
    result = bus.poll(full=True)
    assert result.registered == ["done"] and len(result.pending) == 1
    ids = ["done", "later"]  # claims are by run id
    other = _claims(scaleout, "host-b:/state")
    assert other.claim(ids, 10) == set()  # both held by the running bus
    bus.close()  # a daemon's or a sync's graceful stop
    assert other.claim(ids, 10) == {"later"}  # the pending run, at once; not the registered


def test_a_poll_gives_back_the_runs_it_rejected_and_keeps_the_registered(
    scaleout: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run the poll rejects is free for the others at once: another daemon validates a
    rejected run anyway (its ledger notes only its own rejections), so holding the claim only
    kept it, or a ``sync`` on another host, waiting a lease. A registered run stays claimed.
    The bus leases for 600 s: a sync that waited for a claim would outlast the test's timeout."""
    import dataclasses

    from sqlalchemy import text

    from quantbot_bus.iceberg.bus import IcebergBus
    from quantbot_bus.pipeline import sync

    scaleout.reach_s3(monkeypatch)
    scaleout.upload("done")
    scaleout.upload("broken", incomplete=True)  # rejected at once: no time to complete
    config = dataclasses.replace(
        scaleout.config("state-a"), pending_timeout_s=0.0, claim_lease_s=600.0
    )
    bus = IcebergBus(config)
    result = bus.poll(full=True)
    assert result.registered == ["done"]
    assert [r.run_id for r in result.rejected] == ["broken"]
    assert bus.claims.lease_s == 600.0  # the setting is what the bus leases and renews by
    assert bus._renewer is not None and bus._renewer.every_s == 200.0

    def held() -> list[str]:
        with scaleout.catalog().engine.connect() as con:
            rows = con.execute(
                text("SELECT run_key FROM quantbot_claims WHERE owner = :o ORDER BY run_key"),
                {"o": bus.claims.owner},
            )
            return [r[0] for r in rows]

    assert held() == ["done"]  # while the bus still runs
    bus.close()
    assert held() == ["done"]

    # another host's sync takes "broken" at once, finds its rejection recorded, and is done
    again = sync(dataclasses.replace(scaleout.config("state-b"), pending_timeout_s=0.0))
    assert (again.registered, again.rejected, again.pending, again.backlog) == ([], [], [], 0)


def test_daemons_with_different_pending_timeouts_record_one_rejection(
    scaleout: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two hosts configured with different ``pending_timeout_s`` both reject an incomplete run
    (each validates it: its ledger notes only its own rejections): ``rejections_f`` holds one
    row for it, and its reason names the timeout without a number."""
    import dataclasses

    from quantbot_bus.iceberg.bus import IcebergBus

    scaleout.reach_s3(monkeypatch)
    scaleout.upload("broken", incomplete=True)
    first = IcebergBus(dataclasses.replace(scaleout.config("state-a"), pending_timeout_s=0.0))
    try:
        assert [r.run_id for r in first.poll(full=True).rejected] == ["broken"]
    finally:
        first.close()
    # metadata.json was written before the first bus's poll: over 1 ms ago
    second = IcebergBus(dataclasses.replace(scaleout.config("state-b"), pending_timeout_s=0.001))
    try:
        again = second.poll(full=True)
        assert (again.pending, again.rejected) == ([], [])  # rejected: the same row, held
    finally:
        second.close()
    assert scaleout.run_counts("rejections_f") == {"broken": 1}
    table = scaleout.catalog().load_table("quantbot.rejections_f")
    (reason,) = table.scan(selected_fields=("reason",)).to_arrow().column("reason").to_pylist()
    assert reason.endswith("(still incomplete after the pending timeout)"), reason


def test_the_owner_is_the_host_and_the_state_dir(tmp_path: Path) -> None:
    import socket

    assert claim_owner(tmp_path / "state") == f"{socket.gethostname()}:{tmp_path / 'state'}"


def test_catalog_connections_have_a_connect_timeout(scaleout: Any) -> None:
    """A PostgreSQL host that does not answer fails a poll (or a stop's claim release) within
    CONNECT_TIMEOUT_S, not the system's ~2 min TCP timeout; a URI's own value wins."""
    from quantbot_bus.iceberg.tables import CONNECT_TIMEOUT_S, sqlalchemy_uri

    engine = scaleout.catalog().engine
    assert engine.url.query["connect_timeout"] == str(CONNECT_TIMEOUT_S)
    with engine.connect() as con:  # the real server takes the parameter
        assert con.exec_driver_sql("SELECT 1").scalar() == 1
    own = sqlalchemy_uri("postgres://u@h:1/db?sslmode=disable&connect_timeout=3")
    assert own == "postgresql+psycopg2://u@h:1/db?sslmode=disable&connect_timeout=3"


def test_the_renewer_keeps_the_runs_being_worked_on_and_lets_the_others_lapse(
    scaleout: Any,
) -> None:
    """A poll longer than the lease keeps its runs: the renewer extends the leases of the runs
    in hand (k1), not of those done (k2), and stops with the daemon."""
    from builders import wait_for

    from quantbot_bus.iceberg.claims import Renewer

    a = _claims(scaleout, "host-a:/state", lease_s=3.0)
    b = _claims(scaleout, "host-b:/state")
    assert a.claim(["k1", "k2"], 10) == {"k1", "k2"}
    in_hand = frozenset({"k1"})
    renewer = Renewer(lambda: a, lambda: in_hand, every_s=0.2).start()
    try:
        wait_for(lambda: b.claim(["k2"], 1) == {"k2"}, "k2's lease to lapse", 30)
        watch_until = time.monotonic() + 4.0  # longer than a lease: k1 is renewed meanwhile
        while time.monotonic() < watch_until:
            assert b.claim(["k1"], 1) == set()
            time.sleep(0.2)
    finally:
        renewer.stop()
    assert not renewer._thread.is_alive()
    wait_for(lambda: b.claim(["k1"], 1) == {"k1"}, "k1's lease to lapse, no longer renewed", 30)
