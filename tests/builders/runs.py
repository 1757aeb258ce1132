"""Run directories: real Parquet written by pyarrow, then ``metadata.json`` written atomically;
the parts they are made of, and ``mutate`` hooks that break them on purpose."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

DEFAULT_TIME = "2024-05-01T12:00:00Z"

Mutator = Callable[[dict[str, Any], Path], None]


# ---------------------------------------------------------------------------- run parts


def sample_table(n: int = 3, offset: int = 0) -> pa.Table:
    """A small deterministic table (``call_id`` string, ``ret_bps`` double)."""
    return pa.table(
        {
            "call_id": pa.array([f"c{offset + i}" for i in range(n)], pa.string()),
            "ret_bps": pa.array([float(offset + i) * 1.5 for i in range(n)], pa.float64()),
        }
    )


def write_parquet(path: Path, table: pa.Table | int = 3, **options: Any) -> bytes:
    """Write ``table`` (or a :func:`sample_table` of that many rows) to ``path``, creating its
    directory; ``options`` go to :func:`pyarrow.parquet.write_table`. Returns the file's bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(sample_table(table) if isinstance(table, int) else table, path, **options)
    return path.read_bytes()


def artifact_entry(
    file: str, data: bytes | None, rows: int | None, *, name: str | None = None
) -> dict[str, Any]:
    """The ``metadata.json`` entry declaring ``file`` with ``rows`` rows and the size and sha256
    of ``data`` (both null when ``data`` is None). ``name`` defaults to the file's stem."""
    return {
        "name": name if name is not None else Path(file).stem,
        "file": file,
        "format": "parquet",
        "rows": rows,
        "bytes": None if data is None else len(data),
        "sha256": None if data is None else hashlib.sha256(data).hexdigest(),
    }


def file_entry(path: Path, *, name: str | None = None, file: str | None = None) -> dict[str, Any]:
    """The entry of the real Parquet file ``path`` (rows read from its footer)."""
    rows = pq.read_metadata(path).num_rows
    return artifact_entry(file or path.name, path.read_bytes(), rows, name=name)


#: The fields every v1 ``metadata.json`` must have (docs/contract.md).
V1_REQUIRED = (
    "schema_version",
    "run_id",
    "run_type",
    "producer",
    "status",
    "created_at",
    "started_at",
    "finished_at",
    "params",
    "artifacts",
)


def v1_metadata(
    run_id: str,
    run_type: str = "backtest",
    artifacts: Sequence[dict[str, Any]] = (),
    *,
    status: str = "success",
    **overrides: Any,
) -> dict[str, Any]:
    """A complete v1 ``metadata.json`` document; ``overrides`` replace top-level keys."""
    meta: dict[str, Any] = {
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
        "artifacts": list(artifacts),
    }
    if status == "failed":
        meta["error"] = "RuntimeError: test failure"
    meta.update(overrides)
    return meta


def ts_metadata(run_id: str, rows: int = 3, **fields: Any) -> dict[str, Any]:
    """The ``metadata.json`` the quantbot TypeScript producer writes; ``fields`` replace keys."""
    meta: dict[str, Any] = {
        "run_id": run_id,
        "backtest_type": "policy",
        "table_name": "backtest_policy_results",
        "rows": rows,
        "created_at_utc": "2024-05-01T12:00:00.000Z",
        "parquet_file": "results.parquet",
        "parquet_path": f"/home/quant/quantbot/artifacts/{run_id}/results.parquet",
        "interval": "5m",
        "callsProcessed": 120,
        "rowsWritten": rows,
        "policyId": "sl10_tp50_trail5",
    }
    meta.update(fields)
    return meta


def write_metadata(run_dir: Path, meta: Any, *, fsync: bool = False) -> Path:
    """Write ``metadata.json`` last and atomically, as producers must: a hidden temp name in the
    same directory (optionally fsynced), then a rename. ``meta`` may be any JSON value."""
    tmp = run_dir / ".metadata.json.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(meta, fh)
        if fsync:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, run_dir / "metadata.json")
    return run_dir / "metadata.json"


# ---------------------------------------------------------------------------- runs


def make_run(
    root: Path,
    run_type: str = "backtest",
    run_id: str = "run-1",
    tables: dict[str, pa.Table | int] | None = None,
    status: str = "success",
    *,
    mutate: Mutator | None = None,
    dir_name: str | None = None,
    **overrides: Any,
) -> Path:
    """A complete v1 run ``root/run_type/<dir_name or run_id>``; returns its directory.

    One ``<name>.parquet`` per entry of ``tables`` (a table, or a row count for a
    :func:`sample_table`; default ``{"results": 3}``), then ``metadata.json`` declaring their
    rows, bytes and sha256. ``overrides`` replace top-level metadata keys; ``mutate(meta,
    run_dir)`` may change the document and the directory just before ``metadata.json`` is written.
    """
    tables = {"results": 3} if tables is None else tables
    run_dir = Path(root) / run_type / (dir_name if dir_name is not None else run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    entries = [_table_entry(run_dir, name, table) for name, table in tables.items()]
    meta = v1_metadata(run_id, run_type, entries, status=status, **overrides)
    if mutate is not None:
        mutate(meta, run_dir)
    write_metadata(run_dir, meta)
    return run_dir


def _table_entry(run_dir: Path, name: str, table: pa.Table | int) -> dict[str, Any]:
    """Write ``run_dir/<name>.parquet`` (a table or a row count) and return its entry."""
    data = write_parquet(run_dir / f"{name}.parquet", table)
    rows = table if isinstance(table, int) else table.num_rows
    return artifact_entry(f"{name}.parquet", data, rows)


def make_run_from_bytes(
    root: Path,
    run_type: str,
    run_id: str,
    data: bytes | None,
    *,
    rows: int,
    declared: bytes | None = None,
    file: str = "results.parquet",
) -> Path:
    """A run whose one file ``file`` holds ``data`` (None: the file does not exist yet) while
    ``metadata.json`` declares ``rows`` rows and the size and sha256 of ``declared`` (default:
    ``data`` itself). Half a file declared whole is a run still being written; junk or a crafted
    footer declared as it is, a corrupt or poisonous one."""
    run_dir = Path(root) / run_type / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    if data is not None:
        (run_dir / file).write_bytes(data)
    entry = artifact_entry(file, declared if declared is not None else data, rows)
    write_metadata(run_dir, v1_metadata(run_id, run_type, [entry]))
    return run_dir


def corrupt_file(path: Path) -> None:
    """Overwrite a run's file with junk of the same size: its declared size still matches, so
    the run is rejected (not a Parquet file), not left pending."""
    path.write_bytes(b"x" * path.stat().st_size)


def make_ts_run(
    root: Path,
    run_id: str = "ts-run-1",
    *,
    rows: int = 3,
    mutate: Mutator | None = None,
    **fields: Any,
) -> Path:
    """A run ``root/backtest/run_id`` as the quantbot TypeScript producer writes it: its
    ``parquet_file`` of ``rows`` rows and the flat metadata (``fields`` replace keys)."""
    run_dir = Path(root) / "backtest" / run_id
    meta = ts_metadata(run_id, rows, **fields)
    write_parquet(run_dir / meta["parquet_file"], rows)
    if mutate is not None:
        mutate(meta, run_dir)
    write_metadata(run_dir, meta)
    return run_dir


class RunFactory:
    """Many complete runs, fast: one Parquet template hard-linked into every run directory (its
    sha256 computed once), ``metadata.json`` not fsynced."""

    #: A new template (same bytes) every this many links: ext4 allows 65,000 links per inode.
    LINKS_PER_TEMPLATE = 30_000

    def __init__(self, workdir: Path, rows: int = 20, table: str = "results") -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.template = workdir / "template.parquet"
        write_parquet(self.template, rows)
        self.entry = file_entry(self.template, name=table, file=f"{table}.parquet")
        self.links = 0

    def make(self, parent: Path, run_id: str, run_type: str = "backtest") -> Path:
        """A complete run ``parent/run_id`` (Parquet hard link, then ``metadata.json``)."""
        run_dir = parent / run_id
        run_dir.mkdir(parents=True)
        self.links += 1
        if self.links % self.LINKS_PER_TEMPLATE == 0:
            fresh = self.workdir / f"template-{self.links}.parquet"
            fresh.write_bytes(self.template.read_bytes())
            self.template = fresh
        os.link(self.template, run_dir / self.entry["file"])
        write_metadata(run_dir, v1_metadata(run_id, run_type, [dict(self.entry)]))
        return run_dir

    def stage(self, staging: Path, run_ids: Sequence[str], run_type: str = "backtest") -> None:
        """Pre-build runs in ``staging`` (outside the root, same filesystem) for a burst."""
        for run_id in run_ids:
            self.make(staging, run_id, run_type)


# ---------------------------------------------------------------------------- metadata mutators


def set_field(path: str, value: Any) -> Mutator:
    """A ``mutate`` hook setting a metadata field by a dotted path (list indexes as numbers),
    e.g. ``set_field('artifacts.0.rows', 4)``."""

    def setter(meta: dict[str, Any], _: Path) -> None:
        target: Any = meta
        parts = path.split(".")
        for part in parts[:-1]:
            target = target[int(part)] if isinstance(target, list) else target[part]
        last = parts[-1]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value

    return setter
