"""The catalog the query-command tests read (tests/test_cli_query_*.py): the ``synced`` bus,
run r2 as every listing shows it, and the check of a time stamp the catalog made itself."""

from __future__ import annotations

import re
from typing import Any

import pytest
from builders import cli, corrupt_file, make_run

from quantbot_bus.config import Config

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def stamp(value: Any) -> str:
    """Assert ``value`` is an ISO-8601 UTC time stamp; ``"<ts>"`` stands in for it in a whole
    comparison."""
    assert isinstance(value, str) and STAMP.match(value), value
    return "<ts>"


#: What every listing says of run r2 of :func:`synced` (its metadata overrides).
R2 = {
    "run_id": "r2",
    "run_type": "policy",
    "status": "success",
    "producer": "grid",
    "producer_version": None,
    "created_at": "2024-06-01T00:00:00Z",
    "finished_at": "2024-05-01T12:00:00Z",
    "git_branch": "feature",
    "git_commit": "def5678",
    "git_dirty": True,
}


@pytest.fixture(name="synced")
def synced_bus(bus: Config) -> Config:
    """The test's bus holding r1 (path-only), r2 (policy, two tables, its own metadata), r3 (a
    failed policy run without tables) and ``bad`` (a corrupt Parquet file), after one
    ``quantbot-bus sync``."""
    make_run(bus.root, "path-only", "r1", created_at="2024-05-01T12:00:00Z")
    make_run(
        bus.root,
        "policy",
        "r2",
        tables={"a": 2, "b": 5},
        created_at="2024-06-01T00:00:00Z",
        git={"commit": "def5678", "branch": "feature", "dirty": True},
        producer={"name": "grid", "version": None},
        params={"grid": [1, 2]},
        metrics={"sharpe": 1.25},
    )
    make_run(
        bus.root, "policy", "r3", status="failed", tables={}, created_at="2024-04-01T00:00:00Z"
    )
    bad = make_run(bus.root, "policy", "bad")
    corrupt_file(bad / "results.parquet")
    result = cli(bus, "sync", "--format", "json")
    assert result.exit_code == 0, result.output
    return bus
