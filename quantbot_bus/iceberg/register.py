"""A batch of validated runs into the Iceberg tables, each run exactly once.

Order: every artifact table first, then ``artifacts_f``, then ``runs_d``: a run is registered
when its ``runs_d`` row is committed, and by then its rows are in every other table. A daemon
killed half-way leaves artifact rows whose runs ``runs_d`` lacks; whichever daemon registers the
run next finds those keys in the tables' snapshots and does not append them again.

An artifact's table is named as its local export table
(:func:`quantbot_bus.exports.store.export_table_name`: a seed artifact ``truth/paths`` goes to
``truth__paths``; Iceberg names hold no ``/``); ``artifacts_f.name`` keeps the artifact's name.
Each table gets one commit per batch. An artifact file is registered where it lies (pyiceberg
``add_files``, no copy) when it carries a ``run_id`` column holding its run's id; otherwise it is
rewritten into the warehouse with that column added (logged as ``iceberg.rewrite`` with the
reason). An artifact whose columns cannot join its table's (a string where the table has
numbers) rejects the run before anything of it is committed.
"""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import structlog

from ..exports.store import export_table_name
from ..objectstore.reads import Buckets
from ..objectstore.validate import ObjectRun
from ..timeutil import utc_now
from .commit import append_once
from .rows import Rejected, artifact_rows, runs_rows
from .tables import (
    ARTIFACTS_SCHEMA,
    CORE_TABLES,
    REJECTIONS_SCHEMA,
    RUNS_SCHEMA,
    ensure_table,
    identifier,
)

log = structlog.get_logger("quantbot_bus.iceberg")

#: Artifact files read at once when a batch must rewrite them.
READ_THREADS = 8


@dataclass
class Registered:
    """What one batch did: run ids this daemon registered, run ids another daemon had
    registered first, and runs rejected while registering (schema conflicts)."""

    registered: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


@dataclass(frozen=True)
class _Item:
    """One artifact file of one run, bound for its table."""

    run_id: str
    uri: str
    size: int
    footer: Any  # pyarrow.parquet.FileMetaData, read when the run was validated
    body: bytes | None = None  # the whole file, when validation fetched all of it
    artifact: str = ""  # the artifact's name (artifacts_f.name)

    @property
    def schema(self) -> pa.Schema:
        return self.footer.schema.to_arrow_schema()


class _Plan:
    """What building data files needs of one table's metadata, worked out once per commit
    attempt instead of once per file: pyiceberg's ``Transaction.table_metadata`` deep-copies the
    whole metadata (every retained snapshot) on each access, and the statistics plan and the
    Parquet column mapping walk the schema."""

    def __init__(self, metadata: Any) -> None:
        from pyiceberg.io.pyarrow import compute_statistics_plan, parquet_path_to_id_mapping

        self.metadata = metadata
        self.schema = metadata.schema()
        self.spec = metadata.spec()
        self.stats_columns = compute_statistics_plan(self.schema, metadata.properties)
        self.column_mapping = parquet_path_to_id_mapping(self.schema)
        self._arrow: pa.Schema | None = None

    @property
    def arrow_schema(self) -> pa.Schema:
        if self._arrow is None:
            self._arrow = self.schema.as_arrow()
        return self._arrow

    def data_file(self, item: _Item) -> Any:
        """The Iceberg data file of ``item`` registered in place, built from its footer (what
        pyiceberg's ``add_files`` computes after reading the footer once more)."""
        from pyiceberg.io.pyarrow import data_file_statistics_from_parquet_metadata
        from pyiceberg.manifest import DataFile, DataFileContent, FileFormat

        stats = data_file_statistics_from_parquet_metadata(
            parquet_metadata=item.footer,
            stats_columns=self.stats_columns,
            parquet_column_mapping=self.column_mapping,
        )
        return DataFile.from_args(
            content=DataFileContent.DATA,
            file_path=item.uri,
            file_format=FileFormat.PARQUET,
            partition=stats.partition(self.spec, self.schema),
            file_size_in_bytes=item.size,
            sort_order_id=None,
            spec_id=self.metadata.default_spec_id,
            equality_ids=None,
            key_metadata=None,
            **stats.to_serialized_dict(),
        )


class Registrar:
    """Registers batches into the tables of one catalog; ``buckets`` reads the artifact objects
    and writes the rewritten ones (obstore, :class:`~quantbot_bus.objectstore.reads.Buckets`)."""

    def __init__(self, catalog: Any, buckets: Buckets, daemon_id: str) -> None:
        self.catalog = catalog
        self.buckets = buckets
        self.daemon_id = daemon_id
        self._tables: dict[str, Any] = {}
        #: (table, file schema) pairs that fitted: a table only ever gains columns (by name)
        #: or widens a type, so a file schema that fitted once still fits and is not checked
        #: against a freshly loaded table again (a load per table and batch)
        self._fits: set[tuple[str, str]] = set()

    def table(self, name: str, schema: pa.Schema, partition_by: str | None = None) -> Any:
        if name not in self._tables:
            self._tables[name] = ensure_table(self.catalog, name, schema, partition_by=partition_by)
        return self._tables[name]

    def table_fresh(self, name: str) -> Any:
        """Table ``name`` as the catalog has it now."""
        return self.catalog.load_table(identifier(name))

    def core(self) -> None:
        self.table("runs_d", RUNS_SCHEMA, "run_type")
        self.table("artifacts_f", ARTIFACTS_SCHEMA)
        self.table("rejections_f", REJECTIONS_SCHEMA)

    # ------------------------------------------------------------------ artifact tables
    def _fit(self, name: str, schema: pa.Schema) -> str | None:
        """Make the Iceberg table ``name`` accept files of ``schema`` (creating it, or adding
        new columns by name); returns a reason when it cannot."""
        from pyiceberg.io.pyarrow import _check_pyarrow_schema_compatible

        wanted = (
            schema if "run_id" in schema.names else schema.append(pa.field("run_id", pa.string()))
        )
        table = (
            self.catalog.load_table(identifier(name))
            if name in self._tables
            else self.table(name, wanted, "run_id")
        )
        try:
            _check_pyarrow_schema_compatible(table.schema(), wanted)
            return None
        except ValueError:
            pass
        try:
            with table.update_schema() as update:
                update.union_by_name(wanted)
            self._tables[name] = self.catalog.load_table(identifier(name))
            log.info("iceberg.schema_evolved", table=name, columns=wanted.names)
            return None
        except Exception as exc:  # noqa: BLE001 - pyiceberg raises ValueError, ValidationError...
            if _transient(exc):  # a lost commit or the catalog away: not the run's fault
                raise
            return (
                f"artifact table {name!r}: its columns do not fit the Iceberg table "
                f"{identifier(name)} ({type(exc).__name__}: {str(exc)[:300]}); keep a column's "
                "type across runs, or write a new table name"
            )

    def _stage_artifacts(
        self, name: str, items: list[_Item], how: dict[tuple[str, str], str]
    ) -> Any:
        """The ``act`` that appends ``items`` of table ``name``: in place where the file's
        ``run_id`` column holds its run's id, else rewritten with that column."""
        by_key = {it.run_id: it for it in items}
        # rewritten files by (run id, schema id), kept across attempts: a lost race (whose
        # next attempt has the same schema) does not write them again
        written: dict[tuple[str, int], Any] = {}

        def act(tx: Any, keys: list[str], props: dict[str, str]) -> None:
            plan = _Plan(tx.table_metadata)  # one deep copy of the metadata per attempt
            in_place, rewrite = [], []
            reasons: dict[str, list[str]] = defaultdict(list)
            for k in keys:
                item = by_key[k]
                reason = None
                if not _has_run_id(item.schema):
                    reason = "the file has no string run_id column"
                else:
                    try:
                        data_file = plan.data_file(item)
                        same = data_file.partition[0] == k
                    except ValueError:  # several run_id values: no single partition
                        same = False
                    if not same:
                        reason = "the file's run_id column does not hold this run's id alone"
                if reason is None:
                    in_place.append(data_file)
                    how[(k, item.artifact)] = "add_files"
                else:
                    rewrite.append(item)
                    how[(k, item.artifact)] = "rewritten"
                    reasons[reason].append(k)
            for reason, run_ids in reasons.items():
                log.info(
                    "iceberg.rewrite",
                    table=name,
                    runs=len(run_ids),
                    first=run_ids[0],
                    reason=reason,
                )
            if rewrite:
                with ThreadPoolExecutor(READ_THREADS) as pool:
                    in_place += pool.map(lambda it: self._rewrite(plan, it, written), rewrite)
            with tx.update_snapshot(snapshot_properties=props).merge_append() as append:
                for data_file in in_place:
                    append.append_data_file(data_file)

        return act

    def _read(self, item: _Item) -> pa.Table:
        import pyarrow.parquet as pq

        body = item.body
        if body is None:
            reads, key = self.buckets.at(item.uri)
            body = reads.get(key)
        return pq.ParquetFile(pa.BufferReader(body)).read()  # (read_table: a dataset, slower)

    def _rewrite(self, plan: _Plan, item: _Item, written: dict[tuple[str, int], Any]) -> Any:
        """``item``'s rows with its ``run_id``, written as one file below the table's ``data/``
        (one file per run, as in place); returns its Iceberg data file."""
        import uuid
        from urllib.parse import quote

        import pyarrow.parquet as pq

        metadata = plan.metadata
        key = (item.run_id, metadata.current_schema_id)
        if key in written:
            return written[key]
        rows = _with_run_id(self._read(item), item.run_id, plan.arrow_schema)
        sink = pa.BufferOutputStream()
        pq.write_table(rows, sink, compression="zstd")
        body = sink.getvalue().to_pybytes()
        uri = f"{metadata.location}/data/run_id={quote(item.run_id, safe='')}/{uuid.uuid4().hex}.parquet"
        reads, object_key = self.buckets.at(uri)
        reads.put(object_key, body)
        footer = pq.read_metadata(pa.BufferReader(body))
        written[key] = plan.data_file(_Item(item.run_id, uri, len(body), footer))
        return written[key]

    # ------------------------------------------------------------------ the batch
    def register(self, runs: list[ObjectRun]) -> Registered:
        out = Registered()
        self.core()
        now = utc_now()
        # 1. every artifact file's schema (from the footer read at validation), fitted to its
        # table once per distinct schema (once per process, when it fits); a misfit rejects
        # its run
        per_table: dict[str, list[_Item]] = defaultdict(list)
        bad: dict[str, str] = {}
        fitted: dict[tuple[str, str], str | None] = {}
        for r in runs:
            bodies = r.bodies or (None,) * len(r.footers)
            for a, uri, footer, body in zip(
                r.info.artifacts, r.artifact_uris, r.footers, bodies, strict=True
            ):
                table = export_table_name(a.name)
                if table.lower() in CORE_TABLES:
                    bad.setdefault(r.info.run_id, _reserved(a.name))
                    continue
                item = _Item(r.info.run_id, uri, a.bytes, footer, body, a.name)
                key = (table, a.arrow_schema)
                if key not in fitted:
                    fitted[key] = None if key in self._fits else self._fit(table, item.schema)
                    if fitted[key] is None:
                        self._fits.add(key)
                if fitted[key] is not None:
                    bad.setdefault(r.info.run_id, str(fitted[key]))
                per_table[table].append(item)
        good = [r for r in runs if r.info.run_id not in bad]
        out.rejected = [
            Rejected(r.uri, r.info.run_id, bad[r.info.run_id]) for r in runs if r.info.run_id in bad
        ]
        good_ids = {r.info.run_id for r in good}
        how: dict[tuple[str, str], str] = {}
        # 2. artifact tables, 3. artifacts_f, 4. runs_d: one commit each
        for name, items in sorted(per_table.items()):
            items = [it for it in items if it.run_id in good_ids]
            if items:
                act = self._stage_artifacts(name, items, how)
                append_once(self.catalog, name, [it.run_id for it in items], act)
        rows = artifact_rows(good, how, now)
        append_once(
            self.catalog,
            "artifacts_f",
            [r.info.run_id for r in good],
            lambda tx, keys, props: tx.append(_only(rows, keys), snapshot_properties=props),
        )
        run_rows = runs_rows(good, self.daemon_id, now)
        done = append_once(
            self.catalog,
            "runs_d",
            [r.info.run_id for r in good],
            lambda tx, keys, props: tx.append(_only(run_rows, keys), snapshot_properties=props),
        )
        out.registered = done
        out.already = sorted(good_ids - set(done))
        return out


def _transient(exc: Exception) -> bool:
    """A failure that says nothing about the run: another daemon's commit won, or PostgreSQL or
    the store could not be reached."""
    from pyiceberg.exceptions import CommitFailedException
    from sqlalchemy.exc import DBAPIError

    return isinstance(exc, CommitFailedException | DBAPIError | OSError)


def _only(rows: pa.Table, keys: list[str]) -> pa.Table:
    import pyarrow.compute as pc

    return rows.filter(pc.is_in(rows.column("run_id"), value_set=pa.array(keys, pa.string())))


def _reserved(name: str) -> str:
    return (
        f"artifact name {name!r} is the name of one of the catalog's own Iceberg tables "
        f"({', '.join(CORE_TABLES)}); give the table another name"
    )


def _has_run_id(schema: pa.Schema) -> bool:
    return "run_id" in schema.names and schema.field("run_id").type in (
        pa.string(),
        pa.large_string(),
    )


def _with_run_id(data: pa.Table, run_id: str, target: pa.Schema) -> pa.Table:
    """``data`` with a ``run_id`` column of ``run_id``, in the table's column order and types
    (columns it lacks are null)."""
    if "run_id" in data.column_names:
        data = data.drop_columns(["run_id"])
    data = data.append_column("run_id", pa.array([run_id] * data.num_rows, pa.string()))
    cols = []
    for f in target:
        if f.name in data.column_names:
            cols.append(data.column(f.name).cast(f.type))
        else:
            cols.append(pa.nulls(data.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=target)
