"""scripts/setup-catalog-sync-cron.sh's options, run as a throwaway user against the real
crontab(1) (see tests/cron_user.py): --help, --dry-run, the schedules an --interval gives and the
intervals refused, bad options (exit 2 naming the flag), absolute and quoted paths in the line,
the quantbot-bus executable found, the default base dir.
"""

from __future__ import annotations

import os
import shutil

import pytest
from cron_user import (
    BUS_EXE,
    OTHER_LINES,
    SCRIPT,
    SYSTEM_PATH,
    TAG,
    Cron,
    needs_root_and_cron,
    ours,
)

pytestmark = needs_root_and_cron


def test_help_exits_0_and_names_every_option(cron: Cron) -> None:
    assert os.access(SCRIPT, os.X_OK), "the script must be executable (chmod +x)"
    proc = cron.script("--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage:") and proc.stderr == ""
    for flag in ("--interval", "--base-dir", "--config", "--log-dir", "--dry-run", "--uninstall"):
        assert flag in proc.stdout
    assert cron.account.crontab() is None


def test_dry_run_prints_the_exact_line_and_changes_nothing(cron: Cron) -> None:
    cron.account.set_crontab(OTHER_LINES)
    proc = cron.script("--dry-run", "--base-dir", str(cron.top))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == cron.line() + "\n"
    assert cron.account.crontab() == OTHER_LINES
    assert not (cron.top / "logs").exists()


@pytest.mark.parametrize(
    ("interval", "schedule"),
    [
        (None, "*/5 * * * *"),
        ("1", "* * * * *"),
        ("5", "*/5 * * * *"),
        ("59", "*/59 * * * *"),
        ("60", "0 */1 * * *"),
        ("120", "0 */2 * * *"),
        ("1440", "0 0 * * *"),
    ],
)
def test_schedules(cron: Cron, interval: str | None, schedule: str) -> None:
    flags = [] if interval is None else ["--interval", interval]
    proc = cron.script("--dry-run", "--base-dir", str(cron.top), *flags)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == cron.line(schedule) + "\n"


@pytest.mark.parametrize(
    "interval", ["0", "-5", "1.5", "five", "61", "90", "1439", "1441", "2880", "99999999"]
)
def test_refused_intervals(cron: Cron, interval: str) -> None:
    proc = cron.script("--interval", interval, "--base-dir", str(cron.top))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "--interval" in proc.stderr and f"'{interval}'" in proc.stderr
    assert "1 to 59" in proc.stderr and "multiple of 60 up to 1440" in proc.stderr
    assert proc.stdout == "" and cron.account.crontab() is None


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--bogus"], "--bogus"),
        (["--dry-run=yes"], "--dry-run=yes"),
        (["extra"], "extra"),
        (["--interval"], "--interval"),
        (["--interval="], "--interval"),
        (["--base-dir", "/nonexistent/qb"], "--base-dir"),
        (["--config", "missing.toml"], "--config"),
        (["--log-dir", ""], "--log-dir"),
    ],
)
def test_bad_options_exit_2_naming_the_flag(cron: Cron, args: list[str], named: str) -> None:
    proc = cron.script(*args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert named in proc.stderr
    assert cron.account.crontab() is None


def test_config_and_log_dir_are_absolute_in_the_line(cron: Cron) -> None:
    (cron.top / "bus.toml").write_text('root = "artifacts"\n')
    cron.chown()
    args = ["--base-dir", str(cron.top), "--config", "bus.toml", "--log-dir", "var/log"]
    expected = cron.line(config=cron.top / "bus.toml", log_dir=cron.top / "var" / "log")
    dry = cron.script("--dry-run", *args)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout == expected + "\n"  # relative to where the script ran (cwd = top)
    assert not (cron.top / "var").exists()
    proc = cron.script(*args)
    assert proc.returncode == 0, proc.stderr
    assert ours(cron.account.crontab()) == [expected]
    assert (cron.top / "var" / "log").is_dir()


def test_quoting_of_odd_paths(cron: Cron) -> None:
    """Paths are single-quoted for sh, and a % (a newline to cron) is escaped."""
    base = cron.top / "it's 100% a bus"
    base.mkdir()
    proc = cron.script("--dry-run", "--base-dir", str(base))
    assert proc.returncode == 0, proc.stderr
    quoted = f"'{cron.top}/it'\\''s 100\\% a bus"
    assert proc.stdout == (
        f"*/5 * * * * cd {quoted}' && {BUS_EXE} sync >> {quoted}/logs/catalog-sync.log' 2>&1 "
        f"{TAG}\n"
    )


def test_executable_prefers_the_base_dirs_venv_and_must_exist(cron: Cron) -> None:
    no_bus = cron.script("--dry-run", "--base-dir", str(cron.top), path=SYSTEM_PATH)
    assert no_bus.returncode == 1
    assert "no quantbot-bus executable" in no_bus.stderr and no_bus.stdout == ""

    venv_bus = cron.top / ".venv" / "bin" / "quantbot-bus"
    venv_bus.parent.mkdir(parents=True)
    venv_bus.write_text("#!/bin/sh\nexit 0\n")
    venv_bus.chmod(0o755)
    proc = cron.script("--dry-run", "--base-dir", str(cron.top))  # PATH has the checkout's too
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == cron.line(exe=venv_bus) + "\n"


def test_base_dir_defaults_to_the_scripts_parent_dir(cron: Cron) -> None:
    copy = cron.top / "scripts" / SCRIPT.name
    copy.parent.mkdir()
    shutil.copy2(SCRIPT, copy)
    cron.chown()
    proc = cron.script("--dry-run", script=copy)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == cron.line() + "\n"
