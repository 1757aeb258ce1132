"""The validation's small GETs through botocore against obstore, in the same run.

    python -m bench.s3_reads [--objects N] [--rounds R]

A SeaweedFS server (``weed``, from the ``bench`` extra) on 127.0.0.1 holds N small Parquet
files; each round fetches every file's last 64 KiB once with each client, 16 threads each (the
validation's pool), alternating clients so load changes hit both. Prints requests per second
and this process's CPU per request for each, and their ratio.
"""

from __future__ import annotations

import argparse
import io
import resource
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from servers import SeaweedFS  # noqa: E402

from quantbot_bus.objectstore.location import S3Settings  # noqa: E402
from quantbot_bus.objectstore.reads import ObjectReads  # noqa: E402

TAIL = 64 * 1024
THREADS = 16


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _round(fetch: Callable[[str], int], keys: list[str]) -> tuple[float, float]:
    """Requests per second and CPU milliseconds per request of one pass over ``keys``."""
    cpu0, t0 = _cpu(), time.monotonic()
    with ThreadPoolExecutor(THREADS) as pool:
        sizes = list(pool.map(fetch, keys))
    seconds, cpu = time.monotonic() - t0, _cpu() - cpu0
    assert all(sizes), "every object has bytes"
    return len(keys) / seconds, cpu / len(keys) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with SeaweedFS() as s3:
        bucket = "qbreads"
        s3.make_bucket(bucket)
        settings = S3Settings.from_env(s3.env)
        client = settings.client()
        buf = io.BytesIO()
        pq.write_table(pa.table({"run_id": ["r"] * 3, "pnl": [0.1, 0.2, 0.3]}), buf)
        keys = [f"runs/backtest/r{i:06d}/trades.parquet" for i in range(args.objects)]
        with ThreadPoolExecutor(THREADS) as pool:
            list(
                pool.map(
                    lambda k: client.put_object(Bucket=bucket, Key=k, Body=buf.getvalue()), keys
                )
            )
        reads = ObjectReads(settings.object_store(bucket))

        def boto(key: str) -> int:
            resp = client.get_object(Bucket=bucket, Key=key, Range=f"bytes=-{TAIL}")
            return len(resp["Body"].read())

        def obstore(key: str) -> int:
            tail = reads.tail(key, TAIL)
            return len(tail.data) if tail else 0

        got: dict[str, list[tuple[float, float]]] = {"botocore": [], "obstore": []}
        for _ in range(args.rounds):
            got["botocore"].append(_round(boto, keys))
            got["obstore"].append(_round(obstore, keys))
        med = {
            name: (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs))
            for name, rs in got.items()
        }
        for name, (rate, cpu) in med.items():
            print(
                f"{name:9s} {rate:7.0f} GETs/s  {cpu:.3f} ms CPU per GET (median of {args.rounds})"
            )
        (b_rate, b_cpu), (o_rate, o_cpu) = med["botocore"], med["obstore"]
        print(f"obstore/botocore: {o_rate / b_rate:.1f}x the rate, {b_cpu / o_cpu:.1f}x less CPU")


if __name__ == "__main__":
    main()
