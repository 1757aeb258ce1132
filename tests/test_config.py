"""Config: defaults, TOML, environment and flags in that order; a bad field is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from quantbot_bus.config import Config, load_config
from quantbot_bus.errors import ConfigError
from quantbot_bus.user_exports import UserExport


def test_embedded_defaults_are_a_bus_in_the_current_directory(tmp_path: Path) -> None:
    cfg = load_config(env={}, cwd=tmp_path)
    assert cfg.root == tmp_path / "artifacts"
    assert cfg.exports_dir == tmp_path / "exports"
    assert cfg.state_dir == tmp_path / "state"
    assert cfg.catalog_path == tmp_path / "state" / "bus.duckdb"
    assert cfg.snapshot_path == tmp_path / "exports" / "bus.duckdb"
    assert cfg.exports == ()


def test_precedence_toml_then_env_then_flags(tmp_path: Path) -> None:
    conf = tmp_path / "etc" / "bus.toml"
    conf.parent.mkdir()
    conf.write_text(
        'root = "data"\nrescan_interval_s = 60\nlog_level = "debug"\n'
        '[[exports]]\nname = "best"\nsql = "SELECT 1"\nformat = "csv"\n'
    )
    env = {"QUANTBOT_BUS_RESCAN_INTERVAL_S": "30", "QUANTBOT_BUS_POLLING": "yes"}
    cfg = load_config(conf, env=env, overrides={"log_level": "warning"}, cwd=tmp_path)
    assert cfg.root == conf.parent / "data"  # relative to the TOML file
    assert cfg.rescan_interval_s == 30.0  # env beats TOML
    assert cfg.polling is True
    assert cfg.log_level == "warning"  # flag beats everything
    assert cfg.exports == (UserExport(name="best", sql="SELECT 1", format="csv"),)


def test_config_file_from_environment_variable(tmp_path: Path) -> None:
    conf = tmp_path / "x.toml"
    conf.write_text("max_batch = 7\n")
    assert load_config(env={"QUANTBOT_BUS_CONFIG": str(conf)}, cwd=tmp_path).max_batch == 7


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            "rescan_interval_s = -1",
            "config field 'rescan_interval_s' must be a number > 0, got -1.0",
        ),
        ("claim_lease_s = 0", "config field 'claim_lease_s' must be a number > 0, got 0.0"),
        ("claim_lease_s = inf", "config field 'claim_lease_s' must be a number > 0, got inf"),
        (
            "rescan_interval_s = nan",
            "config field 'rescan_interval_s' must be a number > 0, got nan",
        ),
        (
            "claim_lease_s = 0.2",
            "config field 'claim_lease_s' must be at least 1 (seconds), got 0.2",
        ),
        ("max_batch = 0", "config field 'max_batch' must be an integer >= 1, got 0"),
        ('max_batch = "many"', "config field 'max_batch' must be a int, got 'many'"),
        ('polling = "perhaps"', "config field 'polling' must be a bool, got 'perhaps'"),
        (
            'log_level = "loud"',
            "config field 'log_level' must be one of debug, info, warning, error",
        ),
        ('memory_limit = "lots"', "config field 'memory_limit' must be a size such as 512MB"),
        ("rootz = 1", "unknown config field 'rootz'"),
        (
            '[[exports]]\nname = "1bad"\nsql = "SELECT 1"',
            "config field 'exports[0].name' must match",
        ),
        (
            '[[exports]]\nname = "a\\n"\nsql = "SELECT 1"',  # a final newline: not a name
            "config field 'exports[0].name' must match",
        ),
        ('[[exports]]\nname = "a"\nsql = " "', "config field 'exports[0].sql' is empty"),
        (
            '[[exports]]\nname = "a"\nsql = "SELECT 1"\nformat = "xlsx"',
            "config field 'exports[0].format' must be parquet or csv, got 'xlsx'",
        ),
        (
            '[[exports]]\nname = "a"\nsql = "SELECT 1"\n[[exports]]\nname = "a"\nsql = "SELECT 2"',
            "config field 'exports[1].name' repeats the export name 'a'",
        ),
        (
            '[[exports]]\nname = "runs"\nsql = "SELECT 1"',
            "config field 'exports[0].name' is 'runs', the name of a built-in summary export",
        ),
        ("root = [", "is not valid TOML"),
    ],
)
def test_a_bad_field_is_named(tmp_path: Path, toml: str, message: str) -> None:
    conf = tmp_path / "bad.toml"
    conf.write_text(toml + "\n")
    with pytest.raises(ConfigError) as err:
        load_config(conf, env={}, cwd=tmp_path)
    assert message in str(err.value)


def test_bad_environment_value_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config field 'settle_ms' must be a float, got 'soon'"):
        load_config(env={"QUANTBOT_BUS_SETTLE_MS": "soon"}, cwd=tmp_path)


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", env={}, cwd=tmp_path)


def test_config_is_frozen() -> None:
    with pytest.raises(AttributeError):
        Config().root = Path("/elsewhere")  # type: ignore[misc]
