"""One run directory against the whole contract: :func:`validate_run_dir` runs the checks in
order (the directory, metadata.json, its meaning, the artifacts) and never raises."""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path
from typing import Any

from ..ignore import is_within
from .artifacts import _locate_all, _read_artifact
from .files import _kind
from .fingerprint import _files_in, _fingerprint
from .layout import is_seed_dir
from .metadata import _is_unicode, _read_metadata, metadata_object
from .model import (
    MAX_JSON_DEPTH,
    RUN_ID_RE,
    ArtifactInfo,
    Incomplete,
    Invalid,
    RunInfo,
    Valid,
    ValidationResult,
)
from .normalise import _check_semantics, _normalise, _Normalised
from .reasons import _clean, _show_path, _Stop
from .seed import validate_seed


def _validate(run_dir: Path, root: Path, verify_hashes: bool) -> ValidationResult:
    root_real = os.path.realpath(os.fspath(root))
    run_abs = os.path.abspath(os.fspath(run_dir))
    run_real = os.path.realpath(run_abs)
    if not is_within(run_real, root_real) or run_real == root_real:
        return Invalid(
            f"{_show_path(run_abs)} is not a directory below the artifacts root "
            f"{_show_path(root_real)}"
        )
    if not _is_unicode(run_abs):
        return Invalid(
            f"the run directory path {_show_path(run_abs)} is not valid UTF-8; rename it "
            "(paths are stored in the catalog and read by DuckDB as UTF-8 text)"
        )
    try:
        st = os.lstat(run_abs)
    except FileNotFoundError:
        return Incomplete("the run directory does not exist (it may have been moved or deleted)")
    if stat.S_ISLNK(st.st_mode):
        return Invalid(
            "the run directory is a symbolic link; runs are read only from their real directory"
        )
    if not stat.S_ISDIR(st.st_mode):
        return Invalid(f"the run directory is {_kind(st.st_mode)}, not a directory")
    if is_seed_dir(run_abs):
        return validate_seed(run_abs, run_real, root_real, verify_hashes)
    meta = _read_metadata(run_abs, root_real)  # a missing metadata.json: Incomplete
    doc = metadata_object(meta.text)
    # == quick_fingerprint(run_abs): metadata.json as opened (before it was read) and the files it
    # lists, statted before they are read, so a later change always shows as a new fingerprint.
    fingerprint = _fingerprint(run_abs, meta.stat, _files_in(doc))
    declared_id = doc.get("run_id")
    try:
        norm = _normalise(doc)
        _check_semantics(norm, os.path.basename(run_abs))
        located = _locate_all(norm.declared, run_abs, run_real, root_real)
        artifacts = tuple(_read_artifact(loc, verify_hashes) for loc in located)
    except _Stop as stop:
        raise named_rejection(stop, declared_id) from None
    return Valid(run_info(norm, artifacts, Path(run_abs), meta.text, meta.mtime_ns, fingerprint))


def named_rejection(stop: _Stop, declared_id: Any) -> _Stop:
    """The same stop, its verdict (a rejection, or a wait) naming the run whenever
    metadata.json gives a well-formed run_id."""
    result = stop.result
    if result.run_id is None and isinstance(declared_id, str) and RUN_ID_RE.fullmatch(declared_id):
        return _Stop(dataclasses.replace(result, run_id=declared_id))
    return stop


def run_info(
    norm: _Normalised,
    artifacts: tuple[ArtifactInfo, ...],
    run_dir: Path,
    metadata_json: str,
    metadata_mtime_ns: int,
    fingerprint: str,
) -> RunInfo:
    """The :class:`RunInfo` of a normalised metadata.json and its checked artifacts."""
    return RunInfo(
        run_id=norm.run_id,
        run_type=norm.run_type,
        producer=norm.producer,
        producer_version=norm.producer_version,
        status=norm.status,
        created_at=norm.created_at,
        started_at=norm.started_at,
        finished_at=norm.finished_at,
        params=norm.params,
        metrics=norm.metrics,
        git_commit=norm.git_commit,
        git_branch=norm.git_branch,
        git_dirty=norm.git_dirty,
        host=norm.host,
        error=norm.error,
        artifacts=artifacts,
        run_dir=run_dir,
        metadata_json=metadata_json,
        metadata_mtime_ns=metadata_mtime_ns,
        fingerprint=fingerprint,
        shape=norm.shape,
    )


def validate_run_dir(run_dir: Path, root: Path, *, verify_hashes: bool = True) -> ValidationResult:
    """Check one run directory against the contract (docs/contract.md), in whichever layout
    it is (:mod:`.layout`: a ``YYYY-MM/run_id=<id>`` directory is checked by :mod:`.seed`).

    Returns :class:`Valid` (with a normalised :class:`RunInfo`), :class:`Incomplete` (no
    metadata.json yet, or a listed file missing/shorter than declared: look again later) or
    :class:`Invalid` (reject, with a reason naming the field or file). Never raises for any
    input: an unexpected failure becomes ``Invalid`` naming the exception. Never opens anything
    but regular files, never reads Parquet data pages, reads at most 8 MiB of metadata.json and
    streams sha256 in 1 MiB chunks (only when ``verify_hashes``).
    """
    try:
        result = _validate(run_dir, root, verify_hashes)
    except _Stop as stop:
        result = stop.result
    except RecursionError:
        result = Invalid(f"metadata.json is nested too deeply (limit {MAX_JSON_DEPTH} levels)")
    except MemoryError:
        result = Invalid("validation ran out of memory; the run directory is too large or hostile")
    except Exception as exc:  # never raise: one poison run must not stop the others
        result = Invalid(
            f"unexpected error while validating this run: {type(exc).__name__}: {str(exc)[:300]}"
        )
    if isinstance(result, Incomplete):
        return dataclasses.replace(result, reason=_clean(result.reason))
    if isinstance(result, Invalid):
        return Invalid(_clean(result.reason), run_id=result.run_id)
    return result
