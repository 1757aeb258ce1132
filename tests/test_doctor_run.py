"""doctor as a whole: every check on a healthy, a fresh and a broken bus (real directories, real
DuckDB files), and the ``doctor`` command's table and JSON output and exit codes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from builders import make_catalog, make_run
from click.testing import CliRunner
from doctor_checks import EASY_DISK, NAMES, by_name, published, running_status

from quantbot_bus.catalog import SCHEMA_VERSION
from quantbot_bus.cli import main
from quantbot_bus.config import Config
from quantbot_bus.ops import doctor


def test_a_healthy_bus_passes_every_check(bus: Config) -> None:
    for sub in ("a/r1", "a/r2", "b/r3"):
        run_type, run_id = sub.split("/")
        make_run(bus.root, run_type, run_id)  # a run directory each
    make_catalog(bus)
    running_status(bus)
    checks = doctor.run_checks(bus, **EASY_DISK)
    assert [c.name for c in checks] == NAMES
    assert {c.name: c.status for c in checks if c.status != "ok"} == {}
    found = by_name(checks)
    assert found["root"].detail == f"{bus.root}: 6 directories, all readable"
    assert found["inotify.watches"].detail.startswith("6 directories to watch, limit ")
    assert found["snapshot"].detail == published(bus, 3)  # read from the publication
    assert found["catalog"].detail == (
        f"working catalog {bus.catalog_path} opens, schema version {SCHEMA_VERSION}"
    )
    assert found["status"].detail.startswith(f"daemon pid {os.getpid()} running")
    assert all(c.fix is None for c in checks)


def test_a_fresh_bus_warns_but_does_not_fail(bus: Config) -> None:
    checks = by_name(doctor.run_checks(bus, **EASY_DISK))
    assert checks["snapshot"].status == "warn"
    assert "quantbot-bus sync" in (checks["snapshot"].fix or "")
    assert checks["status"].status == "ok"
    assert all(c.ok for c in checks.values())
    expected = doctor.run_checks(bus, expect_daemon=True, **EASY_DISK)
    assert [c.name for c in expected if not c.ok] == ["snapshot", "status"]


def test_missing_root_fails_with_a_fix(tmp_path: Path) -> None:
    cfg = Config(
        root=tmp_path / "nope", exports_dir=tmp_path / "e", state_dir=tmp_path / "s"
    ).validate()
    checks = by_name(doctor.run_checks(cfg, **EASY_DISK))
    assert checks["root"].status == "fail"
    assert checks["root"].detail == f"artifacts root {tmp_path / 'nope'} does not exist"
    assert checks["root"].fix is not None and f"mkdir -p {tmp_path / 'nope'}" in checks["root"].fix
    assert checks["state_dir"].status == "warn"  # missing but creatable
    assert "ReadWritePaths" in checks["state_dir"].detail


# --- the command -----------------------------------------------------------------------------------


def cli_args(bus: Config, *extra: str) -> list[str]:
    return [
        "doctor",
        "--root",
        str(bus.root),
        "--state-dir",
        str(bus.state_dir),
        "--exports-dir",
        str(bus.exports_dir),
        *extra,
    ]


def test_cli_text_output_and_exit_codes(bus: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QUANTBOT_BUS_CONFIG", raising=False)
    make_catalog(bus)
    running_status(bus)
    res = CliRunner().invoke(main, cli_args(bus, "--format", "table"))
    lines = res.stdout.splitlines()
    statuses = [line.split()[0] for line in lines if not line.startswith(" ")]
    assert [line.split()[1].rstrip(":") for line in lines if not line.startswith(" ")] == NAMES
    assert set(statuses) <= {"ok", "WARN"}  # the disks of this machine may warn
    assert res.exit_code == 0, res.output
    assert f"ok   snapshot: {published(bus, 0)}" in lines

    bus.state_dir.joinpath("status.json").unlink()
    (bus.root).rmdir()
    res = CliRunner().invoke(main, cli_args(bus, "--format", "table", "--expect-daemon"))
    assert res.exit_code == 9
    lines = res.stdout.splitlines()
    root_line = lines.index(f"FAIL root: artifacts root {bus.root} does not exist")
    assert lines[root_line + 1].startswith("     fix: mkdir -p ")
    assert res.stderr == "Error: 2 check(s) failed: root, status\n"


def test_cli_json_output(bus: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QUANTBOT_BUS_CONFIG", raising=False)
    res = CliRunner().invoke(main, cli_args(bus))  # not a terminal: JSON by default
    data = json.loads(res.stdout)
    assert [d["name"] for d in data] == NAMES
    assert all(set(d) == {"name", "status", "detail", "fix"} for d in data)
    assert {d["status"] for d in data} <= {"ok", "warn", "fail"}
    snapshot = next(d for d in data if d["name"] == "snapshot")
    assert snapshot["status"] == "warn" and snapshot["fix"]
    assert res.exit_code == (9 if any(d["status"] == "fail" for d in data) else 0)


def test_format_checks() -> None:
    text = doctor.format_checks(
        [
            doctor.Check("a", "ok", "fine"),
            doctor.Check("b", "warn", "meh", "do x"),
            doctor.Check("c", "fail", "bad", "do y"),
        ]
    )
    assert text == ("ok   a: fine\nWARN b: meh\n     fix: do x\nFAIL c: bad\n     fix: do y\n")
