"""The deletion lock: a PostgreSQL advisory lock that lets one daemon at a time take runs out of
the tables (deleted runs, and the old versions of changed runs).

Appends are exactly-once without a lock (:mod:`quantbot_bus.iceberg.commit`), but a delete acting
on a stale view is not safe beside them: a daemon that judged a run deleted or changed, then
deleted its rows while another daemon was taking the run out and registering its new version,
could remove the new rows from one table and not from another. So every delete happens while its
daemon holds this lock, and only after reading, under the lock, that ``runs_d`` still holds the
version being taken out (:mod:`quantbot_bus.iceberg.delete`, :mod:`quantbot_bus.iceberg.changes`).
A fresh registration of the run can only start after the ``runs_d`` delete has committed (until
then every ledger knows the run), i.e. after the artifact tables' deletes.

One lock for the whole catalog, not one per run: deletions are rare, a daemon takes its batch
under one lock, and PostgreSQL's lock table (a few thousand slots by default) is not filled by a
mass deletion. It is a session lock on one connection (``pg_try_advisory_lock``), never waited
for (a daemon that does not get it leaves its deletions to its next reconcile) and released by
PostgreSQL when the connection ends, so a daemon killed while holding it blocks nobody.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: The lock's name; its key is PostgreSQL's 64-bit hash of it.
LOCK_NAME = "quantbot-bus deletions"


@contextmanager
def deletion_lock(engine: Any) -> Iterator[bool]:
    """Try to take the deletion lock; yields whether this daemon holds it (then until exit)."""
    from sqlalchemy import text

    with engine.connect() as con:
        got = bool(
            con.execute(
                text("SELECT pg_try_advisory_lock(hashtextextended(:name, 0))"),
                {"name": LOCK_NAME},
            ).scalar()
        )
        con.commit()
        try:
            yield got
        finally:
            if got:
                try:
                    con.execute(
                        text("SELECT pg_advisory_unlock(hashtextextended(:name, 0))"),
                        {"name": LOCK_NAME},
                    )
                    con.commit()
                except Exception:
                    con.invalidate()  # closed, not pooled: PostgreSQL drops its lock
                    raise
