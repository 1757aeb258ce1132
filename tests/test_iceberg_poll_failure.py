"""A scale-out poll that fails after some of its commits (real moto_server and PostgreSQL, the
catalog reached through a proxy that is cut between the registration's commit and the
rejections'): what it committed is reported by the next poll, once."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(240)


def test_the_next_poll_reports_what_a_failed_poll_committed(
    scaleout: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
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
        assert scaleout.run_counts("runs_d") == {"good": 1}  # committed before the cut
        proxy.restore()
        bus.drop_connections()
        after = bus.poll(full=True)
        assert after.registered == ["good"]
        assert [r.run_id for r in after.rejected] == ["bad"]
        assert [v.info.run_id for v in after.validated] == ["good"]
        again = bus.poll(full=True)
        assert (again.registered, again.rejected, again.already) == ([], [], [])
    finally:
        bus.close()
        proxy.close()
    assert scaleout.run_counts("runs_d") == {"good": 1}
    assert set(scaleout.run_counts("rejections_f")) == {"bad"}
