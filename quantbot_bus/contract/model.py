"""The contract's vocabulary: its constants, a validated run (:class:`RunInfo` with its
:class:`ArtifactInfo` list) and the three verdicts (:class:`Valid`, :class:`Incomplete`,
:class:`Invalid`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

METADATA_NAME = "metadata.json"
SCHEMA_VERSION = 1
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: A v1 run's ``run_type`` (metadata.json, run_schema.json): the run id's alphabet, at most 64.
RUN_TYPE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

#: Artifact names become table names: an identifier, at most 64 characters.
ARTIFACT_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
#: metadata.json larger than this is rejected without being read.
MAX_METADATA_BYTES = 8 * 1024 * 1024
#: metadata.json nested deeper than this (objects/lists inside each other) is rejected.
MAX_JSON_DEPTH = 64

#: The shape name of runs written by the quantbot TypeScript producer.
QUANTBOT_TS = "quantbot-ts"


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
    metrics: dict[str, int | float]  # as metadata.json has them: see metric_number
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
    """Not ready yet (may still be in progress): look again later.

    ``missing``: the listed files (relative to the run directory) that do not exist, when that
    is why; ``run_id``: the run's id when its metadata names a well-formed one; ``since``: when
    its manifest was written (POSIX seconds), when the check read it from object storage (the
    pending timeout counts from it)."""

    reason: str
    ok: bool = field(default=False, init=False)
    missing: tuple[str, ...] = ()
    run_id: str | None = None
    since: float | None = None


@dataclass(frozen=True)
class Invalid:
    """Broken: reject with a reason a person can act on."""

    reason: str
    run_id: str | None = None
    ok: bool = field(default=False, init=False)


ValidationResult = Valid | Incomplete | Invalid


def metric_number(value: int | float) -> int | float:
    """A metric as the catalog keeps it: JSON's type kept, an integer stays an integer while it
    fits in 64 bits (``calls: 200``, not ``200.0``), anything else is a float. Raises
    OverflowError when it is too large even for a 64-bit float."""
    if isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63:
        return value
    return float(value)
