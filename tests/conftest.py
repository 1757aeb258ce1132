"""Shared fixtures: a temporary bus (artifacts root, exports, state) with real files, and daemon
subprocesses that are always reaped."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
import structlog

# The helper modules beside the tests assert too: pytest rewrites their asserts (for detailed
# failure messages) only when told so before they are imported.
pytest.register_assert_rewrite(
    "builders",
    "alerts_inputs",
    "backtest_inputs",
    "cli_query_catalog",
    "cron_user",
    "daemon_in_process",
    "doctor_checks",
    "exports_checks",
    "publication_reading",
    "seed_runs",
    "summaries_expected",
    "summaries_runs",
    "systemd_units",
    "userdata_inputs",
    "writer_checks",
    "reliability.helpers",
)

#: Helper modules whose fixtures several test modules use (``synced``, ``fast``).
pytest_plugins = ["cli_query_catalog", "daemon_in_process"]

from builders import RunFactory  # noqa: E402 - after the rewrite registration
from cron_user import Account, Cron, fresh_cron, throwaway_account  # noqa: E402
from exports_checks import mixed_runs  # noqa: E402
from receiver import Receiver  # noqa: E402
from reliability.helpers import DaemonProcess  # noqa: E402

from quantbot_bus.config import Config  # noqa: E402


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The tests of an xdist group first (a module whose costly fixture one worker builds once:
    ``make test`` runs ``--dist loadgroup``, where a group is one unit of work): the longest
    units start first instead of extending the run's tail. Otherwise the order is kept."""
    items.sort(key=lambda item: item.get_closest_marker("xdist_group") is None)


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """Undo what a command run in process (``CliRunner``) did to logging: its
    ``configure_logging`` (a level filter, a stderr handler) must not hide the next test's
    events from ``structlog.testing.capture_logs``."""
    yield
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_quantbot_bus", False):
            root.removeHandler(handler)
    structlog.reset_defaults()


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No config from the environment (``QUANTBOT_BUS_*``) or the cwd, for in-process CLI
    calls: the cwd is the test's own directory."""
    for key in list(os.environ):
        if key.startswith("QUANTBOT_BUS_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def bus(tmp_path: Path) -> Config:
    """A Config for a fresh bus under tmp_path, with the three directories created."""
    cfg = Config(
        root=tmp_path / "artifacts",
        exports_dir=tmp_path / "exports",
        state_dir=tmp_path / "state",
    ).validate()
    for d in (cfg.root, cfg.exports_dir, cfg.state_dir):
        d.mkdir(parents=True)
    return cfg


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB connection, closed after the test."""
    c = duckdb.connect()
    yield c
    c.close()


@pytest.fixture
def mixed_bus(bus: Config) -> Config:
    """The test's bus holding :func:`exports_checks.mixed_runs`, synced once."""
    return mixed_runs(bus)


@pytest.fixture(scope="session")
def account() -> Account:
    """A throwaway unprivileged user for the cron tests (``cron_user``)."""
    return throwaway_account()


@pytest.fixture
def cron(account: Account) -> Iterator[Cron]:
    """That user's crontab, emptied before and after the test."""
    with fresh_cron(account) as c:
        yield c


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A real HTTP server on 127.0.0.1 recording the webhook POSTs it gets."""
    r = Receiver()
    server = r.start()
    yield r
    r.release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def run_factory(tmp_path: Path) -> RunFactory:
    """A :class:`~builders.RunFactory` (runs of 20 rows, hard-linked) for the test."""
    return RunFactory(tmp_path / "tpl")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An empty artifacts root (for tests of the validator alone)."""
    r = tmp_path / "artifacts"
    r.mkdir()
    return r


@pytest.fixture
def daemon_factory() -> Iterator[Callable[..., DaemonProcess]]:
    """``daemon_factory(config, **kw)``: an unstarted :class:`~reliability.helpers.DaemonProcess`
    (``cls=`` a subclass of it); every daemon a test made is SIGKILLed and reaped when the test
    ends, whatever happened."""
    made: list[DaemonProcess] = []

    def factory(config: Config, cls: type[DaemonProcess] = DaemonProcess, **kw: Any) -> Any:
        d = cls(config, **kw)
        made.append(d)
        return d

    yield factory
    for d in made:
        d.ensure_dead()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """A throwaway PostgreSQL cluster (Debian's package) for this test process."""
    from servers import Postgres

    with Postgres() as pg:
        yield pg


@pytest.fixture(scope="session")
def s3_server() -> Iterator[Any]:
    """moto's S3-compatible server as its own process on 127.0.0.1, for this test process."""
    from servers import S3Server

    with S3Server() as s3:
        yield s3


@pytest.fixture
def scaleout(pg_server: Any, s3_server: Any, tmp_path: Path) -> Iterator[Any]:
    """A fresh bucket and database on the shared servers (see :mod:`scaleout`); its daemons
    and writers are killed and reaped when the test ends."""
    from scaleout import new_scaleout

    so = new_scaleout(pg_server, s3_server, tmp_path)
    try:
        yield so
    finally:
        so.close()
        if not pg_server.running():
            pg_server.start()  # a test that stopped it and failed
