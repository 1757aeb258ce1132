"""The working DuckDB catalog: schema, migrations, batch registration, reader-side queries.

Only one process ever opens the working catalog (``Config.catalog_path``): the process holding
the state-dir lock (:class:`quantbot_bus.pipeline.Bus`: the daemon, or a one-shot
``sync``/``rebuild``). Readers never open it; they open the publication
(:mod:`quantbot_bus.publication`), whose views have the same ``catalog.*`` tables.

| module | what it is |
|---|---|
| :mod:`.schema` | the tables, :data:`MIGRATIONS` to :data:`SCHEMA_VERSION`, the sequence columns |
| :mod:`.store` | :class:`Catalog`: open/close, cursors, what the scans compare with, counts |
| :mod:`.batch` | :class:`Batch` and its result; :func:`~.batch.apply_batch`, one transaction |
| :mod:`.rows` | the catalog rows of a run as Arrow tables, and the statements that insert them |
| :mod:`.text` | :func:`db_text`/:func:`fs_text`: paths that are not UTF-8 stored as ``\\xNN`` |
| :mod:`.queries` | :func:`open_reader` and the CLI's queries over a publication |

Every batch has a sequence number (``Catalog.seq`` after it commits); each row it writes carries
it in ``_seq`` (a run also in ``_aseq``: the batch that wrote its artifact rows), so the
publication copies exactly the rows newer than what it published, in O(batch).

Why files are *attached* rather than connected to: a DuckDB database opened by path is named after
the file's stem; a file called ``catalog.duckdb`` would make ``catalog.runs_d`` ambiguous (a
Binder Error), which is why the default files are called ``bus.duckdb``, and attaching under the
alias :data:`DB_ALIAS` keeps any other name working too. Attaching also bypasses
DuckDB's per-process instance cache, which would otherwise hand a second ``connect(path)`` in the
same process the *old* snapshot after it was replaced. Views are written with unqualified table
names, which DuckDB resolves inside the view's own schema whatever the database is called.

All timestamps are ``TIMESTAMP`` values in UTC (no time zone type: fetching TIMESTAMPTZ into
Python needs pytz).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_attributes

if TYPE_CHECKING:
    from .batch import Batch, BatchResult, KnownRun, Rejection
    from .queries import (
        ARTIFACT_COLUMNS,
        REGRESSION_COLUMNS,
        REJECTION_COLUMNS,
        RUN_LIST_COLUMNS,
        STATS_COLUMNS,
        get_run,
        list_artifacts,
        list_regressions,
        list_rejections,
        list_runs,
        open_reader,
        run_stats,
    )
    from .schema import (
        DB_ALIAS,
        LATEST_VIEW,
        MAX_SEQ_SQL,
        MIGRATIONS,
        SCHEMA_VERSION,
        SEQ_COLUMNS,
        max_seq,
    )
    from .store import Catalog
    from .text import db_text, fs_text

#: The public names, imported from their modules on first use (a reader's CLI call does not
#: load what only the daemon's paths need).
__getattr__ = lazy_attributes(
    __name__,
    {
        "batch": (
            "Batch",
            "BatchResult",
            "KnownRun",
            "Rejection",
        ),
        "queries": (
            "ARTIFACT_COLUMNS",
            "REGRESSION_COLUMNS",
            "REJECTION_COLUMNS",
            "RUN_LIST_COLUMNS",
            "STATS_COLUMNS",
            "get_run",
            "list_artifacts",
            "list_regressions",
            "list_rejections",
            "list_runs",
            "open_reader",
            "run_stats",
        ),
        "schema": (
            "DB_ALIAS",
            "LATEST_VIEW",
            "MAX_SEQ_SQL",
            "MIGRATIONS",
            "SCHEMA_VERSION",
            "SEQ_COLUMNS",
            "max_seq",
        ),
        "store": ("Catalog",),
        "text": (
            "db_text",
            "fs_text",
        ),
    },
)

__all__ = [
    "ARTIFACT_COLUMNS",
    "DB_ALIAS",
    "LATEST_VIEW",
    "MAX_SEQ_SQL",
    "MIGRATIONS",
    "REGRESSION_COLUMNS",
    "REJECTION_COLUMNS",
    "RUN_LIST_COLUMNS",
    "SCHEMA_VERSION",
    "SEQ_COLUMNS",
    "STATS_COLUMNS",
    "Batch",
    "BatchResult",
    "Catalog",
    "KnownRun",
    "Rejection",
    "db_text",
    "fs_text",
    "get_run",
    "list_artifacts",
    "list_regressions",
    "list_rejections",
    "list_runs",
    "max_seq",
    "open_reader",
    "run_stats",
]
