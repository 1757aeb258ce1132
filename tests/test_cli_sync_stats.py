"""The seed-compatible spellings: ``sync --stats`` (the catalog statistics after the counts) and
``--base-dir``, an alias of ``--root`` on every command that takes the shared config options."""

from __future__ import annotations

import json

import click
import pytest
from builders import cli, make_run
from click.testing import CliRunner

from quantbot_bus.cli import main
from quantbot_bus.config import Config

pytestmark = pytest.mark.usefixtures("cli_env")


@pytest.fixture
def runs(bus: Config) -> Config:
    make_run(bus.root, "path-only", "r1", created_at="2024-05-01T12:00:00Z")
    make_run(bus.root, "policy", "r2", tables={"a": 2, "b": 5}, created_at="2024-06-01T00:00:00Z")
    return bus


def _sizes(bus: Config) -> tuple[int, int]:
    r1 = (bus.root / "path-only" / "r1" / "results.parquet").stat().st_size
    r2 = sum((bus.root / "policy" / "r2" / f"{n}.parquet").stat().st_size for n in "ab")
    return r1, r2


def test_sync_stats_json_adds_the_stats_rows(runs: Config) -> None:
    result = cli(runs, "sync", "--stats", "--format", "json")
    assert (result.exit_code, result.stderr) == (0, "")
    (row,) = json.loads(result.stdout)
    assert isinstance(row.pop("ms"), float)
    r1, r2 = _sizes(runs)
    assert row == {
        "registered": 2,
        "updated": 0,
        "unchanged": 0,
        "deleted": 0,
        "rejected": 0,
        "pending": 0,
        "stats": [
            {
                "run_type": "path-only",
                "status": "success",
                "runs": 1,
                "artifacts": 1,
                "total_rows": 3,
                "total_bytes": r1,
                "newest": "2024-05-01T12:00:00Z",
            },
            {
                "run_type": "policy",
                "status": "success",
                "runs": 1,
                "artifacts": 2,
                "total_rows": 7,
                "total_bytes": r2,
                "newest": "2024-06-01T00:00:00Z",
            },
            {
                "run_type": None,
                "status": None,
                "runs": 2,
                "artifacts": 3,
                "total_rows": 10,
                "total_bytes": r1 + r2,
                "newest": "2024-06-01T00:00:00Z",
            },
        ],
    }
    # the same rows as `quantbot-bus stats`
    assert row["stats"] == json.loads(cli(runs, "stats", "--format", "json").stdout)


def test_sync_stats_table_prints_the_stats_table_after_the_counts(runs: Config) -> None:
    result = cli(runs, "sync", "--stats", "--format", "table")
    assert result.exit_code == 0
    counts, stats = result.stdout.split("\n\n")
    assert counts.splitlines()[0].split() == [
        "registered", "updated", "unchanged", "deleted", "rejected", "pending", "ms"
    ]  # fmt: skip
    assert counts.splitlines()[2].split()[:6] == ["2", "0", "0", "0", "0", "0"]
    assert stats == cli(runs, "stats", "--format", "table").stdout
    assert stats.splitlines()[-1].split()[:6] == [
        "(all)",
        "(all)",
        "2",
        "3",
        "10",
        str(sum(_sizes(runs))),
    ]


def test_sync_without_stats_prints_only_the_counts(runs: Config) -> None:
    (row,) = json.loads(cli(runs, "sync", "--format", "json").stdout)
    assert "stats" not in row


def test_base_dir_is_an_alias_of_root(runs: Config) -> None:
    result = cli(runs, "sync", "--format", "json", root_flag="--base-dir")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["registered"] == 2
    result = cli(runs, "runs", "--format", "json", root_flag="--base-dir")
    assert sorted(r["run_id"] for r in json.loads(result.stdout)) == ["r1", "r2"]
    assert all(r["run_dir"].startswith(str(runs.root)) for r in json.loads(result.stdout))


def _commands(group: click.Group) -> list[click.Command]:
    out: list[click.Command] = []
    for name in group.list_commands(click.Context(group)):
        command = group.get_command(click.Context(group), name)
        assert command is not None
        out += _commands(command) if isinstance(command, click.Group) else [command]
    return out


def test_every_command_with_root_also_takes_base_dir() -> None:
    with_root = [c for c in _commands(main) if any("--root" in p.opts for p in c.params)]
    assert len(with_root) >= 15
    for command in with_root:
        (param,) = [p for p in command.params if "--root" in p.opts]
        assert param.opts == ["--root", "--base-dir"], command.name
        help_text = CliRunner().invoke(main, [*_path(command), "--help"]).stdout
        assert "--root, --base-dir TEXT" in help_text, command.name


def _path(command: click.Command) -> list[str]:
    for name in main.list_commands(click.Context(main)):
        sub = main.get_command(click.Context(main), name)
        if sub is command:
            return [name]
        if isinstance(sub, click.Group):
            for inner in sub.list_commands(click.Context(sub)):
                if sub.get_command(click.Context(sub), inner) is command:
                    return [name, inner]
    raise AssertionError(command.name)
