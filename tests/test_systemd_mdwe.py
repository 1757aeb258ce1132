"""MemoryDenyWriteExecute=yes: the kernel's own W^X switch (PR_SET_MDWE, Linux >= 6.3) stands in for
systemd's seccomp version, which cannot be applied without systemd as PID 1; the units' environment
lets polars run under it, and their ExecStart commands run as written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from builders import wait_for
from systemd_units import parse_unit, tmp_context

from quantbot_bus.ops import systemd as sd


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
