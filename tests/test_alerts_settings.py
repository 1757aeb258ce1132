"""Alert settings: no ``[alerts]`` section, the documented example (the one docs/alerts.md
shows), and every bad field named in its ``ConfigError``."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from quantbot_bus.alerts import AlertSettings, parse_alert_settings
from quantbot_bus.alerts.settings import RULES
from quantbot_bus.errors import ConfigError

EXAMPLE_TOML = """
[alerts]
enabled = true
check_interval_s = 15
disk_min_free_percent = 7.5
disk_min_free_bytes = 2147483648
stalled_after_s = 1200
failed_window_s = 3600
regression_window_s = 86400
max_items = 50
repeat_after_s = 3600
min_interval_s = 120
max_per_minute = 10
log = true
jsonl = true

[alerts.rules]
regression = false
disk_low = true

[alerts.webhook]
url = "https://hooks.example.com/quantbot"
timeout_s = 3
retries = 5
backoff_s = 0.5
max_backoff_s = 20
queue_size = 200
headers = { Authorization = "Bearer x" }

[alerts.command]
argv = ["./notify.sh", "--json"]
timeout_s = 4
"""


def test_no_section_means_log_and_jsonl_with_every_rule() -> None:
    s = parse_alert_settings(None)
    assert s == AlertSettings()
    assert s.enabled and s.log and s.jsonl
    assert s.rules == RULES
    assert not s.webhook.enabled and not s.command.enabled


def test_the_documented_example_parses(tmp_path: Path) -> None:
    s = parse_alert_settings(tomllib.loads(EXAMPLE_TOML)["alerts"], base=tmp_path)
    assert s.check_interval_s == 15.0 and s.disk_min_free_percent == 7.5
    assert s.disk_min_free_bytes == 2 << 30 and s.max_items == 50 and s.max_per_minute == 10
    assert "regression" not in s.rules and "disk_low" in s.rules and "stalled" in s.rules
    assert s.webhook.url == "https://hooks.example.com/quantbot" and s.webhook.retries == 5
    assert s.webhook.headers == (("Authorization", "Bearer x"),)
    assert s.command.argv == (str(tmp_path / "notify.sh"), "--json")  # relative to the file
    assert s.command.timeout_s == 4.0


def test_the_docs_example_is_the_tested_one() -> None:
    """docs/alerts.md shows the TOML this file tests (so the doc cannot drift from the parser)."""
    doc = (Path(__file__).parent.parent / "docs" / "alerts.md").read_text(encoding="utf-8")
    assert EXAMPLE_TOML.strip() in doc


@pytest.mark.parametrize(
    ("raw", "field", "needle"),
    [
        ({"check_interval_s": 0}, "alerts.check_interval_s", "must be a number > 0, got 0"),
        ({"check_interval_s": True}, "alerts.check_interval_s", "got True"),
        ({"disk_min_free_percent": 101}, "alerts.disk_min_free_percent", "from 0 to 100"),
        ({"max_per_minute": 0}, "alerts.max_per_minute", "integer >= 1"),
        ({"log": "yes"}, "alerts.log", "true or false"),
        ({"nope": 1}, "alerts.nope", "unknown config field"),
        ({"rules": {"run_failed": 1}}, "alerts.rules.run_failed", "true or false"),
        ({"rules": {"typo": True}}, "alerts.rules.typo", "unknown"),
        ({"webhook": {"url": "ftp://x"}}, "alerts.webhook.url", "http:// or https://"),
        ({"webhook": {"timeout_s": 0}}, "alerts.webhook.timeout_s", "must be a number > 0, got 0"),
        ({"webhook": {"retries": -1}}, "alerts.webhook.retries", "integer >= 0"),
        ({"webhook": {"headers": {"X": "a\nb"}}}, "alerts.webhook.headers.X", "one-line"),
        ({"webhook": "http://x"}, "alerts.webhook", "must be a table"),
        ({"command": {"argv": "notify"}}, "alerts.command.argv", "array of strings"),
        ({"command": {"timeout_s": -1}}, "alerts.command.timeout_s", "> 0"),
    ],
)
def test_every_bad_field_is_named(raw: dict[str, Any], field: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_alert_settings(raw)
    assert f"'{field}'" in str(err.value) and needle in str(err.value)
