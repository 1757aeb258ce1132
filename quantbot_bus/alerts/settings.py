"""The ``[alerts]`` section of the config file: :class:`AlertSettings` and its parser.

Every field has a default, so no section at all means: alerts on, every rule on, delivered to
the log and to ``exports_dir/alerts.jsonl``; no webhook, no command. :func:`parse_alert_settings`
validates each field and raises :class:`~quantbot_bus.errors.ConfigError` naming the first bad
one (``config field 'alerts.webhook.timeout_s' must be a number > 0, got 0``). docs/alerts.md has
a TOML example with every key.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..config_keys import UnknownKeysError, check_keys, unknown_keys
from ..errors import ConfigError

#: The rules, in the order they are evaluated (docs/alerts.md: what each watches).
RULES = (
    "run_failed",
    "rejected",
    "regression",
    "registration_failed",
    "degraded",
    "stalled",
    "disk_low",
)

#: The rules about a running daemon's progress: a one-shot ``sync``/``rebuild`` has no worker that
#: could stall, so its checks leave these rules' conditions as they are (neither fired nor
#: resolved; :attr:`~.facts.Facts.daemon`).
DAEMON_RULES = ("stalled",)


@dataclass(frozen=True)
class WebhookSettings:
    """``[alerts.webhook]``: an HTTP POST of each notification's JSON (off while ``url`` is
    empty). A failed POST (connection error, timeout, 5xx, 429) is retried ``retries`` times,
    waiting ``backoff_s`` doubling up to ``max_backoff_s``; at most ``queue_size``
    notifications wait, the oldest dropped first."""

    url: str = ""
    timeout_s: float = 5.0
    retries: int = 3
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    queue_size: int = 100
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.url)


@dataclass(frozen=True)
class CommandSettings:
    """``[alerts.command]``: run ``argv`` (no shell) once per notification, its JSON on stdin
    (off while ``argv`` is empty); killed after ``timeout_s``; at most ``queue_size`` wait."""

    argv: tuple[str, ...] = ()
    timeout_s: float = 10.0
    queue_size: int = 100

    @property
    def enabled(self) -> bool:
        return bool(self.argv)


@dataclass(frozen=True)
class AlertSettings:
    """``[alerts]``: which rules run, their thresholds, the rate limits and the sinks."""

    enabled: bool = True
    #: the daemon checks the rules this often (seconds)
    check_interval_s: float = 30.0
    #: rule name -> on/off (``[alerts.rules]``); every rule of :data:`RULES` is on by default
    rules: tuple[str, ...] = RULES
    #: ``disk_low``: free space below this percent of the filesystem ...
    disk_min_free_percent: float = 5.0
    #: ... or below this many bytes (0 turns that half off)
    disk_min_free_bytes: int = 1 << 30
    #: ``stalled``: runs waiting this long with no batch committed (keep > pending_timeout_s)
    stalled_after_s: float = 900.0
    #: ``run_failed``: failed runs registered within this window are looked at
    failed_window_s: float = 86400.0
    #: ``regression``: verdicts created within this window are looked at
    regression_window_s: float = 7 * 86400.0
    #: item rules (failed runs, rejections, regressions) report at most this many conditions
    max_items: int = 100
    #: a reminder for a condition still active after this long (0: never remind)
    repeat_after_s: float = 0.0
    #: at most one notification per condition per this many seconds (flapping collapses)
    min_interval_s: float = 60.0
    #: at most this many notifications in any 60 s, all conditions together
    max_per_minute: int = 20
    #: the webhook's undelivered notifications (the outbox) are sent again this often
    redeliver_after_s: float = 300.0
    #: structured log events ``alert.fired`` / ``alert.resolved``
    log: bool = True
    #: append every notification to ``exports_dir/alerts.jsonl``
    jsonl: bool = True
    webhook: WebhookSettings = field(default_factory=WebhookSettings)
    command: CommandSettings = field(default_factory=CommandSettings)

    def rule_on(self, name: str) -> bool:
        return self.enabled and name in self.rules


# ---------------------------------------------------------------------------- parsing


def _where(prefix: str, key: str) -> str:
    return f"config field '{prefix}.{key}'"


def _number(prefix: str, key: str, raw: Any, *, minimum: float, strict: bool) -> float:
    ok = isinstance(raw, int | float) and not isinstance(raw, bool)
    if ok and (raw > minimum if strict else raw >= minimum) and raw == raw and raw != float("inf"):
        return float(raw)
    bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
    raise ConfigError(f"{_where(prefix, key)} must be a number {bound}, got {raw!r}")


def _integer(prefix: str, key: str, raw: Any, *, minimum: int) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= minimum:
        return raw
    raise ConfigError(f"{_where(prefix, key)} must be an integer >= {minimum}, got {raw!r}")


def _boolean(prefix: str, key: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    raise ConfigError(f"{_where(prefix, key)} must be true or false, got {raw!r}")


def _table(prefix: str, raw: Any) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config field '{prefix}' must be a table ([{prefix}]), got {raw!r}")
    return raw


#: The sub-tables of ``[alerts]``: name -> their keys.
_SUBTABLE_KEYS: dict[str, Collection[str]] = {
    "rules": RULES,
    "webhook": tuple(f.name for f in fields(WebhookSettings)),
    "command": tuple(f.name for f in fields(CommandSettings)),
}


def _check_all_keys(prefix: str, table: Mapping[str, Any]) -> None:
    """Every unknown key of ``[alerts]`` and its sub-tables, in one :class:`UnknownKeysError`."""
    items = unknown_keys(table, {f.name for f in fields(AlertSettings)}, prefix)
    for name, known in _SUBTABLE_KEYS.items():
        sub = table.get(name)
        if isinstance(sub, Mapping):
            items += unknown_keys(sub, known, f"{prefix}.{name}")
    if items:
        raise UnknownKeysError(items)


#: ``[alerts]`` keys that are numbers: key -> (minimum, strictly greater)
_NUMBERS = {
    "check_interval_s": (0.0, True),
    "disk_min_free_percent": (0.0, False),
    "stalled_after_s": (0.0, True),
    "failed_window_s": (0.0, True),
    "regression_window_s": (0.0, True),
    "repeat_after_s": (0.0, False),
    "min_interval_s": (0.0, False),
    "redeliver_after_s": (0.0, False),
}
_INTEGERS = {"disk_min_free_bytes": 0, "max_items": 1, "max_per_minute": 1}
_BOOLEANS = {"enabled", "log", "jsonl"}
_TABLES = {"rules", "webhook", "command"}


def parse_alert_settings(
    raw: Mapping[str, Any] | None, *, base: Path | None = None
) -> AlertSettings:
    """The ``[alerts]`` table of a config file (None: no section) as :class:`AlertSettings`.

    ``base`` (the config file's directory) resolves a relative command path such as
    ``./notify.sh``; a bare name (``notify-send``) is looked up on ``PATH`` when run."""
    prefix = "alerts"
    table = _table(prefix, raw)
    _check_all_keys(prefix, table)
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key in _NUMBERS:
            minimum, strict = _NUMBERS[key]
            values[key] = _number(prefix, key, value, minimum=minimum, strict=strict)
        elif key in _INTEGERS:
            values[key] = _integer(prefix, key, value, minimum=_INTEGERS[key])
        elif key in _BOOLEANS:
            values[key] = _boolean(prefix, key, value)
    if "disk_min_free_percent" in values and values["disk_min_free_percent"] > 100:
        raise ConfigError(
            f"{_where(prefix, 'disk_min_free_percent')} must be a number from 0 to 100, "
            f"got {table['disk_min_free_percent']!r}"
        )
    values["rules"] = _parse_rules(table.get("rules"))
    values["webhook"] = _parse_webhook(table.get("webhook"))
    values["command"] = _parse_command(table.get("command"), base=base)
    return AlertSettings(**values)


def _parse_rules(raw: Any) -> tuple[str, ...]:
    prefix = "alerts.rules"
    table = _table(prefix, raw)
    check_keys(table, RULES, prefix)
    on = {name: _boolean(prefix, name, value) for name, value in table.items()}
    return tuple(name for name in RULES if on.get(name, True))


def _parse_webhook(raw: Any) -> WebhookSettings:
    prefix = "alerts.webhook"
    table = _table(prefix, raw)
    check_keys(table, _SUBTABLE_KEYS["webhook"], prefix)
    values: dict[str, Any] = {}
    if "url" in table:
        url = table["url"]
        parts = urlsplit(url) if isinstance(url, str) else None
        if url != "" and (
            parts is None or parts.scheme not in ("http", "https") or not parts.netloc
        ):
            raise ConfigError(
                f'{_where(prefix, "url")} must be an http:// or https:// URL (or "" for no '
                f"webhook), got {url!r}"
            )
        values["url"] = url
    for key in ("timeout_s", "max_backoff_s"):
        if key in table:
            values[key] = _number(prefix, key, table[key], minimum=0.0, strict=True)
    if "backoff_s" in table:
        values["backoff_s"] = _number(
            prefix, "backoff_s", table["backoff_s"], minimum=0.0, strict=False
        )
    if "retries" in table:
        values["retries"] = _integer(prefix, "retries", table["retries"], minimum=0)
    if "queue_size" in table:
        values["queue_size"] = _integer(prefix, "queue_size", table["queue_size"], minimum=1)
    if "headers" in table:
        headers = _table(f"{prefix}.headers", table["headers"])
        for name, value in headers.items():
            if (
                not isinstance(value, str)
                or not name
                or any(c in name for c in ":\r\n ")
                or any(c in value for c in "\r\n")
            ):
                raise ConfigError(
                    f"config field '{prefix}.headers.{name}' must be a header name with a "
                    f"one-line string value, got {value!r}"
                )
        values["headers"] = tuple(sorted(headers.items()))
    return WebhookSettings(**values)


def _parse_command(raw: Any, *, base: Path | None) -> CommandSettings:
    prefix = "alerts.command"
    table = _table(prefix, raw)
    check_keys(table, _SUBTABLE_KEYS["command"], prefix)
    values: dict[str, Any] = {}
    if "argv" in table:
        argv = table["argv"]
        if (
            not isinstance(argv, list)
            or not all(isinstance(a, str) for a in argv)
            or (argv and not argv[0])
        ):
            raise ConfigError(
                f"{_where(prefix, 'argv')} must be an array of strings, the program first "
                f'(e.g. ["/usr/local/bin/notify", "--json"]), got {argv!r}'
            )
        if argv and base is not None and os.sep in argv[0] and not os.path.isabs(argv[0]):
            argv = [str(base / os.path.expanduser(argv[0])), *argv[1:]]
        values["argv"] = tuple(argv)
    if "timeout_s" in table:
        values["timeout_s"] = _number(
            prefix, "timeout_s", table["timeout_s"], minimum=0.0, strict=True
        )
    if "queue_size" in table:
        values["queue_size"] = _integer(prefix, "queue_size", table["queue_size"], minimum=1)
    return CommandSettings(**values)
