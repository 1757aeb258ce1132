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
