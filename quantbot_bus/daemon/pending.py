"""The runs the daemon waits on: pending (files not complete yet), re-examined on a timer.

The rule that decides pending vs. rejected is the Bus's (:meth:`Bus.expire_pending`); this is
the worker's bookkeeping around it: since when each run is pending and why, when the next
recheck is due, and which entries an examination settled; and, when that changed, the list for
readers (:mod:`quantbot_bus.pendingfile`: ``state_dir/pending.json``, ``quantbot-bus pending``).
Written by the worker only; other threads read copies.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..log import get_logger
from ..pendingfile import PendingEntry, write_pending

log = get_logger(__name__)


@dataclass
class _Pending:
    first_seen: float  # time.monotonic()
    first_seen_wall: float  # time.time()
    reason: str
    run_id: str | None = None


class PendingRuns:
    """Pending run directories below ``root``, rechecked every ``recheck_s``. ``seen_before``
    (run dir -> ``time.time()``, e.g. from the readers' list a previous daemon left) keeps the
    first-seen time of a run that was pending before a restart."""

    def __init__(
        self, root: Path, recheck_s: float, seen_before: dict[str, float] | None = None
    ) -> None:
        self.root = root
        self.recheck_s = recheck_s
        self._seen_before = dict(seen_before or {})
        self._runs: dict[str, _Pending] = {}
        self._next_recheck = 0.0
        self._changed = True  # the readers' list is written at the first publish_list

    def __len__(self) -> int:
        return len(self._runs)

    def reasons(self) -> dict[str, str]:
        """Pending run dirs and why (a copy)."""
        return {k: v.reason for k, v in list(self._runs.items())}

    def oldest_lag_s(self) -> float | None:
        """Seconds since the oldest pending run was first seen, or None."""
        oldest = min((p.first_seen for p in list(self._runs.values())), default=None)
        return None if oldest is None else round(time.monotonic() - oldest, 3)

    def timeout(self, now: float, limit: float) -> float:
        """``limit``, shortened to when the next recheck is due (if any run is pending)."""
        if self._runs:
            return min(limit, max(0.0, self._next_recheck - now))
        return limit

    def take_due(self, now: float) -> set[Path]:
        """The pending run dirs when a recheck is due (then the next one is scheduled)."""
        if not self._runs or now < self._next_recheck:
            return set()
        self._next_recheck = now + self.recheck_s
        return {Path(p) for p in self._runs}

    def forget(self, covered: set[Path] | None, still: dict[str, str]) -> None:
        """Drop entries the examination covered (``None``: a full scan) that are no longer
        incomplete (not in ``still``)."""
        covered_keys = None if covered is None else {str(d) for d in covered}
        for key in list(self._runs):
            if key in still:
                continue
            if covered_keys is None or key in covered_keys:
                del self._runs[key]
                self._changed = True
                continue
            for parent in Path(key).parents:
                if str(parent) in covered_keys:
                    del self._runs[key]
                    self._changed = True
                    break
                if parent == self.root:
                    break

    def record(self, pending: dict[str, str], run_ids: dict[str, str] | None = None) -> None:
        """Note runs found incomplete (``run.pending`` the first time), their reasons and
        (``run_ids``) the run_ids their metadata names."""
        now = time.monotonic()
        ids = run_ids or {}
        for run_dir, why in pending.items():
            entry = self._runs.get(run_dir)
            if entry is None:
                wall = time.time()
                seen = min(wall, self._seen_before.pop(run_dir, wall))
                self._runs[run_dir] = _Pending(now - (wall - seen), seen, why, ids.get(run_dir))
                self._changed = True
                log.info("run.pending", run_dir=run_dir, reason=why)
                if len(self._runs) == 1:
                    self._next_recheck = now + self.recheck_s
            elif entry.reason != why or entry.run_id != ids.get(run_dir):
                entry.reason = why
                entry.run_id = ids.get(run_dir)
                self._changed = True

    def drop_rejected(self, pending: dict[str, str], still: dict[str, str]) -> None:
        """Drop the runs of ``pending`` that the pending rule rejected (not in ``still``)."""
        for run_dir in pending:
            if run_dir not in still and self._runs.pop(run_dir, None) is not None:
                self._changed = True  # rejected: it is in the batch

    def publish_list(self, path: Path, timeout_s: float) -> None:
        """Write the readers' list to ``path`` if the runs or their reasons changed since the
        last time (never raises)."""
        if not self._changed:
            return
        entries = [
            PendingEntry(run_dir, p.run_id, p.reason, p.first_seen_wall)
            for run_dir, p in list(self._runs.items())
        ]
        # a failed write (disk full) is tried again at the next batch
        self._changed = not write_pending(path, entries, writer="daemon", timeout_s=timeout_s)
