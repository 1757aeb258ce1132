"""A faithful baseline of the seed system's bus daemon, to measure side by side with ours.

The seed daemon (``scripts/bus_daemon.py`` in the quantbot repository) works like this, and so
does :class:`BaselineDaemon`:

- poll the inbox every ``poll_interval_s`` (1.0 s); for each committed job not yet processed, one
  at a time and in name order:
- take the writer lock file (``<db>.writer.lock``, ``fcntl.flock``), ``duckdb.connect`` the
  catalog file, run the idempotent schema DDL (``CREATE ... IF NOT EXISTS``), upsert the run row
  (``INSERT ... ON CONFLICT DO UPDATE``, the whole metadata as ``meta_json``) and one
  ``INSERT ... ON CONFLICT DO NOTHING`` per artifact, write the run's ``meta.json`` into the
  store, then re-run **every** export job in full (``COPY (<sql over the whole catalog>) TO
  '<file>.parquet'``), write ``_export_status.json``, close the connection, release the lock.

Differences from the seed, kept small and on purpose: the job is one of our run directories
(``<root>/<run_type>/<run_id>/`` completed by ``metadata.json``) instead of an inbox dir
completed by ``COMMIT``; files are not moved into a store (the benchmark root is shared with the
daemon under test), so only ``meta.json`` is written to the store, as the seed did; processed runs
stay in the root, so a set of processed run dirs (loaded from the catalog at start) replaces the
seed's move-to-``processed/``. The export jobs are the seed's kind (SQL over the catalog tables,
``COPY ... TO``) for the exports this project publishes from the catalog: runs flattened,
artifacts, latest artifacts, run summaries, per-producer totals.

Run it on its own: ``python -m bench.baseline --root R --db D --exports E --max-seconds 20``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

POLL_INTERVAL_S = 1.0

SCHEMA_DDL = (
    "CREATE SCHEMA IF NOT EXISTS catalog",
    """
    CREATE TABLE IF NOT EXISTS catalog.runs_d (
      run_id           VARCHAR PRIMARY KEY,
      producer         VARCHAR,
      created_at_utc   TIMESTAMP,
      meta_json        VARCHAR,
      first_seen_at    TIMESTAMP DEFAULT now(),
      last_seen_at     TIMESTAMP DEFAULT now()
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS catalog.artifacts_f (
      artifact_key     VARCHAR PRIMARY KEY,
      run_id           VARCHAR,
      artifact_id      VARCHAR,
      producer         VARCHAR,
      kind             VARCHAR,
      format           VARCHAR,
      canonical_path   VARCHAR,
      rows             BIGINT,
      schema_hint      VARCHAR,
      created_at_utc   TIMESTAMP,
      ingested_at      TIMESTAMP DEFAULT now(),
      meta_json        VARCHAR
    )
    """,
    """
    CREATE VIEW IF NOT EXISTS catalog.latest_artifacts_v AS
    WITH ranked AS (
      SELECT *, row_number() OVER (
        PARTITION BY producer, kind, artifact_id ORDER BY created_at_utc DESC, ingested_at DESC
      ) AS rn
      FROM catalog.artifacts_f
    ) SELECT * FROM ranked WHERE rn = 1
    """,
)

#: The export jobs, each re-run in full after every run (the seed's ``export.jobs``).
EXPORT_JOBS: tuple[tuple[str, str], ...] = (
    (
        "runs",
        """
        SELECT run_id, producer, created_at_utc, first_seen_at, last_seen_at,
               json_extract_string(meta_json, '$.status') AS status
        FROM catalog.runs_d
        ORDER BY created_at_utc DESC
        """,
    ),
    (
        "artifacts",
        "SELECT * EXCLUDE (meta_json) FROM catalog.artifacts_f ORDER BY run_id, artifact_id",
    ),
    ("latest_artifacts", "SELECT * FROM catalog.latest_artifacts_v"),
    (
        "run_summaries",
        """
        SELECT r.run_id, r.producer, r.created_at_utc,
               count(a.artifact_key) AS artifact_count, sum(a.rows) AS total_rows
        FROM catalog.runs_d r LEFT JOIN catalog.artifacts_f a USING (run_id)
        GROUP BY ALL
        ORDER BY r.created_at_utc DESC
        """,
    ),
    (
        "producer_totals",
        """
        SELECT producer, kind, artifact_id, count(*) AS artifacts, sum(rows) AS rows,
               min(created_at_utc) AS first_at, max(created_at_utc) AS last_at
        FROM catalog.artifacts_f GROUP BY ALL ORDER BY ALL
        """,
    ),
)


def utc_now_iso() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _ts(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(dt.UTC).replace(tzinfo=None)


@contextmanager
def writer_lock(lock_path: Path) -> Iterator[None]:
    """The seed's ``WriterLock``: an exclusive flock on ``<db>.writer.lock`` with owner meta."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "task": "bus_ingest"}).encode())
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def completed_runs(root: Path) -> list[Path]:
    """Run dirs (``root/<run_type>/<run_id>/`` with metadata.json), in name order."""
    out: list[Path] = []
    if not root.is_dir():
        return out
    for type_entry in sorted(os.scandir(root), key=lambda e: e.name):
        if not type_entry.is_dir() or type_entry.name.startswith("."):
            continue
        for run_entry in sorted(os.scandir(type_entry.path), key=lambda e: e.name):
            if run_entry.name.startswith(".") or not run_entry.is_dir():
                continue
            if os.path.exists(os.path.join(run_entry.path, "metadata.json")):
                out.append(Path(run_entry.path))
    return out


@dataclass
class ProcessedRun:
    run_id: str
    run_dir: str
    started: float  # time.time() when processing began
    finished: float  # time.time() when the exports were rewritten and the file closed
    ms: float


@dataclass
class BaselineDaemon:
    root: Path
    db_path: Path
    exports_dir: Path
    poll_interval_s: float = POLL_INTERVAL_S
    processed: list[ProcessedRun] = field(default_factory=list)
    rejected: int = 0
    _seen: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self.store = self.db_path.parent / "store" / "runs"
        self.lock_path = Path(str(self.db_path) + ".writer.lock")

    # -- one job, exactly as the seed does it -------------------------------------------------
    def load_seen(self) -> None:
        """Runs already in the catalog (the seed had moved them out of its inbox)."""
        if not self.db_path.exists():
            return
        con = duckdb.connect(str(self.db_path))
        try:
            for stmt in SCHEMA_DDL:
                con.execute(stmt)
            rows = con.execute(
                "SELECT json_extract_string(meta_json, '$.run_dir') FROM catalog.runs_d"
            ).fetchall()
            self._seen.update(r[0] for r in rows if r[0])
        finally:
            con.close()

    def process_one(self, run_dir: Path) -> ProcessedRun | None:
        started = time.time()
        t0 = time.perf_counter()
        try:
            meta = json.loads((run_dir / "metadata.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            self.rejected += 1
            return None
        errs = [k for k in ("run_id", "producer", "created_at", "artifacts") if k not in meta]
        errs += [
            a.get("file", "?")
            for a in meta.get("artifacts", [])
            if not (run_dir / str(a.get("file", ""))).exists()
        ]
        if errs:
            self.rejected += 1
            return None
        run_id = str(meta["run_id"])
        producer = meta["producer"].get("name") if isinstance(meta["producer"], dict) else None
        created = _ts(meta.get("created_at"))
        kind = meta.get("run_type")
        meta["run_dir"] = str(run_dir)
        meta_json = json.dumps(meta, ensure_ascii=False)
        with writer_lock(self.lock_path):
            con = duckdb.connect(str(self.db_path))
            try:
                for stmt in SCHEMA_DDL:
                    con.execute(stmt)
                con.execute(
                    """
                    INSERT INTO catalog.runs_d (run_id, producer, created_at_utc, meta_json, last_seen_at)
                    VALUES (?, ?, ?, ?, now())
                    ON CONFLICT (run_id) DO UPDATE SET
                      producer = excluded.producer, created_at_utc = excluded.created_at_utc,
                      meta_json = excluded.meta_json, last_seen_at = now()
                    """,
                    [run_id, producer, created, meta_json],
                )
                run_store = self.store / run_id
                run_store.mkdir(parents=True, exist_ok=True)
                (run_store / "meta.json").write_text(
                    json.dumps(
                        {
                            "run_id": run_id,
                            "producer": producer,
                            "kind": kind,
                            "created_at_utc": meta.get("created_at"),
                            "ingested_at_utc": utc_now_iso(),
                            "meta": meta,
                        },
                        indent=2,
                    ),
                    encoding="utf-8",
                )
                for seq, a in enumerate(meta["artifacts"], start=1):
                    a_meta = {k: v for k, v in a.items() if k != "file"}
                    con.execute(
                        """
                        INSERT INTO catalog.artifacts_f (
                          artifact_key, run_id, artifact_id, producer, kind, format,
                          canonical_path, rows, schema_hint, created_at_utc, meta_json)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                        ON CONFLICT (artifact_key) DO NOTHING
                        """,
                        [
                            f"{run_id}:{a.get('name')}:{seq}",
                            run_id,
                            a.get("name"),
                            producer,
                            kind,
                            a.get("format", "parquet"),
                            str(run_dir / str(a["file"])),
                            a.get("rows"),
                            None,
                            created,
                            json.dumps(a_meta, ensure_ascii=False),
                        ],
                    )
                self.run_exports(con)
            finally:
                con.close()
        self._seen.add(str(run_dir))
        done = ProcessedRun(
            run_id, str(run_dir), started, time.time(), (time.perf_counter() - t0) * 1000
        )
        self.processed.append(done)
        return done

    def run_exports(self, con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
        """Re-run every export job in full: ``COPY (sql) TO file`` (the seed's run_exports)."""
        self.exports_dir.mkdir(parents=True, exist_ok=True)
        results: list[dict[str, Any]] = []
        for name, sql in EXPORT_JOBS:
            out = self.exports_dir / f"{name}.parquet"
            # COPY takes a file-name literal; the path is ours (bench temp dir), quotes escaped
            # as the seed did. The SQL is a constant of this module, never input.
            out_str = str(out).replace("'", "''")
            try:
                con.execute(f"COPY ({sql}) TO '{out_str}' (FORMAT PARQUET)")
                results.append({"name": name, "ok": True, "path": str(out)})
            except duckdb.Error as exc:
                results.append({"name": name, "ok": False, "error": str(exc)})
        with (self.exports_dir / "_export_status.json").open("w", encoding="utf-8") as fh:
            json.dump({"ran_at_utc": utc_now_iso(), "results": results}, fh, indent=2)
        return results

    # -- the poll loop --------------------------------------------------------------------------
    def poll_once(
        self, stop: threading.Event, deadline: float | None, max_runs: int | None
    ) -> None:
        for run_dir in completed_runs(self.root):
            if stop.is_set() or (deadline is not None and time.monotonic() >= deadline):
                return
            if max_runs is not None and len(self.processed) >= max_runs:
                return
            if str(run_dir) in self._seen:
                continue
            self.process_one(run_dir)

    def run(
        self,
        stop: threading.Event | None = None,
        *,
        max_seconds: float | None = None,
        max_runs: int | None = None,
    ) -> None:
        """Poll until ``stop`` is set, ``max_seconds`` pass, or ``max_runs`` were processed."""
        stop = stop or threading.Event()
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        self.load_seen()
        while not stop.is_set():
            self.poll_once(stop, deadline, max_runs)
            if deadline is not None and time.monotonic() >= deadline:
                return
            if max_runs is not None and len(self.processed) >= max_runs:
                return
            wait = self.poll_interval_s
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - time.monotonic()))
            stop.wait(wait)


def preseed(db_path: Path, runs: list[tuple[str, Path, dict[str, Any]]]) -> float:
    """Register ``runs`` (run_id, run_dir, metadata) in a seed-schema catalog with one Arrow
    insert per table (so the baseline can be measured at 10k/100k without running it for hours).
    Returns seconds taken."""
    t0 = time.perf_counter()
    run_cols: dict[str, list[Any]] = {
        k: [] for k in ("run_id", "producer", "created_at_utc", "meta_json")
    }
    art_cols: dict[str, list[Any]] = {
        k: []
        for k in (
            "artifact_key",
            "run_id",
            "artifact_id",
            "producer",
            "kind",
            "format",
            "canonical_path",
            "rows",
            "created_at_utc",
            "meta_json",
        )
    }
    for run_id, run_dir, meta in runs:
        producer = meta["producer"]["name"]
        created = _ts(meta.get("created_at"))
        doc = dict(meta, run_dir=str(run_dir))
        run_cols["run_id"].append(run_id)
        run_cols["producer"].append(producer)
        run_cols["created_at_utc"].append(created)
        run_cols["meta_json"].append(json.dumps(doc, ensure_ascii=False))
        for seq, a in enumerate(meta["artifacts"], start=1):
            art_cols["artifact_key"].append(f"{run_id}:{a['name']}:{seq}")
            art_cols["run_id"].append(run_id)
            art_cols["artifact_id"].append(a["name"])
            art_cols["producer"].append(producer)
            art_cols["kind"].append(meta.get("run_type"))
            art_cols["format"].append("parquet")
            art_cols["canonical_path"].append(str(run_dir / a["file"]))
            art_cols["rows"].append(a["rows"])
            art_cols["created_at_utc"].append(created)
            art_cols["meta_json"].append(
                json.dumps({k: v for k, v in a.items() if k != "file"}, ensure_ascii=False)
            )
    runs_tbl = pa.table(run_cols)
    arts_tbl = pa.table(art_cols)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(db_path))
    try:
        for stmt in SCHEMA_DDL:
            con.execute(stmt)
        con.register("runs_in", runs_tbl)
        con.register("arts_in", arts_tbl)
        con.execute(
            "INSERT INTO catalog.runs_d (run_id, producer, created_at_utc, meta_json) "
            "SELECT run_id, producer, created_at_utc, meta_json FROM runs_in"
        )
        con.execute(
            "INSERT INTO catalog.artifacts_f (artifact_key, run_id, artifact_id, producer, kind, "
            "format, canonical_path, rows, created_at_utc, meta_json) "
            "SELECT artifact_key, run_id, artifact_id, producer, kind, format, canonical_path, "
            "rows, created_at_utc, meta_json FROM arts_in"
        )
    finally:
        con.close()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.baseline", description=__doc__.split("\n")[0]
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
