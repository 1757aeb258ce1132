"""Builders for real run directories (real Parquet written by pyarrow) used by the contract tests."""

from __future__ import annotations

import copy
import hashlib
import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

Mutator = Callable[[dict[str, Any], Path], None]


def write_parquet(path: Path, rows: int = 3) -> bytes:
    """A real Parquet file with ``rows`` rows (int64, string, nullable double); returns its bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "call_id": pa.array(range(rows), pa.int64()),
            "mint": pa.array([f"mint{i}" for i in range(rows)], pa.string()),
            "pnl_bps": pa.array([None if i % 2 else i * 1.5 for i in range(rows)], pa.float64()),
        }
    )
    pq.write_table(table, path, compression="zstd")
    return path.read_bytes()


def artifact_entry(name: str, file: str, data: bytes, rows: int) -> dict[str, Any]:
    return {
        "name": name,
        "file": file,
        "format": "parquet",
        "rows": rows,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def v1_metadata(run_id: str, artifacts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "run_id": run_id,
        "run_type": "backtest",
        "producer": {"name": "test-producer", "version": "1.2.3"},
        "status": "success",
        "created_at": "2024-05-01T12:00:00Z",
        "started_at": "2024-05-01T12:00:00.250+00:00",
        "finished_at": "2024-05-01T12:00:05Z",
        "params": {"strategy": "path-only", "interval": "1m", "grid": [1, 2]},
        "git": {"commit": "0123abc", "branch": "main", "dirty": False},
        "host": "research-1",
        "metrics": {"sharpe": 1.25, "calls": 3},
        "artifacts": artifacts,
    }


def make_run(
    root: Path,
    run_id: str = "run-1",
    run_type: str = "backtest",
    *,
    tables: dict[str, int] | None = None,
    mutate: Mutator | None = None,
    dir_name: str | None = None,
) -> Path:
    """A complete v1 run directory under ``root/run_type/<dir_name or run_id>``.

    ``tables`` maps artifact name -> row count (one ``<name>.parquet`` each). ``mutate(meta,
    run_dir)`` may change the metadata dict (and the directory) before metadata.json is written.
    """
    tables = {"trades": 3} if tables is None else tables
    run_dir = root / run_type / (dir_name if dir_name is not None else run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for name, rows in tables.items():
        data = write_parquet(run_dir / f"{name}.parquet", rows)
        entries.append(artifact_entry(name, f"{name}.parquet", data, rows))
    meta = v1_metadata(run_id, entries)
    if mutate is not None:
        mutate(meta, run_dir)
    write_metadata(run_dir, meta)
    return run_dir


def write_metadata(run_dir: Path, meta: Any) -> None:
    (run_dir / "metadata.json").write_text(json.dumps(meta), encoding="utf-8")


def ts_metadata(run_id: str, data_rows: int = 3, **extra: Any) -> dict[str, Any]:
    """The shape written by the quantbot TypeScript producer."""
    meta: dict[str, Any] = {
        "run_id": run_id,
        "backtest_type": "policy",
        "table_name": "backtest_policy_results",
        "rows": data_rows,
        "created_at_utc": "2024-05-01T12:00:00.000Z",
        "parquet_file": "results.parquet",
        "parquet_path": f"/home/quant/quantbot/artifacts/{run_id}/results.parquet",
        "interval": "5m",
        "callsProcessed": 120,
        "rowsWritten": data_rows,
        "policyId": "sl10_tp50_trail5",
    }
    meta.update(extra)
    return meta


def make_ts_run(root: Path, run_id: str = "ts-run-1", *, mutate: Mutator | None = None) -> Path:
    run_dir = root / "backtest" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    write_parquet(run_dir / "results.parquet", 3)
    meta = ts_metadata(run_id)
    if mutate is not None:
        mutate(meta, run_dir)
    write_metadata(run_dir, meta)
    return run_dir


def deep_copy(meta: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(meta)


# --------------------------------------------------------------------------- crafted Parquet
# A minimal Thrift compact-protocol encoder, enough to write a Parquet footer by hand
# (FileMetaData with one INT64 column). Used to craft files whose footer declares a billion
# rows without any data: the validator must compare the numbers and never read data pages.


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _zigzag(n: int) -> bytes:
    return _varint((n << 1) ^ (n >> 63))


class _Thrift:
    def __init__(self) -> None:
        self.buf = bytearray()
        self.last = [0]

    def _field(self, fid: int, ftype: int) -> None:
        delta = fid - self.last[-1]
        if 0 < delta <= 15:
            self.buf.append((delta << 4) | ftype)
        else:
            self.buf.append(ftype)
            self.buf += _zigzag(fid)
        self.last[-1] = fid

    def i32(self, fid: int, v: int) -> None:
        self._field(fid, 5)
        self.buf += _zigzag(v)

    def i64(self, fid: int, v: int) -> None:
        self._field(fid, 6)
        self.buf += _zigzag(v)

    def string(self, fid: int, s: str) -> None:
        self._field(fid, 8)
        b = s.encode()
        self.buf += _varint(len(b)) + b

    def begin(self, fid: int | None = None) -> None:
        if fid is not None:
            self._field(fid, 12)
        self.last.append(0)

    def end(self) -> None:
        self.buf.append(0)
        self.last.pop()

    def list_header(self, fid: int, etype: int, n: int) -> None:
        self._field(fid, 9)
        assert n < 15
        self.buf.append((n << 4) | etype)


def crafted_parquet(num_rows: int, row_group_rows: int | None) -> bytes:
    """A Parquet file of a few dozen bytes whose footer says ``num_rows`` rows, with one row
    group claiming ``row_group_rows`` rows (or no row group at all when None)."""
    t = _Thrift()
    t.i32(1, 1)  # version
    t.list_header(2, 12, 2)  # schema: root + one leaf
    t.begin()
    t.string(4, "schema")
    t.i32(5, 1)
    t.end()
    t.begin()
    t.i32(1, 2)  # INT64
    t.i32(3, 0)  # REQUIRED
    t.string(4, "x")
    t.end()
    t.i64(3, num_rows)
    if row_group_rows is None:
        t.list_header(4, 12, 0)
    else:
        t.list_header(4, 12, 1)
        t.begin()  # RowGroup
        t.list_header(1, 12, 1)
        t.begin()  # ColumnChunk
        t.i64(2, 4)  # file_offset
        t.begin(3)  # ColumnMetaData
        t.i32(1, 2)
        t.list_header(2, 5, 1)
        t.buf += _zigzag(0)  # PLAIN
        t.list_header(3, 8, 1)
        t.buf += _varint(1) + b"x"
        t.i32(4, 0)  # UNCOMPRESSED
        t.i64(5, row_group_rows)
        t.i64(6, 0)
        t.i64(7, 0)
        t.i64(9, 4)  # data_page_offset
        t.end()
        t.end()
        t.i64(2, 0)  # total_byte_size
        t.i64(3, row_group_rows)
        t.end()
    t.buf.append(0)
    footer = bytes(t.buf)
    return b"PAR1" + footer + struct.pack("<I", len(footer)) + b"PAR1"
