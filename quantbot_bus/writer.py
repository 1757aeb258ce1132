"""Producer side of the run contract (docs/contract.md): write one run directory safely.

:class:`RunWriter` is a context manager that creates ``<root>/<run_type>/<run_id>/``, writes each
table as zstd Parquet, and writes ``metadata.json`` last and atomically::

    with RunWriter(root, "backtest", producer=("my-backtest", "1.2.0"), params={"seed": 0}) as w:
        w.write_table("trades", arrow_table_or_polars_df_or_arrow_stream)
        con.execute("COPY (SELECT ...) TO $1 (FORMAT parquet)", [str(w.path_for("frontier"))])
        w.add_file("frontier", w.path_for("frontier"))
        w.set_metrics(trades=120, avg_return_bps=43.5)

The completion protocol, step by step:

1. the run directory is created fresh (an existing one is refused: runs are immutable);
2. every data file is written as ``<name>.parquet.partial`` (a name the daemon never reads),
   fsynced, and renamed to ``<name>.parquet``; rows, bytes and sha256 are recorded (the hash is
   computed while writing, or by streaming the finished file once);
3. on leaving the block, the run directory is fsynced, then ``metadata.json`` is written to
   ``.metadata.json.<random>.tmp`` in the same directory, fsynced, renamed to ``metadata.json``,
   and the run directory and its parent are fsynced.

An exception inside the block still writes ``metadata.json``, with ``status: failed`` and
``error: "ExcType: message"`` (the exception propagates), so failures are cataloged too. A
producer killed mid-write (SIGKILL, power loss) leaves no ``metadata.json``: at worst
``.partial``/``.tmp`` files, which the daemon ignores.

``git`` defaults to ``"auto"``: commit, branch and dirty flag of the git work tree around the
current directory (silently omitted outside one or without git). ``host`` is the host name.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from . import writer_seed as seed
from .arrowdata import as_stream, is_polars_frame
from .contract import ARTIFACT_NAME_RE, METADATA_NAME, SCHEMA_VERSION
from .contract.layout import SEED
from .errors import ContractError
from .fsutil import fsync_dir, write_atomic
from .hashing import CHUNK, HashingFile, sha256_file
from .ignore import any_ignored
from .log import get_logger
from .objectstore.location import S3Location, S3Settings, is_s3_url
from .objectstore.upload import run_exists, staging_dir, upload_run
from .provenance import default_run_id, git_info
from .timeutil import iso_utc, utc_now
from .writer_args import check_metric, check_params, check_producer, check_run_id, check_run_type

PARTIAL_SUFFIX = ".partial"
_log = get_logger("quantbot_bus.writer")


class RunWriter:
    """Write one run directory: Parquet tables, then ``metadata.json`` last and atomically.

    ``root``: the artifacts root; the run goes to ``root/run_type/run_id``. An ``s3://BUCKET/PREFIX``
    root writes the run into a local staging directory and uploads it when the run ends,
    metadata.json last (:mod:`quantbot_bus.objectstore.upload`; credentials from AWS_*).
    ``run_id``: default ``<run_type>-<UTC yyyymmddTHHMMSS>-<8 hex>``.
    ``producer``: ``(name, version)``. ``params``: JSON-serialisable object.
    ``git``: ``"auto"`` (detect), ``None`` (omit) or a mapping {commit, branch, dirty}.
    ``layout``: ``"v1"``, or ``"seed"``: ``root/YYYY-MM/run_id=<uuid>/`` with run.json, logs and
    ``_SUCCESS`` last, tables named ``<folder>/<name>`` (:mod:`quantbot_bus.writer_seed`).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        run_type: str,
        run_id: str | None = None,
        producer: tuple[str, str] = ("quantbot-bus", "0"),
        params: Mapping[str, Any] | None = None,
        git: Mapping[str, Any] | Literal["auto"] | None = "auto",
        layout: str = "v1",
    ) -> None:
        self.layout = seed.check_layout(layout)
        check_run_type(run_type, seed=self.layout == SEED)
        self.created = utc_now()
        if run_id is None:
            run_id = str(uuid.uuid4()) if layout == SEED else default_run_id(run_type, self.created)
        self.run_id = check_run_id(run_id)
        check_producer(producer)
        self.params: dict[str, Any] = check_params(params)
        self.remote = None
        if is_s3_url(root):
            self.remote = S3Location.parse(str(root))
            root = staging_dir()
        self.root = Path(root)
        self.run_type = run_type
        self.producer = (str(producer[0]), str(producer[1]))
        self._git_arg = git
        self.run_dir = seed.run_dir(self.root, run_type, self.run_id, self.created, layout)
        self.artifacts: list[dict[str, Any]] = []
        self.metrics: dict[str, float | int] = {}
        self.status: str | None = None
        self.error: str | None = None
        self.started: dt.datetime | None = None
        self._entered = False
        self._closed = False
        self._open_partials: set[Path] = set()
        self._log = _log.bind(run_id=self.run_id, run_type=run_type)

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def location(self) -> str:
        """Where the run is once written: its directory, or its ``s3://`` URI on an object
        storage root (the staging directory is gone by then)."""
        if self.remote is None:
            return str(self.run_dir)
        return self.remote.uri(self.remote.key(*self._remote_parts))

    @property
    def _remote_parts(self) -> tuple[str, str]:
        """The run directory below the root: ``run_type, run_id`` (seed: ``month, run_id=<id>``)."""
        month_or_type, name = self.run_dir.relative_to(self.root).parts
        return month_or_type, name

    def __enter__(self) -> RunWriter:
        if self._entered:
            raise ContractError(f"RunWriter for {self.run_id!r} can only be entered once")
        if self.remote is not None and run_exists(
            S3Settings.from_env().client(), self.remote, *self._remote_parts
        ):
            shutil.rmtree(self.root, ignore_errors=True)  # the staging directory
            raise ContractError(
                f"run {'/'.join(self._remote_parts)} is already in {self.remote.url}; runs are "
                "immutable: choose another run_id"
            )
        self.run_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.run_dir.mkdir()
        except FileExistsError:
            raise ContractError(
                f"run directory {self.run_dir} already exists; runs are immutable: choose another "
                "run_id (or leave it unset for a fresh one) or remove the old directory"
            ) from None
        self._entered = True
        self.started = utc_now()
        if self._git_arg == "auto":
            self.git: dict[str, Any] | None = git_info()
        elif self._git_arg is None:
            self.git = None
        else:
            self.git = dict(self._git_arg)
        self._log.debug("run.writing", run_dir=str(self.run_dir))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        if exc is None:
            self._finish("success", None)
            return False
        message = str(exc).strip()
        error = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
        try:
            self._finish("failed", error, exc)
        except Exception as meta_exc:  # keep the original exception; report this one
            self._log.error("run.metadata_failed", error=f"{type(meta_exc).__name__}: {meta_exc}")
        return False

    # -- tables --------------------------------------------------------------------------------

    def path_for(self, name: str) -> Path:
        """Where a producer may write table ``name`` itself (then call :meth:`add_file`).

        The path ends in ``.partial``: the daemon never reads it; ``add_file`` renames it.
        """
        self._check_open()
        name = self._qualify(name)
        self._check_name(name)
        path = self.run_dir / f"{name}.parquet{PARTIAL_SUFFIX}"
        path.parent.mkdir(exist_ok=True)  # a seed table's folder
        return path

    def write_table(self, name: str, data: Any) -> dict[str, Any]:
        """Write ``data`` as ``<name>.parquet`` (zstd) and register it; returns its artifact entry.

        ``data``: a pyarrow Table / RecordBatch / RecordBatchReader, a polars DataFrame (written by
        polars itself), or any object exporting an Arrow stream (``__arrow_c_stream__``).
        A stream is written batch by batch, never collected in memory.
        """
        name = self._qualify(name)
        partial = self.path_for(name)
        self._open_partials.add(partial)
        if is_polars_frame(data):
            data.write_parquet(partial, compression="zstd", statistics=True)
            with open(partial, "rb+") as fh:
                os.fsync(fh.fileno())
            digest, nbytes = sha256_file(partial), partial.stat().st_size
            rows = int(data.height)
        else:
            reader = as_stream(data)
            sink = HashingFile(partial)
            ok = False
            rows = 0
            try:
                with pq.ParquetWriter(sink, reader.schema, compression="zstd") as pw:
                    for batch in reader:
                        pw.write_batch(batch)
                        rows += batch.num_rows
                ok = True
            finally:
                sink.close(sync=ok)
            digest, nbytes = sink.sha256.hexdigest(), sink.nbytes
        return self._register(name, partial, rows=rows, nbytes=nbytes, digest=digest)

    def add_file(self, name: str, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Register a Parquet file the producer wrote itself (e.g. DuckDB ``COPY ... TO``).

        A file at :meth:`path_for` (or anywhere else inside the run directory) is fsynced and,
        if its name ends in ``.partial``, renamed to ``<name>.parquet``; a file outside the run
        directory is copied in. Rows come from the Parquet footer; a file that is not readable
        Parquet raises :class:`ContractError`.
        """
        self._check_open()
        name = self._qualify(name)
        self._check_name(name)
        src = Path(path)
        if not src.is_file():
            raise ContractError(f"add_file({name!r}): {src} does not exist or is not a file")
        run_dir = self.run_dir.resolve()
        real = src.resolve()
        if real.is_relative_to(run_dir) and not src.is_symlink():
            rel = real.relative_to(run_dir)
            if any_ignored(rel.parts[:-1]) or rel.name.startswith(".") or rel.name.endswith(".tmp"):
                raise ContractError(
                    f"add_file({name!r}): {rel} is a hidden or .tmp name the daemon never reads; "
                    f"write to writer.path_for({name!r}) instead"
                )
            with open(real, "rb+") as fh:
                os.fsync(fh.fileno())
            target = real
            if rel.name.endswith(PARTIAL_SUFFIX):
                self._open_partials.add(real)
            digest, nbytes = sha256_file(real), real.stat().st_size
        else:
            target = self.path_for(name)
            self._open_partials.add(target)
            sink = HashingFile(target)
            ok = False
            try:
                with open(real, "rb") as fh:
                    shutil.copyfileobj(fh, sink, CHUNK)
                ok = True
            finally:
                sink.close(sync=ok)
            digest, nbytes = sink.sha256.hexdigest(), sink.nbytes
        try:
            rows = pq.read_metadata(target).num_rows
        except (pa.ArrowException, OSError) as exc:
            raise ContractError(
                f"add_file({name!r}): {src} is not a readable Parquet file ({exc})"
            ) from None
        return self._register(name, target, rows=rows, nbytes=nbytes, digest=digest)

    def set_metrics(self, **metrics: float | int) -> None:
        """Record run metrics (numbers only: no bools, NaN or infinity); later calls add/replace."""
        for key, value in metrics.items():
            self.metrics[key] = check_metric(key, value)

    # -- internals -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if not self._entered:
            raise ContractError("use RunWriter as a context manager: `with RunWriter(...) as w:`")
        if self._closed:
            raise ContractError(f"run {self.run_id!r} is already finished ({self.status})")

    def _qualify(self, name: str) -> str:
        return seed.qualify(name) if self.layout == SEED else name

    def _check_name(self, name: str) -> None:
        if self.layout == SEED:
            seed.check_name(name)
        elif not isinstance(name, str) or not ARTIFACT_NAME_RE.fullmatch(name):
            raise ContractError(
                f"artifact name {name!r} is not valid: it must match {ARTIFACT_NAME_RE.pattern} "
                "(a letter or '_', then letters, digits or '_'; at most 64 characters)"
            )
        if any(a["name"] == name for a in self.artifacts):
            raise ContractError(f"artifact {name!r} is already written in run {self.run_id!r}")

    def _register(
        self, name: str, path: Path, *, rows: int, nbytes: int, digest: str
    ) -> dict[str, Any]:
        final = path
        if path.name.endswith(PARTIAL_SUFFIX):
            final = path.with_name(f"{name.rsplit('/', 1)[-1]}.parquet")
            if final.exists():
                raise ContractError(f"artifact file {final} already exists in the run directory")
            os.replace(path, final)
        self._open_partials.discard(path)
        entry = {
            "name": name,
            "file": final.resolve().relative_to(self.run_dir.resolve()).as_posix(),
            "format": "parquet",
            "rows": int(rows),
            "bytes": int(nbytes),
            "sha256": digest,
        }
        self.artifacts.append(entry)
        self._log.debug("run.table_written", table=name, rows=rows, bytes=nbytes)
        return entry

    def metadata(self, status: str, error: str | None) -> dict[str, Any]:
        """The metadata.json document for this run (v1)."""
        started = self.started or self.created
        meta: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "run_id": self.run_id,
            "run_type": self.run_type,
            "producer": {"name": self.producer[0], "version": self.producer[1]},
            "status": status,
            "created_at": iso_utc(self.created),
            "started_at": iso_utc(started),
            "finished_at": iso_utc(utc_now()),
            "host": socket.gethostname(),
            "params": self.params,
            "metrics": self.metrics,
            "artifacts": self.artifacts,
        }
        if self.git:
            meta["git"] = self.git
        if error is not None:
            meta["error"] = error
        return meta

    def _finish(self, status: str, error: str | None, exc: BaseException | None = None) -> None:
        t0 = time.perf_counter()
        self._closed = True
        for partial in list(self._open_partials):  # interrupted or never-registered writes
            partial.unlink(missing_ok=True)
        self._open_partials.clear()
        self.status, self.error = status, error
        fsync_dir(self.run_dir)  # the data files' renames are durable before metadata appears
        if self.layout == SEED:
            seed.finish(self, status, error, exc)  # logs, run.json, then _SUCCESS
        else:
            text = json.dumps(self.metadata(status, error), indent=2, allow_nan=False) + "\n"
            write_atomic(self.run_dir / METADATA_NAME, text)  # temp, fsync, rename, fsync dir
            fsync_dir(self.run_dir.parent)
        if self.remote is not None:
            try:
                upload_run(
                    S3Settings.from_env().client(), self.run_dir, self.remote, *self._remote_parts
                )
            except Exception as exc:  # the run is kept: the work is not lost with the upload
                kept = (
                    f"the run is kept in {self.run_dir} (upload it again with "
                    "quantbot_bus.objectstore.upload.upload_run, or delete it)"
                )
                self._log.warning("run.upload_failed", kept=str(self.run_dir), error=str(exc))
                if isinstance(exc, ContractError):
                    raise ContractError(f"{exc}; {kept}") from None
                exc.add_note(kept)
                raise
            shutil.rmtree(self.root, ignore_errors=True)
        self._log.info(
            "run.written",
            status=status,
            artifacts=len(self.artifacts),
            rows=sum(a["rows"] for a in self.artifacts),
            ms=round((time.perf_counter() - t0) * 1000, 3),
            **({"error": error} if error else {}),
        )
