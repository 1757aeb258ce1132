"""The exports' files on disk: where they live, how each is written, the status file.

Every file is written by DuckDB ``COPY`` (or as JSON) to a hidden ``.<name>.qbexp-*.tmp``,
fsynced and renamed to its name (:func:`quantbot_bus.fsutil.install`); nothing is rewritten in
place. The temp names carry :data:`TMP_MARK`, so a crash's leftovers are recognised and removed
by the next refresh (:func:`clean_temp_files`). Segments and export files get names never used
before, and readers never see them by these names: the publication links them into its
generations.

A segment is also hard-linked into its table's :data:`PIN_DIR` (:func:`pin`): the views of the
working catalog list those links, so a reader of an older snapshot still finds a segment that a
compaction retired meanwhile; :func:`clean_pins` lets them go :data:`PIN_GRACE_S` later.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb

from ..fsutil import install

TMP_MARK = ".qbexp-"
PIN_DIR = ".v"  #: per table dir: hard links to the segments, the paths the views list
PIN_GRACE_S = 300.0  #: a retired segment stays readable this long through its pinned link
STATUS_NAME = "_export_status.json"
FILES_DIR = ".store/files"  #: the export files' one real name (``<name>.<token>.<ext>``)
TABLES_DIR = ".store/tables"  #: the segments' one real name (readers use the generations)
TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")  #: an artifact table we export


def export_table_name(artifact: str) -> str:
    """The export table an artifact's rows go to: its name, each ``/`` replaced by ``__`` (a
    seed-layout artifact is named by its path, ``truth/paths`` → ``truth__paths``). The same
    rule is written in SQL where the refresh lists the incoming files (``exports/chunk.py``)."""
    return artifact.replace("/", "__")


def tmp_for(dest: Path) -> Path:
    """Our temp names carry TMP_MARK, so crash leftovers are recognised and cleaned up."""
    return dest.with_name(f".{dest.name}{TMP_MARK}{secrets.token_hex(4)}.tmp")


@contextlib.contextmanager
def installing(dest: Path) -> Iterator[Path]:
    """A temp path to write ``dest``'s new content to; installed over ``dest`` (fsync, rename,
    fsync dir) when the block ends, removed if it raises."""
    tmp = tmp_for(dest)
    try:
        yield tmp
        install(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def copy_to(
    con: duckdb.DuckDBPyConnection,
    sql: str,
    params: dict[str, Any],
    dest: Path,
    fmt: str = "parquet",
    *,
    atomic: bool = True,
) -> int:
    """``COPY (sql) TO`` a temp file next to ``dest``, fsync, replace (``atomic=False``: straight
    to ``dest``). Returns the row count."""
    options = "FORMAT parquet, COMPRESSION zstd" if fmt == "parquet" else "FORMAT csv, HEADER"

    def copy(path: Path) -> int:
        row = con.execute(
            f"COPY ({sql}) TO $qb_dest ({options})", {**params, "qb_dest": str(path)}
        ).fetchone()
        return int(row[0]) if row else 0

    if not atomic:  # and not DuckDB's own temp file + rename either
        options += ", USE_TMP_FILE false"
        return copy(dest)
    with installing(dest) as tmp:
        return copy(tmp)


def write_json(dest: Path, data: Any) -> None:
    with installing(dest) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True, default=str)
        fh.write("\n")


def read_status(exports_dir: Path) -> dict[str, Any]:
    """``_export_status.json`` (empty when missing or not ours)."""
    try:
        data = json.loads((exports_dir / STATUS_NAME).read_text(encoding="utf-8"))
        return data if isinstance(data, dict) and isinstance(data.get("exports"), dict) else {}
    except (OSError, ValueError):
        return {}


def clean_temp_files(exports_dir: Path) -> None:
    """Remove temp files a crashed refresh left (only ours: ``.<name>.qbexp-*.tmp``)."""
    files_dir = exports_dir / FILES_DIR
    dirs = [
        exports_dir,
        files_dir,
        *(p for p in (exports_dir / TABLES_DIR).iterdir() if p.is_dir()),
    ]
    for d in dirs:
        for p in d.glob(f".*{TMP_MARK}*.tmp"):
            p.unlink(missing_ok=True)


def pin(segment: Path) -> None:
    """Hard-link a segment into its table's :data:`PIN_DIR` (same inode, no copy)."""
    link = segment.parent / PIN_DIR / segment.name
    link.parent.mkdir(exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.link(segment, link)


def clean_pins(table_dir: Path, live: set[str], now: float) -> None:
    """Remove pinned links of segments that left the table dir more than PIN_GRACE_S ago
    (unlinking the segment's other name set the inode's ctime: the moment it was retired)."""
    pin_dir = table_dir / PIN_DIR
    if not pin_dir.is_dir():
        return
    for link in pin_dir.glob("*.parquet"):
        if link.name in live:
            continue
        with contextlib.suppress(FileNotFoundError):
            if now - link.stat().st_ctime > PIN_GRACE_S:
                link.unlink()
