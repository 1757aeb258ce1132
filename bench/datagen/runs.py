"""Run directories made from a template: ``root/backtest/<run_id>/`` holding the variant's files
hard-linked and a v1 ``metadata.json`` written last (temp file + rename)."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .tables import BASE_TS_MS, ROWS_PER_TABLE

if TYPE_CHECKING:
    from . import Template, Variant

RUN_TYPE = "backtest"


def run_id_for(i: int, prefix: str = "bench") -> str:
    return f"{prefix}-{i:07d}"


def _iso(ts: float) -> str:
    """Whole-second ISO-8601 UTC with ``Z`` (already in the contract's normal form)."""
    return (
        dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


def metadata_for(run_id: str, i: int, variant: Variant) -> dict[str, Any]:
    """The v1 metadata.json document for run ``i`` made from ``variant``."""
    created = BASE_TS_MS / 1000 + 60.0 * i
    return {
        "schema_version": 1,
        "run_id": run_id,
        "run_type": RUN_TYPE,
        "producer": {"name": "quantbot-bench", "version": "0.1.0"},
        "status": "success",
        "created_at": _iso(created),
        "started_at": _iso(created),
        "finished_at": _iso(created + 42.0),
        "params": {
            "strategy": variant.shape,
            "interval": "1m" if i % 2 == 0 else "5m",
            "date_from": "2024-01-01",
            "date_to": "2024-01-31",
            "calls": ROWS_PER_TABLE,
            "seed": variant.seed,
        },
        "git": {
            "commit": f"{i * 2654435761 % (1 << 32):08x}" * 5,
            "branch": "main",
            "dirty": False,
        },
        "host": "bench",
        "metrics": variant.metrics,
        "artifacts": [
            {
                "name": f.name,
                "file": f"{f.name}.parquet",
                "format": "parquet",
                "rows": f.rows,
                "bytes": f.bytes,
                "sha256": f.sha256,
            }
            for f in variant.files
        ],
    }


def metadata_text(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=1)


def write_json_atomic(path: Path, doc: dict[str, Any], *, fsync: bool = False) -> None:
    """Write ``doc`` to ``path`` via a ``.tmp`` sibling and ``os.replace`` (readers skip .tmp)."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(metadata_text(doc))
        if fsync:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)


def make_run(root: Path, tpl: Template, i: int, *, prefix: str = "bench") -> Path:
    """Create one complete run directory (data files linked first, metadata.json last)."""
    run_id = run_id_for(i, prefix)
    variant = tpl.variant_for(i)
    run_dir = root / RUN_TYPE / run_id
    run_dir.mkdir(parents=True)
    for f in variant.files:
        tpl.link(f, run_dir / f"{f.name}.parquet")
    write_json_atomic(run_dir / "metadata.json", metadata_for(run_id, i, variant))
    return run_dir


def make_runs(
    root: Path, tpl: Template, n: int, *, start: int = 0, prefix: str = "bench"
) -> list[Path]:
    """Create runs ``start .. start+n-1`` under ``root/backtest/``; returns their directories."""
    (root / RUN_TYPE).mkdir(parents=True, exist_ok=True)
    return [make_run(root, tpl, i, prefix=prefix) for i in range(start, start + n)]


def iter_run_dirs(root: Path) -> Iterator[Path]:
    """Run dirs this module created (``root/backtest/*`` holding metadata.json), sorted."""
    base = root / RUN_TYPE
    if not base.is_dir():
        return
    for entry in sorted(os.scandir(base), key=lambda e: e.name):
        if entry.is_dir() and not entry.name.startswith("."):
            if os.path.exists(os.path.join(entry.path, "metadata.json")):
                yield Path(entry.path)
