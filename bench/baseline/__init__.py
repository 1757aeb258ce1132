"""A faithful baseline of the seed system's bus daemon, to measure side by side with ours.

The seed daemon (``scripts/bus_daemon.py`` in the quantbot repository) works like this, and so
does :class:`BaselineDaemon`:

- poll the inbox every ``poll_interval_s`` (1.0 s); for each committed job not yet processed, one
  at a time and in name order:
- take the writer lock file (``<db>.writer.lock``, ``fcntl.flock``), ``duckdb.connect`` the
  catalog file, run the idempotent schema DDL (``CREATE ... IF NOT EXISTS``), upsert the run row
  (``INSERT ... ON CONFLICT DO UPDATE``, the whole metadata as ``meta_json``) and one
  ``INSERT ... ON CONFLICT DO NOTHING`` per artifact, write the run's ``meta.json`` into the
  store, then re-run **every** export job in full (``COPY (<sql over the whole catalog>) TO
  '<file>.parquet'``), write ``_export_status.json``, close the connection, release the lock.

Differences from the seed, kept small and on purpose: the job is one of our run directories
(``<root>/<run_type>/<run_id>/`` completed by ``metadata.json``) instead of an inbox dir
completed by ``COMMIT``; files are not moved into a store (the benchmark root is shared with the
daemon under test), so only ``meta.json`` is written to the store, as the seed did; processed runs
stay in the root, so a set of processed run dirs (loaded from the catalog at start) replaces the
seed's move-to-``processed/``. The export jobs are the seed's kind (SQL over the catalog tables,
``COPY ... TO``) for the exports this project publishes from the catalog: runs flattened,
artifacts, latest artifacts, run summaries, per-producer totals.

Run it on its own: ``python -m bench.baseline --root R --db D --exports E --max-seconds 20``.

Modules: :mod:`.schema` (the seed's catalog DDL and export jobs), :mod:`.daemon`
(:class:`BaselineDaemon`, its poll loop), :mod:`.preseeding` (a pre-seeded seed catalog),
``__main__`` (the command).
"""

from __future__ import annotations

from .daemon import (
    POLL_INTERVAL_S,
    BaselineDaemon,
    ProcessedRun,
    completed_runs,
    writer_lock,
)
from .preseeding import preseed
from .schema import EXPORT_JOBS, SCHEMA_DDL, utc_now_iso

__all__ = [
    "EXPORT_JOBS",
    "POLL_INTERVAL_S",
    "SCHEMA_DDL",
    "BaselineDaemon",
    "ProcessedRun",
    "completed_runs",
    "preseed",
    "utc_now_iso",
    "writer_lock",
]
