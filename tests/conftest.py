"""Shared fixtures: a temporary bus (artifacts root, exports, state) with real files."""

from __future__ import annotations

from pathlib import Path

import pytest

from quantbot_bus.config import Config


@pytest.fixture
def bus(tmp_path: Path) -> Config:
    """A Config for a fresh bus under tmp_path, with the three directories created."""
    cfg = Config(
        root=tmp_path / "artifacts",
        exports_dir=tmp_path / "exports",
        state_dir=tmp_path / "state",
    ).validate()
    for d in (cfg.root, cfg.exports_dir, cfg.state_dir):
        d.mkdir(parents=True)
    return cfg
