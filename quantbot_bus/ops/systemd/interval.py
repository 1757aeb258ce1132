"""The sync timer's period: whole minutes, written as ``OnUnitActiveSec=<N>min`` in
``quantbot-bus-sync.timer`` (``install --timer --interval N``), and read back from an installed
timer so a re-install can say when it changes the period."""

from __future__ import annotations

import re

from ...errors import ConfigError

#: ``install --timer`` without ``--interval``: a sync every 5 minutes.
DEFAULT_SYNC_INTERVAL_MIN = 5
#: The longest period accepted: a day (as ``scripts/setup-catalog-sync-cron.sh``).
MAX_SYNC_INTERVAL_MIN = 1440

_WHOLE = re.compile(r"^[0-9]+$")
_ACTIVE_SEC = re.compile(r"^OnUnitActiveSec=([0-9]+)min\s*$", re.M)


def parse_interval(value: str | int) -> int:
    """``value`` as a number of minutes from 1 to :data:`MAX_SYNC_INTERVAL_MIN`.

    Only plain decimal digits count (no sign, unit, fraction or ``_``); anything else raises
    :class:`~quantbot_bus.errors.ConfigError` naming ``--interval`` and the value given.
    """
    text = str(value).strip()
    # at most 6 digits go to int(): a 5,000-digit argument is refused, not converted
    ok = not isinstance(value, bool) and _WHOLE.match(text) is not None and len(text) <= 6
    if not ok or not 1 <= int(text) <= MAX_SYNC_INTERVAL_MIN:
        raise ConfigError(
            f"--interval must be a whole number of minutes from 1 to {MAX_SYNC_INTERVAL_MIN} "
            f"(a day), got {str(value)!r}"
        )
    return int(text)


def installed_interval(timer_text: str) -> int | None:
    """The ``OnUnitActiveSec=<N>min`` of a timer we rendered, or None (older or foreign timer)."""
    match = _ACTIVE_SEC.search(timer_text)
    return int(match.group(1)) if match else None
