"""The run-directory contract (docs/contract.md): what a completed run looks like on disk.

This module is pure: it reads a run directory and answers :class:`Valid`, :class:`Incomplete`
or :class:`Invalid`. It never raises for bad input, never writes, and never builds SQL.

INTERFACE (shared by writer, catalog, watch, exports — do not change signatures lightly):

- ``METADATA_NAME = "metadata.json"``
- ``RUN_ID_RE``: the run_id pattern.
- :class:`ArtifactInfo`, :class:`RunInfo`: a validated run, normalised from either the v1 shape
  or the quantbot TypeScript-producer shape.
- ``validate_run_dir(run_dir, root, *, verify_hashes=True) -> Valid | Incomplete | Invalid``
- ``quick_fingerprint(run_dir) -> str | None``: cheap (stat-only) fingerprint of a run directory
  (metadata.json and the files it lists, by name, size and mtime_ns); ``None`` if there is no
  metadata.json. Equal fingerprints mean "unchanged, no need to validate again".
- ``iter_run_dirs(root) -> Iterator[Path]``: every run directory under root (a directory holding
  a ``metadata.json``), skipping hidden names; does not descend into a run directory.
- ``is_ignored(root, path) -> bool``: True if any component of ``path`` relative to root starts
  with ``.`` or the name ends with ``.tmp``/``.partial`` (or path is outside root).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

METADATA_NAME = "metadata.json"
SCHEMA_VERSION = 1
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
IGNORED_SUFFIXES = (".tmp", ".partial")


@dataclass(frozen=True)
class ArtifactInfo:
    name: str  # table name, e.g. "backtest_call_path_metrics"
    file: str  # relative to the run directory, POSIX separators
    path: Path  # absolute path of the file
    format: str  # "parquet"
    rows: int  # from the Parquet footer (checked against metadata when declared)
    bytes: int  # file size on disk
    sha256: str | None  # as declared in metadata (verified when verify_hashes) or computed
    arrow_schema: str  # the Arrow schema as JSON: [{"name":..., "type":..., "nullable":...}, ...]


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    run_type: str
    producer: str
    producer_version: str | None
    status: str  # "success" | "failed"
    created_at: str | None  # ISO-8601 UTC strings as given (normalised to ...Z where parseable)
    started_at: str | None
    finished_at: str | None
    params: dict[str, Any]
    metrics: dict[str, float]
    git_commit: str | None
    git_branch: str | None
    git_dirty: bool | None
    host: str | None
    error: str | None
    artifacts: tuple[ArtifactInfo, ...]
    run_dir: Path  # absolute
    metadata_json: str  # the raw metadata.json text
    metadata_mtime_ns: int  # mtime of metadata.json (for latency = commit time - this)
    fingerprint: str  # == quick_fingerprint(run_dir) at validation time
    shape: str = "v1"  # "v1" | "quantbot-ts"

    @property
    def total_rows(self) -> int:
        return sum(a.rows for a in self.artifacts)

    @property
    def total_bytes(self) -> int:
        return sum(a.bytes for a in self.artifacts)


@dataclass(frozen=True)
class Valid:
    run: RunInfo
    ok: bool = field(default=True, init=False)


@dataclass(frozen=True)
class Incomplete:
    """Not ready yet (may still be in progress): look again later."""

    reason: str
    ok: bool = field(default=False, init=False)


@dataclass(frozen=True)
class Invalid:
    """Broken: reject with a reason a person can act on."""

    reason: str
    run_id: str | None = None
    ok: bool = field(default=False, init=False)


ValidationResult = Valid | Incomplete | Invalid


def validate_run_dir(run_dir: Path, root: Path, *, verify_hashes: bool = True) -> ValidationResult:
    raise NotImplementedError


def quick_fingerprint(run_dir: Path) -> str | None:
    raise NotImplementedError


def iter_run_dirs(root: Path) -> Iterator[Path]:
    raise NotImplementedError


def is_ignored(root: Path, path: Path) -> bool:
    raise NotImplementedError
