"""Snapshot expiry and orphan-file cleanup for the tables of namespace ``quantbot``, so a catalog
that runs for months does not grow without bound.

Every commit adds a snapshot, a manifest list, a manifest and a metadata file, and every
metadata file repeats the whole snapshot list. :func:`expire_snapshots` drops old snapshots from
the metadata (pyiceberg 0.12 only commits new metadata: it deletes no manifest list, manifest or
data file); :func:`remove_orphan_files` then deletes the objects under the table's location that
nothing retained refers to any more (lost commits' files too).
:func:`maintain` does both for every table, after compacting the core tables' small data files
(:mod:`quantbot_bus.iceberg.compaction`); :class:`Upkeep` is the daemon's hourly round, on
connections of its own. Data files registered in place (``add_files``) lie
in the producers' run prefixes, outside every table location, and are never touched.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import structlog

from ..config import Config
from ..objectstore.location import S3Settings, delete_objects
from .compaction import compact
from .tables import CORE_TABLES, NAMESPACE

log = structlog.get_logger("quantbot_bus.iceberg")

#: The newest snapshots every table keeps, whatever their age. The exactly-once check
#: (:func:`~quantbot_bus.iceberg.commit.present_keys`) looks for keys in retained snapshots, so
#: this stays far above the number of commits that can race at once.
KEEP_SNAPSHOTS = 100
#: Snapshots older than this (seconds) and not among the newest :data:`KEEP_SNAPSHOTS` expire.
MAX_SNAPSHOT_AGE_S = 3600.0
#: An unreferenced object younger than this (seconds) is never deleted: it may belong to a commit
#: in flight (written, not yet swapped in) or to one that just lost a race and will retry.
ORPHAN_MIN_AGE_S = 3600.0
#: The sub-prefixes of a table location that pyiceberg writes to.
TABLE_PREFIXES = ("metadata/", "data/")


def expirable(
    snapshots: list[Any], *, keep: int, cutoff_ms: float, protected: set[int]
) -> list[int]:
    """The ids of ``snapshots`` to expire: the oldest in commit order (sequence number), up to
    the first one to keep (among the newest ``keep``, not older than ``cutoff_ms``, or the head
    of a branch or tag). What stays is always every snapshot after some point in commit order,
    whatever the clocks of the daemons that committed them said: a key's last mention
    (:func:`~quantbot_bus.iceberg.tables.key_changes`) is never a mention that an expired later
    one undid, such as an append whose delete was expired."""
    in_order = sorted(snapshots, key=lambda s: (s.sequence_number or 0, s.timestamp_ms))
    expired: list[int] = []
    for snap in in_order[: max(len(in_order) - max(keep, 0), 0)]:
        if snap.timestamp_ms >= cutoff_ms or snap.snapshot_id in protected:
            break
        expired.append(snap.snapshot_id)
    return expired


def expire_snapshots(
    table: Any,
    *,
    keep: int = KEEP_SNAPSHOTS,
    max_age_s: float = MAX_SNAPSHOT_AGE_S,
    now: float | None = None,
) -> int:
    """Expire the oldest snapshots of ``table`` (:func:`expirable`: older than ``max_age_s``,
    not among its newest ``keep`` nor the head of a branch or tag, so never the current one);
    returns how many.

    A commit lost to another daemon's (``CommitFailedException``) is not an error: it is logged
    and 0 returned, and the next run tries again."""
    from pyiceberg.exceptions import CommitFailedException

    now = time.time() if now is None else now
    protected = {ref.snapshot_id for ref in table.metadata.refs.values()}
    snapshots = list(table.snapshots())
    expired = expirable(
        snapshots, keep=keep, cutoff_ms=(now - max_age_s) * 1000, protected=protected
    )
    if not expired:
        return 0
    try:
        table.maintenance.expire_snapshots().by_ids(expired).commit()
    except CommitFailedException as exc:
        log.info("iceberg.expire_lost", table=_name(table), error=str(exc)[:200])
        return 0
    log.info(
        "iceberg.expired",
        table=_name(table),
        expired=len(expired),
        kept=len(snapshots) - len(expired),
    )
    return len(expired)


def _name(table: Any) -> str:
    return ".".join(table.name())


def _bucket_key(uri: str) -> tuple[str, str] | None:
    """``(bucket, key)`` of an ``s3://`` (or ``s3a://``, ``s3n://``) URI; None for others."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("s3", "s3a", "s3n") or not parsed.netloc:
        return None
    return parsed.netloc, parsed.path.lstrip("/")


def referenced_files(table: Any) -> set[str]:
    """Every file the table's metadata refers to, as ``s3://bucket/key``: the current metadata
    file, the previous ones in its metadata log, statistics files, and for each retained
    snapshot its manifest list, the manifests in it and every file those manifests list
    (deleted entries included, to err on the safe side)."""
    md = table.metadata
    paths = {table.metadata_location, *(e.metadata_file for e in md.metadata_log)}
    paths.update(f.statistics_path for f in md.statistics)
    paths.update(f.statistics_path for f in md.partition_statistics)
    manifests: dict[str, Any] = {}
    for snap in table.snapshots():
        paths.add(snap.manifest_list)
        for manifest in snap.manifests(table.io):
            manifests.setdefault(manifest.manifest_path, manifest)
    for path, manifest in manifests.items():
        paths.add(path)
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=False):
            paths.add(entry.data_file.file_path)
    return {f"s3://{bk[0]}/{bk[1]}" for p in paths if (bk := _bucket_key(p)) is not None}


def _list(client: Any, bucket: str, prefix: str) -> Iterator[dict[str, Any]]:
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        yield from page.get("Contents", [])


def remove_orphan_files(
    table: Any, client: Any, *, min_age_s: float = ORPHAN_MIN_AGE_S, now: float | None = None
) -> int:
    """Delete the objects under the ``metadata/`` and ``data/`` prefixes of ``table``'s location
    that :func:`referenced_files` does not name and that are older than ``min_age_s`` (by their
    S3 ``LastModified``); returns how many were deleted. ``client`` is a boto3 S3 client
    (``S3Settings.client()``). Keys outside the table location are never listed, so never
    deleted. The table is reloaded first, so the newest commit's files count as referenced."""
    now = time.time() if now is None else now
    table.refresh()
    location = _bucket_key(table.location().rstrip("/") + "/")
    if location is None:
        raise ValueError(f"{_name(table)}: location {table.location()!r} is not on S3")
    bucket, base = location
    referenced = referenced_files(table)
    doomed: list[str] = []
    for sub in TABLE_PREFIXES:
        for obj in _list(client, bucket, base + sub):
            key = obj["Key"]
            if key.endswith("/"):  # a directory marker (pyarrow makes them), not a file
                continue
            young = now - obj["LastModified"].timestamp() < min_age_s
            if not young and f"s3://{bucket}/{key}" not in referenced:
                doomed.append(key)
    deleted = delete_objects(client, bucket, doomed)
    log.info(
        "iceberg.orphans_removed",
        table=_name(table),
        removed=deleted,
        referenced=len(referenced),
    )
    return deleted


def maintain(
    catalog: Any, settings: S3Settings, *, now: float | None = None
) -> dict[str, dict[str, int]]:
    """:func:`~quantbot_bus.iceberg.compaction.compact` (the core tables), then
    :func:`expire_snapshots` and :func:`remove_orphan_files` (with the default limits) for
    every table of namespace ``quantbot``; returns ``{table: {"expired": n, "orphans_removed":
    m}}`` (and ``"compacted"``: files, when a core table was compacted). A table that fails is
    logged (``iceberg.maintenance_failed``), left out of the result, and does not stop the
    others."""
    from pyiceberg.exceptions import NoSuchNamespaceError

    try:
        identifiers = catalog.list_tables(NAMESPACE)
    except NoSuchNamespaceError:
        return {}
    client = settings.client()
    out: dict[str, dict[str, int]] = {}
    for ident in sorted(identifiers):
        name = ident[-1]
        compacted = 0
        if name in CORE_TABLES:  # its own failure: expiry and cleanup still run
            try:
                compacted = compact(catalog, name)
            except Exception as exc:  # noqa: BLE001 - logged; the next hour tries again
                log.warning(
                    "iceberg.maintenance_failed",
                    table=".".join(ident),
                    step="compaction",
                    error=f"{type(exc).__name__}: {str(exc)[:300]}",
                )
        try:
            table = catalog.load_table(ident)
            expired = expire_snapshots(table, now=now)
            removed = remove_orphan_files(table, client, now=now)
        except Exception as exc:  # noqa: BLE001 - one table's trouble must not stop the rest
            log.warning(
                "iceberg.maintenance_failed",
                table=".".join(ident),
                error=f"{type(exc).__name__}: {str(exc)[:300]}",
            )
            continue
        out[name] = {"expired": expired, "orphans_removed": removed}
        if compacted:
            out[name]["compacted"] = compacted
    return out


class Upkeep:
    """The daemon's hourly upkeep of the shared catalog: :func:`maintain` on every table, expired
    claims, old completion markers. Each :meth:`run` opens a catalog connection and an S3 client of
    its own and closes them, so it can run in a thread beside the polls (whose connections it
    never shares)."""

    def __init__(self, config: Config, settings: S3Settings) -> None:
        self.config, self.settings = config, settings

    def run(self) -> dict[str, dict[str, int]]:
        """Everything :func:`maintain` returns, plus ``quantbot_claims`` and ``_inbox`` (expired
        claims and markers). Per-table failures are logged inside; opening the catalog raises."""
        from ..objectstore.listing import Lister
        from .claims import Claims, claim_owner
        from .tables import open_catalog

        loc = self.config.s3_root
        assert loc is not None, "Upkeep needs an s3:// root (Config.validate checks it)"
        catalog = open_catalog(
            self.config.catalog_uri, self.config.warehouse, self.settings.pyiceberg_properties()
        )
        try:
            done = maintain(catalog, self.settings)
            try:
                claims = Claims(
                    catalog.engine, claim_owner(self.config.state_dir), self.config.claim_lease_s
                )
                done["quantbot_claims"] = {"expired": claims.expire()}
            except Exception as exc:  # noqa: BLE001 - logged; the next hour tries again
                log.warning(
                    "iceberg.maintenance_failed", table="quantbot_claims", error=str(exc)[:300]
                )
            try:
                done["_inbox"] = {"expired": Lister(self.settings.client(), loc).expire_markers()}
            except Exception as exc:  # noqa: BLE001 - logged; the next hour tries again
                log.warning("iceberg.maintenance_failed", table="_inbox", error=str(exc)[:300])
            return done
        finally:
            catalog.engine.dispose()
