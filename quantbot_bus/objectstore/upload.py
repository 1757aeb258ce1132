"""Putting a finished run directory into object storage, ``metadata.json`` last (a seed-layout
run: ``run.json``, then ``_SUCCESS``).

A single PUT is atomic, so ``metadata.json`` appearing is the commit marker, as its rename is on
a local disk. An empty completion marker follows it, so daemons list the new run at once
(:mod:`quantbot_bus.objectstore.listing`). The manifest is written with ``If-None-Match: *``: a
run already in the bucket is refused (runs are immutable), and of two writers racing for one run
id only one commits. Every data file is written with ``If-None-Match: *`` too, in sorted order, so
a writer never replaces an object another writer put there: a name already taken by other bytes
stops the upload before its manifest, with the file named; the same bytes (an earlier attempt of
this upload that stopped half-way; compared by the SHA-256 each data file carries as metadata)
are left as they are. A file above :data:`MAX_PUT_BYTES` is refused before anything is put.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import time
from pathlib import Path
from typing import Any

from ..contract import METADATA_NAME
from ..contract.layout import RUN_JSON, SUCCESS_NAME, is_seed_dir
from ..errors import ContractError
from .listing import marker_key
from .location import NOT_FOUND, S3Location, error_code

MAX_PUT_BYTES = 5 * 1024**3
"""The largest object one PUT writes (S3's limit); a conditional write needs one PUT."""

_TAKEN = ("PreconditionFailed", "412")
_IN_PROGRESS = ("ConditionalRequestConflict", "409")
#: PUTs of one file tried while another write of its key is in progress (409).
CONFLICT_TRIES = 3


def _last_names(run_type: str, run_id: str) -> tuple[str, ...]:
    """The files a run's upload puts last, in order: the first is written only if absent (the
    commit); a v1 run's ``metadata.json``; a seed run's (``YYYY-MM/run_id=<id>``) ``run.json``
    then ``_SUCCESS``, its completion marker."""
    return (RUN_JSON, SUCCESS_NAME) if is_seed_dir(f"{run_type}/{run_id}") else (METADATA_NAME,)


def run_exists(client: Any, loc: S3Location, run_type: str, run_id: str) -> bool:
    """True if the run directory ``<run_type>/<run_id>`` (or a seed ``<month>/run_id=<id>``)
    holds its manifest in the bucket."""
    key = loc.key(run_type, run_id, _last_names(run_type, run_id)[0])
    try:
        client.head_object(Bucket=loc.bucket, Key=key)
    except Exception as exc:
        if error_code(exc) in NOT_FOUND:
            return False
        raise
    return True


def upload_run(client: Any, run_dir: Path, loc: S3Location, run_type: str, run_id: str) -> str:
    """Upload every file below ``run_dir`` to ``<prefix>/<run_type>/<run_id>/`` (a seed run:
    ``<prefix>/<month>/run_id=<id>/``), its manifest last (:func:`_last_names`), then its
    completion marker; returns the run's URI. Raises ContractError if that run is in the bucket
    already."""
    last = [name for name in _last_names(run_type, run_id) if (run_dir / name).is_file()]
    files = sorted(
        p
        for p in run_dir.rglob("*")
        if p.is_file() and p.relative_to(run_dir).as_posix() not in last
    )
    too_big = [p for p in files if p.stat().st_size > MAX_PUT_BYTES]
    if too_big:  # refused before anything is uploaded
        raise ContractError(
            f"{too_big[0].name} is {too_big[0].stat().st_size:,} bytes; one object PUT takes at "
            f"most {MAX_PUT_BYTES:,}: split the table into several files"
        )
    for path in files:
        _put_new(client, loc, loc.key(run_type, run_id, path.relative_to(run_dir).as_posix()), path)
    if not last:
        return loc.uri(loc.key(run_type, run_id))
    for i, name in enumerate(last):
        key = loc.key(run_type, run_id, name)
        body = (run_dir / name).read_bytes()
        try:
            client.put_object(
                Bucket=loc.bucket,
                Key=key,
                Body=body,
                **({"IfNoneMatch": "*"} if i == 0 else {}),
                **({"ContentType": "application/json"} if name.endswith(".json") else {}),
            )
        except Exception as exc:
            if error_code(exc) in _TAKEN + _IN_PROGRESS and _holds(client, loc, key, body):
                continue  # this upload's own manifest (run again after it stopped half-way)
            if error_code(exc) in _TAKEN + _IN_PROGRESS:
                raise ContractError(
                    f"run {run_type}/{run_id} is already in {loc.url}; runs are immutable: "
                    "choose another run_id"
                ) from None
            raise
    # the completion marker: new runs are listed by it (objectstore.listing)
    marker = marker_key(loc, run_type, run_id, dt.datetime.now(dt.UTC))
    client.put_object(Bucket=loc.bucket, Key=marker, Body=b"")
    return loc.uri(loc.key(run_type, run_id))


def _holds(client: Any, loc: S3Location, key: str, body: bytes) -> bool:
    """Whether the object at ``key`` holds exactly ``body`` (a small manifest)."""
    try:
        return bool(client.get_object(Bucket=loc.bucket, Key=key)["Body"].read() == body)
    except Exception as exc:
        if error_code(exc) in NOT_FOUND:
            return False
        raise


def _put_new(client: Any, loc: S3Location, key: str, path: Path) -> None:
    """PUT ``path`` at ``key`` unless the key exists, with its SHA-256 as the object's metadata
    (``x-amz-meta-sha256``). Found there: the same bytes (that SHA-256, or for an object without
    it an ETag equal to their MD5) are kept; other bytes raise ContractError, and the object is
    left unchanged. A conflicting write in progress (409) is waited for, briefly; refused but
    absent (still in progress, or deleted meanwhile) raises ContractError too."""
    with open(path, "rb") as f:
        sha256 = hashlib.file_digest(f, "sha256").hexdigest()
    code = None
    for attempt in range(1, CONFLICT_TRIES + 1):
        try:
            with open(path, "rb") as body:
                client.put_object(
                    Bucket=loc.bucket,
                    Key=key,
                    Body=body,
                    IfNoneMatch="*",
                    Metadata={"sha256": sha256},
                )
            return
        except Exception as exc:
            code = error_code(exc)
            if code in _IN_PROGRESS and attempt < CONFLICT_TRIES:
                time.sleep(0.5 * attempt)
                continue
            if code not in _TAKEN + _IN_PROGRESS:
                raise
            break
    try:
        head = client.head_object(Bucket=loc.bucket, Key=key)
    except Exception as exc:
        if error_code(exc) not in NOT_FOUND:
            raise
        raise ContractError(
            f"{loc.uri(key)} was not written: the bucket refused it ({code}"
            f"{f' {CONFLICT_TRIES} times' if code in _IN_PROGRESS else ''}) but holds no object "
            "there: another writer's write or a deletion of it is under way; run the upload "
            "again later, or choose another run_id"
        ) from None
    theirs = head.get("Metadata", {}).get("sha256")
    if theirs is None:
        with open(path, "rb") as f:
            md5 = hashlib.file_digest(f, lambda: hashlib.md5(usedforsecurity=False)).hexdigest()
        same = head.get("ETag", "").strip('"') == md5
    else:
        same = theirs == sha256
    if not same:
        raise ContractError(
            f"{loc.uri(key)} already holds other bytes: another writer is writing this run id, "
            "or an earlier attempt stopped half-way; choose another run_id (or delete that "
            "run's objects)"
        )


def staging_dir(base: str | os.PathLike[str] | None = None) -> Path:
    """A fresh local directory to write a run into before it is uploaded."""
    import tempfile

    return Path(tempfile.mkdtemp(prefix="quantbot-bus-run-", dir=base))
