"""The sync timer's period (`systemd install --timer --interval N`) and `install --uninstall`:
the rendered timer linted by the real systemd-analyze, installed against a temporary unit
directory with the recording systemctl stub of tests/systemd_units.py (no systemd as PID 1 here;
../shared/tools/systemd-check.sh runs the units under a real one)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from systemd_units import (
    calls,
    needs_analyze,
    parse_unit,
    render_to,
    srv_context,
    stub_systemctl,
    tmp_context,
    verify,
    write_config,
)

from quantbot_bus.cli import main
from quantbot_bus.errors import ConfigError
from quantbot_bus.ops import systemd as sd

TIMER = "quantbot-bus-sync.timer"
BAD_INTERVAL = (
    "Error: --interval must be a whole number of minutes from 1 to 1440 (a day), got {!r}\n"
)


def run_cli(*args: str) -> Result:
    return CliRunner().invoke(main, ["systemd", *args])


class Bus:
    """A config under tmp_path, a unit directory and the systemctl stub: the CLI's arguments."""

    def __init__(self, tmp_path: Path) -> None:
        self.config = write_config(tmp_path / "bus")
        self.stub, self.log = stub_systemctl(tmp_path)
        self.unit_dir = tmp_path / "units"
        self.scope = ["--unit-dir", str(self.unit_dir), "--systemctl", str(self.stub)]

    def install(self, *args: str) -> Result:
        return run_cli(
            "install", "--config", str(self.config), "--run-as", "root", *self.scope, *args
        )

    def calls(self) -> list[list[str]]:
        """The systemctl calls since the last one, then forget them."""
        out = calls(self.log)
        self.log.unlink(missing_ok=True)
        return out

    def timer(self) -> dict[str, list[str]]:
        return parse_unit((self.unit_dir / TIMER).read_text())["Timer"]


# --- the rendered timer -------------------------------------------------------------------------


@pytest.mark.parametrize("minutes", [1, 7, 60, 1440])
def test_the_timer_runs_the_sync_every_interval_and_after_boot(
    tmp_path: Path, minutes: int
) -> None:
    ctx = srv_context(user=False, sync_interval_min=minutes)
    text = sd.render_units(ctx)[TIMER]
    timer = parse_unit(text)
    assert timer["Timer"] == {
        "OnBootSec": ["5min"],
        "OnUnitActiveSec": [f"{minutes}min"],
        "AccuracySec": ["30s"],
    }
    assert timer["Unit"]["Description"] == [
        f"quantbot-bus catalog sync every {minutes} min (/srv/qb/artifacts)"
    ]
    assert sd.installed_interval(text) == minutes
    # the daemon and the sync service do not depend on the period, and still exclude the timer
    default = sd.render_units(srv_context(user=False))
    for name in ("quantbot-bus.service", "quantbot-bus-sync.service"):
        assert sd.render_units(ctx)[name] == default[name]
    assert parse_unit(default["quantbot-bus.service"])["Unit"]["Conflicts"] == [TIMER]


def test_the_default_period_is_5_minutes() -> None:
    assert sd.DEFAULT_SYNC_INTERVAL_MIN == 5
    timer = parse_unit(sd.render_units(srv_context(user=False))[TIMER])["Timer"]
    assert timer["OnUnitActiveSec"] == ["5min"]


@needs_analyze
@pytest.mark.parametrize("user", [False, True], ids=["system", "user"])
@pytest.mark.parametrize("minutes", [1, 1440])
def test_a_timer_with_an_interval_verifies_without_any_output(
    tmp_path: Path, user: bool, minutes: int
) -> None:
    ctx = tmp_context(tmp_path, user=user)
    paths = render_to(tmp_path / "units", dataclasses.replace(ctx, sync_interval_min=minutes))
    timer = next(p for p in paths if p.name == TIMER)
    assert f"OnUnitActiveSec={minutes}min" in timer.read_text()
    proc = verify([timer], user=user, tmp=tmp_path)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", ""), timer.read_text()


@needs_analyze
def test_verify_catches_a_bad_period(tmp_path: Path) -> None:
    """The lint above can fail on this key: a period systemd cannot parse is reported."""
    paths = render_to(tmp_path / "units", srv_context(user=False))
    timer = next(p for p in paths if p.name == TIMER)
    timer.write_text(timer.read_text().replace("OnUnitActiveSec=5min", "OnUnitActiveSec=5mins"))
    proc = verify([timer], user=False, tmp=tmp_path)
    assert f"{timer}:12: Failed to parse timer value, ignoring: 5mins\n" in proc.stderr


@needs_analyze
def test_the_units_install_writes_verify(tmp_path: Path) -> None:
    bus = Bus(tmp_path)
    res = bus.install("--timer", "--interval", "1")
    assert res.exit_code == 0, res.output
    for name in sd.UNIT_NAMES:
        proc = verify([bus.unit_dir / name], user=False, tmp=tmp_path)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", ""), name


# --- bad intervals --------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["0", "-5", "1.5", "abc", "", "1441", "5min", "+5", "5_0", "00"])
def test_bad_intervals_exit_2_with_the_value_and_change_nothing(tmp_path: Path, bad: str) -> None:
    bus = Bus(tmp_path)
    res = bus.install("--timer", f"--interval={bad}")
    assert (res.exit_code, res.stdout, res.stderr) == (2, "", BAD_INTERVAL.format(bad))
    assert not bus.unit_dir.exists() and bus.calls() == []
    with pytest.raises(ConfigError) as info:
        sd.install(bus.config, unit_dir=bus.unit_dir, systemctl=[str(bus.stub)], timer=True,
                   interval=bad, run_as="daemon")  # fmt: skip
    assert f"Error: {info.value}\n" == BAD_INTERVAL.format(bad)


def test_a_negative_interval_as_a_separate_argument_is_the_same_error(tmp_path: Path) -> None:
    res = Bus(tmp_path).install("--timer", "--interval", "-1")
    assert (res.exit_code, res.stderr) == (2, BAD_INTERVAL.format("-1"))


def test_the_interval_bounds_are_accepted(tmp_path: Path) -> None:
    assert [sd.parse_interval(v) for v in ("1", "1440", " 30 ", 15)] == [1, 1440, 30, 15]
    with pytest.raises(ConfigError, match="got 'True'"):
        sd.parse_interval(True)


def test_interval_without_the_timer_is_refused_with_the_reason(tmp_path: Path) -> None:
    bus = Bus(tmp_path)
    for extra in ([], ["--dry-run"]):
        res = bus.install("--interval", "10", *extra)
        assert (res.exit_code, res.stdout) == (2, "")
        assert res.stderr == (
            "Error: --interval sets how often the sync timer runs and needs --timer: the daemon "
            "(quantbot-bus.service, installed without --timer) watches the root continuously "
            "and has no interval\n"
        )
    assert not bus.unit_dir.exists() and bus.calls() == []


# --- install, re-install, dry run -------------------------------------------------------------------


def test_install_timer_with_interval_enables_only_the_timer(tmp_path: Path) -> None:
    bus = Bus(tmp_path)
    res = bus.install("--timer", "--interval", "15")
    assert res.exit_code == 0, res.output
    assert bus.timer()["OnUnitActiveSec"] == ["15min"]
    assert bus.calls() == [
        [str(bus.stub), "daemon-reload"],
        [str(bus.stub), "disable", "--now", "quantbot-bus.service"],
        [str(bus.stub), "enable", "--now", TIMER],
    ]


def test_reinstall_replaces_the_timer_and_restarts_it(tmp_path: Path) -> None:
    bus = Bus(tmp_path)
    assert bus.install("--timer", "--interval", "15").exit_code == 0
    bus.calls()
    res = bus.install("--timer", "--interval", "2")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in bus.unit_dir.iterdir()) == sorted(sd.UNIT_NAMES)  # one timer
    assert bus.timer()["OnUnitActiveSec"] == ["2min"]
    assert "15min" not in (bus.unit_dir / TIMER).read_text()
    assert bus.calls() == [
        [str(bus.stub), "daemon-reload"],
        [str(bus.stub), "disable", "--now", "quantbot-bus.service"],
        [str(bus.stub), "enable", "--now", TIMER],
        [str(bus.stub), "restart", TIMER],
    ]
    assert f"ran: {bus.stub} restart {TIMER}" in res.stdout.splitlines()
    assert "installed timer" not in res.stderr  # --interval given: no warning

    # without --interval the default comes back, and install says the period changed
    res = bus.install("--timer")
    assert res.exit_code == 0, res.output
    assert bus.timer()["OnUnitActiveSec"] == ["5min"]
    assert (
        "warning: the installed timer ran the sync every 2 min; without --interval it now runs "
        "every 5 min (pass --interval 2 to keep 2)\n"
    ) in res.stderr


def test_switching_back_to_the_daemon_disables_the_timer(tmp_path: Path) -> None:
    bus = Bus(tmp_path)
    assert bus.install("--timer", "--interval", "3").exit_code == 0
    bus.calls()
    res = bus.install()
    assert res.exit_code == 0, res.output
    assert bus.calls() == [
        [str(bus.stub), "daemon-reload"],
        [str(bus.stub), "disable", "--now", TIMER],
        [str(bus.stub), "enable", "--now", "quantbot-bus.service"],
    ]
    assert bus.timer()["OnUnitActiveSec"] == ["5min"]


def test_dry_run_prints_the_timer_with_its_interval_and_changes_nothing(tmp_path: Path) -> None:
    bus = Bus(tmp_path)
    res = bus.install("--timer", "--interval", "7", "--dry-run")
    assert res.exit_code == 0, res.output
    timer_block = res.stdout.split(f"# {bus.unit_dir / TIMER}\n", 1)[1].split("\n# would ", 1)[0]
    assert parse_unit(timer_block)["Timer"]["OnUnitActiveSec"] == ["7min"]
    assert "Description=quantbot-bus catalog sync every 7 min (" in timer_block
    assert res.stdout.endswith(f"# would run: {bus.stub} enable --now {TIMER}\n")
    assert not bus.unit_dir.exists() and bus.calls() == []


# --- install --uninstall ------------------------------------------------------------------------------


def test_install_uninstall_removes_the_units_and_is_idempotent(tmp_path: Path) -> None:
    bus = Bus(tmp_path)
    assert bus.install("--timer", "--interval", "10").exit_code == 0
    (tmp_path / "bus" / "state" / "keep.txt").write_text("data")
    bus.calls()

    res = run_cli("install", "--uninstall", *bus.scope)
    assert res.exit_code == 0, res.output
    assert bus.calls() == [
        [str(bus.stub), "disable", "--now", "quantbot-bus.service", TIMER],
        [str(bus.stub), "stop", "quantbot-bus-sync.service"],
        [str(bus.stub), "daemon-reload"],
    ]
    assert res.stdout == "".join(f"removed {bus.unit_dir / n}\n" for n in sd.UNIT_NAMES) + "".join(
        f"ran: {shell}\n"
        for shell in (
            f"{bus.stub} disable --now quantbot-bus.service {TIMER}",
            f"{bus.stub} stop quantbot-bus-sync.service",
            f"{bus.stub} daemon-reload",
        )
    )
    assert list(bus.unit_dir.iterdir()) == []
    assert (tmp_path / "bus" / "state" / "keep.txt").read_text() == "data"

    nothing = f"note: no quantbot-bus units in {bus.unit_dir}: nothing to do\n"
    for args in (["install", "--uninstall"], ["uninstall"]):  # twice, and the same as uninstall
        res = run_cli(*args, *bus.scope)
        assert (res.exit_code, res.stdout, res.stderr) == (0, nothing, "")
        assert bus.calls() == []


def test_install_uninstall_prints_what_uninstall_prints(tmp_path: Path) -> None:
    bus = Bus(tmp_path)
    outputs = []
    for args in (["install", "--uninstall"], ["uninstall"]):
        for extra in (["--dry-run"], []):
            assert bus.install("--timer").exit_code == 0
            bus.calls()
            res = run_cli(*args, *extra, *bus.scope)
            assert res.exit_code == 0, res.output
            outputs.append((res.stdout, bus.calls()))
    assert outputs[0] == outputs[2] and outputs[1] == outputs[3]
    assert outputs[0][0].startswith(f"# would remove {bus.unit_dir / 'quantbot-bus.service'}\n")
    assert outputs[0][1] == []  # the dry run ran nothing
    assert len(outputs[1][1]) == 3


@pytest.mark.parametrize(
    ("extra", "flag"),
    [
        (["--timer"], "--timer"),
        (["--interval", "5"], "--interval"),
        (["--config", "x.toml"], "--config"),
        (["--run-as", "daemon"], "--run-as"),
        (["--memory-max", "2G"], "--memory-max"),
        (["--force"], "--force"),
    ],
)
def test_uninstall_refuses_install_options(tmp_path: Path, extra: list[str], flag: str) -> None:
    bus = Bus(tmp_path)
    assert bus.install("--timer").exit_code == 0
    bus.calls()
    res = run_cli("install", "--uninstall", *extra, *bus.scope)
    assert (res.exit_code, res.stdout) == (2, "")
    assert res.stderr == (
        f"Error: --uninstall removes the units and takes no {flag} (only --user, --unit-dir, "
        "--systemctl and --dry-run)\n"
    )
    assert sorted(p.name for p in bus.unit_dir.iterdir()) == sorted(sd.UNIT_NAMES)
    assert bus.calls() == []
