"""The catalog segments of the store: the rows a publication copies out of the working catalog
into new segment files, and the store files a new manifest no longer names."""

# ruff: noqa: S608 - table names in SQL are the constants of CATALOG_TABLES.

from __future__ import annotations

import contextlib
import secrets
from pathlib import Path

import duckdb

from ..catalog import max_seq
from ..fsutil import fsync_file
from .generation import seg_path
from .layout import CATALOG_TABLES, STORE_DIR, Manifest, Segment


def copy_new_rows(
    exports_dir: Path, cursor: duckdb.DuckDBPyConnection, since: int, base: bool
) -> tuple[list[tuple[str, Segment]], int, int, int]:
    """One segment per catalog table holding its rows with ``_seq > since`` (a base
    publication writes every table, even empty, so each view has a file to read); returns the
    segments, their rows and bytes, and the catalog's newest sequence. ``cursor``'s reads run
    in one transaction."""
    out: list[tuple[str, Segment]] = []
    rows_total = 0
    nbytes = 0
    written: list[Path] = []
    cursor.execute("BEGIN TRANSACTION")
    try:
        seq = max_seq(cursor)
        if seq <= since and not base:
            return [], 0, 0, seq
        token = secrets.token_hex(4)
        for table in CATALOG_TABLES:
            d = exports_dir / STORE_DIR / "catalog" / table
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


def retired(exports_dir: Path, old: Manifest, new: Manifest) -> list[Path]:
    """Store files the old manifest named and the new one does not (the generations that
    link them keep them readable until they are removed)."""
    keep = {(t, s.name) for t, segs in new.catalog.items() for s in segs}
    out = [
        seg_path(exports_dir, t, s.name)
        for t, segs in old.catalog.items()
        for s in segs
        if (t, s.name) not in keep
    ]
    files = set(new.files.values())
    out += [exports_dir / STORE_DIR / "files" / f for f in old.files.values() if f not in files]
    return out
