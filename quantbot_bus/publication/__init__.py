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
(≈ 44 KiB on disk each), all with the same header (:mod:`.views`): DuckDB reads a file's header
and its blocks through two opens of its path, so a reader whose opens straddle a swap reads the
old file's header with the new file's blocks, which works only when the two headers are equal.

| module | what it is |
|---|---|
| :mod:`.publication` | :class:`Publication`: publish, the made-ahead generation, GC and compaction entry points |
| :mod:`.layout` | names on disk, the manifest and its segments |
| :mod:`.segments` | copying the catalog rows newer than the last publication into store segments |
| :mod:`.generation` | a generation directory: its links into the store, the swap of ``current`` |
| :mod:`.views` | a generation's views file (one header for all of them) |
| :mod:`.preparer` | the thread that makes the next generation ahead, compacts and collects |
| :mod:`.gc` | removing superseded generations |
| :mod:`.compaction` | merging a catalog table's small segments |
| :mod:`.recovery` | loading at start, removing what a crash left half made |
"""

from __future__ import annotations

from .layout import (
    CATALOG_TABLES,
    GRACE_S,
    MAX_SEGMENTS,
    Manifest,
    Published,
    Segment,
    current_generation,
)
from .publication import Publication
from .views import view_statements

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
