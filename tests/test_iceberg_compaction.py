"""Compaction of the core tables (real moto_server and PostgreSQL): many small data files become
one, with the same rows, the same keys present, deletions still working, and a commit another
daemon makes while it runs kept."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(300)


def _files(scaleout: Any, table: str) -> int:
    return len(list(scaleout.catalog().load_table(f"quantbot.{table}").scan().plan_files()))


def _rows(scaleout: Any, table: str) -> list[tuple[Any, ...]]:
    data = scaleout.catalog().load_table(f"quantbot.{table}").scan().to_arrow()
    return sorted(tuple(sorted(r.items())) for r in data.to_pylist())


def test_small_files_become_one_and_readers_keys_and_deletions_see_no_difference(
    scaleout: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quantbot_bus.iceberg.compaction import compact
    from quantbot_bus.pipeline import sync

    scaleout.reach_s3(monkeypatch)
    config = dataclasses.replace(scaleout.config(), pending_timeout_s=0.0)  # incomplete: rejected
    for i in range(4):  # four polls, four commits: four small files per table
        scaleout.upload(f"r{i}a")
        scaleout.upload(f"r{i}b")
        scaleout.upload(f"bad{i}", incomplete=True)
        result = sync(config)
        assert sorted(result.registered) == [f"r{i}a", f"r{i}b"]
    tables = ("runs_d", "artifacts_f", "rejections_f")
    before = {t: _rows(scaleout, t) for t in tables}
    assert {t: _files(scaleout, t) for t in tables} == dict.fromkeys(tables, 4)

    catalog = scaleout.catalog()
    assert compact(catalog, "runs_d", min_files=5) == 0  # too few small files yet
    # runs_d in files of 6 rows (8 runs: r0a .. r2b | r3a r3b), the others in one
    assert compact(catalog, "runs_d", min_files=3, rows_per_file=6) == 4
    assert {t: compact(catalog, t, min_files=3) for t in tables[1:]} == {
        "artifacts_f": 4,
        "rejections_f": 4,
    }
    assert {t: _files(scaleout, t) for t in tables} == {
        "runs_d": 2,
        "artifacts_f": 1,
        "rejections_f": 1,
    }
    assert {t: _rows(scaleout, t) for t in tables} == before
    assert compact(catalog, "runs_d", min_files=2, rows_per_file=6) == 0  # one small file left
    assert compact(catalog, "artifacts_f", min_files=1) == 0  # one file left: nothing to do

    # every key still present: neither this daemon nor a new one registers or rejects again
    # (the new one validates the incomplete runs and finds their rejections recorded)
    for state in ("state", "state-new-host"):
        again = sync(dataclasses.replace(scaleout.config(state), pending_timeout_s=0.0))
        assert (again.registered, again.rejected, again.pending) == ([], [], [])
    # a deletion after compaction takes the run out of the compacted file that holds it, and
    # reads no other one of runs_d's (each file's run_id bounds rule it out)
    client = scaleout.s3.client()
    listed = client.list_objects_v2(Bucket=scaleout.bucket, Prefix="runs/backtest/r2a/")
    for obj in listed["Contents"]:
        client.delete_object(Bucket=scaleout.bucket, Key=obj["Key"])
    mark = len(scaleout.s3.requests())
    assert list(sync(scaleout.config()).deleted) == ["r2a"]
    read = {
        r.split()[1]
        for r in scaleout.s3.requests()[mark:]
        if r.startswith("GET ") and "/runs_d/data/" in r
    }
    assert len(read) == 1, read
    assert sorted(scaleout.run_counts("runs_d")) == sorted(
        f"r{i}{s}" for i in range(4) for s in "ab" if (i, s) != (2, "a")
    )


def _one_commit_each(scaleout: Any, monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """Runs r0 .. r<n-1>, each registered by a sync of its own (a small file each)."""
    from quantbot_bus.pipeline import sync

    scaleout.reach_s3(monkeypatch)
    for i in range(n):
        scaleout.upload(f"r{i}")
        assert sync(scaleout.config()).registered == [f"r{i}"]


def test_a_commit_another_daemon_makes_during_a_compaction_is_kept(
    scaleout: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run registered between the compaction's staging and its commit: the commit is made
    again on the new snapshot with the files already written (they hold exactly the rows of the
    files they replace, all still there), and the new run's file stays as it is."""
    from pyiceberg.table import Transaction

    from quantbot_bus.iceberg.compaction import COMPACTED_PROPERTY, compact
    from quantbot_bus.pipeline import sync

    _one_commit_each(scaleout, monkeypatch, 3)
    commit = Transaction.commit_transaction
    raced: list[str] = []

    def another_daemon_first(self: Transaction) -> Any:
        if not raced:  # the compaction's first commit: another host registers a run before it
            raced.append("late")
            scaleout.upload("late")
            assert sync(scaleout.config("state-other-host")).registered == ["late"]
        return commit(self)

    monkeypatch.setattr(Transaction, "commit_transaction", another_daemon_first)
    assert compact(scaleout.catalog(), "runs_d", min_files=3) == 3  # lost once, made again
    monkeypatch.setattr(Transaction, "commit_transaction", commit)
    assert raced == ["late"]
    assert scaleout.run_counts("runs_d") == {"r0": 1, "r1": 1, "r2": 1, "late": 1}
    assert _files(scaleout, "runs_d") == 2  # the compacted file and the late run's
    # in the bucket: the 3 small files (until expiry and cleanup), the late run's, and the one
    # the compaction wrote once and committed at its second try
    client = scaleout.s3.client()
    data = client.list_objects_v2(Bucket=scaleout.bucket, Prefix="warehouse/quantbot/runs_d/data/")
    assert len([o for o in data["Contents"] if o["Key"].endswith(".parquet")]) == 5
    table = scaleout.catalog().load_table("quantbot.runs_d")
    assert table.current_snapshot().summary.additional_properties[COMPACTED_PROPERTY] == "3"


def test_a_deletion_during_a_compaction_is_never_undone(
    scaleout: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run deleted between the staging and the commit (its file rewritten without it): the
    written files, which still hold its row, are deleted unused and the compaction is staged
    again on the new snapshot; the run stays deleted."""
    from pyiceberg.table import Transaction

    from quantbot_bus.iceberg.compaction import compact
    from quantbot_bus.pipeline import sync

    _one_commit_each(scaleout, monkeypatch, 4)
    commit = Transaction.commit_transaction
    raced: list[str] = []
    client = scaleout.s3.client()

    def a_deletion_first(self: Transaction) -> Any:
        if not raced:
            raced.append("r1")
            listed = client.list_objects_v2(Bucket=scaleout.bucket, Prefix="runs/backtest/r1/")
            for obj in listed["Contents"]:
                client.delete_object(Bucket=scaleout.bucket, Key=obj["Key"])
            assert list(sync(scaleout.config("state-other-host")).deleted) == ["r1"]
        return commit(self)

    def data_files() -> set[str]:
        listed = client.list_objects_v2(
            Bucket=scaleout.bucket, Prefix="warehouse/quantbot/runs_d/data/"
        )
        return {o["Key"] for o in listed["Contents"] if o["Key"].endswith(".parquet")}

    before = data_files()
    monkeypatch.setattr(Transaction, "commit_transaction", a_deletion_first)
    assert compact(scaleout.catalog(), "runs_d", min_files=3) == 3  # staged again: 3 files
    monkeypatch.setattr(Transaction, "commit_transaction", commit)
    assert raced == ["r1"]
    assert scaleout.run_counts("runs_d") == {"r0": 1, "r2": 1, "r3": 1}
    assert _files(scaleout, "runs_d") == 1
    after = data_files()
    # one new file: the second staging's (r1's one-row file was dropped whole by the deletion);
    # the first staging's, which held r1's row, was deleted unused
    assert len(after - before) == 1, sorted(after - before)


def test_a_failed_compaction_leaves_expiry_and_cleanup_to_run(
    scaleout: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from structlog.testing import capture_logs

    from quantbot_bus.iceberg import maintenance
    from quantbot_bus.objectstore.location import S3Settings

    _one_commit_each(scaleout, monkeypatch, 1)

    def broken(catalog: Any, name: str) -> int:
        raise RuntimeError(f"{name}: out of memory")

    monkeypatch.setattr(maintenance, "compact", broken)
    with capture_logs() as logs:
        done = maintenance.maintain(
            scaleout.catalog(), S3Settings.from_env(scaleout.s3.env), now=time.time() + 7200
        )
    assert {"runs_d", "artifacts_f", "rejections_f"} <= set(done)  # expired, cleaned up
    failed = [e for e in logs if e["event"] == "iceberg.maintenance_failed"]
    assert sorted(e["table"] for e in failed) == [
        "quantbot.artifacts_f",
        "quantbot.rejections_f",
        "quantbot.runs_d",
    ]
    assert {e["step"] for e in failed} == {"compaction"}
