"""systemd units linted by the real systemd-analyze: every rendered unit verifies without any
output, the harness catches a broken unit, and each service's security exposure is at most 2."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from systemd_units import analyze, needs_analyze, render_to, srv_context, tmp_context, verify

from quantbot_bus.ops import systemd as sd

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
