"""Everything the tests build: run directories, catalogs, and the one way to wait for something.

Run directories (real Parquet written by pyarrow, then ``metadata.json`` written atomically):

- :func:`make_run` — a complete, valid v1 run ``root/run_type/run_id`` with the given tables
  (``{name: pyarrow.Table or row count}``), metadata ``overrides`` and an optional ``mutate(meta,
  run_dir)`` hook that may break it on purpose before ``metadata.json`` is written.
- :func:`make_run_from_bytes` — a run whose one file holds the given bytes (or does not exist
  yet) while ``metadata.json`` declares other bytes or rows: incomplete, corrupt or crafted runs.
- :func:`corrupt_file` — junk of the same size in place of a run's file (a broken run).
- :func:`make_ts_run` — a run exactly as the quantbot TypeScript producer writes it.
- :class:`RunFactory` — thousands of complete runs quickly (one Parquet file, hard-linked).
- :func:`add_path_run`, :func:`add_policy_run`, :func:`add_optimize_run` — runs holding the
  tables the exports consolidate (realistic columns, seeded random values).
- the parts they are made of: :func:`sample_table`, :func:`write_parquet`,
  :func:`artifact_entry`, :func:`file_entry`, :func:`v1_metadata`, :func:`ts_metadata`,
  :func:`write_metadata`, :func:`crafted_parquet`.

Catalogs: :func:`make_catalog` (a working catalog holding the runs under the root, published),
:func:`sync` (the one-shot ``quantbot-bus sync``: catalog, publication and exports),
:func:`publish_catalog`; read back with :func:`snapshot_query`, :func:`live_run_ids`,
:func:`live_count` and :func:`open_rejections`. Catalog rows without files behind them:
:func:`run_info` (a ``RunInfo`` built directly), read back with :func:`catalog_rows`.

The validator's answer, checked: :func:`assert_invalid`, :func:`assert_incomplete`.
A ``mutate`` hook that sets one metadata field by its dotted path: :func:`set_field`.

Waiting: :func:`wait_for` polls a condition until a deadline and fails naming what it waited for.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import struct
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from click.testing import CliRunner, Result

from quantbot_bus import exports, ingest, pipeline
from quantbot_bus.catalog import Catalog, open_reader
from quantbot_bus.config import Config
from quantbot_bus.contract import ArtifactInfo, Incomplete, Invalid, RunInfo
from quantbot_bus.publication import Publication, Published

#: Deadline for anything that should happen "soon" (generous: the suite shares 2 busy cores).
DEADLINE_S = 60.0
#: The long (soak) sizes of the scaled tests: ``make soak`` sets QUANTBOT_BUS_SOAK=1.
SOAK = os.environ.get("QUANTBOT_BUS_SOAK") == "1"

DEFAULT_TIME = "2024-05-01T12:00:00Z"

Mutator = Callable[[dict[str, Any], Path], None]


# ---------------------------------------------------------------------------- waiting


def wait_for(
    condition: Callable[[], Any], what: str, timeout: float = DEADLINE_S, every: float = 0.05
) -> Any:
    """Poll ``condition`` until it returns something truthy and return that; on timeout fail
    naming ``what``. ``condition`` may raise AssertionError to give up at once (a process that
    died, say)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


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


# ---------------------------------------------------------------------------- export-shaped runs

PATH = "backtest_call_path_metrics"
POLICY = "backtest_policy_results"
CALLS = "backtest_call_results"
FRONTIER = "frontier"
CALLERS = ("alpha", "bravo", "charlie", "delta")

#: The columns the backtest (quantbot_bus.backtest) writes to each table, before the
#: ``created_at`` it adds itself; tests/test_backtest.py checks its output against them.
PATH_COLUMNS = {
    "run_id": pa.string(),
    "call_id": pa.string(),
    "caller_name": pa.string(),
    "mint": pa.string(),
    "chain": pa.string(),
    "interval": pa.string(),
    "alert_ts_ms": pa.int64(),
    "p0": pa.float64(),
    "hit_2x": pa.bool_(),
    "t_2x_ms": pa.int64(),
    "hit_3x": pa.bool_(),
    "t_3x_ms": pa.int64(),
    "hit_4x": pa.bool_(),
    "t_4x_ms": pa.int64(),
    "dd_bps": pa.float64(),
    "dd_to_2x_bps": pa.float64(),
    "alert_to_activity_ms": pa.int64(),
    "peak_multiple": pa.float64(),
}
POLICY_COLUMNS = (
    "run_id",
    "policy_id",
    "call_id",
    "realized_return_bps",
    "stop_out",
    "max_adverse_excursion_bps",
    "time_exposed_ms",
    "tail_capture",
    "entry_ts_ms",
    "exit_ts_ms",
    "entry_px",
    "exit_px",
    "exit_reason",
)
CALL_RESULT_COLUMNS = (
    "run_id",
    "call_id",
    "caller_name",
    "policy_id",
    "entry_px",
    "exit_px",
    "pnl_usd",
    "pnl_pct",
    "return_bps",
    "win",
)
FRONTIER_COLUMNS = (
    "run_id",
    "caller_name",
    "policy_params",
    "meets_constraints",
    "objective_score",
    "avg_return_bps",
    "median_return_bps",
    "stop_out_rate",
    "rank",
)


def path_metrics(run_id: str, n: int, seed: int, *, extra: bool = False) -> pa.Table:
    """``n`` rows of call path metrics; ``extra`` adds a column (a producer that added one)."""
    rng = random.Random(seed)
    cols: dict[str, list[Any]] = {k: [] for k in PATH_COLUMNS}
    for i in range(n):
        peak = round(1 + rng.random() * rng.choice((0.5, 2, 6)), 6)
        dd = 0.0 if rng.random() < 0.1 else -round(rng.random() * 8000, 3)
        hit2, hit3, hit4 = peak >= 2, peak >= 3, peak >= 4
        cols["run_id"].append(run_id)
        cols["call_id"].append(f"{run_id}-c{i}")
        cols["caller_name"].append(rng.choice(CALLERS))
        cols["mint"].append(f"mint{rng.randrange(50)}")
        cols["chain"].append("solana")
        cols["interval"].append("1m")
        cols["alert_ts_ms"].append(1_700_000_000_000 + i * 60_000)
        cols["p0"].append(rng.random())
        cols["hit_2x"].append(hit2)
        cols["t_2x_ms"].append(rng.randrange(60_000, 9_000_000) if hit2 else None)
        cols["hit_3x"].append(hit3)
        cols["t_3x_ms"].append(rng.randrange(60_000, 9_000_000) if hit3 else None)
        cols["hit_4x"].append(hit4)
        cols["t_4x_ms"].append(rng.randrange(60_000, 9_000_000) if hit4 else None)
        cols["dd_bps"].append(dd)
        cols["dd_to_2x_bps"].append(dd if hit2 else None)
        cols["alert_to_activity_ms"].append(rng.randrange(0, 100_000))
        cols["peak_multiple"].append(peak)
    table = pa.table(cols, schema=pa.schema(list(PATH_COLUMNS.items())))
    if extra:
        table = table.append_column("liquidity_usd", pa.array([float(i) for i in range(n)]))
    return table


def policy_tables(run_id: str, n: int, seed: int) -> dict[str, pa.Table]:
    """The policy backtest's two tables: three policies per call, and one result per call."""
    rng = random.Random(seed)
    policies = ("trail-10", "fixed-2x", "time-1h")
    pol: dict[str, list[Any]] = {k: [] for k in POLICY_COLUMNS}
    res: dict[str, list[Any]] = {k: [] for k in CALL_RESULT_COLUMNS}
    for i in range(n):
        for p in policies:
            ret = round(rng.gauss(50, 900), 2)
            pol["run_id"].append(run_id)
            pol["policy_id"].append(p)
            pol["call_id"].append(f"c{i}")
            pol["realized_return_bps"].append(ret)
            pol["stop_out"].append(ret < -500)
            pol["max_adverse_excursion_bps"].append(-round(rng.random() * 3000, 1))
            pol["time_exposed_ms"].append(rng.randrange(1000, 3_600_000))
            pol["tail_capture"].append(rng.random())
            pol["entry_ts_ms"].append(1_700_000_000_000)
            pol["exit_ts_ms"].append(1_700_000_100_000)
            pol["entry_px"].append(1.0)
            pol["exit_px"].append(1 + ret / 10_000)
            pol["exit_reason"].append("stop" if ret < -500 else "target")
        ret = round(rng.gauss(30, 700), 2)
        res["run_id"].append(run_id)
        res["call_id"].append(f"c{i}")
        res["caller_name"].append(rng.choice(CALLERS))
        res["policy_id"].append(policies[0])
        res["entry_px"].append(1.0)
        res["exit_px"].append(1 + ret / 10_000)
        res["pnl_usd"].append(ret / 10)
        res["pnl_pct"].append(ret / 100)
        res["return_bps"].append(ret)
        res["win"].append(ret > 0)
    return {POLICY: pa.table(pol), CALLS: pa.table(res)}


def frontier_table(run_id: str, seed: int) -> pa.Table:
    """An optimizer's frontier: five ranked parameter sets per caller."""
    rng = random.Random(seed)
    cols: dict[str, list[Any]] = {k: [] for k in FRONTIER_COLUMNS}
    for caller in CALLERS:
        for r in range(1, 6):
            cols["run_id"].append(run_id)
            cols["caller_name"].append(caller)
            cols["policy_params"].append(json.dumps({"tp": r, "sl": rng.randrange(5, 50)}))
            cols["meets_constraints"].append(rng.random() < 0.6)
            cols["objective_score"].append(round(rng.random() * 10, 4))
            cols["avg_return_bps"].append(rng.gauss(40, 100))
            cols["median_return_bps"].append(rng.gauss(30, 100))
            cols["stop_out_rate"].append(rng.random())
            cols["rank"].append(r)
    return pa.table(cols)


def add_path_run(
    cfg: Config, run_id: str, n: int = 40, seed: int = 0, *, extra: bool = False, **kw: Any
) -> Path:
    """A ``backtest-path`` run of ``n`` call path metrics (``kw``: metadata overrides)."""
    tables: dict[str, pa.Table | int] = {PATH: path_metrics(run_id, n, seed, extra=extra)}
    return make_run(cfg.root, "backtest-path", run_id, tables, **kw)


def add_policy_run(cfg: Config, run_id: str, n: int = 30, seed: int = 0, **kw: Any) -> Path:
    """A ``backtest-policy`` run: policy results and call results for ``n`` calls."""
    tables: dict[str, pa.Table | int] = dict(policy_tables(run_id, n, seed))
    return make_run(cfg.root, "backtest-policy", run_id, tables, **kw)


def add_optimize_run(cfg: Config, run_id: str, seed: int, created_at: str) -> Path:
    """A ``backtest-optimize`` run: a frontier and a one-row summary."""
    tables = {FRONTIER: frontier_table(run_id, seed), "summary": pa.table({"n": [1]})}
    return make_run(cfg.root, "backtest-optimize", run_id, tables, created_at=created_at)


# ---------------------------------------------------------------------------- crafted Parquet
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


# ---------------------------------------------------------------------------- the validator's answer


def assert_invalid(result: Any, *needles: str) -> Invalid:
    """``result`` is Invalid and its reason holds every needle (and is printable)."""
    assert isinstance(result, Invalid), result
    for needle in needles:
        assert needle in result.reason, f"{needle!r} not in {result.reason!r}"
    result.reason.encode("utf-8")  # always printable/loggable
    return result


def assert_incomplete(result: Any, *needles: str) -> Incomplete:
    """``result`` is Incomplete and its reason holds every needle."""
    assert isinstance(result, Incomplete), result
    for needle in needles:
        assert needle in result.reason, f"{needle!r} not in {result.reason!r}"
    return result


# ---------------------------------------------------------------------------- catalogs


def make_catalog(config: Config) -> None:
    """A real working catalog holding the runs under the root, and its publication (no exports
    refresh: see :func:`sync` for the whole one-shot path)."""
    with Catalog.open(config.catalog_path) as cat:
        cat.apply_batch(ingest.full_scan(config, cat).batch)
        publish_catalog(cat, config.exports_dir)


def sync(config: Config) -> dict[str, Any]:
    """``quantbot-bus sync`` in process (scan, catalog, publication, exports); returns the
    export status it wrote."""
    pipeline.sync(config)
    status: dict[str, Any] = json.loads((config.exports_dir / exports.STATUS_NAME).read_text())
    return status


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
    """run_ids of the live (not deleted) runs in the snapshot."""
    rows = snapshot_query(config, "SELECT run_id FROM catalog.runs_d WHERE deleted_at IS NULL")
    return {r[0] for r in rows}


def live_count(config: Config) -> int:
    """How many live runs the snapshot holds (0 before the first publication)."""
    rows = snapshot_query(config, "SELECT count(*) FROM catalog.runs_d WHERE deleted_at IS NULL")
    return int(rows[0][0]) if rows else 0


def open_rejections(config: Config) -> dict[str, str]:
    """run_dir -> reason of every open rejection in the snapshot."""
    rows = snapshot_query(
        config, "SELECT run_dir, reason FROM catalog.rejections_f WHERE resolved_at IS NULL"
    )
    return dict(rows)


def cli(bus: Config, *args: str, root_flag: str = "--root") -> Result:
    """``quantbot-bus ARGS[0] <the bus's directories> ARGS[1:]`` in process (``CliRunner``)."""
    from quantbot_bus.cli import main

    dirs = [root_flag, str(bus.root), "--exports-dir", str(bus.exports_dir)]
    dirs += ["--state-dir", str(bus.state_dir)]
    return CliRunner().invoke(main, [args[0], *dirs, *args[1:]], catch_exceptions=False)


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


# ---------------------------------------------------------------------------- catalog rows

RUN_INFO_SCHEMA = json.dumps([{"name": "x", "type": "int64", "nullable": True}])


def run_info(
    root: Path,
    run_id: str,
    *,
    run_type: str = "backtest",
    fingerprint: str = "fp1",
    names: tuple[str, ...] = ("results",),
    run_dir: Path | None = None,
    created_at: str = "2024-05-01T12:00:00Z",
    status: str = "success",
    params: dict[str, Any] | None = None,
    metadata_json: str | None = None,
) -> RunInfo:
    """A :class:`RunInfo` as the validator would return it, built directly (no files behind it:
    the catalog does not read the disk); one artifact per name in ``names``."""
    run_dir = run_dir if run_dir is not None else root / run_type / run_id
    artifacts = tuple(
        ArtifactInfo(
            name=name,
            file=f"{name}.parquet",
            path=run_dir / f"{name}.parquet",
            format="parquet",
            rows=10 + i,
            bytes=1000 + i,
            sha256="ab" * 32,
            arrow_schema=RUN_INFO_SCHEMA,
        )
        for i, name in enumerate(names)
    )
    return RunInfo(
        run_id=run_id,
        run_type=run_type,
        producer="tests",
        producer_version="1.0",
        status=status,
        created_at=created_at,
        started_at=created_at,
        finished_at=created_at,
        params=params if params is not None else {"seed": 1},
        metrics={"sharpe": 1.5},
        git_commit="abc",
        git_branch="main",
        git_dirty=False,
        host="h",
        error=None,
        artifacts=artifacts,
        run_dir=run_dir,
        metadata_json=metadata_json
        if metadata_json is not None
        else json.dumps({"run_id": run_id}),
        metadata_mtime_ns=time.time_ns(),
        fingerprint=fingerprint,
    )


def catalog_rows(c: Catalog, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    """The rows of ``sql`` on a working catalog's own connection."""
    return c.con.execute(sql, params or []).fetchall()
