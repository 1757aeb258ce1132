"""`systemd install` and `uninstall` against a temporary unit directory with a recording stub in
place of systemctl (no systemd as PID 1 here), in the library and through the CLI; the config read
as the service will read it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from systemd_units import calls, parse_unit, stub_systemctl, write_config

from quantbot_bus.cli import main
from quantbot_bus.errors import ConfigError, InstallError
from quantbot_bus.ops import systemd as sd

# --- install / uninstall with a recording stub --------------------------------------------------


def test_install_writes_units_creates_dirs_and_runs_systemctl(tmp_path: Path) -> None:
    config_path = write_config(tmp_path / "bus")
    stub, log = stub_systemctl(tmp_path)
    unit_dir = tmp_path / "units"
    result = sd.install(config_path, unit_dir=unit_dir, systemctl=[str(stub)], run_as="root")
    assert calls(log) == [
        [str(stub), "daemon-reload"],
        [str(stub), "disable", "--now", "quantbot-bus-sync.timer"],
        [str(stub), "enable", "--now", "quantbot-bus.service"],
    ]
    assert sorted(p.name for p in unit_dir.iterdir()) == sorted(sd.UNIT_NAMES)
    expected = sd.render_units(
        sd.build_context(sd.load_service_config(config_path), config_path, run_as="root")
    )
    for name, content in expected.items():
        assert (unit_dir / name).read_text() == content
        assert stat.S_IMODE((unit_dir / name).stat().st_mode) == 0o644
        assert (unit_dir / name).read_text().startswith("# " + sd.MARKER)
    bus = tmp_path / "bus"
    assert result.created_dirs == [bus / "artifacts", bus / "state", bus / "exports"]
    assert all(d.is_dir() for d in result.created_dirs)
    assert any("PrivateTmp=no" in w for w in result.warnings)


def test_install_user_timer_mode(tmp_path: Path) -> None:
    config_path = write_config(tmp_path / "bus")
    stub, log = stub_systemctl(tmp_path)
    result = sd.install(
        config_path, user=True, unit_dir=tmp_path / "u", systemctl=[str(stub)], timer=True
    )
    assert calls(log) == [
        [str(stub), "--user", "daemon-reload"],
        [str(stub), "--user", "disable", "--now", "quantbot-bus.service"],
        [str(stub), "--user", "enable", "--now", "quantbot-bus-sync.timer"],
    ]
    assert (
        "User" not in parse_unit((tmp_path / "u" / "quantbot-bus.service").read_text())["Service"]
    )
    assert any("enable-linger" in n for n in result.notes)


def test_dry_run_writes_nothing_and_runs_nothing(tmp_path: Path) -> None:
    config_path = write_config(tmp_path / "bus")
    stub, log = stub_systemctl(tmp_path)
    unit_dir = tmp_path / "units"
    result = sd.install(
        config_path, unit_dir=unit_dir, systemctl=[str(stub)], dry_run=True, run_as="daemon"
    )
    assert not log.exists()
    assert not unit_dir.exists()
    assert not (tmp_path / "bus" / "state").exists()
    assert [u.path for u in result.units] == [unit_dir / n for n in sd.UNIT_NAMES]
    assert result.commands[0] == [str(stub), "daemon-reload"]


def test_cli_dry_run_prints_each_unit_path_and_content(tmp_path: Path) -> None:
    config_path = write_config(tmp_path / "bus")
    stub, log = stub_systemctl(tmp_path)
    unit_dir = tmp_path / "units"
    args = ["systemd", "install", "--dry-run", "--config", str(config_path)]
    args += ["--unit-dir", str(unit_dir), "--systemctl", str(stub), "--run-as", "root"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    units = sd.render_units(
        sd.build_context(sd.load_service_config(config_path), config_path, run_as="root")
    )
    expected = "".join(f"# {unit_dir / n}\n{c}\n" for n, c in units.items())
    expected += "".join(
        f"# would create {tmp_path / 'bus' / d}\n" for d in ("artifacts", "state", "exports")
    )
    expected += (
        f"# would run: {stub} daemon-reload\n"
        f"# would run: {stub} disable --now quantbot-bus-sync.timer\n"
        f"# would run: {stub} enable --now quantbot-bus.service\n"
    )
    assert res.stdout == expected
    assert "warning: PrivateTmp=no" in res.stderr
    assert not log.exists() and not unit_dir.exists()


def test_cli_install_then_uninstall(tmp_path: Path) -> None:
    config_path = write_config(tmp_path / "bus")
    stub, log = stub_systemctl(tmp_path)
    unit_dir = tmp_path / "units"
    common = ["--unit-dir", str(unit_dir), "--systemctl", str(stub)]
    res = CliRunner().invoke(
        main, ["systemd", "install", "--config", str(config_path), "--run-as", "root", *common]
    )
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[:3] == [f"wrote {unit_dir / n}" for n in sd.UNIT_NAMES]
    assert f"ran: {stub} enable --now quantbot-bus.service" in res.stdout.splitlines()
    (tmp_path / "bus" / "state" / "keep.txt").write_text("data")
    log.unlink()

    res = CliRunner().invoke(main, ["systemd", "uninstall", *common])
    assert res.exit_code == 0, res.output
    assert calls(log) == [
        [str(stub), "disable", "--now", "quantbot-bus.service", "quantbot-bus-sync.timer"],
        [str(stub), "stop", "quantbot-bus-sync.service"],
        [str(stub), "daemon-reload"],
    ]
    assert list(unit_dir.iterdir()) == []
    assert (tmp_path / "bus" / "state" / "keep.txt").read_text() == "data"  # data untouched
    assert res.stdout.splitlines()[:3] == [f"removed {unit_dir / n}" for n in sd.UNIT_NAMES]

    log.unlink()
    res = CliRunner().invoke(main, ["systemd", "uninstall", *common])
    assert res.exit_code == 0
    assert res.stdout == f"note: no quantbot-bus units in {unit_dir}: nothing to do\n"
    assert not log.exists()


def test_uninstall_dry_run(tmp_path: Path) -> None:
    config_path = write_config(tmp_path / "bus")
    stub, log = stub_systemctl(tmp_path)
    sd.install(config_path, unit_dir=tmp_path / "u", systemctl=[str(stub)], run_as="root")
    log.unlink()
    result = sd.uninstall(unit_dir=tmp_path / "u", systemctl=[str(stub)], dry_run=True)
    assert len(result.commands) == 3 and not log.exists()
    assert sorted(p.name for p in (tmp_path / "u").iterdir()) == sorted(sd.UNIT_NAMES)


def test_systemctl_failure_is_an_install_error_with_command_and_stderr(tmp_path: Path) -> None:
    config_path = write_config(tmp_path / "bus")
    stub, _ = stub_systemctl(tmp_path, fail_on="enable")
    with pytest.raises(InstallError) as info:
        sd.install(config_path, unit_dir=tmp_path / "u", systemctl=[str(stub)], run_as="root")
    message = str(info.value)
    assert f"`{stub} enable --now quantbot-bus.service` failed (exit 1)" in message
    assert "Failed to connect to bus: No such file or directory" in message
    assert str(tmp_path / "u") in message

    res = CliRunner().invoke(
        main,
        ["systemd", "install", "--config", str(config_path), "--unit-dir", str(tmp_path / "u")]
        + ["--systemctl", str(stub), "--run-as", "root"],
    )
    assert res.exit_code == 8
    assert "Failed to connect to bus" in res.stderr


def test_missing_systemctl_is_an_install_error(tmp_path: Path) -> None:
    config_path = write_config(tmp_path / "bus")
    with pytest.raises(InstallError, match="not found"):
        sd.install(
            config_path,
            unit_dir=tmp_path / "u",
            systemctl=[str(tmp_path / "no-systemctl")],
            run_as="root",
        )


def test_foreign_unit_files_are_never_overwritten_or_removed(tmp_path: Path) -> None:
    config_path = write_config(tmp_path / "bus")
    stub, log = stub_systemctl(tmp_path)
    unit_dir = tmp_path / "u"
    unit_dir.mkdir()
    mine = unit_dir / "quantbot-bus.service"
    mine.write_text("[Service]\nExecStart=/bin/true\n")
    with pytest.raises(InstallError, match="not written by quantbot-bus.*--force"):
        sd.install(config_path, unit_dir=unit_dir, systemctl=[str(stub)], run_as="root")
    with pytest.raises(InstallError, match="not written by quantbot-bus"):
        sd.uninstall(unit_dir=unit_dir, systemctl=[str(stub)])
    assert mine.read_text() == "[Service]\nExecStart=/bin/true\n" and not log.exists()
    sd.install(config_path, unit_dir=unit_dir, systemctl=[str(stub)], run_as="root", force=True)
    assert mine.read_text().startswith("# " + sd.MARKER)


def test_install_reads_the_config_as_the_service_will(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shell's QUANTBOT_BUS_* variables are ignored (the service never sees them), and the
    file's missing keys default relative to the config's directory (WorkingDirectory=)."""
    config_path = write_config(tmp_path / "bus", 'state_dir = "/srv/qb/state"\n')
    monkeypatch.setenv("QUANTBOT_BUS_ROOT", "/elsewhere")
    monkeypatch.chdir(tmp_path)
    result = sd.install(
        config_path, unit_dir=tmp_path / "u", systemctl=["true"], dry_run=True, run_as="daemon"
    )
    svc = parse_unit(result.units[0].content)["Service"]
    bus = tmp_path / "bus"
    assert svc["ReadOnlyPaths"] == [str(bus / "artifacts")]
    assert svc["ReadWritePaths"] == [f"/srv/qb/state {bus / 'exports'}"]
    assert svc["WorkingDirectory"] == [str(bus)]


def test_config_path_is_required(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QUANTBOT_BUS_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="needs a config file"):
        sd.resolve_config_path(None, env={}, cwd=tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        sd.resolve_config_path("nope.toml", env={}, cwd=tmp_path)
    path = write_config(tmp_path)
    assert sd.resolve_config_path(None, env={}, cwd=tmp_path) == path
    assert (
        sd.resolve_config_path(None, env={"QUANTBOT_BUS_CONFIG": str(path)}, cwd=Path("/")) == path
    )
    res = CliRunner().invoke(
        main, ["systemd", "install", "--dry-run", "--config", str(tmp_path / "x.toml")]
    )
    assert res.exit_code == 2 and "x.toml does not exist" in res.stderr


def test_default_run_as_is_the_owner_of_the_state_dir(tmp_path: Path) -> None:
    config_path = write_config(tmp_path / "bus")
    cfg = sd.load_service_config(config_path)
    import pwd

    me = pwd.getpwuid(os.geteuid()).pw_name
    assert sd.default_run_as(cfg, config_path) == me  # no state dir yet: the config's owner
    cfg.state_dir.mkdir()
    assert sd.default_run_as(cfg, config_path) == me
    result = sd.install(config_path, unit_dir=tmp_path / "u", systemctl=["true"], dry_run=True)
    assert f"User={me}" in result.units[0].content
    assert any("as root" in w for w in result.warnings) == (me == "root")


def test_default_unit_dirs() -> None:
    assert sd.default_unit_dir(False) == Path("/etc/systemd/system")
    assert sd.default_unit_dir(True, {"XDG_CONFIG_HOME": "/x/cfg"}) == Path("/x/cfg/systemd/user")
    home = Path(os.path.expanduser("~"))
    assert sd.default_unit_dir(True, {}) == home / ".config" / "systemd" / "user"
