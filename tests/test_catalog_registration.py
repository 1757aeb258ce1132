"""The DuckDB catalog's registration rules: a batch registers, updates, soft-deletes and brings back
runs, refuses run_id conflicts, upserts and resolves rejections, and fails as a whole; the
latest-artifacts view. RunInfo objects are built directly (builders.run_info: the catalog does not
read the disk); real DuckDB files."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest
from builders import catalog_rows, run_info
from structlog.testing import capture_logs

from quantbot_bus.catalog import MIGRATIONS, SCHEMA_VERSION, Batch, Catalog, Rejection
from quantbot_bus.errors import CatalogError


@pytest.fixture
def cat(tmp_path: Path):
    with Catalog.open(tmp_path / "state" / "bus.duckdb") as c:
        yield c


def table_dump(c: Catalog) -> dict[str, list[tuple[Any, ...]]]:
    return {
        t: catalog_rows(c, f"SELECT * FROM catalog.{t} ORDER BY ALL")  # noqa: S608 (fixed names)
        for t in ("runs_d", "artifacts_f", "rejections_f")
    }


def test_open_creates_schema_and_is_reopenable(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "state" / "bus.duckdb"
    with Catalog.open(path) as c:
        assert c.schema_version() == SCHEMA_VERSION == len(MIGRATIONS)
        tables = {
            r[0]
            for r in catalog_rows(
                c, "SELECT table_name FROM duckdb_tables() WHERE schema_name='catalog'"
            )
        }
        assert {"runs_d", "artifacts_f", "rejections_f", "schema_version"} <= tables
        views = {
            r[0]
            for r in catalog_rows(
                c, "SELECT view_name FROM duckdb_views() WHERE schema_name='catalog'"
            )
        }
        assert "latest_artifacts_v" in views
        types = dict(
            catalog_rows(
                c, "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name='runs_d'"
            )
        )
        assert types["params"] == types["metrics"] == types["metadata"] == "JSON"
        assert types["registered_at"] == "TIMESTAMP"
        assert c.counts() == {"runs": 0, "deleted": 0, "artifacts": 0, "rejections": 0}
    with Catalog.open(path) as c:  # reopening does not migrate again
        assert catalog_rows(c, "SELECT version FROM catalog.schema_version ORDER BY 1") == [
            (v,) for v in range(1, SCHEMA_VERSION + 1)
        ]


def test_register_then_same_batch_again_is_a_noop(tmp_path: Path, cat: Catalog) -> None:
    runs = [run_info(tmp_path, f"r{i}", names=("a", "b")) for i in range(3)]
    with capture_logs() as logs:
        res = cat.apply_batch(Batch(valid=runs))
    assert sorted(res.registered) == ["r0", "r1", "r2"]
    assert res.updated == res.deleted == res.unchanged == [] and res.rejected == []
    assert cat.counts() == {"runs": 3, "deleted": 0, "artifacts": 6, "rejections": 0}
    events = [e["event"] for e in logs]
    assert events.count("run.registered") == 3 and events[-1] == "batch.committed"
    reg = next(e for e in logs if e["event"] == "run.registered")
    assert reg["run_type"] == "backtest" and reg["latency_ms"] >= 0
    assert logs[-1]["n"] == 3 and logs[-1]["registered"] == 3

    before = table_dump(cat)
    res2 = cat.apply_batch(Batch(valid=runs))
    assert sorted(res2.unchanged) == ["r0", "r1", "r2"]
    assert res2.registered == res2.updated == []
    assert table_dump(cat) == before  # not even registered_at moved

    known = cat.known_runs()
    assert known[str(tmp_path / "backtest" / "r1")].run_id == "r1"
    assert known[str(tmp_path / "backtest" / "r1")].fingerprint == "fp1"
    assert not known[str(tmp_path / "backtest" / "r1")].deleted

    row = catalog_rows(
        cat,
        "SELECT run_type, producer, status, created_at, git_branch, params->>'$.seed', "
        "metrics->>'$.sharpe', artifact_count, total_rows, total_bytes, deleted_at "
        "FROM catalog.runs_d WHERE run_id='r0'",
    )
    assert row == [
        (
            "backtest",
            "tests",
            "success",
            dt.datetime(2024, 5, 1, 12),
            "main",
            "1",
            "1.5",
            2,
            21,
            2001,
            None,
        )
    ]


def test_known_runs_filtered_by_paths(tmp_path: Path, cat: Catalog) -> None:
    a1 = run_info(tmp_path, "a1", run_type="a")
    a2 = run_info(tmp_path, "a2", run_type="a")
    ab = run_info(tmp_path, "ab", run_type="ab")  # "a" is a string prefix of "ab", not a parent
    cat.apply_batch(
        Batch(valid=[a1, a2, ab], rejected=[Rejection(str(tmp_path / "a" / "x"), None, "r")])
    )
    cat.apply_batch(Batch(gone=[str(a2.run_dir)]))
    assert set(cat.known_runs()) == {str(a1.run_dir), str(a2.run_dir), str(ab.run_dir)}
    assert set(cat.known_runs([str(tmp_path / "a")])) == {str(a1.run_dir), str(a2.run_dir)}
    assert set(cat.known_runs([str(tmp_path / "a") + "/"])) == {str(a1.run_dir), str(a2.run_dir)}
    inside = str(a1.run_dir / "results.parquet")  # an event path inside a run dir
    assert set(cat.known_runs([inside])) == {str(a1.run_dir)}
    assert cat.known_runs([str(tmp_path / "zzz")]) == {}
    assert cat.known_runs([]) == {}
    assert cat.known_rejections([str(tmp_path / "a")]) == {str(tmp_path / "a" / "x"): None}
    assert cat.known_rejections([str(tmp_path / "ab")]) == {}
    assert cat.live_run_dirs(["a1", "a2", "nope"]) == {"a1": str(a1.run_dir)}


def test_changed_fingerprint_updates_row_and_replaces_artifacts(
    tmp_path: Path, cat: Catalog
) -> None:
    cat.apply_batch(Batch(valid=[run_info(tmp_path, "r1", names=("a", "b"))]))
    ((first_reg, reg1),) = catalog_rows(
        cat, "SELECT first_registered_at, registered_at FROM catalog.runs_d"
    )
    time.sleep(0.01)  # a time gap: the update's registered_at must be later
    with capture_logs() as logs:
        res = cat.apply_batch(
            Batch(
                valid=[
                    run_info(tmp_path, "r1", fingerprint="fp2", names=("c",), params={"seed": 2})
                ]
            )
        )
    assert res.updated == ["r1"] and res.registered == [] and res.unchanged == []
    assert [e["event"] for e in logs] == ["run.updated", "batch.committed"]
    ((first2, reg2, fp, seed),) = catalog_rows(
        cat,
        "SELECT first_registered_at, registered_at, fingerprint, params->>'$.seed' FROM catalog.runs_d",
    )
    assert first2 == first_reg and reg2 > reg1 and fp == "fp2" and seed == "2"
    assert catalog_rows(cat, "SELECT run_id, name FROM catalog.artifacts_f") == [("r1", "c")]
    assert cat.counts()["runs"] == 1


def test_soft_delete_keeps_artifacts_and_a_reappearing_run_comes_back(
    tmp_path: Path, cat: Catalog
) -> None:
    r1, r2 = run_info(tmp_path, "r1"), run_info(tmp_path, "r2")
    cat.apply_batch(Batch(valid=[r1, r2]))
    ((first_reg,),) = catalog_rows(
        cat, "SELECT first_registered_at FROM catalog.runs_d WHERE run_id='r1'"
    )
    with capture_logs() as logs:
        res = cat.apply_batch(Batch(gone=[str(r1.run_dir)]))
    assert res.deleted == ["r1"]
    assert ("run.deleted", "r1") in [(e["event"], e.get("run_id")) for e in logs]
    assert cat.counts() == {"runs": 1, "deleted": 1, "artifacts": 1, "rejections": 0}
    assert catalog_rows(cat, "SELECT count(*) FROM catalog.artifacts_f WHERE run_id='r1'") == [(1,)]
    assert catalog_rows(cat, "SELECT run_id FROM catalog.latest_artifacts_v") == [("r2",)]
    assert cat.known_runs()[str(r1.run_dir)].deleted
    # gone again: nothing more to delete
    assert cat.apply_batch(Batch(gone=[str(r1.run_dir)])).deleted == []

    res = cat.apply_batch(Batch(valid=[r1]))  # same fingerprint, but it was deleted
    assert res.registered == ["r1"] and res.unchanged == []
    ((deleted_at, first2),) = catalog_rows(
        cat, "SELECT deleted_at, first_registered_at FROM catalog.runs_d WHERE run_id='r1'"
    )
    assert deleted_at is None and first2 == first_reg
    assert cat.counts() == {"runs": 2, "deleted": 0, "artifacts": 2, "rejections": 0}


def test_run_moved_to_another_dir_in_one_batch_is_an_update(tmp_path: Path, cat: Catalog) -> None:
    old = run_info(tmp_path, "r1", run_type="a")
    cat.apply_batch(Batch(valid=[old]))
    new = run_info(tmp_path, "r1", run_type="b", fingerprint="fp2")
    res = cat.apply_batch(Batch(valid=[new], gone=[str(old.run_dir)]))
    assert res.updated == ["r1"] and res.deleted == [] and res.registered == []
    assert catalog_rows(cat, "SELECT run_type, run_dir, deleted_at FROM catalog.runs_d") == [
        ("b", str(new.run_dir), None)
    ]


def test_run_id_conflict_is_rejected_and_never_overwrites(tmp_path: Path, cat: Catalog) -> None:
    first = run_info(tmp_path, "dup", run_type="path-only")
    cat.apply_batch(Batch(valid=[first]))
    before = catalog_rows(cat, "SELECT * FROM catalog.runs_d")
    second = run_info(tmp_path, "dup", run_type="policy", fingerprint="other", names=("x",))
    res = cat.apply_batch(Batch(valid=[second]))
    reason = (
        f"run_id dup is already registered from {first.run_dir}; "
        "run ids must be unique across run types"
    )
    assert res.registered == res.updated == []
    assert res.rejected == [Rejection(str(second.run_dir), "dup", reason, "other")]
    assert catalog_rows(cat, "SELECT * FROM catalog.runs_d") == before
    assert catalog_rows(cat, "SELECT name FROM catalog.artifacts_f") == [("results",)]
    assert cat.known_rejections() == {str(second.run_dir): "other"}
    assert catalog_rows(cat, "SELECT run_id, reason, attempts FROM catalog.rejections_f") == [
        ("dup", reason, 1)
    ]

    # the original goes away: the second directory can now take the id, and its rejection resolves
    cat.apply_batch(Batch(gone=[str(first.run_dir)]))
    res = cat.apply_batch(Batch(valid=[second]))
    assert res.registered == ["dup"]
    assert catalog_rows(cat, "SELECT run_type, deleted_at FROM catalog.runs_d") == [
        ("policy", None)
    ]
    assert cat.known_rejections() == {}


def test_duplicate_run_id_within_one_batch(tmp_path: Path, cat: Catalog) -> None:
    a = run_info(tmp_path, "same", run_type="a")
    b = run_info(tmp_path, "same", run_type="b")
    res = cat.apply_batch(Batch(valid=[a, b]))
    assert res.registered == ["same"]
    assert [r.run_dir for r in res.rejected] == [str(b.run_dir)]
    assert "already registered from" in res.rejected[0].reason
    assert catalog_rows(cat, "SELECT run_dir FROM catalog.runs_d") == [(str(a.run_dir),)]


def test_rejections_upsert_by_run_dir_and_resolve(tmp_path: Path, cat: Catalog) -> None:
    d = str(tmp_path / "backtest" / "bad")
    with capture_logs() as logs:
        cat.apply_batch(Batch(rejected=[Rejection(d, "bad", "results.parquet is truncated", "f1")]))
    assert any(
        e["event"] == "run.rejected" and e["reason"] == "results.parquet is truncated" for e in logs
    )
    ((first_seen, last1),) = catalog_rows(
        cat, "SELECT first_seen_at, last_seen_at FROM catalog.rejections_f"
    )
    time.sleep(0.01)  # a time gap: the second sighting's last_seen_at must be later
    cat.apply_batch(Batch(rejected=[Rejection(d, "bad", "sha256 mismatch", "f2")]))
    assert catalog_rows(
        cat, "SELECT run_dir, reason, attempts, fingerprint, resolved_at FROM catalog.rejections_f"
    ) == [(d, "sha256 mismatch", 2, "f2", None)]
    ((first2, last2),) = catalog_rows(
        cat, "SELECT first_seen_at, last_seen_at FROM catalog.rejections_f"
    )
    assert first2 == first_seen and last2 > last1
    assert cat.known_rejections() == {d: "f2"}
    assert cat.counts()["rejections"] == 1

    good = run_info(tmp_path, "bad", fingerprint="f3")
    res = cat.apply_batch(Batch(valid=[good]))
    assert res.registered == ["bad"]
    ((resolved,),) = catalog_rows(cat, "SELECT resolved_at FROM catalog.rejections_f")
    assert resolved is not None
    assert cat.known_rejections() == {} and cat.counts()["rejections"] == 0

    # broken again: the live run is soft-deleted and the rejection reopens
    res = cat.apply_batch(Batch(rejected=[Rejection(d, "bad", "results.parquet is missing", "f4")]))
    assert res.deleted == ["bad"]
    assert catalog_rows(cat, "SELECT attempts, resolved_at FROM catalog.rejections_f") == [
        (3, None)
    ]
    assert cat.counts() == {"runs": 0, "deleted": 1, "artifacts": 0, "rejections": 1}


def test_gone_rejected_dir_resolves_its_rejection(tmp_path: Path, cat: Catalog) -> None:
    d = str(tmp_path / "x" / "bad")
    cat.apply_batch(Batch(rejected=[Rejection(d, None, "metadata.json is not valid JSON", "f")]))
    res = cat.apply_batch(Batch(gone=[d]))
    assert res.deleted == []
    assert cat.known_rejections() == {}


@pytest.mark.parametrize("breakage", ["duplicate artifact name", "metadata is not JSON"])
def test_a_failing_batch_leaves_nothing(tmp_path: Path, cat: Catalog, breakage: str) -> None:
    keep = run_info(tmp_path, "keep")
    change = run_info(tmp_path, "change")
    cat.apply_batch(Batch(valid=[keep, change], rejected=[Rejection("/x/old", None, "old", "f")]))
    before = table_dump(cat)
    if breakage == "duplicate artifact name":
        broken = run_info(tmp_path, "broken", names=("t", "t"))
    else:
        broken = run_info(tmp_path, "broken", metadata_json="{not json")
    batch = Batch(
        valid=[run_info(tmp_path, "new1"), run_info(tmp_path, "change", fingerprint="fp2"), broken],
        gone=[str(keep.run_dir)],
        rejected=[Rejection("/x/old", None, "again", "f2"), Rejection("/x/new", None, "new", "f")],
    )
    with pytest.raises(CatalogError, match="nothing was written"):
        cat.apply_batch(batch)
    assert table_dump(cat) == before
    assert cat.counts() == {"runs": 2, "deleted": 0, "artifacts": 2, "rejections": 1}
    # the connection is usable afterwards (the transaction was rolled back, not left open)
    assert cat.apply_batch(Batch(valid=[run_info(tmp_path, "new1")])).registered == ["new1"]


def test_latest_artifacts_view_picks_newest_live_success(tmp_path: Path, cat: Catalog) -> None:
    cat.apply_batch(
        Batch(
            valid=[
                run_info(tmp_path, "old", created_at="2024-01-01T00:00:00Z", names=("t", "u")),
                run_info(tmp_path, "new", created_at="2024-03-01T00:00:00Z", names=("t",)),
                run_info(
                    tmp_path,
                    "fail",
                    created_at="2024-04-01T00:00:00Z",
                    names=("t",),
                    status="failed",
                ),
                run_info(
                    tmp_path,
                    "other",
                    run_type="opt",
                    created_at="2023-01-01T00:00:00Z",
                    names=("t",),
                ),
            ]
        )
    )
    latest = catalog_rows(
        cat, "SELECT run_type, name, run_id FROM catalog.latest_artifacts_v ORDER BY ALL"
    )
    assert latest == [("backtest", "t", "new"), ("backtest", "u", "old"), ("opt", "t", "other")]
    cat.apply_batch(Batch(gone=[str(tmp_path / "backtest" / "new")]))
    latest = catalog_rows(
        cat, "SELECT run_type, name, run_id FROM catalog.latest_artifacts_v ORDER BY ALL"
    )
    assert latest == [("backtest", "t", "old"), ("backtest", "u", "old"), ("opt", "t", "other")]
