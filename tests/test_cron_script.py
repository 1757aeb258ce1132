"""scripts/setup-catalog-sync-cron.sh against the real crontab(1) (Debian's ``cron`` package).

The script edits the crontab of whoever runs it, so every test runs it as a throwaway system
user (``runuser -u``, an empty environment), never as the invoking user, and removes that user's
crontab after each test (``crontab -u USER -r``). One user per xdist worker and a file lock per
user: parallel workers, or a second pytest run on the machine, never share a crontab mid-test.
No cron daemon is needed: the tests read the crontab back and run the installed command
themselves. Needs root (to create the user and run as it); skipped otherwise.
"""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from builders import DEADLINE_S, make_run, wait_for

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

pytestmark = [
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


@pytest.fixture(scope="session")
def account() -> Account:
    """The throwaway user of this worker (``useradd --system --create-home`` once; kept)."""
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


@pytest.fixture
def cron(account: Account) -> Iterator[Cron]:
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


@contextmanager
def daemon(
    cwd: Path, env: dict[str, str], state_dir: Path, *args: str
) -> Iterator[subprocess.Popen[bytes]]:
    """A real ``quantbot-bus daemon`` (as root) in ``cwd`` with these QUANTBOT_BUS_* settings
    and options, yielded once it holds ``state_dir/daemon.lock``; SIGTERMed and reaped at the
    end."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("QUANTBOT_BUS_", "NOTIFY_SOCKET", "WATCHDOG_"))
    }
    log_path = cwd / "daemon.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(BUS_EXE), "daemon", "--log-format", "json", *args],
            cwd=cwd,
            env={**clean, **env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:

        def holds_lock() -> bool:
            if proc.poll() is not None:
                raise AssertionError(
                    f"the daemon exited {proc.returncode}: {log_path.read_text()[-2000:]}"
                )
            try:
                holder = (state_dir / "daemon.lock").read_text().split()
            except FileNotFoundError:
                return False
            return holder == [str(proc.pid), "daemon"]

        wait_for(holds_lock, "the daemon to hold daemon.lock")
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=DEADLINE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def ours(lines: Sequence[str] | None) -> list[str]:
    return [line for line in lines or () if line.endswith(TAG)]


# --- options ------------------------------------------------------------------------------------


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


# --- install and uninstall ----------------------------------------------------------------------


def test_install_twice_keeps_one_line_and_every_other_line(cron: Cron) -> None:
    cron.account.set_crontab(OTHER_LINES)
    first = cron.script("--base-dir", str(cron.top))
    assert first.returncode == 0, first.stderr
    assert cron.account.crontab() == [*OTHER_LINES, cron.line()]
    assert (cron.top / "logs").is_dir()

    again = cron.script("--base-dir", str(cron.top), "--interval", "10")
    assert again.returncode == 0, again.stderr
    assert "replaced" in again.stdout
    assert cron.account.crontab() == [*OTHER_LINES, cron.line("*/10 * * * *")]

    dry = cron.script("--uninstall", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout == cron.line("*/10 * * * *") + "\n"
    assert len(ours(cron.account.crontab())) == 1

    removed = cron.script("--uninstall")
    assert removed.returncode == 0, removed.stderr
    assert cron.account.crontab() == OTHER_LINES


def test_uninstall_removes_the_line(cron: Cron) -> None:
    assert cron.script("--base-dir", str(cron.top), "--interval", "1").returncode == 0
    assert ours(cron.account.crontab()) == [cron.line("* * * * *")]
    proc = cron.script("--uninstall")
    assert proc.returncode == 0, proc.stderr
    assert cron.account.crontab() == []


def test_uninstall_with_nothing_installed_says_so(cron: Cron) -> None:
    proc = cron.script("--uninstall")
    assert proc.returncode == 0, proc.stderr
    assert "nothing to remove" in proc.stdout
    assert cron.account.crontab() is None  # not even an empty crontab was written

    cron.account.set_crontab(OTHER_LINES)
    proc = cron.script("--uninstall")
    assert proc.returncode == 0 and "nothing to remove" in proc.stdout
    assert cron.account.crontab() == OTHER_LINES


# --- a daemon on the same state dir -------------------------------------------------------------


def test_refuses_while_a_daemon_runs_on_the_state_dir(cron: Cron) -> None:
    top = cron.top
    env = {
        "QUANTBOT_BUS_ROOT": str(top / "artifacts"),
        "QUANTBOT_BUS_STATE_DIR": str(top / "state"),
        "QUANTBOT_BUS_EXPORTS_DIR": str(top / "exports"),
    }
    with daemon(top, env, top / "state") as proc:
        for flags in ([], ["--dry-run"]):
            refused = cron.script("--base-dir", str(top), *flags)
            assert refused.returncode == 1, refused.stdout + refused.stderr
            assert refused.stdout == ""
            assert f"daemon (pid {proc.pid}) is running on the state dir {top / 'state'}" in (
                refused.stderr
            )
            assert "keeps the catalog fresh already" in refused.stderr
            assert "stop the daemon first" in refused.stderr
        assert cron.account.crontab() is None
        assert not (top / "logs").exists()
    assert proc.returncode == 0  # SIGTERM: a clean stop

    installed = cron.script("--base-dir", str(top))
    assert installed.returncode == 0, installed.stderr
    assert ours(cron.account.crontab()) == [cron.line()]


def test_a_daemon_on_the_state_dir_of_this_shells_environment(cron: Cron) -> None:
    """QUANTBOT_BUS_STATE_DIR in the installing shell: that daemon is found too, and the script
    warns that the cron job will not see the variable."""
    state = cron.top / "elsewhere"
    env = {
        "QUANTBOT_BUS_ROOT": str(cron.top / "artifacts"),
        "QUANTBOT_BUS_STATE_DIR": str(state),
        "QUANTBOT_BUS_EXPORTS_DIR": str(cron.top / "exports"),
    }
    with daemon(cron.top, env, state) as proc:
        plain = cron.script("--dry-run", "--base-dir", str(cron.top))
        assert plain.returncode == 0, plain.stderr  # the job's own state dir is free
        refused = cron.script(
            "--dry-run", "--base-dir", str(cron.top), env={"QUANTBOT_BUS_STATE_DIR": str(state)}
        )
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert f"daemon (pid {proc.pid}) is running on the state dir {state}" in refused.stderr
        assert "does not see QUANTBOT_BUS_STATE_DIR" in refused.stderr


def test_a_daemon_on_a_state_dir_from_the_config_file(cron: Cron) -> None:
    """The state dir comes from the config through quantbot-bus's own Python; where the user
    cannot run that interpreter the script falls back to the defaults and says so."""
    config = cron.top / "bus.toml"
    config.write_text('root = "artifacts"\nstate_dir = "from-config"\nexports_dir = "exports"\n')
    cron.chown()
    with daemon(cron.top, {}, cron.top / "from-config", "--config", str(config)):
        proc = cron.script("--dry-run", "--base-dir", str(cron.top), "--config", str(config))
        if cron.account.runs_bus:
            assert proc.returncode == 1, proc.stdout + proc.stderr
            assert f"running on the state dir {cron.top / 'from-config'}" in proc.stderr
        else:
            assert proc.returncode == 0, proc.stderr
            assert "a daemon on a state_dir set in the config file is not detected" in (proc.stderr)


def test_a_sync_holding_the_lock_is_no_daemon(cron: Cron) -> None:
    state = cron.top / "state"
    state.mkdir()
    lock = state / "daemon.lock"
    lock.write_text(f"{os.getpid()} sync\n")
    with open(lock) as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc = cron.script("--dry-run", "--base-dir", str(cron.top))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == cron.line() + "\n"


# --- the installed line works -------------------------------------------------------------------


def test_the_installed_command_runs(cron: Cron) -> None:
    """Run the command of the installed line the way cron would: its text after the five time
    fields (trailing tag comment included) through ``/bin/sh -c`` with cron's environment, as
    the crontab's user. Where that user cannot run quantbot-bus's interpreter (a pyenv Python
    below /root, say), the same command runs as the invoking user instead."""
    base = cron.top / "100% a bus"  # a space and cron's %: quoting and escaping, for real
    make_run(base / "artifacts", "backtest", "cron-run-1")
    cron.chown()
    installed = cron.script("--base-dir", str(base), "--interval", "1")
    assert installed.returncode == 0, installed.stderr
    [line] = ours(cron.account.crontab())
    command = line.split(None, 5)[5].replace("\\%", "%")  # what cron hands to the shell
    cron.account.remove_crontab()  # a cron daemon on this machine must not start it meanwhile

    acct = cron.account
    cron_env = {"SHELL": "/bin/sh", "PATH": CRON_PATH}
    if acct.runs_bus:
        cmd = acct.as_user(cron_env, "/bin/sh", "-c", command)
    else:
        ident = {"HOME": str(acct.home), "LOGNAME": acct.name}
        cmd = ["/usr/bin/env", "-i", *(f"{k}={v}" for k, v in {**ident, **cron_env}.items())]
        cmd += ["/bin/sh", "-c", command]
    proc = subprocess.run(cmd, cwd="/", capture_output=True, text=True, timeout=DEADLINE_S)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == "" and proc.stderr == ""  # all of it went to the log

    log = base / "logs" / "catalog-sync.log"
    [row] = json.loads(log.read_text())
    assert row["registered"] == 1 and row["rejected"] == 0
