"""The test servers' directories (tests/servers.py): one left by a killed test process is
removed by the next server of its kind; one whose owner lives is kept."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

from servers import server_dir

PREFIX = "qb-servers-test-"


def test_a_killed_owners_directory_goes_and_a_living_ones_stays() -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; sys.path.insert(0, sys.argv[1]); from servers import server_dir; "
            f"print(server_dir({PREFIX!r}), flush=True); time.sleep(60)",
            str(Path(__file__).parent),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    orphan = Path(child.stdout.readline().strip())
    mine = server_dir(PREFIX)  # its owner (the child) is alive: kept
    try:
        assert orphan.is_dir() and (orphan / "owner").read_text() == str(child.pid)
        child.send_signal(signal.SIGKILL)  # no teardown runs
        child.wait(30)
        assert orphan.is_dir()
        again = server_dir(PREFIX)  # the next server of its kind
        assert not orphan.exists()
        assert mine.is_dir() and again.is_dir()  # this process's own: kept
        shutil.rmtree(again)
    finally:
        child.kill()
        child.wait(30)
        child.stdout.close()
        shutil.rmtree(mine, ignore_errors=True)
        shutil.rmtree(orphan, ignore_errors=True)
