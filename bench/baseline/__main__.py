"""``python -m bench.baseline --root R --db D --exports E [--max-seconds S]``: run the baseline
daemon on its own until stopped (SIGTERM, SIGINT) or a limit is reached."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from .. import baseline
from .daemon import POLL_INTERVAL_S, BaselineDaemon


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.baseline", description=baseline.__doc__.split("\n")[0]
    )
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--db", type=Path, required=True, help="the seed-style catalog DuckDB file")
    ap.add_argument("--exports", type=Path, required=True)
    ap.add_argument("--poll", type=float, default=POLL_INTERVAL_S)
    ap.add_argument("--max-seconds", type=float, default=None)
    ap.add_argument("--max-runs", type=int, default=None)
    ap.add_argument("--stats", type=Path, default=None, help="write per-run timings here (JSON)")
    args = ap.parse_args(argv)
    args.db.parent.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    daemon = BaselineDaemon(args.root, args.db, args.exports, poll_interval_s=args.poll)
    print("baseline.ready", flush=True)
    daemon.run(stop, max_seconds=args.max_seconds, max_runs=args.max_runs)
    if args.stats is not None:
        args.stats.write_text(
            json.dumps(
                {
                    "processed": [p.__dict__ for p in daemon.processed],
                    "rejected": daemon.rejected,
                }
            )
        )
    print(f"baseline.done processed={len(daemon.processed)}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
