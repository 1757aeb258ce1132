"""scripts/setup-catalog-sync-cron.sh installing and uninstalling its crontab line, run as a
throwaway user against the real crontab(1) (see tests/cron_user.py): one line kept however often
it is installed, every other line left as it was, and the installed command run the way cron
would run it.
"""

from __future__ import annotations

import json
import subprocess

from builders import DEADLINE_S, make_run
from cron_user import (
    CRON_PATH,
    OTHER_LINES,
    Cron,
    needs_root_and_cron,
    ours,
)

pytestmark = needs_root_and_cron


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
