"""A seed-schema catalog pre-seeded with runs, to measure the baseline on a large catalog
without running it for hours."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from .schema import SCHEMA_DDL, catalog_timestamp


def preseed(db_path: Path, runs: list[tuple[str, Path, dict[str, Any]]]) -> float:
    """Register ``runs`` (run_id, run_dir, metadata) in a seed-schema catalog with one Arrow
    insert per table (so the baseline can be measured at 10k/100k without running it for hours).
    Returns seconds taken."""
    t0 = time.perf_counter()
    run_cols: dict[str, list[Any]] = {
        k: [] for k in ("run_id", "producer", "created_at_utc", "meta_json")
    }
    art_cols: dict[str, list[Any]] = {
        k: []
        for k in (
            "artifact_key",
            "run_id",
            "artifact_id",
            "producer",
            "kind",
            "format",
            "canonical_path",
            "rows",
            "created_at_utc",
            "meta_json",
        )
    }
    for run_id, run_dir, meta in runs:
        producer = meta["producer"]["name"]
        created = catalog_timestamp(meta.get("created_at"))
        doc = dict(meta, run_dir=str(run_dir))
        run_cols["run_id"].append(run_id)
        run_cols["producer"].append(producer)
        run_cols["created_at_utc"].append(created)
        run_cols["meta_json"].append(json.dumps(doc, ensure_ascii=False))
        for seq, a in enumerate(meta["artifacts"], start=1):
            art_cols["artifact_key"].append(f"{run_id}:{a['name']}:{seq}")
            art_cols["run_id"].append(run_id)
            art_cols["artifact_id"].append(a["name"])
            art_cols["producer"].append(producer)
            art_cols["kind"].append(meta.get("run_type"))
            art_cols["format"].append("parquet")
            art_cols["canonical_path"].append(str(run_dir / a["file"]))
            art_cols["rows"].append(a["rows"])
            art_cols["created_at_utc"].append(created)
            art_cols["meta_json"].append(
                json.dumps({k: v for k, v in a.items() if k != "file"}, ensure_ascii=False)
            )
    runs_tbl = pa.table(run_cols)
    arts_tbl = pa.table(art_cols)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(db_path))
    try:
        for stmt in SCHEMA_DDL:
            con.execute(stmt)
        con.register("runs_in", runs_tbl)
        con.register("arts_in", arts_tbl)
        con.execute(
            "INSERT INTO catalog.runs_d (run_id, producer, created_at_utc, meta_json) "
            "SELECT run_id, producer, created_at_utc, meta_json FROM runs_in"
        )
        con.execute(
            "INSERT INTO catalog.artifacts_f (artifact_key, run_id, artifact_id, producer, kind, "
            "format, canonical_path, rows, created_at_utc, meta_json) "
            "SELECT artifact_key, run_id, artifact_id, producer, kind, format, canonical_path, "
            "rows, created_at_utc, meta_json FROM arts_in"
        )
    finally:
        con.close()
    return time.perf_counter() - t0
