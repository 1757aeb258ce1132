"""A batch of changes to the catalog, and how it is applied: one transaction, named steps.

:func:`apply_batch` inserts/updates the valid runs (Arrow inserts), soft-deletes ``gone`` run
dirs, upserts rejections and resolves rejections of runs that became valid, all in ONE
transaction; every row it writes carries the batch's sequence number (``_seq``; a run also
``_aseq``). Idempotent: an unchanged run (same fingerprint, not deleted) is a no-op; a run_id
already registered from another live run_dir is a conflict (a rejection with a clear reason,
never an overwrite). After COMMIT it logs ``run.registered`` (run_id, run_type, latency_ms from
the metadata.json mtime), ``run.updated``, ``run.deleted``, ``run.rejected`` and
``batch.committed``.

Registration rules: a deleted run that reappears (same or another dir) is undeleted and counted
as registered; a run whose id leaves one dir (in ``gone``) and appears in another in the same
batch is a move, counted as updated; a live run whose dir is rejected (or now holds another run
id) is soft-deleted; an open rejection whose dir is in ``gone`` is resolved. Within one batch, a
dir listed as valid wins over the same dir in ``gone``/``rejected``.
"""

# ruff: noqa: S608 - SQL text here is built from this module's constants; every value is bound.

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from ..contract import RunInfo
from ..errors import CatalogError
from ..log import get_logger
from ..timeutil import utc_naive
from .rows import (
    ARTIFACT_FIELDS,
    INSERT_ARTIFACTS,
    INSERT_RUNS,
    RUN_FIELDS,
    UPSERT_REJECTIONS,
    arrow_table,
    artifact_rows,
    rejections_table,
    run_row,
)
from .text import db_text

if TYPE_CHECKING:
    from .store import Catalog

log = get_logger("quantbot_bus.catalog")


@dataclass(frozen=True)
class KnownRun:
    run_id: str
    run_dir: str
    fingerprint: str
    deleted: bool


@dataclass(frozen=True)
class Rejection:
    run_dir: str
    run_id: str | None
    reason: str
    fingerprint: str | None = None  # quick_fingerprint at rejection; unchanged => not retried


@dataclass
class Batch:
    valid: list[RunInfo] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)  # run_dirs that no longer exist
    rejected: list[Rejection] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.valid) + len(self.gone) + len(self.rejected)


@dataclass
class BatchResult:
    registered: list[str] = field(default_factory=list)  # run_ids new (or undeleted)
    updated: list[str] = field(default_factory=list)  # run_ids whose fingerprint changed
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)  # run_ids soft-deleted
    rejected: list[Rejection] = field(default_factory=list)  # incl. run_id conflicts
    resolved: list[str] = field(default_factory=list)  # run_dirs whose open rejection closed
    ms: float = 0.0
    # Incomplete run dirs left for later (run_dir -> reason); filled by the ingest step.
    pending: dict[str, str] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        """Whether the batch wrote rows readers see (a publication is due)."""
        return bool(
            self.registered or self.updated or self.deleted or self.rejected or self.resolved
        )


def apply_batch(catalog: Catalog, batch: Batch) -> BatchResult:
    """Apply ``batch`` to ``catalog`` in one transaction (see the module docstring).

    Order inside the transaction: soft-delete ``gone`` dirs (and close their rejections);
    classify each valid run against the catalog (new, unchanged, changed, undeleted, moved,
    or a run_id conflict); soft-delete live runs whose dir is now rejected or holds another
    run id; replace changed runs and their artifacts (Arrow inserts); resolve rejections of
    dirs that are valid now; upsert the rejections. Any error rolls everything back and
    raises :class:`CatalogError`.
    """
    t0 = time.perf_counter()
    if len(batch) == 0:
        return BatchResult()
    tx = _Transaction(catalog.con, batch, now=utc_naive(), seq=catalog.seq + 1)
    try:
        tx.con.execute("BEGIN")
        tx.soft_delete_gone()
        tx.classify_valid()
        tx.retire_replaced_dirs()
        tx.write_runs()
        tx.write_rejections()
        tx.con.execute("COMMIT")
        catalog.seq = tx.seq
    except BaseException as exc:
        try:
            tx.con.execute("ROLLBACK")
        except duckdb.Error:
            pass
        if not isinstance(exc, Exception):
            raise
        raise CatalogError(
            f"could not apply a batch of {len(batch)} changes to the catalog {catalog.path} "
            f"(nothing was written): {exc}"
        ) from exc
    finally:
        tx.unregister()
    result = tx.outcome(t0)
    _log_committed(len(batch), result, tx.registered_runs, tx.updated_runs)
    return result


class _Transaction:
    """The state of one batch inside its transaction: what it found, what it writes."""

    def __init__(
        self, con: duckdb.DuckDBPyConnection, batch: Batch, *, now: dt.datetime, seq: int
    ) -> None:
        self.con = con
        self.now = now
        self.seq = seq  # every row this batch writes carries it (see SEQ_COLUMNS)
        self._registered: list[str] = []
        self.result = BatchResult()

        self.valid_by_dir: dict[str, RunInfo] = {}
        for run in batch.valid:
            self.valid_by_dir[str(run.run_dir)] = run
        self.gone = [
            d for d in dict.fromkeys(str(g) for g in batch.gone) if d not in self.valid_by_dir
        ]
        self.rejections: dict[str, Rejection] = {}
        for rej in batch.rejected:
            if rej.run_dir not in self.valid_by_dir:
                self.rejections[rej.run_dir] = rej
        # Valid runs never have such names (the contract rejects them); gone dirs and
        # rejections may: they are stored as db_text.
        self.gone_db = [db_text(d) for d in self.gone]

        self.registered_runs: list[RunInfo] = []
        self.updated_runs: list[RunInfo] = []
        self.deleted_now: list[str] = []
        self.run_rows: list[dict[str, Any]] = []
        self.artifact_rows: list[dict[str, Any]] = []
        self.replace_ids: list[str] = []
        self.displaced: list[str] = []
        self.ok_dirs: list[str] = []

    # --- Arrow tables exposed to SQL for the time of the batch ------------------------------

    def _register(self, name: str, table: pa.Table) -> None:
        """Expose an Arrow table to SQL under a fixed ``_qb_*`` name for this batch."""
        self.con.complete()  # duckdb 2: register() refuses while a result is left unread
        self.con.register(name, table)
        self._registered.append(name)

    def _register_column(self, name: str, column: str, values: Sequence[str]) -> None:
        self._register(name, pa.table({column: pa.array(list(values), pa.string())}))

    def unregister(self) -> None:
        for name in self._registered:
            try:
                self.con.unregister(name)
            except duckdb.Error:
                pass
        self._registered = []

    # --- the steps, in the order apply_batch runs them --------------------------------------

    def soft_delete_gone(self) -> None:
        """1. run dirs that are gone: soft-delete their runs, close their rejections."""
        if not self.gone:
            return
        self._register_column("_qb_gone", "run_dir", self.gone_db)
        self.deleted_now += self._soft_delete_dirs_in("_qb_gone")
        self._resolve_rejections_in("_qb_gone")

    def classify_valid(self) -> None:
        """2. classify the valid runs against what the catalog knows of their ids and dirs."""
        if not self.valid_by_dir:
            return
        self._register(
            "_qb_keys",
            pa.table(
                {
                    "run_id": pa.array([r.run_id for r in self.valid_by_dir.values()], pa.string()),
                    "run_dir": pa.array(list(self.valid_by_dir), pa.string()),
                }
            ),
        )
        # two semi joins, not one OR of them (a scan of the whole table each batch)
        cols = "run_id, run_dir, fingerprint, deleted_at IS NOT NULL, first_registered_at"
        existing = self.con.execute(
            f"SELECT {cols} FROM catalog.runs_d "
            "WHERE run_id IN (SELECT run_id FROM _qb_keys) UNION "
            f"SELECT {cols} FROM catalog.runs_d "
            "WHERE run_dir IN (SELECT run_dir FROM _qb_keys)"
        ).fetchall()
        by_id = {row[0]: row for row in existing}
        live_id_by_dir = {row[1]: row[0] for row in existing if not row[3]}
        claimed: dict[str, str] = {}  # run_id -> run_dir, within this batch
        for run_dir, run in self.valid_by_dir.items():
            self._classify(run_dir, run, by_id.get(run.run_id), claimed, live_id_by_dir)

    def _classify(
        self,
        run_dir: str,
        run: RunInfo,
        prior: tuple[Any, ...] | None,
        claimed: dict[str, str],
        live_id_by_dir: dict[str, str],
    ) -> None:
        """One valid run: a conflict, unchanged, or a row to write (new, changed, undeleted or
        moved); ``prior`` is the catalog's row of its run id."""
        now = self.now
        owner_dir = claimed.get(run.run_id)
        if owner_dir is None and prior is not None and not prior[3]:
            owner_dir = prior[1] if prior[1] != run_dir else None
        if owner_dir is not None:
            self.rejections[run_dir] = Rejection(
                run_dir=run_dir,
                run_id=run.run_id,
                reason=(
                    f"run_id {run.run_id} is already registered from {owner_dir}; "
                    "run ids must be unique across run types"
                ),
                fingerprint=run.fingerprint,
            )
            return
        claimed[run.run_id] = run_dir
        self.ok_dirs.append(run_dir)
        if prior is not None and not prior[3] and prior[2] == run.fingerprint:
            self.result.unchanged.append(run.run_id)
            return
        first_registered = now
        if prior is not None:
            self.replace_ids.append(run.run_id)
            first_registered = prior[4]
            if not prior[3] or run.run_id in self.deleted_now:
                self.updated_runs.append(run)  # changed in place, or moved this batch
            else:
                self.registered_runs.append(run)  # came back after a soft delete
        else:
            self.registered_runs.append(run)
        other = live_id_by_dir.get(run_dir)
        if other is not None and other != run.run_id:
            self.displaced.append(other)  # this dir now holds a different run id
        self.run_rows.append(run_row(run, first_registered, now, self.seq))
        self.artifact_rows.extend(artifact_rows(run, now, self.seq))

    def retire_replaced_dirs(self) -> None:
        """3. a live run whose dir is now rejected, or holds another run id, is not live."""
        if self.rejections:
            self._register_column("_qb_rejdirs", "run_dir", [db_text(d) for d in self.rejections])
            self.deleted_now += self._soft_delete_dirs_in("_qb_rejdirs")
        if self.displaced:
            self._register_column("_qb_displaced", "run_id", self.displaced)
            self.con.execute(
                "UPDATE catalog.runs_d SET deleted_at = ?, _seq = ? WHERE deleted_at IS NULL "
                "AND run_id IN (SELECT run_id FROM _qb_displaced)",
                [self.now, self.seq],
            )
            self.deleted_now += self.displaced

    def write_runs(self) -> None:
        """4. write the new and changed runs and their artifacts: Arrow in, one statement each."""
        if self.replace_ids:
            self._register_column("_qb_replace", "run_id", self.replace_ids)
            self.con.execute(
                "DELETE FROM catalog.artifacts_f WHERE run_id IN (SELECT run_id FROM _qb_replace)"
            )
            self.con.execute(
                "DELETE FROM catalog.runs_d WHERE run_id IN (SELECT run_id FROM _qb_replace)"
            )
        if self.run_rows:
            self._register("_qb_runs", arrow_table(self.run_rows, RUN_FIELDS))
            self.con.execute(INSERT_RUNS)
        if self.artifact_rows:
            self._register("_qb_artifacts", arrow_table(self.artifact_rows, ARTIFACT_FIELDS))
            self.con.execute(INSERT_ARTIFACTS)

    def write_rejections(self) -> None:
        """5. rejections: resolve those whose dir is valid now, upsert the new ones."""
        if self.ok_dirs:
            self._register_column("_qb_ok", "run_dir", self.ok_dirs)
            self._resolve_rejections_in("_qb_ok")
        if self.rejections:
            self._register("_qb_rejections", rejections_table(self.rejections.values()))
            self.con.execute(UPSERT_REJECTIONS, [self.now, self.now, self.seq])

    def _soft_delete_dirs_in(self, dirs: str) -> list[str]:
        """Soft-delete the live runs whose run_dir is in the registered table ``dirs``; returns
        their run ids."""
        return [
            r[0]
            for r in self.con.execute(
                "UPDATE catalog.runs_d SET deleted_at = ?, _seq = ? WHERE deleted_at IS NULL "
                f"AND run_dir IN (SELECT run_dir FROM {dirs}) RETURNING run_id",
                [self.now, self.seq],
            ).fetchall()
        ]

    def _resolve_rejections_in(self, dirs: str) -> None:
        """Resolve the open rejections whose run_dir is in the registered table ``dirs``."""
        self.result.resolved += [
            r[0]
            for r in self.con.execute(
                "UPDATE catalog.rejections_f SET resolved_at = ?, _seq = ? "
                f"WHERE resolved_at IS NULL AND run_dir IN (SELECT run_dir FROM {dirs}) "
                "RETURNING run_dir",
                [self.now, self.seq],
            ).fetchall()
        ]

    # --- after COMMIT ------------------------------------------------------------------------

    def outcome(self, t0: float) -> BatchResult:
        """What the committed batch did (``t0``: when it started, for ``ms``)."""
        result = self.result
        moved = {r.run_id for r in self.updated_runs}
        result.deleted = [rid for rid in dict.fromkeys(self.deleted_now) if rid not in moved]
        result.registered = [r.run_id for r in self.registered_runs]
        result.updated = [r.run_id for r in self.updated_runs]
        result.rejected = list(self.rejections.values())
        result.ms = (time.perf_counter() - t0) * 1000.0
        return result


def _log_committed(
    n: int, result: BatchResult, registered: Sequence[RunInfo], updated: Sequence[RunInfo]
) -> None:
    """The stable log events of a committed batch of ``n`` changes."""
    commit_ns = time.time_ns()
    for run in registered:
        log.info(
            "run.registered",
            run_id=run.run_id,
            run_type=run.run_type,
            latency_ms=round(max(0, commit_ns - run.metadata_mtime_ns) / 1e6, 1),
        )
    for run in updated:
        log.info("run.updated", run_id=run.run_id, run_type=run.run_type)
    for run_id in result.deleted:
        log.info("run.deleted", run_id=run_id)
    for rej in result.rejected:
        log.warning("run.rejected", run_dir=rej.run_dir, run_id=rej.run_id, reason=rej.reason)
    log.info(
        "batch.committed",
        n=n,
        ms=round(result.ms, 1),
        registered=len(result.registered),
        updated=len(result.updated),
        unchanged=len(result.unchanged),
        deleted=len(result.deleted),
        rejected=len(result.rejected),
    )
