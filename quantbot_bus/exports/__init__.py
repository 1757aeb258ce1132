"""The exports: one dataset per artifact table, the summary files, the user ``[[exports]]``.

``refresh(config, con, *, max_runs=500) -> dict`` — ``con`` a cursor on the working catalog —
brings the export state and the artifact tables' segments up to date in one transaction and
returns the status written to ``exports/_export_status.json``; its work grows with the runs that
changed, not with history. ``write_files(config, con, gens, *, kind, force=False)`` writes the
whole-file exports — the summary ``<name>.parquet`` files from the state (``kind="summary"``,
``con`` the working catalog) and the ``[[exports]]`` of the config (``kind="user"``, ``con`` a
reader of the publication, ``None`` when none is configured). The publication
(:mod:`quantbot_bus.publication`) links the segments (:func:`export_table_files`) and the files
into its generations; readers never see them by their store names. Neither raises for a failing
export (reported in the status, logged ``export.failed``). ``run_query`` and ``query_to_file``
are the ``query`` path over the publication.

What the exports hold (published as ``exports/gen/<N>/...``; docs: examples/analysis.md):

- ``tables/<name>/`` — per artifact table, every row of every live run with a ``run_id``
  column, in segments (:mod:`.segments`, merged by :mod:`.compaction`); the view
  ``exports.<name>`` (``exports.table_<name>`` for a table named like a summary).
- ``files/<summary>.parquet`` — the catalog summaries ``runs``, ``artifacts``,
  ``latest_artifacts`` (:mod:`.summaries`) and the plug-in summaries (:mod:`.plugins`; the
  backtest ones: :mod:`quantbot_bus.backtest.summaries`), and ``<name>.parquet|csv`` per
  ``[[exports]]`` (:mod:`.files`); views ``exports.<name>``.
- ``exports/_export_status.json`` — per export: last_run_at, rows, ms, ok, error, file.

Modules: :mod:`.state` (the state schema ``exports_state``, its meta, :class:`~.state.StateTx`),
:mod:`.refresh` (the driver and change detection), :mod:`.chunk` (one chunk of changed runs out
and in), :mod:`.segments`, :mod:`.compaction`, :mod:`.summaries`, :mod:`.histograms`,
:mod:`.plugins`, :mod:`.views`, :mod:`.files`, :mod:`.query`, :mod:`.store` (files on disk),
:mod:`.sql` (SQL text).
"""

from __future__ import annotations

from .compaction import (
    MAX_SEGMENTS,
    MERGE_FAN,
    Merge,
    commit_compaction,
    compact,
    plan_compaction,
    write_compaction,
)
from .files import FILE_WRITE_SPACING, file_generations, write_files
from .histograms import BIN_BASE, bin_value
from .plugins import summary_names
from .query import QueryResult, available_relations, open_query_connection, query_to_file, run_query
from .refresh import DEFAULT_MAX_RUNS, refresh
from .segments import export_table_files
from .state import STATE_VERSION
from .store import FILES_DIR, PIN_DIR, PIN_GRACE_S, STATUS_NAME, TABLES_DIR, TMP_MARK

__all__ = [
    "BIN_BASE",
    "DEFAULT_MAX_RUNS",
    "FILES_DIR",
    "FILE_WRITE_SPACING",
    "MAX_SEGMENTS",
    "MERGE_FAN",
    "PIN_DIR",
    "PIN_GRACE_S",
    "STATE_VERSION",
    "STATUS_NAME",
    "summary_names",
    "TABLES_DIR",
    "TMP_MARK",
    "Merge",
    "QueryResult",
    "available_relations",
    "bin_value",
    "commit_compaction",
    "compact",
    "export_table_files",
    "file_generations",
    "open_query_connection",
    "plan_compaction",
    "query_to_file",
    "refresh",
    "run_query",
    "write_compaction",
    "write_files",
]
