"""The daemon's example config (daemon/quantbot-bus.example.toml) lists every setting."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from quantbot_bus.config import Config


def test_example_config_lists_every_key_with_its_default_and_env_name() -> None:
    import tomllib

    from quantbot_bus.config import load_config

    example = Path(__file__).parent.parent / "daemon" / "quantbot-bus.example.toml"
    text = example.read_text()
    keys = set(tomllib.loads(text))
    fields = {f.name for f in dataclasses.fields(Config) if not f.metadata} - {"exports"}
    assert keys == fields
    assert "[[exports]]" in text
    for name in fields:
        assert f"QUANTBOT_BUS_{name.upper()}" in text, name
    loaded = load_config(example, env={})
    for name in fields - {"root", "exports_dir", "state_dir"}:
        assert getattr(loaded, name) == getattr(Config(), name), name
