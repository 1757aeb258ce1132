"""Two run directories with one run id (``backtest/r1`` and ``optimize/r1``): the contract makes
run ids unique across run types, so one is registered and the other rejected with a reason, as
on the DuckDB catalog (``catalog/batch.py``). Without this the ledger, which knows runs by id,
would pass over the second in silence, and two new ones in one batch would both reach ``runs_d``.

- Among the runs a poll is about to validate, the first key (in key order) of each run id is
  looked at; the others are rejected (:func:`split_twins`).
- On a full listing, a run id ``runs_d`` holds that the listing shows under more than one key:
  every key but the registered directory's is rejected (:func:`registered_twins`; one read of
  ``runs_d`` for those ids only).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from ..objectstore.listing import RunObject
from ..objectstore.location import S3Location
from .delete import registered_rows
from .rows import Rejected

#: How every twin rejection's reason ends (its alert is not resolved by its run id's registration).
TWIN_REASON_END = "; run ids must be unique across run types"


def _reason(run_id: str, owner_dir: str, *, registered: bool) -> str:
    how = "is already registered from" if registered else "is also used by"
    return f"run_id {run_id} {how} {owner_dir}{TWIN_REASON_END}"


def _run_dir(loc: S3Location, run: RunObject) -> str:
    return loc.uri(run.run_prefix.rstrip("/"))


def split_twins(
    runs: dict[str, RunObject], loc: S3Location
) -> tuple[dict[str, RunObject], list[Rejected]]:
    """``runs`` (metadata key -> run) with one key per run id, and the rejections of the rest."""
    first: dict[str, RunObject] = {}
    rejected: list[Rejected] = []
    for key in sorted(runs):
        run = runs[key]
        kept = first.setdefault(run.run_id, run)
        if kept is not run:
            reason = _reason(run.run_id, _run_dir(loc, kept), registered=False)
            rejected.append(Rejected(_run_dir(loc, run), run.run_id, reason))
    kept_keys = {r.metadata_key for r in first.values()}
    return {k: r for k, r in runs.items() if k in kept_keys}, rejected


def registered_twins(
    catalog: Any, loc: S3Location, listed: dict[str, RunObject], registered: set[str]
) -> list[Rejected]:
    """The rejections of the ``listed`` runs whose run id is ``registered`` from another of the
    listed directories."""
    by_id: dict[str, list[RunObject]] = defaultdict(list)
    for run in listed.values():
        if run.run_id in registered:
            by_id[run.run_id].append(run)
    twins = {run_id: runs for run_id, runs in by_id.items() if len(runs) > 1}
    if not twins:
        return []
    owners = {str(r["run_id"]): str(r["run_dir"]) for r in registered_rows(catalog, list(twins))}
    rejected = []
    for run_id, runs in sorted(twins.items()):
        owner = owners.get(run_id)
        if owner is None:  # taken out meanwhile: the next reconcile looks again
            continue
        for run in runs:
            if _run_dir(loc, run) != owner.rstrip("/"):
                reason = _reason(run_id, owner, registered=True)
                rejected.append(Rejected(_run_dir(loc, run), run_id, reason))
    return rejected
