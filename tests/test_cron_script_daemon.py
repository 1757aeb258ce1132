"""scripts/setup-catalog-sync-cron.sh refusing to install beside a real ``quantbot-bus daemon``
on the same state dir (the job's own, the installing shell's QUANTBOT_BUS_STATE_DIR, the config
file's), run as a throwaway user against the real crontab(1) (see tests/cron_user.py); a ``sync``
holding the lock is no daemon.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from builders import DEADLINE_S, wait_for
from cron_user import (
    BUS_EXE,
    Cron,
    needs_root_and_cron,
    ours,
)

pytestmark = needs_root_and_cron


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
