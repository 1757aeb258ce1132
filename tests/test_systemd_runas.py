"""``systemd install --run-as USER`` refuses, before writing any unit, when that user cannot
execute the quantbot-bus executable (or its interpreter) or read the config: real users (a
throwaway system user), real directories and modes, the check run as that user (``runuser``)."""

from __future__ import annotations

import fcntl
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from quantbot_bus.cli import main
from quantbot_bus.errors import InstallError
from quantbot_bus.ops import systemd as sd
from quantbot_bus.ops.systemd import access

USERADD = shutil.which("useradd") or "/usr/sbin/useradd"
USERDEL = shutil.which("userdel") or "/usr/sbin/userdel"
PYTHON = Path("/usr/bin/python3")  # outside /root: any user may execute it

# one worker builds the module's `account` once (make test runs --dist loadgroup)
pytestmark = [
    pytest.mark.xdist_group("test_systemd_runas"),
    pytest.mark.skipif(os.geteuid() != 0, reason="creates a system user: needs root"),
    pytest.mark.skipif(not os.access(USERADD, os.X_OK), reason="no useradd"),
    pytest.mark.skipif(not PYTHON.exists(), reason=f"no {PYTHON}"),
]


@pytest.fixture(scope="module")
def account() -> Iterator[str]:
    """A throwaway system user (``useradd --system``), removed at the end."""
    name = "qb-runastest-" + os.environ.get("PYTEST_XDIST_WORKER", "main")
    fd = os.open("/tmp/qb-runastest-useradd.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # useradd locks /etc/passwd: one at a time
        try:
            pwd.getpwnam(name)
        except KeyError:
            subprocess.run([USERADD, "--system", "--no-create-home", name], check=True, timeout=60)
    finally:
        os.close(fd)
    yield name
    subprocess.run([USERDEL, name], check=False, capture_output=True, timeout=60)


@pytest.fixture
def place() -> Iterator[Path]:
    """A directory any user can search (pytest's own tmp dirs are mode 0700 under /tmp)."""
    base = Path(tempfile.mkdtemp(prefix="qb-runas-", dir="/tmp"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base)


def venv(directory: Path, mode: int) -> Path:
    """A stand-in venv: ``bin/quantbot-bus``, a script run by /usr/bin/python3; ``mode`` on the
    venv directory itself (0700: only root reaches it)."""
    exe = directory / "bin" / "quantbot-bus"
    exe.parent.mkdir(parents=True)
    exe.write_text(f"#!{PYTHON}\nprint('quantbot-bus')\n")
    exe.chmod(0o755)
    directory.chmod(mode)
    return exe


def config(directory: Path, mode: int = 0o644) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "quantbot-bus.toml"
    path.write_text('root = "artifacts"\nstate_dir = "state"\nexports_dir = "exports"\n')
    path.chmod(mode)
    return path


def install(cfg: Path, exe: Path, user: str, units: Path, **kw: Any) -> sd.InstallResult:
    return sd.install(
        cfg, unit_dir=units, systemctl=["/bin/true"], executable=exe, run_as=user, **kw
    )


def assert_nothing_written(units: Path, cfg: Path) -> None:
    assert not units.exists()
    assert not (cfg.parent / "state").exists() and not (cfg.parent / "artifacts").exists()


def test_a_venv_under_a_private_directory_is_refused(account: str, place: Path) -> None:
    private = place / "root-venv"
    exe = venv(private, 0o700)
    cfg = config(place / "bus")
    units = place / "units"
    with pytest.raises(InstallError) as err:
        install(cfg, exe, account, units)
    msg = str(err.value)
    assert msg.startswith(f"{private} is mode 0700 (owner root, group root): ")
    assert f"the {account} user cannot reach {exe} (the quantbot-bus executable)" in msg
    assert "python3 -m venv /opt/quantbot-bus/venv" in msg and "--run-as root" in msg
    assert "config" not in msg.split(";")[0]
    assert_nothing_written(units, cfg)

    # root reaches it: the same install goes through
    result = install(cfg, exe, "root", units)
    assert sorted(p.name for p in units.iterdir()) == sorted(sd.UNIT_NAMES)
    assert result.units and "User=root" in result.units[0].content


def test_an_unreadable_config_is_refused(account: str, place: Path) -> None:
    exe = venv(place / "venv", 0o755)
    secret = place / "secret"
    units = place / "units"
    cfg = config(secret)
    secret.chmod(0o700)
    with pytest.raises(InstallError) as err:
        install(cfg, exe, account, units)
    assert str(err.value).startswith(f"{secret} is mode 0700")
    assert f"cannot reach {cfg} (the config file)" in str(err.value)
    assert "move the config where" in str(err.value)
    assert_nothing_written(units, cfg)

    secret.chmod(0o755)
    cfg.chmod(0o600)  # the directory is open, the file is not
    with pytest.raises(InstallError) as err:
        install(cfg, exe, account, units)
    assert str(err.value).startswith(f"{cfg} is mode 0600 (owner root, group root): ")
    assert f"the {account} user cannot read it (the config file)" in str(err.value)
    assert_nothing_written(units, cfg)


def test_dry_run_warns_and_writes_nothing(account: str, place: Path) -> None:
    private = place / "root-venv"
    exe = venv(private, 0o700)
    cfg = config(place / "bus")
    units = place / "units"
    args = ["systemd", "install", "--config", str(cfg), "--executable", str(exe)]
    args += ["--run-as", account, "--unit-dir", str(units), "--systemctl", "/bin/true"]
    res = CliRunner().invoke(main, [*args, "--dry-run"])
    assert res.exit_code == 0, res.output
    assert f"warning: {private} is mode 0700" in res.stderr
    assert f"# {units / sd.DAEMON_UNIT}" in res.stdout
    assert_nothing_written(units, cfg)

    res = CliRunner().invoke(main, args)  # for real: exit 8, the reason on stderr
    assert res.exit_code == 8
    assert f"Error: {private} is mode 0700" in res.stderr and "no unit was written" in res.stderr
    assert_nothing_written(units, cfg)


def test_a_reachable_install_writes_the_units(account: str, place: Path) -> None:
    exe = venv(place / "venv", 0o755)
    cfg = config(place / "bus")
    units = place / "units"
    result = install(cfg, exe, account, units)
    assert not [w for w in result.warnings if "cannot" in w]
    assert sorted(p.name for p in units.iterdir()) == sorted(sd.UNIT_NAMES)
    assert f"User={account}" in (units / sd.DAEMON_UNIT).read_text()
    assert (place / "bus" / "state").stat().st_uid == pwd.getpwnam(account).pw_uid
    # and the user really can run it
    ran = subprocess.run(
        ["runuser", "-u", account, "--", str(exe)], capture_output=True, text=True, timeout=60
    )
    assert ran.stdout == "quantbot-bus\n"


def test_an_unknown_user_is_refused(place: Path) -> None:
    exe = venv(place / "venv", 0o755)
    cfg = config(place / "bus")
    with pytest.raises(InstallError, match="user 'qb-no-such-user' does not exist"):
        install(cfg, exe, "qb-no-such-user", place / "units")
    assert not (place / "units").exists()


def test_the_mode_bit_fallback_agrees_with_runuser(account: str, place: Path) -> None:
    """Without root (or runuser) the check reads mode bits; on the same paths it must answer
    what the user itself gets."""
    venv(place / "private", 0o700)
    venv(place / "open", 0o755)
    config(place / "etc", 0o640)
    (place / "etc" / "other.toml").write_text("")
    (place / "etc" / "other.toml").chmod(0o604)
    paths = [
        place / "private",
        place / "private" / "bin" / "quantbot-bus",
        place / "open" / "bin",
        place / "open" / "bin" / "quantbot-bus",
        place / "etc" / "quantbot-bus.toml",
        place / "etc" / "other.toml",
    ]
    checks = [(op, p) for p in paths for op in ("-r", "-x")]
    as_user = access._failing_as_user(account, checks)
    assert as_user is not None
    entry = pwd.getpwnam(account)
    uid, groups = access._user_ids(entry)
    by_bits = {c for c in checks if not access._allowed(c[0], c[1], uid, groups)}
    assert by_bits == as_user
    assert ("-x", place / "private") in as_user and (
        "-r",
        place / "etc" / "other.toml",
    ) not in as_user
    assert stat.S_IMODE((place / "private").stat().st_mode) == 0o700
