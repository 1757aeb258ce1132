"""Unknown keys in a config file: every one reported in one ConfigError, each with a
did-you-mean (top level, the sections, their sub-tables, ``[[exports]]``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from quantbot_bus.alerts.settings import parse_alert_settings
from quantbot_bus.config import load_config
from quantbot_bus.errors import ConfigError
from quantbot_bus.regress.settings import parse_regression_settings
from quantbot_bus.report.settings import parse_report_settings


def _error(tmp_path: Path, toml: str) -> str:
    conf = tmp_path / "bus.toml"
    conf.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_config(conf, env={}, cwd=tmp_path)
    assert err.value.exit_code == 2
    return str(err.value)


def test_every_unknown_top_level_key_is_named_with_a_suggestion(tmp_path: Path) -> None:
    message = _error(tmp_path, 'rot = "data"\nmax_bach = 10\nmax_batch = 5\n')
    assert message == (
        "unknown config fields: 'rot' (did you mean 'root'?), "
        "'max_bach' (did you mean 'max_batch'?)"
    )


def test_one_unknown_key(tmp_path: Path) -> None:
    assert _error(tmp_path, "pollling = true\n") == (
        "unknown config field 'pollling' (did you mean 'polling'?)"
    )


def test_unknown_keys_in_every_section_come_in_one_error(tmp_path: Path) -> None:
    message = _error(
        tmp_path,
        "rot = 'x'\n"
        "[regressions]\nbaseline_rns = 3\n"
        "[alerts]\ncheck_intervl_s = 5\n"
        "[alerts.rules]\nrun_faild = true\n"
        "[alerts.webhook]\nurll = 'https://example.com'\n"
        "[report]\nintervl_s = 60\n"
        "[[exports]]\nname = 'a'\nsql = 'SELECT 1'\nformt = 'csv'\n",
    )
    assert message == (
        "unknown config fields: 'rot' (did you mean 'root'?), "
        "'regressions.baseline_rns' (did you mean 'regressions.baseline_runs'?), "
        "'alerts.check_intervl_s' (did you mean 'alerts.check_interval_s'?), "
        "'alerts.rules.run_faild' (did you mean 'alerts.rules.run_failed'?), "
        "'alerts.webhook.urll' (did you mean 'alerts.webhook.url'?), "
        "'report.intervl_s' (did you mean 'report.interval_s'?), "
        "'exports[0].formt' (did you mean 'exports[0].format'?)"
    )


def test_unknown_keys_come_before_bad_values(tmp_path: Path) -> None:
    message = _error(tmp_path, 'max_batch = "many"\nrot = 1\n[report]\ninterval_s = -1\n')
    assert message == "unknown config field 'rot' (did you mean 'root'?)"


def test_a_key_like_no_known_one_lists_the_known_keys(tmp_path: Path) -> None:
    assert _error(tmp_path, "[report]\nzzz = 1\n") == (
        "unknown config field 'report.zzz' (known: enabled, interval_s)"
    )


@pytest.mark.parametrize(
    ("parse", "raw", "message"),
    [
        (
            parse_regression_settings,
            {"enabld": False, "confidance": 0.9},
            "unknown config fields: 'regressions.enabld' (did you mean 'regressions.enabled'?), "
            "'regressions.confidance' (did you mean 'regressions.confidence'?)",
        ),
        (
            parse_alert_settings,
            {"jsonll": True, "command": {"argvv": ["x"]}},
            "unknown config fields: 'alerts.jsonll' (did you mean 'alerts.jsonl'?), "
            "'alerts.command.argvv' (did you mean 'alerts.command.argv'?)",
        ),
        (
            parse_report_settings,
            {"enable": True, "interval": 5},
            "unknown config fields: 'report.enable' (did you mean 'report.enabled'?), "
            "'report.interval' (did you mean 'report.interval_s'?)",
        ),
    ],
)
def test_each_section_parser_reports_all_its_unknown_keys(
    parse: Any, raw: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        parse(raw)
    assert str(err.value) == message


def test_unknown_environment_variables_are_ignored(tmp_path: Path) -> None:
    """QUANTBOT_BUS_* is also the prefix of variables that are not config keys
    (QUANTBOT_BUS_CONFIG, the test suite's QUANTBOT_BUS_SOAK): only known keys are read."""
    env = {"QUANTBOT_BUS_ROOTZ": "elsewhere", "QUANTBOT_BUS_MAX_BATCH": "7"}
    cfg = load_config(env=env, cwd=tmp_path)
    assert (cfg.root, cfg.max_batch) == (tmp_path / "artifacts", 7)
