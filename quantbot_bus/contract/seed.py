"""A seed-layout run (``YYYY-MM/run_id=<id>/``, :mod:`.layout`) against its contract, wherever
it lies: :func:`validate_seed` checks a local directory; :mod:`quantbot_bus.objectstore.seed`
checks a run's objects in a bucket. Both go through :func:`check_seed`, given a
:class:`SeedFiles` that reads the run's files, so both give the same verdicts and reasons.

The checks, in order: ``_SUCCESS`` (present: the run is complete), ``run.json`` (read as safely
as metadata.json: :mod:`.metadata`), its fields (:mod:`.seed_manifest`), then the artifacts
(every Parquet file in the artifact folders and every file run.json lists), checked like a v1
run's (:mod:`.artifacts`: magic bytes, footer, rows; locally also stat and sha256). The verdicts:

- ``_SUCCESS`` present → the run succeeded; a missing or broken file is a rejection.
- no ``_SUCCESS``, status ``failed`` → a failed run, its error the tail of ``logs/stderr.txt``.
- no ``_SUCCESS``, status ``pending``/``running``/``completed`` → not finished: pending.

run.json maps onto the catalog's run model: ``parameters`` and ``dataset`` (as
``dataset_from``/``dataset_to``/``dataset_interval``/``dataset_calls_count``) are the params,
``timing`` the metrics (``timing_<step>_ms``, plus any numeric ``metrics`` object), git fields as
they are, the whole document in ``metadata``, the shape ``seed-run-json``.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from .artifacts import _Declared, _locate_all, _read_artifact, missing_as_final
from .files import _kind, _NotRegular, _open_regular
from .fingerprint import quick_fingerprint
from .layout import (
    RUN_JSON,
    SEED_SHAPE,
    STDERR_FILE,
    SUCCESS_NAME,
    seed_artifact_name,
    seed_listed_file,
    seed_parquet_files,
)
from .metadata import _read_metadata, metadata_object
from .model import RUN_ID_RE, ArtifactInfo, Incomplete, Invalid, RunInfo, Valid, ValidationResult
from .reasons import _show, _Stop
from .seed_manifest import (
    _bad,
    _manifest,
    _metrics,
    _optional,
    _params,
    _utc,
    modified_time,
    success_text_time,
)

#: At most this much of the end of logs/stderr.txt becomes a failed run's error.
STDERR_TAIL_BYTES = 4096
STDERR_TAIL_LINES = 20
#: At most this much of ``_SUCCESS`` is read (for the finish time written in it).
SUCCESS_MAX = 4096
#: The rejection of a run whose ``_SUCCESS`` exists without its ``run.json``.
NO_MANIFEST = (
    f"{SUCCESS_NAME} exists but run.json is missing; write the run's manifest "
    f"run.json before {SUCCESS_NAME}"
)


class SeedFiles(Protocol):
    """What the checks read of a seed run's files: a local directory's, or a bucket's objects.
    Paths are relative to the run directory."""

    def exists(self, rel: str) -> bool:
        """True if the file ``rel`` exists (a failed run's listed files are those that do)."""
        ...

    def parquet_files(self) -> list[str]:
        """The Parquet files directly in the artifact folders, as
        :func:`.layout.seed_parquet_files` finds them."""
        ...

    def read_artifacts(self, declared: list[_Declared]) -> tuple[ArtifactInfo, ...]:
        """Each declared file checked as a v1 artifact; raises :class:`_Stop` worded as for a
        v1 run (:func:`_as_seed_reason` rewords it)."""
        ...

    def stderr_tail(self) -> str | None:
        """:func:`tail_text` of ``logs/stderr.txt``, None when it is missing or unreadable."""
        ...

    def success_time(self) -> str | None:
        """The finish time ``_SUCCESS`` gives as UTC text: the time written in it, else its
        modification time."""
        ...


def tail_text(raw: bytes, size: int) -> str | None:
    """A failed run's error from ``raw``, the last bytes (at most :data:`STDERR_TAIL_BYTES`) of
    a stderr log of ``size`` bytes: its last :data:`STDERR_TAIL_LINES` lines (a first line cut
    by the window dropped), or None when that is empty."""
    lines = raw.decode("utf-8", "replace").strip().splitlines()
    if size > STDERR_TAIL_BYTES and len(lines) > 1:
        lines = lines[1:]  # the first line is cut
    text = "\n".join(lines[-STDERR_TAIL_LINES:]).strip()
    return text or None


def _as_seed_reason(stop: _Stop) -> _Stop:
    """A check of :mod:`.artifacts` speaks of metadata.json; a seed run's manifest is run.json
    and its completion marker _SUCCESS (both final once present): wait for nothing."""
    text = stop.result.reason.replace("write metadata.json only after", "write _SUCCESS only after")
    text = text.replace("metadata.json", RUN_JSON)
    text = missing_as_final(text)
    if isinstance(stop.result, Incomplete):
        text += (
            f" (the run is finished: {SUCCESS_NAME} or a failed status is final, so the file will "
            "not appear; write it, or remove it from run.json's artifacts)"
        )
    return _Stop(Invalid(text))


def _declared(
    doc: dict[str, Any], run_dir: str, failed: bool, files: SeedFiles
) -> tuple[list[_Declared], dict[str, int]]:
    """Every artifact: the Parquet files in the folders plus the files run.json lists (of a
    failed run: those that exist); and the row counts run.json declares, by file."""
    listed = _optional(doc, "artifacts", dict, "an object {type: {rows, path}}") or {}
    found = dict.fromkeys(files.parquet_files())
    rows: dict[str, int] = {}
    for kind, entry in listed.items():
        where = f"artifacts.{kind}"
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise _bad(
                f"field '{where}' must be an object with a 'path' string, got {_show(entry)}"
            )
        raw = entry["path"]
        rel = seed_listed_file(raw, run_dir)
        parts = [] if rel is None else rel.split("/")
        if rel is None or "\x00" in rel or "\\" in rel or any(p in ("", ".", "..") for p in parts):
            raise _bad(
                f"field '{where}.path' is {_show(raw)}, not a file inside this run directory; "
                "give the path relative to the run directory (e.g. 'truth/paths.parquet')"
            )
        if any(p.startswith(".") for p in parts):
            raise _bad(f"field '{where}.path' names a hidden file, which is never read")
        if failed and not files.exists(rel):
            continue  # a failed run did not write everything it meant to
        found[rel] = None
        count = entry.get("rows")
        if count is not None:
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise _bad(f"field '{where}.rows' must be a row count, got {_show(count)}")
            rows[rel] = count
    names: dict[str, str] = {}
    declared = []
    for i, rel in enumerate(sorted(found)):
        name = seed_artifact_name(rel)
        if name.lower() in names:
            raise _bad(
                f"the files {names[name.lower()]!r} and {rel!r} both make artifact {name!r}; "
                "keep one"
            )
        names[name.lower()] = rel
        declared.append(_Declared(i, name, rel, rows=None, bytes=None, sha256=None))
    return declared, rows


def _artifacts(
    declared: list[_Declared], rows: dict[str, int], files: SeedFiles
) -> tuple[ArtifactInfo, ...]:
    try:
        found = files.read_artifacts(declared)
    except _Stop as stop:
        raise _as_seed_reason(stop) from None
    for art in found:
        want = rows.get(art.file)
        if want is not None and want != art.rows:
            raise _bad(
                f"artifact {art.name!r} (file {art.file!r}) has {art.rows} rows in its Parquet "
                f"footer but run.json declares {want}; rewrite run.json with the real row count"
            )
    return found


def _named(stop: _Stop, run_id: Any) -> _Stop:
    """The rejection naming ``run_id`` (when well-formed and the rejection names none)."""
    result = stop.result
    if isinstance(result, Invalid) and result.run_id is None and isinstance(run_id, str):
        if RUN_ID_RE.fullmatch(run_id):
            return _Stop(Invalid(result.reason, run_id=run_id))
    return stop


def check_seed(
    text: str,
    run_dir: str,
    success: bool,
    files: SeedFiles,
    *,
    path: Path,
    mtime_ns: int,
    fingerprint: str,
) -> RunInfo:
    """The run a seed run directory holds, from its run.json ``text`` (read already, its size
    checked), whether ``_SUCCESS`` exists and its ``files``; raises :class:`_Stop` for a
    rejection or a pending run. ``run_dir``: the directory's path or key prefix (its last parts
    name the run); ``path``, ``mtime_ns``, ``fingerprint``: as :class:`RunInfo` records them (a
    run in a bucket: ``/BUCKET/KEY`` as a ``PurePosixPath``)."""
    if not success and not text.strip():
        raise _Stop(Incomplete("run.json is empty: it is probably being written"))
    doc = metadata_object(text, RUN_JSON)
    try:
        run_id, run_type, status = _manifest(doc, run_dir)
    except _Stop as stop:
        raise _named(stop, doc.get("run_id")) from None
    try:
        info = _run(doc, run_dir, success, files, run_id, run_type, status)
    except _Stop as stop:
        raise _named(stop, run_id) from None
    return dataclasses.replace(
        info, run_dir=path, metadata_json=text, metadata_mtime_ns=mtime_ns, fingerprint=fingerprint
    )


def _run(
    doc: dict[str, Any],
    run_dir: str,
    success: bool,
    files: SeedFiles,
    run_id: str,
    run_type: str,
    status: str | None,
) -> RunInfo:
    raw_status = doc["status"]
    if success and status == "failed":
        raise _bad(
            f"status is 'failed' but {SUCCESS_NAME} exists (it marks a successful run); "
            f"remove {SUCCESS_NAME} or correct the status"
        )
    if not success and status != "failed":
        waiting = "is finished" if raw_status == "completed" else f"is {raw_status}"
        raise _Stop(
            Incomplete(
                f"run.json says the run {waiting} and there is no {SUCCESS_NAME} yet; "
                f"{SUCCESS_NAME} is written last"
            )
        )
    created = _utc(doc.get("created_at"), "created_at")
    started = _utc(doc["started_at"], "started_at") if doc.get("started_at") else created
    finished: str | None = None
    if doc.get("completed_at") is not None:
        finished = _utc(doc["completed_at"], "completed_at")
    elif success:
        finished = files.success_time()
    params, metrics = _params(doc), _metrics(doc)
    git_commit = _optional(doc, "git_commit", str, "a string")
    git_branch = _optional(doc, "git_branch", str, "a string")
    git_dirty = _optional(doc, "git_dirty", bool, "true/false")
    producer = _optional(doc, "producer", dict, "an object {name, version}") or {}
    name, version = producer.get("name"), producer.get("version")
    declared, rows = _declared(doc, run_dir, status == "failed", files)
    artifacts = _artifacts(declared, rows, files)
    error = None
    if status == "failed":
        given = doc.get("error")
        error = files.stderr_tail() or (
            given
            if isinstance(given, str) and given.strip()
            else f"run.json status is 'failed'; {STDERR_FILE} is missing or empty"
        )
    return RunInfo(
        run_id=run_id,
        run_type=run_type,
        producer=name if isinstance(name, str) and name else SEED_SHAPE,
        producer_version=str(version) if isinstance(version, str | int | float) else None,
        status=status or "success",
        created_at=created,
        started_at=started,
        finished_at=finished,
        params=params,
        metrics=metrics,
        git_commit=git_commit,
        git_branch=git_branch,
        git_dirty=git_dirty,
        host=doc["host"] if isinstance(doc.get("host"), str) else None,
        error=error,
        artifacts=artifacts,
        run_dir=Path(run_dir),
        metadata_json="",
        metadata_mtime_ns=0,
        fingerprint="",
        shape=SEED_SHAPE,
    )


# ---------------------------------------------------------------------- a local directory


def _success_marker(run_abs: str) -> tuple[os.stat_result, str | None] | None:
    """The ``_SUCCESS`` file's stat and the timestamp written in it (None if unreadable as one);
    None if there is no ``_SUCCESS``. A ``_SUCCESS`` that is not a regular file is rejected."""
    path = os.path.join(run_abs, SUCCESS_NAME)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        raise _Stop(
            Invalid(f"{SUCCESS_NAME} is {_kind(st.st_mode)}; write it as a small regular file")
        )
    try:
        fd = _open_regular(path)
    except (OSError, _NotRegular):
        return st, None
    try:
        text = os.read(fd, SUCCESS_MAX).decode("utf-8", "replace").strip()
    finally:
        os.close(fd)
    return st, success_text_time(text)


def stderr_tail(run_abs: str) -> str | None:
    """:func:`tail_text` of a local run directory's ``logs/stderr.txt``, or None when it is
    missing, unreadable or empty."""
    try:
        fd = _open_regular(os.path.join(run_abs, STDERR_FILE))
    except (OSError, _NotRegular):
        return None
    try:
        size = os.fstat(fd).st_size
        raw = os.pread(fd, STDERR_TAIL_BYTES, max(0, size - STDERR_TAIL_BYTES))
    finally:
        os.close(fd)
    return tail_text(raw, size)


@dataclasses.dataclass
class _LocalFiles:
    """:class:`SeedFiles` of a local run directory (stat, then reads; sha256 when asked)."""

    run_abs: str
    run_real: str
    root_real: str
    verify_hashes: bool
    success: tuple[os.stat_result, str | None] | None

    def exists(self, rel: str) -> bool:
        return os.path.lexists(os.path.join(self.run_abs, rel))

    def parquet_files(self) -> list[str]:
        return seed_parquet_files(self.run_abs)

    def read_artifacts(self, declared: list[_Declared]) -> tuple[ArtifactInfo, ...]:
        located = _locate_all(declared, self.run_abs, self.run_real, self.root_real)
        return tuple(_read_artifact(loc, self.verify_hashes) for loc in located)

    def stderr_tail(self) -> str | None:
        return stderr_tail(self.run_abs)

    def success_time(self) -> str | None:
        if self.success is None:
            return None
        st, written = self.success
        return written or modified_time(datetime.fromtimestamp(st.st_mtime, UTC))


def validate_seed(
    run_abs: str, run_real: str, root_real: str, verify_hashes: bool
) -> ValidationResult:
    """The verdict on a local seed run directory (the directory itself already checked); raises
    :class:`_Stop` for a rejection or a pending run."""
    fingerprint = quick_fingerprint(Path(run_abs))  # before anything is read
    success = _success_marker(run_abs)
    if success is not None and not os.path.lexists(os.path.join(run_abs, RUN_JSON)):
        raise _Stop(Invalid(NO_MANIFEST))
    meta = _read_metadata(run_abs, root_real, RUN_JSON)
    files = _LocalFiles(run_abs, run_real, root_real, verify_hashes, success)
    info = check_seed(
        meta.text,
        run_abs,
        success is not None,
        files,
        path=Path(run_abs),
        mtime_ns=success[0].st_mtime_ns if success is not None else meta.mtime_ns,
        fingerprint=fingerprint or "",
    )
    return Valid(info)
