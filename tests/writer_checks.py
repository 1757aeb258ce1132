"""What the RunWriter tests (tests/test_writer_*.py) read back from a run directory."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq


def read_meta(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "metadata.json").read_text(encoding="utf-8"))


def assert_artifacts_match_files(run_dir: Path, meta: dict[str, Any]) -> None:
    """Every declared rows/bytes/sha256 equals what the file on disk says."""
    for a in meta["artifacts"]:
        path = run_dir / a["file"]
        data = path.read_bytes()
        assert a["format"] == "parquet"
        assert a["bytes"] == len(data) == path.stat().st_size
        assert a["sha256"] == hashlib.sha256(data).hexdigest()
        assert a["rows"] == pq.read_metadata(path).num_rows


def leftovers(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.iterdir() if p.name.endswith((".tmp", ".partial")))
