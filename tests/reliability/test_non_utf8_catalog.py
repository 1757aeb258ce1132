"""A run directory whose name is not UTF-8 must not wedge the catalog (found by the e2e suite).

Before the fix, the rejection of such a directory (or a scan whose paths contained one) made
every batch fail: DuckDB cannot bind a str with surrogate escapes, so ``known_runs(paths)`` and
``apply_batch`` raised, and the daemon retried the same failing batch forever, registering
nothing behind it. Now the catalog stores such a path with its bad bytes as ``\\xNN`` text and
maps it back when reading, so the rejection is recorded, found again (not re-opened), and
resolved when the directory goes.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from builders import make_run, publish_catalog

from quantbot_bus import ingest
from quantbot_bus.catalog import Catalog, open_reader
from quantbot_bus.config import Config


def _bad_dir(config: Config, tmp_path: Path) -> Path:
    good = make_run(tmp_path / "staging", "backtest", "bad-source")
    bad = Path(os.fsdecode(os.fsencode(config.root / "backtest") + b"/bad-\xff-name"))
    bad.parent.mkdir(parents=True, exist_ok=True)
    os.rename(good, bad)
    return bad


def test_non_utf8_run_dir_is_rejected_and_does_not_block_the_batch(
    bus: Config, tmp_path: Path
) -> None:
    bad = _bad_dir(bus, tmp_path)
    make_run(bus.root, "backtest", "good-1")
    with Catalog.open(bus.catalog_path) as catalog:
        outcome = ingest.examine(bus, catalog, [str(bad), str(bus.root / "backtest" / "good-1")])
        result = catalog.apply_batch(outcome.batch)
        assert result.registered == ["good-1"]
        assert [r.run_dir for r in result.rejected] == [str(bad)]
        # Read back under the real (surrogate-escaped) path: a rescan skips it as unchanged.
        assert set(catalog.known_rejections()) == {str(bad)}
        again = ingest.full_scan(bus, catalog)
        assert len(again.batch) == 0 and again.skipped == 2
        publish_catalog(catalog, bus.exports_dir)
    con = open_reader(bus.snapshot_path)
    try:
        [(run_dir, reason, attempts)] = con.execute(
            "SELECT run_dir, reason, attempts FROM catalog.rejections_f"
        ).fetchall()
    finally:
        con.close()
    assert run_dir.endswith("/backtest/bad-\\xff-name") and attempts == 1
    assert "UTF-8" in reason

    shutil.rmtree(os.fsencode(bad))
    with Catalog.open(bus.catalog_path) as catalog:
        gone = ingest.full_scan(bus, catalog)
        assert gone.batch.gone == [str(bad)]
        catalog.apply_batch(gone.batch)
        assert catalog.known_rejections() == {}
        publish_catalog(catalog, bus.exports_dir)
    con = open_reader(bus.snapshot_path)
    try:
        [(run_dir, resolved)] = con.execute(
            "SELECT run_dir, resolved_at IS NOT NULL FROM catalog.rejections_f"
        ).fetchall()
    finally:
        con.close()
    assert run_dir.endswith("/backtest/bad-\\xff-name") and resolved
