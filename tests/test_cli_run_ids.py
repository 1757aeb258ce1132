"""Commands that take a run id (``show``, ``artifacts --run-id``, ``regressions --run-id``): an
id the catalog does not hold is an error (exit 5 naming it), a soft-deleted run says so, and a
known run with nothing to list is an empty result (exit 0)."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from builders import cli, make_run

from quantbot_bus.config import Config

pytestmark = pytest.mark.usefixtures("cli_env")


@pytest.fixture
def synced(bus: Config) -> Config:
    """r1 live, r2 soft-deleted (its directory removed, then synced again)."""
    make_run(bus.root, "path-only", "r1")
    gone = make_run(bus.root, "path-only", "r2")
    assert cli(bus, "sync", "--format", "json").exit_code == 0
    shutil.rmtree(gone)
    assert cli(bus, "sync", "--format", "json").exit_code == 0
    return bus


@pytest.mark.parametrize(
    "args",
    [
        ["artifacts", "--run-id", "nope"],
        ["artifacts", "--run-id", "nope", "--format", "json"],
        ["artifacts", "--run-id", "nope", "--name", "results"],
        ["regressions", "--run-id", "nope", "--format", "json"],
        ["show", "nope", "--format", "json"],
    ],
)
def test_an_unknown_run_id_exits_5_naming_it(synced: Config, args: list[str]) -> None:
    result = cli(synced, *args)
    assert (result.exit_code, result.stdout) == (5, "")
    assert result.stderr == "Error: no run with id nope\n"


@pytest.mark.parametrize(
    "args",
    [["artifacts", "--run-id", "r2"], ["regressions", "--run-id", "r2", "--format", "json"]],
)
def test_a_deleted_run_id_says_it_is_deleted(synced: Config, args: list[str]) -> None:
    result = cli(synced, *args)
    assert (result.exit_code, result.stdout) == (5, "")
    assert re.fullmatch(
        r"Error: run r2 was deleted at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z "
        r"\(its directory is gone\); `quantbot-bus show r2` still shows it\n",
        result.stderr,
    ), result.stderr


def test_a_known_run_lists_its_artifacts(synced: Config) -> None:
    result = cli(synced, "artifacts", "--run-id", "r1")
    assert result.exit_code == 0
    assert result.stdout == f"{synced.root / 'path-only' / 'r1' / 'results.parquet'}\n"
    # a known run without that artifact name: nothing, and no error
    result = cli(synced, "artifacts", "--run-id", "r1", "--name", "other")
    assert (result.exit_code, result.stdout) == (0, "")


def test_a_known_run_without_checks_has_no_regressions(synced: Config) -> None:
    result = cli(synced, "regressions", "--run-id", "r1", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == []
