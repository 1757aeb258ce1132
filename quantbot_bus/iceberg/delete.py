"""Runs deleted from the bucket, taken out of the Iceberg tables.

A full reconcile lists every run; a run ``runs_d`` holds (as the ledger knows it) that the
listing lacks is a candidate. It is deleted only when a HEAD of its ``metadata.json`` confirms
the object is gone: a listing alone is never the proof. Its rows leave the artifact tables
first (partitioned by ``run_id``, so whole data files are dropped and the deleted objects are
never read), then ``artifacts_f``, then ``runs_d``. A daemon killed half-way leaves the run in
``runs_d``, and the next reconcile finishes the job; deleting rows that are gone already changes
nothing, so two daemons deleting the same run do no harm.

Each delete commit lists its run ids in its snapshot summary
(:data:`~quantbot_bus.iceberg.tables.DELETED_PROPERTY`): a key's last mention decides whether a
table holds it (:func:`~quantbot_bus.iceberg.commit.present_keys`), so a run id uploaded again
after its deletion is registered again, and the ledger forgets deleted keys.
"""

from __future__ import annotations

import json
import random
import time
import warnings
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import structlog

from ..objectstore.location import NOT_FOUND, S3Location, error_code
from .commit import BACKOFF_S, MAX_ATTEMPTS, CommitConflict
from .tables import DELETED_PROPERTY, identifier

log = structlog.get_logger("quantbot_bus.iceberg")


def _in(run_ids: Iterable[str]) -> Any:
    from pyiceberg.expressions import In

    return In("run_id", sorted(set(run_ids)))  # type: ignore[call-arg,arg-type]


def confirm_gone(catalog: Any, client: Any, loc: S3Location, candidates: list[str]) -> list[str]:
    """The ``candidates`` (run ids in ``runs_d``) whose ``metadata.json`` no longer exists."""
    if not candidates:
        return []
    rows = (
        catalog.load_table(identifier("runs_d"))
        .scan(row_filter=_in(candidates), selected_fields=("run_id", "run_dir"))
        .to_arrow()
        .to_pylist()
    )
    bucket, ours = f"s3://{loc.bucket}/", loc.uri(loc.key_prefix())
    gone = []
    for row in rows:
        run_dir = str(row["run_dir"])
        if not run_dir.startswith(ours):
            continue  # registered from another root: not this daemon's to judge
        key = run_dir.removeprefix(bucket).rstrip("/") + "/metadata.json"
        try:
            client.head_object(Bucket=loc.bucket, Key=key)
        except Exception as exc:
            if error_code(exc) in NOT_FOUND:
                gone.append(str(row["run_id"]))
                continue
            raise
    return sorted(set(gone))


def delete_keys(catalog: Any, table_name: str, run_ids: list[str]) -> None:
    """Delete the rows of ``run_ids`` from ``table_name`` (a commit that loses to another
    daemon's reloads and deletes again)."""
    from pyiceberg.exceptions import CommitFailedException

    props = {DELETED_PROPERTY: json.dumps(sorted(set(run_ids)))}
    wait, cap = BACKOFF_S
    for attempt in range(1, MAX_ATTEMPTS + 1):
        table = catalog.load_table(identifier(table_name))
        tx = table.transaction()
        with warnings.catch_warnings():  # rows gone already: nothing to commit, as it should be
            warnings.filterwarnings("ignore", "Delete operation did not match any records")
            tx.delete(_in(run_ids), snapshot_properties=props)
        try:
            tx.commit_transaction()
            return
        except CommitFailedException as exc:
            log.info("iceberg.commit_lost", table=table_name, attempt=attempt, error=str(exc)[:200])
            time.sleep(wait * (1 + random.random()))
            wait = min(cap, wait * 2)
    raise CommitConflict(f"{table_name}: {MAX_ATTEMPTS} deletes in a row lost to other daemons")


def delete_runs(catalog: Any, run_ids: list[str]) -> None:
    """Take ``run_ids`` out of every table: artifact tables, ``artifacts_f``, ``runs_d``."""
    if not run_ids:
        return
    rows = (
        catalog.load_table(identifier("artifacts_f"))
        .scan(row_filter=_in(run_ids), selected_fields=("run_id", "name"))
        .to_arrow()
        .to_pylist()
    )
    per_table: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        per_table[str(row["name"])].append(str(row["run_id"]))
    for name, ids in sorted(per_table.items()):
        delete_keys(catalog, name, ids)
    delete_keys(catalog, "artifacts_f", run_ids)
    delete_keys(catalog, "runs_d", run_ids)
    for run_id in run_ids:
        log.info("run.deleted", run_id=run_id, backend="iceberg")
