"""The test servers' directories (tests/servers.py): one left by a killed test process is
removed by the next server of its kind; one whose owner lives, or that has no owner file, is
kept."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from servers import OWNER, server_dir

PREFIX = f"qb-servers-test-{os.getpid()}-"  # not another run's


def _ours(path: Path) -> bool:
    return path.parent == Path(tempfile.gettempdir()) and path.name.startswith(PREFIX)


def test_a_killed_owners_directory_goes_and_a_living_ones_stays() -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; sys.path.insert(0, sys.argv[1]); from servers import OWNER, server_dir; "
            f"print(server_dir({PREFIX!r}), flush=True); time.sleep(60)",
            str(Path(__file__).parent),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    made: list[Path] = []
    try:
        assert child.stdout is not None
        orphan = Path(child.stdout.readline().strip())
        assert _ours(orphan), orphan  # the child made it (an empty line would be ".")
        made.append(orphan)
        bare = Path(tempfile.mkdtemp(prefix=PREFIX))  # no owner file: not a server's
        made.append(bare)
        old_style = Path(tempfile.mkdtemp(prefix=PREFIX))  # a pid, not a lock: left alone
        (old_style / "owner").write_text("999999")
        made.append(old_style)
        mine = server_dir(PREFIX)  # the child is alive: its directory is kept
        made.append(mine)
        assert orphan.is_dir() and (orphan / OWNER).read_text() == str(child.pid)
        child.send_signal(signal.SIGKILL)  # no teardown runs
        child.wait(30)
        assert orphan.is_dir()
        again = server_dir(PREFIX)  # the next server of its kind
        made.append(again)
        assert not orphan.exists()
        assert mine.is_dir() and again.is_dir() and bare.is_dir() and old_style.is_dir()
    finally:
        child.kill()
        child.wait(30)
        if child.stdout is not None:
            child.stdout.close()
        for path in made:
            if _ours(path):
                shutil.rmtree(path, ignore_errors=True)
