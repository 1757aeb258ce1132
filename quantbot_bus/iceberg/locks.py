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

A lock is not a fence: a holder whose session the server ends (an idle or statement timeout, an
administrator, a pooler in transaction mode giving it another session) no longer holds it, and
is not told. So a deletion asks :meth:`DeletionLock.check` before each table's delete: the
session still holds the lock (``pg_locks``), else :class:`LockLostError`, and nothing more is
deleted; the next reconcile finishes (a run half taken out is still in ``runs_d``, so it is a
candidate again). The window left is from a check to that table's commit (its retries included).
Behind a pooler in transaction mode the lock's server session outlives the client's: point
``catalog_uri`` at PostgreSQL itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import CatalogError
from ..log import get_logger

log = get_logger("quantbot_bus.iceberg")

#: The lock's name; its key is PostgreSQL's 64-bit hash of it.
LOCK_NAME = "quantbot-bus deletions"

#: Whether this session holds the lock: an advisory lock on a bigint key shows in ``pg_locks``
#: with its high 32 bits as ``classid`` and its low ones as ``objid``.
_HELD_SQL = """
SELECT count(*) FROM pg_locks, (SELECT hashtextextended(:name, 0) AS k) key
WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid() AND objsubid = 1
  AND classid = ((key.k >> 32) & 4294967295)::oid AND objid = (key.k & 4294967295)::oid
"""


class LockLostError(CatalogError):
    """The deletion lock was taken, then lost: the session that held it ended."""


class DeletionLock:
    """The outcome of trying the lock: true when this daemon holds it (:meth:`check` tells
    whether it still does)."""

    def __init__(self, con: Any, held: bool) -> None:
        self._con, self.held = con, held

    def __bool__(self) -> bool:
        return self.held

    def check(self) -> None:
        """Raise :class:`LockLostError` unless this daemon's session still holds the lock."""
        from sqlalchemy import text

        try:
            held = bool(self._con.execute(text(_HELD_SQL), {"name": LOCK_NAME}).scalar())
            self._con.commit()
        except Exception as exc:  # noqa: BLE001 - the session is gone: so is the lock
            held, why = False, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"
        else:
            why = "this session no longer holds it (a pooler in transaction mode?)"
        if not held:
            self.held = False
            raise LockLostError(
                f"lost the deletion lock ({why}); nothing more is deleted now, the next "
                "reconcile finishes. Point catalog_uri at PostgreSQL itself, not a pooler, and "
                "allow idle sessions"
            )


@contextmanager
def deletion_lock(engine: Any) -> Iterator[DeletionLock]:
    """Try to take the deletion lock; yields a :class:`DeletionLock`, true when this daemon holds
    it (then until exit, as long as its session lasts). Letting it go never raises: an unlock
    that fails closes the connection instead (its session, and so the lock, end with it)."""
    from sqlalchemy import text

    with engine.connect() as con:
        lock = DeletionLock(con, False)
        try:
            lock.held = bool(
                con.execute(
                    text("SELECT pg_try_advisory_lock(hashtextextended(:name, 0))"),
                    {"name": LOCK_NAME},
                ).scalar()
            )
            con.commit()
            got = lock.held
            yield lock
        except BaseException:
            _release(con, lock)  # the error in flight is the one raised
            raise
        if got:
            _release(con, lock)


def _release(con: Any, lock: DeletionLock) -> None:
    """Unlock on ``con`` if still held, else (or when unlocking fails: logged) close ``con``
    instead of pooling it: a closed session holds no lock. Only a BaseException that is not an
    Exception (an interrupt) gets through, after the connection is closed."""
    from sqlalchemy import text

    if lock.held:
        try:
            con.execute(
                text("SELECT pg_advisory_unlock(hashtextextended(:name, 0))"), {"name": LOCK_NAME}
            )
            con.commit()
            return
        except Exception as exc:  # noqa: BLE001 - the session is gone: closing it is the unlock
            log.warning("iceberg.deletion_unlock_failed", error=f"{type(exc).__name__}: {exc}")
        except BaseException:
            con.invalidate()
            raise
    con.invalidate()  # lost, or the unlock failed: its session is gone, or not ours to unlock
