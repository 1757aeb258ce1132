"""Everything the tests build: run directories, catalogs, and the one way to wait for something.

Run directories (real Parquet written by pyarrow, then ``metadata.json`` written atomically):

- :func:`make_run` — a complete, valid v1 run ``root/run_type/run_id`` with the given tables
  (``{name: pyarrow.Table or row count}``), metadata ``overrides`` and an optional ``mutate(meta,
  run_dir)`` hook that may break it on purpose before ``metadata.json`` is written.
- :func:`make_run_from_bytes` — a run whose one file holds the given bytes (or does not exist
  yet) while ``metadata.json`` declares other bytes or rows: incomplete, corrupt or crafted runs.
- :func:`corrupt_file` — junk of the same size in place of a run's file (a broken run).
- :func:`make_ts_run` — a run exactly as the quantbot TypeScript producer writes it.
- :class:`RunFactory` — thousands of complete runs quickly (one Parquet file, hard-linked).
- :func:`add_path_run`, :func:`add_policy_run`, :func:`add_optimize_run` — runs holding the
  tables the exports consolidate (realistic columns, seeded random values).
- the parts they are made of: :func:`sample_table`, :func:`write_parquet`,
  :func:`artifact_entry`, :func:`file_entry`, :func:`v1_metadata`, :func:`ts_metadata`,
  :func:`write_metadata`, :func:`crafted_parquet`.

Catalogs: :func:`make_catalog` (a working catalog holding the runs under the root, published),
:func:`sync` (the one-shot ``quantbot-bus sync``: catalog, publication and exports),
:func:`publish_catalog`; read back with :func:`snapshot_query`, :func:`live_run_ids`,
:func:`live_count` and :func:`open_rejections`. Catalog rows without files behind them:
:func:`run_info` (a ``RunInfo`` built directly), read back with :func:`catalog_rows`.

The validator's answer, checked: :func:`assert_invalid`, :func:`assert_incomplete`.
A ``mutate`` hook that sets one metadata field by its dotted path: :func:`set_field`.

Waiting: :func:`wait_for` polls a condition until a deadline and fails naming what it waited for.
"""

from __future__ import annotations

from .catalogs import (
    RUN_INFO_SCHEMA,
    assert_incomplete,
    assert_invalid,
    catalog_rows,
    cli,
    live_count,
    live_run_ids,
    make_catalog,
    open_rejections,
    publish_catalog,
    run_info,
    snapshot_query,
    sync,
)
from .crafted import (
    crafted_parquet,
)
from .export_runs import (
    CALL_RESULT_COLUMNS,
    CALLERS,
    CALLS,
    FRONTIER,
    FRONTIER_COLUMNS,
    PATH,
    PATH_COLUMNS,
    POLICY,
    POLICY_COLUMNS,
    add_optimize_run,
    add_path_run,
    add_policy_run,
    frontier_table,
    path_metrics,
    policy_tables,
)
from .runs import (
    DEFAULT_TIME,
    V1_REQUIRED,
    Mutator,
    RunFactory,
    artifact_entry,
    corrupt_file,
    file_entry,
    make_run,
    make_run_from_bytes,
    make_ts_run,
    sample_table,
    set_field,
    ts_metadata,
    v1_metadata,
    write_metadata,
    write_parquet,
)
from .waiting import (
    DEADLINE_S,
    SOAK,
    wait_for,
)

__all__ = [
    "CALLERS",
    "CALLS",
    "CALL_RESULT_COLUMNS",
    "DEADLINE_S",
    "DEFAULT_TIME",
    "FRONTIER",
    "FRONTIER_COLUMNS",
    "Mutator",
    "PATH",
    "PATH_COLUMNS",
    "POLICY",
    "POLICY_COLUMNS",
    "RUN_INFO_SCHEMA",
    "RunFactory",
    "SOAK",
    "V1_REQUIRED",
    "add_optimize_run",
    "add_path_run",
    "add_policy_run",
    "artifact_entry",
    "assert_incomplete",
    "assert_invalid",
    "catalog_rows",
    "cli",
    "corrupt_file",
    "crafted_parquet",
    "file_entry",
    "frontier_table",
    "live_count",
    "live_run_ids",
    "make_catalog",
    "make_run",
    "make_run_from_bytes",
    "make_ts_run",
    "open_rejections",
    "path_metrics",
    "policy_tables",
    "publish_catalog",
    "run_info",
    "sample_table",
    "set_field",
    "snapshot_query",
    "sync",
    "ts_metadata",
    "v1_metadata",
    "wait_for",
    "write_metadata",
    "write_parquet",
]
