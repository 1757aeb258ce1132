"""The views file of a generation: what it declares, its fixed header, and when an existing one
still fits.

**Every views file has the same header.** DuckDB opens a database file by its path twice: once
to read its headers (the first :data:`HEADER_BYTES`), then again to read its blocks. A reader
whose two opens straddle the rename of a new ``bus.duckdb`` (or of ``current``) reads one
generation's header with the next one's blocks. With equal headers that is exactly the new file;
with different ones it fails ("IO Error: No more data remaining in MetadataReader"). The header
names where the free list starts, right after the catalog, so it moves whenever the catalog
grows or shrinks by a 4 KiB metadata block (a view more, the first export files, ...). So the
catalog of every views file is padded (a comment on ``catalog.schema_version``) to fill exactly
:attr:`ViewsWriter.layout` metadata blocks: :data:`LAYOUT_MIN` (≈ 32 KiB of view definitions; the
bus's own views take 3), read back from the installed file at start. A catalog that outgrows it
moves the layout to the next power of two, for good (logged as ``publication.views_layout``): the
one swap that installs the first file of the new layout is the only one a reader can straddle.

The padding that fits a set of views is remembered (in memory, and in ``.store/views-pads.json``
for the next process: a ``sync`` writes its views file once instead of twice); a remembered
padding is used only when the file it gives has the layout, so a stale one costs a write.
"""

# ruff: noqa: S608 - paths in views are our own, quoted with lit; table names are constants.

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq

from ..catalog import LATEST_VIEW, SCHEMA_VERSION
from ..fsutil import fsync_file, write_atomic
from ..log import get_logger
from ..sqltext import lit, q
from .layout import HIDDEN, STORAGE_VERSION, VIEWS_VERSION

log = get_logger("quantbot_bus.publication")

HEADER_BYTES = 3 * 4096  #: DuckDB's main header and its two database headers (its first open)
LAYOUT_MIN = 8  #: metadata blocks the catalog of a views file fills, at least
_META_PER_BLOCK = 64  # metadata blocks (4 KiB each) per storage block (256 KiB)
_META_PAYLOAD = 4080  # catalog bytes one metadata block holds (measured: DuckDB 1.2-2.0)
_PAD_TRIES = 6  # writes to find the padding (1 when the views are those of the previous file)
_PAD_NOTE = "padding: every views file has the same header (quantbot_bus.publication.views) "


class ViewsWriter:
    """Writes views files (:func:`write_views`) padded to one layout, so that all of them have
    the same header. ``installed`` is the views file readers open now: its layout is kept."""

    def __init__(self, installed: Path, pads: Path | None = None) -> None:
        self._con = duckdb.connect()  # in-memory: only attaches the views files it writes
        self.layout = max(LAYOUT_MIN, layout_of(installed) or 0)
        self._pads_path = pads  # where the paddings found are kept for the next process
        #: views (their directory left out) -> padding that fits
        self._pads: dict[str, int] = self._load_pads()

    def close(self) -> None:
        with contextlib.suppress(duckdb.Error):
            self._con.close()

    def write(
        self, path: Path, base: Path, tables: Sequence[str], files: Mapping[str, str]
    ) -> None:
        """Write the views file of the generation seen at ``base`` to ``path``, padded to the
        layout (usually one write: the views of the previous file, another directory)."""
        sql = view_statements(base, tables, files)
        key = hashlib.sha256("\n".join(sql).replace(str(base), "").encode()).hexdigest()
        pad = self._pads.get(key)
        if pad is not None and self._write(path, base, tables, files, pad) == self.layout:
            return
        got = self._write(path, base, tables, files, 0)
        if got is None:
            return  # not laid out as this module knows (another DuckDB): as it is
        if got > self.layout:
            old, self.layout = self.layout, _level(got)
            self._pads.clear()
            log.info("publication.views_layout", blocks=self.layout, was=old)
        pad, low, high = 0, 0, None  # pads known to give fewer / more blocks than the layout
        for _ in range(_PAD_TRIES):
            if got == self.layout:
                self._remember(key, pad)
                return
            if got is None:
                break
            if got < self.layout:
                low = pad
                pad += (self.layout - got) * _META_PAYLOAD - (_META_PAYLOAD // 2 if pad else 0)
            else:
                high = pad
                pad -= (got - self.layout) * _META_PAYLOAD - _META_PAYLOAD // 2
            if high is not None and not low < pad < high:
                pad = (low + high) // 2
            got = self._write(path, base, tables, files, pad)
        log.warning("publication.views_unpadded", path=str(path), blocks=got, layout=self.layout)

    def _load_pads(self) -> dict[str, int]:
        """The paddings kept in the file, if it is there, readable and of this layout."""
        if self._pads_path is None:
            return {}
        try:
            doc = json.loads(self._pads_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(doc, dict) or doc.get("layout") != self.layout:
            return {}
        pads = doc.get("pads")
        if not isinstance(pads, dict):
            return {}
        most = self.layout * _META_PAYLOAD  # more would not fit the layout
        return {str(k): v for k, v in pads.items() if isinstance(v, int) and 0 <= v <= most}

    def _remember(self, key: str, pad: int) -> None:
        if self._pads.get(key) == pad:
            return
        if len(self._pads) >= 64:
            self._pads.clear()
        self._pads[key] = pad
        if self._pads_path is not None:
            with contextlib.suppress(OSError):  # only saves a write next time
                doc = {"layout": self.layout, "pads": self._pads}
                write_atomic(self._pads_path, json.dumps(doc, sort_keys=True))

    def _write(
        self,
        path: Path,
        base: Path,
        tables: Sequence[str],
        files: Mapping[str, str],
        pad: int,
    ) -> int | None:
        path.unlink(missing_ok=True)
        write_views(self._con, path, base, tables, files, pad=pad)
        return layout_of(path)


def _level(blocks: int) -> int:
    """The layout for a catalog of ``blocks`` metadata blocks: LAYOUT_MIN doubled until it fits."""
    level = LAYOUT_MIN
    while level < blocks:
        level *= 2
    return level


def layout_of(path: Path) -> int | None:
    """How many metadata blocks the catalog of the views file ``path`` fills (where its free list
    starts); None when there is no such file or it is not laid out as :func:`write_views` makes
    them (one checkpoint of a new file, catalog first)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(HEADER_BYTES)
    except OSError:
        return None
    if len(head) < HEADER_BYTES or head[8:12] != b"DUCK":
        return None
    # the database header in use is the one with the higher iteration (checksum, then fields)
    headers = [struct.unpack_from("<QqqQ", head, off + 8) for off in (4096, 8192)]
    iteration, meta_block, free_list, _blocks = max(headers, key=lambda h: h[0])
    if iteration != 1 or meta_block != 0 or free_list < 0:
        return None
    return (free_list & ((1 << 56) - 1)) * _META_PER_BLOCK + (free_list >> 56)


def write_views(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    base: Path,
    tables: Sequence[str],
    files: Mapping[str, str],
    *,
    pad: int = 0,
) -> None:
    """Write a views-only DuckDB file at ``path`` (storage v1.2.0) over the generation seen
    at ``base``, its catalog ``pad`` bytes longer (:class:`ViewsWriter`); ``con`` is an
    in-memory connection that attaches it for the time it takes."""
    sql = view_statements(base, tables, files)
    if pad > 0:
        note = (_PAD_NOTE + "." * pad)[: max(pad, 1)]
        sql.append(f"COMMENT ON VIEW catalog.schema_version IS {lit(note)}")
    con.execute(f"ATTACH {lit(str(path))} AS qb_pub (STORAGE_VERSION {lit(STORAGE_VERSION)})")
    try:
        con.execute("USE qb_pub")
        con.execute("BEGIN")
        con.execute("CREATE SCHEMA catalog; CREATE SCHEMA exports")
        for statement in sql:
            con.execute(statement)
        con.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            con.execute("ROLLBACK")
        raise
    finally:
        con.execute("USE memory")
        con.execute("DETACH qb_pub")
    _punch_zeros(path)
    fsync_file(path)


def _punch_zeros(path: Path, block: int = 4096) -> None:
    """Rewrite ``path`` with its all-zero blocks as holes: a views file is 268 KiB, of which
    DuckDB fills ~44 KiB (headers, the catalog padded to 8 metadata blocks, the free list); one
    per generation costs that much disk instead."""
    data = path.read_bytes()
    tmp = path.with_name(path.name + ".qbpub-sparse")
    zero = bytes(block)
    with open(tmp, "wb") as fh:
        for off in range(0, len(data), block):
            chunk = data[off : off + block]
            if chunk != zero[: len(chunk)]:
                fh.seek(off)
                fh.write(chunk)
        fh.truncate(len(data))
    os.replace(tmp, path)


def view_statements(base: Path, tables: Sequence[str], files: Mapping[str, str]) -> list[str]:
    """The CREATE VIEW statements of a views file over the generation seen at ``base``."""
    cat = base / "catalog"

    def glob(table: str) -> str:
        return lit(str(cat / table / "*.parquet"))

    hidden = ", ".join(HIDDEN)
    out = [
        f"""CREATE VIEW catalog.runs_d AS
        SELECT * EXCLUDE ({hidden}) FROM read_parquet({glob("runs_d")})
        QUALIFY row_number() OVER (PARTITION BY run_id ORDER BY _seq DESC) = 1""",
        f"""CREATE VIEW catalog.artifacts_f AS
        SELECT a.* EXCLUDE (_seq) FROM read_parquet({glob("artifacts_f")}) AS a
        SEMI JOIN (SELECT run_id, _aseq FROM read_parquet({glob("runs_d")})
                   QUALIFY row_number() OVER (PARTITION BY run_id ORDER BY _seq DESC) = 1) AS r
        ON a.run_id = r.run_id AND a._seq = r._aseq""",
        f"CREATE VIEW catalog.schema_version AS SELECT CAST({SCHEMA_VERSION} AS INTEGER) AS version",
        f"""CREATE VIEW catalog.rejections_f AS
        SELECT * EXCLUDE (_seq) FROM read_parquet({glob("rejections_f")})
        QUALIFY row_number() OVER (PARTITION BY run_dir ORDER BY _seq DESC) = 1""",
        LATEST_VIEW,  # the working catalog's own definition, over the views above
    ]
    for name, file_name in sorted(files.items()):
        reader = "read_csv_auto" if file_name.endswith(".csv") else "read_parquet"
        path = base / "files" / file_name
        out.append(f"CREATE VIEW exports.{q(name)} AS SELECT * FROM {reader}({lit(str(path))})")
    for table in sorted(tables):
        view = table if table not in files else f"table_{table}"
        out.append(
            f"CREATE VIEW exports.{q(view)} AS SELECT * FROM "
            f"read_parquet({lit(str(base / 'tables' / table / '*.parquet'))}, union_by_name = true)"
        )
    return out


def views_key(
    exports_dir: Path, gdir: Path, tables: Sequence[str], files: Mapping[str, str]
) -> str:
    """What a views file binds: where it is (its views name absolute paths: a moved exports
    dir needs new ones), the tables and files, each with its columns and types (a table's union
    by name, in the order DuckDB builds it). Equal keys: a views file fits either."""
    parts: list[Any] = [VIEWS_VERSION, SCHEMA_VERSION, str(exports_dir)]
    for table in tables:
        columns: dict[str, set[str]] = {}
        for path in sorted((gdir / "tables" / table).glob("*.parquet")):
            for f in pq.read_schema(path):
                columns.setdefault(f.name, set()).add(str(f.type))
        parts.append([table, [[c, sorted(t)] for c, t in columns.items()]])
    for name, file_name in sorted(files.items()):
        path = gdir / "files" / file_name
        if file_name.endswith(".parquet"):
            parts.append([name, [[f.name, str(f.type)] for f in pq.read_schema(path)]])
        else:  # a CSV's header line
            with open(path, encoding="utf-8", errors="replace") as fh:
                parts.append([name, fh.readline().strip(), _csv_kinds(path)])
    return json.dumps(parts)


def _csv_kinds(path: Path) -> str:
    """The column types DuckDB infers for a CSV file: part of the key, since they may change."""
    con = duckdb.connect()
    try:
        rows = con.execute(f"DESCRIBE SELECT * FROM read_csv_auto({lit(str(path))})").fetchall()
    finally:
        con.close()
    return ",".join(f"{r[0]}:{r[1]}" for r in rows)
