"""Build real run directories for tests: real Parquet (pyarrow) plus a v1 ``metadata.json``.

``make_run(root, run_type, run_id, tables={name: pyarrow.Table}, status="success", **overrides)``
writes ``root/run_type/run_id/<name>.parquet`` for each table, then ``metadata.json`` atomically
(temp file + rename) with ``rows``, ``bytes`` and ``sha256`` of the files it wrote. ``overrides``
replace top-level metadata keys; pass :data:`DROP` to remove one. Returns the run directory.

Kept small and stable: other test modules import it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from quantbot_bus.catalog import Catalog, open_reader
from quantbot_bus.config import Config
from quantbot_bus.publication import Publication, Published

DROP: Any = object()  # an override value that removes the key from metadata.json

DEFAULT_TIME = "2024-05-01T12:00:00Z"


def sample_table(n: int = 3, offset: int = 0) -> pa.Table:
    """A small deterministic table."""
    return pa.table(
        {
            "call_id": pa.array([f"c{offset + i}" for i in range(n)], pa.string()),
            "ret_bps": pa.array([float(offset + i) * 1.5 for i in range(n)], pa.float64()),
        }
    )


def write_metadata(run_dir: Path, metadata: dict[str, Any]) -> Path:
    """Write ``metadata.json`` atomically (hidden temp file in the same dir, then rename)."""
    tmp = run_dir / ".metadata.json.tmp"
    tmp.write_text(json.dumps(metadata, indent=2), encoding="utf-8")
    os.replace(tmp, run_dir / "metadata.json")
    return run_dir / "metadata.json"


def make_run(
    root: Path,
    run_type: str,
    run_id: str,
    tables: dict[str, pa.Table] | None = None,
    status: str = "success",
    **overrides: Any,
) -> Path:
    """Write a complete v1 run directory under ``root`` and return it."""
    if tables is None:
        tables = {"results": sample_table()}
    run_dir = Path(root) / run_type / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    artifacts = []
    for name, table in tables.items():
        path = run_dir / f"{name}.parquet"
        pq.write_table(table, path)
        data = path.read_bytes()
        artifacts.append(
            {
                "name": name,
                "file": path.name,
                "format": "parquet",
                "rows": table.num_rows,
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
    metadata: dict[str, Any] = {
        "schema_version": 1,
        "run_id": run_id,
        "run_type": run_type,
        "producer": {"name": "tests", "version": "1.0"},
        "status": status,
        "created_at": DEFAULT_TIME,
        "started_at": DEFAULT_TIME,
        "finished_at": DEFAULT_TIME,
        "params": {"seed": 1},
        "git": {"commit": "abc1234", "branch": "main", "dirty": False},
        "host": "test-host",
        "metrics": {"n": 3.0},
        "artifacts": artifacts,
    }
    if status == "failed":
        metadata["error"] = "RuntimeError: test failure"
    for key, value in overrides.items():
        if value is DROP:
            metadata.pop(key, None)
        else:
            metadata[key] = value
    write_metadata(run_dir, metadata)
    return run_dir


def wait_for(
    condition: Callable[[], Any], what: str, timeout: float = 30.0, every: float = 0.05
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def snapshot_query(config: Config, sql: str, params: list[Any] | None = None) -> list[tuple]:
    """Query the reader-side snapshot on a fresh read-only connection; [] if not published."""
    if not config.snapshot_path.exists():
        return []
    con = open_reader(config.snapshot_path)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def live_run_ids(config: Config) -> set[str]:
    rows = snapshot_query(config, "SELECT run_id FROM catalog.runs_d WHERE deleted_at IS NULL")
    return {r[0] for r in rows}


def publish_catalog(catalog: Catalog, exports_dir: Path) -> Published:
    """Publish what ``catalog`` holds to ``exports_dir`` (what the Bus does after each batch)."""
    publication, cur = Publication(exports_dir), catalog.cursor()
    try:
        published = publication.publish(cur, catalog_id=catalog.catalog_id(), force=True)
    finally:
        cur.close()
        publication.close()
    assert published is not None
    return published
