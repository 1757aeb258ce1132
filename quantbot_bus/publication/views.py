"""The views file of a generation: what it declares, and when an existing one still fits."""

# ruff: noqa: S608 - paths in views are our own, quoted with lit; table names are constants.

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq

from ..catalog import LATEST_VIEW, SCHEMA_VERSION
from ..fsutil import fsync_file
from ..sqltext import lit, q
from .layout import HIDDEN, STORAGE_VERSION, VIEWS_VERSION


def write_views(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    base: Path,
    tables: Sequence[str],
    files: Mapping[str, str],
) -> None:
    """Write a views-only DuckDB file at ``path`` (storage v1.2.0) over the generation seen
    at ``base``; ``con`` is an in-memory connection that attaches it for the time it takes."""
    sql = view_statements(base, tables, files)
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
    DuckDB fills ~30 KiB; one per generation costs ~32 KiB of disk instead."""
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
