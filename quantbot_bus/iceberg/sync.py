"""``quantbot-bus sync`` on the Iceberg backend: one reconcile of the whole bucket, polled on
until its backlog is empty."""

from __future__ import annotations

import time

from ..config import Config
from .bus import IcebergBus
from .result import PollResult


def sync_once(config: Config) -> PollResult:
    """One reconcile of the whole bucket under the state-dir lock (``quantbot-bus sync``),
    polling on until its backlog is empty."""
    from ..statelock import StateLock

    config.state_dir.mkdir(parents=True, exist_ok=True)
    lock = StateLock(config.lock_path, "sync")
    lock.acquire()
    try:
        bus = IcebergBus(config, role="sync")
        try:
            result = bus.poll(full=True)
            while result.backlog:  # more than one poll's worth: go on until all are looked at
                if not result.claimed:  # other daemons hold the rest: let them work
                    time.sleep(config.poll_interval_s)
                more = bus.poll()
                result.registered += more.registered
                result.already += more.already
                result.rejected += more.rejected
                result.updated = (*result.updated, *more.updated)
                result.pending, result.backlog = more.pending, more.backlog
                result.claimed = more.claimed
            return result
        finally:
            bus.close()
    finally:
        lock.release()
