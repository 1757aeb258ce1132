"""A seed-layout run directory (``YYYY-MM/run_id=<id>/``, :mod:`.layout`) against its contract.

The checks, in order: ``_SUCCESS`` (present: the run is complete), ``run.json`` (read as safely
as metadata.json: :mod:`.metadata`), its fields (:func:`_manifest`), then the artifacts (every
Parquet file in the artifact folders and every file run.json lists), checked like a v1 run's
(:mod:`.artifacts`: stat, magic bytes, footer, rows, sha256). The verdicts:

- ``_SUCCESS`` present → the run succeeded; a missing or broken file is a rejection.
- no ``_SUCCESS``, status ``failed`` → a failed run, its error the tail of ``logs/stderr.txt``.
- no ``_SUCCESS``, status ``pending``/``running``/``completed`` → not finished: pending.

run.json maps onto the catalog's run model: ``parameters`` and ``dataset`` (as
``dataset_from``/``dataset_to``/``dataset_interval``/``dataset_calls_count``) are the params,
``timing`` the metrics (``timing_<step>_ms``, plus any numeric ``metrics`` object), git fields as
they are, the whole document in ``metadata``, the shape ``seed-run-json``.
"""

from __future__ import annotations

import math
import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .artifacts import _Declared, _locate_all, _read_artifact, missing_as_final
from .files import _kind, _NotRegular, _open_regular
from .fingerprint import quick_fingerprint
from .layout import (
    RUN_JSON,
    SEED_SHAPE,
    STDERR_FILE,
    SUCCESS_NAME,
    run_id_of,
    seed_artifact_name,
    seed_listed_file,
    seed_parquet_files,
)
from .metadata import _read_metadata, metadata_object
from .model import (
    RUN_ID_RE,
    ArtifactInfo,
    Incomplete,
    Invalid,
    RunInfo,
    Valid,
    ValidationResult,
    metric_number,
)
from .reasons import _show, _Stop

#: run.json status → the catalog's status (None: not finished yet).
_STATUS = {"completed": "success", "failed": "failed", "pending": None, "running": None}
#: At most this much of the end of logs/stderr.txt becomes a failed run's error.
STDERR_TAIL_BYTES = 4096
STDERR_TAIL_LINES = 20
_SUCCESS_MAX = 4096


def _bad(reason: str) -> _Stop:
    return _Stop(Invalid(f"run.json: {reason}"))


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
        text = os.read(fd, _SUCCESS_MAX).decode("utf-8", "replace").strip()
    finally:
        os.close(fd)
    try:
        return st, _utc(text, SUCCESS_NAME) if text else None
    except _Stop:
        return st, None  # the marker's presence is what counts; its text is a courtesy


def _utc(value: Any, where: str) -> str:
    """An ISO-8601 timestamp as the catalog's UTC text; a time without an offset is UTC."""
    if not isinstance(value, str):
        raise _bad(f"field '{where}' must be an ISO-8601 timestamp string, got {_show(value)}")
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        raise _bad(
            f"field '{where}' is not an ISO-8601 timestamp: {_show(value)}; "
            'write e.g. "2026-03-01T12:00:00.000Z"'
        ) from None
    dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    return dt.isoformat(timespec="microseconds").replace("+00:00", "Z").replace(".000000Z", "Z")


def _optional(doc: dict[str, Any], key: str, kind: type | tuple[type, ...], expect: str) -> Any:
    value = doc.get(key)
    if value is not None and (
        not isinstance(value, kind) or isinstance(value, bool) != (kind is bool)
    ):
        raise _bad(f"field '{key}' must be {expect} or null, got {_show(value)}")
    return value


def _number(value: Any, where: str) -> int | float:
    """A finite number, its JSON type kept (:func:`.model.metric_number`)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(f"field '{where}' must be a number, got {_show(value)}")
    try:
        number = metric_number(value)
    except OverflowError:
        raise _bad(f"field '{where}' is too large for a 64-bit float") from None
    if not math.isfinite(number):
        raise _bad(f"field '{where}' must be a finite number, got {_show(value)}")
    return number


def _params(doc: dict[str, Any]) -> dict[str, Any]:
    params = dict(_optional(doc, "parameters", dict, "an object") or {})
    dataset = _optional(doc, "dataset", dict, "an object") or {}
    for key, value in dataset.items():
        params.setdefault(f"dataset_{key}", value)
    return params


def _metrics(doc: dict[str, Any]) -> dict[str, int | float]:
    metrics: dict[str, int | float] = {}
    for key, value in (_optional(doc, "timing", dict, "an object of milliseconds") or {}).items():
        metrics[f"timing_{key}_ms"] = _number(value, f"timing.{key}")
    for key, value in (_optional(doc, "metrics", dict, "an object of numbers") or {}).items():
        metrics[str(key)] = _number(value, f"metrics.{key}")
    return metrics


def _declared(
    doc: dict[str, Any], run_abs: str, failed: bool
) -> tuple[list[_Declared], dict[str, int]]:
    """Every artifact: the Parquet files in the folders plus the files run.json lists (of a
    failed run: those that exist); and the row counts run.json declares, by file."""
    listed = _optional(doc, "artifacts", dict, "an object {type: {rows, path}}") or {}
    files = dict.fromkeys(seed_parquet_files(run_abs))
    rows: dict[str, int] = {}
    for kind, entry in listed.items():
        where = f"artifacts.{kind}"
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise _bad(
                f"field '{where}' must be an object with a 'path' string, got {_show(entry)}"
            )
        raw = entry["path"]
        rel = seed_listed_file(raw, run_abs)
        parts = [] if rel is None else rel.split("/")
        if rel is None or "\x00" in rel or "\\" in rel or any(p in ("", ".", "..") for p in parts):
            raise _bad(
                f"field '{where}.path' is {_show(raw)}, not a file inside this run directory; "
                "give the path relative to the run directory (e.g. 'truth/paths.parquet')"
            )
        if any(p.startswith(".") for p in parts):
            raise _bad(f"field '{where}.path' names a hidden file, which is never read")
        if failed and not os.path.lexists(os.path.join(run_abs, rel)):
            continue  # a failed run did not write everything it meant to
        files[rel] = None
        count = entry.get("rows")
        if count is not None:
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise _bad(f"field '{where}.rows' must be a row count, got {_show(count)}")
            rows[rel] = count
    names: dict[str, str] = {}
    declared = []
    for i, rel in enumerate(sorted(files)):
        name = seed_artifact_name(rel)
        if name.lower() in names:
            raise _bad(
                f"the files {names[name.lower()]!r} and {rel!r} both make artifact {name!r}; "
                "keep one"
            )
        names[name.lower()] = rel
        declared.append(_Declared(i, name, rel, rows=None, bytes=None, sha256=None))
    return declared, rows


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


def _artifacts(
    declared: list[_Declared],
    rows: dict[str, int],
    run_abs: str,
    run_real: str,
    root_real: str,
    verify_hashes: bool,
) -> tuple[ArtifactInfo, ...]:
    try:
        located = _locate_all(declared, run_abs, run_real, root_real)
        found = tuple(_read_artifact(loc, verify_hashes) for loc in located)
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


def stderr_tail(run_abs: str) -> str | None:
    """The last lines of ``logs/stderr.txt`` (at most :data:`STDERR_TAIL_LINES` lines of its
    last :data:`STDERR_TAIL_BYTES` bytes), or None when it is missing, unreadable or empty."""
    try:
        fd = _open_regular(os.path.join(run_abs, STDERR_FILE))
    except (OSError, _NotRegular):
        return None
    try:
        size = os.fstat(fd).st_size
        raw = os.pread(fd, STDERR_TAIL_BYTES, max(0, size - STDERR_TAIL_BYTES))
    finally:
        os.close(fd)
    lines = raw.decode("utf-8", "replace").strip().splitlines()
    if size > STDERR_TAIL_BYTES and len(lines) > 1:
        lines = lines[1:]  # the first line is cut
    text = "\n".join(lines[-STDERR_TAIL_LINES:]).strip()
    return text or None


def _manifest(doc: dict[str, Any], run_abs: str) -> tuple[str, str, str | None]:
    """run_id, run_type and the catalog status (None: not finished) of a run.json."""
    run_id = doc.get("run_id")
    if not isinstance(run_id, str) or not RUN_ID_RE.fullmatch(run_id):
        raise _bad(
            "field 'run_id' must be 1-128 characters from A-Z a-z 0-9 . _ - starting with a "
            f"letter or digit, got {_show(run_id)}"
        )
    if run_id != run_id_of(run_abs):
        raise _Stop(
            Invalid(
                f"run_id {_show(run_id)} in run.json does not match the directory name "
                f"{_show(os.path.basename(run_abs))}; name the directory run_id=<run_id>",
                run_id=run_id,
            )
        )
    run_type = doc.get("run_type")
    if not isinstance(run_type, str) or not RUN_ID_RE.fullmatch(run_type):
        raise _bad(f"field 'run_type' must be a name like 'path-only', got {_show(run_type)}")
    status = doc.get("status")
    if not isinstance(status, str) or status not in _STATUS:
        raise _bad(f"field 'status' must be one of {', '.join(_STATUS)}, got {_show(status)}")
    return run_id, run_type, _STATUS[status]


def validate_seed(
    run_abs: str, run_real: str, root_real: str, verify_hashes: bool
) -> ValidationResult:
    """The verdict on a seed run directory (the directory itself already checked); raises
    :class:`_Stop` for a rejection or a pending run."""
    fingerprint = quick_fingerprint(Path(run_abs))  # before anything is read
    success = _success_marker(run_abs)
    if success is not None and not os.path.lexists(os.path.join(run_abs, RUN_JSON)):
        raise _Stop(
            Invalid(
                f"{SUCCESS_NAME} exists but run.json is missing; write the run's manifest "
                f"run.json before {SUCCESS_NAME}"
            )
        )
    meta = _read_metadata(run_abs, root_real, RUN_JSON)
    if success is None and not meta.text.strip():
        raise _Stop(Incomplete("run.json is empty: it is probably being written"))
    doc = metadata_object(meta.text, RUN_JSON)
    try:
        run_id, run_type, status = _manifest(doc, run_abs)
    except _Stop as stop:
        declared_id = doc.get("run_id")
        if isinstance(stop.result, Invalid) and isinstance(declared_id, str):
            if stop.result.run_id is None and RUN_ID_RE.fullmatch(declared_id):
                raise _Stop(Invalid(stop.result.reason, run_id=declared_id)) from None
        raise
    try:
        return Valid(
            _run(
                doc,
                meta,
                run_abs,
                run_real,
                root_real,
                verify_hashes,
                fingerprint,
                success,
                run_id,
                run_type,
                status,
            )
        )
    except _Stop as stop:
        if isinstance(stop.result, Invalid) and stop.result.run_id is None:
            raise _Stop(Invalid(stop.result.reason, run_id=run_id)) from None
        raise


def _run(
    doc: dict[str, Any],
    meta: Any,
    run_abs: str,
    run_real: str,
    root_real: str,
    verify_hashes: bool,
    fingerprint: str | None,
    success: tuple[os.stat_result, str | None] | None,
    run_id: str,
    run_type: str,
    status: str | None,
) -> RunInfo:
    raw_status = doc["status"]
    if success is not None and status == "failed":
        raise _bad(
            f"status is 'failed' but {SUCCESS_NAME} exists (it marks a successful run); "
            f"remove {SUCCESS_NAME} or correct the status"
        )
    if success is None and status != "failed":
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
    elif success is not None:
        mtime = datetime.fromtimestamp(success[0].st_mtime, UTC).isoformat()
        finished = success[1] or _utc(mtime, SUCCESS_NAME)
    params, metrics = _params(doc), _metrics(doc)
    git_commit = _optional(doc, "git_commit", str, "a string")
    git_branch = _optional(doc, "git_branch", str, "a string")
    git_dirty = _optional(doc, "git_dirty", bool, "true/false")
    producer = _optional(doc, "producer", dict, "an object {name, version}") or {}
    name, version = producer.get("name"), producer.get("version")
    declared, rows = _declared(doc, run_abs, status == "failed")
    artifacts = _artifacts(declared, rows, run_abs, run_real, root_real, verify_hashes)
    error = None
    if status == "failed":
        given = doc.get("error")
        error = stderr_tail(run_abs) or (
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
        run_dir=Path(run_abs),
        metadata_json=meta.text,
        metadata_mtime_ns=success[0].st_mtime_ns if success is not None else meta.mtime_ns,
        fingerprint=fingerprint or "",
        shape=SEED_SHAPE,
    )
