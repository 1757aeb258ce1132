"""One run in object storage against the contract (docs/contract.md), read with small requests.

The same checks as :func:`quantbot_bus.contract.validate_run_dir`, through S3 calls: metadata.json
is fetched (at most 8 MiB, checked by its listed size first); of each listed file one ranged
GET of its last 64 KiB gives its size, its magic bytes and footer (a second one fetches the
rest of a longer footer, and the first bytes of a larger file). Data pages are never read, so declared sha256 hashes are kept as
given, not verified (that would read every byte; the store checks transfers itself).

Objects are written whole (a PUT is atomic), so a listed file shorter than declared will never
grow: unlike on a local disk it is rejected at once instead of waited for; so is a longer one.

A seed-layout run (``YYYY-MM/run_id=<id>/``) is checked by :mod:`.seed`, reading its Parquet
files with :func:`_artifact` as here.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from ..contract import MAX_METADATA_BYTES, ArtifactInfo, Incomplete, Invalid, RunInfo
from ..contract.artifacts import _Declared, read_parquet_footer
from ..contract.layout import SEED
from ..contract.metadata import decode_metadata, metadata_object
from ..contract.model import MAX_JSON_DEPTH
from ..contract.normalise import _check_semantics, _normalise
from ..contract.reasons import _clean, _Stop
from ..contract.validate import named_rejection, run_info
from .listing import RunObject
from .location import S3Location
from .reads import ObjectReads

#: The first ranged GET of a Parquet file fetches this many bytes of its tail: most footers fit.
TAIL_READ = 64 * 1024


#: Runs validated at once, in threads (each is a handful of small requests without the GIL).
VALIDATE_THREADS = 16


@dataclass(frozen=True)
class ObjectRun:
    """A valid run in object storage: its :class:`RunInfo` and where its objects are."""

    info: RunInfo
    uri: str  # s3://bucket/prefix/run_type/run_id
    artifact_uris: tuple[str, ...]  # one per info.artifacts, same order
    #: the parsed Parquet footers (``pyarrow.parquet.FileMetaData``), same order: registration
    #: builds its Iceberg data files from them without reading the objects again
    footers: tuple[Any, ...] = ()
    #: each file's whole bytes when its first ranged GET fetched all of it (a file of at most
    #: :data:`TAIL_READ` bytes), else None, same order: a rewrite needs no second GET
    bodies: tuple[bytes | None, ...] = ()
    #: the ETag of the ``metadata.json`` validated (without quotes)
    etag: str = ""


class _Object:
    """Ranged reads of one object. :meth:`open` fetches its last :data:`TAIL_READ` bytes
    (the whole object when smaller) and learns its size from the same response, so a small
    Parquet file costs one GET: magic bytes, footer and size all come from it."""

    def __init__(self, reads: ObjectReads, key: str) -> None:
        self.reads, self.key = reads, key
        self.size = 0
        self._tail_at = 0
        self._tail = b""

    def open(self) -> bool:
        """Fetch the tail; False if the object does not exist."""
        tail = self.reads.tail(self.key, TAIL_READ)
        if tail is None:
            return False
        self._tail, self.size, self._tail_at = tail.data, tail.size, tail.start
        return True

    @property
    def body(self) -> bytes | None:
        """The whole object, when the tail read fetched all of it."""
        return self._tail if self._tail_at == 0 and len(self._tail) == self.size else None

    def read_at(self, offset: int, length: int) -> bytes:
        if offset >= self._tail_at and offset + length <= self.size:
            start = offset - self._tail_at
            return self._tail[start : start + length]
        if length <= 0:
            return b""
        return self.reads.range(self.key, offset, offset + length)


@dataclass(frozen=True)
class _Found:
    info: ArtifactInfo
    uri: str
    footer: Any  # pyarrow.parquet.FileMetaData
    body: bytes | None


def _artifact(reads: ObjectReads, loc: S3Location, run: RunObject, decl: _Declared) -> _Found:
    key = run.run_prefix + decl.file
    obj = _Object(reads, key)
    if not obj.open():
        raise _Stop(
            Incomplete(f"{decl.label} does not exist yet; waiting for the producer to upload it")
        )
    size = obj.size
    if decl.bytes is not None and size != decl.bytes:
        raise _Stop(
            Invalid(
                f"{decl.label} has {size} bytes but metadata.json declares {decl.bytes}; objects "
                "are uploaded whole, so it will not change: rewrite metadata.json with the real size"
            )
        )
    num_rows, schema_json, footer = read_parquet_footer(decl, size, obj.read_at)
    info = ArtifactInfo(
        name=decl.name,
        file=decl.file,
        path=PurePosixPath("/", loc.bucket, key),  # type: ignore[arg-type]
        format="parquet",
        rows=num_rows,
        bytes=size,
        sha256=decl.sha256.lower() if decl.sha256 else None,
        arrow_schema=schema_json,
    )
    return _Found(info, loc.uri(key), footer, obj.body)


def _validate(reads: ObjectReads, loc: S3Location, run: RunObject) -> ObjectRun:
    if run.layout == SEED:
        from .seed import validate_seed_object  # (it reads artifacts with this module's _artifact)

        return validate_seed_object(reads, loc, run)
    too_big = (
        f"metadata.json is over the {MAX_METADATA_BYTES} byte (8 MiB) limit; keep large data "
        "in Parquet artifacts, not in metadata.json"
    )
    if run.size > MAX_METADATA_BYTES:  # the listing said so: not even fetched
        raise _Stop(Invalid(too_big))
    got = reads.head_bytes(run.metadata_key, MAX_METADATA_BYTES)
    if got is None:
        raise _Stop(Incomplete("no metadata.json (yet, or the run was deleted)"))
    raw, etag, written = got
    if len(raw) > MAX_METADATA_BYTES:
        raise _Stop(Invalid(too_big))
    etag = run.etag or etag
    text = decode_metadata(raw)
    doc = metadata_object(text)
    declared_id = doc.get("run_id")
    try:
        norm = _normalise(doc)
        _check_semantics(norm, run.run_id)
        found = [_artifact(reads, loc, run, decl) for decl in norm.declared]
    except _Stop as stop:
        raise named_rejection(dated(stop, written), declared_id) from None
    fingerprint = hashlib.sha256(
        "\n".join([etag, *(f"{f.info.file}:{f.info.bytes}" for f in found)]).encode()
    ).hexdigest()[:32]
    info = run_info(
        norm,
        tuple(f.info for f in found),
        PurePosixPath("/", loc.bucket, run.run_prefix.rstrip("/")),  # type: ignore[arg-type]
        text,
        0,
        fingerprint,
    )
    return ObjectRun(
        info,
        loc.uri(run.run_prefix.rstrip("/")),
        tuple(f.uri for f in found),
        tuple(f.footer for f in found),
        tuple(f.body for f in found),
        etag,
    )


def dated(stop: _Stop, written: float | None) -> _Stop:
    """``stop``; a wait (:class:`Incomplete`) dated by when the run's manifest was written
    (``written``, its LastModified), from which the pending timeout counts."""
    if isinstance(stop.result, Incomplete) and written is not None:
        return _Stop(dataclasses.replace(stop.result, since=written))
    return stop


def validate_object_run(
    reads: ObjectReads, loc: S3Location, run: RunObject
) -> ObjectRun | Incomplete | Invalid:
    """Check one listed run, in its layout (a seed run: :mod:`.seed`); never raises for bad
    input. Errors talking to the store (a timeout, a refused connection, a 5xx) are raised: they
    say nothing about the run and the caller retries."""
    try:
        return _validate(reads, loc, run)
    except _Stop as stop:
        result = stop.result
    except RecursionError:
        result = Invalid(f"metadata.json is nested too deeply (limit {MAX_JSON_DEPTH} levels)")
    if isinstance(result, Incomplete):
        return Incomplete(_clean(result.reason), since=result.since)
    assert isinstance(result, Invalid)
    return Invalid(_clean(result.reason), run_id=result.run_id)
