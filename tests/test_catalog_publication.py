"""The catalog's publication, the reader-side snapshot: complete and atomic, the newest version of
each row, readers (in this process or another) that never block the catalog, compaction; ten
thousand runs in one batch. RunInfo objects are built directly (builders.run_info: the catalog does
not read the disk); real DuckDB files."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest
from builders import catalog_rows, publish_catalog, run_info

from quantbot_bus.catalog import SCHEMA_VERSION, Batch, Catalog, Rejection, open_reader
from quantbot_bus.config import Config
from quantbot_bus.errors import CatalogMissingError
from quantbot_bus.publication import Publication


@pytest.fixture
def cat(tmp_path: Path):
    with Catalog.open(tmp_path / "state" / "bus.duckdb") as c:
        yield c


# --- scale ----------------------------------------------------------------------------------


def test_ten_thousand_runs_in_one_batch(tmp_path: Path, cat: Catalog) -> None:
    runs = [run_info(tmp_path, f"run{i:05d}", names=("a", "b")) for i in range(10_000)]
    res = cat.apply_batch(Batch(valid=runs))
    assert len(res.registered) == 10_000
    assert cat.counts() == {"runs": 10_000, "deleted": 0, "artifacts": 20_000, "rejections": 0}
    res = cat.apply_batch(Batch(valid=runs))
    assert len(res.unchanged) == 10_000
    exports_dir = tmp_path / "exports"
    first = publish_catalog(cat, exports_dir)
    assert first.rows == 30_000  # 10,000 runs + 20,000 artifacts: every row once
    with open_reader(exports_dir / "bus.duckdb") as r:
        assert r.execute("SELECT count(*) FROM catalog.runs_d").fetchone() == (10_000,)
        assert r.execute("SELECT count(*) FROM catalog.artifacts_f").fetchone() == (20_000,)
    # the next run publishes its own rows only, not the catalog again
    cat.apply_batch(Batch(valid=[run_info(tmp_path, "one-more", names=("a", "b"))]))
    second = publish_catalog(cat, exports_dir)
    assert second.rows == 3 and second.bytes_written < 16 * 1024  # three small segments
    with open_reader(exports_dir / "bus.duckdb") as r:
        assert r.execute("SELECT count(*) FROM catalog.runs_d").fetchone() == (10_001,)


# --- the publication ---------------------------------------------------------------------------


def test_open_reader_without_snapshot_gives_advice(tmp_path: Path) -> None:
    with pytest.raises(CatalogMissingError) as err:
        open_reader(tmp_path / "exports" / "bus.duckdb")
    assert str(err.value) == (
        f"no catalog snapshot at {tmp_path / 'exports' / 'bus.duckdb'} yet: start the daemon "
        "(make run) or run `quantbot-bus sync`"
    )


def test_publish_is_complete_atomic_and_leaves_no_temp_files(tmp_path: Path, cat: Catalog) -> None:
    cat.apply_batch(Batch(valid=[run_info(tmp_path, "r1", names=("a", "b"))]))
    exports_dir = tmp_path / "exports"
    dest = exports_dir / "bus.duckdb"
    assert publish_catalog(cat, exports_dir).ms > 0
    names = [p.name for p in exports_dir.rglob("*")]
    assert not [n for n in names if "qbpub" in n or n.endswith((".tmp", ".wal"))]
    assert os.path.realpath(exports_dir / "current") == str(
        exports_dir.resolve() / "gen" / "0000000001"
    )
    with open_reader(dest) as r:
        assert r.execute("SELECT run_id FROM catalog.runs_d").fetchall() == [("r1",)]
        assert r.execute("SELECT count(*) FROM catalog.artifacts_f").fetchone() == (2,)
        assert r.execute(
            "SELECT run_id, name FROM catalog.latest_artifacts_v ORDER BY 2"
        ).fetchall() == [
            ("r1", "a"),
            ("r1", "b"),
        ]
        assert r.execute("SELECT max(version) FROM catalog.schema_version").fetchone() == (
            SCHEMA_VERSION,
        )
        # readers see the catalog's columns, not the publication's bookkeeping
        assert "_seq" not in {d[0] for d in r.execute("SELECT * FROM catalog.runs_d").description}
        # the views file holds views only; its tables are Parquet files of the generation
        assert r.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database()"
        ).fetchone() == (0,)
        with pytest.raises(duckdb.Error):  # read-only
            r.execute("DROP VIEW catalog.runs_d")


def test_readers_see_the_newest_version_of_each_row(tmp_path: Path, cat: Catalog) -> None:
    """Updates, soft deletes, undeletes and resolved rejections are new row versions in later
    segments; the views show each key's newest version and that version's artifacts only."""
    exports_dir = tmp_path / "exports"
    cat.apply_batch(Batch(valid=[run_info(tmp_path, "r1", names=("a", "b"))]))
    cat.apply_batch(Batch(rejected=[Rejection("/x/bad", None, "broken", "f")]))
    publish_catalog(cat, exports_dir)
    cat.apply_batch(Batch(valid=[run_info(tmp_path, "r1", fingerprint="fp2", names=("c",))]))
    cat.apply_batch(Batch(valid=[run_info(tmp_path, "r2")], gone=["/x/bad"]))
    publish_catalog(cat, exports_dir)
    with open_reader(exports_dir / "bus.duckdb") as r:
        assert r.execute(
            "SELECT run_id, name FROM catalog.artifacts_f ORDER BY ALL"
        ).fetchall() == [("r1", "c"), ("r2", "results")]
        assert r.execute(
            "SELECT run_id, fingerprint FROM catalog.runs_d ORDER BY 1"
        ).fetchall() == [("r1", "fp2"), ("r2", "fp1")]
        assert r.execute(
            "SELECT run_dir, resolved_at IS NOT NULL FROM catalog.rejections_f"
        ).fetchall() == [("/x/bad", True)]
    cat.apply_batch(Batch(gone=[str(tmp_path / "backtest" / "r1")]))
    publish_catalog(cat, exports_dir)
    with open_reader(exports_dir / "bus.duckdb") as r:
        assert r.execute(
            "SELECT run_id FROM catalog.runs_d WHERE deleted_at IS NOT NULL"
        ).fetchall() == [("r1",)]
        # a soft-deleted run keeps its artifacts (as in the working catalog)
        assert r.execute("SELECT name FROM catalog.artifacts_f WHERE run_id = 'r1'").fetchall() == [
            ("c",)
        ]
    for table in ("runs_d", "artifacts_f", "rejections_f"):
        assert table_dump_published(exports_dir, table) == table_dump_working(cat, table)


def table_dump_published(exports_dir: Path, table: str) -> list[tuple[Any, ...]]:
    with open_reader(exports_dir / "bus.duckdb") as r:
        return r.execute(f"SELECT * FROM catalog.{table} ORDER BY ALL").fetchall()  # noqa: S608


def table_dump_working(cat: Catalog, table: str) -> list[tuple[Any, ...]]:
    return catalog_rows(
        cat,
        f"SELECT * EXCLUDE (_seq{', _aseq' if table == 'runs_d' else ''}) "  # noqa: S608
        f"FROM catalog.{table} ORDER BY ALL",
    )


def test_a_new_catalog_replaces_the_publication_of_the_old_one(tmp_path: Path) -> None:
    """After ``rebuild`` (a new catalog), the publication starts over instead of mixing."""
    exports_dir = tmp_path / "exports"
    with Catalog.open(tmp_path / "one.duckdb") as one:
        one.apply_batch(Batch(valid=[run_info(tmp_path, f"old{i}") for i in range(3)]))
        publish_catalog(one, exports_dir)
    with Catalog.open(tmp_path / "two.duckdb") as two:
        two.apply_batch(Batch(valid=[run_info(tmp_path, "new")]))
        publish_catalog(two, exports_dir)
    with open_reader(exports_dir / "bus.duckdb") as r:
        assert r.execute("SELECT run_id FROM catalog.runs_d").fetchall() == [("new",)]


def test_same_process_reader_sees_new_snapshot_while_holding_old(
    tmp_path: Path, cat: Catalog
) -> None:
    exports_dir = tmp_path / "exports"
    dest = exports_dir / "bus.duckdb"
    cat.apply_batch(Batch(valid=[run_info(tmp_path, "r1")]))
    publish_catalog(cat, exports_dir)
    held = open_reader(dest)
    cat.apply_batch(Batch(valid=[run_info(tmp_path, "r2")]))
    publish_catalog(cat, exports_dir)
    fresh = open_reader(dest)
    assert fresh.execute("SELECT count(*) FROM catalog.runs_d").fetchone() == (2,)
    assert held.execute("SELECT count(*) FROM catalog.runs_d").fetchone() == (1,)
    held.close()
    fresh.close()


READER = textwrap.dedent(
    """
    import sys
    import duckdb
    from quantbot_bus.catalog import open_reader

    snap = sys.argv[1]
    held = open_reader(snap)
    # what a user script does: a plain read-only connect to exports/bus.duckdb
    plain = duckdb.connect(snap, read_only=True)
    def count(con, q="SELECT count(*) FROM catalog.runs_d"):
        return con.execute(q).fetchone()[0]
    print("READY", count(held), count(plain), flush=True)
    for line in sys.stdin:
        if line.strip() == "quit":
            break
        fresh = open_reader(snap)
        print("CHECK", count(held), count(plain), count(fresh), flush=True)
        fresh.close()
    """
)


def test_reader_process_holding_the_snapshot_never_blocks_the_catalog(
    tmp_path: Path, cat: Catalog
) -> None:
    exports_dir = tmp_path / "exports"
    dest = exports_dir / "bus.duckdb"
    cat.apply_batch(Batch(valid=[run_info(tmp_path, f"a{i}") for i in range(5)]))
    publish_catalog(cat, exports_dir)
    with subprocess.Popen(
        [sys.executable, "-c", READER, str(dest)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None and proc.stdin is not None
            assert proc.stdout.readline().split() == ["READY", "5", "5"]
            for round_ in range(1, 6):
                batch = Batch(valid=[run_info(tmp_path, f"b{round_}_{i}") for i in range(10)])
                assert len(cat.apply_batch(batch).registered) == 10
                publish_catalog(cat, exports_dir)
                proc.stdin.write("check\n")
                proc.stdin.flush()
                # held connections keep their consistent old view; a fresh one sees the new data
                assert proc.stdout.readline().split() == ["CHECK", "5", "5", str(5 + 10 * round_)]
            proc.stdin.write("quit\n")
            proc.stdin.flush()
            assert proc.wait(timeout=60) == 0
            assert proc.stderr is not None and proc.stderr.read() == ""
        finally:
            if proc.poll() is None:
                proc.kill()


def test_a_plain_duckdb_connect_to_the_default_snapshot_resolves_catalog_names(
    tmp_path: Path, bus: Config
) -> None:
    """What a user types: duckdb.connect(exports/bus.duckdb) then catalog.runs_d, unqualified."""
    with Catalog.open(bus.catalog_path) as c:
        c.apply_batch(Batch(valid=[run_info(tmp_path, "r1")]))
        publish_catalog(c, bus.exports_dir)
    con = duckdb.connect(str(bus.snapshot_path), read_only=True)
    try:
        assert con.execute("SELECT run_id FROM catalog.runs_d").fetchall() == [("r1",)]
    finally:
        con.close()


def test_compaction_bounds_the_segments_and_keeps_the_newest_versions(
    tmp_path: Path, cat: Catalog
) -> None:
    """Forty batches (new runs, updates, soft deletes, rejections) published one by one, then
    compacted like the daemon does in the background: fewer segments, same reader content."""
    exports_dir = tmp_path / "exports"
    pub = Publication(exports_dir)

    def publish_once() -> None:
        cur = cat.cursor()
        try:
            pub.publish(cur, catalog_id=cat.catalog_id())
        finally:
            cur.close()

    for i in range(40):
        batch = Batch(valid=[run_info(tmp_path, f"r{i}", names=("a", "b"))])
        if i % 3 == 0 and i:  # an earlier run changes: a new version of its rows
            batch.valid.append(run_info(tmp_path, f"r{i - 1}", fingerprint=f"v{i}", names=("c",)))
        if i % 5 == 0 and i:
            batch.gone.append(str(tmp_path / "backtest" / f"r{i - 2}"))
        if i % 7 == 0:
            batch.rejected.append(Rejection(f"/x/bad{i}", None, "broken", "f"))
        cat.apply_batch(batch)
        publish_once()
    before = {t: len(segs) for t, segs in pub.manifest.catalog.items()}
    assert before["runs_d"] == 40
    expected = {t: table_dump_working(cat, t) for t in ("runs_d", "artifacts_f", "rejections_f")}
    held = open_reader(exports_dir / "bus.duckdb")  # a reader of the old generation
    rounds = 0
    while pub.plan_compaction():
        merge = pub.write_compaction(pub.plan_compaction())
        assert pub.commit_compaction(merge)
        rounds += 1
    after = {t: len(segs) for t, segs in pub.manifest.catalog.items()}
    assert rounds >= 2 and all(n <= 8 for n in after.values()), after
    for table, rows_ in expected.items():
        assert table_dump_published(exports_dir, table) == rows_, table
    # a merged segment holds one version per key (runs_d: each run once)
    merged = [s for s in pub.manifest.catalog["runs_d"] if s.name.startswith("m-")]
    assert merged
    for seg in merged:
        ids = pq.read_table(exports_dir / ".store" / "catalog" / "runs_d" / seg.name)["run_id"]
        assert len(ids) == len(set(ids.to_pylist())) == seg.rows, seg.name
    assert held.execute("SELECT count(*) FROM catalog.runs_d").fetchone() == (40,)
    held.close()
    store = exports_dir / ".store" / "catalog"
    named = {s.name for segs in pub.manifest.catalog.values() for s in segs}
    assert {p.name for p in store.rglob("*.parquet")} == named  # retired ones left the store
    pub.close()
