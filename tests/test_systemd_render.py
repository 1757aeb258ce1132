"""systemd units: what the rendered units say (daemon, sync service and timer, the user variant,
sandbox choices, scale-out), the unsafe values refused, and the repository's examples and
docs/operations.md kept current."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from systemd_units import (
    needs_analyze,
    parse_unit,
    render_to,
    srv_context,
    tmp_context,
    verify,
    write_config,
)

from quantbot_bus.config import Config
from quantbot_bus.errors import InstallError
from quantbot_bus.ops import systemd as sd
from quantbot_bus.ops.systemd.render import _template

REPO = Path(__file__).resolve().parent.parent


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
    with pytest.raises(InstallError, match="not a systemd size"):  # a newline in a unit file
        sd.build_context(cfg, Path("/srv/c.toml"), executable=exe, run_as="x", memory_max="4G\n")
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


# --- the repository's examples and docs ----------------------------------------------------------


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


# --- scale-out ----------------------------------------------------------------------------------


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


@needs_analyze
def test_a_webhook_gives_the_units_tcp_and_nothing_else_changes(tmp_path: Path) -> None:
    """A config with ``[alerts.webhook] url``: the daemon's and the timer's sync units may open
    TCP sockets (the POST), the rest of the sandbox stays; without a url (or with alerts off)
    they have no network at all. The units still verify."""
    import sys

    from quantbot_bus.config import load_config

    body = 'root = "{root}"\n\n[alerts]\nenabled = {on}\n\n[alerts.webhook]\nurl = "{url}"\n'
    rendered = {}
    for case, on, url in (
        ("webhook", "true", "http://hooks.example:8080/bus"),
        ("no-url", "true", ""),
        ("off", "false", "http://hooks.example:8080/bus"),
    ):
        root = tmp_path / case / "artifacts"
        root.mkdir(parents=True)
        path = write_config(tmp_path / case, body.format(root=root, on=on, url=url))
        config = load_config(path)
        ctx = sd.build_context(config, path, user=True, executable=Path(sys.executable))
        here = str(tmp_path / case)  # the paths differ by case: compare the rest
        rendered[case] = {n: t.replace(here, "CASE") for n, t in sd.render_units(ctx).items()}
        result = verify(render_to(tmp_path / case / "units", ctx), user=True, tmp=tmp_path)
        assert result.returncode == 0, result.stderr
    for name in ("quantbot-bus.service", "quantbot-bus-sync.service"):
        hook = parse_unit(rendered["webhook"][name])["Service"]
        assert hook["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"], name
        assert "PrivateNetwork" not in hook and "IPAddressDeny" not in hook, name
        for case in ("no-url", "off"):
            closed = parse_unit(rendered[case][name])["Service"]
            assert closed["PrivateNetwork"] == ["yes"], (case, name)
            assert closed["RestrictAddressFamilies"] == ["AF_UNIX"], (case, name)
            same = {k: v for k, v in closed.items() if k not in _NETWORK_KEYS}
            assert same == {k: v for k, v in hook.items() if k not in _NETWORK_KEYS}, (case, name)


_NETWORK_KEYS = {"PrivateNetwork", "IPAddressDeny", "RestrictAddressFamilies", "ReadOnlyPaths"}
