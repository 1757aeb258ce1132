"""doctor's check of the daemon's status file: running, hung, dead without a clean stop,
stopped, missing (a real dead pid)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

from doctor_checks import running_status

from quantbot_bus.config import Config
from quantbot_bus.ops import doctor
from quantbot_bus.timeutil import iso_utc


def dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(proc.stdout)


def test_status_states(bus: Config) -> None:
    running_status(bus)
    assert doctor.check_status(bus, None, None).status == "ok"

    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)
    stale = doctor.check_status(bus, None, later)
    assert stale.status == "fail" and "it is hung" in stale.detail
    assert stale.fix is not None and "journalctl -u quantbot-bus" in stale.fix

    running_status(bus, pid=dead_pid())
    dead = doctor.check_status(bus, None, None)
    assert dead.status == "fail" and "without a clean stop" in dead.detail

    running_status(bus, stopped_at=iso_utc(), ready=False)
    assert doctor.check_status(bus, None, None).status == "warn"
    assert doctor.check_status(bus, True, None).status == "fail"

    bus.status_path.unlink()
    assert doctor.check_status(bus, None, None).status == "ok"
    missing = doctor.check_status(bus, True, None)
    assert missing.status == "fail" and "no status file" in missing.detail


def test_status_says_when_its_file_cannot_be_read(bus: Config) -> None:
    """An unreadable status file (here a directory in its place: the tests run as root, who
    reads any file) is a one-line error naming it and exit 4, not a traceback."""
    from click.testing import CliRunner

    from quantbot_bus.cli import main

    bus.status_path.parent.mkdir(parents=True, exist_ok=True)
    bus.status_path.unlink(missing_ok=True)
    bus.status_path.mkdir()
    result = CliRunner().invoke(main, ["status", "--state-dir", str(bus.state_dir)])
    assert result.exit_code == 4, result.output
    assert f"cannot read the status file {bus.status_path} (Is a directory)" in result.output
