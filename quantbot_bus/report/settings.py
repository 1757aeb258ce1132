"""The ``[report]`` section of the config: whether and how often the daemon rewrites the
dashboard (``quantbot-bus report`` writes it on demand whatever this says).

.. code-block:: toml

    [report]
    enabled = true        # the daemon rewrites exports/report/index.html
    interval_s = 60       # at most once per this many seconds (the first this long after the
                          # start), and only after the catalog changed or an alert was sent
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config_keys import check_keys
from ..errors import ConfigError

#: The shortest interval a config may ask for.
MIN_INTERVAL_S = 1.0


@dataclass(frozen=True)
class ReportSettings:
    """The ``[report]`` section (module docstring)."""

    enabled: bool = True
    interval_s: float = 60.0


def parse_report_settings(raw: Any, *, base: Path | None = None) -> ReportSettings:
    """The settings from the TOML table ``raw`` (None: the defaults); ConfigError names the bad
    field. (``base``, the config file's directory, is unused: no paths here.)"""
    del base
    if raw is None:
        return ReportSettings()
    if not isinstance(raw, Mapping):
        raise ConfigError("config field 'report' must be a table ([report])")
    check_keys(raw, ("enabled", "interval_s"), "report")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"config field 'report.enabled' must be true or false, got {enabled!r}")
    interval = raw.get("interval_s", 60.0)
    if (
        isinstance(interval, bool)
        or not isinstance(interval, int | float)
        or not (interval >= MIN_INTERVAL_S)
    ):
        raise ConfigError(
            f"config field 'report.interval_s' must be a number >= {MIN_INTERVAL_S:g}, "
            f"got {interval!r}"
        )
    return ReportSettings(enabled=enabled, interval_s=float(interval))
