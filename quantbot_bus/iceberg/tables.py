"""The Iceberg catalog and its tables: a SQL catalog on PostgreSQL named ``quantbot``, namespace
``quantbot``, tables ``runs_d``, ``artifacts_f``, ``rejections_f`` and one per artifact table.

Any Iceberg client configured with the same database and warehouse finds the same tables
(docs/scale-out.md gives the Spark, Trino, DuckDB and Polars settings).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import pyarrow as pa

from ..errors import ConfigError

CATALOG_NAME = "quantbot"
NAMESPACE = "quantbot"
#: The snapshot summary property that lists the keys (run ids) a commit registers.
KEYS_PROPERTY = "quantbot.keys"
#: The snapshot summary property that lists the keys (run ids) a commit deletes.
DELETED_PROPERTY = "quantbot.deleted"
#: Our own optimistic retry (reload, drop what is there, commit again) replaces pyiceberg's,
#: which would re-apply the same append on top of another daemon's and register a run twice.
TABLE_PROPERTIES = {
    "commit.retry.num-retries": "0",
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "20",
    # appends merge small manifests, so a table's manifest list stays short after months
    "commit.manifest-merge.enabled": "true",
}

_TS = pa.timestamp("us", tz="UTC")

RUNS_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("run_type", pa.string(), nullable=False),
        ("producer", pa.string()),
        ("producer_version", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        ("created_at", _TS),
        ("started_at", _TS),
        ("finished_at", _TS),
        ("git_commit", pa.string()),
        ("git_branch", pa.string()),
        ("git_dirty", pa.bool_()),
        ("params", pa.string()),
        ("metrics", pa.string()),
        ("metadata", pa.string()),
        pa.field("run_dir", pa.string(), nullable=False),
        pa.field("artifact_count", pa.int32(), nullable=False),
        pa.field("total_rows", pa.int64(), nullable=False),
        pa.field("total_bytes", pa.int64(), nullable=False),
        pa.field("fingerprint", pa.string(), nullable=False),
        ("host", pa.string()),
        ("error", pa.string()),
        ("shape", pa.string()),
        pa.field("registered_at", _TS, nullable=False),
        pa.field("registered_by", pa.string(), nullable=False),
    ]
)

ARTIFACTS_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("name", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("format", pa.string(), nullable=False),
        pa.field("rows", pa.int64(), nullable=False),
        pa.field("bytes", pa.int64(), nullable=False),
        ("sha256", pa.string()),
        ("arrow_schema", pa.string()),
        pa.field("registered_how", pa.string(), nullable=False),  # add_files | rewritten
        pa.field("registered_at", _TS, nullable=False),
    ]
)

REJECTIONS_SCHEMA = pa.schema(
    [
        pa.field("run_dir", pa.string(), nullable=False),
        ("run_id", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
        ("fingerprint", pa.string()),
        pa.field("rejected_at", _TS, nullable=False),
        pa.field("rejected_by", pa.string(), nullable=False),
    ]
)

CORE_TABLES = {
    "runs_d": RUNS_SCHEMA,
    "artifacts_f": ARTIFACTS_SCHEMA,
    "rejections_f": REJECTIONS_SCHEMA,
}


#: Seconds a connection attempt to PostgreSQL may take (libpq's ``connect_timeout``; unless the
#: URI sets its own): an unreachable host then fails a poll, or a stop's claim release, in
#: seconds rather than after the system's TCP timeout of about two minutes.
CONNECT_TIMEOUT_S = 10


def sqlalchemy_uri(uri: str) -> str:
    """``postgresql://...`` as SQLAlchemy wants it (the psycopg2 driver), with a
    ``connect_timeout`` of :data:`CONNECT_TIMEOUT_S` unless the URI has one."""
    if uri.startswith(("postgresql://", "postgres://")):
        uri = "postgresql+psycopg2://" + uri.split("://", 1)[1]
    if uri.startswith("postgresql+"):
        if "connect_timeout=" in uri:
            return uri
        return f"{uri}{'&' if '?' in uri else '?'}connect_timeout={CONNECT_TIMEOUT_S}"
    raise ConfigError(
        f"config field 'catalog_uri' must be postgresql://USER@HOST:PORT/DB, got {uri!r}"
    )


def open_catalog(catalog_uri: str, warehouse: str, file_io: dict[str, str]) -> Any:
    """The SQL catalog (created on first use: pyiceberg makes its two tables)."""
    from pyiceberg.catalog.sql import SqlCatalog
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    props = {
        "uri": sqlalchemy_uri(catalog_uri),
        "warehouse": warehouse.rstrip("/"),
        "pool_pre_ping": "true",
        **file_io,
    }
    for attempt in range(3):
        try:
            return SqlCatalog(CATALOG_NAME, **props)
        except (IntegrityError, ProgrammingError):
            # two daemons opening a new database at once both create pyiceberg's tables; the
            # one whose CREATE TABLE lost (a duplicate key in PostgreSQL's catalog, or "already
            # exists") finds them made when it opens again
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def identifier(table: str) -> str:
    return f"{NAMESPACE}.{table}"


def ensure_table(
    catalog: Any, table: str, schema: pa.Schema, *, partition_by: str | None = None
) -> Any:
    """Load ``table``, creating it (with :data:`TABLE_PROPERTIES` and an identity partition on
    ``partition_by``) if no daemon has yet. Safe when two daemons race to create it."""
    from pyiceberg.exceptions import (
        NamespaceAlreadyExistsError,
        NoSuchTableError,
        TableAlreadyExistsError,
    )
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.transforms import IdentityTransform

    try:
        return catalog.load_table(identifier(table))
    except NoSuchTableError:
        pass
    from sqlalchemy.exc import IntegrityError

    try:
        catalog.create_namespace(NAMESPACE)
    except (NamespaceAlreadyExistsError, IntegrityError):  # another daemon made it just now
        pass
    from pyiceberg.io.pyarrow import _pyarrow_to_schema_without_ids
    from pyiceberg.schema import assign_fresh_schema_ids

    iceberg_schema = assign_fresh_schema_ids(_pyarrow_to_schema_without_ids(schema))
    spec = PartitionSpec()
    if partition_by is not None:
        source = iceberg_schema.find_field(partition_by)
        spec = PartitionSpec(
            PartitionField(
                source_id=source.field_id,
                field_id=1000,
                transform=IdentityTransform(),
                name=partition_by,
            )
        )
    props = dict(TABLE_PROPERTIES)
    props["schema.name-mapping.default"] = iceberg_schema.name_mapping.model_dump_json()
    try:
        return catalog.create_table(
            identifier(table), schema=iceberg_schema, partition_spec=spec, properties=props
        )
    except TableAlreadyExistsError:
        return catalog.load_table(identifier(table))


def keys_of(snapshot: Any, prop: str = KEYS_PROPERTY) -> list[str]:
    """The keys a snapshot's commit registered (its :data:`KEYS_PROPERTY`), or deleted with
    ``prop=DELETED_PROPERTY``."""
    summary = snapshot.summary
    if summary is None:
        return []
    raw = summary.additional_properties.get(prop)
    if not raw:
        return []
    return list(_parse_keys(raw))


@lru_cache(maxsize=1024)
def _parse_keys(raw: str) -> tuple[str, ...]:
    """A summary property's JSON list of keys. Cached by its text: every commit looks at every
    retained snapshot's keys (:func:`key_changes`), and a snapshot's summary never changes, so
    each is parsed once per process instead of once per commit."""
    value = json.loads(raw)
    return tuple(str(k) for k in value) if isinstance(value, list) else ()


def key_changes(snapshots: Iterable[Any]) -> tuple[set[str], set[str]]:
    """The keys ``snapshots`` leave present and those they leave deleted, each key judged by
    its last mention (snapshots in commit order)."""
    present: set[str] = set()
    deleted: set[str] = set()
    for snap in sorted(snapshots, key=lambda s: (s.sequence_number or 0, s.timestamp_ms)):
        added, gone = keys_of(snap), keys_of(snap, DELETED_PROPERTY)
        present.update(added)
        deleted.difference_update(added)
        present.difference_update(gone)
        deleted.update(gone)
    return present, deleted
