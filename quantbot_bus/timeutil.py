"""UTC time: the one place the bus reads the clock and formats or parses a timestamp.

The bus writes every timestamp as ISO-8601 UTC with millisecond precision and a ``Z``
(``2026-01-08T12:00:00.123Z``) and stores them in DuckDB as naive UTC ``TIMESTAMP`` values.
"""

from __future__ import annotations

import datetime as dt


def utc_now() -> dt.datetime:
    """Now, as an aware UTC datetime."""
    return dt.datetime.now(dt.UTC)


def utc_naive() -> dt.datetime:
    """Now, as a naive UTC datetime (the catalog stores ``TIMESTAMP`` in UTC)."""
    return utc_now().replace(tzinfo=None)


def iso_utc(moment: dt.datetime | None = None) -> str:
    """``moment`` (default now) as ``2026-01-08T12:00:00.123Z``; a naive value is taken as UTC."""
    moment = utc_now() if moment is None else moment
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_utc(value: str | None) -> dt.datetime | None:
    """An ISO-8601 string as a naive UTC datetime; ``None`` when absent or unparseable."""
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed


def age_s(iso: str, now: dt.datetime | None = None) -> float:
    """Seconds from the ISO-8601 timestamp ``iso`` to ``now`` (default: the clock); ``inf`` when
    ``iso`` does not parse."""
    then = parse_utc(iso)
    if then is None:
        return float("inf")
    now = utc_naive() if now is None else now.astimezone(dt.UTC).replace(tzinfo=None)
    return (now - then).total_seconds()
