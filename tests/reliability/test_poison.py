"""Poison runs never block the runs behind them, in the catalog or in the exports.

Four poisons, each renamed into the root *first*, in the same burst as 300 good runs (so they
share batches with them):

- ``footer-garbage``: valid ``PAR1`` magic and footer length, garbage Thrift in the footer: the
  Parquet reader fails to parse it -> rejected with the reason.
- ``footer-billion-lies``: a crafted footer claiming 1,000,000,000 rows while metadata.json
  declares 3 -> rejected (compared, never read).
- ``footer-billion-agrees``: the same crafted footer and metadata.json agreeing on a billion rows:
  valid by the contract (only footers are read), registered; reading its data fails.
- ``pages-corrupt``: a real Parquet file whose data pages were overwritten after writing (valid
  footer, sha256 declared of the corrupt bytes): registered; decoding its strings fails.

The last two get past the validator by design (it reads footers, not pages): they must not stop
the export refresh for everyone else. Each is left out of the published export tables
(``<generation>/tables/``) with an ``export.file_unreadable`` log line naming the file, and every
other run is exported.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from builders import (
    RunFactory,
    crafted_parquet,
    live_run_ids,
    make_run_from_bytes,
    open_rejections,
    wait_for,
)

from quantbot_bus.config import Config
from quantbot_bus.publication import current_generation

from .helpers import DaemonProcess, exported_run_ids

GOOD = 300


def _corrupt_pages(tmp: Path) -> bytes:
    table = pa.table(
        {"call_id": [f"c{i}" for i in range(1000)], "ret_bps": [float(i) for i in range(1000)]}
    )
    pq.write_table(table, tmp, compression="none")
    raw = bytearray(tmp.read_bytes())
    raw[100:2000] = b"\xab" * 1900  # inside the first column's data page; the footer is intact
    return bytes(raw)


def _garbage_footer() -> bytes:
    garbage = bytes(range(7, 250)) * 3
    return b"PAR1" + b"\x00" * 16 + garbage + struct.pack("<i", len(garbage)) + b"PAR1"


def test_poison_runs_never_block_the_runs_behind_them(
    bus: Config, tmp_path: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    staging = tmp_path / "staging"
    crafted = {  # run_id -> (the file's bytes, the rows metadata.json declares)
        "aaa-footer-garbage": (_garbage_footer(), 3),
        "aaa-footer-billion-lies": (crafted_parquet(10**9, 10**9), 3),
        "aaa-footer-billion-agrees": (crafted_parquet(10**9, 10**9), 10**9),
        "aaa-pages-corrupt": (_corrupt_pages(tmp_path / "c.parquet"), 1000),
    }
    poisons = {
        run_id: make_run_from_bytes(staging, "backtest", run_id, data, rows=rows)
        for run_id, (data, rows) in crafted.items()
    }
    # Each poison really is poison for a reader: DuckDB cannot read its rows.
    for run_dir in poisons.values():
        con = duckdb.connect()
        try:
            con.execute("SELECT * FROM read_parquet(?)", [str(run_dir / "results.parquet")])
            con.fetchall()
        except duckdb.Error:
            pass
        else:
            raise AssertionError(f"{run_dir.name} is readable: not a poison")
        finally:
            con.close()

    factory = RunFactory(tmp_path / "tpl", rows=20)
    good = [f"good-{i:04d}" for i in range(GOOD)]
    factory.stage(staging / "backtest", good)
    (bus.root / "backtest").mkdir(parents=True)
    d = daemon_factory(bus, env={"QUANTBOT_BUS_EXPORT_INTERVAL_S": "0.5"}).start()
    for name in [*sorted(poisons), *good]:  # the poisons first, then the good runs behind them
        os.rename(staging / "backtest" / name, bus.root / "backtest" / name)

    wait_for(lambda: set(good) <= live_run_ids(bus), "every good run registered")
    rejected = wait_for(
        lambda: (r := open_rejections(bus)) and len(r) == 2 and r, "the two bad footers rejected"
    )
    root = bus.root / "backtest"
    assert "Parquet" in rejected[str(root / "aaa-footer-garbage")]
    assert (
        "has 1000000000 rows in its Parquet footer but metadata.json declares 3"
        in (rejected[str(root / "aaa-footer-billion-lies")])
    )
    live = live_run_ids(bus)
    assert {"aaa-footer-billion-agrees", "aaa-pages-corrupt"} <= live  # valid by the contract

    # The exports: every live run in the published runs.parquet, every good run's rows in the
    # published tables/results (both under the current generation).
    wait_for(lambda: exported_run_ids(bus) == live, "<generation>/files/runs.parquet == live runs")

    def exported_rows() -> dict[str, int] | None:
        # read as users are told to: resolve exports/current once, read below that generation
        # (immutable: a read never fails, so no retry on error here)
        seg = current_generation(bus.exports_dir) / "tables" / "results"
        if not list(seg.glob("*.parquet")):
            return None
        con = duckdb.connect()
        try:
            rows = con.execute(
                "SELECT run_id, count(*) FROM read_parquet(?) GROUP BY run_id",
                [str(seg / "*.parquet")],
            ).fetchall()
        finally:
            con.close()
        return dict(rows)

    rows = wait_for(
        lambda: (r := exported_rows()) and set(good) <= set(r) and r,
        "every good run's rows in <generation>/tables/results",
    )
    assert set(rows) == set(good)
    assert set(rows.values()) == {20}
    unreadable = {e["path"] for e in d.events("export.file_unreadable")}
    assert unreadable == {
        str(root / "aaa-footer-billion-agrees" / "results.parquet"),
        str(root / "aaa-pages-corrupt" / "results.parquet"),
    }
    assert not d.events("export.failed")
    assert d.alive()
    assert d.stop() == 0
