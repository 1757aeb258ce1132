"""The baseline daemon: the seed's poll loop, one job at a time under the writer lock, every
export re-run in full after each run (:class:`BaselineDaemon`)."""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from .schema import EXPORT_JOBS, SCHEMA_DDL, catalog_timestamp, utc_now_iso

POLL_INTERVAL_S = 1.0


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
        created = catalog_timestamp(meta.get("created_at"))
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
