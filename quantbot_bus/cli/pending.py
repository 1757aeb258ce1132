"""``pending``: the runs the bus waits on (incomplete: pending, not registered nor rejected yet),
as the daemon or the last ``sync`` published them (:mod:`quantbot_bus.pendingfile`)."""

from __future__ import annotations

import click

from ..config import Config
from .options import config_options, emit, format_option

_PENDING_COLUMNS = ("run_dir", "run_id", "reason", "first_seen", "age_s", "reject_after")


@click.command("pending")
@config_options
@format_option
def pending_cmd(config: Config, fmt: str | None) -> None:
    """List the incomplete runs: directory, run_id, why, since when and until when.

    A run is pending while a file its metadata.json lists is missing or shorter than declared
    (the producer may still be writing it); it is rejected once it is still incomplete
    pending_timeout_s after its metadata.json was written (reject_after). The list is what the
    daemon (or the last `sync`) saw, at most 1000 runs, oldest first (a note on stderr says how
    many more there are). Exits 4 when neither has run with this state dir.
    """
    from ..pendingfile import pending_path, read_pending

    doc = read_pending(pending_path(config.state_dir))
    emit(doc["runs"], fmt, _PENDING_COLUMNS)
    more = doc.get("more") or 0
    if more:
        click.echo(f"... and {more} more pending runs not listed", err=True)
