"""Reading the Iceberg tables the way the CLI reads the DuckDB publication.

:func:`open_iceberg_reader` gives an in-memory DuckDB connection whose ``catalog.runs_d``,
``catalog.artifacts_f`` and ``catalog.rejections_f`` views have the DuckDB catalog's columns, and
whose ``exports.<table>`` views are the artifact tables, so ``runs``, ``show``, ``query`` and
``stats`` run unchanged on either backend. The artifact tables carry the local export tables'
names (:func:`quantbot_bus.exports.store.export_table_name`, applied when they are registered):
a seed artifact ``truth/paths`` is ``exports.truth__paths`` on both backends. Each view is a pyarrow dataset over the data files of
the table's current snapshot (pyiceberg plans the files; DuckDB reads only the columns and row
groups a query needs).
"""

from __future__ import annotations

from typing import Any

import duckdb

from ..config import Config
from ..errors import CatalogError, CatalogMissingError
from ..objectstore.location import S3Settings
from ..sqltext import q
from .tables import CORE_TABLES, NAMESPACE, open_catalog

#: The DuckDB catalog's columns the Iceberg tables do not have, as SQL over the Iceberg ones.
_RUNS_EXTRA = "registered_at AS first_registered_at, NULL::TIMESTAMP AS deleted_at"
#: ``rejections_f`` holds one row per run directory and reason, as each was first recorded; the
#: DuckDB catalog one row per run directory, resolved once the directory registers. So: the rows
#: of a directory folded into one (its latest reason; first and last recorded, how many), resolved
#: at the ``registered_at`` of a ``runs_d`` row of that directory registered since the latest.
_REJECTIONS_SQL = """
WITH g AS (
    SELECT run_dir, arg_max(run_id, rejected_at) AS run_id, arg_max(reason, rejected_at) AS reason,
           min(rejected_at) AS first_seen_at, max(rejected_at) AS last_seen_at,
           count(*) AS attempts, arg_max(fingerprint, rejected_at) AS fingerprint
    FROM {src} GROUP BY run_dir
)
SELECT g.run_dir, g.run_id, g.reason, g.first_seen_at, g.last_seen_at, g.attempts,
       (SELECT min(r.registered_at) FROM {runs} r
        WHERE r.run_dir = g.run_dir AND r.registered_at >= g.last_seen_at) AS resolved_at,
       g.fingerprint
FROM g
"""


def table_dataset(table: Any, fs: Any) -> Any:
    """A pyarrow dataset of ``table``'s current data files, in the table's schema."""
    import pyarrow.dataset as ds

    paths = [task.file.file_path.removeprefix("s3://") for task in table.scan().plan_files()]
    return ds.dataset(paths, schema=table.schema().as_arrow(), format="parquet", filesystem=fs)


def open_iceberg_reader(config: Config) -> duckdb.DuckDBPyConnection:
    settings = S3Settings.from_env()
    try:
        catalog = open_catalog(
            config.catalog_uri, config.warehouse, settings.pyiceberg_properties()
        )
        names = [ident[-1] for ident in catalog.list_tables(NAMESPACE)]
    except Exception as exc:
        if type(exc).__name__ == "NoSuchNamespaceError":
            raise CatalogMissingError(
                f"no Iceberg tables in {config.catalog_uri} yet: start the daemon "
                '(catalog = "iceberg") or run `quantbot-bus sync`'
            ) from None
        raise CatalogError(f"cannot read the Iceberg catalog {config.catalog_uri}: {exc}") from exc
    if "runs_d" not in names:
        raise CatalogMissingError(
            "the Iceberg catalog has no runs_d table yet: nothing is registered"
        )
    fs = settings.arrow_filesystem()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("CREATE SCHEMA catalog")
    con.execute("CREATE SCHEMA exports")
    for name in names:
        con.register(
            f"_iceberg_{name}", table_dataset(catalog.load_table(f"{NAMESPACE}.{name}"), fs)
        )
    for name in names:
        src = q(f"_iceberg_{name}")
        # identifiers quoted by q(); the rest is this module's own SQL
        if name == "runs_d":
            sql = f"CREATE VIEW catalog.runs_d AS SELECT *, {_RUNS_EXTRA} FROM {src}"  # noqa: S608
        elif name == "rejections_f":
            rejections = _REJECTIONS_SQL.format(src=src, runs=q("_iceberg_runs_d"))
            sql = f"CREATE VIEW catalog.rejections_f AS {rejections}"
        elif name in CORE_TABLES:
            sql = f"CREATE VIEW catalog.{q(name)} AS SELECT * FROM {src}"  # noqa: S608
        else:
            sql = f"CREATE VIEW exports.{q(name)} AS SELECT * FROM {src}"  # noqa: S608
        con.execute(sql)
    return con
