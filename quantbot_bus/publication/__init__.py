"""The reader-side publication: immutable generations of Parquet files, each with a views file.

What readers open (``exports_dir``):

- ``bus.duckdb`` — a small DuckDB file (storage version v1.2.0, so DuckDB 1.2 and newer open it)
  holding only views: ``catalog.runs_d``, ``catalog.artifacts_f``, ``catalog.rejections_f``,
  ``catalog.latest_artifacts_v``, ``catalog.schema_version`` and the ``exports.*`` views. It is a
  hard link to the views file of the current generation, whose views name that generation's
  directory; each publication renames a new link over it, so an open connection keeps its
  generation, consistent, for as long as it stays open, and every new connection sees whole
  batches (a run with its artifacts).
- ``current`` — a symlink to ``gen/<N>``, for readers of files (Polars, pyarrow): resolve it once
  (:func:`current_generation`, ``os.path.realpath``) and read below the resolved directory.
- ``gen/<N>/`` — a generation: ``catalog/<table>/*.parquet``, ``tables/<name>/*.parquet`` (one
  dataset per artifact table), ``files/<name>.parquet|csv`` (the summaries and the user
  exports), ``manifest.json`` and ``bus.duckdb``. Nothing in it changes once published: every
  entry is a hard link to an immutable file of the private store ``.store/`` (new content, new
  name).

A generation is removed only after it was superseded :data:`GRACE_S` ago and while no process
holds a DuckDB lock on its views file (F_GETLK; this process's own readers are pinned), so
neither a connection kept open for hours nor a file reader that resolved ``current`` a moment ago
loses a file.

Cost of one publication, whatever the catalog size: the catalog rows written since the last
publication (each row carries the batch sequence ``_seq`` that wrote it) are copied into one
new segment per table, linked into the next generation — made ahead with the current one's links
and its views file (binding costs ≈ 1 ms per view, so that is done after the previous
publication, off the path to readers; again only when a table's or file's schema changed) —
then two renames: ≈ 3-5 ms here. The reader views keep the newest version of each row
(``_seq``); compaction merges small segments in the background (like-sized ones,
:data:`MAX_SEGMENTS`), so the segment count stays bounded. Views files are written sparse
(≈ 32 KiB on disk each).
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
    COMPACTION_ROUNDS,
    CURRENT,
    GC_BATCH,
    GC_INTERVAL_S,
    GEN_DIR,
    GRACE_S,
    MANIFEST,
    MAX_SEGMENTS,
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

    def __init__(
        self, exports_dir: Path, *, grace_s: float = GRACE_S, background: bool = False
    ) -> None:
        self.dir = Path(exports_dir).absolute()
        self.grace_s = grace_s
        self._lock = threading.RLock()
        self._views = duckdb.connect()  # in-memory: only attaches the views files it writes
        self._last_gc = 0.0
        self.manifest = Manifest()
        self._views_key = ""
        self._key_files: dict[str, str] | None = None
        self._pins: dict[int, int] = {}  # generations this process reads (see open_current)
        self._prepared: tuple[int, str] | None = None  # (gen, views key) made ahead
        for d in (
            self.dir / GEN_DIR,
            self.dir / STORE_DIR / "catalog",
            self.dir / STORE_DIR / "files",
        ):
            d.mkdir(parents=True, exist_ok=True)
        self._load()
        self._tables: dict[str, list[Path]] = self._tables_of(self.manifest.gen)
        # The next generation is made ahead after each publication: inline, or (the daemon)
        # by a thread of its own, so the publishing thread goes back to work at once.
        self.background = background
        self._closed = False
        self._prepare_wanted = threading.Event()
        self._preparer: threading.Thread | None = None
        if background:
            self._preparer = threading.Thread(
                target=self._preparer_main, name="quantbot-bus-prepare", daemon=True
            )
            self._preparer.start()

    def close(self) -> None:
        """Stop making generations ahead and remove the one made (nobody has seen it)."""
        self._closed = True
        if self._preparer is not None:
            self._prepare_wanted.set()
            self._preparer.join()
        with self._lock:
            if self._prepared is not None:
                shutil.rmtree(self._gen_dir(self._prepared[0]), ignore_errors=True)
                self._prepared = None
            with contextlib.suppress(duckdb.Error):
                self._views.close()

    def _preparer_main(self) -> None:
        while True:
            self._prepare_wanted.wait()
            self._prepare_wanted.clear()
            if self._closed:
                return
            if not self._closed:
                self.compact()  # its own rounds take and release the lock
            with self._lock:  # released in between: a publication waiting goes first
                if not self._closed:
                    self._prepare_next()
            with self._lock:
                if not self._closed:
                    self._maybe_gc()

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
        for tmp in self.dir.glob(".*.qbpub-*"):
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
        file in the store's ``files/``) replace what the previous generation had when given.
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
            shutil.rmtree(self._gen_dir(new.gen), ignore_errors=True)
            for table, seg in new_segments:
                self._seg_path(table, seg.name).unlink(missing_ok=True)
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
        if self._preparer is not None:
            self._prepare_wanted.set()  # it makes the next one ahead, compacts, collects
        else:
            self._prepare_next()
            self._maybe_gc()

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
        """Generation ``m.gen``: the one made ahead (:meth:`_prepare_next`) brought to ``m``'s
        contents, or a new one; its views file made again only if its key changed."""
        gdir = self._gen_dir(m.gen)
        prepared = self._prepared if self._prepared and self._prepared[0] == m.gen else None
        self._prepared = None
        if prepared is None or not gdir.is_dir():
            shutil.rmtree(gdir, ignore_errors=True)
            gdir.mkdir()
            prepared = None
        table_names, file_names = self._fill(gdir, m, tables)
        if changed or not self._views_key or m.files != self._key_files:
            self._views_key = views_key(self.dir, gdir, table_names, file_names)
            self._key_files = dict(m.files)
        views = gdir / VIEWS_NAME
        if prepared is None or prepared[1] != self._views_key or not views.exists():
            views.unlink(missing_ok=True)
            write_views(self._views, views, gdir, table_names, file_names)
        m.views_key = self._views_key
        (gdir / MANIFEST).write_text(json.dumps(m.to_json(), indent=1))
        fsync_dir(gdir)
        self._swap(gdir)

    def _fill(
        self, gdir: Path, m: Manifest, tables: Mapping[str, Sequence[Path]]
    ) -> tuple[list[str], dict[str, str]]:
        """Make ``gdir``'s links exactly ``m``'s catalog segments, ``tables`` and ``m``'s files
        (adding and removing only the difference); returns the table and file names."""
        want: dict[str, Path] = {}  # path relative to gdir -> the store file it links
        for table, segs in m.catalog.items():
            for seg in segs:
                want[f"catalog/{table}/{seg.name}"] = self._seg_path(table, seg.name)
        table_names = sorted(t for t, paths in tables.items() if paths)
        for table in table_names:
            for p in tables[table]:
                want[f"tables/{table}/{Path(p).name}"] = Path(p)
        file_names: dict[str, str] = {}
        for name, stored in sorted(m.files.items()):
            file_names[name] = f"{name}.{stored.rsplit('.', 1)[-1]}"
            want[f"files/{file_names[name]}"] = self.dir / STORE_DIR / "files" / stored
        have: set[str] = set()
        for top in ("catalog", "tables", "files"):
            base = gdir / top
            if not base.is_dir():
                continue
            for dirpath, dirnames, filenames in os.walk(base):
                rel = os.path.relpath(dirpath, gdir)
                for f in filenames:
                    path = f"{rel}/{f}"
                    full = os.path.join(dirpath, f)
                    # kept only if it links the very file wanted (a rewritten export file
                    # has the same name in the generation, another one in the store)
                    if path in want and os.stat(full).st_ino == os.stat(want[path]).st_ino:
                        have.add(path)
                    else:
                        os.unlink(full)
                if not filenames and not dirnames and dirpath != str(base):
                    os.rmdir(dirpath)
        for rel, source in want.items():
            if rel not in have:
                dest = gdir / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.link(source, dest)
        return table_names, file_names

    def _prepare_next(self) -> None:
        """Make the next generation ahead, a copy of the current one with its views file (the
        expensive part: ≈ 1 ms per view to bind), so the next publication only adds its links.
        Nobody reads it before it is swapped in; a failure here only costs that time later."""
        m = self.manifest
        gdir = self._gen_dir(m.gen + 1)
        if self._prepared is not None and self._prepared[0] == m.gen + 1:
            return  # made already
        try:
            shutil.rmtree(gdir, ignore_errors=True)
            gdir.mkdir()
            table_names, file_names = self._fill(gdir, m, self._tables)
            write_views(self._views, gdir / VIEWS_NAME, gdir, table_names, file_names)
        except Exception as exc:  # noqa: BLE001 - it only saves time; publish makes it itself
            shutil.rmtree(gdir, ignore_errors=True)
            log.debug("publication.prepare_failed", error=str(exc))
            return
        self._prepared = (m.gen + 1, self._views_key)

    def _swap(self, gdir: Path) -> None:
        """Point ``current`` and ``bus.duckdb`` at ``gdir``: a symlink and a link under temp
        names, each renamed over its target, then the directory fsynced."""
        token = secrets.token_hex(4)
        tmp_db = self.dir / f".{VIEWS_NAME}.qbpub-{token}"
        tmp_cur = self.dir / f".{CURRENT}.qbpub-{token}"
        try:
            os.link(gdir / VIEWS_NAME, tmp_db)
            os.symlink(f"{GEN_DIR}/{gdir.name}", tmp_cur)
            # current first: a crash between the two leaves bus.duckdb on the previous
            # generation (which the next start keeps: it is not above current)
            os.replace(tmp_cur, self.dir / CURRENT)
            os.replace(tmp_db, self.dir / VIEWS_NAME)
        finally:
            tmp_db.unlink(missing_ok=True)
            tmp_cur.unlink(missing_ok=True)
        fsync_dir(self.dir)

    @contextlib.contextmanager
    def open_current(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection to the current generation's views, for this process (the
        user exports run their SQL there). Its generation is pinned while open: F_GETLK does not
        report this process's own locks, so the GC is told directly."""
        with self._lock:
            gen = self.manifest.gen
            self._pins[gen] = self._pins.get(gen, 0) + 1
            path = self._gen_dir(gen) / VIEWS_NAME
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
            gens = self._gens()
            current = self.manifest.gen
            now = time.time()
            removed = 0
            for i, gen in enumerate(gens):
                if gen >= current:
                    break
                try:  # superseded when the next one was published (its manifest written)
                    superseded_at = (self._gen_dir(gens[i + 1]) / MANIFEST).stat().st_mtime
                except FileNotFoundError:
                    superseded_at = now
                if now - superseded_at < self.grace_s:
                    break  # later ones were superseded even more recently
                gdir = self._gen_dir(gen)
                if self._pins.get(gen) or locked(gdir / VIEWS_NAME):
                    continue
                shutil.rmtree(gdir, ignore_errors=True)
                removed += 1
                if removed >= limit:
                    break
            return removed

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
