"""Registered runs whose objects changed: the new version replaces the old in every table.

The contract lets a producer change a finished run by writing it again, ``metadata.json`` last
(docs/contract.md, section 2). A daemon suspects such a change when a full reconcile lists a
registered run whose ``metadata.json`` ETag or listing signature (every object below the run)
differs from what its ledger recorded (:meth:`~quantbot_bus.iceberg.ledger.Ledger.changed`).

Suspects are decided under the deletion lock (:mod:`quantbot_bus.iceberg.locks`; while another
daemon holds it, they wait for a later poll): each run is validated again and its fingerprint
(``metadata.json``'s ETag and each file's size) compared with the one ``runs_d`` holds, read now.
The same fingerprint: nothing to do (an unrelated object was added, say). Another: the old
version's rows leave every table (:func:`~quantbot_bus.iceberg.delete.delete_runs`) and the new
version is registered, still under the lock. A new version that is invalid or incomplete takes the
old one out too (its rows no longer describe the objects, and an Iceberg reader of a file
registered in place would fail on its changed size) and is recorded as rejected. A valid run
``runs_d`` no longer holds (a replacement cut short between its delete and its registration by
a failure or a kill: its suspects stay for the next poll) is registered; a run ``runs_d`` holds
from another directory, or an invalid one it no longer holds, is left to the usual paths.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import structlog

from ..objectstore.listing import RunObject
from ..objectstore.location import S3Location
from ..objectstore.reads import ObjectReads
from ..objectstore.validate import VALIDATE_THREADS, ObjectRun, validate_object_run
from .delete import delete_runs, registered_rows
from .locks import deletion_lock
from .register import Registrar
from .rows import Rejected

log = structlog.get_logger("quantbot_bus.iceberg")


@dataclass
class Changes:
    """What deciding the suspects did. ``seen``: metadata key -> (ETag, listing signature) of
    runs now registered as listed (replaced or found unchanged); ``forget``: keys whose
    record no longer applies (taken out, or not in ``runs_d``)."""

    replaced: list[str] = field(default_factory=list)
    #: the new versions of the ``replaced`` runs
    validated: list[ObjectRun] = field(default_factory=list)
    taken_out: list[str] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    seen: dict[str, tuple[str, str]] = field(default_factory=dict)
    forget: list[str] = field(default_factory=list)
    #: the suspects left undecided: another daemon held the deletion lock
    busy: list[RunObject] = field(default_factory=list)


def replace_changed(
    registrar: Registrar, reads: ObjectReads, loc: S3Location, suspects: list[RunObject]
) -> Changes:
    """Decide ``suspects`` (see the module doc); at most one per run id."""
    out = Changes()
    by_id: dict[str, RunObject] = {}
    for run in suspects:
        by_id.setdefault(run.run_id, run)
    if not by_id:
        return out
    catalog: Any = registrar.catalog
    with deletion_lock(catalog.engine) as locked:
        if not locked:
            out.busy = list(by_id.values())
            return out
        runs = list(by_id.values())
        current = {str(r["run_id"]): r for r in registered_rows(catalog, [r.run_id for r in runs])}
        with ThreadPoolExecutor(VALIDATE_THREADS) as pool:
            verdicts = list(pool.map(lambda r: validate_object_run(reads, loc, r), runs))
        new: list[ObjectRun] = []
        for run, verdict in zip(runs, verdicts, strict=True):
            run_dir = loc.uri(run.run_prefix.rstrip("/"))
            row = current.get(run.run_id)
            if row is None and isinstance(verdict, ObjectRun):
                new.append(verdict)  # out of every table (a replacement cut short): registered
                continue
            if row is None or str(row["run_dir"]).rstrip("/") != run_dir:
                out.forget.append(run.metadata_key)
                continue
            if isinstance(verdict, ObjectRun):
                if verdict.info.fingerprint == row["fingerprint"]:
                    out.seen[run.metadata_key] = (verdict.etag, run.signature)
                else:
                    new.append(verdict)
                continue
            out.rejected.append(
                Rejected(
                    run_dir,
                    run.run_id,
                    f"{verdict.reason} (the run changed after it was registered; its old "
                    "version is taken out of the tables)",
                )
            )
            out.taken_out.append(run.run_id)
            out.forget.append(run.metadata_key)
        if not (new or out.taken_out):
            return out
        held = [r.info.run_id for r in new if r.info.run_id in current] + out.taken_out
        delete_runs(catalog, held, locked, event=None)
        done = registrar.register(new)
        out.rejected += done.rejected
        keys = {r.info.run_id: r for r in new}
        for run_id in [*done.registered, *done.already]:
            listed = by_id[run_id]
            out.seen[listed.metadata_key] = (keys[run_id].etag, listed.signature)
        out.replaced = done.registered + done.already
        out.validated = [keys[run_id] for run_id in out.replaced]
        for bad in done.rejected:  # a schema conflict: the old version is out, the new one too
            if bad.run_id is not None:
                out.taken_out.append(bad.run_id)
                out.forget.append(by_id[bad.run_id].metadata_key)
    for run_id in out.replaced:
        log.info("run.updated", run_id=run_id, backend="iceberg")
    return out
