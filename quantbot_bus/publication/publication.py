"""The :class:`Publication`: the generations under ``exports_dir``, published one after another.

One instance per process that owns the catalog. :meth:`Publication.publish` copies the catalog
rows newer than the last publication into new segments, brings the generation made ahead to the
new manifest and swaps it in. Afterwards, in the daemon, the :mod:`.preparer` thread compacts
catalog segments, makes the next generation ahead and collects superseded generations; a
one-shot process (``sync``, ``rebuild``: one publication, two with a changed user export) only
collects, since a generation made ahead would be removed unseen when it closes. Every step that
changes the manifest or a generation holds the internal lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import shutil
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import duckdb

from ..catalog import open_reader
from ..errors import CatalogError
from ..fsutil import fsync_dir
from ..log import get_logger
from . import compaction
from .gc import collect
from .generation import fill, gen_dir, seg_path, swap, tables_of
from .layout import (
    CATALOG_TABLES,
    COMPACTION_ROUNDS,
    GC_BATCH,
    GC_INTERVAL_S,
    GEN_DIR,
    GRACE_S,
    MANIFEST,
    PADS_NAME,
    STORE_DIR,
    VIEWS_NAME,
    Manifest,
    Published,
    Segment,
)
from .preparer import Preparer
from .recovery import load
from .segments import copy_new_rows, retired
from .views import ViewsWriter, views_key

log = get_logger("quantbot_bus.publication")


class Publication:
    """The generations under ``exports_dir``; one instance per process that owns the catalog.

    Thread-safe: :meth:`publish` and the compaction swap are serialised by an internal lock.
    """

    def __init__(
        self, exports_dir: Path, *, grace_s: float = GRACE_S, background: bool = False
    ) -> None:
        self.dir = Path(exports_dir).absolute()
        self.grace_s = grace_s
        self._lock = threading.RLock()
        self._last_gc = 0.0
        self._views_key = ""
        self._key_files: dict[str, str] | None = None
        self._pins: dict[int, int] = {}  # generations this process reads (see open_current)
        self._prepared: tuple[int, str, int] | None = None  # (gen, views key, layout) made ahead
        self._seg_path = functools.partial(seg_path, self.dir)
        for d in (
            self.dir / GEN_DIR,
            self.dir / STORE_DIR / "catalog",
            self.dir / STORE_DIR / "files",
        ):
            d.mkdir(parents=True, exist_ok=True)
        self.manifest = load(self.dir)
        # every views file has the installed one's header (see .views): readers never mix two
        self._views = ViewsWriter(self.dir / VIEWS_NAME, self.dir / STORE_DIR / PADS_NAME)
        self._tables: dict[str, list[Path]] = tables_of(self.dir, self.manifest.gen)
        # The daemon's next generation is made ahead after each publication by a thread of its
        # own, so the publishing thread goes back to work at once (see the module doc).
        self.background = background
        self._closed = False
        self._preparer: Preparer | None = None
        if background:
            self._preparer = Preparer(self._prepare_round, lambda: self._closed)

    def close(self) -> None:
        """Stop making generations ahead and remove the one made (nobody has seen it)."""
        self._closed = True
        if self._preparer is not None:
            self._preparer.stop()
        with self._lock:
            if self._prepared is not None:
                shutil.rmtree(gen_dir(self.dir, self._prepared[0]), ignore_errors=True)
                self._prepared = None
            self._views.close()

    def _prepare_round(self) -> None:
        """What the preparer thread does after a publication."""
        if not self._closed:
            self.compact()  # its own rounds take and release the lock
        with self._lock:  # released in between: a publication waiting goes first
            if not self._closed:
                self._prepare_next()
        with self._lock:
            if not self._closed:
                self._maybe_gc()

    # ------------------------------------------------------------------ publish

    def publish(
        self,
        cursor: duckdb.DuckDBPyConnection,
        *,
        catalog_id: str,
        export_tables: Mapping[str, Sequence[Path]] | None = None,
        files: Mapping[str, Path] | None = None,
        force: bool = False,
    ) -> Published | None:
        """Publish the catalog rows newer than the last publication, the export tables'
        segments and the export files, as a new generation. ``cursor`` is on the working
        catalog; its reads run in one transaction (a consistent catalog state).

        ``export_tables`` (table -> its segment files) and ``files`` (export name -> a store
        file in the store's ``files/``) replace what the previous generation had when given.
        Returns ``None`` when there was nothing new (unless ``force``)."""
        with self._lock:
            t0 = time.perf_counter()
            m = self.manifest
            base = catalog_id != m.catalog_id or any(t not in m.catalog for t in CATALOG_TABLES)
            since = -1 if base else m.seq
            new_segments, rows, nbytes, seq = copy_new_rows(self.dir, cursor, since, base)
            new_files = dict(m.files)
            if files is not None:
                new_files = {name: Path(path).name for name, path in files.items()}
            if export_tables is not None:
                self._tables = {t: list(p) for t, p in export_tables.items() if p}
            changed_files = new_files != m.files or export_tables is not None
            if not new_segments and not base and not force and not changed_files:
                return None
            catalog = {t: ([] if base else list(m.catalog.get(t, []))) for t in CATALOG_TABLES}
            for table, seg in new_segments:
                catalog[table].append(seg)
            new = Manifest(
                gen=m.gen + 1,
                catalog_id=catalog_id,
                seq=max(seq, since),
                catalog=catalog,
                files=new_files,
                published_at=time.time(),
            )
            self._install(new, changed=export_tables is not None, new_segments=new_segments)
            ms = (time.perf_counter() - t0) * 1000
            log.debug("publication.published", gen=new.gen, ms=round(ms, 1), rows=rows)
            return Published(new.gen, ms, nbytes, rows)

    def _install(
        self, new: Manifest, *, changed: bool, new_segments: Sequence[tuple[str, Segment]] = ()
    ) -> None:
        """Make ``new`` the current generation (its segments are in the store already), retire
        what the previous one named and no longer is, and have the next one made ahead."""
        m = self.manifest
        try:
            self._make_generation(new, self._tables, changed=changed)
        except BaseException as exc:
            shutil.rmtree(gen_dir(self.dir, new.gen), ignore_errors=True)
            for table, seg in new_segments:
                self._seg_path(table, seg.name).unlink(missing_ok=True)
            if isinstance(exc, OSError | duckdb.Error):
                raise CatalogError(
                    f"could not publish the catalog to {self.dir} (readers keep "
                    f"generation {m.gen}): {exc}"
                ) from exc
            raise
        old_files = retired(self.dir, m, new)
        self.manifest = new
        for path in old_files:
            path.unlink(missing_ok=True)
        if self._preparer is not None:
            self._preparer.wake()  # it makes the next one ahead, compacts, collects
        else:  # a one-shot process: nothing made ahead (see the module doc)
            self._maybe_gc()

    def _make_generation(
        self, m: Manifest, tables: Mapping[str, Sequence[Path]], *, changed: bool
    ) -> None:
        """Generation ``m.gen``: the one made ahead (:meth:`_prepare_next`) brought to ``m``'s
        contents, or a new one; its views file made again only if its key changed."""
        gdir = gen_dir(self.dir, m.gen)
        prepared = self._prepared if self._prepared and self._prepared[0] == m.gen else None
        self._prepared = None
        if prepared is None or not gdir.is_dir():
            shutil.rmtree(gdir, ignore_errors=True)
            gdir.mkdir()
            prepared = None
        table_names, file_names = fill(self.dir, gdir, m, tables)
        if changed or not self._views_key or m.files != self._key_files:
            self._views_key = views_key(self.dir, gdir, table_names, file_names)
            self._key_files = dict(m.files)
        views = gdir / VIEWS_NAME
        if (
            prepared is None
            or prepared[1:] != (self._views_key, self._views.layout)
            or not views.exists()
        ):
            self._views.write(views, gdir, table_names, file_names)
        m.views_key = self._views_key
        (gdir / MANIFEST).write_text(json.dumps(m.to_json(), indent=1))
        fsync_dir(gdir)
        swap(self.dir, gdir)

    def _prepare_next(self) -> None:
        """Make the next generation ahead, a copy of the current one with its views file (the
        expensive part: ≈ 1 ms per view to bind), so the next publication only adds its links.
        Nobody reads it before it is swapped in; a failure here only costs that time later."""
        m = self.manifest
        gdir = gen_dir(self.dir, m.gen + 1)
        if self._prepared is not None and self._prepared[0] == m.gen + 1:
            return  # made already
        try:
            shutil.rmtree(gdir, ignore_errors=True)
            gdir.mkdir()
            table_names, file_names = fill(self.dir, gdir, m, self._tables)
            self._views.write(gdir / VIEWS_NAME, gdir, table_names, file_names)
        except Exception as exc:  # noqa: BLE001 - it only saves time; publish makes it itself
            shutil.rmtree(gdir, ignore_errors=True)
            log.debug("publication.prepare_failed", error=str(exc))
            return
        self._prepared = (m.gen + 1, self._views_key, self._views.layout)

    @contextlib.contextmanager
    def open_current(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection to the current generation's views, for this process (the
        user exports run their SQL there). Its generation is pinned while open: F_GETLK does not
        report this process's own locks, so the GC is told directly."""
        with self._lock:
            gen = self.manifest.gen
            self._pins[gen] = self._pins.get(gen, 0) + 1
            path = gen_dir(self.dir, gen) / VIEWS_NAME
        try:
            con = open_reader(path)
            try:
                yield con
            finally:
                con.close()
        finally:
            with self._lock:
                self._pins[gen] -= 1

    # ------------------------------------------------------------------ garbage collection

    def _maybe_gc(self) -> None:
        now = time.monotonic()
        if now - self._last_gc >= GC_INTERVAL_S:
            self._last_gc = now
            self.gc()

    def gc(self, limit: int = GC_BATCH) -> int:
        """Remove generations superseded more than ``grace_s`` ago whose views file no process
        holds open (F_GETLK; this process's readers are pinned), at most ``limit`` per call (a
        backlog goes over the next calls; each holds the lock); returns how many."""
        with self._lock:
            return collect(
                self.dir, self.manifest.gen, grace_s=self.grace_s, pins=self._pins, limit=limit
            )

    # ------------------------------------------------------------------ compaction

    def plan_compaction(self) -> list[compaction.Merge]:
        """Merges due now (see :func:`compaction.plan`)."""
        with self._lock:
            return compaction.plan(self.manifest)

    def write_compaction(self, plans: Sequence[compaction.Merge]) -> list[compaction.Merge]:
        """Write the merged segments (no lock; see :func:`compaction.write`)."""
        return compaction.write(self._seg_path, plans)

    def commit_compaction(self, merges: Sequence[compaction.Merge]) -> bool:
        """Swap the merged segments in as a new generation (no catalog rows are read: the
        published sequence stays); a merge whose victims are no longer all current (a base
        publication meanwhile) is dropped. Returns whether one was applied."""
        with self._lock:
            m = self.manifest
            catalog = {t: list(segs) for t, segs in m.catalog.items()}
            applied = False
            for merge in merges:
                segs = catalog.get(merge.table, [])
                if not set(merge.victims) <= {s.name for s in segs}:
                    self._seg_path(merge.table, merge.merged).unlink(missing_ok=True)
                    continue
                kept = [s for s in segs if s.name not in merge.victims]
                catalog[merge.table] = [Segment(merge.merged, merge.rows, merge.max_seq), *kept]
                applied = True
            if applied:
                new = dataclasses.replace(
                    m, gen=m.gen + 1, catalog=catalog, published_at=time.time()
                )
                self._install(new, changed=False)
            return applied

    def compact(self, rounds: int = COMPACTION_ROUNDS) -> int:
        """Merge due segments (plan and commit under the lock, the merged files written
        without it), up to ``rounds`` times; returns the merges applied."""
        done = 0
        for _round in range(rounds):
            plans = self.plan_compaction()
            if not plans:
                break
            merged = self.write_compaction(plans)
            if not merged or not self.commit_compaction(merged):
                break
            done += len(merged)
        return done
