"""Merging a catalog table's small segments: like-sized ones, newest version of each key."""

# ruff: noqa: S608 - file paths are our own store's, quoted with lit; keys are constants.

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb

from ..fsutil import fsync_file
from ..log import get_logger
from ..sqltext import lit
from .layout import CATALOG_TABLES, MAX_SEGMENTS, MERGE_FAN, Manifest, Segment

log = get_logger("quantbot_bus.publication")


@dataclass
class Merge:
    """One merge: ``victims`` (segment names of ``table``) into ``merged`` once written."""

    table: str
    victims: list[str]
    merged: str = ""
    rows: int = 0
    max_seq: int = 0


def plan(manifest: Manifest) -> list[Merge]:
    """Merges due: a table above :data:`MAX_SEGMENTS` segments gets its smallest like-sized
    ones merged (each next at most twice all before it together; at most :data:`MERGE_FAN`),
    so a row is rewritten O(log n) times and one small batch never drags big segments along."""
    plans = []
    for table, segs in manifest.catalog.items():
        if len(segs) <= MAX_SEGMENTS:
            continue
        ordered = sorted(segs, key=lambda s: (s.rows, s.name))
        picked: list[Segment] = []
        total = 0
        for seg in ordered[:MERGE_FAN]:
            if len(picked) >= 2 and seg.rows > 2 * max(total, 1):
                break
            picked.append(seg)
            total += seg.rows
        if len(picked) >= 2:
            plans.append(Merge(table, [s.name for s in picked]))
    return plans


def write(seg_path: Callable[[str, str], Path], plans: Sequence[Merge]) -> list[Merge]:
    """Write each merged segment on a DuckDB connection of its own (no lock held): the newest
    version of each key among the victims (artifacts: the newest write of each run)."""
    done = []
    con = duckdb.connect()
    try:
        con.execute("SET threads = 1")
        for merge in plans:
            key = CATALOG_TABLES[merge.table]
            files = "[" + ", ".join(lit(str(seg_path(merge.table, v))) for v in merge.victims) + "]"
            if merge.table == "artifacts_f":
                rule = f"QUALIFY _seq = max(_seq) OVER (PARTITION BY {key})"
            else:
                rule = f"QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY _seq DESC) = 1"
            name = f"m-{secrets.token_hex(6)}.parquet"
            dest = seg_path(merge.table, name)
            try:
                got = con.execute(
                    f"COPY (SELECT * FROM read_parquet({files}) {rule} ORDER BY _seq) "
                    "TO $dest (FORMAT parquet, COMPRESSION zstd)",
                    {"dest": str(dest)},
                ).fetchone()
                seq = con.execute(f"SELECT max(_seq) FROM read_parquet({files})").fetchone()
            except duckdb.Error as exc:
                dest.unlink(missing_ok=True)
                log.error("publication.compaction_failed", table=merge.table, error=str(exc))
                continue
            fsync_file(dest)
            merge.merged = name
            merge.rows = int(got[0]) if got else 0
            merge.max_seq = int(seq[0]) if seq and seq[0] is not None else 0
            done.append(merge)
    finally:
        con.close()
    return done
