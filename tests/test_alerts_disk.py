"""The ``disk_low`` rule on the real filesystem: by threshold, and on a real small tmpfs filled
then emptied (fires once, resolves)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from alerts_inputs import only

from quantbot_bus.alerts import Alerter, evaluate, gather_facts
from quantbot_bus.config import Config


def test_disk_low_by_threshold(bus: Config) -> None:
    """Every free percentage is below 100: the rule fires on the real filesystem."""
    settings = only("disk_low", disk_min_free_percent=100.0)
    facts = gather_facts(bus, settings, None)
    conditions = evaluate(facts, settings).active
    assert conditions and all(c.key.startswith("disk_low:") for c in conditions)
    assert len(conditions) == len(
        {os.stat(d).st_dev for d in (bus.root, bus.state_dir, bus.exports_dir)}
    )
    assert str(bus.root) in conditions[0].details["paths"]
    never = only("disk_low", disk_min_free_percent=0.0, disk_min_free_bytes=0)
    assert evaluate(gather_facts(bus, never, None), never).active == ()


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB tmpfs (we are root here), unmounted after the test."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({done.stderr.strip()}); test_disk_low_by_threshold covers the rule"
        )
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_low_on_a_full_tmpfs_fires_once_and_resolves(tmp_path: Path, small_fs: Path) -> None:
    cfg = Config(
        root=tmp_path / "artifacts", exports_dir=tmp_path / "exports", state_dir=small_fs / "state"
    ).validate()
    settings = only("disk_low", disk_min_free_percent=20.0, disk_min_free_bytes=0, min_interval_s=0)
    alerter = Alerter(settings, tmp_path / "alerts.json", tmp_path / "alerts.jsonl")
    assert alerter.check(gather_facts(cfg, settings, None)) == []
    filler = small_fs / "filler"
    filler.write_bytes(b"\0" * (1900 * 1024))
    [fired] = alerter.check(gather_facts(cfg, settings, None))
    assert fired.key == f"disk_low:{cfg.state_dir}" and fired.status == "firing"
    assert fired.details["free_percent"] < 20 and fired.details["total_bytes"] == 2 << 20
    assert alerter.check(gather_facts(cfg, settings, None)) == []  # once per condition
    filler.unlink()
    [resolved] = alerter.check(gather_facts(cfg, settings, None))
    assert (resolved.key, resolved.status) == (fired.key, "resolved")
