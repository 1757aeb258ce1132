"""A scale-out poll that fails after some of its commits (real moto_server and PostgreSQL, the
catalog reached through a proxy that is cut between the registration's commit and the
rejections'): what it committed is reported by the next poll, once, and stays claimed."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(240)


@contextlib.contextmanager
def _after_a_poll_failed_past_its_commit(
    scaleout: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """A bus whose first poll registered "good", then lost PostgreSQL (the proxy cut) before
    recording the rejection of "bad", and raised; the proxy is back and the bus's connections
    dropped. Yields the bus; closes it (giving back its undecided claims) and the proxy."""
    from tcpproxy import TcpProxy

    from quantbot_bus.iceberg.bus import IcebergBus
    from quantbot_bus.iceberg.register import Registrar

    scaleout.reach_s3(monkeypatch)
    scaleout.upload("good")
    scaleout.upload("bad", incomplete=True)
    proxy = TcpProxy(scaleout.pg.port)
    uri = f"postgresql://postgres@127.0.0.1:{proxy.port}/{scaleout.database}"
    config = dataclasses.replace(scaleout.config(), catalog_uri=uri, pending_timeout_s=0.0)
    bus = IcebergBus(config)
    register = Registrar.register

    def register_then_lose_postgres(self: Registrar, runs: Any) -> Any:
        done = register(self, runs)
        proxy.cut()  # committed; the rejection's commit that follows cannot reach the catalog
        return done

    try:
        with monkeypatch.context() as m:
            m.setattr(Registrar, "register", register_then_lose_postgres)
            with pytest.raises(Exception):  # noqa: B017 - whichever error the driver raises
                bus.poll(full=True)
        proxy.restore()
        bus.drop_connections()
        yield bus
    finally:
        bus.close()
        proxy.close()


def test_the_next_poll_reports_what_a_failed_poll_committed(
    scaleout: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _after_a_poll_failed_past_its_commit(scaleout, monkeypatch) as bus:
        assert scaleout.run_counts("runs_d") == {"good": 1}  # committed before the cut
        after = bus.poll(full=True)
        assert after.registered == ["good"]
        assert [r.run_id for r in after.rejected] == ["bad"]
        assert [v.info.run_id for v in after.validated] == ["good"]
        again = bus.poll(full=True)
        assert (again.registered, again.rejected, again.already) == ([], [], [])
    assert scaleout.run_counts("runs_d") == {"good": 1}
    assert set(scaleout.run_counts("rejections_f")) == {"bad"}


def test_a_bus_closed_after_a_failed_poll_keeps_the_claims_it_registered(
    scaleout: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A poll that raised after its registration's commit left those runs in its backlog; the
    bus closed then (a ``sync`` whose poll fails) gives back the claims of the runs it had not
    decided only, as after a poll that went through: a registered run stays claimed until its
    lease ends, so another daemon whose ledger lags does not validate it again."""
    from sqlalchemy import text

    with _after_a_poll_failed_past_its_commit(scaleout, monkeypatch) as bus:
        owner = bus.claims.owner  # connected again: close() can give claims back
    # closed: "bad" given back (undecided: its rejection was never recorded), "good" kept
    with scaleout.catalog().engine.connect() as con:
        held = con.execute(
            text("SELECT run_key FROM quantbot_claims WHERE owner = :o ORDER BY run_key"),
            {"o": owner},
        )
        assert [r[0] for r in held] == ["good"]
    assert scaleout.run_counts("runs_d") == {"good": 1}
