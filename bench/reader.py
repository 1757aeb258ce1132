"""The separate reader process of the live-latency scenario.

It polls what a user would read and records, for every run_id with the given prefix, the wall time
(``time.time()``) at which it first became visible:

- ``--mode snapshot``: the daemon's publication (``exports/bus.duckdb``, the views file of the
  current generation), opened read-only with :func:`quantbot_bus.catalog.open_reader` exactly
  as a user opens it;
- ``--mode parquet``: the baseline's ``runs.parquet`` export (how the seed's users read it).

Every ``--interval`` (5 ms) it ``stat``s the file; when the file was replaced (inode, size or
mtime changed; in snapshot mode also the target of ``exports/current``, since a views file is
reused for a later generation) it opens it and reads the run_ids. The visibility time recorded is the time of that
``stat``: the run was visible then, and was not at the previous poll, so the resolution is one poll
interval plus one open. (Opening the file on every poll would cost this process most of a core on a
2-core machine and slow the daemon it is measuring.)

Stops when ``--expect`` runs were seen, when ``--stop-file`` appears, or after ``--timeout``; writes
``{"seen": {run_id: t}, "polls": n, "opens": n, "errors": n, "open_ms": {median, p90, max}}`` to
``--out`` (``open_ms``: how long an open + query took; a publication that lands during one is
seen at the next poll after it, so this bounds the reader's share of a latency).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def _ids_snapshot(path: Path, prefix: str) -> list[str]:
    from quantbot_bus.catalog import open_reader

    con = open_reader(path)
    try:
        rows = con.execute(
            "SELECT run_id FROM catalog.runs_d WHERE starts_with(run_id, ?) AND deleted_at IS NULL",
            [prefix],
        ).fetchall()
    finally:
        con.close()
    return [r[0] for r in rows]


def _ids_parquet(path: Path, prefix: str) -> list[str]:
    import pyarrow.parquet as pq

    col = pq.read_table(path, columns=["run_id"]).column("run_id").to_pylist()
    return [r for r in col if isinstance(r, str) and r.startswith(prefix)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.reader")
    ap.add_argument("--path", type=Path, required=True)
    ap.add_argument("--mode", choices=("snapshot", "parquet"), required=True)
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--expect", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--interval", type=float, default=0.005)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--stop-file", type=Path, default=None)
    ap.add_argument("--ready-file", type=Path, default=None)
    args = ap.parse_args(argv)

    read_ids = _ids_snapshot if args.mode == "snapshot" else _ids_parquet
    seen: dict[str, float] = {}
    polls = opens = errors = 0
    open_ms: list[float] = []  # how long each open + query took (the reader's resolution)
    last_sig: tuple[int, int, int, str] | None = None
    current = args.path.parent / "current"
    deadline = time.monotonic() + args.timeout
    if args.ready_file is not None:
        args.ready_file.write_text(str(os.getpid()))
    while time.monotonic() < deadline and len(seen) < args.expect:
        if args.stop_file is not None and args.stop_file.exists():
            break
        polls += 1
        t_poll = time.time()
        try:
            st = os.stat(args.path)
        except FileNotFoundError:
            time.sleep(args.interval)
            continue
        target = ""
        if args.mode == "snapshot":
            try:
                target = os.readlink(current)
            except OSError:
                target = ""
        sig = (st.st_ino, st.st_size, st.st_mtime_ns, target)
        if sig != last_sig:
            opens += 1
            t_open = time.perf_counter()
            try:
                ids = read_ids(args.path, args.prefix)
                open_ms.append((time.perf_counter() - t_open) * 1000)
            except Exception:  # noqa: BLE001 - a half-written file (baseline) is retried
                errors += 1
                time.sleep(args.interval)
                continue
            last_sig = sig
            for run_id in ids:
                if run_id not in seen:
                    seen[run_id] = t_poll
        time.sleep(args.interval)
    open_ms = sorted(open_ms[1:])  # the first open also imported the library
    stats = (
        {
            "median": round(open_ms[len(open_ms) // 2], 1),
            "p90": round(open_ms[int(len(open_ms) * 0.9)], 1),
            "max": round(open_ms[-1], 1),
        }
        if open_ms
        else {}
    )
    args.out.write_text(
        json.dumps(
            {"seen": seen, "polls": polls, "opens": opens, "errors": errors, "open_ms": stats}
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
