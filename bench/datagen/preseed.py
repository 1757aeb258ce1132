"""A catalog pre-seeded with run dirs already on disk, without validating each one: the state
a stopped daemon leaves after registering them."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .runs import RUN_TYPE, metadata_for, metadata_text, run_id_for

if TYPE_CHECKING:
    from . import Template


def preseed_catalog(
    catalog: Any, root: Path, tpl: Template, start: int, n: int, *, chunk: int = 25_000
) -> float:
    """Register runs ``start .. start+n-1`` (already on disk, made by :func:`make_runs`) in
    ``catalog`` (a :class:`quantbot_bus.catalog.Catalog`) without validating each one.

    One run per template variant is validated for real (:func:`quantbot_bus.contract
    .validate_run_dir`); every other run is that :class:`RunInfo` with its own run_id, run_dir,
    artifact paths, metadata text, timestamps, git commit, metadata mtime and the real
    :func:`quick_fingerprint` of its directory, so the daemon's reconcile sees them as unchanged.
    Registered with :meth:`Catalog.apply_batch` in chunks (Arrow inserts). Returns seconds.
    """
    import dataclasses

    from quantbot_bus import catalog as qcat
    from quantbot_bus import contract

    t0 = time.perf_counter()
    protos: dict[int, Any] = {}
    nvar = len(tpl.variants)
    for v in range(nvar):
        i = start + ((v - start) % nvar)
        if i >= start + n:
            continue
        res = contract.validate_run_dir(root / RUN_TYPE / run_id_for(i), root)
        if not isinstance(res, contract.Valid):
            raise RuntimeError(f"bench run {run_id_for(i)} does not validate: {res}")
        protos[i % nvar] = res.run
    batch: list[Any] = []
    for i in range(start, start + n):
        proto = protos[i % nvar]
        run_id = run_id_for(i)
        run_dir = root / RUN_TYPE / run_id
        doc = metadata_for(run_id, i, tpl.variant_for(i))
        st = os.stat(run_dir / "metadata.json")
        run = dataclasses.replace(
            proto,
            run_id=run_id,
            run_dir=run_dir,
            created_at=doc["created_at"],
            started_at=doc["started_at"],
            finished_at=doc["finished_at"],
            params=doc["params"],
            git_commit=doc["git"]["commit"],
            artifacts=tuple(dataclasses.replace(a, path=run_dir / a.file) for a in proto.artifacts),
            metadata_json=metadata_text(doc),
            metadata_mtime_ns=st.st_mtime_ns,
            fingerprint=contract.quick_fingerprint(run_dir),
        )
        batch.append(run)
        if len(batch) >= chunk:
            catalog.apply_batch(qcat.Batch(valid=batch))
            batch = []
    if batch:
        catalog.apply_batch(qcat.Batch(valid=batch))
    return time.perf_counter() - t0
