"""Runs deleted from the bucket, taken out of the Iceberg tables.

A full reconcile lists every run; a run ``runs_d`` holds (as the ledger knows it) that the
listing lacks is a candidate. It is deleted only when a HEAD of its ``metadata.json`` (a seed
run's ``run.json``) confirms the object is gone: a listing alone is never the proof. Its rows
leave the artifact tables first (partitioned by ``run_id``, so whole data files are dropped and
the deleted objects are never read: the files are picked by their partition value, not by row;
an artifact's table is named as registration names it, ``truth/paths`` → ``truth__paths``), then
``artifacts_f``, then ``runs_d``. A daemon killed half-way leaves the run in ``runs_d``, and the
next reconcile finishes the job; deleting rows that are gone already changes nothing, so two
daemons deleting the same run do no harm.

Each delete commit lists its run ids in its snapshot summary
(:data:`~quantbot_bus.iceberg.tables.DELETED_PROPERTY`): a key's last mention decides whether a
table holds it (:func:`~quantbot_bus.iceberg.commit.present_keys`), so a run id uploaded again
after its deletion is registered again, and the ledger forgets deleted keys.
"""

from __future__ import annotations

import json
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog

from ..contract.layout import RUN_JSON, is_seed_dir, run_id_of
from ..exports.store import export_table_name
from ..objectstore.listing import BadKey, RunObject
from ..objectstore.location import NOT_FOUND, S3Location, error_code
from .commit import commit_retrying
from .ledger import Ledger
from .locks import DeletionLock, deletion_lock
from .tables import DELETED_PROPERTY, identifier

log = structlog.get_logger("quantbot_bus.iceberg")

#: HEAD requests in flight while deletions are confirmed.
HEAD_THREADS = 16


def _in(run_ids: Iterable[str]) -> Any:
    from pyiceberg.expressions import In

    return In("run_id", sorted(set(run_ids)))  # type: ignore[call-arg,arg-type]


def registered_rows(catalog: Any, run_ids: list[str]) -> list[dict[str, Any]]:
    """``run_id``, ``run_dir`` and ``fingerprint`` of those ``run_ids`` ``runs_d`` holds now."""
    if not run_ids:
        return []
    rows: list[dict[str, Any]] = (
        catalog.load_table(identifier("runs_d"))
        .scan(row_filter=_in(run_ids), selected_fields=("run_id", "run_dir", "fingerprint"))
        .to_arrow()
        .to_pylist()
    )
    return rows


def _manifest_key(run_key: str) -> str:
    """The object whose absence proves a run deleted: its ``metadata.json``; a seed run's
    (``YYYY-MM/run_id=<id>``) ``run.json``."""
    return f"{run_key}/{RUN_JSON if is_seed_dir(run_key) else 'metadata.json'}"


def confirm_gone(
    catalog: Any,
    client: Any,
    loc: S3Location,
    candidates: list[str],
    *,
    limit: int = 500,
    elsewhere: Callable[[list[str]], None] | None = None,
) -> list[str]:
    """Up to ``limit`` of the ``candidates`` (run ids in ``runs_d`` below this root, as read
    now) whose ``metadata.json`` (a seed run's ``run.json``) no longer exists (HEADs in
    threads); the rest wait for the next reconcile, so one poll stays short however many runs
    were deleted at once. Candidates ``runs_d`` holds from another root are not this daemon's
    to judge: they are handed to ``elsewhere``. Call it holding the deletion lock
    (:mod:`quantbot_bus.iceberg.locks`), and delete what it returns before letting the lock go."""
    if not candidates:
        return []
    rows = registered_rows(catalog, candidates)
    bucket, ours = f"s3://{loc.bucket}/", loc.uri(loc.key_prefix())
    keys = {
        str(row["run_id"]): _manifest_key(str(row["run_dir"]).removeprefix(bucket).rstrip("/"))
        for row in rows
        if str(row["run_dir"]).startswith(ours)
    }
    if elsewhere is not None:
        elsewhere(sorted(str(row["run_id"]) for row in rows if str(row["run_id"]) not in keys))
    todo = sorted(keys)[:limit]

    def gone(run_id: str) -> bool:
        try:
            client.head_object(Bucket=loc.bucket, Key=keys[run_id])
        except Exception as exc:
            if error_code(exc) in NOT_FOUND:
                return True
            raise
        return False

    with ThreadPoolExecutor(HEAD_THREADS) as pool:
        return [r for r, is_gone in zip(todo, pool.map(gone, todo), strict=True) if is_gone]


def delete_keys(
    catalog: Any, table_name: str, run_ids: list[str], *, by_partition: bool = False
) -> None:
    """Delete the rows of ``run_ids`` from ``table_name`` (a commit that loses to another
    daemon's reloads and deletes again). ``by_partition``: the table is partitioned by
    ``run_id``, so the data files whose partition is one of ``run_ids`` are dropped whole
    without being read (pyiceberg's row delete reads a file whose truncated ``run_id`` bounds
    cannot prove it holds those runs alone, and an artifact file registered in place is the
    very object that was deleted)."""
    gone = set(run_ids)
    props = {DELETED_PROPERTY: json.dumps(sorted(gone))}

    def stage(table: Any) -> tuple[Any, None] | None:
        tx = table.transaction()
        if by_partition:
            tasks = table.scan(row_filter=_in(gone)).plan_files()  # manifests only
            files = [t.file for t in tasks if t.file.partition[0] in gone]
            if not files:
                return None
            with tx.update_snapshot(snapshot_properties=props).overwrite() as overwrite:
                for data_file in files:
                    overwrite.delete_data_file(data_file)
        else:
            with warnings.catch_warnings():  # rows gone already: nothing to commit
                warnings.filterwarnings("ignore", "Delete operation did not match any records")
                tx.delete(_in(gone), snapshot_properties=props)
        return tx, None

    commit_retrying(catalog, table_name, stage)


def delete_runs(
    catalog: Any,
    run_ids: list[str],
    lock: DeletionLock,
    *,
    event: str | None = "run.deleted",
) -> None:
    """Take ``run_ids`` out of every table: artifact tables, ``artifacts_f``, ``runs_d``, holding
    ``lock`` (checked before each table: :class:`~.locks.LockLostError` stops the deletion);
    logs ``event`` per run when given."""
    if not run_ids:
        return
    rows = (
        catalog.load_table(identifier("artifacts_f"))
        .scan(row_filter=_in(run_ids), selected_fields=("run_id", "name"))
        .to_arrow()
        .to_pylist()
    )
    per_table: dict[str, list[str]] = defaultdict(list)
    for row in rows:  # an artifact's table: its name as the registration maps it
        per_table[export_table_name(str(row["name"]))].append(str(row["run_id"]))
    for name, ids in sorted(per_table.items()):
        lock.check()
        delete_keys(catalog, name, ids, by_partition=True)
    lock.check()
    delete_keys(catalog, "artifacts_f", run_ids)
    lock.check()
    delete_keys(catalog, "runs_d", run_ids)
    if event:
        for run_id in run_ids:
            log.info(event, run_id=run_id, backend="iceberg")


def take_out_deleted(
    ledger: Ledger,
    catalog: Any,
    client: Any,
    loc: S3Location,
    found: list[RunObject | BadKey],
    limit: int,
) -> list[str]:
    """Take the runs a full listing ``found`` no longer has out of the tables (at most
    ``limit``), holding the deletion lock; returns their run ids. A registered run id is a
    candidate when the listing lacks it, or when the directory it was registered from is gone
    while another directory of it is listed (the ledger's ``seen`` keys)."""
    listed = {f.run_id for f in found if isinstance(f, RunObject)}
    registered = ledger.all("runs_d")
    vanished = ledger.seen_missing(f.metadata_key for f in found if isinstance(f, RunObject))
    id_of = {k: run_id_of(k.rsplit("/", 1)[0]) for k in vanished}
    # runs another root registered (the tables may be shared) are looked up once, not at
    # every reconcile
    candidates = sorted(
        ((registered - listed) | (set(id_of.values()) & registered)) - ledger.elsewhere()
    )
    gone: list[str] = []
    if candidates:
        with deletion_lock(catalog.engine) as locked:
            if not locked:  # another daemon is deleting: the next reconcile looks again
                log.info("iceberg.deletion_lock_busy", candidates=len(candidates))
                return []
            gone = confirm_gone(
                catalog, client, loc, candidates, limit=limit, elsewhere=ledger.note_elsewhere
            )
            delete_runs(catalog, gone, locked)
    if gone:
        ledger.remove("runs_d", gone)
        ledger.put("deleted", ledger.get("deleted", 0) + len(gone))
    # every candidate looked at: a vanished key is done with (a later reconcile would only
    # HEAD its run's registered directory again); else those of runs still registered wait
    still = set() if len(candidates) <= limit else registered - set(gone)
    ledger.forget_seen([k for k, run_id in id_of.items() if run_id not in still])
    return gone
