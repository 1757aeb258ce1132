"""systemd units for the tests: rendered for real paths (a /srv layout, a bus under tmp_path),
linted by the real systemd-analyze, and a recording stub in place of systemctl (no systemd as PID 1
here)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from quantbot_bus.config import Config
from quantbot_bus.ops import systemd as sd

ANALYZE = shutil.which("systemd-analyze")


needs_analyze = pytest.mark.skipif(
    ANALYZE is None,
    reason="systemd-analyze is not installed (.ci/run installs the systemd package)",
)


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
