"""Exactly-once appends to one Iceberg table, however many daemons commit to it.

An append names the keys (run ids) it registers in its snapshot summary
(:data:`~quantbot_bus.iceberg.tables.KEYS_PROPERTY`). :func:`append_once` loads the table, drops
the keys any retained snapshot already lists, and commits with pyiceberg's own retry turned off:
the catalog commits only if the table still points at the snapshot we loaded (a compare-and-swap
on the metadata location in PostgreSQL). If another daemon committed in between, the commit
fails, and the next attempt reloads and sees that daemon's keys. So a key is appended at most
once per table, and the daemon that lost the race learns which of its keys it lost.

Keys are looked for in the snapshots the table retains; ``runs_d`` membership beyond them is the
ledger's (:mod:`quantbot_bus.iceberg.ledger`). Snapshot expiry keeps the newest
:data:`~quantbot_bus.iceberg.maintenance.KEEP_SNAPSHOTS` snapshots, far more than the commits
racing at any one time.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from ..errors import CatalogError
from .tables import KEYS_PROPERTY, identifier, key_changes

log = structlog.get_logger("quantbot_bus.iceberg")

#: Attempts before a commit gives up (each one lost to another daemon's commit).
MAX_ATTEMPTS = 30
BACKOFF_S = (0.05, 2.0)  #: the first wait and the cap, doubled per lost attempt, with jitter

#: ``act(transaction, keys_to_add, snapshot_properties)`` stages the append of those keys.
Act = Callable[[Any, list[str], dict[str, str]], None]
#: ``stage(table)`` -> ``(transaction, result)`` or None (nothing to commit).
Stage = Callable[[Any], tuple[Any, Any] | None]


class CommitConflict(CatalogError):
    """Another daemon won every attempt; the batch is retried later."""


def present_keys(table: Any) -> set[str]:
    """The keys the retained snapshots of ``table`` list as appended and not deleted after."""
    return key_changes(table.snapshots())[0]


def commit_retrying(catalog: Any, table_name: str, stage: Stage) -> Any:
    """Load ``table_name``, let ``stage(table)`` build a transaction and commit it; a commit
    lost to another daemon's reloads and stages again, with a jittered doubling backoff.
    ``stage`` returns ``(transaction, result)``, or None when there is nothing to commit
    (then None is returned); otherwise the result of the attempt that committed."""
    from pyiceberg.exceptions import CommitFailedException

    wait, cap = BACKOFF_S
    for attempt in range(1, MAX_ATTEMPTS + 1):
        staged = stage(catalog.load_table(identifier(table_name)))
        if staged is None:
            return None
        tx, result = staged
        try:
            tx.commit_transaction()
        except CommitFailedException as exc:
            log.info("iceberg.commit_lost", table=table_name, attempt=attempt, error=str(exc)[:200])
            time.sleep(wait * (1 + random.random()))
            wait = min(cap, wait * 2)
            continue
        return result
    raise CommitConflict(f"{table_name}: {MAX_ATTEMPTS} commits in a row lost to other daemons")


def append_once(catalog: Any, table_name: str, keys: Sequence[str], act: Act) -> list[str]:
    """Append ``keys`` to ``table_name`` through ``act`` unless a retained snapshot already
    lists them; returns the keys this call committed (the others were there already)."""

    def stage(table: Any) -> tuple[Any, list[str]] | None:
        present = present_keys(table)
        todo = [k for k in dict.fromkeys(keys) if k not in present]
        if not todo:
            return None
        tx = table.transaction()
        act(tx, todo, {KEYS_PROPERTY: json.dumps(todo)})
        return tx, todo

    done = commit_retrying(catalog, table_name, stage)
    return [] if done is None else list(done)
