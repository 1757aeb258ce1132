"""Scale-out figures (issue #13): registration into Iceberg, visibility latency, metadata growth.

    python -m bench.scaleout [--quick]

Real servers, as in the tests: a PostgreSQL cluster from the Debian package and an S3 server,
each its own process on 127.0.0.1 (tests/servers.py): SeaweedFS by default (``--s3 moto`` for
moto_server, the tests' server, which is several times slower per request). Prints one line per figure and a Markdown
table. Figures:

1. ``register_1``: N runs already in the bucket (uploaded beforehand, not timed), one
   ``quantbot-bus sync`` process registers them all: runs/s.
2. ``register_2``: the same N runs into a fresh catalog by two sync processes at once (two
   hosts): runs/s of the pair, and a check that every run is in runs_d exactly once.
3. ``latency``: a daemon polling every second; runs uploaded one at a time; time from the
   completion marker's PUT to a fresh pyiceberg reader finding the run in runs_d: p50 and max.
4. ``metadata``: K one-run commits to one table with the daemon's maintenance every 50 commits
   (keep 100 snapshots, age limit 0 so the bench need not wait an hour; 10,000 commits, 200
   with ``--quick``), then commits without maintenance (1,000; 200 with ``--quick``: each
   rewrites a table metadata file that lists every snapshot, so they slow down as they go):
   the table's metadata bytes in the object store by kind, and the time per commit, at each
   quarter.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from servers import Postgres, S3Server, SeaweedFS  # noqa: E402

from bench.scaleout_metadata import compaction_gain, metadata_growth  # noqa: E402

TARGET_RUNS_S = 500.0
TARGET_P50_S = 2.0


def _parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def upload_runs(client: Any, bucket: str, run_ids: list[str], *, marker: bool = True) -> None:
    """Put runs the way RunWriter's upload does (Parquet, metadata.json, then the marker)."""
    from quantbot_bus.objectstore.listing import marker_key
    from quantbot_bus.objectstore.location import S3Location

    loc = S3Location(bucket, "runs")

    def one(run_id: str) -> None:
        trades = _parquet(pa.table({"run_id": [run_id] * 3, "pnl": [0.1, 0.2, -0.1]}))
        fills = _parquet(pa.table({"qty": [1, 2], "px": [10.0, 11.5]}))
        for name, body in (("trades.parquet", trades), ("fills.parquet", fills)):
            client.put_object(Bucket=bucket, Key=loc.key("backtest", run_id, name), Body=body)
        meta = {
            "schema_version": 1,
            "run_id": run_id,
            "run_type": "backtest",
            "producer": {"name": "bench", "version": "1"},
            "status": "success",
            "created_at": "2026-12-06T00:00:00Z",
            "started_at": "2026-12-06T00:00:00Z",
            "finished_at": "2026-12-06T00:00:01Z",
            "params": {},
            "metrics": {"sharpe": 1.0},
            "artifacts": [
                {
                    "name": "trades",
                    "file": "trades.parquet",
                    "format": "parquet",
                    "rows": 3,
                    "bytes": len(trades),
                },
                {
                    "name": "fills",
                    "file": "fills.parquet",
                    "format": "parquet",
                    "rows": 2,
                    "bytes": len(fills),
                },
            ],
        }
        client.put_object(
            Bucket=bucket,
            Key=loc.key("backtest", run_id, "metadata.json"),
            Body=json.dumps(meta).encode(),
        )
        if marker:
            import datetime as dt

            client.put_object(
                Bucket=bucket,
                Key=marker_key(loc, "backtest", run_id, dt.datetime.now(dt.UTC)),
                Body=b"",
            )

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, run_ids))


def _children_cpu() -> float:
    """User + system CPU seconds of this process's waited-for children so far."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Bench:
    def __init__(self, pg: Postgres, s3: S3Server, work: Path) -> None:
        self.pg, self.s3, self.work = pg, s3, work
        self.client = s3.client()

    def database(self) -> str:
        import psycopg2

        name = "qb" + uuid.uuid4().hex[:12]
        con = psycopg2.connect(
            host="127.0.0.1", port=self.pg.port, user="postgres", dbname="postgres"
        )
        con.autocommit = True
        with con.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name}")
        con.close()
        return name

    def env(self, bucket: str, db: str, state: str) -> dict[str, str]:
        return {
            **os.environ,
            **self.s3.env,
            "QUANTBOT_BUS_ROOT": f"s3://{bucket}/runs",
            "QUANTBOT_BUS_CATALOG": "iceberg",
            "QUANTBOT_BUS_CATALOG_URI": f"postgresql://postgres@127.0.0.1:{self.pg.port}/{db}",
            "QUANTBOT_BUS_WAREHOUSE": f"s3://{bucket}/wh-{db}",
            "QUANTBOT_BUS_STATE_DIR": str(self.work / state),
            "QUANTBOT_BUS_POLL_INTERVAL_S": "1",
        }

    def sync(self, env: dict[str, str]) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "quantbot_bus.cli", "sync", "--format", "json"],
            env=env,
            cwd=self.work,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    def runs_d_counts(self, env: dict[str, str]) -> dict[str, int]:
        from quantbot_bus.config import load_config
        from quantbot_bus.iceberg.tables import open_catalog
        from quantbot_bus.objectstore.location import S3Settings

        cfg = load_config(
            env={k: v for k, v in env.items() if k.startswith("QUANTBOT_BUS_")}, cwd=self.work
        )
        cat = open_catalog(
            cfg.catalog_uri, cfg.warehouse, S3Settings.from_env(self.s3.env).pyiceberg_properties()
        )
        ids = (
            cat.load_table("quantbot.runs_d")
            .scan(selected_fields=("run_id",))
            .to_arrow()
            .column(0)
            .to_pylist()
        )
        out: dict[str, int] = {}
        for r in ids:
            out[r] = out.get(r, 0) + 1
        return out

    def register(self, n: int) -> list[tuple[str, float, str]]:
        bucket = "qb" + uuid.uuid4().hex[:12]
        self.s3.make_bucket(bucket)
        ids = [f"r{i:06d}" for i in range(n)]
        t0 = time.monotonic()
        upload_runs(self.client, bucket, ids)
        print(f"uploaded {n} runs in {time.monotonic() - t0:.1f} s", flush=True)
        figures = []
        for procs in (1, 2):
            db = self.database()
            envs = [self.env(bucket, db, f"state-{procs}-{i}") for i in range(procs)]
            cpu0 = _children_cpu()
            t0 = time.monotonic()
            ps = [self.sync(e) for e in envs]
            for p in ps:
                p.communicate(timeout=3600)
                assert p.returncode == 0, f"sync exited {p.returncode}"
            seconds = time.monotonic() - t0
            cpu = _children_cpu() - cpu0
            counts = self.runs_d_counts(envs[0])
            once = len(counts) == n and set(counts.values()) == {1}
            figures.append(
                (
                    f"register_{procs}",
                    n / seconds,
                    f"{n} runs in {seconds:.1f} s, exactly once: {once}; the sync processes used "
                    f"{cpu:.1f} s of CPU ({cpu / n * 1000:.1f} ms per run, "
                    f"imports and catalog set-up included)",
                )
            )
        return figures

    def latency(self, runs: int) -> tuple[str, float, str]:
        # pyiceberg's EqualTo takes (term, literal) at run time, but as a pydantic model its
        # typed __init__ is synthesized from the fields (term: UnboundTerm, value=...): the
        # ignores below are for that wrong signature (call-arg, arg-type).
        from pyiceberg.expressions import EqualTo

        from quantbot_bus.iceberg.tables import open_catalog
        from quantbot_bus.objectstore.location import S3Settings

        bucket = "qb" + uuid.uuid4().hex[:12]
        self.s3.make_bucket(bucket)
        db = self.database()
        env = self.env(bucket, db, "state-latency")
        upload_runs(self.client, bucket, ["warm"])  # the tables exist before timing starts
        daemon = subprocess.Popen(
            [sys.executable, "-m", "quantbot_bus.cli", "daemon", "--log-format", "json"],
            env=env,
            cwd=self.work,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.work / "daemon-latency.log", "wb"),  # noqa: SIM115
        )
        props = S3Settings.from_env(self.s3.env).pyiceberg_properties()
        try:
            cat = open_catalog(
                env["QUANTBOT_BUS_CATALOG_URI"], env["QUANTBOT_BUS_WAREHOUSE"], props
            )
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    if (
                        cat.load_table("quantbot.runs_d")
                        .scan(row_filter=EqualTo("run_id", "warm"))  # type: ignore[call-arg,arg-type]
                        .to_arrow()
                        .num_rows
                    ):
                        break
                except Exception:  # noqa: BLE001 - not created yet
                    pass
                time.sleep(0.2)
            lags = []
            for i in range(runs):
                run_id = f"lat{i:03d}"
                upload_runs(self.client, bucket, [run_id])
                t0 = time.monotonic()
                while time.monotonic() - t0 < 60:
                    fresh = open_catalog(
                        env["QUANTBOT_BUS_CATALOG_URI"], env["QUANTBOT_BUS_WAREHOUSE"], props
                    )
                    t = fresh.load_table("quantbot.runs_d")
                    if t.scan(row_filter=EqualTo("run_id", run_id)).to_arrow().num_rows:  # type: ignore[call-arg,arg-type]
                        break
                    time.sleep(0.1)
                lags.append(time.monotonic() - t0)
                time.sleep(0.3)
        finally:
            daemon.terminate()
            daemon.wait(60)
        p50 = statistics.median(lags)
        return ("latency_p50_s", p50, f"{runs} runs, p50 {p50:.2f} s, max {max(lags):.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1,000 runs, 200 + 200 commits (else 10,000 runs, 10,000 + 1,000 commits)",
    )
    parser.add_argument(
        "--s3",
        choices=("seaweedfs", "moto"),
        default="seaweedfs",
        help="the S3 server: SeaweedFS (Go, the default) or moto_server (Python, the tests' one)",
    )
    parser.add_argument(
        "--only",
        choices=("register", "latency", "metadata", "compaction"),
        action="append",
        help="run only these figures (repeatable; default all)",
    )
    parser.add_argument("--runs", type=int, help="runs for register (overrides --quick)")
    parser.add_argument(
        "--commits", type=int, help="maintained commits for metadata (overrides --quick)"
    )
    parser.add_argument(
        "--raw-commits",
        type=int,
        help="commits without maintenance (overrides --quick; each costs more than the last)",
    )
    args = parser.parse_args()
    n, commits, raw, lat = (1000, 200, 200, 10) if args.quick else (10_000, 10_000, 1000, 20)
    compact_n = 200 if args.quick else 1000
    n, commits = args.runs or n, args.commits or commits
    raw = args.raw_commits if args.raw_commits is not None else raw
    only = set(args.only or ("register", "latency", "metadata", "compaction"))
    rows = []
    print(f"S3 server: {args.s3}", flush=True)
    with (
        tempfile.TemporaryDirectory(prefix="qbus-scaleout-") as tmp,
        Postgres() as pg,
        SeaweedFS() if args.s3 == "seaweedfs" else S3Server() as s3,
    ):
        b = Bench(pg, s3, Path(tmp))
        for name, value, note in b.register(n) if "register" in only else []:
            rows.append(
                (
                    name,
                    f"{value:.0f} runs/s",
                    f">= {TARGET_RUNS_S:.0f} runs/s",
                    "PASS" if value >= TARGET_RUNS_S else "MISS",
                    note,
                )
            )
            print(rows[-1], flush=True)
        for name, value, note in [b.latency(lat)] if "latency" in only else []:
            rows.append(
                (
                    name,
                    f"{value:.2f} s",
                    f"<= {TARGET_P50_S:.0f} s",
                    "PASS" if value <= TARGET_P50_S else "MISS",
                    note,
                )
            )
            print(rows[-1], flush=True)
        for name, value, note in metadata_growth(b, commits, raw) if "metadata" in only else []:
            rows.append((name, f"{value:.2f} MB", "bounded", "-", note))
            print(rows[-1], flush=True)
        for name, value, note in compaction_gain(b, compact_n) if "compaction" in only else []:
            rows.append((name, f"{value:.1f}x", "-", "-", note))
            print(rows[-1], flush=True)
    print("\n| figure | measured | target | verdict | notes |\n|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\nload average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
