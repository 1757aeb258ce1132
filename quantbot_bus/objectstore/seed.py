"""One seed-layout run in object storage (``<prefix>/YYYY-MM/run_id=<id>/``,
:mod:`quantbot_bus.contract.layout`) against the contract, read with small requests.

The checks, verdicts and reasons are the local validation's (:func:`quantbot_bus.contract.seed.
check_seed`); only the reads differ. There is no directory to scan: the run's objects are those
the reconcile's listing gave (:attr:`~quantbot_bus.objectstore.listing.RunObject.objects`),
listed again (one ListObjectsV2 of the run's prefix) only when that listing had no ``_SUCCESS``
(a pending run looked at again, a failed run), so a ``_SUCCESS`` uploaded since is seen at once.
Then: ``run.json`` in one GET (refused over 8 MiB by its listed size first, as metadata.json
is); of each Parquet file one ranged GET of its last 64 KiB, as for a v1 run
(:func:`quantbot_bus.objectstore.validate._artifact`: magic bytes, footer, rows; sha256 not
verified); for a failed run one ranged GET of the last :data:`~quantbot_bus.contract.seed.
STDERR_TAIL_BYTES` of ``logs/stderr.txt``; and ``_SUCCESS`` itself only when run.json has no
``completed_at`` (the finish time is then the one written in it, else its LastModified).

The fingerprint (``runs_d.fingerprint``, compared when a reconcile suspects a change) digests
run.json's ETag, ``_SUCCESS`` and ``logs/stderr.txt`` (ETag and size) and each artifact's size.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from ..contract import MAX_METADATA_BYTES, ArtifactInfo, Incomplete, Invalid
from ..contract.artifacts import _Declared, missing_file
from ..contract.layout import RUN_JSON, SEED_FOLDERS, STDERR_FILE, SUCCESS_NAME
from ..contract.metadata import decode_metadata
from ..contract.reasons import _Stop
from ..contract.seed import (
    NO_MANIFEST,
    STDERR_TAIL_BYTES,
    SUCCESS_MAX,
    check_seed,
    tail_text,
)
from ..contract.seed_manifest import modified_time, success_text_time
from ..ignore import is_ignored_name
from .listing import Listed, RunObject
from .location import S3Location
from .reads import ObjectReads
from .validate import ObjectRun, _artifact, _Found, dated


def _listed_again(reads: ObjectReads, run: RunObject) -> tuple[Listed, ...]:
    """The run's objects: as the listing gave them when it saw ``_SUCCESS`` (final: the
    producer wrote everything before it), else listed again now."""
    if any(o.rel == SUCCESS_NAME for o in run.objects):
        return run.objects
    prefix = run.run_prefix
    got = reads.list_prefix(prefix)
    if got is None:
        return run.objects
    return tuple(
        Listed(
            obj["Key"][len(prefix) :],
            int(obj["Size"]),
            str(obj.get("ETag", "")).strip('"'),
            obj.get("LastModified"),
        )
        for obj in got
        if obj["Key"].startswith(prefix) and len(obj["Key"]) > len(prefix)
    )


@dataclass
class _ObjectFiles:
    """:class:`~quantbot_bus.contract.seed.SeedFiles` of a run's listed objects, read with
    ranged GETs; keeps what each artifact's read found for the :class:`ObjectRun`."""

    reads: ObjectReads
    loc: S3Location
    run: RunObject
    objects: dict[str, Listed]
    found: list[_Found] = field(default_factory=list)

    def exists(self, rel: str) -> bool:
        return rel in self.objects

    def parquet_files(self) -> list[str]:
        files: list[str] = []
        for folder in SEED_FOLDERS:
            names = []
            for rel in self.objects:
                head, _, leaf = rel.partition("/")
                if head == folder and "/" not in leaf and leaf.endswith(".parquet"):
                    if not is_ignored_name(leaf):
                        names.append(leaf)
            files.extend(f"{folder}/{n}" for n in sorted(names))
        return files

    def read_artifacts(self, declared: list[_Declared]) -> tuple[ArtifactInfo, ...]:
        missing = [d for d in declared if d.file not in self.objects]
        if missing:  # as contract.artifacts._locate_all: the first, naming every missing file
            first = missing_file(missing[0])
            raise _Stop(Incomplete(first.reason, missing=tuple(d.file for d in missing)))
        self.found = [_artifact(self.reads, self.loc, self.run, d) for d in declared]
        return tuple(f.info for f in self.found)

    def stderr_tail(self) -> str | None:
        if STDERR_FILE not in self.objects:
            return None
        tail = self.reads.tail(self.run.run_prefix + STDERR_FILE, STDERR_TAIL_BYTES)
        return None if tail is None else tail_text(tail.data, tail.size)

    def success_time(self) -> str | None:
        got = self.reads.head_bytes(self.run.run_prefix + SUCCESS_NAME, SUCCESS_MAX)
        written = None
        if got is not None:
            written = success_text_time(got[0][:SUCCESS_MAX].decode("utf-8", "replace").strip())
        marker = self.objects.get(SUCCESS_NAME)
        if written is None and marker is not None and marker.modified is not None:
            return modified_time(marker.modified)
        return written


def _fingerprint(etag: str, objects: dict[str, Listed], found: list[_Found]) -> str:
    parts = [etag]
    for name in (SUCCESS_NAME, STDERR_FILE):
        obj = objects.get(name)
        parts.append(f"{name}:" + ("" if obj is None else f"{obj.etag}:{obj.size}"))
    parts += [f"{f.info.file}:{f.info.bytes}" for f in found]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def validate_seed_object(reads: ObjectReads, loc: S3Location, run: RunObject) -> ObjectRun:
    """The valid run ``run`` (a seed :class:`RunObject`) is; raises :class:`_Stop` with the
    rejection or the wait, worded as :func:`quantbot_bus.contract.seed.validate_seed` words
    them. Errors talking to the store are raised as they are."""
    objects = {o.rel: o for o in _listed_again(reads, run)}
    success = SUCCESS_NAME in objects
    manifest = objects.get(RUN_JSON)
    if success and manifest is None:
        raise _Stop(Invalid(NO_MANIFEST))
    not_yet = f"no {RUN_JSON} yet: the run is not finished ({RUN_JSON} is written last)"
    if manifest is None:
        raise _Stop(Incomplete(not_yet))
    too_big = (
        f"{RUN_JSON} is {{}} bytes, over the {MAX_METADATA_BYTES} byte (8 MiB) limit; keep "
        f"large data in Parquet artifacts, not in {RUN_JSON}"
    )
    if manifest.size > MAX_METADATA_BYTES:  # the listing said so: not even fetched
        raise _Stop(Invalid(too_big.format(manifest.size)))
    got = reads.head_bytes(run.metadata_key, MAX_METADATA_BYTES)
    if got is None:
        raise _Stop(Incomplete(not_yet))
    raw, etag, written = got
    if len(raw) > MAX_METADATA_BYTES:
        raise _Stop(Invalid(f"{RUN_JSON} grew over the {MAX_METADATA_BYTES} byte (8 MiB) limit"))
    etag = manifest.etag or etag
    text = decode_metadata(raw, RUN_JSON)
    files = _ObjectFiles(reads, loc, run, objects)
    prefix = run.run_prefix.rstrip("/")
    stamp = objects.get(SUCCESS_NAME) or manifest
    try:
        info = check_seed(
            text,
            prefix,
            success,
            files,
            path=PurePosixPath("/", loc.bucket, prefix),  # type: ignore[arg-type]
            mtime_ns=int(stamp.modified.timestamp() * 1e9) if stamp.modified is not None else 0,
            fingerprint="",
        )
    except _Stop as stop:  # a wait counts from when run.json was written
        raise dated(stop, written) from None
    found = files.found
    return ObjectRun(
        dataclasses.replace(info, fingerprint=_fingerprint(etag, objects, found)),
        loc.uri(prefix),
        tuple(f.uri for f in found),
        tuple(f.footer for f in found),
        tuple(f.body for f in found),
        etag,
    )
