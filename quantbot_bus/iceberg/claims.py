"""Leases on listed runs, so daemons sharing a bucket divide the work instead of all doing it.

A table ``quantbot_claims`` in the catalog's PostgreSQL database holds, per run id (column
``run_key``), which daemon took it and until when: by id, not by directory, so two directories of
one run id (a contract breach, :mod:`quantbot_bus.iceberg.twins`) are never validated and
registered by two daemons at once, each into its own tables. Before validating, a daemon claims
up to a poll's worth of its backlog in one statement: a run nobody holds, or whose lease ran out,
or that it holds itself. Runs another daemon holds stay in the backlog; that daemon registers
them, and the next ledger sync drops them.

Claims are advice, not the guarantee: exactly-once comes from the commits
(:mod:`quantbot_bus.iceberg.commit`), so a daemon that stalls past its lease, or a lost claims
table, costs duplicated work, never a run twice. A claim is not released when its run is
registered (a release would let a daemon whose ledger has not seen that commit yet take the run
again); it runs out, and expired claims are deleted an hour later. A run a poll rejected is
given back at once: the other daemons validate it anyway (a ledger notes only its own daemon's
rejections). The owner is the host and the state directory, so a daemon restarted after a
crash takes its own claims back at once, while the runs of a daemon that never comes back wait
for its leases to run out (``claim_lease_s``, 60 s).

The lease is short, so such runs wait a minute, not the length of a long poll: while a daemon
works on the runs it claimed, a :class:`Renewer` thread extends their leases every third of one.
A daemon that dies, loses PostgreSQL or fails its polls stops renewing, and its runs go to the
others (one alive whose poll hangs renews on: the systemd watchdog restarts it).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger("quantbot_bus.iceberg")

#: Expired claims older than this are deleted (by the hourly maintenance).
KEEP_EXPIRED_S = 3600

_DDL = """
CREATE TABLE IF NOT EXISTS quantbot_claims (
    run_key TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    until TIMESTAMPTZ NOT NULL
)
"""

# Candidates in the caller's order; the first `lim` that nobody else holds are taken. Two daemons
# racing for one key: the ON CONFLICT guard lets one of them have it. Rows are inserted in key
# order, so two daemons lock the keys they share in the same order (never a deadlock).
_CLAIM = """
WITH cand AS (
    SELECT k, ord FROM unnest(CAST(:keys AS TEXT[])) WITH ORDINALITY AS t(k, ord)
    WHERE NOT EXISTS (
        SELECT 1 FROM quantbot_claims c
        WHERE c.run_key = t.k AND c.owner <> :owner AND c.until >= now()
    )
    ORDER BY ord
    LIMIT :lim
)
INSERT INTO quantbot_claims (run_key, owner, until)
SELECT k, :owner, now() + make_interval(secs => :lease) FROM cand ORDER BY k
ON CONFLICT (run_key) DO UPDATE SET owner = EXCLUDED.owner, until = EXCLUDED.until
    WHERE quantbot_claims.owner = EXCLUDED.owner OR quantbot_claims.until < now()
RETURNING run_key
"""


def claim_owner(state_dir: Path) -> str:
    """This daemon as a claim owner: its host and its state directory."""
    return f"{socket.gethostname()}:{state_dir.resolve()}"


class Claims:
    """The claims table on the catalog's SQLAlchemy ``engine``."""

    def __init__(self, engine: Any, owner: str, lease_s: float) -> None:
        self.engine, self.owner, self.lease_s = engine, owner, lease_s
        self._ready = False

    def _ensure(self) -> None:
        if self._ready:
            return
        from sqlalchemy import exc, text

        try:
            with self.engine.begin() as con:
                con.execute(text(_DDL))
        except exc.IntegrityError:  # another daemon created it in the same instant
            pass
        self._ready = True

    def claim(self, keys: Sequence[str], limit: int) -> set[str]:
        """Claim up to ``limit`` of ``keys`` (in their order); returns the claimed ones."""
        if not keys or limit <= 0:
            return set()
        from sqlalchemy import text
        from sqlalchemy.exc import OperationalError

        self._ensure()
        params = {"keys": list(keys), "owner": self.owner, "lim": limit, "lease": self.lease_s}
        for attempt in range(3):
            try:
                with self.engine.begin() as con:
                    rows = con.execute(text(_CLAIM), params).fetchall()
                return {r[0] for r in rows}
            except OperationalError as exc:  # a serialization failure or deadlock: try again
                code = getattr(exc.orig, "pgcode", None)
                if code not in ("40001", "40P01") or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def renew(self, keys: Collection[str]) -> int:
        """Extend this owner's leases on ``keys`` by a full lease; returns how many it holds."""
        if not keys:
            return 0
        from sqlalchemy import text

        self._ensure()
        with self.engine.begin() as con:
            result = con.execute(
                text(
                    "UPDATE quantbot_claims SET until = now() + make_interval(secs => :lease)"
                    " WHERE owner = :owner AND run_key = ANY(:keys)"
                ),
                {"owner": self.owner, "keys": sorted(keys), "lease": self.lease_s},
            )
        return int(result.rowcount or 0)

    def release(self, keys: Sequence[str]) -> int:
        """Give back this owner's claims on ``keys`` (runs it claimed but did not decide, when
        it stops): the others take them at once instead of after the lease. Returns how many."""
        if not keys:
            return 0
        from sqlalchemy import text

        self._ensure()
        with self.engine.begin() as con:
            result = con.execute(
                text("DELETE FROM quantbot_claims WHERE owner = :owner AND run_key = ANY(:keys)"),
                {"owner": self.owner, "keys": list(keys)},
            )
        return int(result.rowcount or 0)

    def expire(self, keep_expired_s: float = KEEP_EXPIRED_S) -> int:
        """Delete claims that ran out more than ``keep_expired_s`` ago; returns how many."""
        from sqlalchemy import text

        self._ensure()
        with self.engine.begin() as con:
            result = con.execute(
                text("DELETE FROM quantbot_claims WHERE until < now() - make_interval(secs => :s)"),
                {"s": keep_expired_s},
            )
        return int(result.rowcount or 0)


class Renewer:
    """A thread renewing, every third of a lease, the claims ``held()`` names: the runs a daemon
    is working on (the ``claims()`` of the moment: None while the catalog is being reopened).
    ``held`` is read from this thread, so it must return an immutable snapshot."""

    def __init__(
        self,
        claims: Callable[[], Claims | None],
        held: Callable[[], Collection[str]],
        every_s: float,
    ) -> None:
        self._claims, self._held, self.every_s = claims, held, every_s
        self.stop_event = threading.Event()
        self._thread = threading.Thread(target=self._main, name="claims-renewer", daemon=True)

    def start(self) -> Renewer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        if self._thread.is_alive():
            self._thread.join(30)

    def _main(self) -> None:
        while not self.stop_event.wait(self.every_s):
            claims, keys = self._claims(), self._held()
            if claims is None or not keys:
                continue
            try:
                claims.renew(keys)
            except Exception as exc:  # noqa: BLE001 - the leases lapse; the poll reports it
                log.warning("iceberg.claims_renew_failed", error=str(exc)[:300])
