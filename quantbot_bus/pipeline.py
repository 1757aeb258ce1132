"""The run pipeline: one object, :class:`Bus`, owns the working catalog and does every step.

scan → validate → plan → apply → publish → refresh exports. The daemon
(:mod:`quantbot_bus.daemon`), ``sync`` and ``rebuild`` are thin drivers of a :class:`Bus`: one
pending rule, one run-dir mapping, one ignore rule (:func:`quantbot_bus.ignore.is_ignored`).

**Exclusive.** :meth:`Bus.open` first takes the state-dir lock (:class:`~.statelock.StateLock`).
Only then is the working catalog opened, once, and never again by this process (POSIX locks
belong to the process: a second open and close of the file would drop DuckDB's lock). Readers
never touch it: they read the publication (:mod:`quantbot_bus.publication`).

**Thread-safe.** Every use of the catalog holds :attr:`Bus.lock` (the daemon's worker and
publisher share one Bus).

**Pending rule.** A run whose files are not complete yet (``Incomplete``) is pending; it is
rejected once its ``metadata.json`` (a seed run's ``run.json``) is older than
``pending_timeout_s`` and still incomplete (rechecked every ``pending_recheck_s``).

**Degraded.** A failing commit or publication (disk full, I/O error) sets :attr:`Bus.degraded`
to the reason (the daemon reports it in ``status``); nothing committed is lost: the next
publication copies every row newer than the last published one, and a batch that did not
commit is found again by the next scan.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import exports, ingest, pendingfile
from .catalog import Batch, BatchResult, Catalog, Rejection
from .catalog.store import move_aside
from .config import Config
from .contract import quick_fingerprint
from .contract.layout import marker_path
from .errors import CatalogError, ConfigError
from .exports.files import remove_legacy_exports
from .log import get_logger
from .publication import Publication, Published
from .statelock import StateLock

log = get_logger("quantbot_bus.pipeline")


class Bus:
    """The run pipeline over one working catalog and its publication. Use :meth:`open`."""

    def __init__(self, config: Config, lock: StateLock) -> None:
        self.config = config
        self.root = Path(config.root)
        self.lock = threading.RLock()
        self._state_lock = lock
        self.catalog: Catalog | None = None
        self.publication = Publication(Path(config.exports_dir), background=lock.role == "daemon")
        #: Why the last commit or publication failed; ``None`` when healthy.
        self.degraded: str | None = None
        self.publish_due = True  # readers get a generation at start even if nothing changed
        self._files: dict[str, Path] | None = None  # summary + user export files, when changed
        self._tables_changed = True
        #: Export segment files the state no longer names (retired by a refresh or a
        #: compaction) that the publication may still link: unlinked by :meth:`publish` once it
        #: has handed the publication a table list without them.
        self._retired: list[Path] = []

    @classmethod
    def open(cls, config: Config, *, role: str = "daemon") -> Bus:
        """Take the state-dir lock (:class:`BusyError` if held), open and migrate the catalog."""
        for d in (config.state_dir, config.exports_dir):
            Path(d).mkdir(parents=True, exist_ok=True)
        lock = StateLock(config.lock_path, role)
        lock.acquire()
        bus: Bus | None = None
        try:
            bus = cls(config, lock)
            if role == "rebuild":
                move_aside(Path(config.catalog_path).absolute())
            bus.catalog = Catalog.open(config.catalog_path, memory_limit=config.memory_limit)
            remove_legacy_exports(config)
        except BaseException:
            if bus is not None:
                bus.publication.close()
            lock.release()
            raise
        return bus

    def close(self) -> None:
        """Close the catalog and the publication, then release the state-dir lock."""
        with self.lock:
            self._close_catalog()
            self.publication.close()
        self._state_lock.release()

    def _close_catalog(self) -> None:
        if self.catalog is not None:
            with contextlib.suppress(Exception):
                self.catalog.close()
            self.catalog = None

    def __enter__(self) -> Bus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _cat(self) -> Catalog:
        if self.catalog is None:
            raise CatalogError("the catalog is not open (it is reopened on the next batch)")
        return self.catalog

    def reopen_catalog(self) -> None:
        """Close and open the working catalog again (after a failed batch)."""
        with self.lock:
            self._close_catalog()
            self.catalog = Catalog.open(
                self.config.catalog_path, memory_limit=self.config.memory_limit
            )
        log.info("catalog.reopened", path=str(self.config.catalog_path))

    # ------------------------------------------------------------------ scan + validate

    def examine(self, dirs: Iterable[str | os.PathLike[str]]) -> ingest.ScanOutcome:
        """Candidate directories (from events) → a batch + the pending runs."""
        with self.lock:
            return ingest.examine(self.config, self._cat(), dirs)

    def full_scan(self) -> ingest.ScanOutcome:
        """The whole root against the whole catalog."""
        with self.lock:
            return ingest.full_scan(self.config, self._cat())

    def expire_pending(
        self, pending: dict[str, str], batch: Batch, run_ids: dict[str, str]
    ) -> dict[str, str]:
        """The pending rule: a run still incomplete ``pending_timeout_s`` after its marker
        (metadata.json; a seed run's run.json) appeared is rejected (added to ``batch``, with
        its id from ``run_ids`` when known); returns the rest."""
        still: dict[str, str] = {}
        now = time.time()
        for run_dir, reason in pending.items():
            try:
                age = now - os.stat(marker_path(run_dir)).st_mtime
            except OSError:
                continue  # gone meanwhile: the next look sees that
            if age >= self.config.pending_timeout_s:
                batch.rejected.append(
                    Rejection(
                        run_dir=run_dir,
                        run_id=run_ids.get(run_dir),
                        reason=f"{reason} (still incomplete after {age:.0f} s)",
                        fingerprint=quick_fingerprint(Path(run_dir)),
                    )
                )
            else:
                still[run_dir] = reason
        return still

    # ------------------------------------------------------------------ apply + publish

    def commit(self, batch: Batch, *, publish: bool = True) -> BatchResult:
        """Apply one batch in one transaction, then publish it unless told not to."""
        if len(batch) == 0:
            return BatchResult()
        with self.lock:
            try:
                result = self._cat().apply_batch(batch)
            except Exception as exc:
                self._degrade("commit", exc)
                raise
            if self.degraded is not None and self.degraded.startswith("commit"):
                self.publish_due = True  # its publication clears it (and says recovered)
            if result.changed:
                self.publish_due = True
            if publish:
                self.try_publish()
            return result

    def try_publish(self) -> Published | None:
        """Publish if due; a failure is logged and kept as :attr:`degraded` (retried later)."""
        with self.lock:
            if not self.publish_due:
                return None
            try:
                return self.publish()
            except Exception as exc:  # noqa: BLE001 - readers keep the last good generation
                self._degrade("publish", exc)
                return None

    def publish(self, *, force: bool = False) -> Published | None:
        """A new generation with the catalog rows not yet published and the current export
        tables and files; raises on failure (readers keep the previous generation)."""
        with self.lock:
            catalog = self._cat()
            cursor = catalog.cursor()
            try:
                tables = None
                if self._tables_changed:
                    tables = exports.export_table_files(cursor, Path(self.config.exports_dir))
                published = self.publication.publish(
                    cursor,
                    catalog_id=catalog.catalog_id(),
                    export_tables=tables,
                    files=self._files,
                    force=force or self.publish_due,
                )
            finally:
                cursor.close()
            self._tables_changed = False
            self._files = None
            self.publish_due = False
            if tables is not None:
                self._unlink_retired()
            if self.degraded is not None:
                log.info("bus.recovered", was=self.degraded)
            self.degraded = None
            return published

    def _unlink_retired(self) -> None:
        """Remove the retired export segments (the publication has the table list without them)."""
        for path in self._retired:
            path.unlink(missing_ok=True)
        self._retired.clear()

    def _degrade(self, step: str, exc: BaseException) -> None:
        reason = f"{step} failed: {type(exc).__name__}: {exc}"
        if reason != self.degraded:
            log.error("bus.degraded", step=step, error=f"{type(exc).__name__}: {exc}")
        self.degraded = reason
        self.publish_due = True  # whatever failed, the next successful publication clears it

    # ------------------------------------------------------------------ exports

    def refresh_exports(self) -> dict[str, Any]:
        """One bounded export refresh (``more`` in the result asks for another).

        It runs on a cursor of its own **without** the Bus lock: its transaction writes only
        the export state (DuckDB runs it beside the batches' transactions, which write only
        ``catalog.*``), so a refresh — ≈ 2 s per 500-run chunk of a catch-up at 100k — never
        holds up registration. The segments it retires stay on disk until the next
        publication has handed the publication the new table list (:meth:`publish`): until then
        the publication's table list still names them, and any generation it makes meanwhile
        (its catalog compaction, the next one made ahead) links them."""
        with self.lock:
            cursor = self._cat().cursor()
            pending = list(self._retired)  # not orphans: the refresh leaves them alone
        retired: list[Path] = []
        try:
            status = exports.refresh(self.config, cursor, retired_out=retired, pending=pending)
        finally:
            cursor.close()
        with self.lock:
            if retired:
                self._retired.extend(retired)
                self._tables_changed = True
                self.publish_due = True
            changed = status.get("changed_runs", {})
            if changed.get("added") or changed.get("removed") or status.get("views_changed"):
                self._tables_changed = True
                self.publish_due = True
            return status

    def write_files(self, *, force: bool = False) -> float | None:
        """Write the due summary files and publish them with whatever is due, then the due user
        exports (read from that publication) and publish those; returns the seconds until a
        held-back file is due (or None). Never raises (a failed publication stays due)."""
        next_due: float | None = None
        try:
            with self.lock:
                cursor = self._cat().cursor()
            try:
                gens = exports.file_generations(cursor)
                summary = exports.write_files(
                    self.config, cursor, gens, kind="summary", force=force
                )
            finally:
                cursor.close()
            user: dict[str, Any] = {"written": [], "files": {}, "next_due_in_s": None}
            with self.lock:
                if summary["written"]:
                    self._files = {**self._current_files(), **summary["files"]}
                if summary["written"] or self.publish_due:
                    self.publish()  # the user exports below read this publication
            if self.config.exports:
                with self.publication.open_current() as reader:
                    user = exports.write_files(self.config, reader, gens, kind="user", force=force)
            else:  # none configured: only entries removed from the config go, no reader needed
                user = exports.write_files(self.config, None, gens, kind="user", force=force)
            with self.lock:
                # exactly the summaries and the configured user exports: a removed one goes
                files = {**summary["files"], **user["files"]}
                if files != self._current_files():
                    self._files = files
                    self.publish()
            dues = [d for d in (summary["next_due_in_s"], user["next_due_in_s"]) if d is not None]
            next_due = min(dues) if dues else None
        except Exception as exc:  # noqa: BLE001 - an export never fails registration
            log.error("export.failed", error=f"{type(exc).__name__}: {exc}")
        return next_due

    def _current_files(self) -> dict[str, Path]:
        store = Path(self.config.exports_dir).absolute() / exports.FILES_DIR
        return {name: store / f for name, f in self.publication.manifest.files.items()}

    def compact(self) -> None:
        """Merge small segments of the export tables and of the published catalog tables in
        the background: plan and commit hold the lock, the merged files are written without.
        The catalog segments are compacted by the publication (:meth:`Publication.compact`):
        in the daemon by its own thread after each publication, so a steady stream of
        one-segment batches never outgrows them; in one-shot runs here."""
        try:
            with self.lock:
                cursor = self._cat().cursor()
                try:
                    plans = exports.plan_compaction(cursor)
                finally:
                    cursor.close()
            written = exports.write_compaction(self.config, plans)
            if written:
                with self.lock:
                    cursor = self._cat().cursor()
                    try:
                        # the victims stay until the publication has the new table list
                        if exports.commit_compaction(
                            self.config, cursor, written, retired_out=self._retired
                        ):
                            self._tables_changed = True
                            self.publish_due = True
                            self.publish()
                    finally:
                        cursor.close()
            if not self.publication.background:
                self.publication.compact()  # in the daemon its own thread does this
        except Exception as exc:  # noqa: BLE001 - compaction never stops registration
            log.error("export.failed", export="compaction", error=f"{type(exc).__name__}: {exc}")

    def counts(self) -> dict[str, int]:
        """Live runs, deleted runs and open rejections (what the status shows)."""
        with self.lock:
            return self._cat().counts(artifacts=False)

    # ------------------------------------------------------------------ one-shot drivers

    def reconcile(self) -> BatchResult:
        """``sync``/``rebuild``: the whole root once, the exports until caught up, and one
        publication at the end (the batch, the export tables and the summary files)."""
        t0 = time.perf_counter()
        outcome = self.full_scan()
        pending = self.expire_pending(outcome.pending, outcome.batch, outcome.pending_ids)
        for run_dir, reason in pending.items():
            log.info("run.pending", run_dir=run_dir, reason=reason)
        writer = self._state_lock.role
        pendingfile.write_scan_pending(self.config, pending, outcome.pending_ids, writer=writer)
        result = self.commit(outcome.batch, publish=False)
        result.unchanged = outcome.unchanged + result.unchanged
        result.pending = pending
        try:
            while self.refresh_exports().get("more"):
                pass
            self.compact()
        except Exception as exc:  # noqa: BLE001 - an export never fails registration
            log.error("export.failed", error=f"{type(exc).__name__}: {exc}")
        self.publish_due = True  # a sync always publishes
        self.write_files(force=True)
        if self.publish_due:  # write_files' publication failed (logged): raise this time
            self.publish(force=True)
        ms, n = round((time.perf_counter() - t0) * 1000, 1), len(pending)
        log.info("rescan.done", runs=outcome.seen, skipped=outcome.skipped, pending=n, ms=ms)
        return result


def sync(config: Config) -> Any:
    """One-shot reconcile of the whole root, then publish and refresh the exports (with
    ``catalog = "iceberg"``: one reconcile of the bucket into the Iceberg tables)."""
    if config.catalog == "iceberg":
        from .iceberg.sync import sync_once

        return sync_once(config)
    with Bus.open(config, role="sync") as bus:
        return bus.reconcile()


def rebuild(config: Config) -> BatchResult:
    """Move the working catalog aside (``<name>.bak``), build a fresh one from disk, publish."""
    if config.catalog == "iceberg":
        raise ConfigError(
            "rebuild recreates the local DuckDB catalog; the Iceberg tables are shared by every "
            "daemon and are not rebuilt (use `quantbot-bus sync` to reconcile the bucket)"
        )
    root = os.path.abspath(os.fspath(config.root))
    if not os.path.isdir(root):
        raise ConfigError(
            f"the artifacts root {root} does not exist or is not a directory; "
            "refusing to rebuild the catalog from nothing"
        )
    with Bus.open(config, role="rebuild") as bus:
        return bus.reconcile()
