"""What a metadata.json document means: either shape (v1, or the quantbot TypeScript
producer's) checked against its schema and normalised into one record, then the rules a schema
cannot express (run_id = directory name, a failed run says why, unique artifact names and files)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .artifacts import _check_file_string, _Declared
from .model import (
    ARTIFACT_NAME_RE,
    QUANTBOT_TS,
    RUN_ID_RE,
    RUN_TYPE_RE,
    SCHEMA_VERSION,
    Invalid,
    metric_number,
)
from .reasons import _show, _Stop
from .schema import _schema_problem

_TS_KEYS = ("backtest_type", "table_name", "parquet_file")
SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")
_TS_FIELDS = frozenset({"run_id", "rows", "created_at_utc", "parquet_path", *_TS_KEYS})


@dataclass
class _Normalised:
    run_id: str
    run_type: str
    producer: str
    producer_version: str | None
    status: str
    created_at: str
    started_at: str
    finished_at: str
    params: dict[str, Any]
    metrics: dict[str, int | float]
    git_commit: str | None
    git_branch: str | None
    git_dirty: bool | None
    host: str | None
    error: str | None
    declared: list[_Declared]
    shape: str


def _normalise(doc: dict[str, Any]) -> _Normalised:
    """The document in whichever shape it is: the TypeScript shape has no ``schema_version`` and
    one of its own keys; anything else is read (and reported) as v1."""
    if "schema_version" not in doc and any(k in doc for k in _TS_KEYS):
        return _normalise_ts(doc)
    return _normalise_v1(doc)


def _count(value: Any) -> int | None:
    return None if value is None else int(value)


def _normalise_v1(doc: dict[str, Any]) -> _Normalised:
    version = doc.get("schema_version")
    if (
        isinstance(version, int | float)
        and not isinstance(version, bool)
        and math.isfinite(version)
        and version > SCHEMA_VERSION
    ):
        shown = int(version) if float(version).is_integer() else version
        raise _Stop(
            Invalid(
                f"metadata.json was written for contract v{shown}, this release understands "
                f"v{SCHEMA_VERSION}; upgrade quantbot-bus"
            )
        )
    problem = _schema_problem(doc, "v1")
    if problem:
        raise _Stop(Invalid(problem))
    metrics: dict[str, int | float] = {}
    for key, value in doc.get("metrics", {}).items():
        try:
            metrics[key] = metric_number(value)
        except OverflowError:
            raise _Stop(
                Invalid(f"metadata.json: metric {_show(key, 40)} is too large for a 64-bit float")
            ) from None
    git = doc.get("git") or {}
    producer = doc["producer"]
    declared = [
        _Declared(
            index=i,
            name=a["name"],
            file=a["file"],
            rows=_count(a.get("rows")),
            bytes=_count(a.get("bytes")),
            sha256=a.get("sha256"),
        )
        for i, a in enumerate(doc["artifacts"])
    ]
    return _Normalised(
        run_id=doc["run_id"],
        run_type=doc["run_type"],
        producer=producer["name"],
        producer_version=producer.get("version"),
        status=doc["status"],
        created_at=_utc_timestamp(doc["created_at"], "created_at"),
        started_at=_utc_timestamp(doc["started_at"], "started_at"),
        finished_at=_utc_timestamp(doc["finished_at"], "finished_at"),
        params=doc["params"],
        metrics=metrics,
        git_commit=git.get("commit"),
        git_branch=git.get("branch"),
        git_dirty=git.get("dirty"),
        host=doc.get("host"),
        error=doc.get("error"),
        declared=declared,
        shape="v1",
    )


def _normalise_ts(doc: dict[str, Any]) -> _Normalised:
    problem = _schema_problem(doc, QUANTBOT_TS)
    if problem:
        raise _Stop(Invalid(problem))
    created = _utc_timestamp(doc["created_at_utc"], "created_at_utc")
    params: dict[str, Any] = {"backtest_type": doc["backtest_type"]}
    params.update((k, v) for k, v in doc.items() if k not in _TS_FIELDS)
    return _Normalised(
        run_id=doc["run_id"],
        run_type="backtest",
        producer=QUANTBOT_TS,
        producer_version=None,
        status="success",
        created_at=created,
        started_at=created,
        finished_at=created,
        params=params,
        metrics={},
        git_commit=None,
        git_branch=None,
        git_dirty=None,
        host=None,
        error=None,
        declared=[
            _Declared(
                index=0,
                name=doc["table_name"],
                file=doc["parquet_file"],
                rows=int(doc["rows"]),
                bytes=None,
                sha256=None,
            )
        ],
        shape=QUANTBOT_TS,
    )


def _utc_timestamp(value: str, where: str) -> str:
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise _Stop(
            Invalid(
                f"metadata.json: field '{where}' is not an ISO-8601 timestamp: {_show(value)}; "
                'write e.g. "2024-05-01T12:00:00Z"'
            )
        ) from None
    if dt.tzinfo is None or dt.utcoffset() != timedelta(0):
        raise _Stop(
            Invalid(
                f"metadata.json: field '{where}' must be in UTC (end with Z or +00:00), "
                f"got {_show(value)}"
            )
        )
    dt = dt.astimezone(UTC)
    text = (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}"
    )
    if dt.microsecond:
        text += f".{dt.microsecond:06d}"
    return text + "Z"


def _check_semantics(norm: _Normalised, dir_name: str) -> None:
    if not RUN_ID_RE.fullmatch(norm.run_id):
        raise _Stop(
            Invalid(
                f"metadata.json: field 'run_id' must be 1-128 characters from A-Z a-z 0-9 . _ - "
                f"starting with a letter or digit, got {_show(norm.run_id)}"
            )
        )
    # the schema's patterns end in '$', which Python's re (the schema validators') also matches
    # before a final newline: the names that become directories and tables are matched whole
    if not RUN_TYPE_RE.fullmatch(norm.run_type):
        raise _Stop(
            Invalid(
                "metadata.json: field 'run_type' must be 1-64 characters from A-Z a-z 0-9 . _ - "
                f"starting with a letter or digit, got {_show(norm.run_type)}"
            )
        )
    for d in norm.declared:
        if not ARTIFACT_NAME_RE.fullmatch(d.name):
            raise _Stop(
                Invalid(
                    f"metadata.json: artifact name {_show(d.name)} is not a table name: 1-64 "
                    "characters from A-Z a-z 0-9 _ not starting with a digit"
                )
            )
        if d.sha256 is not None and not SHA256_RE.fullmatch(d.sha256):
            raise _Stop(
                Invalid(
                    f"metadata.json: the sha256 of {d.label} must be 64 hexadecimal characters, "
                    f"got {_show(d.sha256)}"
                )
            )
    if norm.run_id != dir_name:
        raise _Stop(
            Invalid(
                f"run_id {_show(norm.run_id)} in metadata.json does not match the directory name "
                f"{_show(dir_name)}; name the directory after the run_id",
                run_id=norm.run_id,
            )
        )
    if norm.status == "failed" and not (isinstance(norm.error, str) and norm.error.strip()):
        raise _Stop(
            Invalid(
                "metadata.json: status is 'failed' but there is no 'error'; "
                "say what went wrong in the 'error' field",
                run_id=norm.run_id,
            )
        )
    if norm.status == "success" and not norm.declared:
        raise _Stop(
            Invalid(
                "metadata.json: status is 'success' but 'artifacts' is empty; a successful run "
                "must list at least one Parquet file",
                run_id=norm.run_id,
            )
        )
    seen_names: dict[str, _Declared] = {}
    seen_files: dict[str, _Declared] = {}
    for decl in norm.declared:
        key = decl.name.lower()
        if key in seen_names:
            raise _Stop(
                Invalid(
                    f"metadata.json: artifact name {decl.name!r} is used twice (artifacts "
                    f"[{seen_names[key].index}] and [{decl.index}]; table names are "
                    "case-insensitive); give each table its own name",
                    run_id=norm.run_id,
                )
            )
        seen_names[key] = decl
        _check_file_string(decl)
        if decl.file in seen_files:
            raise _Stop(
                Invalid(
                    f"metadata.json: {decl.label} uses the same file as artifact "
                    f"{seen_files[decl.file].name!r}",
                    run_id=norm.run_id,
                )
            )
        seen_files[decl.file] = decl
