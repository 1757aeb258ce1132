"""The reader-side publication: immutable generations of Parquet files behind a views file.

What readers open (``exports_dir``):

- ``bus.duckdb`` — a small DuckDB file (storage version v1.2.0, so DuckDB 1.2 and newer open it)
  holding only views: ``catalog.runs_d``, ``catalog.artifacts_f``, ``catalog.rejections_f``,
  ``catalog.latest_artifacts_v``, ``catalog.schema_version`` and the ``exports.*`` views. It is a
  hard link to the views file of a *views slot* ``slots/<s>.duckdb``, whose views read
  ``slots/<s>/...``, a symlink to one generation. Each publication points a slot that no reader
  can be using (not current for :data:`SLOT_REUSE_S`, and no process holds its views file:
  F_GETLK) at the new generation and renames a new link over ``bus.duckdb``; the slot's views
  file is made again only when a table's or file's schema changed (binding costs ≈ 1 ms per
  view). So an open connection keeps its generation, consistent, for as long as it stays open,
  and every new connection sees whole batches (a run with its artifacts).
- ``current`` — a symlink to ``gen/<N>``, for readers of files (Polars, pyarrow): resolve it once
  (:func:`current_generation`, ``os.path.realpath``) and read below the resolved directory.
- ``gen/<N>/`` — a generation: ``catalog/<table>/*.parquet``, ``tables/<name>/*.parquet`` (one
  dataset per artifact table), ``files/<name>.parquet|csv`` (the summaries and the user
  exports) and ``manifest.json``. Nothing in it ever changes: every entry is a hard link to an
  immutable file of the private store ``.store/`` (new content, new name).

A generation is removed only after it was superseded :data:`GRACE_S` ago and while no slot in
use points at it (the current one, or one whose views file a process holds), so neither a
connection kept open for hours nor a file reader that resolved ``current`` a moment ago ever
loses a file.

Cost of one publication, whatever the catalog size: the catalog rows written since the last
publication (each row carries the batch sequence ``_seq`` that wrote it) are copied into one
new segment per table, a directory of hard links is made, a slot symlink moved, then two
renames (≈ 6 ms here). The reader views keep the newest version of each row
(``_seq``); :meth:`Publication.compact` merges small segments in the background (like-sized
ones, :data:`MAX_SEGMENTS`), so the segment count stays bounded.
"""

# ruff: noqa: S608 - table names in SQL are the constants of CATALOG_TABLES.

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
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
from .layout import (
    CATALOG_TABLES,
    CURRENT,
    GC_INTERVAL_S,
    GEN_DIR,
    GRACE_S,
    MANIFEST,
    MAX_SEGMENTS,
    SLOT_REUSE_S,
    SLOTS_DIR,
    STORE_DIR,
    VIEWS_NAME,
    Manifest,
    Published,
    Segment,
    current_generation,
    fsync_file,
    locked,
)
from .views import view_statements, views_key, write_views

log = get_logger("quantbot_bus.publication")

__all__ = [
    "CATALOG_TABLES",
    "GRACE_S",
    "MAX_SEGMENTS",
    "Manifest",
    "Publication",
    "Published",
    "Segment",
    "current_generation",
    "view_statements",
]


class Publication:
    """The generations under ``exports_dir``; one instance per process that owns the catalog.

    Thread-safe: :meth:`publish` and the compaction swap are serialised by an internal lock.
    """

    def __init__(self, exports_dir: Path, *, grace_s: float = GRACE_S) -> None:
        self.dir = Path(exports_dir).absolute()
        self.grace_s = grace_s
        self._lock = threading.RLock()
        self._views = duckdb.connect()  # in-memory: only attaches the views files it writes
        self._last_gc = 0.0
        self.manifest = Manifest()
        self._views_key = ""
        self._pins: dict[int, int] = {}  # views slots this process reads (see open_current)
        self._key_files: dict[str, str] | None = None
        for d in (
            self.dir / GEN_DIR,
            self.dir / SLOTS_DIR,
            self.dir / STORE_DIR / "catalog",
            self.dir / STORE_DIR / "files",
        ):
            d.mkdir(parents=True, exist_ok=True)
        self._load()
        # Slots other than the current one count as just left (a reader may be opening one).
        now = time.monotonic()
        self._left_current: dict[int, float] = dict.fromkeys(self._slots(), now)

    def close(self) -> None:
        with contextlib.suppress(duckdb.Error):
            self._views.close()

    # ------------------------------------------------------------------ startup

    def _load(self) -> None:
        """Read the current generation's manifest; remove what a crash left half made."""
        current: int | None = None
        try:
            target = os.readlink(self.dir / CURRENT)
            current = int(Path(target).name)
            data = json.loads((self.dir / GEN_DIR / Path(target).name / MANIFEST).read_text())
            self.manifest = Manifest.from_json(data)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            if current is not None or (self.dir / CURRENT).is_symlink():
                log.warning("publication.unreadable", path=str(self.dir / CURRENT), error=str(exc))
            self.manifest = Manifest(gen=current or self._max_gen())
        # generations above the current one were never published (killed mid-publication)
        for gen in self._gens():
            if gen > self.manifest.gen:
                shutil.rmtree(self._gen_dir(gen), ignore_errors=True)
        for tmp in [*self.dir.glob(".*.qbpub-*"), *(self.dir / SLOTS_DIR).glob(".*.qbpub-*")]:
            tmp.unlink(missing_ok=True)
        # store files the manifest does not name are orphans (of a killed publication/merge)
        live = {s.name for segs in self.manifest.catalog.values() for s in segs}
        for table_dir in (self.dir / STORE_DIR / "catalog").iterdir():
            for f in table_dir.glob("*.parquet"):
                if f.name not in live:
                    f.unlink(missing_ok=True)
        files = set(self.manifest.files.values())
        for f in (self.dir / STORE_DIR / "files").iterdir():
            if f.name not in files:
                f.unlink(missing_ok=True)

    def _gens(self) -> list[int]:
        out = []
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.dir / GEN_DIR):
                if entry.name.isdigit():
                    out.append(int(entry.name))
        return sorted(out)

    def _max_gen(self) -> int:
        gens = self._gens()
        return gens[-1] if gens else 0

    def _gen_dir(self, gen: int) -> Path:
        return self.dir / GEN_DIR / f"{gen:010d}"

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
        file from :meth:`store_file`) replace what the previous generation had when given.
        Returns ``None`` when there was nothing new (unless ``force``)."""
        with self._lock:
            t0 = time.perf_counter()
            m = self.manifest
            base = catalog_id != m.catalog_id or any(t not in m.catalog for t in CATALOG_TABLES)
            since = -1 if base else m.seq
            new_segments, rows, nbytes, seq = self._copy_new_rows(cursor, since, base)
            new_files = dict(m.files)
            if files is not None:
                new_files = {name: Path(path).name for name, path in files.items()}
            tables = dict(export_tables) if export_tables is not None else self._tables_of(m.gen)
            changed_files = new_files != m.files or export_tables is not None
            if not new_segments and not base and not force and not changed_files:
                return None
            catalog = {t: ([] if base else list(m.catalog.get(t, []))) for t in CATALOG_TABLES}
            for table, seg in new_segments:
                catalog[table].append(seg)
            new = Manifest(
                gen=max(m.gen, self._max_gen()) + 1,
                catalog_id=catalog_id,
                seq=max(seq, since),
                catalog=catalog,
                files=new_files,
                published_at=time.time(),
            )
            try:
                self._make_generation(new, tables, changed=export_tables is not None)
            except BaseException as exc:
                shutil.rmtree(self._gen_dir(new.gen), ignore_errors=True)
                for _table, seg in new_segments:
                    self._seg_path(_table, seg.name).unlink(missing_ok=True)
                if isinstance(exc, OSError | duckdb.Error):
                    raise CatalogError(
                        f"could not publish the catalog to {self.dir} (readers keep "
                        f"generation {m.gen}): {exc}"
                    ) from exc
                raise
            retired = self._retired(m, new)
            self.manifest = new
            for path in retired:
                path.unlink(missing_ok=True)
            ms = (time.perf_counter() - t0) * 1000
            log.debug("publication.published", gen=new.gen, ms=round(ms, 1), rows=rows)
            self._maybe_gc()
            return Published(new.gen, ms, nbytes, rows)

    def _seg_path(self, table: str, name: str) -> Path:
        return self.dir / STORE_DIR / "catalog" / table / name

    def _copy_new_rows(
        self, cursor: duckdb.DuckDBPyConnection, since: int, base: bool
    ) -> tuple[list[tuple[str, Segment]], int, int, int]:
        """One segment per catalog table holding its rows with ``_seq > since`` (a base
        publication writes every table, even empty, so each view has a file to read)."""
        out: list[tuple[str, Segment]] = []
        rows_total = 0
        nbytes = 0
        written: list[Path] = []
        cursor.execute("BEGIN TRANSACTION")
        try:
            row = cursor.execute(
                "SELECT greatest((SELECT max(_seq) FROM catalog.runs_d), "
                "(SELECT max(_seq) FROM catalog.artifacts_f), "
                "(SELECT max(_seq) FROM catalog.rejections_f))"
            ).fetchone()
            seq = int(row[0]) if row and row[0] is not None else 0
            if seq <= since and not base:
                return [], 0, 0, seq
            token = secrets.token_hex(4)
            for table in CATALOG_TABLES:
                d = self.dir / STORE_DIR / "catalog" / table
                d.mkdir(parents=True, exist_ok=True)
                name = f"{since + 1:012d}-{seq:012d}-{token}.parquet"
                path = d / name
                got = cursor.execute(
                    f"COPY (SELECT * FROM catalog.{table} WHERE _seq > $since ORDER BY _seq) "
                    "TO $dest (FORMAT parquet, COMPRESSION zstd)",
                    {"since": since, "dest": str(path)},
                ).fetchone()
                n = int(got[0]) if got else 0
                written.append(path)
                if n == 0 and not base:
                    path.unlink(missing_ok=True)
                    continue
                fsync_file(path)
                rows_total += n
                nbytes += path.stat().st_size
                out.append((table, Segment(name, n, seq)))
            cursor.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                cursor.execute("ROLLBACK")
            for path in written:
                path.unlink(missing_ok=True)
            raise
        return out, rows_total, nbytes, seq

    def _tables_of(self, gen: int) -> dict[str, list[Path]]:
        """The export tables of generation ``gen`` (its links keep the files alive)."""
        out: dict[str, list[Path]] = {}
        base = self._gen_dir(gen) / "tables"
        if base.is_dir():
            for d in sorted(base.iterdir()):
                out[d.name] = sorted(d.glob("*.parquet"))
        return out

    def _retired(self, old: Manifest, new: Manifest) -> list[Path]:
        """Store files the old manifest named and the new one does not (the generations that
        link them keep them readable until they are removed)."""
        keep = {(t, s.name) for t, segs in new.catalog.items() for s in segs}
        out = [
            self._seg_path(t, s.name)
            for t, segs in old.catalog.items()
            for s in segs
            if (t, s.name) not in keep
        ]
        files = set(new.files.values())
        out += [self.dir / STORE_DIR / "files" / f for f in old.files.values() if f not in files]
        return out

    def _make_generation(
        self, m: Manifest, tables: Mapping[str, Sequence[Path]], *, changed: bool
    ) -> None:
        gdir = self._gen_dir(m.gen)
        gdir.mkdir()
        for table, segs in m.catalog.items():
            d = gdir / "catalog" / table
            d.mkdir(parents=True)
            for seg in segs:
                os.link(self._seg_path(table, seg.name), d / seg.name)
        table_names: list[str] = []
        for table, paths in sorted(tables.items()):
            if not paths:
                continue
            d = gdir / "tables" / table
            d.mkdir(parents=True)
            for p in paths:
                os.link(p, d / Path(p).name)
            table_names.append(table)
        file_names: dict[str, str] = {}
        if m.files:
            (gdir / "files").mkdir()
            for name, stored in sorted(m.files.items()):
                suffix = stored.rsplit(".", 1)[-1]
                os.link(
                    self.dir / STORE_DIR / "files" / stored, gdir / "files" / f"{name}.{suffix}"
                )
                file_names[name] = f"{name}.{suffix}"
        if changed or not self._views_key or m.files != self._key_files:
            self._views_key = views_key(self.dir, gdir, table_names, file_names)
            self._key_files = dict(m.files)
        m.slot = self._choose_slot()
        m.views_key = self._views_key
        (gdir / MANIFEST).write_text(json.dumps(m.to_json(), indent=1))
        fsync_dir(gdir)
        self._point_slot(m.slot, gdir, table_names, file_names)
        self._swap(m.slot, gdir)

    # ------------------------------------------------------------------ view slots

    def _slot_views(self, slot: int) -> Path:
        return self.dir / SLOTS_DIR / f"{slot}.duckdb"

    def _slots(self) -> list[int]:
        out = []
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.dir / SLOTS_DIR):
                if entry.name.endswith(".duckdb") and entry.name[: -len(".duckdb")].isdigit():
                    out.append(int(entry.name[: -len(".duckdb")]))
        return sorted(out)

    def _choose_slot(self) -> int:
        """A views slot no reader can be using: not the current one, not current for the last
        :data:`SLOT_REUSE_S`, and its views file locked by no process; one whose views were made
        for the same tables and schemas first (then only its symlink moves). Else a new one."""
        now = time.monotonic()
        current = self.manifest.slot
        free: list[int] = []
        for slot in self._slots():
            if slot == current or now - self._left_current.get(slot, 0.0) < SLOT_REUSE_S:
                continue
            if self._pins.get(slot):
                continue  # read by this process (F_GETLK does not report our own locks)
            if locked(self._slot_views(slot)):
                continue
            free.append(slot)
        for slot in free:
            if self._slot_key(slot) == self._views_key:
                return slot
        if free:
            return free[0]
        return max([*self._slots(), current, 0]) + 1

    def _slot_key(self, slot: int) -> str | None:
        try:
            return (self.dir / SLOTS_DIR / f"{slot}.key").read_text()
        except OSError:
            return None

    def _point_slot(
        self, slot: int, gdir: Path, tables: Sequence[str], files: Mapping[str, str]
    ) -> None:
        """``slots/<slot>`` -> ``gdir`` (a symlink renamed into place); its views file is made
        again only when the tables or their schemas changed (views bind their columns)."""
        slots = self.dir / SLOTS_DIR
        link = slots / str(slot)
        tmp = slots / f".{slot}.qbpub-{secrets.token_hex(4)}"
        os.symlink(f"../{GEN_DIR}/{gdir.name}", tmp)
        os.replace(tmp, link)
        views = self._slot_views(slot)
        if self._slot_key(slot) == self._views_key and views.exists():
            return
        (slots / f"{slot}.key").unlink(missing_ok=True)
        tmp_views = slots / f".{slot}.duckdb.qbpub-{secrets.token_hex(4)}"
        try:
            write_views(self._views, tmp_views, link, tables, files)
            os.replace(tmp_views, views)
        finally:
            tmp_views.unlink(missing_ok=True)
        (slots / f"{slot}.key").write_text(self._views_key)

    def _swap(self, slot: int, gdir: Path) -> None:
        """Point ``bus.duckdb`` at the slot's views file and ``current`` at ``gdir``: a link
        and a symlink under temp names, each renamed over its target, then the dir fsynced."""
        token = secrets.token_hex(4)
        tmp_db = self.dir / f".{VIEWS_NAME}.qbpub-{token}"
        tmp_cur = self.dir / f".{CURRENT}.qbpub-{token}"
        try:
            os.link(self._slot_views(slot), tmp_db)
            os.symlink(f"{GEN_DIR}/{gdir.name}", tmp_cur)
            # current first: a crash between the two leaves bus.duckdb on the previous
            # generation (which the next start keeps: it is not above current)
            os.replace(tmp_cur, self.dir / CURRENT)
            os.replace(tmp_db, self.dir / VIEWS_NAME)
        finally:
            tmp_db.unlink(missing_ok=True)
            tmp_cur.unlink(missing_ok=True)
        fsync_dir(self.dir)
        previous = self.manifest.slot
        if previous != slot:
            self._left_current[previous] = time.monotonic()

    @contextlib.contextmanager
    def open_current(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection to the current generation's views, for this process (the
        user exports run their SQL there). Its slot is pinned while open: F_GETLK does not
        report this process's own locks, so the slot choice and GC are told directly."""
        with self._lock:
            slot = self.manifest.slot
            self._pins[slot] = self._pins.get(slot, 0) + 1
            path = self._slot_views(slot)
        try:
            con = open_reader(path)
            try:
                yield con
            finally:
                con.close()
        finally:
            with self._lock:
                self._pins[slot] -= 1

    # ------------------------------------------------------------------ garbage collection

    def _maybe_gc(self) -> None:
        now = time.monotonic()
        if now - self._last_gc >= GC_INTERVAL_S:
            self._last_gc = now
            self.gc()

    def gc(self) -> int:
        """Remove generations superseded more than ``grace_s`` ago that no views slot in use
        (the current one, or one a reader holds open) points at; returns how many."""
        with self._lock:
            gens = self._gens()
            current = self.manifest.gen
            pinned = {current}
            for slot in self._slots():
                if (
                    slot == self.manifest.slot
                    or self._pins.get(slot)
                    or locked(self._slot_views(slot))
                ):
                    with contextlib.suppress(OSError, ValueError):
                        pinned.add(int(Path(os.readlink(self.dir / SLOTS_DIR / str(slot))).name))
            now = time.time()
            removed = 0
            for i, gen in enumerate(gens):
                if gen >= current:
                    break
                if gen in pinned:
                    continue
                try:
                    superseded_at = self._gen_dir(gens[i + 1]).stat().st_mtime
                except FileNotFoundError:
                    continue
                if now - superseded_at < self.grace_s:
                    break  # later ones were superseded even more recently
                shutil.rmtree(self._gen_dir(gen), ignore_errors=True)
                removed += 1
            return removed

    # ------------------------------------------------------------------ compaction

    def plan_compaction(self) -> list[compaction.Merge]:
        """Merges due now (see :func:`compaction.plan`)."""
        with self._lock:
            return compaction.plan(self.manifest)

    def write_compaction(self, plans: Sequence[compaction.Merge]) -> list[compaction.Merge]:
        """Write the merged segments (no lock; see :func:`compaction.write`)."""
        return compaction.write(self._seg_path, plans)

    def commit_compaction(
        self, cursor: duckdb.DuckDBPyConnection, catalog_id: str, merges: Sequence[compaction.Merge]
    ) -> Published | None:
        """Swap the merged segments in (a new generation); a merge whose victims are no longer
        all current (a base publication meanwhile) is dropped."""
        with self._lock:
            m = self.manifest
            applied = False
            catalog = {t: list(segs) for t, segs in m.catalog.items()}
            for merge in merges:
                segs = catalog.get(merge.table, [])
                names = {s.name for s in segs}
                if not set(merge.victims) <= names or m.catalog_id != catalog_id:
                    self._seg_path(merge.table, merge.merged).unlink(missing_ok=True)
                    continue
                kept = [s for s in segs if s.name not in merge.victims]
                catalog[merge.table] = [Segment(merge.merged, merge.rows, merge.max_seq), *kept]
                applied = True
            if not applied:
                return None
            self.manifest = dataclasses.replace(m, catalog=catalog)
            # the old manifest's victims are retired by this publication
            old = m
            try:
                published = self.publish(cursor, catalog_id=catalog_id, force=True)
            except BaseException:
                self.manifest = old
                raise
            for path in self._retired(old, self.manifest):
                path.unlink(missing_ok=True)
            return published
