"""The scale-out pipeline: runs listed in a bucket, validated with ranged reads and registered
into the Iceberg tables, exactly once per run whichever daemon gets there first.

:class:`IcebergBus` is to ``catalog = "iceberg"`` what :class:`quantbot_bus.pipeline.Bus` is to
the DuckDB catalog: the one object every entry point (the daemon, ``sync``) drives. One
:meth:`~IcebergBus.poll` is: list (completion markers after the cursor, or every run on a reconcile),
drop what the ledger knows, validate the rest (a few at a time in threads: each is a handful of
small requests), register the valid ones and record the rejected ones, then move the persisted
cursor. A failure anywhere (the store or PostgreSQL down) raises before the cursor moves, so
the next poll sees the same runs again: nothing is lost, and nothing is registered twice
(:mod:`quantbot_bus.iceberg.commit`).
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pyarrow as pa
import structlog

from ..config import Config
from ..contract import Incomplete, Invalid
from ..objectstore.listing import BadKey, Lister, RunObject
from ..objectstore.location import S3Location, S3Settings
from ..objectstore.reads import Buckets
from ..objectstore.validate import VALIDATE_THREADS, ObjectRun, validate_object_run
from ..pendingfile import PendingEntry, pending_path, write_pending
from ..timeutil import utc_now
from .changes import replace_changed
from .claims import Claims, Renewer, claim_owner
from .commit import append_once
from .delete import take_out_deleted
from .ledger import LEDGER_NAME, Ledger, rejection_key
from .register import Registrar
from .result import PollResult
from .rows import Rejected, rejection_rows
from .tables import open_catalog
from .twins import registered_twins, split_twins

log = structlog.get_logger("quantbot_bus.iceberg")

#: Runs per Iceberg commit: each commit lists its run ids in its snapshot summary, which every
#: later metadata file repeats while the snapshot is retained; this keeps that bounded.
MAX_COMMIT_RUNS = 1000
#: Runs validated and registered per poll; more found at once wait in the backlog.
MAX_POLL_RUNS = 500
#: A poll looks at this many times MAX_POLL_RUNS of the backlog's head (the rest may be held
#: by other daemons or registered by them meanwhile).
HEAD_FACTOR = 4


def daemon_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class IcebergBus:
    """``role`` names the writer of ``state_dir/pending.json`` (``daemon`` or ``sync``)."""

    def __init__(
        self, config: Config, *, env: dict[str, str] | None = None, role: str = "daemon"
    ) -> None:
        loc = config.s3_root
        assert loc is not None, "IcebergBus needs an s3:// root (Config.validate checks it)"
        self.config = config
        self.loc: S3Location = loc
        self.settings = S3Settings.from_env(env)
        self.client = self.settings.client()
        self.buckets = Buckets(self.settings)
        self.reads = self.buckets.of(loc.bucket)
        self.ledger = Ledger(config.state_dir / LEDGER_NAME)
        self.daemon_id = daemon_id()
        self._catalog: Any = None
        self._registrar: Registrar | None = None
        self._claims: Claims | None = None
        self._claimed: set[str] = set()  # the run ids the last poll claimed
        #: the claims being worked on, renewed by the renewer thread (an immutable snapshot)
        self._renewable: frozenset[str] = frozenset()
        self._renewer: Renewer | None = None
        #: metadata key -> (first seen, the run, why) of runs whose files are not all there yet
        self.pending: dict[str, tuple[float, RunObject, str]] = {}
        #: listed runs not looked at yet (more than MAX_POLL_RUNS were found at once), and
        #: their keys in this daemon's order
        self.backlog: dict[str, RunObject] = {}
        self._order: list[str] = []
        self.role = role
        #: registered runs whose objects a reconcile found changed, not decided yet
        self._suspects: dict[str, RunObject] = {}
        #: (run dir, reason, reject_after) of the runs pending.json lists (None: not yet)
        self._pending_listed: list[tuple[str, str, int]] | None = None
        #: what polls that raised had committed, for the next poll to report
        self._unreported: PollResult | None = None

    # ------------------------------------------------------------------ connections
    @property
    def registrar(self) -> Registrar:
        if self._registrar is None:
            s = self.settings
            self._catalog = open_catalog(
                self.config.catalog_uri, self.config.warehouse, s.pyiceberg_properties()
            )
            self._registrar = Registrar(self._catalog, self.buckets, self.daemon_id)
            owner, lease_s = claim_owner(self.config.state_dir), self.config.claim_lease_s
            self._claims = Claims(self._catalog.engine, owner, lease_s)
        return self._registrar

    @property
    def claims(self) -> Claims:
        self.registrar  # noqa: B018 - opens the catalog, whose engine the claims use
        assert self._claims is not None
        return self._claims

    def drop_connections(self) -> None:
        """Forget the catalog connection (after a failure: the next poll opens a fresh one)."""
        if self._catalog is not None:
            engine = getattr(self._catalog, "engine", None)
            if engine is not None:
                engine.dispose()
        self._catalog = None
        self._registrar = None
        self._claims = None

    def close(self) -> None:
        """Give back this bus's claims on the runs it has not decided (best effort: PostgreSQL
        may be down; the lease then frees them), close the catalog connection and the ledger."""
        if self._renewer is not None:
            self._renewer.stop()
        if self._claims is not None:
            try:
                # the undecided runs only: a run registered just now (by a poll that raised
                # after its commit, too) stays claimed until its lease ends, so a daemon whose
                # ledger lags does not validate it again
                undecided = {waiting.run_id for _, waiting, _ in self.pending.values()}
                undecided |= {r.run_id for r in self.backlog.values() if r.run_id in self._claimed}
                undecided -= self.ledger.known("runs_d", undecided)
                released = self._claims.release(sorted(undecided))
                log.info("iceberg.claims_released", claims=released)
            except Exception as exc:  # noqa: BLE001 - the lease frees them anyway
                log.warning("iceberg.claims_release_failed", error=str(exc)[:300])
        self.drop_connections()
        self.ledger.close()

    # ------------------------------------------------------------------ one poll
    def poll(self, *, full: bool = False) -> PollResult:
        """List, validate and register once; see the module doc. What a poll that raised had
        committed already (registrations, rejections) is reported by the next one that does
        not: the ledger knows those runs, so no later poll would report them."""
        result = PollResult(full=full)
        try:
            self._poll(result, full)
        except BaseException:
            done = result.committed()
            self._unreported = self._unreported.merged(done) if self._unreported else done
            raise
        if self._unreported is not None:
            result, self._unreported = self._unreported.merged(result), None
        return result

    def _poll(self, result: PollResult, full: bool) -> None:
        t0 = time.monotonic()
        self._renewable = frozenset()  # a poll that failed renews nothing: its leases lapse
        lister = Lister(self.client, self.loc, self.ledger.get("cursor", ""))
        found = list(lister.all_runs()) if full else lister.new_runs()
        result.listing = found if full else []
        if not (full or found or self.backlog or self.pending):  # idle: one listing
            self.ledger.put("cursor", lister.cursor)
            result.seconds = time.monotonic() - t0
            return
        registrar = self.registrar
        registrar.core()
        self.ledger.sync("runs_d", registrar.table_fresh("runs_d"))
        self.ledger.sync("rejections_f", registrar.table_fresh("rejections_f"))
        listed = {f.metadata_key: f for f in found if isinstance(f, RunObject)}
        bad = [f for f in found if isinstance(f, BadKey)]
        result.listed = len(listed) + len(bad)
        # a run rejected before whose objects have not changed since is not validated again
        signed = {k: r.signature for k, r in listed.items() if r.signature}
        for key in self.ledger.rejected_unchanged(signed):
            listed.pop(key)
        registered = self.ledger.known("runs_d", [r.run_id for r in listed.values()])
        twins: list[Rejected] = []  # directories reusing a registered run's id
        if full:  # a registered run whose objects changed since: replaced below
            twins = registered_twins(registrar.catalog, self.loc, listed, registered)
            not_twin = {t.run_dir for t in twins}.isdisjoint
            suspects = self.ledger.changed(
                {
                    k: (r.etag, r.signature)
                    for k, r in listed.items()
                    if r.run_id in registered and not_twin([self.loc.uri(r.run_prefix[:-1])])
                }
            )
            self._suspects.update({k: listed[k] for k in suspects})
        listed = {k: r for k, r in listed.items() if r.run_id not in registered}
        for key, (_, waiting, _) in self.pending.items():  # looked at again every poll
            listed.setdefault(key, waiting)
        # At most MAX_POLL_RUNS per poll (a poll stays short: the watchdog, a prompt stop); the
        # rest waits in the backlog. Each daemon takes runs in its own order (a hash of its id
        # and the key), sorted once when keys arrive; a poll looks only at the pending runs and
        # the head of that order (what the ledger knows is dropped; of the rest, runs another
        # daemon holds are skipped: claims.py), so its cost does not grow with the backlog.
        fresh = [k for k in listed if k not in self.backlog and k not in self.pending]
        self.backlog.update(listed)
        if fresh:
            self._order = sorted(self.backlog, key=self._rank)
        head = [
            k
            for k in dict.fromkeys([*self.pending, *self._order[: HEAD_FACTOR * MAX_POLL_RUNS]])
            if k in self.backlog  # (a poll that failed half-way left the order stale)
        ]
        known = self.ledger.known("runs_d", [self.backlog[k].run_id for k in head])
        for key in [k for k in head if self.backlog[k].run_id in known]:
            self.backlog.pop(key)  # registered meanwhile (by another daemon, say)
            self.pending.pop(key, None)
        head = [k for k in head if k in self.backlog]
        # claimed by run id: two directories of one run id are never validated by two daemons
        ids = self._claimed = self.claims.claim(
            list(dict.fromkeys(self.backlog[k].run_id for k in head)), MAX_POLL_RUNS
        )
        claimed = {k for k in head if self.backlog[k].run_id in ids}
        self._renewable = frozenset(ids)
        if self._renewer is None and ids:
            every_s = self.config.claim_lease_s / 3
            self._renewer = Renewer(lambda: self._claims, lambda: self._renewable, every_s).start()
        runs, twins_now = split_twins({k: self.backlog[k] for k in head if k in claimed}, self.loc)
        for key in [k for k in head if k in claimed and k not in runs]:
            self.backlog.pop(key)  # a second directory of one run id: rejected below
            self.pending.pop(key, None)
        # runs taken now (the pending ones are this daemon's every poll: not progress)
        result.claimed = len([k for k in runs if k not in self.pending])
        rejected = [Rejected(self.loc.uri(b.key), None, b.reason) for b in bad]
        rejected += twins + twins_now
        valid: list[ObjectRun] = []
        with ThreadPoolExecutor(VALIDATE_THREADS) as pool:
            verdicts = list(
                pool.map(lambda r: (r, validate_object_run(self.reads, self.loc, r)), runs.values())
            )
        now, wall = time.monotonic(), time.time()
        noted: dict[str, str] = {}  # metadata key -> listing signature of runs rejected now
        seen: dict[str, tuple[str, str, str]] = {}  # run id -> key, ETag, signature if valid
        for run, verdict in verdicts:
            run_dir = self.loc.uri(run.run_prefix.rstrip("/"))
            first = self.pending.pop(run.metadata_key, (now, run, ""))[0]
            if isinstance(verdict, Incomplete):  # waited since first seen, or since written
                run = replace(run, written_at=verdict.since)
            if isinstance(verdict, ObjectRun):
                valid.append(verdict)
                seen[verdict.info.run_id] = (run.metadata_key, verdict.etag, run.signature)
            elif isinstance(verdict, Invalid):
                rejected.append(Rejected(run_dir, verdict.run_id or run.run_id, verdict.reason))
                noted[run.metadata_key] = run.signature
            elif max(now - first, run.age_s(wall)) >= self.config.pending_timeout_s:
                noted[run.metadata_key] = run.signature
                rejected.append(
                    Rejected(
                        run_dir,
                        run.run_id,
                        # no seconds in the reason, neither counted nor configured: the
                        # same problem is the same row, whichever daemon rejects it
                        f"{verdict.reason} (still incomplete after the pending timeout)",
                    )
                )
            else:
                self.pending[run.metadata_key] = (first, run, verdict.reason)
        for i in range(0, len(valid), MAX_COMMIT_RUNS):
            done = registrar.register(valid[i : i + MAX_COMMIT_RUNS])
            result.registered += done.registered
            result.already += done.already
            self.ledger.add("runs_d", done.registered + done.already)  # as each commit lands
            rejected += done.rejected  # schema conflicts: looked at again every reconcile
            for run_id in done.registered:
                log.info("run.registered", run_id=run_id, backend="iceberg")
            for run_id in done.already:
                log.info("run.already_registered", run_id=run_id, backend="iceberg")
        result.validated = valid
        self.ledger.note_seen(
            {
                seen[i][0]: (seen[i][1], seen[i][2])
                for i in result.registered + result.already
                if i in seen
            }
        )
        result.rejected = self._record_rejections(rejected)
        self.ledger.note_rejected({k: sig for k, sig in noted.items() if sig})
        self._release_rejected(runs, result)
        if self._suspects:
            self._replace_changed(result)
        if full:
            result.deleted = tuple(
                take_out_deleted(
                    self.ledger, self.registrar.catalog, self.client, self.loc, found, MAX_POLL_RUNS
                )
            )
        self.ledger.put("cursor", lister.cursor)
        for key in runs:  # looked at: out of the backlog only now the poll went through
            self.backlog.pop(key, None)
        if runs or known:
            self._order = [k for k in self._order if k in self.backlog]
        result.pending = sorted(self.pending)
        self._renewable = frozenset(
            r.run_id for k, (_, r, _) in self.pending.items() if k in claimed
        )
        result.backlog = len(self.backlog)
        self._list_pending()
        result.seconds = time.monotonic() - t0

    def _list_pending(self) -> None:
        """Write ``state_dir/pending.json`` (``quantbot-bus pending``) when the pending runs or
        their reasons changed since it was last written (and once at the start)."""
        mono, wall = time.monotonic(), time.time()
        timeout_s = self.config.pending_timeout_s
        entries = []
        for first, run, why in self.pending.values():
            seen = wall - (mono - first)
            since = min(seen, wall - run.age_s(wall))
            run_dir = self.loc.uri(run.run_prefix.rstrip("/"))
            entries.append(PendingEntry(run_dir, run.run_id, why, seen, since + timeout_s))
        listed = sorted((e.run_dir, e.reason, round(e.reject_after or 0)) for e in entries)
        if listed != self._pending_listed:
            path = pending_path(self.config.state_dir)
            if write_pending(path, entries, writer=self.role, timeout_s=timeout_s):
                self._pending_listed = listed

    def _rank(self, key: str) -> bytes:
        """``key``'s place in this daemon's order (daemons start on different runs)."""
        return hashlib.blake2b(f"{self.daemon_id}\n{key}".encode(), digest_size=8).digest()

    def _replace_changed(self, result: PollResult) -> None:
        """Decide up to a poll's worth of the suspected changes (:mod:`.changes`)."""
        batch = list(self._suspects.values())[:MAX_POLL_RUNS]
        done = replace_changed(self.registrar, self.reads, self.loc, batch)
        for run in batch:
            self._suspects.pop(run.metadata_key, None)
        self._suspects.update({r.metadata_key: r for r in done.busy})
        self.ledger.remove("runs_d", done.taken_out)
        self.ledger.add("runs_d", done.replaced)
        self.ledger.forget_seen(done.forget)
        self.ledger.note_seen(done.seen)
        result.updated = tuple(done.replaced)
        result.validated += done.validated
        result.rejected += self._record_rejections(done.rejected)
        out = set(done.taken_out)  # noted once recorded, as in the poll: never skipped unrecorded
        self.ledger.note_rejected(
            {r.metadata_key: r.signature for r in batch if r.run_id in out and r.signature}
        )

    def _release_rejected(self, runs: dict[str, RunObject], result: PollResult) -> None:
        """Give back the claims on the runs this poll rejected (best effort). Another daemon
        validates a rejected run anyway (its ledger notes only its own rejections), so holding
        the claim would only keep it, or a ``sync`` on another host, waiting a lease."""
        kept = {
            *result.registered,
            *result.already,
            *(w.run_id for _, w, _ in self.pending.values()),
        }
        try:
            self.claims.release(sorted({r.run_id for r in runs.values()} - kept))
        except Exception as exc:  # noqa: BLE001 - the lease frees them anyway
            log.warning("iceberg.claims_release_failed", error=str(exc)[:300])

    def _record_rejections(self, rejected: list[Rejected]) -> list[Rejected]:
        """Append the rejections the table does not hold yet (one row per run and metadata
        version, whichever daemon saw it first); returns the new ones."""
        fresh = {rejection_key(r.run_dir, r.fingerprint): r for r in rejected}
        known = self.ledger.known("rejections_f", fresh)
        todo = {k: r for k, r in fresh.items() if k not in known}
        if not todo:
            return []
        rows = rejection_rows(list(todo.values()), self.daemon_id, utc_now())
        keys = list(todo)

        def act(tx: Any, add: list[str], props: dict[str, str]) -> None:
            wanted = set(add)
            tx.append(rows.filter(pa.array([k in wanted for k in keys])), snapshot_properties=props)

        done = append_once(self.registrar.catalog, "rejections_f", keys, act)
        self.ledger.add("rejections_f", keys)
        for k in done:
            r = todo[k]
            log.warning(
                "run.rejected",
                run_dir=r.run_dir,
                run_id=r.run_id,
                reason=r.reason,
                backend="iceberg",
            )
        return [todo[k] for k in done]

    def maintain(self) -> dict[str, dict[str, int]]:
        """One round of :class:`~quantbot_bus.iceberg.maintenance.Upkeep` (its own connections)."""
        from .maintenance import Upkeep

        return Upkeep(self.config, self.settings).run()

    def counts(self) -> dict[str, int]:
        return {
            "runs": self.ledger.count("runs_d"),
            "rejections": self.ledger.count("rejections_f"),
            "deleted": int(self.ledger.get("deleted", 0)),
        }
