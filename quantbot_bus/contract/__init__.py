"""The run-directory contract (docs/contract.md): what a completed run looks like on disk.

A producer writes a run directory below the artifacts root, its Parquet files first and
``metadata.json`` last. :func:`validate_run_dir` reads one such directory and answers
:class:`Valid` (with a :class:`RunInfo`), :class:`Incomplete` (not finished yet: look again later)
or :class:`Invalid` (rejected, with a reason a person can act on). Two shapes of metadata.json are
accepted, v1 and the quantbot TypeScript producer's; both become the same :class:`RunInfo`. The
package is pure: it never raises for bad input, never writes and never builds SQL.

Cheaper than validating: :func:`quick_fingerprint` digests a run directory by stat alone
(metadata.json and the files it lists); an unchanged fingerprint means there is nothing to
validate again. :func:`fingerprint_of` gives the same digest from a file list the caller already
knows. :func:`walk_run_dirs` (and :func:`iter_run_dirs`, :func:`iter_run_dir_paths`) finds the
run directories below the root: every directory holding a metadata.json, skipping the names
:mod:`quantbot_bus.ignore` rules out.

Runs in the seed layout (``YYYY-MM/run_id=<id>/`` with ``run.json`` and ``_SUCCESS``) go through
the same functions: ``layout`` tells the two apart by name (and gives a directory's marker file
and run_id), ``seed`` validates such a run.

Modules: ``model`` (constants, RunInfo, the verdicts), ``schema`` (the JSON Schema,
``run_schema.json``), ``metadata`` (reading metadata.json), ``normalise`` (its two shapes, and the
rules a schema cannot express), ``artifacts`` (the listed Parquet files), ``validate`` (the
checks in order), ``fingerprint``, ``scan``; ``reasons`` and ``files`` are their shared helpers.
Everything public is imported from here.
"""

from __future__ import annotations

from .artifacts import HASH_CHUNK, WHOLE_READ_MAX
from .fingerprint import fingerprint_of, quick_fingerprint
from .model import (
    ARTIFACT_NAME_RE,
    MAX_JSON_DEPTH,
    MAX_METADATA_BYTES,
    METADATA_NAME,
    QUANTBOT_TS,
    RUN_ID_RE,
    RUN_TYPE_RE,
    SCHEMA_VERSION,
    ArtifactInfo,
    Incomplete,
    Invalid,
    RunInfo,
    Valid,
    ValidationResult,
)
from .scan import iter_run_dir_paths, iter_run_dirs, walk_run_dirs
from .schema import load_run_schema
from .validate import validate_run_dir

__all__ = [
    "ARTIFACT_NAME_RE",
    "HASH_CHUNK",
    "MAX_JSON_DEPTH",
    "MAX_METADATA_BYTES",
    "METADATA_NAME",
    "QUANTBOT_TS",
    "RUN_ID_RE",
    "RUN_TYPE_RE",
    "SCHEMA_VERSION",
    "WHOLE_READ_MAX",
    "ArtifactInfo",
    "Incomplete",
    "Invalid",
    "RunInfo",
    "Valid",
    "ValidationResult",
    "fingerprint_of",
    "iter_run_dir_paths",
    "iter_run_dirs",
    "load_run_schema",
    "quick_fingerprint",
    "validate_run_dir",
    "walk_run_dirs",
]
