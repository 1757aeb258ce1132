"""Turning directories on disk into catalog batches: the reconcile scan shared by daemon and sync.

INTERFACE (used by watch and cli):

- ``ScanOutcome``: ``batch`` (a catalog.Batch: valid runs, gone run dirs, rejections) and
  ``pending`` (run_dir -> reason, for Incomplete runs that must be looked at again later).
- ``examine(config, catalog, dirs) -> ScanOutcome``: look at candidate directories (from events):
  each is a run dir, a directory that contains run dirs (renamed-in subtree), or a path that is gone.
  Skips dirs whose quick_fingerprint equals the registered (or rejected) one; validates the rest.
  A known live run whose directory is gone goes to ``batch.gone``.
- ``full_scan(config, catalog) -> ScanOutcome``: the whole root against the whole catalog.
- ``sync(config) -> BatchResult``: one-shot: open the working catalog, full_scan, apply_batch,
  publish the snapshot, refresh exports, close. Used by ``quantbot-bus sync`` and cron/timers.
- ``rebuild(config) -> BatchResult``: recreate the catalog from the artifacts on disk.
"""
