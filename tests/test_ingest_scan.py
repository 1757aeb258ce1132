"""The reconcile scan (ingest.full_scan / ingest.examine) applied to a catalog, on real
directories."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from builders import corrupt_file, make_run

from quantbot_bus import ingest
from quantbot_bus.catalog import Catalog
from quantbot_bus.config import Config
from quantbot_bus.errors import ConfigError

BAD_PARQUET = "is not a Parquet file"


@pytest.fixture
def cat(bus: Config):
    with Catalog.open(bus.catalog_path) as c:
        yield c


def apply(cat: Catalog, outcome: ingest.ScanOutcome):
    return cat.apply_batch(outcome.batch)


def test_full_scan_sorts_runs_into_valid_rejected_pending(bus: Config, cat: Catalog) -> None:
    for i in range(3):
        make_run(bus.root, "path-only", f"ok{i}")
    bad = make_run(bus.root, "policy", "bad")
    corrupt_file(bad / "results.parquet")
    waiting = make_run(bus.root, "policy", "waiting")
    (waiting / "results.parquet").unlink()
    make_run(bus.root / ".hidden", "policy", "h1")  # hidden subtree: never read
    make_run(bus.root, "policy.partial", "p1")  # .partial name: never read
    (bus.root / "notes").mkdir()  # a plain directory without runs

    out = ingest.full_scan(bus, cat)
    assert sorted(r.run_id for r in out.batch.valid) == ["ok0", "ok1", "ok2"]
    assert [(r.run_dir, r.run_id) for r in out.batch.rejected] == [(str(bad), "bad")]
    assert BAD_PARQUET in out.batch.rejected[0].reason
    assert list(out.pending) == [str(waiting)]
    assert "does not exist yet" in out.pending[str(waiting)]
    assert out.batch.gone == []
    assert out.seen == 5 and out.skipped == 0

    res = apply(cat, out)
    assert sorted(res.registered) == ["ok0", "ok1", "ok2"]
    assert cat.counts() == {"runs": 3, "deleted": 0, "artifacts": 3, "rejections": 1}


def test_unchanged_tree_is_not_validated_again(bus: Config, cat: Catalog) -> None:
    good = make_run(bus.root, "path-only", "good")
    bad = make_run(bus.root, "path-only", "bad")
    corrupt_file(bad / "results.parquet")
    apply(cat, ingest.full_scan(bus, cat))
    assert cat.counts()["rejections"] == 1

    # Corrupt the registered run's file but keep its size and mtime: the stat-only fingerprint
    # is unchanged, so the scan must skip it (validating would reject it: hashes are on).
    parquet = good / "results.parquet"
    st = parquet.stat()
    corrupt_file(parquet)
    os.utime(parquet, ns=(st.st_atime_ns, st.st_mtime_ns))

    out = ingest.full_scan(bus, cat)
    assert len(out.batch) == 0 and out.pending == {}
    assert out.seen == 2 and out.skipped == 2 and out.unchanged == ["good"]
    res = apply(cat, out)
    assert res.registered == res.rejected == []
    assert cat.counts() == {"runs": 1, "deleted": 0, "artifacts": 1, "rejections": 1}
    row = cat.con.execute("SELECT attempts FROM catalog.rejections_f").fetchone()
    assert row is not None
    (attempts,) = row
    assert attempts == 1  # the known rejection was not retried

    # touching the file changes the fingerprint: now it is validated (and rejected)
    os.utime(parquet, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    out = ingest.full_scan(bus, cat)
    assert [r.run_id for r in out.batch.rejected] == ["good"]
    res = apply(cat, out)
    assert res.deleted == ["good"]


def _count_quick_fingerprints(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every run dir the scan had to read metadata.json for (the real function runs)."""
    calls: list[str] = []
    real = ingest.quick_fingerprint

    def spy(run_dir: Path) -> str | None:
        calls.append(str(run_dir))
        return real(run_dir)

    monkeypatch.setattr(ingest, "quick_fingerprint", spy)
    return calls


def test_full_scan_checks_known_runs_by_stat_alone(
    bus: Config, cat: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # several files listed out of name order, one run without any file (failed)
    multi = make_run(
        bus.root,
        "policy",
        "multi",
        tables={"zeta": 2, "alpha": 4, "mid": 1},
    )
    make_run(bus.root, "path-only", "single")
    make_run(bus.root, "path-only", "failed", tables={}, status="failed", error="boom")
    res = apply(cat, ingest.full_scan(bus, cat))
    assert sorted(res.registered) == ["failed", "multi", "single"]
    files = {d: sorted(f) for d, f in ingest.known_files(cat).items()}
    assert files == {
        str(multi): ["alpha.parquet", "mid.parquet", "zeta.parquet"],
        str(bus.root / "path-only" / "single"): ["results.parquet"],
        str(bus.root / "path-only" / "failed"): [],
    }

    calls = _count_quick_fingerprints(monkeypatch)
    out = ingest.full_scan(bus, cat)
    assert len(out.batch) == 0 and out.seen == out.skipped == 3
    assert sorted(out.unchanged) == ["failed", "multi", "single"]
    assert calls == []  # no metadata.json was read: stats were enough


def test_full_scan_detects_a_changed_file_of_a_known_run(
    bus: Config, cat: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = make_run(bus.root, "policy", "run", tables={"b": 2, "a": 3})
    other = make_run(bus.root, "policy", "other")
    apply(cat, ingest.full_scan(bus, cat))
    calls = _count_quick_fingerprints(monkeypatch)

    # same bytes written again: only the mtime differs, which the stat check sees
    data = run / "a.parquet"
    st = data.stat()
    data.write_bytes(data.read_bytes())
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    out = ingest.full_scan(bus, cat)
    assert calls == [str(run)]  # only the changed run fell back to reading metadata.json
    assert [r.run_id for r in out.batch.valid] == ["run"] and out.skipped == 1
    assert apply(cat, out).updated == ["run"]
    assert len(ingest.full_scan(bus, cat).batch) == 0  # its new fingerprint is stored

    # a file grown behind the catalog's back: validated again and rejected
    with (run / "b.parquet").open("ab") as f:
        f.write(b"junk")
    out = ingest.full_scan(bus, cat)
    assert [r.run_id for r in out.batch.rejected] == ["run"]
    assert "bytes but metadata.json declares" in out.batch.rejected[0].reason
    assert apply(cat, out).deleted == ["run"]

    # metadata.json rewritten to list another file (same mtime second): its stat differs
    make_run(bus.root, "policy", "other", tables={"results": 3, "x": 1})
    out = ingest.full_scan(bus, cat)
    assert [r.run_id for r in out.batch.valid] == ["other"]
    assert {a.file for a in out.batch.valid[0].artifacts} == {"results.parquet", "x.parquet"}
    apply(cat, out)
    assert sorted(ingest.known_files(cat)[str(other)]) == ["results.parquet", "x.parquet"]


def test_changed_and_deleted_runs(bus: Config, cat: Catalog) -> None:
    a = make_run(bus.root, "path-only", "a")
    b = make_run(bus.root, "path-only", "b")
    bad = make_run(bus.root, "path-only", "bad")
    corrupt_file(bad / "results.parquet")
    apply(cat, ingest.full_scan(bus, cat))

    time.sleep(0.01)  # a time gap: the rewritten run's files get a later mtime (new fingerprint)
    make_run(bus.root, "path-only", "a", tables={"results": 5, "extra": 1})
    shutil.rmtree(b)
    shutil.rmtree(bad)
    out = ingest.full_scan(bus, cat)
    assert [r.run_id for r in out.batch.valid] == ["a"]
    assert sorted(out.batch.gone) == sorted([str(b), str(bad)])
    res = apply(cat, out)
    assert res.updated == ["a"] and res.deleted == ["b"]
    assert cat.counts() == {"runs": 1, "deleted": 1, "artifacts": 2, "rejections": 0}
    assert a.is_dir()

    # b comes back
    make_run(bus.root, "path-only", "b")
    res = apply(cat, ingest.full_scan(bus, cat))
    assert res.registered == ["b"]
    assert cat.counts() == {"runs": 2, "deleted": 0, "artifacts": 3, "rejections": 0}


def test_examine_maps_event_paths_to_run_dirs(bus: Config, cat: Catalog) -> None:
    r1 = make_run(bus.root, "path-only", "r1")
    apply(cat, ingest.full_scan(bus, cat))

    # a subtree renamed in: the parent directory is given
    staging = bus.root.parent / "staging"
    make_run(staging, "policy", "p1")
    make_run(staging, "policy", "p2")
    os.rename(staging / "policy", bus.root / "policy")
    out = ingest.examine(bus, cat, [bus.root / "policy"])
    assert sorted(r.run_id for r in out.batch.valid) == ["p1", "p2"]
    apply(cat, out)

    # a run dir itself, a file inside it, outside-root and hidden paths
    make_run(bus.root, "opt", "o1")
    make_run(bus.root / ".staging", "opt", "o2")
    out = ingest.examine(
        bus,
        cat,
        [
            bus.root / "opt" / "o1" / "metadata.json",
            bus.root / "opt" / "o1",
            bus.root / ".staging" / "opt" / "o2",
            bus.root.parent / "elsewhere",
            r1,  # unchanged: skipped
        ],
    )
    assert [r.run_id for r in out.batch.valid] == ["o1"]
    assert out.skipped == 1 and out.batch.gone == []

    # a directory inside a run dir (the only event of a file written in a subfolder): the run
    o3 = make_run(bus.root, "opt", "o3")
    (o3 / "logs" / "deep").mkdir(parents=True)
    out = ingest.examine(bus, cat, [o3 / "logs" / "deep", o3 / "logs"])
    assert [r.run_id for r in out.batch.valid] == ["o3"]

    # a deleted run dir, by its own path or by a parent that is gone
    shutil.rmtree(bus.root / "policy")
    out = ingest.examine(bus, cat, [bus.root / "policy"])
    assert sorted(out.batch.gone) == [
        str(bus.root / "policy" / "p1"),
        str(bus.root / "policy" / "p2"),
    ]
    (r1 / "metadata.json").unlink()  # no metadata.json: no longer a run
    out = ingest.examine(bus, cat, [r1 / "metadata.json"])
    assert out.batch.gone == [str(r1)]


def test_a_moved_run_is_an_update_not_a_conflict(bus: Config, cat: Catalog) -> None:
    old = make_run(bus.root, "path-only", "m1")
    apply(cat, ingest.full_scan(bus, cat))
    (bus.root / "policy").mkdir()
    new = bus.root / "policy" / "m1"
    os.rename(old, new)
    out = ingest.examine(bus, cat, [new])  # only the destination event arrived
    assert out.batch.gone == [str(old)]
    res = apply(cat, out)
    assert res.updated == ["m1"] and res.rejected == [] and res.deleted == []
    assert cat.known_runs()[str(new)].run_id == "m1"


def test_the_same_run_id_under_two_run_types_is_rejected(bus: Config, cat: Catalog) -> None:
    first = make_run(bus.root, "path-only", "same")
    apply(cat, ingest.full_scan(bus, cat))
    second = make_run(bus.root, "policy", "same")
    res = apply(cat, ingest.full_scan(bus, cat))
    assert [r.reason for r in res.rejected] == [
        f"run_id same is already registered from {first}; run ids must be unique across run types"
    ]
    assert cat.known_rejections() == {str(second): res.rejected[0].fingerprint}
    # unchanged: not retried on the next scan
    assert len(ingest.full_scan(bus, cat).batch) == 0


def test_a_missing_root_deletes_nothing(bus: Config, cat: Catalog) -> None:
    make_run(bus.root, "path-only", "r1")
    apply(cat, ingest.full_scan(bus, cat))
    shutil.rmtree(bus.root)
    with pytest.raises(ConfigError, match="does not exist or is not a directory"):
        ingest.full_scan(bus, cat)
    assert len(ingest.examine(bus, cat, [bus.root, bus.root / "path-only"]).batch) == 0
    assert cat.counts()["runs"] == 1
