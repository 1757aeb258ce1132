"""Compaction of the export tables' segments: the count stays bounded and the contents
equal, like-sized segments are merged, a background merge whose victim changed meanwhile is
dropped, and a publication never links a segment a refresh retired."""

# ruff: noqa: S608 - test SQL over paths and run ids the test itself made

from __future__ import annotations

import shutil
from typing import Any

import pyarrow.parquet as pq
import pytest
import structlog
from builders import PATH, add_path_run, sync
from exports_checks import (
    check_consolidated,
    check_leaderboard,
    publish_exports,
    published,
    published_table_glob,
    raw_glob,
    register_only,
    segment_files,
    store_table,
)

from quantbot_bus import exports
from quantbot_bus.catalog import Catalog
from quantbot_bus.config import Config
from quantbot_bus.exports import compaction
from quantbot_bus.pipeline import Bus
from quantbot_bus.publication import compaction as publication_compaction


def test_compaction_keeps_segment_count_bounded_and_content_equal(
    bus: Config, con: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compaction, "MAX_SEGMENTS", 4)
    monkeypatch.setattr(compaction, "MERGE_FAN", 3)
    counts = []
    for i in range(14):
        add_path_run(bus, f"r{i:02d}", n=5 + i, seed=i)
        sync(bus)
        counts.append(len(segment_files(bus, PATH)))
        if i == 9:
            shutil.rmtree(bus.root / "backtest-path" / "r03")  # deletion inside a merged segment
    assert max(counts) <= 4
    assert counts[:4] == [1, 2, 3, 4]
    check_consolidated(con, bus, PATH)
    check_leaderboard(con, bus)
    with Catalog.open(bus.catalog_path) as cat:
        cur = cat.cursor()
        per_seg = cur.execute(
            "SELECT segment, sum(rows) FROM exports_state.run_segments GROUP BY ALL ORDER BY 1"
        ).fetchall()
        files = segment_files(bus, PATH)
        assert [s for s, _ in per_seg] == sorted(files)
        for seg, n in per_seg:  # the run -> segment map matches the files
            path = store_table(bus, PATH) / seg
            assert pq.read_metadata(path).num_rows == n


def test_compaction_merges_like_sized_segments_only() -> None:
    """One new run never drags big segments into a merge (size tiers, not just 'smallest')."""
    small = [(f"s{i}", 1_000) for i in range(5)]
    big = [(f"b{i}", 500_000) for i in range(20)]
    assert compaction.merge_victims(small + big) == [s for s, _ in small]
    assert compaction.merge_victims(big) == [s for s, _ in big[: compaction.MERGE_FAN]]
    # sizes that grow by more than 3x each time: nothing alike to merge (yet)
    tiers = [(f"t{i}", 4**i) for i in range(12)]
    assert compaction.merge_victims(tiers) == []
    # ... until the count doubles the bound: then the smallest are merged anyway
    many = [(f"m{i}", 4**i) for i in range(2 * compaction.MAX_SEGMENTS + 1)]
    assert compaction.merge_victims(many) == [s for s, _ in many[: compaction.MERGE_FAN]]


def test_background_compaction_is_dropped_when_a_victim_changed_meanwhile(
    bus: Config, con: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon writes a merged segment without the catalog lock; if a refresh rewrote one of
    its victims meanwhile (a run in it was deleted), the commit drops the merge and its file,
    and the exports stay exact. An unchanged plan commits, and retires the victims."""
    monkeypatch.setattr(compaction, "MAX_SEGMENTS", 3)
    for i in range(4):
        add_path_run(bus, f"r{i}", n=10 + i, seed=i)
        register_only(bus)
        with Catalog.open(bus.catalog_path) as cat:
            exports.refresh(bus, cat.cursor())  # one segment per run, no compaction
    assert len(segment_files(bus, PATH)) == 4
    with Catalog.open(bus.catalog_path) as cat:
        cur = cat.cursor()
        plans = [m for m in exports.plan_compaction(cur) if m.table == PATH]
        assert len(plans) == 1 and len(plans[0].victims) >= 2
        written = exports.write_compaction(bus, plans)
        assert written[0].segment is not None
        merged_file = store_table(bus, PATH) / written[0].segment
        assert merged_file.exists()
        # meanwhile: a run of the smallest victim is deleted and the refresh rewrites it
        row = cur.execute(
            "SELECT run_id FROM exports_state.run_segments WHERE table_name = $t AND segment = $s",
            {"t": PATH, "s": plans[0].victims[0]},
        ).fetchone()
        assert row is not None
        victim_run = row[0]
    shutil.rmtree(bus.root / "backtest-path" / victim_run)
    add_path_run(bus, "r9", n=9, seed=9)  # and a new run: 4 segments again after the refresh
    register_only(bus)
    with Bus.open(bus, role="sync") as pipe:
        assert pipe.catalog is not None
        cur = pipe.catalog.cursor()
        exports.refresh(bus, cur)
        assert exports.commit_compaction(bus, cur, written) == 0
        assert not merged_file.exists()
        # a fresh plan goes through
        assert exports.compact(bus, cur) == 1
        views = cur.execute(f"SELECT count(*) FROM exports.{PATH}").fetchone()
        cur.close()
        publish_exports(pipe)
    assert len(segment_files(bus, PATH)) <= 3
    check_consolidated(con, bus, PATH)
    check_leaderboard(con, bus)
    direct = con.execute(f"SELECT count(*) FROM read_parquet('{raw_glob(bus, PATH)}')").fetchone()
    assert views == direct


def test_a_publication_after_a_refresh_retired_a_segment_links_only_current_segments(
    bus: Config, con: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refresh retires an export segment (a run in it was deleted), then, before the Bus
    publishes the new table list, the publication compacts its catalog segments: that new
    generation must link the current export segments, not the retired one (whose file the
    refresh used to unlink at once: ``export.failed`` "No such file or directory")."""
    monkeypatch.setattr(publication_compaction, "MAX_SEGMENTS", 1)  # the catalog's: due at once
    add_path_run(bus, "r0", n=5, seed=0)
    add_path_run(bus, "r1", n=5, seed=1)
    sync(bus)
    (retired,) = segment_files(bus, PATH)  # both runs in one segment: r0 leaving rewrites it
    shutil.rmtree(bus.root / "backtest-path" / "r0")
    with structlog.testing.capture_logs() as logs:
        sync(bus)
    failed = [e for e in logs if e["log_level"] == "error"]
    assert failed == [], failed
    assert retired not in segment_files(bus, PATH)  # removed once no publication names it
    got = con.execute(
        f"SELECT DISTINCT run_id FROM read_parquet('{published_table_glob(published(bus), PATH)}')"
    ).fetchall()
    assert got == [("r1",)]
    check_consolidated(con, bus, PATH)
