"""Fast scenario data: write each distinct Parquet file once, hard-link it into many run dirs.

A *template* is a small set of Parquet files with the seed system's backtest column names
(``backtest_call_path_metrics``, ``backtest_policy_results``, ``backtest_call_results``), written
once per *variant* (different seeds, so summaries are not all identical) with their rows, bytes
and sha256 computed once. :func:`make_runs` then creates ``root/backtest/<run_id>/`` for each run
by ``os.link``-ing the variant's files and writing a v1 ``metadata.json`` (temp file + rename), so
10,000 runs take a few seconds. Two run shapes alternate:

- ``path-only``: ``backtest_call_path_metrics.parquet`` + ``backtest_call_results.parquet``;
- ``policy``: those two + ``backtest_policy_results.parquet`` (3 files).

Caveat (documented in bench/README.md): the ``run_id`` column *inside* a hard-linked Parquet file
is the template's, not the run's; everything the bus reads from metadata.json (run_id, params,
metrics, artifacts) is per run.

ext4 allows at most 65,000 links to one inode: when ``os.link`` fails with ``EMLINK`` the file is
copied once (same bytes, same sha256) and linking continues to the copy.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

RUN_TYPE = "backtest"
ROWS_PER_TABLE = 1_000
SHAPES = ("path-only", "policy")
TABLES_BY_SHAPE: dict[str, tuple[str, ...]] = {
    "path-only": ("backtest_call_path_metrics", "backtest_call_results"),
    "policy": ("backtest_call_path_metrics", "backtest_call_results", "backtest_policy_results"),
}
CALLERS = tuple(f"caller_{i:02d}" for i in range(40))
BASE_TS_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
LINKS_PER_FILE = 30_000  # stay well below ext4's 65,000 hard links per inode


@dataclass
class TemplateFile:
    name: str  # table name
    path: Path  # current link source (may move to a copy after EMLINK)
    rows: int
    bytes: int
    sha256: str
    links: int = 0


@dataclass
class Variant:
    shape: str  # "path-only" | "policy"
    seed: int
    files: list[TemplateFile]
    metrics: dict[str, float]


@dataclass
class Template:
    directory: Path
    variants: list[Variant] = field(default_factory=list)
    _copies: int = 0

    def variant_for(self, i: int) -> Variant:
        return self.variants[i % len(self.variants)]

    def link(self, tf: TemplateFile, dest: Path) -> None:
        """Hard-link ``tf`` to ``dest``; on EMLINK (or a full inode) copy it once and carry on."""
        if tf.links >= LINKS_PER_FILE:
            self._fresh_copy(tf)
        try:
            os.link(tf.path, dest)
        except OSError as exc:
            if exc.errno != errno.EMLINK:
                raise
            self._fresh_copy(tf)
            os.link(tf.path, dest)
        tf.links += 1

    def _fresh_copy(self, tf: TemplateFile) -> None:
        self._copies += 1
        copy = tf.path.with_name(f"{tf.path.stem}.c{self._copies}{tf.path.suffix}")
        shutil.copyfile(tf.path, copy)
        tf.path = copy
        tf.links = 0


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _ts(n: int) -> pa.Array:
    return pa.array([dt.datetime(2024, 2, 1, tzinfo=dt.UTC)] * n, pa.timestamp("us", tz="UTC"))


def _mints(rng: random.Random, n: int) -> list[str]:
    return [f"Mint{rng.getrandbits(40):011x}pump" for _ in range(n)]


def _fat_tail(rng: random.Random) -> float:
    """A Student-t(3)-like draw: normal over the root of a scaled chi-square(3)."""
    chi = sum(rng.gauss(0.0, 1.0) ** 2 for _ in range(3)) / 3.0
    return rng.gauss(0.0, 1.0) / math.sqrt(max(chi, 1e-9))


def _path_metrics(rng: random.Random, n: int, run_id: str) -> pa.Table:
    alert = sorted(BASE_TS_MS + rng.randrange(30 * 86_400_000) for _ in range(n))
    peak = [min(max(math.exp(_fat_tail(rng) * 0.6 + 0.4), 0.05), 80.0) for _ in range(n)]

    def t_hit(level: float, scale: float) -> pa.Array:
        return pa.array(
            [int(rng.expovariate(1 / scale)) + 60_000 if p >= level else None for p in peak],
            pa.int64(),
        )

    dd = [-min(rng.expovariate(1 / 1_500.0), 10_000.0) for _ in range(n)]
    return pa.table(
        {
            "run_id": pa.array([run_id] * n),
            "call_id": pa.array([f"call-{i:06d}" for i in range(n)]),
            "caller_name": pa.array([rng.choice(CALLERS) for _ in range(n)]),
            "mint": pa.array(_mints(rng, n)),
            "chain": pa.array(["solana"] * n),
            "interval": pa.array([rng.choice(("1m", "5m")) for _ in range(n)]),
            "alert_ts_ms": pa.array(alert, pa.int64()),
            "p0": pa.array([rng.lognormvariate(-9.0, 2.0) for _ in range(n)]),
            "hit_2x": pa.array([p >= 2.0 for p in peak]),
            "t_2x_ms": t_hit(2.0, 1_800_000.0),
            "hit_3x": pa.array([p >= 3.0 for p in peak]),
            "t_3x_ms": t_hit(3.0, 3_600_000.0),
            "hit_4x": pa.array([p >= 4.0 for p in peak]),
            "t_4x_ms": t_hit(4.0, 5_400_000.0),
            "dd_bps": pa.array(dd),
            "dd_to_2x_bps": pa.array(
                [d * 0.6 if p >= 2.0 else None for d, p in zip(dd, peak, strict=True)],
                pa.float64(),
            ),
            "alert_to_activity_ms": pa.array(
                [rng.randrange(120_000) for _ in range(n)], pa.int64()
            ),
            "peak_multiple": pa.array(peak),
            "created_at": _ts(n),
        }
    )


def _policy_results(rng: random.Random, n: int, run_id: str) -> pa.Table:
    entry = sorted(BASE_TS_MS + rng.randrange(30 * 86_400_000) for _ in range(n))
    exposed = [rng.randrange(60_000, 6 * 3_600_000) for _ in range(n)]
    ret = [_fat_tail(rng) * 900.0 for _ in range(n)]
    stop = [r < -800.0 for r in ret]
    entry_px = [rng.lognormvariate(-9.0, 2.0) for _ in range(n)]
    reasons = ("take_profit", "trailing_stop", "timeout")
    return pa.table(
        {
            "run_id": pa.array([run_id] * n),
            "policy_id": pa.array(
                [f"sl{rng.randrange(1, 6)}_tp{rng.randrange(1, 6)}" for _ in range(n)]
            ),
            "call_id": pa.array([f"call-{i:06d}" for i in range(n)]),
            "realized_return_bps": pa.array(ret),
            "stop_out": pa.array(stop),
            "max_adverse_excursion_bps": pa.array([-rng.expovariate(1 / 700.0) for _ in range(n)]),
            "time_exposed_ms": pa.array(exposed, pa.int64()),
            "tail_capture": pa.array([rng.random() for _ in range(n)]),
            "entry_ts_ms": pa.array(entry, pa.int64()),
            "exit_ts_ms": pa.array(
                [e + x for e, x in zip(entry, exposed, strict=True)], pa.int64()
            ),
            "entry_px": pa.array(entry_px),
            "exit_px": pa.array(
                [p * (1 + r / 10_000.0) for p, r in zip(entry_px, ret, strict=True)]
            ),
            "exit_reason": pa.array(["stop_loss" if s else rng.choice(reasons) for s in stop]),
            "created_at": _ts(n),
        }
    )


def _call_results(rng: random.Random, n: int, run_id: str) -> pa.Table:
    entry_px = [rng.lognormvariate(-9.0, 2.0) for _ in range(n)]
    ret = [_fat_tail(rng) * 900.0 for _ in range(n)]
    position = 100.0
    entry = sorted(BASE_TS_MS + rng.randrange(30 * 86_400_000) for _ in range(n))
    reasons = ("stop_loss", "take_profit", "trailing_stop", "timeout")
    return pa.table(
        {
            "run_id": pa.array([run_id] * n),
            "call_id": pa.array([f"call-{i:06d}" for i in range(n)]),
            "caller_name": pa.array([rng.choice(CALLERS) for _ in range(n)]),
            "mint": pa.array(_mints(rng, n)),
            "chain": pa.array(["solana"] * n),
            "policy_id": pa.array(["sl2_tp3"] * n),
            "entry_ts_ms": pa.array(entry, pa.int64()),
            "exit_ts_ms": pa.array(
                [e + rng.randrange(60_000, 3_600_000) for e in entry], pa.int64()
            ),
            "entry_px": pa.array(entry_px),
            "exit_px": pa.array(
                [p * (1 + r / 10_000.0) for p, r in zip(entry_px, ret, strict=True)]
            ),
            "exit_reason": pa.array([rng.choice(reasons) for _ in range(n)]),
            "position_usd": pa.array([position] * n),
            "pnl_usd": pa.array([position * r / 10_000.0 for r in ret]),
            "pnl_pct": pa.array([r / 100.0 for r in ret]),
            "return_bps": pa.array(ret),
            "win": pa.array([r > 0 for r in ret]),
            "drawdown_bps": pa.array([-rng.expovariate(1 / 700.0) for _ in range(n)]),
            "created_at": _ts(n),
        }
    )


_BUILDERS = {
    "backtest_call_path_metrics": _path_metrics,
    "backtest_policy_results": _policy_results,
    "backtest_call_results": _call_results,
}


def make_template(directory: Path, *, variants: int = 8, rows: int = ROWS_PER_TABLE) -> Template:
    """Write ``variants`` sets of Parquet files (alternating shapes) under ``directory``.

    ``directory`` must be on the same filesystem as the run roots (hard links).
    """
    directory.mkdir(parents=True, exist_ok=True)
    tpl = Template(directory)
    for v in range(variants):
        shape = SHAPES[v % len(SHAPES)]
        rng = random.Random(1_000 + v)
        files: list[TemplateFile] = []
        pnl = 0.0
        for name in TABLES_BY_SHAPE[shape]:
            table = _BUILDERS[name](rng, rows, f"template-{v}")
            path = directory / f"v{v}-{name}.parquet"
            pq.write_table(table, path, compression="zstd")
            if name == "backtest_call_results":
                pnl = float(sum(table.column("pnl_usd").to_pylist()))
            files.append(
                TemplateFile(name, path, table.num_rows, path.stat().st_size, _sha256(path))
            )
        metrics: dict[str, float] = {"calls": float(rows), "total_pnl_usd": round(pnl, 4)}
        if shape == "path-only":
            metrics.update(hit_2x_rate=round(rng.uniform(0.1, 0.4), 4), callers=len(CALLERS))
        else:
            metrics.update(
                trades=float(rows),
                avg_return_bps=round(rng.uniform(-50, 80), 3),
                stop_out_rate=round(rng.uniform(0.1, 0.5), 4),
                best_policy_win_rate=round(rng.uniform(0.3, 0.6), 4),
            )
        tpl.variants.append(Variant(shape, 1_000 + v, files, metrics))
    return tpl


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


def preseed_catalog(
    catalog: Any, root: Path, tpl: Template, start: int, n: int, *, chunk: int = 25_000
) -> float:
    """Register runs ``start .. start+n-1`` (already on disk, made by :func:`make_runs`) in
    ``catalog`` (a :class:`quantbot_bus.catalog.Catalog`) without validating each one.

    One run per template variant is validated for real (:func:`quantbot_bus.contract
    .validate_run_dir`); every other run is that :class:`RunInfo` with its own run_id, run_dir,
    artifact paths, metadata text, timestamps, git commit, metadata mtime and the real
    :func:`quick_fingerprint` of its directory, so the daemon's reconcile sees them as unchanged.
    Registered with :meth:`Catalog.apply_batch` in chunks (Arrow inserts). Returns seconds.
    """
    import dataclasses

    from quantbot_bus import catalog as qcat
    from quantbot_bus import contract

    t0 = time.perf_counter()
    protos: dict[int, Any] = {}
    nvar = len(tpl.variants)
    for v in range(nvar):
        i = start + ((v - start) % nvar)
        if i >= start + n:
            continue
        res = contract.validate_run_dir(root / RUN_TYPE / run_id_for(i), root)
        if not isinstance(res, contract.Valid):
            raise RuntimeError(f"bench run {run_id_for(i)} does not validate: {res}")
        protos[i % nvar] = res.run
    batch: list[Any] = []
    for i in range(start, start + n):
        proto = protos[i % nvar]
        run_id = run_id_for(i)
        run_dir = root / RUN_TYPE / run_id
        doc = metadata_for(run_id, i, tpl.variant_for(i))
        st = os.stat(run_dir / "metadata.json")
        run = dataclasses.replace(
            proto,
            run_id=run_id,
            run_dir=run_dir,
            created_at=doc["created_at"],
            started_at=doc["started_at"],
            finished_at=doc["finished_at"],
            params=doc["params"],
            git_commit=doc["git"]["commit"],
            artifacts=tuple(dataclasses.replace(a, path=run_dir / a.file) for a in proto.artifacts),
            metadata_json=metadata_text(doc),
            metadata_mtime_ns=st.st_mtime_ns,
            fingerprint=contract.quick_fingerprint(run_dir),
        )
        batch.append(run)
        if len(batch) >= chunk:
            catalog.apply_batch(qcat.Batch(valid=batch))
            batch = []
    if batch:
        catalog.apply_batch(qcat.Batch(valid=batch))
    return time.perf_counter() - t0
