"""A bus under a directory and what its readers see: the current generation, the rows of a
published file, the live runs of ``exports/bus.duckdb`` opened read-only as a reader would, and
the daemon's status file."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from quantbot_bus.config import Config

from .daemon import DaemonProc


def bus_config(base: Path) -> Config:
    """A Config for a bus under ``base`` (artifacts, exports, state), directories created."""
    cfg = Config(
        root=base / "artifacts", exports_dir=base / "exports", state_dir=base / "state"
    ).validate()
    for d in (cfg.root, cfg.exports_dir, cfg.state_dir):
        d.mkdir(parents=True, exist_ok=True)
    return cfg


def current_generation(cfg: Config) -> Path | None:
    """``exports/current`` resolved once (read files below the result), or None before the
    first publication."""
    try:
        return Path(os.path.realpath(cfg.exports_dir / "current", strict=True))
    except OSError:
        return None


def published_file_rows(cfg: Config, name: str = "runs") -> int | None:
    """Rows of ``exports/current/files/<name>.parquet`` (what a file reader sees), or None."""
    gen = current_generation(cfg)
    if gen is None:
        return None
    try:
        return int(pq.read_metadata(gen / "files" / f"{name}.parquet").num_rows)
    except (OSError, ValueError):
        return None


def visible_runs(cfg: Config, prefix: str | None = None) -> int | None:
    """Live runs in ``catalog.runs_d`` of ``exports/bus.duckdb``, opened read-only by this
    process as a reader would (None when there is nothing to open yet)."""
    from quantbot_bus.catalog import open_reader

    try:
        con = open_reader(cfg.snapshot_path)
    except Exception:  # noqa: BLE001 - not published yet
        return None
    try:
        sql = "SELECT count(*) FROM catalog.runs_d WHERE deleted_at IS NULL"
        if prefix is None:
            row = con.execute(sql).fetchone()
        else:
            row = con.execute(sql + " AND starts_with(run_id, ?)", [prefix]).fetchone()
        return int(row[0]) if row else 0
    finally:
        con.close()


def wait_visible(
    d: DaemonProc | None, cfg: Config, n: int, timeout: float, interval: float = 0.02
) -> float | None:
    """Poll ``exports/bus.duckdb`` (a ``stat`` every ``interval``; a read-only open when it was
    replaced) until it shows at least ``n`` live runs; the ``perf_counter`` time of the ``stat``
    that led to it (as :mod:`bench.reader` does), or None on timeout."""
    deadline = time.perf_counter() + timeout
    last: tuple[int, int, int, str] | None = None
    while time.perf_counter() < deadline:
        t = time.perf_counter()
        try:
            st = os.stat(cfg.snapshot_path)
            sig = (st.st_ino, st.st_size, st.st_mtime_ns, os.readlink(cfg.exports_dir / "current"))
        except OSError:
            sig = None
        if sig is not None and sig != last:
            last = sig
            if (visible_runs(cfg) or 0) >= n:
                return t
        if d is not None:
            d.check_alive()
        time.sleep(interval)
    return None


def read_status(cfg: Config) -> dict[str, Any]:
    try:
        data = json.loads(cfg.status_path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
