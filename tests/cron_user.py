"""The throwaway system user the tests of scripts/setup-catalog-sync-cron.sh run it as, against
the real crontab(1) (Debian's ``cron`` package).

The script edits the crontab of whoever runs it, so every test runs it as a throwaway system
user (``runuser -u``, an empty environment), never as the invoking user, and removes that user's
crontab after each test (``crontab -u USER -r``). One user per xdist worker and a file lock per
user: parallel workers, or a second pytest run on the machine, never share a crontab mid-test.
No cron daemon is needed: the tests read the crontab back and run the installed command
themselves. Needs root (to create the user and run as it): the test modules set
``pytestmark = needs_root_and_cron``, which skips them otherwise.
"""

from __future__ import annotations

import fcntl
import functools
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from builders import DEADLINE_S

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "setup-catalog-sync-cron.sh"
TAG = "# quantbot-bus-catalog-sync"
BUS_EXE = Path(sys.executable).parent / "quantbot-bus"
CRONTAB = shutil.which("crontab")
RUNUSER = next(
    (p for p in ("/usr/sbin/runuser", "/sbin/runuser") if os.access(p, os.X_OK)),
    shutil.which("runuser"),
)
USERADD = shutil.which("useradd") or "/usr/sbin/useradd"  # sbin may not be on PATH
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
#: the environment cron gives a job (Debian: HOME, LOGNAME, SHELL and this PATH)
CRON_PATH = "/usr/bin:/bin"
OTHER_LINES = [
    "# m h dom mon dow command: lines that are not ours stay exactly as they are",
    'MAILTO=""',
    "",
    "0 3 * * * /bin/true # nightly, not ours",
    "5 4 * * * /bin/true # quantbot-bus-catalog-sync-old",
    "@reboot /bin/true",
]

needs_root_and_cron = [
    pytest.mark.skipif(
        os.geteuid() != 0, reason="needs root: runs the script as a throwaway system user"
    ),
    pytest.mark.skipif(
        CRONTAB is None, reason="crontab is not installed (.ci/run installs Debian's cron)"
    ),
    pytest.mark.skipif(RUNUSER is None, reason="runuser (util-linux) is not installed"),
    pytest.mark.skipif(not BUS_EXE.is_file(), reason=f"no quantbot-bus beside {sys.executable}"),
]


@contextmanager
def file_lock(path: str) -> Iterator[None]:
    """An exclusive flock on ``path`` (blocking; the per-test timeout bounds the wait)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Account:
    """The throwaway system user whose crontab the script edits."""

    name: str
    uid: int
    gid: int
    home: Path
    #: it can run quantbot-bus (its interpreter may live below a home directory it cannot enter,
    #: e.g. a pyenv Python under /root)
    runs_bus: bool

    def crontab(self) -> list[str] | None:
        """The user's crontab, a line an element; None when it has none."""
        assert CRONTAB is not None
        proc = subprocess.run(
            [CRONTAB, "-u", self.name, "-l"], capture_output=True, text=True, timeout=DEADLINE_S
        )
        if proc.returncode != 0:
            assert "no crontab for" in proc.stderr, proc.stderr
            return None
        return proc.stdout.splitlines()

    def set_crontab(self, lines: Sequence[str]) -> None:
        assert CRONTAB is not None
        subprocess.run(
            [CRONTAB, "-u", self.name, "-"],
            input="".join(f"{line}\n" for line in lines),
            text=True,
            check=True,
            timeout=DEADLINE_S,
        )

    def remove_crontab(self) -> None:
        assert CRONTAB is not None
        subprocess.run(
            [CRONTAB, "-u", self.name, "-r"], capture_output=True, timeout=DEADLINE_S
        )  # "no crontab for USER" (exit 1) is fine

    def as_user(self, env: dict[str, str], *cmd: str) -> list[str]:
        """``cmd`` as this user, with exactly ``env`` (plus HOME, USER, LOGNAME)."""
        assert RUNUSER is not None
        ident = {"HOME": str(self.home), "USER": self.name, "LOGNAME": self.name}
        pairs = [f"{k}={v}" for k, v in {**ident, **env}.items()]
        return [RUNUSER, "-u", self.name, "--", "/usr/bin/env", "-i", *pairs, *cmd]


@functools.cache
def throwaway_account() -> Account:
    """The throwaway user of this worker (``useradd --system --create-home`` once; kept); the
    probes run once per process. Skips the test when the user cannot reach the checkout."""
    name = "qb-crontest-" + os.environ.get("PYTEST_XDIST_WORKER", "main")
    with file_lock("/tmp/qb-crontest-useradd.lock"):  # useradd locks /etc/passwd; one at a time
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            subprocess.run(
                [USERADD, "--system", "--create-home", name],
                check=True,
                capture_output=True,
                timeout=DEADLINE_S,
            )
            pw = pwd.getpwnam(name)
    acct = Account(name, pw.pw_uid, pw.pw_gid, Path(pw.pw_dir), runs_bus=False)
    reach = subprocess.run(
        acct.as_user({"PATH": SYSTEM_PATH}, "test", "-r", str(SCRIPT), "-a", "-x", str(BUS_EXE)),
        capture_output=True,
        timeout=DEADLINE_S,
    )
    if reach.returncode != 0:
        pytest.skip(
            f"{name} cannot read {SCRIPT} or find {BUS_EXE}: the checkout is not "
            "reachable by other users (clone it outside a private home directory)"
        )
    runs = subprocess.run(
        acct.as_user({"PATH": CRON_PATH}, str(BUS_EXE), "--version"),
        capture_output=True,
        timeout=DEADLINE_S,
    )
    return Account(name, pw.pw_uid, pw.pw_gid, Path(pw.pw_dir), runs_bus=runs.returncode == 0)


@dataclass(frozen=True)
class Cron:
    """One test's view: the user, and ``top``, a fresh directory it owns (the bus's base dir)."""

    account: Account
    top: Path

    def script(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        path: str | None = None,
        script: Path = SCRIPT,
    ) -> subprocess.CompletedProcess[str]:
        """The script as the user, in ``top``; PATH finds quantbot-bus unless ``path`` says."""
        full_env = {"LANG": "C.UTF-8", "PATH": path or f"{BUS_EXE.parent}:{SYSTEM_PATH}"}
        return subprocess.run(
            self.account.as_user({**full_env, **(env or {})}, str(script), *args),
            cwd=self.top,
            capture_output=True,
            text=True,
            timeout=DEADLINE_S,
        )

    def line(
        self,
        schedule: str = "*/5 * * * *",
        *,
        base: Path | None = None,
        exe: Path = BUS_EXE,
        config: Path | None = None,
        log_dir: Path | None = None,
    ) -> str:
        """The crontab line the script should write for these settings (plain paths)."""
        base = base or self.top
        command = f"cd {base} && {exe} sync"
        if config is not None:
            command += f" --config {config}"
        command += f" >> {log_dir or base / 'logs'}/catalog-sync.log 2>&1"
        return f"{schedule} {command} {TAG}"

    def chown(self) -> None:
        """Give everything below ``top`` to the user (files the test wrote as root)."""
        for dirpath, dirnames, filenames in os.walk(self.top):
            for name in [*dirnames, *filenames]:
                os.lchown(os.path.join(dirpath, name), self.account.uid, self.account.gid)


@contextmanager
def fresh_cron(account: Account) -> Iterator[Cron]:
    """The user's crontab, empty, for this test alone; removed again afterwards."""
    with file_lock(f"/tmp/{account.name}.lock"):
        top = Path(tempfile.mkdtemp(prefix="qb-cron-"))
        os.chown(top, account.uid, account.gid)
        account.remove_crontab()
        try:
            yield Cron(account, top)
        finally:
            account.remove_crontab()
            shutil.rmtree(top, ignore_errors=True)


def ours(lines: Sequence[str] | None) -> list[str]:
    return [line for line in lines or () if line.endswith(TAG)]
