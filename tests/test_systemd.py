"""systemd units: rendered for real paths, linted by the real systemd-analyze, installed against a
temporary unit directory with a recording stub in place of systemctl (no systemd as PID 1 here)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from builders import wait_for
from click.testing import CliRunner

from quantbot_bus.cli import main
from quantbot_bus.config import Config
from quantbot_bus.errors import ConfigError, InstallError
from quantbot_bus.ops import systemd as sd
from quantbot_bus.ops.systemd.render import _template

REPO = Path(__file__).resolve().parent.parent
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None,
    reason="systemd-analyze is not installed (.ci/run installs the systemd package)",
)


# --- helpers ----------------------------------------------------------------------------------


def write_config(directory: Path, body: str | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "quantbot-bus.toml"
    path.write_text(
        body
        if body is not None
        else 'root = "artifacts"\nstate_dir = "state"\nexports_dir = "exports"\n'
    )
    return path


def stub_systemctl(directory: Path, *, fail_on: str | None = None) -> tuple[Path, Path]:
    """A systemctl stand-in: appends its argv ($0 first, tab-separated) to a log, a line a call.

    With ``fail_on``, a call whose arguments contain that word prints an error and exits 1.
    """
    log = directory / "systemctl.log"
    script = directory / "systemctl-stub"
    fail = ""
    if fail_on:
        fail = (
            f'case " $* " in *" {fail_on} "*) '
            'echo "Failed to connect to bus: No such file or directory" >&2; exit 1;; esac\n'
        )
    script.write_text(
        f'#!/bin/sh\n(IFS="$(printf \'\\t\')"; set -- "$0" "$@"; echo "$*") >> \'{log}\'\n'
        + fail
        + "exit 0\n"
    )
    script.chmod(0o755)
    return script, log


def calls(log: Path) -> list[list[str]]:
    if not log.exists():
        return []
    return [line.split("\t") for line in log.read_text().splitlines()]


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """{section: {key: [values in order]}} (systemd allows a key more than once)."""
    sections: dict[str, dict[str, list[str]]] = {"": {}}
    current = sections[""]
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key, []).append(value)
    return sections


def analyze(*args: str, user: bool, tmp: Path) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    env = dict(os.environ)
    if user:
        # The user manager needs a runtime dir; there is no logged-in session here.
        runtime = tmp / "xdg-runtime"
        runtime.mkdir(mode=0o700, exist_ok=True)
        env["XDG_RUNTIME_DIR"] = str(runtime)
    scope = ["--user"] if user else []
    return subprocess.run(
        [ANALYZE, *scope, *args], capture_output=True, text=True, env=env, timeout=60
    )


def verify(paths: list[Path], *, user: bool, tmp: Path) -> subprocess.CompletedProcess[str]:
    return analyze(
        "verify", "--man=no", "--recursive-errors=no", *map(str, paths), user=user, tmp=tmp
    )


def render_to(directory: Path, ctx: sd.UnitContext) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, content in sd.render_units(ctx).items():
        (directory / name).write_text(content)
        paths.append(directory / name)
    return paths


def srv_context(user: bool, **changes: object) -> sd.UnitContext:
    """The units for a production-like layout under /srv, with the real installed executable."""
    exe = sd.find_executable()
    cfg = Config(
        root=Path("/srv/qb/artifacts"),
        exports_dir=Path("/srv/qb/exports"),
        state_dir=Path("/srv/qb/state"),
    )
    ctx = sd.build_context(
        cfg, Path("/srv/qb/quantbot-bus.toml"), user=user, executable=exe, run_as="daemon"
    )
    return dataclasses.replace(ctx, **changes)  # type: ignore[arg-type]


def tmp_context(tmp_path: Path, user: bool) -> sd.UnitContext:
    """The units for a bus under tmp_path (PrivateTmp=no variant), via the config file."""
    config_path = write_config(tmp_path / "bus")
    cfg = sd.load_service_config(config_path)
    return sd.build_context(cfg, config_path, user=user, run_as="daemon")


def service_to_run(
    tmp_path: Path, unit: str
) -> tuple[sd.UnitContext, dict[str, str], dict[str, list[str]]]:
    """The (system) units of a bus under tmp_path, its directories made, and the [Service]
    section of ``unit``: what it takes to run that unit's ExecStart as written."""
    ctx = tmp_context(tmp_path, user=False)
    units = sd.render_units(ctx)
    for d in (ctx.root, ctx.state_dir, ctx.exports_dir):
        d.mkdir(parents=True)
    return ctx, units, parse_unit(units[unit])["Service"]


LAYOUTS = ["srv", "tmp"]


def context_for(layout: str, tmp_path: Path, user: bool) -> sd.UnitContext:
    return srv_context(user) if layout == "srv" else tmp_context(tmp_path, user)


# --- systemd-analyze ----------------------------------------------------------------------------


@needs_analyze
@pytest.mark.parametrize("user", [False, True], ids=["system", "user"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_rendered_unit_verifies_without_any_output(
    tmp_path: Path, user: bool, layout: str
) -> None:
    paths = render_to(tmp_path / "units", context_for(layout, tmp_path, user))
    assert [p.name for p in paths] == list(sd.UNIT_NAMES)
    for path in paths:  # one at a time, so a message names its file
        proc = verify([path], user=user, tmp=tmp_path)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", ""), path.read_text()


@needs_analyze
@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("ProtectSystem=strict", "ProtectSytem=strict"),  # a typo: exit 0, only a warning
        ("Type=notify", "Type=notfy"),
        ("WatchdogSec=120s", "WatchdogSec=sixty"),
    ],
)
def test_verify_harness_catches_a_broken_unit(tmp_path: Path, old: str, new: str) -> None:
    """The lint above can fail: a typo in a directive produces output (and maybe exit 0)."""
    units = sd.render_units(srv_context(user=False))
    broken = units["quantbot-bus.service"].replace(old, new)
    assert broken != units["quantbot-bus.service"]
    path = tmp_path / "quantbot-bus.service"
    path.write_text(broken)
    proc = verify([path], user=False, tmp=tmp_path)
    assert proc.stdout + proc.stderr != ""


@needs_analyze
def test_verify_needs_the_executable_to_exist(tmp_path: Path) -> None:
    ctx = srv_context(user=False, executable=tmp_path / "no-such-quantbot-bus")
    path = render_to(tmp_path / "units", ctx)[0]
    proc = verify([path], user=False, tmp=tmp_path)
    assert "no-such-quantbot-bus" in proc.stdout + proc.stderr


def exposure(unit: Path, *, user: bool, tmp: Path) -> float:
    proc = analyze("security", "--offline=yes", str(unit), user=user, tmp=tmp)
    assert proc.returncode == 0, proc.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", proc.stdout)
    assert match, proc.stdout
    return float(match.group(1))


@needs_analyze
@pytest.mark.parametrize("user", [False, True], ids=["system", "user"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_security_exposure_is_at_most_2(tmp_path: Path, user: bool, layout: str) -> None:
    paths = render_to(tmp_path / "units", context_for(layout, tmp_path, user))
    for path in paths:
        if path.suffix != ".service":
            continue
        level = exposure(path, user=user, tmp=tmp_path)
        assert level <= 2.0, f"{path.name}: exposure {level}"


@needs_analyze
def test_security_score_reacts_to_the_sandbox(tmp_path: Path) -> None:
    """The exposure parse is real: stripping the sandbox makes the score much worse."""
    units = sd.render_units(srv_context(user=False))
    stripped = "\n".join(
        line
        for line in units["quantbot-bus.service"].splitlines()
        if not line.startswith(("Protect", "Private", "SystemCall", "Restrict", "Capability"))
    )
    path = tmp_path / "quantbot-bus.service"
    path.write_text(stripped + "\n")
    assert exposure(path, user=False, tmp=tmp_path) > 5.0


# --- what the units say ----------------------------------------------------------------------


def test_daemon_unit_has_the_required_settings(tmp_path: Path) -> None:
    ctx = tmp_context(tmp_path, user=False)
    units = sd.render_units(ctx)
    svc = parse_unit(units["quantbot-bus.service"])["Service"]
    bus = tmp_path / "bus"
    assert svc["Type"] == ["notify"]
    assert svc["NotifyAccess"] == ["main"]
    assert svc["WatchdogSec"] == ["120s"]
    assert svc["Restart"] == ["on-failure"]
    assert svc["ExecStart"] == [f"{ctx.executable} daemon --config {bus / 'quantbot-bus.toml'}"]
    assert ctx.executable == sd.find_executable()
    assert svc["WorkingDirectory"] == [str(bus)]
    assert svc["ReadWritePaths"] == [f"{bus / 'state'} {bus / 'exports'}"]
    assert svc["ReadOnlyPaths"] == [str(bus / "artifacts")]
    assert svc["Environment"] == ["POLARS_SKIP_CPU_CHECK=1"]
    assert svc["User"] == ["daemon"]
    for key, value in {
        "ProtectSystem": "strict",
        "PrivateDevices": "yes",
        "PrivateNetwork": "yes",
        "RestrictAddressFamilies": "AF_UNIX",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "UMask": "0027",
        "MemoryDenyWriteExecute": "yes",
        "MemoryMax": "4G",
        "SystemCallArchitectures": "native",
        "ProtectProc": "invisible",
        "ProcSubset": "pid",
    }.items():
        assert svc[key] == [value], key
    assert svc["SystemCallFilter"][0] == "@system-service"
    # the bus lives under /tmp (PrivateTmp would hide it); the interpreter under /root here
    assert svc["PrivateTmp"] == ["no"]
    assert parse_unit(units["quantbot-bus.service"])["Install"]["WantedBy"] == ["multi-user.target"]
    assert (
        "quantbot-bus-sync.timer"
        in parse_unit(units["quantbot-bus.service"])["Unit"]["Conflicts"][0]
    )


def test_sync_units(tmp_path: Path) -> None:
    ctx = tmp_context(tmp_path, user=False)
    units = sd.render_units(ctx)
    daemon = parse_unit(units["quantbot-bus.service"])["Service"]
    sync = parse_unit(units["quantbot-bus-sync.service"])["Service"]
    assert sync["Type"] == ["oneshot"]
    assert sync["ExecStart"] == [
        f"{ctx.executable} sync --config {tmp_path / 'bus' / 'quantbot-bus.toml'}"
    ]
    assert "WatchdogSec" not in sync and "Restart" not in sync
    text = _template("hardening.conf").template
    fixed = "\n".join(ln for ln in text.splitlines() if not ln.startswith("${"))
    # the lines the backend chooses (network, what is read) are rendered in both units alike
    sandbox = set(parse_unit(fixed)[""].keys()) | {"ReadOnlyPaths", "PrivateNetwork"}
    assert len(sandbox) > 20, "hardening.conf parsed to nothing"
    for key in sandbox:  # the same sandbox, value for value
        assert sync[key] == daemon[key], key
    timer = parse_unit(units["quantbot-bus-sync.timer"])
    assert timer["Timer"] == {
        "OnBootSec": ["5min"],
        "OnUnitActiveSec": ["5min"],
        "AccuracySec": ["30s"],
    }
    assert timer["Install"]["WantedBy"] == ["timers.target"]


def test_user_variant_drops_what_a_user_manager_cannot_do(tmp_path: Path) -> None:
    system = sd.render_units(tmp_context(tmp_path, user=False))
    user = sd.render_units(tmp_context(tmp_path, user=True))
    for name in ("quantbot-bus.service", "quantbot-bus-sync.service"):
        sys_keys = set(parse_unit(system[name])["Service"])
        user_keys = set(parse_unit(user[name])["Service"])
        assert sd.SYSTEM_ONLY & sys_keys == sd.SYSTEM_ONLY - {"Group", "DynamicUser", "RemoveIPC"}
        assert not (sd.SYSTEM_ONLY & user_keys)
        assert sys_keys - user_keys == sd.SYSTEM_ONLY & sys_keys
        assert parse_unit(user[name])["Service"]["PrivateUsers"] == ["yes"]
    assert parse_unit(user["quantbot-bus.service"])["Install"]["WantedBy"] == ["default.target"]
    assert "systemctl --user edit" in user["quantbot-bus.service"]


def test_sandbox_choices_follow_the_paths() -> None:
    srv = {"root": Path("/srv/a"), "exe": Path("/opt/venv/bin/quantbot-bus")}
    assert sd.sandbox_choices(srv)[0::2] == ("yes", "yes")
    home = {**srv, "the Python interpreter": Path("/home/ana/.venv/bin/python")}
    protect_home, why, private_tmp, _ = sd.sandbox_choices(home)
    assert (protect_home, private_tmp) == ("read-only", "yes")
    assert "the Python interpreter (/home/ana/.venv/bin/python) is under /home" in why
    assert sd.sandbox_choices({**srv, "root": Path("/root/data")})[0] == "read-only"
    tmp = {**srv, "state": Path("/var/tmp/qb/state")}
    assert sd.sandbox_choices(tmp)[2] == "no"
    assert sd.sandbox_choices({"x": Path("/tmpfoo/x"), "y": Path("/homework")})[0::2] == (
        "yes",
        "yes",
    )


def test_needed_paths_follow_the_shebang(tmp_path: Path) -> None:
    exe = tmp_path / "quantbot-bus"
    exe.write_text("#!/home/ana/venv/bin/python3\nprint('hi')\n")
    exe.chmod(0o755)
    paths = sd.needed_paths(
        exe, Path("/srv/c.toml"), Path("/srv/r"), Path("/srv/s"), Path("/srv/e")
    )
    assert paths["the Python interpreter"] == Path("/home/ana/venv/bin/python3")
    assert sd.sandbox_choices(paths)[0] == "read-only"


@needs_analyze
def test_percent_in_a_path_is_escaped_and_still_verifies(tmp_path: Path) -> None:
    ctx = srv_context(user=False, state_dir=Path("/srv/qb/state-100%"))
    units = sd.render_units(ctx)
    assert "ReadWritePaths=/srv/qb/state-100%% /srv/qb/exports" in units["quantbot-bus.service"]
    paths = render_to(tmp_path / "units", ctx)
    proc = verify(paths[:1], user=False, tmp=tmp_path)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


@pytest.mark.parametrize("bad", ["/srv/my data", "/srv/a;b", "/srv/$HOME", '/srv/"q"', "/srv/a\\b"])
def test_unsafe_paths_are_refused_with_the_field_name(bad: str) -> None:
    ctx = srv_context(user=False, root=Path(bad))
    with pytest.raises(InstallError, match=r"root .* cannot carry safely"):
        sd.render_units(ctx)


def test_bad_memory_max_and_user_name() -> None:
    exe = sd.find_executable()
    cfg = Config(root=Path("/srv/r"), exports_dir=Path("/srv/e"), state_dir=Path("/srv/s"))
    with pytest.raises(InstallError, match="not a systemd size"):
        sd.build_context(cfg, Path("/srv/c.toml"), executable=exe, run_as="x", memory_max="lots")
    with pytest.raises(InstallError, match="not a valid user name"):
        sd.render_units(srv_context(user=False, run_as="bad user"))


def test_examples_in_the_repository_are_the_current_render() -> None:
    """systemd/ holds the templates rendered for the example layout; regenerate with
    `.venv/bin/python -m quantbot_bus.ops.systemd examples systemd`."""
    for rel, content in sd.example_units().items():
        path = REPO / "systemd" / rel
        assert path.exists(), (
            f"missing {path}: run python -m quantbot_bus.ops.systemd examples systemd"
        )
        assert path.read_text() == content, (
            f"{path} is out of date: run python -m quantbot_bus.ops.systemd examples systemd"
        )


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


def test_operations_doc_covers_every_config_key_and_exit_code() -> None:
    """docs/operations.md's reference tables are checked against config.py and errors.py."""
    from quantbot_bus.config import ENV_PREFIX
    from quantbot_bus.errors import EXIT_CODES

    doc = (REPO / "docs" / "operations.md").read_text()
    defaults = Config()
    for f in dataclasses.fields(Config):
        if f.metadata:  # derived (object_root from root): not a key of its own
            continue
        if f.name == "exports":
            assert "| `[[exports]]` | (TOML only) |" in doc
            continue
        value = getattr(defaults, f.name)
        if isinstance(value, Path):
            accepted = {f"./{value}"}
        elif isinstance(value, bool):
            accepted = {str(value).lower()}
        elif isinstance(value, int | float):
            accepted = {str(value), f"{value:g}"}
        else:
            accepted = {str(value)}
        row = f"| `{f.name}` | `{ENV_PREFIX}{f.name.upper()}` | "
        assert row in doc, f"docs/operations.md lacks the row for {f.name}"
        cell = doc.split(row, 1)[1].split(" |", 1)[0].strip("`")
        assert cell in accepted, f"{f.name}: the doc says {cell}, config.py {value!r}"
    for cls, code in EXIT_CODES.items():
        assert re.search(rf"^\| {code} \| [^|]*`{cls.__name__}`", doc, re.M), cls.__name__


# --- MemoryDenyWriteExecute: the kernel's own W^X switch (PR_SET_MDWE, Linux >= 6.3) stands in for
# --- systemd's seccomp version, which cannot be applied without systemd as PID 1.

MDWE_EXEC = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit(f"PR_SET_MDWE unsupported: {os.strerror(ctypes.get_errno())}")
os.execv(sys.argv[1], sys.argv[1:])
"""


def unit_environment(unit_text: str) -> dict[str, str]:
    env = {}
    for value in parse_unit(unit_text)["Service"].get("Environment", []):
        key, _, val = value.partition("=")
        env[key] = val
    return env


def run_mdwe(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    probe = subprocess.run(
        [sys.executable, "-c", MDWE_EXEC, "/bin/true"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        pytest.skip(f"the kernel has no PR_SET_MDWE: {probe.stderr.strip()}")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("POLARS_", "QUANTBOT_BUS_"))}
    return subprocess.run(
        [sys.executable, "-c", MDWE_EXEC, *argv],
        capture_output=True,
        text=True,
        env={**base, **env},
        cwd=cwd,
        timeout=120,
    )


POLARS_AND_DUCKDB = (
    "import polars as pl, duckdb; "
    "assert pl.DataFrame({'a': [1, 2]}).select(pl.col('a').sum()).item() == 3; "
    "assert duckdb.sql('select 42').fetchall() == [(42,)]"
)


def test_the_unit_environment_lets_polars_run_without_writable_executable_memory(
    tmp_path: Path,
) -> None:
    units = sd.render_units(tmp_context(tmp_path, user=False))
    env = unit_environment(units["quantbot-bus.service"])
    assert env == {"POLARS_SKIP_CPU_CHECK": "1"}
    ok = run_mdwe([sys.executable, "-c", POLARS_AND_DUCKDB], env, tmp_path)
    assert ok.returncode == 0, ok.stderr
    without = run_mdwe([sys.executable, "-c", POLARS_AND_DUCKDB], {}, tmp_path)
    assert without.returncode != 0 and "mprotect" in without.stderr  # why the unit sets it


def test_the_sync_units_command_runs_under_mdwe(tmp_path: Path) -> None:
    """ExecStart of quantbot-bus-sync.service, run as written (cwd, env) under W^X."""
    ctx, units, svc = service_to_run(tmp_path, "quantbot-bus-sync.service")
    proc = run_mdwe(
        svc["ExecStart"][0].split(),
        unit_environment(units["quantbot-bus-sync.service"]),
        Path(svc["WorkingDirectory"][0]),
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["registered"] == 0
    assert ctx.state_dir.joinpath("bus.duckdb").is_file()
    assert ctx.exports_dir.joinpath("bus.duckdb").is_file()


def test_the_daemon_units_command_starts_and_stops_under_mdwe(tmp_path: Path) -> None:
    """ExecStart of quantbot-bus.service as written (cwd, env, W^X): ready, then a clean SIGTERM."""
    import signal

    from quantbot_bus.daemon.status import StatusMissingError, read_status

    ctx, units, svc = service_to_run(tmp_path, "quantbot-bus.service")
    probe = run_mdwe(["/bin/true"], {}, tmp_path)
    assert probe.returncode == 0
    base = {k: v for k, v in os.environ.items() if not k.startswith(("POLARS_", "QUANTBOT_BUS_"))}
    proc = subprocess.Popen(
        [sys.executable, "-c", MDWE_EXEC, *svc["ExecStart"][0].split()],
        env={**base, **unit_environment(units["quantbot-bus.service"])},
        cwd=svc["WorkingDirectory"][0],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )

    def running() -> bool:
        if proc.poll() is not None:
            assert proc.stderr is not None
            raise AssertionError(f"the daemon exited with {proc.returncode}: {proc.stderr.read()}")
        try:
            return read_status(ctx.state_dir / "status.json").get("state") == "running"
        except StatusMissingError:
            return False

    try:
        wait_for(running, "the daemon to report state running")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert '"event": "daemon.stopped"' in err


def test_scale_out_units_reach_the_network_and_read_credentials_from_a_file(tmp_path: Path) -> None:
    """catalog = "iceberg": TCP to the object store and PostgreSQL, no local root to read, the
    AWS_* settings from quantbot-bus.env beside the config; the local sandbox keeps no network."""
    local = tmp_context(tmp_path, user=False)
    scale = dataclasses.replace(local, scale_out=True)
    for name in ("quantbot-bus.service", "quantbot-bus-sync.service"):
        lo = parse_unit(sd.render_units(local)[name])["Service"]
        so = parse_unit(sd.render_units(scale)[name])["Service"]
        assert lo["PrivateNetwork"] == ["yes"] and lo["RestrictAddressFamilies"] == ["AF_UNIX"]
        assert lo["ReadOnlyPaths"] == [str(local.root)] and "EnvironmentFile" not in lo
        assert "PrivateNetwork" not in so and "IPAddressDeny" not in so
        assert so["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
        assert so["EnvironmentFile"] == [f"{local.workdir}/quantbot-bus.env"]
        assert "ReadOnlyPaths" not in so
