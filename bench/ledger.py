"""``python -m bench.ledger [--sizes 10000,100000,1000000] [--batch 500]``: what one poll's
look-ups in the scale-out ledger cost as the ledger grows.

For each size, a ledger (:class:`quantbot_bus.iceberg.ledger.Ledger`, SQLite) holds that many
registered run ids (and a tenth of them as seen and as rejected directories); one poll's batch
(``--batch`` keys, half registered) is then looked up the way a poll does: ``known`` for the run
ids, ``rejected_unchanged`` and ``changed`` for their metadata keys. The baseline, in the same
run, is the DuckDB ledger this one replaced: the same ``known`` query over a DuckDB table with the
same primary key, which DuckDB answers by scanning the table. Prints milliseconds per batch
(median of 15) and the ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb

from quantbot_bus.iceberg.ledger import LEDGER_NAME, Ledger


def _ms(call: Callable[[], object], reps: int = 15) -> float:
    call()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def measure(size: int, batch_size: int, work: Path) -> dict[str, float]:
    keys = [f"run-{i:08d}" for i in range(size)]
    step = max(1, size // (batch_size // 2))
    batch = keys[::step][: batch_size // 2] + [f"new-{i}" for i in range(batch_size // 2)]
    meta = {f"{k}/metadata.json": ("etag", "sig") for k in batch}

    ledger = Ledger(work / f"{size}" / LEDGER_NAME)
    ledger.add("runs_d", keys)
    ledger.note_seen({f"{k}/metadata.json": ("etag", "sig") for k in keys[::10]})
    ledger.note_rejected({f"{k}/metadata.json": "sig" for k in keys[::10]})
    out = {
        "known": _ms(lambda: ledger.known("runs_d", batch)),
        "rejected_unchanged": _ms(lambda: ledger.rejected_unchanged(dict.fromkeys(meta, "sig"))),
        "changed": _ms(lambda: ledger.changed(meta)),
    }
    ledger.close()

    con = duckdb.connect(str(work / f"{size}.duckdb"))
    con.execute("CREATE TABLE known (tbl VARCHAR, key VARCHAR, PRIMARY KEY (tbl, key))")
    con.execute("INSERT INTO known SELECT 'runs_d', unnest(?::VARCHAR[])", [keys])
    out["duckdb_known"] = _ms(
        lambda: con.execute(
            "SELECT key FROM known WHERE tbl = ? AND key IN (SELECT unnest(?::VARCHAR[]))",
            ["runs_d", batch],
        ).fetchall()
    )
    con.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--batch", type=int, default=500)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"one poll's batch of {args.batch} keys, ms (median of 15)")
    print(
        f"{'keys':>9} {'known':>7} {'rejected':>9} {'changed':>8} {'duckdb known':>13} {'ratio':>6}"
    )
    rows = {}
    with tempfile.TemporaryDirectory(prefix="qb-bench-ledger-") as tmp:
        for size in sizes:
            r = rows[size] = measure(size, args.batch, Path(tmp))
            print(
                f"{size:>9,} {r['known']:7.2f} {r['rejected_unchanged']:9.2f} {r['changed']:8.2f}"
                f" {r['duckdb_known']:13.2f} {r['duckdb_known'] / r['known']:5.0f}x"
            )
    first, last = rows[sizes[0]], rows[sizes[-1]]
    print(
        f"{sizes[-1] // sizes[0]}x the keys: known {last['known'] / first['known']:.1f}x,"
        f" changed {last['changed'] / first['changed']:.1f}x,"
        f" duckdb known {last['duckdb_known'] / first['duckdb_known']:.1f}x"
    )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
